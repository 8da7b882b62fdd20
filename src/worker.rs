//! One worker thread: its reactor, its client and upstream connections, its
//! share of the upstream pool, and the loop that ties them together.
//!
//! The worker owns sockets and buffers ([`ClientConn`], [`UpstreamConn`]);
//! the per-client [`ClientAgent`] owns exchanges and decides what goes where;
//! the [`Pool`] owns the counts and picks upstreams. The worker feeds each
//! completion to the one that cares and then carries out what they ask:
//! place an exchange, hand request bytes to an upstream connection, flush a
//! client's output, pause or resume a recv, close.
//!
//! # One client per upstream connection
//! An upstream connection carries the exchanges of one client connection at
//! a time ([`UpstreamConn::client`]); idle connections go back to the pool
//! and serve other clients one exchange after another. Bytes that arrive
//! beyond what the current response's framing allows, or while no exchange
//! waits on the connection, close it and reach nobody.
//!
//! A client's own pipelined requests fan out, one upstream connection each.
//! Only where their route is known to answer fast (see
//! [`crate::pool::routes`]) may several of them placed in the same turn
//! follow one another on one connection, written in one send: GET or
//! OPTIONS without a body, `Expect` or `Upgrade`, never HEAD, never a
//! retry. If the request at the front of such a connection gets no answer
//! within the route's late bound, the ones behind it are taken back and
//! sent again on connections of their own, and the late connection is
//! closed once the front response is complete, so whatever it would have
//! said for the others reaches nobody.
//!
//! # Turns
//! One turn handles every completion the ring has ready. Sends are not
//! started while the turn runs: connections with bytes to write are marked
//! dirty and flushed together when it ends, so that everything a turn
//! produced for one socket leaves in one send.
//!
//! Completions for idle upstream connections are handled first in a turn
//! (an origin closing one, or bytes an origin wrote after a response's
//! end), and a connection released in a turn is not reused before the next
//! one: stray bytes already on their way close the connection instead of
//! being read as another client's response.
//!
//! Nothing here is shared with other workers; the only cross-thread state is
//! the read-only [`Config`].
//!
//! # Stale completions
//! A connection's slot may be reused while a completion for its previous
//! owner is still on its way (a send that completes after a close). Every
//! token carries the slot's generation, and a completion whose generation
//! does not match is dropped (its receive buffer recycled; a send buffer is
//! owned by the reactor, so nothing dangles).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use slab::Slab;

use crate::agent::{AgentShared, ClientAgent, ExchangeId, TunnelEnds, UpstreamFate};
use crate::codec::date::http_date;
use crate::codec::ForwardCtx;
use crate::config::Config;
use crate::error::ProxyError;
use crate::pool::policy::RequestKey;
use crate::pool::routes::RouteKey;
use crate::pool::{wrr::WeightedRoundRobin, ConnId, Placement, Pool, Release, SURPLUS_LINGER};
use crate::reactor::{self, Event, Reactor, RingConfig, Seg, MAX_SEGS};

/// Waiters beyond this many get a 503 instead of a place in the queue.
const MAX_WAITERS: usize = 4096;
/// A busy connection keeps its spare output buffer up to this capacity, so
/// that streaming a large body does not map and zero fresh pages each turn.
const KEEP_SPARE: usize = 4 * 1024 * 1024;
/// An idle client connection keeps at most this much spare capacity, so
/// that idle keep-alive connections cost little memory.
const IDLE_SPARE: usize = 4 * 1024;
/// Request bytes queued on an upstream connection before the client is
/// paused.
const UPSTREAM_OUT_LIMIT: usize = 256 * 1024;
/// Requests of one client that may follow one another on one upstream
/// connection.
const MAX_SHARED: usize = 16;
/// Response body pieces at least this long go to the client straight from
/// the receive buffer (see `lend_body`); shorter ones are cheaper copied.
const LEND_MIN: usize = 4096;

const SIDE_UPSTREAM: u64 = 1 << 55;
const GEN_MASK: u32 = 0x7f_ffff;

fn token(side: u64, idx: usize, gen: u32) -> u64 {
    side | (u64::from(gen & GEN_MASK) << 32) | idx as u64
}

fn untoken(t: u64) -> (bool, usize, u32) {
    (
        t & SIDE_UPSTREAM != 0,
        (t & 0xffff_ffff) as usize,
        ((t >> 32) as u32) & GEN_MASK,
    )
}

/// State of a socket's multishot recv.
#[derive(Debug, Default)]
struct RecvCtl {
    /// A multishot recv is in the kernel.
    armed: bool,
    /// A cancel for it is in flight.
    cancelling: bool,
    /// We want no data now (backpressure).
    paused: bool,
    /// The peer closed; never re-arm.
    eof: bool,
}

impl RecvCtl {
    /// Arm or cancel so that the socket is read exactly when not paused.
    fn apply(&mut self, reactor: &mut Reactor, fd: RawFd, tok: u64) {
        if self.paused {
            if self.armed && !self.cancelling {
                reactor.cancel_recv(tok);
                self.cancelling = true;
            }
        } else if !self.armed && !self.eof {
            reactor.recv_multi(fd, tok);
            self.armed = true;
        }
    }

    /// The multishot ended (final completion without MORE).
    fn ended(&mut self) {
        self.armed = false;
        self.cancelling = false;
    }
}

/// The upstream connection that the next shareable requests of the client
/// being driven may follow (see the module doc). One per worker: a batch
/// forms while one client's requests are placed, and one client placing
/// after another just starts its own.
#[derive(Debug, Clone, Copy)]
struct Batch {
    client: ClientRef,
    conn: ConnId,
    gen: u32,
    turn: u64,
}

/// A client connection: its socket and its agent.
struct ClientConn {
    fd: RawFd,
    gen: u32,
    agent: ClientAgent,
    recv: RecvCtl,
    /// Bytes of the send in flight (0: none).
    sending: usize,
    spare: Vec<u8>,
    /// Output queued ahead of the agent's: response bodies lent straight
    /// from receive buffers, and the agent's output sealed before each.
    queue: Vec<Seg>,
    /// Bytes in `queue`.
    queued: usize,
    /// Upstream connections serving this client's exchanges.
    links: Vec<(ExchangeId, ConnId)>,
    /// Our write side is shut (a tunnel whose origin half-closed).
    shut_wr: bool,
    /// Queued for a flush at the end of the turn.
    dirty: bool,
    /// When the current request head began (or the connection was
    /// accepted, before its first request).
    head_since: Option<Instant>,
    /// When the connection last became idle (for a tunnel: last moved a
    /// byte either way).
    idle_since: Instant,
    /// When the send in flight was submitted (see the tick: a client that
    /// takes no bytes for the idle timeout is closed).
    send_since: Instant,
    /// Since when it has had exchanges in flight (request deadline).
    busy_since: Option<Instant>,
}

