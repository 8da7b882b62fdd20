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

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt::Write as _;
use std::rc::Rc;
use std::time::Instant;

use bytes::{Buf, BytesMut};

use crate::codec::date::{http_date, HttpDate};
use crate::codec::{self, BodyDecoder, ForwardCtx, Framing, Method, ResponseCtx, MAX_HEAD_BYTES};
use crate::error::{ProxyError, Retry};
use crate::stash::Stash;

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

/// What one response parsing step leaves to do.
enum Step {
    /// Stop with this verdict on the upstream connection, having used this
    /// many bytes of the step's input.
    Fate(UpstreamFate, usize),
    /// This many bytes were used; go on with the rest.
    Rest(usize),
}

/// Where an exchange stands with respect to the upstream side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Parsed, waiting for its turn or for an upstream connection.
    Queued,
    /// On an upstream connection.
    Dispatched,
    /// Response complete (forwarded, or replaced by an error).
    Answered,
}

/// Progress of the response for one exchange.
#[derive(Debug)]
enum Response {
    /// Waiting for (the rest of) a head; `partial` holds the bytes so far.
    AwaitHead { partial: Vec<u8> },
    /// Forwarding the body.
    Body { decoder: BodyDecoder, dechunk: bool },
    /// Switched protocols: every byte is the client's. `upstream_done`:
    /// the origin half-closed (its FIN is passed on to the client).
    Tunnel { upstream_done: bool },
    /// Nothing more to forward.
    Complete,
}

/// One request and its response.
#[derive(Debug)]
pub struct Exchange {
    /// Identity within the client connection.
    pub id: ExchangeId,
    method: Method,
    /// May run alongside other exchanges (safe method, no body).
    parallel: bool,
    /// May follow another of this client's requests on one upstream
    /// connection: GET or OPTIONS without body, `Expect` or `Upgrade`.
    /// Never HEAD: a body wrongly sent after a HEAD answer is the classic
    /// desync, and on a connection of its own it only costs that one.
    shareable: bool,
    /// Sent again on a connection of its own after waiting behind a late
    /// response (see [`ClientAgent::detach`]): never shares again.
    solo: bool,
    /// Hash of the forwarded target, query included (see
    /// `RequestHead::route_hash`).
    route: u64,
    /// Where in `request` the forwarded head's final CRLF is, while the
    /// head has not gone out: what the placement adds goes there (see
    /// [`ClientAgent::hand_request`]).
    head_end: Option<usize>,
    /// An HTTP/1.0 request that came without Host: the upstream's goes in.
    needs_host: bool,
    /// Fields the placement adds to the forwarded head (the affinity
    /// hand-off's peer).
    extra_head: Option<Box<[u8]>>,
    /// The affinity cookie's value, as the client sent it.
    affinity: Option<Box<[u8]>>,
    /// A `Set-Cookie` field (with its CRLF) for the response's head.
    set_cookie: Option<Box<[u8]>>,
    /// The status of the answer the client gets (0 until known).
    status: u16,
    /// Bytes of the answer written for the client so far.
    bytes_out: u64,
    /// When its head was read (the driver's clock, see `AgentShared::now`).
    started: Instant,
    /// The upstream it was last placed on, and how long its first byte
    /// took (see [`ClientAgent::placed_on`], [`ClientAgent::note_upstream`]).
    upstream: Option<UpstreamNote>,
    /// The request line and fields the access log shows, kept only when it
    /// is on.
    line: Option<Box<RequestLine>>,
    minor_version: u8,
    /// Client asked to keep the connection open after this exchange.
    keep_alive: bool,
    /// Request bytes (forwarded head, then body) for the upstream.
    /// INVARIANT: `handed <= request.len()`; bytes before `handed` went out.
    request: Vec<u8>,
    handed: usize,
    /// The whole request, body included, has been read from the client.
    request_done: bool,
    stage: Stage,
    response: Response,
    /// A response byte was produced: no retry, no error page any more.
    response_started: bool,
    /// Response bytes waiting for the exchanges before this one.
    held: Vec<u8>,
    /// Already sent again once after a failure.
    retried: bool,
    /// The client connection closes after this exchange's response.
    close_after: bool,
    /// The upstream connection closes after this response.
    close_upstream: bool,
    /// Hash of the request path, for URL-hash balancing.
    pub path_hash: u64,
    /// The request asks to switch protocols.
    upgrade: bool,
    /// The request said `Expect: 100-continue`, and whether the client was
    /// told to go on (a 100 relayed) or sent body bytes anyway: until one
    /// of those, it may never send the body it announced.
    expect_continue: bool,
    body_coming: bool,
}

impl Exchange {
    fn new(id: ExchangeId, started: Instant) -> Self {
        Exchange {
            id,
            status: 0,
            bytes_out: 0,
            started,
            upstream: None,
            line: None,
            method: Method::Get,
            parallel: false,
            shareable: false,
            solo: false,
            route: 0,
            head_end: None,
            needs_host: false,
            extra_head: None,
            affinity: None,
            set_cookie: None,
            minor_version: 1,
            keep_alive: false,
            request: Vec::new(),
            handed: 0,
            request_done: true,
            stage: Stage::Queued,
            response: Response::AwaitHead {
                partial: Vec::new(),
            },
            response_started: false,
            held: Vec::new(),
            retried: false,
            close_after: false,
            close_upstream: false,
            path_hash: 0,
            upgrade: false,
            expect_continue: false,
            body_coming: false,
        }
    }

    /// May run alongside other exchanges.
    pub fn is_parallel(&self) -> bool {
        self.parallel
    }

    /// This is a second attempt: it must go on a fresh connection.
    pub fn is_retry(&self) -> bool {
        self.retried
    }

    /// May follow another request of the same client on one upstream
    /// connection (only where its route answers fast: the caller decides).
    pub fn may_share(&self) -> bool {
        self.shareable && !self.solo && !self.retried
    }

    /// The route key: a hash of the forwarded target, query included.
    pub fn route(&self) -> u64 {
        self.route
    }

    /// The upstream it was last placed on (a retry avoids it).
    pub fn tried(&self) -> Option<u32> {
        self.upstream.map(|u| u.id)
    }
}

/// Which upstream an exchange went to, for the access log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamNote {
    /// Its stable id.
    pub id: u32,
    /// Its address then.
    pub addr: std::net::SocketAddr,
    /// Its first response byte's time after the request went out, in
    /// microseconds, when it was timed.
    pub ttfb_us: Option<u32>,
}

/// How the client side of the stream is being read.
#[derive(Debug)]
enum Reading {
    /// Expecting a request head.
    Head,
    /// Forwarding the body of exchange `exchange`.
    Body {
        exchange: ExchangeId,
        decoder: BodyDecoder,
        /// Body bytes (decoded) seen so far, for the size limit.
        received: u64,
    },
    /// The rest of a request body whose exchange was answered before it
    /// was read whole (an origin's early answer, an error): read and
    /// dropped, then the next request (see [`ClientAgent::is_discarding`]).
    Discard {
        decoder: BodyDecoder,
        /// Body bytes (decoded) seen so far, for the size limit.
        received: u64,
    },
    /// An upgrade request is out: nothing more is parsed until its answer
    /// says whether the connection switches protocols.
    AwaitUpgrade { exchange: ExchangeId },
    /// Switched protocols: client bytes go to exchange `exchange` as they
    /// are. `client_done`: the client half-closed (passed on upstream once
    /// its bytes are out).
    Tunnel {
        exchange: ExchangeId,
        client_done: bool,
    },
    /// No further requests will be read (close requested, error, EOF).
    Stopped,
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
}

impl Default for AgentShared {
    /// For an agent on its own (tests): the clock starts at construction.
    fn default() -> Self {
        AgentShared::new(Instant::now())
    }
}

/// What the access log shows of a request (kept only while it is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLine {
    /// `GET /path?q HTTP/1.1`, as received (at most 2 KiB of it).
    pub line: String,
    /// The `Referer` and `User-Agent` fields, if sent.
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

