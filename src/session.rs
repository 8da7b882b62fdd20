//! The seam between a worker's core and the protocol a client speaks.
//!
//! The core accepts connections, moves bytes between sockets, places
//! exchanges on upstream connections and keeps the deadlines; what the
//! client's bytes mean is a session's business. A [`ClientSession`] takes
//! the bytes the client sent (as the transport delivered them: plain TCP
//! today, decrypted TLS next), says which of its exchanges may go upstream,
//! writes each request for its upstream connection (HTTP/1.1, whatever the
//! client spoke), takes each response's bytes as they come from whichever
//! connection serves it, and lays out the client's output.
//!
//! HTTP/1.1 ([`crate::agent::ClientAgent`]) is the one session today:
//! exchanges in request order, answered in that order. An HTTP/2 session
//! holds many exchanges at once, answered in any order, behind the same
//! methods: [`ClientSession::next_ready`] hands out any stream that may
//! start, responses come per [`ExchangeId`], the output is frames.
//! [`ClientSession::verbatim_body`] may say 0 where bytes cannot cross
//! unframed, and [`ClientSession::tunnel`] None where there are none.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::access_log::Finished;
use crate::error::ProxyError;
use crate::spec::BackendId;

/// Identifies an exchange within its client connection.
pub type ExchangeId = u64;

/// What becomes of the upstream connection after an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFate {
    /// The exchange is still using it.
    Busy,
    /// Response complete and the connection is clean: back to the pool.
    Reuse,
    /// Response complete (or abandoned) but the connection must be closed.
    Close,
}

/// What happened when an upstream failure was reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOutcome {
    /// The exchange went back to the queue; dispatch it again.
    Retry,
    /// The client got an error response (or will be cut off after what it
    /// already has).
    Answered,
}

/// Which ends of a tunnel have half-closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TunnelEnds {
    /// The exchange that switched protocols.
    pub exchange: ExchangeId,
    /// The client sent its FIN.
    pub client_done: bool,
    /// The origin sent its FIN.
    pub upstream_done: bool,
    /// The tunnel is at the front of the client's queue with nothing held
    /// for it: once the output is flushed the client has every byte it is
    /// owed (an exchange before the upgrade may still be answering).
    pub owed_nothing_else: bool,
}

/// What a TLS connection's session is told once the handshake is done.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// `TLSv1.3` or `TLSv1.2`.
    pub version: &'static str,
    /// The server name the client asked for.
    pub sni: Option<Arc<str>>,
    /// The DNS names of the certificate it got (a request for another
    /// host is misdirected: 421).
    pub names: Arc<[String]>,
}

/// What placing an exchange needs to know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placing {
    /// Hash of the request path (no query), for URL-hash balancing.
    pub path_hash: u64,
    /// Hash of the forwarded target, query included: the route whose
    /// service times decide whether requests may share a connection.
    pub route: u64,
    /// A second attempt: it goes on a fresh connection, away from
    /// `tried` if another upstream is up.
    pub retry: bool,
    /// The upstream (stable id) it was last placed on.
    pub tried: Option<u32>,
    /// May follow another request of the same client on one upstream
    /// connection (where its route answers fast: the caller decides).
    pub may_share: bool,
    /// The backend its route chose.
    pub backend: BackendId,
    /// Its route's response timeout, if it has one.
    pub response_timeout: Option<Duration>,
}

/// One client connection's protocol, as the worker's core drives it. It
/// never does I/O and never reads a clock (the core's turn time reaches it
/// through what it shares with the worker).
pub trait ClientSession {
    // The client's bytes.

    /// Take bytes the client sent.
    fn on_client_data(&mut self, data: &[u8]);
    /// The client half-closed (EOF). Requests already read are answered.
    fn on_client_eof(&mut self);
    /// Whether reading more from the client is useful and within bounds.
    fn may_read_client(&self) -> bool;

    // Exchanges going upstream.

    /// The next exchange that may go upstream now, marked as placed.
    fn next_ready(&mut self) -> Option<ExchangeId>;
    /// What placing exchange `id` needs to know (None: it is gone).
    fn placing(&self, id: ExchangeId) -> Option<Placing>;
    /// The affinity cookie `id` came with, if any.
    fn affinity(&self, id: ExchangeId) -> Option<&[u8]>;
    /// Fields (each with its CRLF) to add to `id`'s forwarded head, for the
    /// attempt about to be placed (None: none).
    fn set_extra_head(&mut self, id: ExchangeId, fields: Option<Vec<u8>>);
    /// A `Set-Cookie` field (with its CRLF) for `id`'s final response head
    /// (None: none).
    fn set_cookie(&mut self, id: ExchangeId, field: Option<Vec<u8>>);
    /// `id` was handed to a connection to upstream `upstream` (stable id)
    /// at `addr`.
    fn placed_on(&mut self, id: ExchangeId, upstream: u32, addr: SocketAddr);
    /// How many request bytes of `id` wait to be handed to its upstream
    /// connection.
    fn pending_request(&self, id: ExchangeId) -> usize;
    /// Append the request bytes of `id` not handed out yet to `out` (the
    /// upstream connection's output, HTTP/1.1) and return how many were
    /// appended. `host` is the upstream's authority, for a request that
    /// came without one.
    fn hand_request(&mut self, id: ExchangeId, out: &mut Vec<u8>, host: &[u8]) -> usize;
    /// Take `id` back from the upstream connection where it waits behind a
    /// late response, to be placed again on a connection of its own
    /// (whatever answers its first copy must reach nobody). False if it
    /// cannot be taken back.
    fn detach(&mut self, id: ExchangeId) -> bool;

