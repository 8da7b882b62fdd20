//! One request and its response: what an exchange is allowed to do
//! (its shape and attempt), how far its request and its response have
//! come (as states), the request bytes it hands upstream, and what the
//! access log will say of it.

use std::sync::Arc;
use std::time::Instant;

use crate::access_log::{Finished, RequestLine, UpstreamNote, CLOSED_BEFORE_ANSWER};
use crate::codec::{BodyDecoder, Framing, Method, RequestHead};

use crate::routes::Route;
use crate::session::{ExchangeId, Placing};
use crate::spec::BackendId;

/// How an exchange may be scheduled beside the others of its client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Shape {
    /// Starts only when every request before it has its full response, and
    /// holds back the ones after it until it has its own (a method that is
    /// not safe, or a body).
    Barrier,
    /// Runs alongside other exchanges (safe method, no body), each on an
    /// upstream connection of its own.
    Parallel,
    /// Parallel, and may also follow another of this client's requests on
    /// one upstream connection: GET or OPTIONS without body, `Expect` or
    /// `Upgrade`. Never HEAD: a body wrongly sent after a HEAD answer is the
    /// classic desync, and on a connection of its own it costs only that one.
    Shareable,
}

impl Shape {
    fn of(head: &RequestHead, has_body: bool) -> Shape {
        if !head.method.is_safe() || has_body {
            Shape::Barrier
        } else if matches!(head.method, Method::Get | Method::Options)
            && !head.expect_continue
            && !head.upgrade
        {
            Shape::Shareable
        } else {
            Shape::Parallel
        }
    }
}

/// Which attempt at reaching an upstream this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    /// The first.
    First,
    /// Taken back from behind a late response (see
    /// [`super::ClientAgent::detach`]): goes on a connection of its own and
    /// never shares again.
    Detached,
    /// Sent again after a failure, or given up on by a deadline: there is
    /// no further attempt, and it goes on a fresh connection.
    Retried,
}

/// A request with a body is kept for one retry up to this size, head
/// included (what an HTTP/2 origin refused unprocessed goes again).
pub(super) const REPLAY_MAX: usize = 64 * 1024;

/// How much of the request the client has sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Upload {
    /// All of it has been read.
    Done,
    /// Body bytes are on their way.
    Coming,
    /// `Expect: 100-continue`, and neither a 100 went to the client nor did
    /// a body byte come: the client may never send the body it announced.
    Withheld,
}

/// How far the response has come.
#[derive(Debug)]
pub(super) enum Progress {
    /// Parsed, waiting for its turn or for an upstream connection.
    Queued,
    /// On an upstream connection, waiting for (the rest of) its final head.
    /// `partial`: the bytes of a head that came in pieces; `interim`: an
    /// informational response (a 100) went to the client already.
    Waiting { partial: Vec<u8>, interim: bool },
    /// Forwarding the body.
    Body { decoder: BodyDecoder, dechunk: bool },
    /// Switched protocols: every byte is the client's. `upstream_done`: the
    /// origin half-closed (its FIN is passed on to the client).
    Tunnel { upstream_done: bool },
    /// Complete (forwarded, written here, or replaced by an error): nothing
    /// more is forwarded.
    Answered,
}

impl Progress {
    /// Placed, nothing of the response yet.
    pub(super) fn placed() -> Progress {
        Progress::Waiting {
            partial: Vec::new(),
            interim: false,
        }
    }

    /// Some of the answer reached the client's side: no retry and no error
    /// page any more.
    pub(super) fn started(&self) -> bool {
        !matches!(
            self,
            Progress::Queued | Progress::Waiting { interim: false, .. }
        )
    }
}