/// An exchange that left the agent: its answer is in the client's output.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The status the client got.
    pub status: u16,
    /// Bytes of the answer.
    pub bytes: u64,
    /// When its head was read.
    pub started: Instant,
    /// When its answer was complete.
    pub done: Instant,
    /// The upstream it went to last, None if it never reached one.
    pub upstream: Option<UpstreamNote>,
    /// For the access log (when it is on).
    pub line: Option<Box<RequestLine>>,
    /// Cut short: the connection closed before its answer was complete
    /// (see [`ClientAgent::cut_short`]).
    pub aborted: bool,
}

/// The status logged for an exchange whose connection closed before any
/// of its answer was written (nginx's convention).
pub const CLOSED_BEFORE_ANSWER: u16 = 499;

impl AgentShared {
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

    /// The connection is closing: every exchange still here leaves as a
    /// [`Finished`] marked aborted, with what it got so far (a tunnel's
    /// 101, the status of a response that had started, or
    /// [`CLOSED_BEFORE_ANSWER`]).
    pub fn cut_short(&mut self) {
        let now = self.shared.now.get();
        while let Some(mut ex) = self.exchanges.pop_front() {
            self.finished.push(Finished {
                status: if ex.status == 0 {
                    CLOSED_BEFORE_ANSWER
                } else {
                    ex.status
                },
                bytes: ex.bytes_out,
                started: ex.started,
                done: now,
                upstream: ex.upstream,
                line: ex.line.take(),
                aborted: true,
            });
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
            ex.extra_head = fields.map(Vec::into_boxed_slice);
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
            ex.upstream = Some(UpstreamNote {
                id: upstream,
                addr,
                ttfb_us: None,
            });
        }
    }

    /// The upstream began answering `id` after `ttfb`.
    pub fn note_upstream(&mut self, id: ExchangeId, ttfb: std::time::Duration) {
        if let Some(note) = self.exchange_mut(id).and_then(|ex| ex.upstream.as_mut()) {
            note.ttfb_us = Some(ttfb.as_micros().min(u128::from(u32::MAX)) as u32);
        }
    }

    /// The oldest exchange still in progress began at this instant.
    pub fn busy_since(&self) -> Option<Instant> {
        self.exchanges.front().map(|e| e.started)
    }

    /// Share `shared` (date, recycled buffers) with the worker's other
    /// agents instead of a private one.
    pub fn with_shared(mut self, shared: Rc<AgentShared>) -> Self {
        self.shared = shared;
        self
    }