/// A client connection, as an upstream connection names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientRef {
    idx: usize,
    gen: u32,
}

/// One of the client's exchanges on an upstream connection.
#[derive(Debug, Clone, Copy)]
struct Job {
    exchange: ExchangeId,
    route: RouteKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UpState {
    /// Connect in flight.
    Connecting,
    /// Connected, carrying the exchanges in `jobs`.
    Open,
    /// In the idle pool.
    Idle,
}

/// A connection to an origin.
struct UpstreamConn {
    fd: RawFd,
    gen: u32,
    upstream: usize,
    state: UpState,
    /// The one client whose exchanges this connection carries; None while
    /// idle. INVARIANT: `jobs` is empty when this is None.
    client: Option<ClientRef>,
    /// That client's exchanges here, in the order their requests were
    /// written; the front one is reading its response.
    jobs: VecDeque<Job>,
    recv: RecvCtl,
    /// Request bytes waiting to be sent.
    out: Vec<u8>,
    sending: usize,
    spare: Vec<u8>,
    /// The front exchange got the connection from the idle pool.
    reused: bool,
    /// The front exchange has received a response byte.
    responded: bool,
    /// The origin has answered on this connection at least once.
    proven: bool,
    /// The exchanges behind the front were sent elsewhere because the
    /// front was late: the connection closes after the front's response.
    late: bool,
    /// Our write side is shut (a tunnel whose client half-closed).
    shut_wr: bool,
    /// Since when the front exchange's request has been on the wire at the
    /// front (None: not written yet).
    front_since: Option<Instant>,
    /// Connect deadline, or the front exchange's first-byte deadline.
    deadline: Option<Instant>,
    /// Queued for a flush at the end of the turn.
    dirty: bool,
}

/// A client waiting for an upstream connection to free up.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    /// The upstream it is counted against (see `Pool::queue`).
    upstream: usize,
    client: usize,
    client_gen: u32,
    exchange: ExchangeId,
}

/// One worker: a reactor and the connections it drives.
pub struct Worker {
    cfg: Arc<Config>,
    reactor: Reactor,
    listeners: Vec<RawFd>,
    clients: Slab<ClientConn>,
    upconns: Slab<UpstreamConn>,
    pool: Pool,
    waiters: VecDeque<Waiter>,
    next_gen: u32,
    now: Instant,
    /// Event-loop turns so far.
    turn: u64,
    /// Where the shareable requests being placed may go.
    batch: Option<Batch>,
    /// The turn's completions for idle upstream connections are being
    /// handled: nothing may be placed until they all are (see
    /// `begin_turn`).
    idle_pass: bool,
    /// What every agent of this worker shares: the `Date` of ringmux's own
    /// responses (refreshed on the tick; `date_secs` is the second it
    /// shows) and the stash of recycled buffers.
    shared: Rc<AgentShared>,
    date_secs: u64,
    /// Connections to flush when the turn ends.
    dirty_clients: Vec<usize>,
    dirty_upconns: Vec<ConnId>,
    /// Upstream connections that got a second exchange (checked for a late
    /// front each turn; entries that no longer apply are dropped there).
    shared_conns: Vec<(ConnId, u32)>,
    /// Connections whose deadline passed this tick (reused).
    expired: Vec<usize>,
    /// Completions of this turn not handled yet (kept here, not on the
    /// stack, so that a worker dying mid-turn can close the connections
    /// they accepted).
    pending: VecDeque<Event>,
}

impl Worker {
    /// Build a worker on the calling thread (its ring must be used by the
    /// thread that created it) around already-bound listening sockets.
    pub fn new(cfg: Arc<Config>, listeners: Vec<RawFd>) -> io::Result<Self> {
        let reactor = Reactor::new(RingConfig {
            buffers: cfg.ring_buffers,
            batch_wait_us: cfg.batch_wait_us,
            ..RingConfig::default()
        })?;
        let pool = Pool::new(
            &cfg.upstreams,
            cfg.pool_size,
            cfg.max_connecting,
            Box::new(WeightedRoundRobin::default()),
        );
        let date_secs = unix_secs();
        Ok(Worker {
            cfg,
            reactor,
            listeners,
            clients: Slab::with_capacity(1024),
            upconns: Slab::with_capacity(256),
            pool,
            waiters: VecDeque::new(),
            next_gen: 1,
            now: Instant::now(),
            turn: 0,
            batch: None,
            idle_pass: false,
            shared: {
                let shared = AgentShared::default();
                shared.date.set(http_date(date_secs));
                Rc::new(shared)
            },
            date_secs,
            dirty_clients: Vec::with_capacity(256),
            dirty_upconns: Vec::with_capacity(64),
            shared_conns: Vec::new(),
            expired: Vec::new(),
            pending: VecDeque::with_capacity(1024),
        })
    }

    /// How the ring was set up, and whether its waits gather batches.
    pub fn ring_mode(&self) -> (reactor::RingMode, bool) {
        (self.reactor.mode(), self.reactor.batches())
    }