/// The request bytes for the upstream (forwarded head, then body) and what
/// of them went out.
#[derive(Debug, Default)]
pub(super) struct Outgoing {
    /// INVARIANT: `handed <= bytes.len()`; bytes before `handed` went out.
    pub(super) bytes: Vec<u8>,
    handed: usize,
    /// Where in `bytes` the forwarded head's final CRLF is, while the head
    /// has not gone out: what the placement adds goes there.
    head_end: Option<usize>,
    /// An HTTP/1.0 request that came without Host: the upstream's goes in.
    needs_host: bool,
    /// Fields the placement adds to the forwarded head (the affinity
    /// hand-off's peer).
    pub(super) extra_head: Option<Box<[u8]>>,
    /// Some of it was handed to an upstream connection (`handed` goes back
    /// to 0 when what went is freed: this stays).
    pub(super) began: bool,
}

impl Outgoing {
    /// Everything was handed and kept (see `small_and_whole`): it can be
    /// handed again from the start.
    pub(super) fn whole_kept(&self) -> bool {
        self.began && self.handed == self.bytes.len() && !self.bytes.is_empty()
    }

    /// Bytes not handed out yet.
    pub(super) fn pending(&self) -> usize {
        self.bytes.len() - self.handed
    }

    /// Whether every byte read so far went out.
    pub(super) fn all_handed(&self) -> bool {
        self.handed == self.bytes.len()
    }

    /// The bytes not handed out yet.
    #[cfg(test)]
    pub(super) fn unsent(&self) -> &[u8] {
        &self.bytes[self.handed..]
    }

    /// Append the bytes not handed out yet to `out`, with a `Host: host`
    /// and the placement's fields in the head if it is among them. `keep`:
    /// keep them for a second attempt; otherwise what went out is freed.
    /// Returns how many bytes were appended.
    pub(super) fn hand(&mut self, out: &mut Vec<u8>, host: &[u8], keep: bool) -> usize {
        let before = out.len();
        match self.head_end {
            Some(at) if self.handed <= at => {
                out.extend_from_slice(&self.bytes[self.handed..at]);
                if self.needs_host {
                    out.extend_from_slice(b"Host: ");
                    out.extend_from_slice(host);
                    out.extend_from_slice(b"\r\n");
                }
                if let Some(extra) = &self.extra_head {
                    out.extend_from_slice(extra);
                }
                out.extend_from_slice(&self.bytes[at..]);
            }
            _ => out.extend_from_slice(&self.bytes[self.handed..]),
        }
        self.began |= out.len() > before;
        if keep {
            self.handed = self.bytes.len();
        } else {
            self.forget();
        }
        out.len() - before
    }

    /// Hand everything out again from the start (a second attempt).
    pub(super) fn rewind(&mut self) {
        self.handed = 0;
    }

    /// Drop every byte: none of it will go anywhere.
    pub(super) fn forget(&mut self) {
        self.bytes.clear();
        self.handed = 0;
        self.head_end = None;
    }
}

