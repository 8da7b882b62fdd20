//! The multiplexing agent: one client connection's requests, fanned out and
//! answered in order.
//!
//! A [`ClientAgent`] takes the client's bytes, parses requests with the
//! codec, and keeps one [`Exchange`] per request in arrival order. It says
//! which exchanges may go upstream now ([`ClientAgent::next_ready`]), hands
//! out the bytes to send for each, takes each response's bytes as they come
//! back from whichever upstream connection serves it, and lays the answers
//! out in request order in one client output buffer.
//!
//! The ordering rule: requests with a safe method (GET, HEAD, OPTIONS) and
//! no body run in parallel, up to the pipeline depth, each on its own
//! upstream connection. Any other request is a barrier: it starts only when
//! every request before it has its full response, and requests after it
//! wait until it has its own.
//!
//! Memory stays bounded: a response that arrives ahead of its turn is held
//! up to the buffer size ([`DEFAULT_BUFFER`] unless
//! [`ClientAgent::with_buffer`] says otherwise), the client output up to the
//! same; past those the driver is told to stop reading that upstream
//! ([`ClientAgent::may_read_upstream`]). Unparsed client input and unsent
//! request bodies are capped the same way ([`ClientAgent::may_read_client`]).
//!
//! This module never does I/O and never reads a clock: the worker feeds it
//! bytes and carries out what it asks for.

//!
//! Files: [`exchange`] (one request and its response, as states),
//! [`request`] (reading the client: heads, bodies, refusals, what goes
//! upstream), [`response`] (framing responses into the client's output, in
//! order; failures and retries), [`local`] (answers ringmux writes itself).

mod exchange;
mod local;
mod request;
mod response;
#[cfg(test)]
mod tests;

use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;

use crate::access_log::{Finished, UpstreamNote};
use crate::codec::date::{http_date, HttpDate};
use crate::codec::ForwardCtx;
use crate::stash::Stash;

pub use exchange::Exchange;
use exchange::Progress;
pub use local::error_response;
use request::Reading;

/// Identifies an exchange within its client connection.
pub type ExchangeId = u64;

/// Default bound, per client, on each of: response bytes held for an
/// exchange not yet at the front, client output buffered before the
/// upstream feeding it is paused, and request body bytes buffered before
/// the client is paused (`--buffer-size`).
pub const DEFAULT_BUFFER: usize = 256 * 1024;

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

/// Byte buffers larger than this are not recycled (they go back to the
/// allocator): the stash is for the small buffers every request needs.
const STASH_BUFFER_MAX: usize = 16 * 1024;

/// What one worker's agents share: the `Date` of ringmux's own responses,
/// kept current by the driver, and a [`Stash`] of buffers and exchange
/// queues that idle connections give back and new requests take.
pub struct AgentShared {
    /// The `Date` of responses written by ringmux itself.
    pub date: Cell<HttpDate>,
    /// The time of the driver's current turn: when an exchange starts and
    /// ends, as far as its agent knows (it reads no clock).
    pub now: Cell<Instant>,
    /// Keep each request's line and a few fields for the access log.
    pub keep_request_lines: Cell<bool>,
    /// The affinity cookie's name and the hand-off field's, as the
    /// worker's configuration says now (they apply to every head parsed,
    /// on old connections too).
    pub affinity: Cell<(Option<&'static str>, Option<&'static str>)>,
    bytes: Stash<Vec<u8>>,
    queues: Stash<VecDeque<Exchange>>,
}

impl AgentShared {
    /// Shared state for agents whose driver's clock says `now`.
    pub fn new(now: Instant) -> Self {
        AgentShared {
            date: Cell::new(http_date(0)),
            now: Cell::new(now),
            keep_request_lines: Cell::new(false),
            affinity: Cell::new((None, None)),
            bytes: Stash::new(1024),
            queues: Stash::new(1024),
        }
    }

    /// An empty byte buffer, recycled if one is at hand.
    pub fn take_bytes(&self) -> Vec<u8> {
        self.bytes.take().unwrap_or_default()
    }

