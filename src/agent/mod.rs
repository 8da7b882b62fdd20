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
//! Files: `session.rs` (the [`ClientSession`] methods: what the worker's
//! core asks of the agent), [`exchange`] (one request and its response, as
//! states),
//! [`request`] (reading the client: heads, bodies, refusals, what goes
//! upstream), [`response`] (framing responses into the client's output, in
//! order; failures and retries), [`local`] (answers ringmux writes itself).

mod exchange;
mod local;
mod request;
mod response;
mod session;
#[cfg(test)]
mod tests;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;

use crate::access_log::Finished;
use crate::codec::date::{http_date, HttpDate};
use crate::codec::ForwardCtx;
use crate::routes::RouteTable;
#[cfg(doc)]
use crate::session::ClientSession;
use crate::session::ExchangeId;
use crate::stash::Stash;

use exchange::Exchange;
use request::Reading;

/// Default bound, per client, on each of: response bytes held for an
/// exchange not yet at the front, client output buffered before the
/// upstream feeding it is paused, and request body bytes buffered before
/// the client is paused (`--buffer-size`).
pub const DEFAULT_BUFFER: usize = 256 * 1024;

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
    /// The routes, as the worker's configuration says now (None: every
    /// request goes to the default backend).
    pub routes: RefCell<Option<Arc<RouteTable>>>,
    /// `Strict-Transport-Security` for answers over TLS (`--hsts`).
    pub hsts: RefCell<Option<crate::routes::HeaderRules>>,
    /// What the worker's HTTP/2 connections did (their sessions add to
    /// it; `/metrics` reads it).
    pub h2: Cell<crate::h2::session::H2Totals>,
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
            routes: RefCell::new(None),
            hsts: RefCell::new(None),
            h2: Cell::new(Default::default()),
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
    /// The connection's TLS, once its handshake is done.
    tls: Option<crate::session::TlsInfo>,
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
            tls: None,
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

    /// Give an exchange's buffers back to the stash.
    fn recycle(&self, mut ex: Exchange) {
        self.shared.give_bytes(ex.answer());
        self.shared.give_bytes(ex.request.bytes);
        self.shared.give_bytes(ex.held);
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
    fn exchange(&self, id: ExchangeId) -> Option<&Exchange> {
        self.exchanges.get(self.index_of(id)?)
    }
}