    /// Run the event loop until an unrecoverable ring error.
    pub fn run(mut self) -> io::Result<()> {
        for (i, &fd) in self.listeners.iter().enumerate() {
            self.reactor.accept_multi(i, fd);
        }
        let mut events = Vec::with_capacity(1024);
        loop {
            let wake = self.next_wake();
            self.reactor.wait(&mut events, wake)?;
            self.now = Instant::now();
            self.pending.extend(events.drain(..));
            self.begin_turn();
            while let Some(ev) = self.pending.pop_front() {
                self.handle(ev);
            }
            self.end_turn();
        }
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1) & GEN_MASK;
        self.next_gen
    }

    /// How long the next wait may sleep at most: until the earliest late
    /// bound of a shared connection or, with waiters, the moment an idle
    /// connection leaves its quarantine or an opening one stops counting;
    /// otherwise until a completion (the tick comes every 100 ms).
    fn next_wake(&mut self) -> Option<Duration> {
        let mut wake: Option<Instant> = None;
        if !self.waiters.is_empty() {
            let now = Instant::now();
            let q = self.pool.next_quarantine_end(now);
            let o = self.pool.next_opening_expiry(now);
            wake = match (q, o) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        for &(conn, gen) in &self.shared_conns {
            if let Some(at) = self.late_at(conn, gen) {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        }
        wake.map(|at| at.saturating_duration_since(Instant::now()))
    }

    /// A turn begins: completions for idle upstream connections first (see
    /// the module doc), then the waiters that may take connections released
    /// in the last turn.
    fn begin_turn(&mut self) {
        self.turn += 1;
        self.pool.begin_turn();
        // Rare (an origin closing an idle connection): look before moving
        // every event through the queue.
        let any_idle = self.pending.iter().any(|ev| self.is_for_idle_upstream(ev));
        // Closing one idle connection frees room, which would serve a
        // waiter, which could take another idle connection whose own
        // completion is still in this list: no placing until all are done.
        self.idle_pass = true;
        for _ in 0..if any_idle { self.pending.len() } else { 0 } {
            let Some(ev) = self.pending.pop_front() else {
                break;
            };
            if self.is_for_idle_upstream(&ev) {
                self.handle(ev);
            } else {
                self.pending.push_back(ev);
            }
        }
        self.idle_pass = false;
        if !self.waiters.is_empty() {
            self.serve_waiters();
        }
    }

    fn is_for_idle_upstream(&self, ev: &Event) -> bool {
        let Event::Received { user, .. } = ev else {
            return false;
        };
        let (upstream, idx, gen) = untoken(*user);
        upstream
            && self
                .upconns
                .get(idx)
                .is_some_and(|u| u.gen == gen && u.state == UpState::Idle)
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Accepted {
                listener,
                result,
                rearm,
            } => {
                if let Ok(fd) = result {
                    self.on_accept(fd);
                }
                if rearm {
                    self.reactor
                        .accept_multi(listener, self.listeners[listener]);
                }
            }
            Event::Received {
                user,
                result,
                buffer,
                more,
            } => {
                let (upstream, idx, gen) = untoken(user);
                if upstream {
                    self.on_upstream_recv(idx, gen, result, buffer, more);
                } else {
                    self.on_client_recv(idx, gen, result, buffer, more);
                }
            }
            Event::Sent {
                user,
                result,
                buf,
                start,
            } => {
                let (upstream, idx, gen) = untoken(user);
                if upstream {
                    self.on_upstream_sent(idx, gen, result, buf, start);
                } else {
                    self.on_client_sent(idx, gen, result, buf, start);
                }
            }
            Event::SentSegs { user, result, segs } => {
                let (_, idx, gen) = untoken(user);
                self.on_client_sent_segs(idx, gen, result, segs);
            }
            Event::Connected { user, result } => {
                let (_, idx, gen) = untoken(user);
                self.on_connected(idx, gen, result);
            }
            Event::Tick => self.on_tick(),
            Event::QuietFailed { .. } => {}
        }
    }

    /// Everything this turn produced goes out: one send per dirty socket.
    fn end_turn(&mut self) {
        self.check_late();
        for idx in std::mem::take(&mut self.dirty_clients) {
            let Some(c) = self.clients.get_mut(idx) else {
                continue;
            };
            c.dirty = false;
            if c.sending > 0 {
                continue;
            }
            if !c.queue.is_empty() {
                // Lent body pieces (and the output around them) go out in
                // one sendmsg; whatever does not fit waits for the next.
                seal_output(c);
                let rest = if c.queue.len() > MAX_SEGS {
                    c.queue.split_off(MAX_SEGS)
                } else {
                    Vec::new()
                };
                let segs = std::mem::replace(&mut c.queue, rest);
                let n: usize = segs.iter().map(Seg::len).sum();
                c.queued -= n;
                c.sending = n;
                c.send_since = self.now;
                self.reactor.send_segs(c.fd, segs, token(0, idx, c.gen));
            } else if !c.agent.output().is_empty() {
                let spare = std::mem::take(&mut c.spare);
                let buf = std::mem::replace(c.agent.output(), spare);
                c.sending = buf.len();
                c.send_since = self.now;
                self.reactor.send(c.fd, buf, 0, token(0, idx, c.gen));
            }
        }
        for conn in std::mem::take(&mut self.dirty_upconns) {
            if let Some(u) = self.upconns.get_mut(conn) {
                u.dirty = false;
                flush_upstream(&mut self.reactor, conn, u, self.now);
            }
        }
    }

    fn mark_client(&mut self, idx: usize) {
        if let Some(c) = self.clients.get_mut(idx) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(idx);
            }
        }
    }

    fn mark_upstream(&mut self, conn: ConnId) {
        if let Some(u) = self.upconns.get_mut(conn) {
            if !u.dirty {
                u.dirty = true;
                self.dirty_upconns.push(conn);
            }
        }
    }

    fn client_alive(&self, r: ClientRef) -> bool {
        self.clients.get(r.idx).is_some_and(|c| c.gen == r.gen)
    }

    // ----- clients -------------------------------------------------------

    fn on_accept(&mut self, fd: RawFd) {
        if self.clients.len() >= self.cfg.max_connections {
            // Over the limit: refuse cleanly rather than degrade everyone.
            self.reactor.close(fd);
            return;
        }
        let peer = match reactor::peer_addr(fd) {
            Ok(a) => a,
            Err(_) => {
                self.reactor.close(fd);
                return;
            }
        };
        let gen = self.gen();
        let ctx = ForwardCtx {
            client: peer.ip(),
            proto: "http",
            limits: self.cfg.head_limits,
            via: self.cfg.via,
        };
        let idx = self.clients.insert(ClientConn {
            fd,
            gen,
            agent: ClientAgent::new(ctx, self.cfg.pipeline_depth)
                .with_max_body(self.cfg.max_body_size)
                .with_buffer(self.cfg.buffer_size)
                .with_shared(Rc::clone(&self.shared)),
            recv: RecvCtl::default(),
            sending: 0,
            spare: Vec::new(),
            queue: Vec::new(),
            queued: 0,
            links: Vec::new(),
            shut_wr: false,
            dirty: false,
            head_since: Some(self.now),
            idle_since: self.now,
            send_since: self.now,
            busy_since: None,
        });
        let c = &mut self.clients[idx];
        c.recv.apply(&mut self.reactor, fd, token(0, idx, gen));
    }

    fn on_client_recv(
        &mut self,
        idx: usize,
        gen: u32,
        result: i32,
        buffer: Option<u16>,
        more: bool,
    ) {
        let Some(c) = self.clients.get_mut(idx).filter(|c| c.gen == gen) else {
            if let Some(b) = buffer {
                self.reactor.recycle(b);
            }
            return;
        };
        if !more {
            c.recv.ended();
        }
        if result > 0 {
            if let Some(b) = buffer {
                c.agent
                    .on_client_data(self.reactor.buffer(b, result as usize));
                self.reactor.recycle(b);
            }
        } else if result == 0 {
            c.recv.eof = true;
            c.agent.on_client_eof();
        } else if result != -libc::ENOBUFS && result != -libc::ECANCELED {
            // Reset or another socket error: nothing more can be delivered.
            self.close_client(idx);
            return;
        }
        self.drive_client(idx);
    }

    fn on_client_sent(
        &mut self,
        idx: usize,
        gen: u32,
        result: io::Result<usize>,
        mut buf: Vec<u8>,
        start: usize,
    ) {
        let Some(c) = self.clients.get_mut(idx).filter(|c| c.gen == gen) else {
            return;
        };
        c.sending = 0;
        match result {
            Ok(n) if start + n < buf.len() && n > 0 => {
                // Short send (interrupted while the peer was not reading):
                // continue from where it stopped.
                c.sending = buf.len() - start - n;
                c.send_since = self.now;
                self.reactor.send(c.fd, buf, start + n, token(0, idx, gen));
                return;
            }
            Ok(_) => {
                // Idle time counts from the last byte the client took.
                c.idle_since = self.now;
                if c.agent.is_idle() && buf.capacity() <= IDLE_SPARE {
                    // The last answer went out and nothing else is asked:
                    // an idle keep-alive connection keeps no buffer at all
                    // (a small one is cheap to allocate again; large ones
                    // are kept until the tick, for clients fetching large
                    // bodies back to back). Small ones go to the stash for
                    // the next request on any connection.
                    self.shared.give_bytes(std::mem::take(&mut c.spare));
                    self.shared.give_bytes(buf);
                    c.agent.shrink_idle(0);
                } else if buf.capacity() <= KEEP_SPARE {
                    buf.clear();
                    c.spare = buf;
                }
            }
            Err(_) => {
                self.close_client(idx);
                return;
            }
        }
        self.resume_upstreams_of(idx);
        self.drive_client(idx);
    }

    /// A segment send to a client finished: release the segments (their
    /// receive buffers go back), then carry on as after any send.
    fn on_client_sent_segs(
        &mut self,
        idx: usize,
        gen: u32,
        result: io::Result<usize>,
        segs: Vec<Seg>,
    ) {
        let total: usize = segs.iter().map(Seg::len).sum();
        let Some(c) = self.clients.get_mut(idx).filter(|c| c.gen == gen) else {
            for seg in segs {
                self.reactor.release(seg);
            }
            return;
        };
        c.sending = 0;
        match result {
            Ok(n) if n < total && n > 0 => {
                // Short send: copy what is left and send it the plain way.
                let mut rest = Vec::with_capacity(total - n);
                let mut skip = n;
                for seg in &segs {
                    let b = self.reactor.seg_bytes(seg);
                    let k = skip.min(b.len());
                    rest.extend_from_slice(&b[k..]);
                    skip -= k;
                }
                for seg in segs {
                    self.reactor.release(seg);
                }
                c.sending = rest.len();
                c.send_since = self.now;
                self.reactor.send(c.fd, rest, 0, token(0, idx, gen));
                return;
            }
            Ok(n) if n == total => {
                c.idle_since = self.now;
                for seg in segs {
                    if let Some(mut b) = self.reactor.release(seg) {
                        if b.capacity() <= KEEP_SPARE && b.capacity() > c.spare.capacity() {
                            b.clear();
                            c.spare = b;
                        }
                    }
                }
            }
            _ => {
                for seg in segs {
                    self.reactor.release(seg);
                }
                self.close_client(idx);
                return;
            }
        }
        self.resume_upstreams_of(idx);
        self.drive_client(idx);
    }

    /// Whether the front exchange on `conn` has room for more response.
    fn upstream_may_read(&self, conn: ConnId) -> bool {
        let Some(u) = self.upconns.get(conn) else {
            return true;
        };
        let (Some(client), Some(front)) = (u.client, u.jobs.front()) else {
            return true;
        };
        match self.clients.get(client.idx) {
            Some(c) if c.gen == client.gen => c
                .agent
                .may_read_upstream(front.exchange, c.sending + c.queued),
            _ => true,
        }
    }

    /// Client output drained: upstreams paused for lack of room may go on.
    fn resume_upstreams_of(&mut self, idx: usize) {
        for i in 0..self.clients[idx].links.len() {
            let conn = self.clients[idx].links[i].1;
            let paused = self.upconns.get(conn).is_some_and(|u| u.recv.paused);
            if paused && self.upstream_may_read(conn) {
                let u = &mut self.upconns[conn];
                u.recv.paused = false;
                u.recv
                    .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, u.gen));
            }
        }
    }

    /// Carry out everything the client's agent is ready for.
    fn drive_client(&mut self, idx: usize) {
        // 1. Place exchanges that may start.
        loop {
            let Some(c) = self.clients.get_mut(idx) else {
                return;
            };
            let Some(ex) = c.agent.next_ready() else {
                break;
            };
            self.place(idx, ex);
        }
        // 2. Hand more request body to connected upstreams.
        let Some(c) = self.clients.get(idx) else {
            return;
        };
        for i in 0..c.links.len() {
            let (ex, conn) = self.clients[idx].links[i];
            self.hand_request(idx, ex, conn);
        }
        // 3. A tunnel passes half-closes on.
        if let Some(ends) = self.clients[idx].agent.tunnel() {
            if self.drive_tunnel(idx, ends) {
                return;
            }
        }
        let c = &mut self.clients[idx];
        // Timers: a head in progress runs against the header timeout, an
        // idle keep-alive connection against the idle timeout.
        if c.agent.has_partial_head() || !c.agent.any_request() {
            c.head_since.get_or_insert(self.now);
        } else {
            c.head_since = None;
        }
        if !c.agent.is_idle() || c.sending > 0 || !c.queue.is_empty() {
            c.idle_since = self.now;
        }
        if c.agent.pending() > 0 {
            c.busy_since.get_or_insert(self.now);
        } else {
            c.busy_since = None;
        }
        // 4. Output leaves at the end of the turn.
        let has_output = !c.agent.output().is_empty() || !c.queue.is_empty();
        // 5. Read the client only while there is room.
        c.recv.paused = !c.agent.may_read_client();
        c.recv.apply(&mut self.reactor, c.fd, token(0, idx, c.gen));
        // 6. Close once everything owed has been written.
        if c.agent.wants_close() && c.sending == 0 && !has_output {
            self.close_client(idx);
        } else if has_output {
            self.mark_client(idx);
        }
    }

    /// Pass a tunnel's half-closes on: the client's FIN goes to the origin
    /// once every byte the client sent is out, the origin's to the client
    /// once every byte for it is out. When both directions are shut the
    /// tunnel is over and both connections close. Returns true if the
    /// client connection was closed.
    fn drive_tunnel(&mut self, idx: usize, ends: TunnelEnds) -> bool {
        let c = &mut self.clients[idx];
        let conn = c
            .links
            .iter()
            .find(|&&(ex, _)| ex == ends.exchange)
            .map(|&(_, conn)| conn);
        let Some(u) = conn.and_then(|conn| self.upconns.get_mut(conn)) else {
            return false; // the upstream side failed: the agent closes
        };
        if ends.client_done
            && !u.shut_wr
            && c.agent.pending_request(ends.exchange) == 0
            && u.out.is_empty()
            && u.sending == 0
        {
            self.reactor.shutdown_write(u.fd);
            u.shut_wr = true;
        }
        let flushed = c.sending == 0
            && c.queue.is_empty()
            && c.agent.output().is_empty()
            && ends.owed_nothing_else;
        if ends.upstream_done && !c.shut_wr && flushed {
            self.reactor.shutdown_write(c.fd);
            c.shut_wr = true;
        }
        if c.shut_wr && u.shut_wr {
            self.close_client(idx);
            return true;
        }
        false
    }

    /// Copy the request bytes of `ex` that are ready into `conn`'s output,
    /// if the connection is open and has room.
    fn hand_request(&mut self, client: usize, ex: ExchangeId, conn: ConnId) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.state != UpState::Open || u.out.len() >= UPSTREAM_OUT_LIMIT {
            return;
        }
        let c = &mut self.clients[client];
        if c.agent.pending_request(ex) == 0 {
            return;
        }
        let host = self.pool.upstreams()[u.upstream].spec.host();
        c.agent.hand_request(ex, &mut u.out, host.as_bytes());
        self.mark_upstream(conn);
    }

    fn close_client(&mut self, idx: usize) {
        let Some(mut c) = self.clients.try_remove(idx) else {
            return;
        };
        for seg in c.queue.drain(..) {
            self.reactor.release(seg);
        }
        if c.sending > 0 {
            // Its send must not outlive the connection (see cancel_fd).
            self.reactor.cancel_fd(c.fd);
        } else if c.recv.armed && !c.recv.cancelling {
            self.reactor.cancel_recv(token(0, idx, c.gen));
        }
        self.reactor.close(c.fd);
        // Upstream connections carrying this client's exchanges will bring
        // responses nobody can read (and nobody can parse past): close
        // them. They carry nobody else's.
        for (_, conn) in c.links {
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
        }
        self.serve_waiters();
    }

    // ----- placing exchanges ------------------------------------------------

    fn place(&mut self, client: usize, ex: ExchangeId) {
        let c = &self.clients[client];
        let Some(e) = c.agent.exchange(ex) else {
            return;
        };
        if self.cfg.debug_panic_hash == Some(e.path_hash) {
            panic!("a request for --debug-panic-path");
        }
        let key = RequestKey {
            path_hash: e.path_hash,
        };
        let fresh = e.is_retry();
        let may_share = e.may_share();
        let target = e.route();
        let owner = ClientRef {
            idx: client,
            gen: c.gen,
        };
        if may_share {
            if let Some(conn) = self.shared_conn(client, target) {
                let route = self.pool.route(self.upconns[conn].upstream, target);
                let u = &mut self.upconns[conn];
                u.jobs.push_back(Job {
                    exchange: ex,
                    route,
                });
                if u.jobs.len() == 2 {
                    self.shared_conns.push((conn, u.gen));
                }
                self.clients[client].links.push((ex, conn));
                self.hand_request(client, ex, conn);
                return;
            }
        }
        let placement = self.pool.place(key, self.now, fresh);
        let conn = match placement {
            Placement::Reuse { upstream, conn } => {
                let route = self.pool.route(upstream, target);
                let u = &mut self.upconns[conn];
                u.state = UpState::Open;
                u.client = Some(owner);
                u.jobs.push_back(Job {
                    exchange: ex,
                    route,
                });
                u.reused = true;
                u.responded = false;
                u.front_since = None;
                u.deadline = Some(self.now + self.cfg.response_timeout);
                self.clients[client].links.push((ex, conn));
                self.hand_request(client, ex, conn);
                conn
            }
            Placement::Connect { upstream } | Placement::ConnectEvicting { upstream, .. } => {
                if let Placement::ConnectEvicting { evict, .. } = placement {
                    // The pool no longer counts it.
                    self.discard_upstream(evict);
                }
                match self.open_upstream(upstream, owner, ex, target) {
                    Ok(conn) => {
                        self.clients[client].links.push((ex, conn));
                        conn
                    }
                    Err(e) => {
                        self.pool.connect_failed(upstream, self.now);
                        self.fail_exchange(owner, ex, ProxyError::ConnectFailed(e), false);
                        return;
                    }
                }
            }
            Placement::Wait { upstream } if self.waiters.len() < MAX_WAITERS => {
                self.pool.queue(upstream);
                self.waiters.push_back(Waiter {
                    upstream,
                    client,
                    client_gen: owner.gen,
                    exchange: ex,
                });
                return;
            }
            Placement::Wait { .. } | Placement::Unavailable => {
                self.fail_exchange(owner, ex, ProxyError::NoUpstream, false);
                return;
            }
        };
        // Later shareable requests of this turn may follow this one if its
        // route answers fast.
        let u = &self.upconns[conn];
        let route = self.pool.route(u.upstream, target);
        if may_share && self.pool.route_is_fast(route, self.now) {
            self.batch = Some(Batch {
                client: owner,
                conn,
                gen: u.gen,
                turn: self.turn,
            });
        }
    }

    /// The connection this turn's shareable request of `client` for
    /// `target` may follow others on, if any (see the module doc).
    fn shared_conn(&self, client: usize, target: u64) -> Option<ConnId> {
        let me = ClientRef {
            idx: client,
            gen: self.clients[client].gen,
        };
        let b = self
            .batch
            .filter(|b| b.turn == self.turn && b.client == me)?;
        let u = self.upconns.get(b.conn).filter(|u| u.gen == b.gen)?;
        let mine = u.client == Some(me);
        let usable = matches!(u.state, UpState::Connecting | UpState::Open)
            && !u.late
            && !u.responded
            && u.jobs.len() < MAX_SHARED
            && u.out.len() < UPSTREAM_OUT_LIMIT;
        let fast = self
            .pool
            .route_is_fast(self.pool.route(u.upstream, target), self.now);
        (mine && usable && fast).then_some(b.conn)
    }

    fn open_upstream(
        &mut self,
        upstream: usize,
        owner: ClientRef,
        ex: ExchangeId,
        target: u64,
    ) -> io::Result<ConnId> {
        let addr: SocketAddr = self.pool.upstreams()[upstream].spec.addr;
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_tcp_nodelay(true)?;
        let fd = sock.into_raw_fd();
        let gen = self.gen();
        let route = self.pool.route(upstream, target);
        let conn = self.upconns.insert(UpstreamConn {
            fd,
            gen,
            upstream,
            state: UpState::Connecting,
            client: Some(owner),
            jobs: VecDeque::from([Job {
                exchange: ex,
                route,
            }]),
            recv: RecvCtl::default(),
            out: Vec::new(),
            sending: 0,
            spare: Vec::new(),
            reused: false,
            responded: false,
            proven: false,
            late: false,
            shut_wr: false,
            front_since: None,
            deadline: Some(self.now + self.cfg.connect_timeout),
            dirty: false,
        });
        self.reactor
            .connect(fd, addr, token(SIDE_UPSTREAM, conn, gen));
        Ok(conn)
    }

    /// Report a failure of `client`'s exchange `ex` to its agent (which may
    /// queue it again; the retry is placed by drive_client).
    fn fail_exchange(&mut self, client: ClientRef, ex: ExchangeId, err: ProxyError, reused: bool) {
        let Some(c) = self
            .clients
            .get_mut(client.idx)
            .filter(|c| c.gen == client.gen)
        else {
            return;
        };
        c.links.retain(|&(e, _)| e != ex);
        match err {
            ProxyError::ClosedBeforeResponse => {
                c.agent.on_upstream_eof(ex, reused);
            }
            err => {
                c.agent.on_upstream_error(ex, err, reused);
            }
        }
        self.drive_client(client.idx);
    }

    /// Upstream capacity freed up: give it to queued exchanges.
    fn serve_waiters(&mut self) {
        if self.idle_pass {
            return; // begin_turn serves them once the pass is over
        }
        while let Some(w) = self.waiters.pop_front() {
            self.pool.dequeue(w.upstream);
            let alive = self
                .clients
                .get(w.client)
                .is_some_and(|c| c.gen == w.client_gen && c.agent.exchange(w.exchange).is_some());
            if !alive {
                continue;
            }
            let before = self.waiters.len();
            self.place(w.client, w.exchange);
            if self.waiters.len() > before {
                // Still no room: it went to the back; stop for now.
                break;
            }
            self.drive_client(w.client);
        }
    }

    /// When the front exchange of shared connection `conn` is late, if it
    /// can be (still shared, front on the wire, no answer yet).
    fn late_at(&self, conn: ConnId, gen: u32) -> Option<Instant> {
        let u = self.upconns.get(conn).filter(|u| u.gen == gen)?;
        let front = u.jobs.front()?;
        if u.state != UpState::Open || u.jobs.len() < 2 || u.late || u.responded {
            return None;
        }
        Some(u.front_since? + self.pool.late_after(front.route))
    }

    /// Shared connections whose front is late: the exchanges behind it go
    /// on connections of their own (see the module doc).
    fn check_late(&mut self) {
        let mut i = 0;
        while i < self.shared_conns.len() {
            let (conn, gen) = self.shared_conns[i];
            let alive = self
                .upconns
                .get(conn)
                .is_some_and(|u| u.gen == gen && u.jobs.len() > 1 && !u.late);
            if !alive {
                self.shared_conns.swap_remove(i);
                continue;
            }
            match self.late_at(conn, gen) {
                Some(at) if self.now >= at => {
                    self.shared_conns.swap_remove(i);
                    self.send_followers_elsewhere(conn);
                }
                _ => i += 1,
            }
        }
    }

    fn send_followers_elsewhere(&mut self, conn: ConnId) {
        let u = &mut self.upconns[conn];
        let Some(client) = u.client else {
            return;
        };
        u.late = true;
        let followers: Vec<Job> = u.jobs.drain(1..).collect();
        let Some(c) = self
            .clients
            .get_mut(client.idx)
            .filter(|c| c.gen == client.gen)
        else {
            return;
        };
        for job in followers {
            if c.agent.detach(job.exchange) {
                c.links.retain(|&(e, _)| e != job.exchange);
            } else {
                // Cannot be taken back (cannot happen for shareable
                // requests): it stays where it is.
                self.upconns[conn].jobs.push_back(job);
            }
        }
        self.drive_client(client.idx);
    }

    // ----- upstreams ----------------------------------------------------------

    fn on_connected(&mut self, conn: usize, gen: u32, result: io::Result<()>) {
        let Some(u) = self.upconns.get_mut(conn).filter(|u| u.gen == gen) else {
            return;
        };
        if u.state != UpState::Connecting {
            return;
        }
        match result {
            Ok(()) => {
                self.pool.connected(u.upstream);
                u.state = UpState::Open;
                u.deadline = Some(self.now + self.cfg.response_timeout);
                u.recv
                    .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, gen));
                match u.client.filter(|&r| self.client_alive(r)) {
                    Some(client) => self.drive_client(client.idx),
                    None => self.close_upstream(conn),
                }
            }
            Err(e) => {
                self.pool.connect_failed(u.upstream, self.now);
                let client = u.client;
                let jobs = std::mem::take(&mut u.jobs);
                self.discard_upstream(conn);
                if let Some(client) = client {
                    for job in jobs {
                        let err = ProxyError::ConnectFailed(e.kind().into());
                        self.fail_exchange(client, job.exchange, err, false);
                    }
                }
            }
        }
    }

    fn on_upstream_recv(
        &mut self,
        conn: usize,
        gen: u32,
        result: i32,
        buffer: Option<u16>,
        more: bool,
    ) {
        let Some(u) = self.upconns.get_mut(conn).filter(|u| u.gen == gen) else {
            if let Some(b) = buffer {
                self.reactor.recycle(b);
            }
            return;
        };
        if !more {
            u.recv.ended();
        }
        // The ring ran dry while bytes arrived: on an idle connection those
        // are bytes nobody asked for, like any other.
        let idle_speaks = result == -libc::ENOBUFS && u.state == UpState::Idle;
        if (result == -libc::ENOBUFS || result == -libc::ECANCELED) && !idle_speaks {
            // Re-arm unless the front exchange still has no room (decided
            // afresh: the front may have changed since the pause).
            let paused = !self.upstream_may_read(conn);
            let u = &mut self.upconns[conn];
            u.recv.paused = paused;
            u.recv
                .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, gen));
            return;
        }
        if result == 0 && u.state == UpState::Open && self.tunnel_upstream_done(conn) {
            return;
        }
        let u = &mut self.upconns[conn];
        let client = u
            .client
            .filter(|_| u.state == UpState::Open && !u.jobs.is_empty());
        let (Some(client), Some(b), true) = (client, buffer, result > 0) else {
            if let Some(b) = buffer {
                self.reactor.recycle(b);
            }
            // End of stream or an error, or bytes nobody asked for (an idle
            // connection speaking): it can carry nothing more.
            let err = if result < 0 {
                ProxyError::UpstreamIo(io::Error::from_raw_os_error(-result))
            } else {
                ProxyError::ClosedBeforeResponse
            };
            self.abort_upstream(conn, err);
            return;
        };
        let mut newly_proven = false;
        if !u.responded {
            if let (Some(since), Some(front)) = (u.front_since, u.jobs.front()) {
                let took = self.now.saturating_duration_since(since);
                self.pool.observe_service(front.route, took, self.now);
            }
            if !u.proven {
                u.proven = true;
                newly_proven = true;
                self.pool.proven(u.upstream);
            }
            u.responded = true;
            u.deadline = None;
        }
        let Some(c) = self
            .clients
            .get_mut(client.idx)
            .filter(|c| c.gen == client.gen)
        else {
            self.reactor.recycle(b);
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
            return;
        };
        // Split the bytes among the client's exchanges on this connection,
        // front first: a response that completes hands the rest to the
        // next.
        let len = result as usize;
        let mut used = 0;
        let mut close = false;
        while let Some(&job) = u.jobs.front() {
            let ex = job.exchange;
            let verbatim = c.agent.verbatim_body(ex);
            let fate = if verbatim > 0 && len - used >= LEND_MIN && self.reactor.may_lend() {
                let n = verbatim.min((len - used) as u64) as usize;
                lend_body(&mut self.reactor, c, b, used, n);
                used += n;
                c.agent.take_verbatim(ex, n)
            } else {
                let data = &self.reactor.buffer(b, len)[used..];
                let (fate, n) = c.agent.on_response_data(ex, data);
                used += n;
                fate
            };
            if fate == UpstreamFate::Busy {
                break;
            }
            u.jobs.pop_front();
            self.pool.exchange_done(u.upstream);
            c.links.retain(|&(e, _)| e != ex);
            if fate == UpstreamFate::Close || u.late {
                // Whatever is still queued here never saw a byte: it may be
                // retried (as a follower on a reused connection is).
                u.reused = true;
                close = true;
                break;
            }
            // The next exchange's request is on the wire already, unless
            // some of it still waits to be sent.
            u.front_since = (u.out.is_empty()).then_some(self.now);
            u.reused = true;
            u.responded = used < len;
            u.deadline = Some(self.now + self.cfg.response_timeout);
            if used == len {
                break;
            }
        }
        // Bytes left with no exchange to own them: the origin broke framing.
        close |= used < len;
        self.reactor.recycle(b);
        if close {
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
        } else if u.jobs.is_empty() {
            // Request bytes still queued mean the origin answered before
            // reading the whole request: the connection is not clean.
            let clean = u.sending == 0 && u.out.is_empty();
            let keep_for = match self.pool.release(u.upstream, conn, clean, self.now) {
                Release::Keep => Some(self.cfg.upstream_idle_timeout),
                Release::Linger => Some(SURPLUS_LINGER.min(self.cfg.upstream_idle_timeout)),
                Release::Close => None,
            };
            if let Some(keep_for) = keep_for {
                u.state = UpState::Idle;
                u.client = None;
                u.reused = false;
                u.responded = false;
                u.front_since = None;
                u.deadline = Some(self.now + keep_for);
                // Keep reading while idle, to notice the origin closing.
                u.recv.paused = false;
                u.recv
                    .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, u.gen));
            } else {
                self.discard_upstream(conn);
            }
            self.serve_waiters();
        } else {
            // The front exchange may have changed (a response completed in
            // these bytes): pause or resume for the one there now. Applied
            // even when the decision is unchanged: the multishot may have
            // ended with this data (no MORE flag, e.g. a full completion
            // queue) and must be armed again.
            let paused = !self.upstream_may_read(conn);
            let u = &mut self.upconns[conn];
            u.recv.paused = paused;
            u.recv
                .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, u.gen));
        }
        if newly_proven && !self.waiters.is_empty() {
            // One more proven connection may let another connect start.
            self.serve_waiters();
        }
        if self.client_alive(client) {
            self.drive_client(client.idx);
        }
    }

    /// The origin half-closed a tunnel: pass it on (see `drive_tunnel`).
    /// False if `conn` is not a tunnel's upstream.
    fn tunnel_upstream_done(&mut self, conn: ConnId) -> bool {
        let u = &mut self.upconns[conn];
        let (Some(client), Some(front)) = (u.client, u.jobs.front()) else {
            return false;
        };
        let Some(c) = self
            .clients
            .get_mut(client.idx)
            .filter(|c| c.gen == client.gen)
        else {
            return false;
        };
        if c.agent
            .tunnel()
            .is_none_or(|t| t.exchange != front.exchange)
        {
            return false;
        }
        u.recv.eof = true;
        c.agent.on_upstream_eof(front.exchange, false);
        self.drive_client(client.idx);
        true
    }

    fn on_upstream_sent(
        &mut self,
        conn: usize,
        gen: u32,
        result: io::Result<usize>,
        mut buf: Vec<u8>,
        start: usize,
    ) {
        let Some(u) = self.upconns.get_mut(conn).filter(|u| u.gen == gen) else {
            return;
        };
        u.sending = 0;
        if matches!(result, Ok(n) if n > 0) && !u.responded && u.state == UpState::Open {
            // The response timeout runs from the last request byte the
            // origin took, not from dispatch: a long upload that keeps
            // moving is not cut off, one the origin stopped reading is.
            u.deadline = Some(self.now + self.cfg.response_timeout);
        }
        match result {
            Ok(n) if start + n < buf.len() && n > 0 => {
                u.sending = buf.len() - start - n;
                self.reactor
                    .send(u.fd, buf, start + n, token(SIDE_UPSTREAM, conn, gen));
            }
            Ok(_) => {
                if buf.capacity() <= KEEP_SPARE {
                    buf.clear();
                    u.spare = buf;
                }
                let (more, client) = (!u.out.is_empty(), u.client);
                if more {
                    self.mark_upstream(conn);
                }
                // Room on this connection: the front exchange may hand more
                // of its body.
                if let Some(client) = client.filter(|&r| self.client_alive(r)) {
                    self.drive_client(client.idx);
                }
            }
            Err(e) => self.abort_upstream(conn, ProxyError::UpstreamIo(e)),
        }
    }

    /// Close an upstream connection because it failed (or its client went
    /// away), and tell every exchange on it. The front one is told `err`;
    /// the ones behind it never saw a byte and may be retried.
    fn abort_upstream(&mut self, conn: ConnId, err: ProxyError) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let reused = u.reused;
        let client = u.client;
        let jobs = std::mem::take(&mut u.jobs);
        self.close_upstream(conn);
        let Some(client) = client else {
            return;
        };
        let mut err = Some(err);
        for job in jobs {
            match err.take() {
                Some(e) => self.fail_exchange(client, job.exchange, e, reused),
                None => {
                    let e = ProxyError::ClosedBeforeResponse;
                    self.fail_exchange(client, job.exchange, e, true);
                }
            }
        }
    }

    /// Close an upstream connection and settle its pool counts.
    fn close_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.get(conn) else {
            return;
        };
        match u.state {
            UpState::Connecting => self.pool.connect_abandoned(u.upstream),
            UpState::Open => self.pool.active_closed(u.upstream, u.proven),
            UpState::Idle => {
                self.pool.idle_closed(u.upstream, conn);
            }
        }
        self.discard_upstream(conn);
        self.serve_waiters();
    }

    /// Release an upstream connection's slot, recv and fd (no pool counts).
    fn discard_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.try_remove(conn) else {
            return;
        };
        if u.sending > 0 || u.state == UpState::Connecting {
            // An origin that stopped reading would keep the send (and the
            // socket) alive forever, and a connect in flight keeps the
            // socket until it finishes or times out: cancel everything on
            // it.
            self.reactor.cancel_fd(u.fd);
        } else if u.recv.armed && !u.recv.cancelling {
            self.reactor.cancel_recv(token(SIDE_UPSTREAM, conn, u.gen));
        }
        self.reactor.close(u.fd);
    }

    fn on_tick(&mut self) {
        let now = self.now;
        let secs = unix_secs();
        if secs != self.date_secs {
            self.date_secs = secs;
            self.shared.date.set(http_date(secs));
        }
        let (header_timeout, idle_timeout, request_timeout) = (
            self.cfg.client_header_timeout,
            self.cfg.client_idle_timeout,
            self.cfg.request_timeout,
        );
        let mut expired = std::mem::take(&mut self.expired);
        for (idx, c) in self.clients.iter_mut() {
            if c.sending == 0 && c.agent.pending() == 0 {
                // Idle keep-alive clients give back what a large response
                // needed. Done here, not when a response ends, so that a
                // client fetching large bodies back to back keeps them.
                if c.spare.capacity() > IDLE_SPARE {
                    c.spare = Vec::new();
                }
                c.agent.shrink_idle(IDLE_SPARE);
            }
            let head_late = c.head_since.is_some_and(|t| now >= t + header_timeout);
            let idle_late = (c.agent.is_idle() || c.agent.is_tunnel())
                && c.sending == 0
                && c.queue.is_empty()
                && now >= c.idle_since + idle_timeout;
            // A client that has taken no bytes of a send for as long: the
            // send is cancelled with the close (it pins buffers).
            let send_stalled = c.sending > 0 && now >= c.send_since + idle_timeout;
            // A tunnel lives as long as its two ends want (and move bytes).
            let busy_late = !c.agent.is_tunnel()
                && request_timeout
                    .is_some_and(|limit| c.busy_since.is_some_and(|t| now >= t + limit));
            if head_late || idle_late || busy_late || send_stalled {
                expired.push(idx);
            }
        }
        for &idx in &expired {
            // An earlier entry's close may have taken this one with it.
            let Some(c) = self.clients.get_mut(idx) else {
                continue;
            };
            let busy_late = !c.agent.is_tunnel()
                && request_timeout
                    .is_some_and(|limit| c.busy_since.is_some_and(|t| now >= t + limit));
            if busy_late {
                // Past the request deadline: answer (or cut) and close; the
                // upstream connections still working for it are dropped.
                c.busy_since = None;
                c.agent.abandon(ProxyError::RequestDeadline);
                let links = std::mem::take(&mut c.links);
                for (_, conn) in links {
                    self.abort_upstream(conn, ProxyError::RequestDeadline);
                }
                self.drive_client(idx);
            } else if c.agent.has_partial_head() && c.head_since.is_some() {
                // Slow or stalled head: 408 (after what the client is owed),
                // then close; the timer is spent.
                c.head_since = None;
                c.agent.on_header_timeout();
                self.drive_client(idx);
            } else {
                self.close_client(idx);
            }
        }
        expired.clear();
        self.expired = expired;
        let expired: Vec<ConnId> = self
            .upconns
            .iter()
            .filter(|(_, u)| u.deadline.is_some_and(|d| now >= d))
            .map(|(i, _)| i)
            .collect();
        for conn in expired {
            // An earlier entry's close may have taken this one with it.
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            match u.state {
                UpState::Connecting => {
                    self.pool.connect_failed(u.upstream, now);
                    let client = u.client;
                    let jobs = std::mem::take(&mut u.jobs);
                    self.discard_upstream(conn);
                    if let Some(client) = client {
                        for job in jobs {
                            let err = ProxyError::ConnectTimeout;
                            self.fail_exchange(client, job.exchange, err, false);
                        }
                    }
                }
                UpState::Open if !u.responded => {
                    self.abort_upstream(conn, ProxyError::ResponseTimeout);
                }
                // Kept idle long enough: the origin may drop it any moment.
                UpState::Idle => self.close_upstream(conn),
                UpState::Open => {}
            }
        }
    }
}