    /// Give a byte buffer back for reuse (small ones only).
    pub fn give_bytes(&self, mut v: Vec<u8>) {
        if v.capacity() > 0 && v.capacity() <= STASH_BUFFER_MAX {
            v.clear();
            self.bytes.give(v);
        }
    }
}

impl Default for AgentShared {
    /// For an agent on its own (tests): the clock starts at construction.
    fn default() -> Self {
        AgentShared::new(Instant::now())
    }
}

/// Per-client state of the multiplexing agent.
pub struct ClientAgent {
    ctx: ForwardCtx,
    /// Client bytes received but not parsed yet; parsed requests are
    /// consumed from the front in O(1).
    input: BytesMut,
    reading: Reading,
    /// Exchanges not yet fully delivered, oldest first.
    exchanges: VecDeque<Exchange>,
    next_id: ExchangeId,
    depth: usize,
    /// Bytes for the client, in order.
    out: Vec<u8>,
    /// Close the client once `out` is flushed and nothing is pending.
    close_when_flushed: bool,
    /// The client sent FIN.
    peer_closed: bool,
    /// Largest request body accepted (0: no limit).
    max_body: u64,
    /// Bytes buffered per direction: client output, each held response,
    /// request body ([`DEFAULT_BUFFER`] by default).
    buffer: usize,
    /// What this worker's agents share (date, recycled buffers).
    shared: Rc<AgentShared>,
    /// The next request's answer is the connection's last (see
    /// [`ClientAgent::close_soon`]).
    closing_soon: bool,
    /// The proxy is draining: no request after the ones read (see
    /// [`ClientAgent::drain`]).
    draining: bool,
    /// The connection closes while the client may still be sending (a
    /// body or pipelined requests were left unread): the driver shuts our
    /// side and reads until the client's end before it closes, so that
    /// the answer is not lost to a reset (see [`ClientAgent::lingers`]).
    linger: bool,
    /// The idle timeout (seconds) the last response head announced in
    /// `Keep-Alive: timeout=N`, for the driver to apply to the upstream
    /// connection it came on (see [`ClientAgent::take_upstream_idle_hint`]).
    idle_hint: Option<u32>,
    /// Exchanges that left, for the driver to count and log.
    finished: Vec<Finished>,
    /// Requests read on this connection.
    requests: u64,
}

impl ClientAgent {
    /// A new agent for a client at `ctx.client`, forwarding at most `depth`
    /// pipelined requests at once.
    pub fn new(ctx: ForwardCtx, depth: usize) -> Self {
        ClientAgent {
            ctx,
            input: BytesMut::new(),
            reading: Reading::Head,
            exchanges: VecDeque::new(),
            next_id: 0,
            depth: depth.max(1),
            out: Vec::new(),
            close_when_flushed: false,
            peer_closed: false,
            max_body: 0,
            buffer: DEFAULT_BUFFER,
            shared: Rc::new(AgentShared::default()),
            draining: false,
            closing_soon: false,
            linger: false,
            idle_hint: None,
            finished: Vec::new(),
            requests: 0,
        }
    }

    /// Share `shared` (date, recycled buffers) with the worker's other
    /// agents instead of a private one.
    pub fn with_shared(mut self, shared: Rc<AgentShared>) -> Self {
        self.shared = shared;
        self
    }

    /// Refuse request bodies larger than `limit` bytes with 413 (0: no limit).
    pub fn with_max_body(mut self, limit: u64) -> Self {
        self.max_body = limit;
        self
    }

    /// Buffer up to `bytes` of client output, of each response held for
    /// its turn, and of request body, instead of 256 KiB.
    pub fn with_buffer(mut self, bytes: usize) -> Self {
        self.buffer = bytes.max(1);
        self
    }

    /// The connection is closing: every exchange still here leaves as a
    /// [`Finished`] marked aborted, with what it got so far (a tunnel's
    /// 101, the status of a response that had started, or
    /// [`crate::access_log::CLOSED_BEFORE_ANSWER`]).
    pub fn cut_short(&mut self) {
        let now = self.shared.now.get();
        while let Some(mut ex) = self.exchanges.pop_front() {
            self.finished.push(ex.finish(now, true));
            self.recycle(ex);
        }
    }