    // Responses.

    /// The upstream began answering `id` after `ttfb`.
    fn note_upstream(&mut self, id: ExchangeId, ttfb: Duration);
    /// Feed response bytes from the upstream serving `id`: what becomes of
    /// that connection and how many bytes of `data` belonged to this
    /// response (the rest is the next response on the same connection).
    fn on_response_data(&mut self, id: ExchangeId, data: &[u8]) -> (UpstreamFate, usize);
    /// How many of the next response bytes for `id` may go to the client
    /// exactly as they came, from where they are, after everything in the
    /// output (then [`ClientSession::take_verbatim`]); 0: none.
    fn verbatim_body(&self, id: ExchangeId) -> u64;
    /// `n` bytes of `id` (at most [`ClientSession::verbatim_body`]) went to
    /// the client without passing through the output.
    fn take_verbatim(&mut self, id: ExchangeId, n: usize) -> UpstreamFate;
    /// How many more response bytes for `id` fit within the buffer now,
    /// `client_unsent` bytes being on their way to the client already.
    fn upstream_room(&self, id: ExchangeId, client_unsent: usize) -> usize;
    /// The idle timeout (seconds) an origin announced in a response head
    /// fed since the last call: it applies to the connection it came on.
    fn take_upstream_idle_hint(&mut self) -> Option<u32>;
    /// The upstream serving `id` reached end of stream.
    fn on_upstream_eof(&mut self, id: ExchangeId) -> FailOutcome;
    /// The upstream serving `id` failed with `err`: a retry or an error
    /// answer.
    fn on_upstream_error(&mut self, id: ExchangeId, err: ProxyError) -> FailOutcome;

    // The client's output.

    /// Bytes ready for the client.
    fn output(&mut self) -> &mut Vec<u8>;
    /// The client is to be closed once the output is flushed.
    fn wants_close(&self) -> bool;
    /// The close comes while the client may still be sending: shut our
    /// side first and read until the client's end.
    fn lingers(&self) -> bool;

    // Tunnels.

    /// The connection switched protocols and carries opaque bytes.
    fn is_tunnel(&self) -> bool;
    /// The tunnel and which of its ends have half-closed.
    fn tunnel(&self) -> Option<TunnelEnds>;

    // The connection's life.

    /// The proxy is shutting down: answer what was read, the last answer
    /// saying so, read nothing more.
    fn drain(&mut self);
    /// The worker is retiring: the next answer is the connection's last.
    fn close_soon(&mut self);
    /// The client took too long to send a request head.
    fn on_header_timeout(&mut self);
    /// Give up on every exchange (the request deadline passed): the oldest
    /// unanswered one gets `err` if its response has not started. (With
    /// [`ClientSession::independent_exchanges`], on the oldest only.)
    fn abandon(&mut self, err: ProxyError);
    /// The connection is closing: every exchange left ends, cut short.
    fn cut_short(&mut self);

    // What the core asks of its state.

    /// Nothing in flight and nothing buffered.
    fn is_idle(&self) -> bool;
    /// Exchanges in flight or waiting.
    fn pending(&self) -> usize;
    /// Bytes of an incomplete request head are waiting.
    fn has_partial_head(&self) -> bool;
    /// The rest of an answered request's body is being read and dropped.
    fn is_discarding(&self) -> bool;
    /// Any request was read on this connection.
    fn any_request(&self) -> bool;
    /// When the oldest exchange in progress began.
    fn busy_since(&self) -> Option<Instant>;
    /// Requests read on this connection so far.
    fn requests(&self) -> u64;
    /// The connection served `n` requests before (on another worker).
    fn set_requests(&mut self, n: u64);
    /// The client is at `addr` (a PROXY protocol header said so), not
    /// where the connection comes from.
    fn set_client_addr(&mut self, addr: std::net::IpAddr);
    /// The connection's TLS handshake is done.
    fn set_tls(&mut self, tls: TlsInfo);

    // Housekeeping.

    /// Release buffer capacity above `keep` bytes (the connection is idle).
    fn shrink_idle(&mut self, keep: usize);
    /// Hand every exchange that ended since the last call to `f`.
    fn drain_finished(&mut self, f: &mut dyn FnMut(Finished));

    // What only HTTP/2 has.

    /// The protocol it speaks, for the status page: `http/1.1` or `h2`.
    fn protocol(&self) -> &'static str {
        "http/1.1"
    }
    /// Whether the connection may go to another worker while idle (an
    /// HTTP/2 connection's tables and streams live in its session: no).
    fn movable(&self) -> bool {
        true
    }
    /// Since when a response has waited for a window the client does not
    /// open: past the idle timeout the connection closes.
    fn stalled_since(&self) -> Option<Instant> {
        None
    }
    /// Exchanges are independent (HTTP/2 streams): one past the request
    /// deadline ends alone ([`ClientSession::abandon`] ends the oldest, and
    /// its upstream connection goes through
    /// [`ClientSession::take_cancelled`]); otherwise every exchange ends
    /// with the late one.
    fn independent_exchanges(&self) -> bool {
        false
    }
    /// The connection is about to close for idleness: say so first
    /// (HTTP/2's GOAWAY) and return true; it closes once that is out.
    fn says_goodbye(&mut self) -> bool {
        false
    }
    /// Hand `f` each exchange that ended in the session while an upstream
    /// connection may still carry it (an HTTP/2 stream its client reset):
    /// the core lets that connection go.
    fn take_cancelled(&mut self, _f: &mut dyn FnMut(ExchangeId)) {}
}
