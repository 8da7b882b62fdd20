//! The one error type of an exchange: which side failed, what the client is
//! told, and whether the request may be tried again.

use std::fmt;
use std::io;

use crate::codec::HeadError;

/// Whether an exchange that failed may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Never: the request may have had effects, or the client is at fault.
    No,
    /// Yes, on another connection: nothing reached the origin.
    Yes,
    /// Only if the request is idempotent (a safe method without a body):
    /// the origin may have seen it, but seeing it twice does no harm. This
    /// covers the stale keep-alive connection the origin closed as the
    /// request went out, and an origin that died mid-request while another
    /// is up.
    IfIdempotent,
}

/// Why an exchange could not be completed normally.
#[derive(Debug)]
pub enum ProxyError {
    /// The client's request head broke a rule; answered with its status.
    BadRequest(HeadError),
    /// The client's request body framing was invalid (chunk syntax).
    BadRequestBody(&'static str),
    /// The request body is larger than `--max-body-size`.
    BodyTooLarge,
    /// The client did not finish its request head within
    /// `--client-header-timeout`.
    HeaderTimeout,
    /// Connecting to the origin failed (refused, unreachable).
    ConnectFailed(io::Error),
    /// Connecting to the origin took longer than `--connect-timeout`.
    ConnectTimeout,
    /// The origin closed the connection before any response byte.
    ClosedBeforeResponse,
    /// The origin reset the connection or a socket error occurred.
    UpstreamIo(io::Error),
    /// No response head within `--response-timeout`.
    ResponseTimeout,
    /// The exchange took longer than `--request-timeout` in all.
    RequestDeadline,
    /// The origin's response head or body framing was malformed.
    BadResponse(&'static str),
    /// Every upstream is down.
    NoUpstream,
    /// The chosen upstream's queue is full.
    QueueFull,
    /// The request waited `--queue-timeout` for an upstream connection.
    QueueTimeout,
    /// No route matches the request and there is no default backend.
    NoRoute,
    /// Over TLS, a request for a host the connection's certificate does
    /// not cover (and other than the server name it asked for).
    Misdirected,
    /// TLS to the origin failed (its certificate, nothing in common, not
    /// TLS at all).
    UpstreamTls(crate::tls::transport::Failure),
    /// The client gave the exchange up (an HTTP/2 stream it reset): its
    /// upstream connection is let go of; nobody is answered.
    Cancelled,
    /// An HTTP/2 origin said it did not process the request (GOAWAY above
    /// its stream, or REFUSED_STREAM): it may go again anywhere.
    Refused,
    /// An HTTP/2 origin reset the request's stream (with this error code).
    StreamReset(u32),
    /// The request cannot travel over HTTP/2 to its backend (an Upgrade,
    /// such as a WebSocket, has no place in HTTP/2).
    NotOverH2,
}

impl ProxyError {
    /// The status the client receives when no response byte was sent yet.
    pub fn status(&self) -> u16 {
        match self {
            ProxyError::BadRequest(h) => h.status,
            ProxyError::BadRequestBody(_) => 400,
            ProxyError::BodyTooLarge => 413,
            ProxyError::HeaderTimeout => 408,
            ProxyError::ConnectTimeout
            | ProxyError::ResponseTimeout
            | ProxyError::RequestDeadline => 504,
            ProxyError::NoUpstream | ProxyError::QueueFull | ProxyError::QueueTimeout => 503,
            ProxyError::NoRoute => 404,
            ProxyError::Misdirected => 421,
            ProxyError::Cancelled => crate::access_log::CLOSED_BEFORE_ANSWER,
            ProxyError::ConnectFailed(_)
            | ProxyError::Refused
            | ProxyError::StreamReset(_)
            | ProxyError::NotOverH2
            | ProxyError::ClosedBeforeResponse
            | ProxyError::UpstreamIo(_)
            | ProxyError::BadResponse(_)
            | ProxyError::UpstreamTls(_) => 502,
        }
    }

    /// The origin (or the path to it) closed, reset or refused TLS on the
    /// connection: on a new connection that never answered, a failure of
    /// the upstream's.
    pub fn is_origin_refusal(&self) -> bool {
        matches!(
            self,
            ProxyError::ClosedBeforeResponse
                | ProxyError::UpstreamIo(_)
                | ProxyError::UpstreamTls(_)
        )
    }

    /// Whether the exchange may be sent again.
    pub fn retry(&self) -> Retry {
        match self {
            ProxyError::ConnectFailed(_) | ProxyError::ConnectTimeout | ProxyError::Refused => {
                Retry::Yes
            }
            ProxyError::ClosedBeforeResponse | ProxyError::UpstreamIo(_) => Retry::IfIdempotent,
            _ => Retry::No,
        }
    }
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::BadRequest(h) => write!(f, "bad request: {}", h.reason),
            ProxyError::BadRequestBody(r) => write!(f, "bad request body: {r}"),
            ProxyError::BodyTooLarge => f.write_str("request body too large"),
            ProxyError::HeaderTimeout => f.write_str("request header timeout"),
            ProxyError::ConnectFailed(e) => write!(f, "upstream connect failed: {e}"),
            ProxyError::ConnectTimeout => f.write_str("upstream connect timed out"),
            ProxyError::ClosedBeforeResponse => {
                f.write_str("upstream closed the connection before responding")
            }
            ProxyError::UpstreamIo(e) => write!(f, "upstream connection failed: {e}"),
            ProxyError::ResponseTimeout => f.write_str("upstream response timed out"),
            ProxyError::RequestDeadline => f.write_str("request deadline exceeded"),
            ProxyError::BadResponse(r) => write!(f, "upstream sent an invalid response: {r}"),
            ProxyError::NoUpstream => f.write_str("no upstream available"),
            ProxyError::QueueFull => f.write_str("upstream queue full"),
            ProxyError::QueueTimeout => f.write_str("timed out waiting for an upstream connection"),
            ProxyError::NoRoute => f.write_str("no route matches this request"),
            ProxyError::Misdirected => {
                f.write_str("this connection's certificate is not for that host")
            }
            ProxyError::UpstreamTls(failure) => {
                write!(f, "upstream TLS failed: {}", failure.upstream_reason())
            }
            ProxyError::Cancelled => f.write_str("the client cancelled the request"),
            ProxyError::Refused => f.write_str("the upstream refused the request unprocessed"),
            ProxyError::StreamReset(code) => {
                write!(f, "the upstream reset the request's stream (HTTP/2 error {code})")
            }
            ProxyError::NotOverH2 => f.write_str(
                "the backend speaks HTTP/2 to its upstreams, which cannot carry this request (an Upgrade)",
            ),
        }
    }
}

impl std::error::Error for ProxyError {}