    /// Give an exchange's buffers back to the stash.
    fn recycle(&self, ex: Exchange) {
        self.shared.give_bytes(ex.request);
        self.shared.give_bytes(ex.held);
        if let Response::AwaitHead { partial } = ex.response {
            self.shared.give_bytes(partial);
        }
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

    /// Take bytes the client sent.
    pub fn on_client_data(&mut self, data: &[u8]) {
        if matches!(self.reading, Reading::Stopped) {
            return; // after a close or an error, nothing more is read
        }
        if self.input.is_empty() {
            // Common case: parse straight from the receive buffer and keep
            // only what is left over.
            let used = self.parse(data);
            self.input.extend_from_slice(&data[used..]);
        } else {
            self.input.extend_from_slice(data);
            let input = std::mem::take(&mut self.input);
            let used = self.parse(&input);
            self.input = input;
            self.input.advance(used);
        }
    }

    /// The client half-closed (EOF). Requests already read are answered.
    pub fn on_client_eof(&mut self) {
        self.peer_closed = true;
        if let Reading::Tunnel { client_done, .. } = &mut self.reading {
            // Half-close: the origin may still have bytes for the client.
            *client_done = true;
            return;
        }
        if let Reading::Body { exchange, .. } = self.reading {
            // The body was cut short: the origin can never see a complete
            // request, so nothing more useful can happen on this client.
            if let Some(ex) = self.exchange_mut(exchange) {
                ex.close_after = true;
            }
            self.close_when_flushed = true;
        }
        self.reading = Reading::Stopped;
        if self.exchanges.is_empty() {
            // Nothing owed: the client closed an idle keep-alive connection.
            self.close_when_flushed = true;
        }
    }

    /// Parse as much of `data` as the state allows; returns bytes used.
    fn parse(&mut self, data: &[u8]) -> usize {
        let mut used = 0;
        loop {
            match &mut self.reading {
                Reading::Stopped => return data.len(),
                // Keep what comes until the answer to the upgrade is known.
                Reading::AwaitUpgrade { .. } => return used,
                Reading::Tunnel { exchange, .. } => {
                    let id = *exchange;
                    if let Some(ex) = self.exchange_mut(id) {
                        ex.request.extend_from_slice(&data[used..]);
                    }
                    return data.len();
                }
                Reading::Body {
                    exchange,
                    decoder,
                    received,
                } => {
                    let id = *exchange;
                    let rest = &data[used..];
                    if rest.is_empty() {
                        return used;
                    }
                    let mut n = 0u64;
                    let res = decoder.feed(rest, &mut |d| n += d.len() as u64);
                    *received += n;
                    let too_large = self.max_body > 0 && *received > self.max_body;
                    match res {
                        Ok(_) if too_large => {
                            self.body_failed(id, ProxyError::BodyTooLarge);
                            return data.len();
                        }
                        Ok(p) => {
                            let done = p.done;
                            if let Some(ex) = self.exchange_mut(id) {
                                ex.request.extend_from_slice(&rest[..p.consumed]);
                                ex.request_done = done;
                                ex.body_coming |= p.consumed > 0;
                            }
                            used += p.consumed;
                            if done {
                                self.reading = if self.draining {
                                    Reading::Stopped
                                } else {
                                    Reading::Head
                                };
                            } else {
                                return used;
                            }
                        }
                        Err(e) => {
                            self.body_failed(id, ProxyError::BadRequestBody(e.reason()));
                            return data.len();
                        }
                    }
                }
                Reading::Discard { decoder, received } => {
                    let rest = &data[used..];
                    if rest.is_empty() {
                        return used;
                    }
                    let mut n = 0u64;
                    let res = decoder.feed(rest, &mut |d| n += d.len() as u64);
                    *received += n;
                    let too_large = self.max_body > 0 && *received > self.max_body;
                    match res {
                        Ok(p) if !too_large => {
                            used += p.consumed;
                            if !p.done {
                                return used;
                            }
                            // The connection goes on where the body ends.
                            self.reading = Reading::Head;
                            if self.draining {
                                // (What follows it is not read: `input`
                                // is out while parsing.)
                                self.linger |= used < data.len();
                                self.stop_reading();
                                return data.len();
                            }
                        }
                        // Too much, or no longer framed: nothing after it
                        // can be found; the connection ends.
                        _ => {
                            self.stop_reading();
                            return data.len();
                        }
                    }
                }
                Reading::Head => {
                    if self.exchanges.len() >= self.depth || used == data.len() {
                        return used;
                    }
                    let id = self.next_id;
                    let mut ex = Exchange::new(id, self.shared.now.get());
                    ex.request = self.shared.take_bytes();
                    if self.exchanges.capacity() == 0 {
                        if let Some(q) = self.shared.queues.take() {
                            self.exchanges = q;
                        }
                    }
                    let (affinity_cookie, drop_field) = self.shared.affinity.get();
                    let ctx = ForwardCtx {
                        affinity_cookie,
                        drop_field,
                        ..self.ctx
                    };
                    let parsed = codec::parse_request(&data[used..], &ctx, &mut ex.request);
                    if !matches!(parsed, Ok(Some(_))) {
                        self.shared.give_bytes(std::mem::take(&mut ex.request));
                    }
                    match parsed {
                        Ok(None) => {
                            if data.len() - used > self.ctx.limits.bytes {
                                self.refuse(ProxyError::BadRequest(codec::HeadError {
                                    status: 431,
                                    reason: "request head too large",
                                }));
                                return data.len();
                            }
                            return used;
                        }
                        Err(e) => {
                            // The access log still shows what was refused.
                            let line = self
                                .shared
                                .keep_request_lines
                                .get()
                                .then(|| Box::new(request_line(&data[used..])));
                            self.refuse_with_line(ProxyError::BadRequest(e), line);
                            return data.len();
                        }
                        Ok(Some(head)) => {
                            if let Framing::Length(n) = head.framing {
                                if self.max_body > 0 && n > self.max_body {
                                    // Known from the head: refuse before
                                    // anything reaches an origin.
                                    self.refuse(ProxyError::BodyTooLarge);
                                    return data.len();
                                }
                            }
                            self.next_id += 1;
                            self.requests += 1;
                            let raw_head = &data[used..used + head.head_len];
                            if self.shared.keep_request_lines.get() {
                                ex.line = Some(Box::new(request_line(raw_head)));
                            }
                            used += head.head_len;
                            ex.method = head.method;
                            ex.minor_version = head.minor_version;
                            // Closing soon (a retiring worker): this
                            // answer is the connection's last.
                            let keep_alive = head.keep_alive && !self.closing_soon;
                            ex.keep_alive = keep_alive;
                            ex.path_hash = head.path_hash;
                            ex.route = head.route_hash;
                            ex.upgrade = head.upgrade;
                            ex.expect_continue = head.expect_continue;
                            let has_body =
                                !matches!(head.framing, Framing::None | Framing::Length(0));
                            ex.parallel = head.method.is_safe() && !has_body;
                            ex.shareable = matches!(head.method, Method::Get | Method::Options)
                                && !has_body
                                && !head.expect_continue
                                && !head.upgrade;
                            ex.request_done = !has_body;
                            // Before the blank line that ends the head.
                            ex.head_end = Some(ex.request.len() - 2);
                            ex.needs_host = head.needs_host;
                            if let Some((at, len)) = head.affinity {
                                let (at, len) = (at as usize, len as usize);
                                ex.affinity = raw_head.get(at..at + len).map(Box::<[u8]>::from);
                            }
                            if !keep_alive {
                                ex.close_after = true;
                            }
                            if head.answer_here {
                                // Max-Forwards ran out: we are the final
                                // recipient. A body, if any, is read and
                                // dropped (its exchange is gone by then).
                                ex.request.clear();
                                ex.stage = Stage::Answered;
                                ex.response = Response::Complete;
                                ex.response_started = true;
                                ex.held = self.final_answer(head.method, raw_head, keep_alive);
                                ex.status = 200;
                                ex.bytes_out = ex.held.len() as u64;
                                ex.upgrade = false;
                            }
                            let answered_here = head.answer_here;
                            self.exchanges.push_back(ex);
                            if answered_here {
                                if has_body {
                                    self.reading = Reading::Body {
                                        exchange: id,
                                        decoder: BodyDecoder::new(head.framing),
                                        received: 0,
                                    };
                                } else if !keep_alive {
                                    self.reading = Reading::Stopped;
                                }
                                self.advance();
                                continue;
                            }
                            if has_body {
                                self.reading = Reading::Body {
                                    exchange: id,
                                    decoder: BodyDecoder::new(head.framing),
                                    received: 0,
                                };
                            } else if !keep_alive {
                                self.reading = Reading::Stopped;
                            } else if head.upgrade {
                                self.reading = Reading::AwaitUpgrade { exchange: id };
                            }
                        }
                    }
                }
            }
        }
    }

    /// A request body went wrong mid-stream (bad chunk syntax, too large).
    /// Part of it may be with an origin already, so both sides are cut:
    /// the client gets `err` if no response has started, then the close.
    fn body_failed(&mut self, id: ExchangeId, err: ProxyError) {
        self.stop_reading();
        if let Some(ex) = self.exchange_mut(id) {
            ex.close_after = true;
            ex.close_upstream = true;
        }
        self.on_upstream_error(id, err);
    }

    /// Give up on every exchange of this client (the request deadline
    /// passed): the oldest unanswered one gets `err` if its response has
    /// not started; then the connection closes.
    pub fn abandon(&mut self, err: ProxyError) {
        self.stop_reading();
        let Some(first) = self.exchanges.iter().find(|e| e.stage != Stage::Answered) else {
            return;
        };
        let id = first.id;
        for ex in self.exchanges.iter_mut().filter(|e| e.id != id) {
            ex.close_after = true;
        }
        if let Some(ex) = self.exchange_mut(id) {
            ex.close_after = true;
            ex.retried = true; // no second attempt after a deadline
        }
        self.on_upstream_error(id, err);
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
        if self.exchanges.iter().all(|e| e.stage == Stage::Answered) {
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
        if self.exchanges.back().is_some_and(|e| !e.response_started) {
            self.drain();
        }
    }

    /// The client took too long to send a request head: answer 408 (in
    /// order, after what it is owed) and close.
    pub fn on_header_timeout(&mut self) {
        self.refuse(ProxyError::HeaderTimeout);
    }

    /// Bytes of an incomplete request head are waiting.
    pub fn has_partial_head(&self) -> bool {
        matches!(self.reading, Reading::Head) && !self.input.is_empty()
    }

    /// A keep-alive connection with nothing in flight and nothing buffered.
    pub fn is_idle(&self) -> bool {
        self.exchanges.is_empty()
            && self.input.is_empty()
            && self.out.is_empty()
            && !self.close_when_flushed
            && !self.is_discarding()
    }

    /// The rest of an answered request's body is being read and dropped.
    pub fn is_discarding(&self) -> bool {
        matches!(self.reading, Reading::Discard { .. })
    }

    /// The connection is to close while the client may still be sending
    /// (a body or requests were left unread): our side is shut first, and
    /// what the client still sends is read and dropped until its end, so
    /// that the answer reaches it rather than a reset.
    pub fn lingers(&self) -> bool {
        self.linger && !self.peer_closed
    }

    /// Read nothing more: the connection closes once what is owed has
    /// gone out. If that cuts the client's stream short, it lingers.
    fn stop_reading(&mut self) {
        self.linger |= !self.input.is_empty()
            || matches!(
                self.reading,
                Reading::Body { .. } | Reading::Discard { .. } | Reading::AwaitUpgrade { .. }
            );
        self.reading = Reading::Stopped;
        self.close_when_flushed = true;
        self.input.clear();
    }

    /// Exchange `id` was answered before its body was read whole. If the
    /// body's framing still holds and the client is known to be sending
    /// it, the rest is read and dropped and the connection goes on;
    /// otherwise the connection ends there (lingering). Either way none of
    /// it goes upstream.
    fn body_left_unread(&mut self, id: ExchangeId) {
        let goes_on = self.may_discard(id);
        if let Some(ex) = self.exchange_mut(id) {
            ex.request.clear();
            ex.handed = 0;
            ex.head_end = None;
            if !goes_on {
                ex.close_after = true;
            }
        }
        if goes_on {
            let Reading::Body {
                decoder, received, ..
            } = std::mem::replace(&mut self.reading, Reading::Stopped)
            else {
                unreachable!("may_discard checked it");
            };
            self.reading = Reading::Discard { decoder, received };
        } else {
            self.stop_reading();
        }
    }

    /// Whether the rest of `id`'s body can be read and dropped with the
    /// connection kept: its body is the one being read, the client is not
    /// leaving after it, and the client is sending it (an `Expect:
    /// 100-continue` request that got no 100 and sent nothing may never
    /// send it, and its next request would be taken for body).
    fn may_discard(&self, id: ExchangeId) -> bool {
        let reading_it = matches!(self.reading, Reading::Body { exchange, .. } if exchange == id);
        reading_it
            && self.exchange(id).is_some_and(|e| {
                e.keep_alive && !e.close_after && (e.body_coming || !e.expect_continue)
            })
    }

    /// The connection switched protocols and carries opaque bytes.
    pub fn is_tunnel(&self) -> bool {
        matches!(self.reading, Reading::Tunnel { .. })
    }

    /// Whether any request was read on this connection.
    pub fn any_request(&self) -> bool {
        self.next_id > 0
    }

    /// Answer a bad request in order: an error exchange that is already
    /// complete, then close.
    fn refuse(&mut self, err: ProxyError) {
        self.refuse_with_line(err, None);
    }

    /// [`Self::refuse`], keeping `line` for the access log.
    fn refuse_with_line(&mut self, err: ProxyError, line: Option<Box<RequestLine>>) {
        let id = self.next_id;
        self.next_id += 1;
        let mut ex = Exchange::new(id, self.shared.now.get());
        ex.stage = Stage::Answered;
        ex.response = Response::Complete;
        ex.response_started = true;
        ex.close_after = true;
        ex.held = error_response(&err, false, &self.shared.date.get());
        ex.status = err.status();
        ex.bytes_out = ex.held.len() as u64;
        ex.line = line;
        self.exchanges.push_back(ex);
        // What follows a refused head (its body, more requests) is not read.
        self.linger = true;
        self.reading = Reading::Stopped;
        self.input.clear();
        self.advance();
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

    /// The next exchange that may go upstream now, marked as dispatched.
    pub fn next_ready(&mut self) -> Option<ExchangeId> {
        let mut all_answered_before = true;
        for ex in self.exchanges.iter_mut() {
            if ex.stage == Stage::Queued {
                if ex.parallel || all_answered_before {
                    ex.stage = Stage::Dispatched;
                    return Some(ex.id);
                }
                return None;
            }
            if !ex.parallel && ex.stage != Stage::Answered {
                return None; // a barrier in progress holds back what follows
            }
            all_answered_before &= ex.stage == Stage::Answered;
        }
        None
    }

    /// Look at an exchange.
    pub fn exchange(&self, id: ExchangeId) -> Option<&Exchange> {
        self.exchanges.get(self.index_of(id)?)
    }

    /// The request bytes of `id` not handed out yet (for tests).
    #[cfg(test)]
    fn peek_request(&self, id: ExchangeId) -> &[u8] {
        self.exchange(id).map_or(&[], |ex| &ex.request[ex.handed..])
    }

    /// How many request bytes of `id` wait to be handed to its upstream
    /// connection.
    pub fn pending_request(&self, id: ExchangeId) -> usize {
        self.exchange(id)
            .map_or(0, |ex| ex.request.len() - ex.handed)
    }

    /// Append the request bytes of `id` not handed out yet to `out` (the
    /// upstream connection's output) and return how many were appended.
    /// `host` is the upstream's authority: it becomes the `Host` of a
    /// request that came without one (HTTP/1.0), since every origin that
    /// speaks HTTP/1.1 expects one and the name it is reached by is the one
    /// it knows (what nginx sends by default).
    pub fn hand_request(&mut self, id: ExchangeId, out: &mut Vec<u8>, host: &[u8]) -> usize {
        let Some(ex) = self.exchange_mut(id) else {
            return 0;
        };
        let from = ex.handed;
        let before = out.len();
        match ex.head_end {
            Some(at) if from <= at => {
                out.extend_from_slice(&ex.request[from..at]);
                if ex.needs_host {
                    out.extend_from_slice(b"Host: ");
                    out.extend_from_slice(host);
                    out.extend_from_slice(b"\r\n");
                }
                if let Some(extra) = &ex.extra_head {
                    out.extend_from_slice(extra);
                }
                out.extend_from_slice(&ex.request[at..]);
            }
            _ => out.extend_from_slice(&ex.request[from..]),
        }
        if ex.parallel && !ex.response_started {
            // Kept whole for one retry until the response starts.
            ex.handed = ex.request.len();
        } else {
            // A request with a body is never replayed: free as we go.
            ex.request.clear();
            ex.handed = 0;
            ex.head_end = None;
        }
        out.len() - before
    }

    /// Take `id` back from the upstream connection where it waits behind a
    /// response that is late: it has no response byte yet and is a safe
    /// request, so it is queued again (see [`Self::next_ready`]) to go on a
    /// connection of its own, never shared again. Its first copy is still
    /// on the late connection; the caller must make sure whatever answers
    /// that copy reaches nobody (close the connection after the response it
    /// waited for). False if `id` cannot be taken back.
    pub fn detach(&mut self, id: ExchangeId) -> bool {
        let Some(ex) = self.exchange_mut(id) else {
            return false;
        };
        let untouched =
            matches!(&ex.response, Response::AwaitHead { partial } if partial.is_empty());
        if ex.stage != Stage::Dispatched || ex.response_started || !ex.parallel || !untouched {
            return false;
        }
        ex.stage = Stage::Queued;
        ex.handed = 0;
        ex.solo = true;
        true
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
            self.exchange(exchange).map(|e| &e.response),
            Some(Response::Tunnel {
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

    /// The response ringmux gives as the final recipient of an OPTIONS or
    /// TRACE whose `Max-Forwards` was 0 (RFC 9110 §7.6.2).
    fn final_answer(&self, method: Method, raw_head: &[u8], keep_alive: bool) -> Vec<u8> {
        let mut body = Vec::new();
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        if method == Method::Trace {
            codec::request::trace_echo(raw_head, &mut body);
            out.extend_from_slice(b"Content-Type: message/http\r\n");
        } else {
            out.extend_from_slice(
                b"Allow: GET, HEAD, OPTIONS, POST, PUT, DELETE, PATCH, TRACE\r\n",
            );
        }
        let _ = write!(
            VecWriter(&mut out),
            "Content-Length: {}\r\nDate: ",
            body.len()
        );
        out.extend_from_slice(&self.shared.date.get());
        out.extend_from_slice(b"\r\n");
        if !keep_alive {
            out.extend_from_slice(b"Connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&body);
        out
    }

    /// Whether the whole request of `id` has been read from the client.
    pub fn request_done(&self, id: ExchangeId) -> bool {
        self.exchange(id).is_none_or(|e| e.request_done)
    }

    /// Feed response bytes from the upstream serving `id`. Returns what
    /// becomes of that upstream connection and how many bytes of `data`
    /// belonged to this response: once a response is complete, the bytes
    /// after it are the next response on the same connection (requests
    /// pipelined upstream), and the caller hands them to that exchange.
    pub fn on_response_data(&mut self, id: ExchangeId, data: &[u8]) -> (UpstreamFate, usize) {
        let Some(idx) = self.index_of(id) else {
            return (UpstreamFate::Close, data.len());
        };
        if self.out.capacity() == 0 {
            self.out = self.shared.take_bytes();
        }
        let mut used = 0;
        loop {
            match self.response_step(idx, &data[used..]) {
                Step::Fate(fate, n) => return (fate, used + n),
                Step::Rest(n) => used += n,
            }
        }
    }

    /// One parsing step of exchange `idx`'s response over `data`.
    fn response_step(&mut self, idx: usize, data: &[u8]) -> Step {
        let ex = &mut self.exchanges[idx];
        let dest = if idx == 0 {
            &mut self.out
        } else {
            &mut ex.held
        };
        match &mut ex.response {
            // A response this exchange already finished: nothing here is ours.
            Response::Complete => Step::Fate(UpstreamFate::Close, 0),
            Response::AwaitHead { partial } => {
                let direct = partial.is_empty();
                let before = partial.len();
                let src: &[u8] = if direct {
                    data
                } else {
                    partial.extend_from_slice(data);
                    partial
                };
                // An answer to an `Expect: 100-continue` request that came
                // before any of its body, with no 100: the client may never
                // send that body, and cannot be read past it, so the answer
                // says this is the connection's last.
                let unsure_body = !ex.request_done && ex.expect_continue && !ex.body_coming;
                let ctx = ResponseCtx {
                    request_method: ex.method,
                    client_minor_version: ex.minor_version,
                    client_keep_alive: ex.keep_alive && !ex.close_after && !unsure_body,
                    upgrade: ex.upgrade,
                    via: self.ctx.via,
                };
                let start = dest.len();
                match codec::parse_response(src, &ctx, dest) {
                    Ok(None) if src.len() > MAX_HEAD_BYTES => Step::Fate(
                        self.fail_bad_response(idx, "response head too large"),
                        data.len(),
                    ),
                    Ok(None) => {
                        if direct {
                            partial.extend_from_slice(data);
                        }
                        Step::Fate(UpstreamFate::Busy, data.len())
                    }
                    Err(e) => {
                        dest.truncate(start);
                        Step::Fate(self.fail_bad_response(idx, e.reason), data.len())
                    }
                    Ok(Some(head)) => {
                        if let (false, Some(field)) = (head.informational, ex.set_cookie.take()) {
                            // Before the blank line the codec ended the
                            // head with.
                            let end = dest.len() - 2;
                            dest.splice(end..end, field.iter().copied());
                        }
                        ex.response_started = true;
                        ex.bytes_out += (dest.len() - start) as u64;
                        if !head.informational {
                            ex.status = head.status;
                        }
                        // The head began in earlier input: only its tail is in `data`.
                        let used = head.head_len - before;
                        partial.clear();
                        if head.informational {
                            // Told to go on, the client sends its body.
                            ex.body_coming |= head.status == 100;
                            return Step::Rest(used);
                        }
                        ex.close_after |= unsure_body;
                        if head.keep_alive_timeout.is_some() {
                            self.idle_hint = head.keep_alive_timeout;
                        }
                        if head.tunnel {
                            ex.response = Response::Tunnel {
                                upstream_done: false,
                            };
                            ex.close_upstream = true;
                            ex.close_after = true;
                            // Anything the client sent after its request is
                            // already the new protocol's.
                            let early = std::mem::take(&mut self.input);
                            ex.request.extend_from_slice(&early);
                            ex.request_done = false;
                            // A FIN that came while the upgrade was pending
                            // is passed on like one that comes later.
                            self.reading = Reading::Tunnel {
                                exchange: ex.id,
                                client_done: self.peer_closed,
                            };
                            return if used == data.len() {
                                Step::Fate(UpstreamFate::Busy, used)
                            } else {
                                Step::Rest(used)
                            };
                        }
                        ex.close_after |= !head.client_keep_alive;
                        ex.close_upstream |= !head.upstream_reusable;
                        let decoder = BodyDecoder::new(head.framing);
                        if decoder.is_done() {
                            return Step::Fate(self.complete(idx), used);
                        }
                        ex.response = Response::Body {
                            decoder,
                            dechunk: head.dechunk,
                        };
                        if used == data.len() {
                            Step::Fate(UpstreamFate::Busy, used)
                        } else {
                            Step::Rest(used)
                        }
                    }
                }
            }
            Response::Tunnel { .. } => {
                dest.extend_from_slice(data);
                ex.bytes_out += data.len() as u64;
                Step::Fate(UpstreamFate::Busy, data.len())
            }
            Response::Body { decoder, dechunk } => {
                let start = dest.len();
                let res = if *dechunk {
                    decoder.feed(data, &mut |d| dest.extend_from_slice(d))
                } else {
                    decoder.feed(data, &mut |_| {})
                };
                match res {
                    Ok(p) => {
                        if !*dechunk {
                            dest.extend_from_slice(&data[..p.consumed]);
                        }
                        ex.bytes_out += (dest.len() - start) as u64;
                        if p.done {
                            Step::Fate(self.complete(idx), p.consumed)
                        } else {
                            Step::Fate(UpstreamFate::Busy, p.consumed)
                        }
                    }
                    Err(_) => {
                        // Mid-body: the client already has part of it, so
                        // the only honest signal left is closing.
                        ex.close_after = true;
                        ex.response = Response::Complete;
                        ex.stage = Stage::Answered;
                        self.advance();
                        Step::Fate(UpstreamFate::Close, data.len())
                    }
                }
            }
        }
    }

    /// The upstream serving `id` reached end of stream.
    pub fn on_upstream_eof(&mut self, id: ExchangeId) -> FailOutcome {
        let Some(idx) = self.index_of(id) else {
            return FailOutcome::Answered;
        };
        let ex = &mut self.exchanges[idx];
        if let Response::Tunnel { upstream_done } = &mut ex.response {
            // A half-close: the client may still be sending.
            *upstream_done = true;
            return FailOutcome::Answered;
        }
        if let Response::Body { decoder, .. } = &ex.response {
            if matches!(decoder, BodyDecoder::Close) {
                ex.close_after = true;
                self.complete(idx);
                return FailOutcome::Answered;
            }
        }
        self.on_upstream_error(id, ProxyError::ClosedBeforeResponse)
    }

    /// The upstream serving `id` failed with `err`. Decides between a retry
    /// and an error answer.
    pub fn on_upstream_error(&mut self, id: ExchangeId, err: ProxyError) -> FailOutcome {
        let Some(idx) = self.index_of(id) else {
            return FailOutcome::Answered;
        };
        let discardable = self.may_discard(id);
        let ex = &mut self.exchanges[idx];
        if ex.stage == Stage::Answered {
            return FailOutcome::Answered;
        }
        if !ex.response_started {
            let may_retry = match err.retry() {
                Retry::Yes => ex.parallel || ex.handed == 0 && ex.request_done,
                Retry::IfIdempotent => ex.parallel,
                Retry::No => false,
            };
            if may_retry && !ex.retried {
                ex.retried = true;
                ex.handed = 0;
                ex.stage = Stage::Queued;
                // Whatever the first origin began to answer is not the
                // answer.
                if let Response::AwaitHead { partial } = &mut ex.response {
                    partial.clear();
                }
                ex.held.clear();
                return FailOutcome::Retry;
            }
            let date = self.shared.date.get();
            // An unread body is dropped and the connection goes on where
            // its framing allows (see `body_left_unread`).
            let keep_alive = if ex.request_done {
                ex.keep_alive && !ex.close_after
            } else {
                discardable
            };
            let dest = if idx == 0 {
                &mut self.out
            } else {
                &mut ex.held
            };
            let before = dest.len();
            dest.extend_from_slice(&error_response(&err, keep_alive, &date));
            ex.status = err.status();
            ex.bytes_out += (dest.len() - before) as u64;
            if !keep_alive {
                ex.close_after = true;
            }
        } else {
            // Part of the response is with the client already; the only
            // honest signal left is to cut the connection.
            ex.close_after = true;
        }
        ex.response = Response::Complete;
        ex.stage = Stage::Answered;
        if !ex.request_done {
            // The rest of the body cannot go anywhere.
            let id = ex.id;
            self.body_left_unread(id);
        }
        self.advance();
        FailOutcome::Answered
    }

    /// Allow another attempt for an exchange that failed to connect (a
    /// different upstream may work). Used for connect failures, where
    /// nothing reached any origin.
    pub fn requeue(&mut self, id: ExchangeId) {
        if let Some(ex) = self.exchange_mut(id) {
            if ex.stage == Stage::Dispatched && !ex.response_started {
                ex.stage = Stage::Queued;
                ex.handed = 0;
            }
        }
    }

    fn fail_bad_response(&mut self, idx: usize, reason: &'static str) -> UpstreamFate {
        let id = self.exchanges[idx].id;
        self.on_upstream_error(id, ProxyError::BadResponse(reason));
        UpstreamFate::Close
    }

    fn complete(&mut self, idx: usize) -> UpstreamFate {
        let ex = &mut self.exchanges[idx];
        ex.response = Response::Complete;
        ex.stage = Stage::Answered;
        if !ex.request_done || ex.handed < ex.request.len() {
            // The origin answered before the whole request reached it (an
            // early 413, nginx's `return`). It never gets the rest: it
            // would read the next request on the connection as body, so
            // the connection cannot be reused.
            ex.close_upstream = true;
            ex.request.clear();
            ex.handed = 0;
        }
        if !ex.request_done {
            // The client's connection goes on past the rest where it can
            // (see `body_left_unread`).
            let id = ex.id;
            self.body_left_unread(id);
        }
        let ex = &self.exchanges[idx];
        let fate = if ex.close_upstream {
            UpstreamFate::Close
        } else {
            UpstreamFate::Reuse
        };
        self.advance();
        fate
    }

    /// Deliver every answered exchange at the front, and the held bytes of
    /// the next one.
    fn advance(&mut self) {
        while let Some(front) = self.exchanges.front_mut() {
            if !front.held.is_empty() {
                if self.out.is_empty() {
                    std::mem::swap(&mut self.out, &mut front.held);
                } else {
                    self.out.extend_from_slice(&front.held);
                    front.held.clear();
                }
            }
            if front.stage != Stage::Answered {
                break;
            }
            let mut done = self.exchanges.pop_front().expect("front exists");
            let close_after = done.close_after;
            self.finished.push(Finished {
                status: done.status,
                bytes: done.bytes_out,
                started: done.started,
                done: self.shared.now.get(),
                upstream: done.upstream,
                line: done.line.take(),
                aborted: false,
            });
            self.recycle(done);
            if close_after {
                self.stop_reading();
                break;
            }
        }
        if self.peer_closed && self.exchanges.is_empty() {
            self.close_when_flushed = true;
        }
        // The upgrade was answered without switching: back to requests.
        if let Reading::AwaitUpgrade { exchange } = self.reading {
            if self
                .exchange(exchange)
                .is_none_or(|e| e.stage == Stage::Answered)
            {
                self.reading = Reading::Head;
            }
        }
        // Room may have opened up for requests parsed-but-not-read.
        if matches!(self.reading, Reading::Head) && !self.input.is_empty() {
            let input = std::mem::take(&mut self.input);
            let used = self.parse(&input);
            self.input = input;
            self.input.advance(used);
        }
    }

    /// The idle timeout an origin announced (`Keep-Alive: timeout=N`, in
    /// seconds) in a response head fed since the last call: it applies to
    /// the connection those bytes came on.
    pub fn take_upstream_idle_hint(&mut self) -> Option<u32> {
        self.idle_hint.take()
    }

    /// Bytes ready for the client.
    pub fn output(&mut self) -> &mut Vec<u8> {
        &mut self.out
    }

    /// How many of the next response bytes for `id` are body that goes to
    /// the client exactly as it came: `id` is the front exchange (its bytes
    /// go straight to the output) and its response is in a Content-Length
    /// body forwarded verbatim. The caller may send those bytes from where
    /// they are, after everything already in [`Self::output`], instead of
    /// copying them through it, and then calls [`Self::take_verbatim`].
    pub fn verbatim_body(&self, id: ExchangeId) -> u64 {
        match self.exchanges.front() {
            Some(ex) if ex.id == id => match &ex.response {
                Response::Body {
                    decoder: BodyDecoder::Length { remaining },
                    dechunk: false,
                } => *remaining,
                _ => 0,
            },
            _ => 0,
        }
    }

    /// `n` body bytes of `id` (at most [`Self::verbatim_body`]) went to the
    /// client without passing through the output; the response is complete
    /// when they were its last.
    pub fn take_verbatim(&mut self, id: ExchangeId, n: usize) -> UpstreamFate {
        let Some(ex) = self.exchanges.front_mut().filter(|e| e.id == id) else {
            return UpstreamFate::Close;
        };
        let Response::Body {
            decoder: BodyDecoder::Length { remaining },
            dechunk: false,
        } = &mut ex.response
        else {
            return UpstreamFate::Close;
        };
        assert!(
            n as u64 <= *remaining,
            "more verbatim bytes than the body has"
        );
        *remaining -= n as u64;
        ex.bytes_out += n as u64;
        if *remaining == 0 {
            self.complete(0)
        } else {
            UpstreamFate::Busy
        }
    }

    /// True when the client should be closed once the output is flushed.
    pub fn wants_close(&self) -> bool {
        self.close_when_flushed
    }

    /// Whether reading more from the client is useful and within bounds.
    pub fn may_read_client(&self) -> bool {
        match &self.reading {
            Reading::Stopped => false,
            Reading::Head => {
                self.exchanges.len() < self.depth && self.input.len() <= self.ctx.limits.bytes
            }
            Reading::Discard { .. } => true,
            Reading::Body { exchange, .. } | Reading::Tunnel { exchange, .. } => self
                .exchange(*exchange)
                .is_none_or(|e| e.request.len() - e.handed < self.buffer),
            Reading::AwaitUpgrade { .. } => self.input.len() <= self.ctx.limits.bytes,
        }
    }

    /// Whether the upstream feeding `id` may be read (room to put what comes).
    pub fn may_read_upstream(&self, id: ExchangeId, client_unsent: usize) -> bool {
        self.upstream_room(id, client_unsent) > 0
    }

    /// How many more response bytes for `id` fit within the buffer now
    /// (the client output and `client_unsent` bytes on their way to the
    /// client for the front exchange, what is held for any other).
    pub fn upstream_room(&self, id: ExchangeId, client_unsent: usize) -> usize {
        match self.index_of(id) {
            Some(0) => self.buffer.saturating_sub(self.out.len() + client_unsent),
            Some(i) => self.buffer.saturating_sub(self.exchanges[i].held.len()),
            None => self.buffer,
        }
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

    /// Ids of exchanges that are dispatched (for cleanup when the client goes).
    pub fn dispatched(&self) -> impl Iterator<Item = ExchangeId> + '_ {
        self.exchanges
            .iter()
            .filter(|e| e.stage == Stage::Dispatched)
            .map(|e| e.id)
    }
}

/// What the access log keeps of a request head (`head` as received).
fn request_line(head: &[u8]) -> RequestLine {
    const MAX: usize = 2048;
    let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX)]).into_owned();
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .skip_while(|l| l.is_empty());
    let mut out = RequestLine {
        line: text(lines.next().unwrap_or(b"")),
        ..RequestLine::default()
    };
    for l in lines.take_while(|l| !l.is_empty()) {
        let Some(colon) = l.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"referer") {
            out.referer = Some(text(value));
        } else if name.eq_ignore_ascii_case(b"user-agent") {
            out.user_agent = Some(text(value));
        }
    }
    out
}

/// A complete error response with a one-line body, dated `date`.
pub fn error_response(err: &ProxyError, keep_alive: bool, date: &HttpDate) -> Vec<u8> {
    let status = err.status();
    let mut body = err.to_string();
    body.retain(|c| c != '\r' && c != '\n');
    body.push('\n');
    let mut out = Vec::with_capacity(192 + body.len());
    let _ = write!(
        VecWriter(&mut out),
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nDate: ",
        codec::reason_phrase(status),
        body.len(),
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if status == 503 {
        // Capacity, not a fault: a client may come back shortly.
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// `fmt::Write` into a byte vector (what `write!` needs to format numbers
/// straight into a response).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent() -> ClientAgent {
        ClientAgent::new(
            ForwardCtx {
                client: [10, 0, 0, 1].into(),
                proto: "http",
                limits: codec::HeadLimits::DEFAULT,
                via: None,
                affinity_cookie: None,
                drop_field: None,
            },
            16,
        )
    }

    fn get(path: &str) -> String {
        format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
    }

    fn ok(body: &str) -> Vec<u8> {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn ready(a: &mut ClientAgent) -> Vec<ExchangeId> {
        std::iter::from_fn(|| a.next_ready()).collect()
    }

    /// The exchanges that may go upstream now, each handed out whole as
    /// a placement on a connection would (an origin answers what it got).
    fn dispatch(a: &mut ClientAgent) -> Vec<ExchangeId> {
        let ids = ready(a);
        for &id in &ids {
            a.hand_request(id, &mut Vec::new(), b"origin");
        }
        ids
    }

    fn take_out(a: &mut ClientAgent) -> String {
        String::from_utf8(std::mem::take(a.output())).unwrap()
    }

    fn bodies(out: &str) -> Vec<&str> {
        out.split("HTTP/1.1 ")
            .skip(1)
            .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
            .collect()
    }

    #[test]
    fn pipelined_safe_requests_are_all_ready_at_once() {
        let mut a = agent();
        a.on_client_data(format!("{}{}{}", get("/1"), get("/2"), get("/3")).as_bytes());
        assert_eq!(ready(&mut a), vec![0, 1, 2]);
        for id in 0..3 {
            assert!(a.peek_request(id).starts_with(b"GET /"));
        }
    }

    #[test]
    fn responses_arriving_out_of_order_leave_in_request_order() {
        let mut a = agent();
        a.on_client_data(format!("{}{}{}", get("/1"), get("/2"), get("/3")).as_bytes());
        dispatch(&mut a);
        assert_eq!(a.on_response_data(2, &ok("three")).0, UpstreamFate::Reuse);
        assert_eq!(a.on_response_data(1, &ok("two")).0, UpstreamFate::Reuse);
        assert!(
            a.output().is_empty(),
            "nothing may overtake the first response"
        );
        assert_eq!(a.on_response_data(0, &ok("one")).0, UpstreamFate::Reuse);
        assert_eq!(bodies(&take_out(&mut a)), ["one", "two", "three"]);
        assert_eq!(a.pending(), 0);
        assert!(!a.wants_close());
    }

    #[test]
    fn a_post_waits_for_earlier_requests_and_holds_back_later_ones() {
        let mut a = agent();
        let post = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        a.on_client_data(format!("{}{post}{}", get("/1"), get("/3")).as_bytes());
        assert_eq!(
            ready(&mut a),
            vec![0],
            "only the GET before the POST starts"
        );
        a.on_response_data(0, &ok("one"));
        assert_eq!(
            ready(&mut a),
            vec![1],
            "the POST starts once the GET is answered"
        );
        assert!(a.peek_request(1).ends_with(b"\r\n\r\nabc"));
        assert!(a.request_done(1));
        a.on_response_data(1, &ok("two"));
        assert_eq!(
            ready(&mut a),
            vec![2],
            "the GET after the POST waits for it"
        );
        a.on_response_data(2, &ok("three"));
        assert_eq!(bodies(&take_out(&mut a)), ["one", "two", "three"]);
    }

    #[test]
    fn pipeline_depth_bounds_requests_in_flight() {
        let mut a = ClientAgent::new(
            ForwardCtx {
                client: [10, 0, 0, 1].into(),
                proto: "http",
                limits: codec::HeadLimits::DEFAULT,
                via: None,
                affinity_cookie: None,
                drop_field: None,
            },
            2,
        );
        a.on_client_data(
            (1..=4)
                .map(|i| get(&format!("/{i}")))
                .collect::<String>()
                .as_bytes(),
        );
        assert_eq!(ready(&mut a), vec![0, 1]);
        assert!(!a.may_read_client(), "depth reached: stop reading");
        a.on_response_data(0, &ok("1"));
        assert_eq!(
            ready(&mut a),
            vec![2],
            "a slot freed, the next parsed request goes"
        );
    }

    #[test]
    fn a_response_split_at_every_byte_gives_the_same_output() {
        let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
        let whole = {
            let mut a = agent();
            a.on_client_data(get("/").as_bytes());
            dispatch(&mut a);
            assert_eq!(a.on_response_data(0, resp).0, UpstreamFate::Reuse);
            take_out(&mut a)
        };
        assert!(
            !whole.contains("X-Hop"),
            "hop-by-hop headers are dropped: {whole}"
        );
        for cut in 1..resp.len() {
            let mut a = agent();
            a.on_client_data(get("/").as_bytes());
            dispatch(&mut a);
            assert_eq!(
                a.on_response_data(0, &resp[..cut]).0,
                UpstreamFate::Busy,
                "cut {cut}"
            );
            assert_eq!(
                a.on_response_data(0, &resp[cut..]).0,
                UpstreamFate::Reuse,
                "cut {cut}"
            );
            assert_eq!(take_out(&mut a), whole, "cut {cut}");
        }
    }

    #[test]
    fn requests_split_at_every_byte_parse_the_same() {
        let input = format!(
            "{}POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
            get("/x")
        );
        let bytes = input.as_bytes();
        for cut in 0..=bytes.len() {
            let mut a = agent();
            a.on_client_data(&bytes[..cut]);
            a.on_client_data(&bytes[cut..]);
            assert_eq!(a.pending(), 2, "cut {cut}");
            assert_eq!(ready(&mut a), vec![0], "cut {cut}");
            a.on_response_data(0, &ok("x"));
            assert_eq!(ready(&mut a), vec![1], "cut {cut}");
            assert!(a.peek_request(1).ends_with(b"abc"), "cut {cut}");
        }
    }

    #[test]
    fn a_malformed_request_is_answered_in_order_then_closed() {
        let mut a = agent();
        a.on_client_data(format!("{}GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", get("/ok")).as_bytes());
        assert_eq!(ready(&mut a), vec![0]);
        assert!(
            a.output().is_empty(),
            "the 400 waits for the good request's answer"
        );
        a.on_response_data(0, &ok("fine"));
        let out = take_out(&mut a);
        let second = out.split("HTTP/1.1 ").nth(2).unwrap();
        assert!(second.starts_with("400 "), "{out}");
        assert!(second.contains("Connection: close"));
        assert!(a.wants_close());
        assert!(!a.may_read_client());
    }

    #[test]
    fn a_get_whose_connection_failed_is_retried_once() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        assert_eq!(ready(&mut a), vec![0]);
        a.hand_request(0, &mut Vec::new(), b"up");
        assert_eq!(a.on_upstream_eof(0), FailOutcome::Retry);
        assert_eq!(ready(&mut a), vec![0], "queued again");
        assert!(a.exchange(0).unwrap().is_retry());
        assert!(
            a.peek_request(0).starts_with(b"GET / "),
            "the head is replayed"
        );
        assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
        assert!(take_out(&mut a).starts_with("HTTP/1.1 502 "));
    }

    #[test]
    fn a_post_whose_connection_failed_is_not_retried() {
        let mut a = agent();
        a.on_client_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx");
        ready(&mut a);
        a.hand_request(0, &mut Vec::new(), b"up");
        assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
        assert!(take_out(&mut a).starts_with("HTTP/1.1 502 "));
    }

    #[test]
    fn no_upstream_is_a_503_and_the_connection_stays_open() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        ready(&mut a);
        assert_eq!(
            a.on_upstream_error(0, ProxyError::NoUpstream),
            FailOutcome::Answered
        );
        let out = take_out(&mut a);
        assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
        assert!(out.ends_with("no upstream available\n"));
        assert!(!a.wants_close());
    }

    #[test]
    fn an_error_after_the_response_started_cuts_the_client() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        ready(&mut a);
        a.on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
        a.on_upstream_eof(0);
        assert!(take_out(&mut a).ends_with("abc"));
        assert!(a.wants_close());
    }

    #[test]
    fn a_response_held_for_its_turn_is_bounded() {
        let mut a = agent();
        a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
        ready(&mut a);
        let big = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
            10 * DEFAULT_BUFFER
        );
        a.on_response_data(1, big.as_bytes());
        assert!(a.may_read_upstream(1, 0));
        a.on_response_data(1, &vec![b'x'; DEFAULT_BUFFER]);
        assert!(
            !a.may_read_upstream(1, 0),
            "held bytes past the limit pause that upstream"
        );
        a.on_response_data(0, &ok("1"));
        assert!(
            a.output().len() > DEFAULT_BUFFER,
            "held bytes move out when their turn comes"
        );
        assert!(
            !a.may_read_upstream(1, 0),
            "now the client output bounds it"
        );
        take_out(&mut a);
        assert!(a.may_read_upstream(1, 0));
    }

    #[test]
    fn close_delimited_response_ends_on_eof_and_closes_the_client() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        ready(&mut a);
        assert_eq!(
            a.on_response_data(0, b"HTTP/1.1 200 OK\r\n\r\nhello").0,
            UpstreamFate::Busy
        );
        assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
        let out = take_out(&mut a);
        assert!(out.ends_with("\r\n\r\nhello"), "{out}");
        assert!(out.contains("Connection: close"));
        assert!(a.wants_close());
    }

    #[test]
    fn back_to_back_responses_are_split_by_consumed_bytes() {
        let mut a = agent();
        a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
        dispatch(&mut a);
        let (one, two) = (ok("one"), ok("two"));
        let both = [one.clone(), two].concat();
        assert_eq!(
            a.on_response_data(0, &both),
            (UpstreamFate::Reuse, one.len())
        );
        assert_eq!(
            a.on_response_data(1, &both[one.len()..]),
            (UpstreamFate::Reuse, both.len() - one.len())
        );
        assert_eq!(bodies(&take_out(&mut a)), ["one", "two"]);
        // Split inside the second head too: the partial head is carried.
        let mut a = agent();
        a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
        dispatch(&mut a);
        let cut = one.len() + 5;
        assert_eq!(
            a.on_response_data(0, &both[..cut]),
            (UpstreamFate::Reuse, one.len())
        );
        assert_eq!(
            a.on_response_data(1, &both[one.len()..cut]),
            (UpstreamFate::Busy, 5)
        );
        assert_eq!(
            a.on_response_data(1, &both[cut..]),
            (UpstreamFate::Reuse, both.len() - cut)
        );
        assert_eq!(bodies(&take_out(&mut a)), ["one", "two"]);
    }

    #[test]
    fn an_accepted_upgrade_turns_the_exchange_into_a_tunnel() {
        let mut a = agent();
        let req =
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
        a.on_client_data(format!("{req}early").as_bytes());
        assert_eq!(ready(&mut a), vec![0]);
        let fwd = String::from_utf8_lossy(a.peek_request(0)).to_string();
        assert!(
            fwd.contains("\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"),
            "{fwd}"
        );
        a.hand_request(0, &mut Vec::new(), b"up");
        let sw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello";
        assert_eq!(a.on_response_data(0, sw), (UpstreamFate::Busy, sw.len()));
        assert!(a.is_tunnel());
        let out = take_out(&mut a);
        assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
        assert!(out.ends_with("\r\n\r\nhello"), "{out}");
        // Bytes the client sent early, and later, go through untouched.
        assert_eq!(a.peek_request(0), b"early");
        a.hand_request(0, &mut Vec::new(), b"up");
        a.on_client_data(b"GET / HTTP/1.1\r\n\r\n");
        assert_eq!(
            a.peek_request(0),
            b"GET / HTTP/1.1\r\n\r\n",
            "no parsing in a tunnel"
        );
        assert_eq!(
            a.on_response_data(0, b"\x81\x05frame"),
            (UpstreamFate::Busy, 7)
        );
        assert_eq!(std::mem::take(a.output()), b"\x81\x05frame");
        // The origin's FIN is a half-close: the client may go on sending.
        a.on_upstream_eof(0);
        let ends = a.tunnel().expect("still a tunnel");
        assert!(ends.upstream_done && !ends.client_done);
        assert!(!a.wants_close());
        a.on_client_data(b"more");
        assert_eq!(a.pending_request(0), b"GET / HTTP/1.1\r\n\r\nmore".len());
        a.on_client_eof();
        let ends = a.tunnel().expect("still a tunnel");
        assert!(
            ends.upstream_done && ends.client_done,
            "the driver closes both"
        );
    }

    #[test]
    fn a_tunnel_keeps_no_bytes_it_has_handed_on() {
        let mut a = agent();
        a.on_client_data(
            b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        );
        assert_eq!(ready(&mut a), vec![0]);
        a.hand_request(0, &mut Vec::new(), b"up");
        let sw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
        a.on_response_data(0, sw);
        for _ in 0..100 {
            a.on_client_data(&[b'x'; 1000]);
            let mut out = Vec::new();
            assert_eq!(a.hand_request(0, &mut out, b"up"), 1000);
        }
        let kept = a.exchange(0).map(|e| e.request.len());
        assert_eq!(kept, Some(0), "a long session must not grow the request");
    }

    #[test]
    fn a_refused_upgrade_goes_back_to_requests() {
        let mut a = agent();
        a.on_client_data(
            format!(
                "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n{}",
                get("/next")
            )
            .as_bytes(),
        );
        assert_eq!(
            ready(&mut a),
            vec![0],
            "nothing after an upgrade request is parsed yet"
        );
        assert_eq!(a.pending(), 1);
        a.on_response_data(0, &ok("no"));
        assert!(!a.is_tunnel());
        assert_eq!(
            ready(&mut a),
            vec![1],
            "the next request is read after the refusal"
        );
    }

    #[test]
    fn client_eof_on_an_idle_connection_closes_it() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        ready(&mut a);
        a.on_response_data(0, &ok("x"));
        assert!(!a.wants_close());
        a.on_client_eof();
        assert!(a.wants_close());
    }