    /// Hand every exchange that left since the last call to `f`.
    pub fn drain_finished(&mut self, mut f: impl FnMut(Finished)) {
        for done in self.finished.drain(..) {
            f(done);
        }
    }

    /// Requests read on this connection so far.
    pub fn requests(&self) -> u64 {
        self.requests
    }

    /// The connection served `n` requests before this agent took it (it
    /// came from another worker).
    pub fn set_requests(&mut self, n: u64) {
        self.requests = n;
    }

    /// The affinity cookie `id` came with, if any.
    pub fn affinity(&self, id: ExchangeId) -> Option<&[u8]> {
        self.exchange(id)?.affinity.as_deref()
    }

    /// Fields (each with its CRLF) to add to `id`'s forwarded head, for the
    /// attempt about to be placed (None: none).
    pub fn set_extra_head(&mut self, id: ExchangeId, fields: Option<Vec<u8>>) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.request.extra_head = fields.map(Vec::into_boxed_slice);
        }
    }

    /// A `Set-Cookie` field (with its CRLF) for `id`'s final response head
    /// (None: none).
    pub fn set_cookie(&mut self, id: ExchangeId, field: Option<Vec<u8>>) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.set_cookie = field.map(Vec::into_boxed_slice);
        }
    }

    /// `id` was handed to a connection to upstream `upstream` (stable id)
    /// at `addr`.
    pub fn placed_on(&mut self, id: ExchangeId, upstream: u32, addr: std::net::SocketAddr) {
        if let Some(ex) = self.exchange_mut(id) {
            ex.account.upstream = Some(UpstreamNote {
                id: upstream,
                addr,
                ttfb_us: None,
            });
        }
    }

    /// The upstream began answering `id` after `ttfb`.
    pub fn note_upstream(&mut self, id: ExchangeId, ttfb: std::time::Duration) {
        if let Some(note) = self
            .exchange_mut(id)
            .and_then(|ex| ex.account.upstream.as_mut())
        {
            note.ttfb_us = Some(ttfb.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// The oldest exchange still in progress began at this instant.
    pub fn busy_since(&self) -> Option<Instant> {
        self.exchanges.front().map(Exchange::began)
    }

    /// Give an exchange's buffers back to the stash.
    fn recycle(&self, mut ex: Exchange) {
        self.shared.give_bytes(ex.answer());
        self.shared.give_bytes(ex.request.bytes);
        self.shared.give_bytes(ex.held);
    }

    /// The proxy is shutting down: what was read is answered, the last
    /// answer with `Connection: close`, and nothing more is read (a body
    /// being read is read to its end first); then the connection closes.
    /// An idle connection closes at once; a tunnel is left to its ends (or
    /// the drain deadline).
    pub fn drain(&mut self) {
        self.draining = true;
        match self.reading {
            Reading::Head | Reading::AwaitUpgrade { .. } => {
                self.linger |= !self.input.is_empty();
                self.reading = Reading::Stopped;
                self.input.clear();
            }
            // A body being dropped: the answer is out and nothing waits for
            // the rest, so the connection ends now, lingering.
            Reading::Discard { .. } => {
                self.linger = true;
                self.reading = Reading::Stopped;
            }
            Reading::Body { .. } | Reading::Tunnel { .. } | Reading::Stopped => {}
        }
        match self.exchanges.back_mut() {
            Some(last) => last.close_after = true,
            None => self.close_when_flushed = true,
        }
        if self
            .exchanges
            .iter()
            .all(|e| matches!(e.progress, Progress::Answered))
        {
            self.advance();
        }
    }

    /// The worker is retiring: like [`ClientAgent::drain`] for what was
    /// read, but a connection with nothing in progress stays open for its
    /// next request, whose answer says `Connection: close` (closing an idle
    /// keep-alive connection races with the request the client may be
    /// sending on it right now).
    pub fn close_soon(&mut self) {
        self.closing_soon = true;
        // What is in progress ends with a close, unless its answer went out
        // saying keep-alive already: then the next request (or the idle
        // grace) ends the connection.
        if self.exchanges.back().is_some_and(|e| !e.progress.started()) {
            self.drain();
        }
    }

    /// A keep-alive connection with nothing in flight and nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.input.is_empty()
            && self.out.is_empty()
            && !self.close_when_flushed
            && !self.is_discarding()
    }

    /// The connection is to close while the client may still be sending
    /// (a body or requests were left unread): our side is shut first, and
    /// what the client still sends is read and dropped until its end, so
    /// that the answer reaches it rather than a reset.
    pub fn lingers(&self) -> bool {
        self.linger && !self.peer_closed
    }

    /// Whether any request was read on this connection.
    pub fn any_request(&self) -> bool {
        self.next_id > 0
    }

    fn exchange_mut(&mut self, id: ExchangeId) -> Option<&mut Exchange> {
        let first = self.exchanges.front()?.id;
        let idx = id.checked_sub(first)? as usize;
        self.exchanges.get_mut(idx).filter(|e| e.id == id)
    }

    fn index_of(&self, id: ExchangeId) -> Option<usize> {
        let first = self.exchanges.front()?.id;
        let idx = id.checked_sub(first)? as usize;
        (self.exchanges.get(idx)?.id == id).then_some(idx)
    }

    /// Look at an exchange.
    pub fn exchange(&self, id: ExchangeId) -> Option<&Exchange> {
        self.exchanges.get(self.index_of(id)?)
    }

    /// The next exchange that may go upstream now, marked as placed.
    pub fn next_ready(&mut self) -> Option<ExchangeId> {
        let mut all_answered_before = true;
        for ex in self.exchanges.iter_mut() {
            let answered = matches!(ex.progress, Progress::Answered);
            if matches!(ex.progress, Progress::Queued) {
                if ex.is_parallel() || all_answered_before {
                    ex.progress = Progress::placed();
                    return Some(ex.id);
                }
                return None;
            }
            if !ex.is_parallel() && !answered {
                return None; // a barrier in progress holds back what follows
            }
            all_answered_before &= answered;
        }
        None
    }

    /// Bytes ready for the client.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// True when the client should be closed once the output is flushed.
    pub fn wants_close(&self) -> bool {
        self.close_when_flushed
    }

    /// Release buffer capacity above `keep` bytes (the connection is idle);
    /// with `keep` 0, the exchange queue's too, so an idle keep-alive
    /// connection holds no heap memory but the agent itself.
    pub fn shrink_idle(&mut self, keep: usize) {
        if self.out.is_empty() && self.out.capacity() > keep {
            self.shared.give_bytes(std::mem::take(&mut self.out));
        }
        if self.input.is_empty() && self.input.capacity() > keep {
            self.input = BytesMut::new();
        }
        if keep == 0 && self.exchanges.is_empty() && self.exchanges.capacity() > 0 {
            self.shared.queues.give(std::mem::take(&mut self.exchanges));
        }
    }

    /// Exchanges currently in flight or waiting.
    pub fn pending(&self) -> usize {
        self.exchanges.len()
    }

    /// The exchange's tunnel and which of its ends have half-closed, once
    /// the connection switched protocols.
    pub fn tunnel(&self) -> Option<TunnelEnds> {
        let Reading::Tunnel {
            exchange,
            client_done,
        } = self.reading
        else {
            return None;
        };
        let upstream_done = matches!(
            self.exchange(exchange).map(|e| &e.progress),
            Some(Progress::Tunnel {
                upstream_done: true
            })
        );
        let owed_nothing_else = self
            .exchanges
            .front()
            .is_some_and(|e| e.id == exchange && e.held.is_empty());
        Some(TunnelEnds {
            exchange,
            client_done,
            upstream_done,
            owed_nothing_else,
        })
    }
}