/// What the access log will say of an exchange.
#[derive(Debug)]
pub(super) struct Account {
    /// When its head was read (the driver's clock, see `AgentShared::now`).
    started: Instant,
    /// The status of the answer the client gets (0 until known).
    pub(super) status: u16,
    /// Bytes of the answer written for the client so far.
    pub(super) bytes: u64,
    /// The upstream it was last placed on, and how long its first byte
    /// took.
    pub(super) upstream: Option<UpstreamNote>,
    /// The request line and fields, kept only while the log is on.
    pub(super) line: Option<Box<RequestLine>>,
    /// The route it matched and the backend it went to.
    pub(super) route: Option<Arc<str>>,
    pub(super) backend: Option<Arc<str>>,
    pub(super) tls: Option<(&'static str, Option<Arc<str>>)>,
}

impl Account {
    /// The line for an exchange that leaves at `done`; `aborted`: its
    /// connection closed before its answer was complete.
    pub(super) fn finish(&mut self, done: Instant, aborted: bool) -> Finished {
        Finished {
            status: match self.status {
                0 if aborted => CLOSED_BEFORE_ANSWER,
                s => s,
            },
            bytes: self.bytes,
            started: self.started,
            done,
            upstream: self.upstream,
            line: self.line.take(),
            aborted,
            route: self.route.take(),
            backend: self.backend.take(),
            tls: self.tls.take(),
        }
    }
}

/// One request and its response.
#[derive(Debug)]
pub(super) struct Exchange {
    /// Identity within the client connection.
    pub(super) id: ExchangeId,
    /// Hash of the request path, for URL-hash balancing.
    path_hash: u64,
    /// Hash of the forwarded target, query included (see
    /// `RequestHead::route_hash`).
    route: u64,
    pub(super) method: Method,
    pub(super) minor_version: u8,
    pub(super) shape: Shape,
    pub(super) attempt: Attempt,
    pub(super) upload: Upload,
    pub(super) progress: Progress,
    pub(super) request: Outgoing,
    /// Response bytes waiting for the exchanges before this one.
    pub(super) held: Vec<u8>,
    pub(super) account: Account,
    /// The affinity cookie's value, as the client sent it.
    pub(super) affinity: Option<Box<[u8]>>,
    /// A `Set-Cookie` field (with its CRLF) for the response's head.
    pub(super) set_cookie: Option<Box<[u8]>>,
    /// The client asked to keep the connection open after this exchange.
    pub(super) keep_alive: bool,
    /// The request asks to switch protocols.
    pub(super) upgrade: bool,
    /// The client connection closes after this exchange's response.
    pub(super) close_after: bool,
    /// The upstream connection closes after this response.
    pub(super) close_upstream: bool,
    /// The backend it goes to.
    pub(super) backend: BackendId,
    /// The route it matched, for its response rules and timeout.
    pub(super) routed: Option<Arc<Route>>,
}

impl Exchange {
    /// An exchange with no request, answered here (a refusal): `answer`
    /// is its whole response.
    pub(super) fn answered(
        id: ExchangeId,
        started: Instant,
        answer: Vec<u8>,
        status: u16,
    ) -> Exchange {
        Exchange {
            id,
            path_hash: 0,
            route: 0,
            method: Method::Get,
            minor_version: 1,
            shape: Shape::Barrier,
            attempt: Attempt::First,
            upload: Upload::Done,
            progress: Progress::Answered,
            request: Outgoing::default(),
            account: Account {
                started,
                status,
                bytes: answer.len() as u64,
                upstream: None,
                line: None,
                route: None,
                backend: None,
                tls: None,
            },
            held: answer,
            affinity: None,
            set_cookie: None,
            keep_alive: false,
            upgrade: false,
            close_after: true,
            close_upstream: false,
            backend: BackendId::DEFAULT,
            routed: None,
        }
    }

    /// The exchange for a request whose head (`raw_head` as received)
    /// parsed as `head`; `request` holds the head to forward. `keep_alive`:
    /// the connection may go on after it.
    pub(super) fn parsed(
        id: ExchangeId,
        started: Instant,
        head: &RequestHead,
        raw_head: &[u8],
        request: Vec<u8>,
        keep_alive: bool,
    ) -> Exchange {
        let has_body = !matches!(head.framing, Framing::None | Framing::Length(0));
        let affinity = head.affinity.and_then(|(at, len)| {
            let (at, len) = (at as usize, len as usize);
            raw_head.get(at..at + len).map(Box::<[u8]>::from)
        });
        Exchange {
            id,
            path_hash: head.path_hash,
            route: head.route_hash,
            method: head.method,
            minor_version: head.minor_version,
            shape: Shape::of(head, has_body),
            attempt: Attempt::First,
            upload: match (has_body, head.expect_continue) {
                (false, _) => Upload::Done,
                (true, false) => Upload::Coming,
                (true, true) => Upload::Withheld,
            },
            progress: Progress::Queued,
            request: Outgoing {
                // Before the blank line that ends the head.
                head_end: Some(request.len() - 2),
                bytes: request,
                handed: 0,
                needs_host: head.needs_host,
                extra_head: None,
                began: false,
            },
            held: Vec::new(),
            account: Account {
                started,
                status: 0,
                bytes: 0,
                upstream: None,
                line: None,
                route: None,
                backend: None,
                tls: None,
            },
            affinity,
            set_cookie: None,
            keep_alive,
            upgrade: head.upgrade,
            close_after: !keep_alive,
            close_upstream: false,
            backend: BackendId::DEFAULT,
            routed: None,
        }
    }