    #[test]
    fn client_eof_with_requests_pending_closes_after_the_answers() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        ready(&mut a);
        a.on_client_eof();
        assert!(!a.wants_close(), "the pending answer is still owed");
        a.on_response_data(0, &ok("x"));
        assert!(a.wants_close());
        assert!(take_out(&mut a).ends_with("x"));
    }

    #[test]
    fn head_response_has_no_body_even_with_content_length() {
        let mut a = agent();
        a.on_client_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
        dispatch(&mut a);
        let fate = a
            .on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
            .0;
        assert_eq!(fate, UpstreamFate::Reuse);
    }

    #[test]
    fn a_length_body_at_the_front_may_bypass_the_output() {
        let mut a = agent();
        a.on_client_data(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
        dispatch(&mut a);
        assert_eq!(a.verbatim_body(0), 0, "no head yet");
        let (fate, used) =
            a.on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
        assert_eq!((fate, used), (UpstreamFate::Busy, 43));
        assert_eq!(a.verbatim_body(0), 6);
        assert_eq!(a.verbatim_body(1), 0, "not at the front");
        // The second response arrives first and is held.
        assert_eq!(a.on_response_data(1, &ok("second")).0, UpstreamFate::Reuse);
        let head = take_out(&mut a);
        assert!(head.ends_with("\r\n\r\n0123"), "{head:?}");
        assert_eq!(a.take_verbatim(0, 4), UpstreamFate::Busy);
        assert_eq!(a.verbatim_body(0), 2);
        assert!(
            take_out(&mut a).is_empty(),
            "the bypassed bytes are not copied"
        );
        assert_eq!(a.take_verbatim(0, 2), UpstreamFate::Reuse);
        // Completing the first releases the held second response.
        assert!(take_out(&mut a).ends_with("second"));
        assert_eq!(a.verbatim_body(1), 0, "already complete");
    }

    #[test]
    fn a_chunked_or_dechunked_body_never_bypasses_the_output() {
        let mut a = agent();
        a.on_client_data(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
        ready(&mut a);
        a.on_response_data(
            0,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
        );
        assert_eq!(a.verbatim_body(0), 0);
        assert_eq!(a.take_verbatim(0, 1), UpstreamFate::Close);
    }

    #[test]
    fn informational_responses_pass_through_before_the_final_one() {
        let mut a = agent();
        a.on_client_data(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
        );
        dispatch(&mut a);
        assert_eq!(
            a.on_response_data(0, b"HTTP/1.1 100 Continue\r\n\r\n").0,
            UpstreamFate::Busy
        );
        assert!(take_out(&mut a).starts_with("HTTP/1.1 100 Continue"));
        a.on_client_data(b"hi");
        assert!(a.request_done(0));
        a.hand_request(0, &mut Vec::new(), b"origin");
        assert_eq!(a.on_response_data(0, &ok("done")).0, UpstreamFate::Reuse);
    }

    #[test]
    fn an_early_answer_drops_the_rest_of_the_body_and_the_connection_goes_on() {
        let mut a = agent();
        a.on_client_data(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
        dispatch(&mut a);
        // The origin answers before the rest of the body: its connection
        // cannot be reused, the client's can.
        assert_eq!(a.on_response_data(0, &ok("early")).0, UpstreamFate::Close);
        let out = take_out(&mut a);
        assert!(!out.contains("Connection: close"), "{out}");
        assert!(!a.wants_close() && a.is_discarding());
        // The rest of the body, split anywhere, then the next request.
        for b in b"defghij".chunks(3) {
            a.on_client_data(b);
        }
        assert!(!a.is_discarding());
        a.on_client_data(get("/next").as_bytes());
        assert_eq!(ready(&mut a), vec![1]);
        assert!(a.peek_request(1).starts_with(b"GET /next "));
        assert!(!a.lingers());
    }

    #[test]
    fn an_early_answer_to_an_unsent_expected_body_ends_the_connection_lingering() {
        let mut a = agent();
        a.on_client_data(
            b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
        );
        dispatch(&mut a);
        // No 100, no body byte: the client may never send the body, and
        // its next request cannot be told from it.
        a.on_response_data(0, &ok("no"));
        let out = take_out(&mut a);
        assert!(out.contains("Connection: close"), "{out}");
        assert!(a.wants_close() && a.lingers());
    }

    #[test]
    fn a_dropped_body_over_the_limit_ends_the_connection_lingering() {
        let mut a = agent().with_max_body(8);
        a.on_client_data(
            b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
        );
        dispatch(&mut a);
        a.on_response_data(0, &ok("early"));
        assert!(a.is_discarding());
        a.on_client_data(b"8\r\nabcdefgh\r\n");
        assert!(!a.is_discarding() && a.wants_close() && a.lingers());
        // The client's own end needs no lingering.
        a.on_client_eof();
        assert!(!a.lingers());
    }
}