/// Seconds since the Unix epoch, for the `Date` of our own responses.
fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Drop for Worker {
    /// A worker that goes away while the process carries on (a panic, a
    /// ring error; the supervisor starts another) gives its connections
    /// back: the ring is quiesced, then every client and upstream socket is
    /// closed. The listening sockets stay open for the replacement.
    fn drop(&mut self) {
        self.reactor.quiesce(Duration::from_secs(2));
        for ev in self.pending.drain(..) {
            if let Event::Accepted { result: Ok(fd), .. } = ev {
                reactor::close_now(fd);
            }
        }
        for (_, c) in self.clients.iter() {
            reactor::close_now(c.fd);
        }
        for (_, u) in self.upconns.iter() {
            reactor::close_now(u.fd);
        }
    }
}

/// Move the agent's output into the client's queue, ahead of what comes
/// next (a lent body piece).
fn seal_output(c: &mut ClientConn) {
    if !c.agent.output().is_empty() {
        let spare = std::mem::take(&mut c.spare);
        let out = std::mem::replace(c.agent.output(), spare);
        c.queued += out.len();
        c.queue.push(Seg::Bytes(out));
    }
}

/// Queue `n` body bytes at `off` in receive buffer `bid` for the client as
/// they are: the buffer is held until the send that carries them is done,
/// so a large response crosses the proxy without a copy in user space.
fn lend_body(reactor: &mut Reactor, c: &mut ClientConn, bid: u16, off: usize, n: usize) {
    seal_output(c);
    reactor.hold(bid);
    c.queue.push(Seg::Ring {
        bid,
        off: off as u32,
        len: n as u32,
    });
    c.queued += n;
}

/// Start a send of `u`'s queued request bytes if none is in flight.
fn flush_upstream(reactor: &mut Reactor, conn: ConnId, u: &mut UpstreamConn, now: Instant) {
    if u.sending == 0 && !u.out.is_empty() {
        if u.front_since.is_none() && !u.responded && !u.jobs.is_empty() {
            // The front exchange's request goes on the wire now.
            u.front_since = Some(now);
        }
        let spare = std::mem::take(&mut u.spare);
        let buf = std::mem::replace(&mut u.out, spare);
        u.sending = buf.len();
        reactor.send(u.fd, buf, 0, token(SIDE_UPSTREAM, conn, u.gen));
    }
}