    /// Answered here with `answer` (of status `status`) instead of going
    /// upstream.
    pub(super) fn answer_here(&mut self, answer: Vec<u8>, status: u16) {
        self.request.forget();
        self.progress = Progress::Answered;
        self.upgrade = false;
        self.account.status = status;
        self.account.bytes = answer.len() as u64;
        self.held = answer;
    }

    /// When its head was read.
    pub(super) fn began(&self) -> Instant {
        self.account.started
    }

    /// May run alongside other exchanges.
    pub(super) fn is_parallel(&self) -> bool {
        self.shape != Shape::Barrier
    }

    /// What placing it needs to know.
    pub(super) fn placing(&self) -> Placing {
        Placing {
            path_hash: self.path_hash,
            route: self.route,
            retry: self.attempt == Attempt::Retried,
            tried: self.account.upstream.map(|u| u.id),
            may_share: self.shape == Shape::Shareable && self.attempt == Attempt::First,
            backend: self.backend,
            response_timeout: self.routed.as_ref().and_then(|r| r.response_timeout),
        }
    }

    /// The whole request has been read from the client.
    pub(super) fn request_done(&self) -> bool {
        self.upload == Upload::Done
    }

    /// The client may never send the body it announced (see
    /// [`Upload::Withheld`]).
    pub(super) fn body_withheld(&self) -> bool {
        self.upload == Upload::Withheld
    }

    /// Body bytes came, or the client was told to send them.
    pub(super) fn body_coming(&mut self) {
        if self.upload == Upload::Withheld {
            self.upload = Upload::Coming;
        }
    }

    /// Its request (head and body) is all here and at most
    /// [`REPLAY_MAX`]: kept whole as it is handed, it can go again.
    pub(super) fn small_and_whole(&self) -> bool {
        self.request_done()
            && self.request.bytes.len() <= REPLAY_MAX
            && (!self.request.began || self.request.whole_kept())
    }

    /// Whether a failure of kind `retry` may be tried once more.
    pub(super) fn may_retry(&self, retry: crate::error::Retry) -> bool {
        use crate::error::Retry;
        if self.attempt == Attempt::Retried || self.progress.started() {
            return false;
        }
        match retry {
            Retry::Yes => {
                self.is_parallel()
                    || !self.request.began && self.request_done()
                    || self.request.whole_kept()
            }
            Retry::IfIdempotent => self.is_parallel(),
            Retry::No => false,
        }
    }

    /// Back to the queue for a second attempt: whatever the first upstream
    /// began to answer is not the answer.
    pub(super) fn retry(&mut self) -> Vec<u8> {
        self.attempt = Attempt::Retried;
        self.request.rewind();
        self.held.clear();
        match std::mem::replace(&mut self.progress, Progress::Queued) {
            Progress::Waiting { partial, .. } => partial,
            _ => Vec::new(),
        }
    }

    /// Nothing more will be forwarded for it.
    pub(super) fn answer(&mut self) -> Vec<u8> {
        match std::mem::replace(&mut self.progress, Progress::Answered) {
            Progress::Waiting { partial, .. } => partial,
            _ => Vec::new(),
        }
    }

    /// Leaves with its connection closing before its answer was complete.
    pub(super) fn finish(&mut self, done: Instant, aborted: bool) -> Finished {
        self.account.finish(done, aborted)
    }
}
