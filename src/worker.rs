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
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use crate::agent::{ClientAgent, ExchangeId, FailOutcome, UpstreamFate};
use crate::codec::ForwardCtx;
use crate::config::Config;
use crate::error::ProxyError;
use crate::pool::policy::RequestKey;
use crate::pool::{wrr::WeightedRoundRobin, ConnId, Placement, Pool};
use crate::reactor::{self, Event, Reactor, RingConfig};

/// Waiters beyond this many get a 503 instead of a place in the queue.
const MAX_WAITERS: usize = 4096;
/// Spare output buffers larger than this are freed, not kept, so that an
/// idle connection costs little memory.
const KEEP_SPARE: usize = 64 * 1024;
/// Request bytes queued on an upstream connection before the client is
/// paused.
const UPSTREAM_OUT_LIMIT: usize = 256 * 1024;

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
    /// Upstream connections serving this client's exchanges.
    links: Vec<(ExchangeId, ConnId)>,
}

/// Who an upstream connection is working for.
#[derive(Debug, Clone, Copy)]
struct Owner {
    client: usize,
    client_gen: u32,
    exchange: ExchangeId,
}

#[derive(Debug, Clone, Copy)]
enum UpState {
    /// Connect in flight.
    Connecting { owner: Owner },
    /// Carrying an exchange; `responded` once any response byte arrived.
    Busy { owner: Owner, responded: bool },
    /// In the idle pool.
    Idle,
}

/// A connection to an origin.
struct UpstreamConn {
    fd: RawFd,
    gen: u32,
    upstream: usize,
    state: UpState,
    recv: RecvCtl,
    /// Request bytes waiting to be sent.
    out: Vec<u8>,
    sending: usize,
    spare: Vec<u8>,
    /// Taken from the idle pool for the current exchange.
    reused: bool,
    /// Connect or first-response-byte deadline.
    deadline: Option<Instant>,
}

/// A client waiting for an upstream connection to free up.
#[derive(Debug, Clone, Copy)]
struct Waiter {
    client: usize,
    client_gen: u32,
    exchange: ExchangeId,
}

/// Counters of one worker, read by tests and the benchmark.
#[derive(Debug, Default, Clone, Copy)]
pub struct WorkerStats {
    /// Client connections accepted.
    pub accepted: u64,
    /// Upstream connections opened.
    pub upstream_connects: u64,
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
    stats: WorkerStats,
}

impl Worker {
    /// Build a worker on the calling thread (its ring must be used by the
    /// thread that created it) around already-bound listening sockets.
    pub fn new(cfg: Arc<Config>, listeners: Vec<RawFd>) -> io::Result<Self> {
        let reactor = Reactor::new(RingConfig {
            buffers: cfg.ring_buffers,
            ..RingConfig::default()
        })?;
        let pool = Pool::new(
            &cfg.upstreams,
            cfg.pool_size,
            Box::new(WeightedRoundRobin::default()),
        );
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
            stats: WorkerStats::default(),
        })
    }

    /// How the ring was set up.
    pub fn ring_mode(&self) -> reactor::RingMode {
        self.reactor.mode()
    }

    /// Run the event loop until an unrecoverable ring error.
    pub fn run(mut self) -> io::Result<()> {
        for (i, &fd) in self.listeners.iter().enumerate() {
            self.reactor.accept_multi(i, fd);
        }
        let mut events = Vec::with_capacity(1024);
        loop {
            self.reactor.wait(&mut events)?;
            self.now = Instant::now();
            for ev in events.drain(..) {
                self.handle(ev);
            }
        }
    }

    fn gen(&mut self) -> u32 {
        self.next_gen = self.next_gen.wrapping_add(1) & GEN_MASK;
        self.next_gen
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
            Event::Connected { user, result } => {
                let (_, idx, gen) = untoken(user);
                self.on_connected(idx, gen, result);
            }
            Event::Tick => self.on_tick(),
            Event::QuietFailed { .. } => {}
        }
    }

    // ----- clients -------------------------------------------------------

    fn on_accept(&mut self, fd: RawFd) {
        let peer = match reactor::peer_addr(fd) {
            Ok(a) => a,
            Err(_) => {
                self.reactor.close(fd);
                return;
            }
        };
        self.stats.accepted += 1;
        let gen = self.gen();
        let ctx = ForwardCtx {
            client: peer.ip(),
            proto: "http",
        };
        let idx = self.clients.insert(ClientConn {
            fd,
            gen,
            agent: ClientAgent::new(ctx, self.cfg.pipeline_depth),
            recv: RecvCtl::default(),
            sending: 0,
            spare: Vec::new(),
            links: Vec::new(),
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
            c.recv.armed = false;
            c.recv.cancelling = false;
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
                // Short send (the peer stopped reading and the send was
                // interrupted): continue from where it stopped.
                c.sending = buf.len() - start - n;
                self.reactor.send(c.fd, buf, start + n, token(0, idx, gen));
                return;
            }
            Ok(_) => {
                if buf.capacity() <= KEEP_SPARE {
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

    /// Client output drained: upstreams paused for lack of room may go on.
    fn resume_upstreams_of(&mut self, idx: usize) {
        let c = &self.clients[idx];
        for &(ex, conn) in &c.links {
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            if u.recv.paused && c.agent.may_read_upstream(ex, c.sending) {
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
        let Some(c) = self.clients.get_mut(idx) else {
            return;
        };
        // 2. Hand request bytes (heads, bodies) to connected upstreams.
        for &(ex, conn) in &c.links {
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            if !matches!(u.state, UpState::Busy { .. }) || u.out.len() >= UPSTREAM_OUT_LIMIT {
                continue;
            }
            let pending = c.agent.pending_request(ex);
            if pending.is_empty() {
                continue;
            }
            u.out.extend_from_slice(pending);
            c.agent.mark_handed(ex);
            flush_upstream(&mut self.reactor, conn, u);
        }
        // 3. Flush output to the client.
        if c.sending == 0 && !c.agent.output().is_empty() {
            let spare = std::mem::take(&mut c.spare);
            let buf = std::mem::replace(c.agent.output(), spare);
            c.sending = buf.len();
            self.reactor.send(c.fd, buf, 0, token(0, idx, c.gen));
        }
        // 4. Read the client only while there is room.
        c.recv.paused = !c.agent.may_read_client();
        c.recv.apply(&mut self.reactor, c.fd, token(0, idx, c.gen));
        // 5. Close once everything owed has been written.
        if c.agent.wants_close() && c.sending == 0 && c.agent.output().is_empty() {
            self.close_client(idx);
        }
    }

    fn close_client(&mut self, idx: usize) {
        let Some(c) = self.clients.try_remove(idx) else {
            return;
        };
        if c.recv.armed && !c.recv.cancelling {
            self.reactor.cancel_recv(token(0, idx, c.gen));
        }
        self.reactor.close(c.fd);
        // Upstream connections still working for this client carry a
        // response nobody will read: close them.
        for (_, conn) in c.links {
            self.close_upstream(conn);
        }
        self.serve_waiters();
    }

    // ----- placing exchanges ------------------------------------------------

    fn place(&mut self, client: usize, ex: ExchangeId) {
        let c = &self.clients[client];
        let Some(e) = c.agent.exchange(ex) else {
            return;
        };
        let key = RequestKey {
            path_hash: e.path_hash,
        };
        let fresh = e.is_retry();
        let owner = Owner {
            client,
            client_gen: c.gen,
            exchange: ex,
        };
        match self.pool.place(key, self.now, fresh) {
            Placement::Reuse { conn, .. } => {
                let u = &mut self.upconns[conn];
                u.state = UpState::Busy {
                    owner,
                    responded: false,
                };
                u.reused = true;
                u.deadline = Some(self.now + self.cfg.response_timeout);
                self.clients[client].links.push((ex, conn));
            }
            Placement::Connect { upstream } => match self.open_upstream(upstream, owner) {
                Ok(conn) => self.clients[client].links.push((ex, conn)),
                Err(e) => {
                    self.pool.connect_failed(upstream, self.now);
                    self.fail_exchange(owner, ProxyError::ConnectFailed(e), false);
                }
            },
            Placement::Wait if self.waiters.len() < MAX_WAITERS => {
                self.waiters.push_back(Waiter {
                    client,
                    client_gen: owner.client_gen,
                    exchange: ex,
                });
            }
            Placement::Wait | Placement::Unavailable => {
                self.fail_exchange(owner, ProxyError::NoUpstream, false);
            }
        }
    }

    fn open_upstream(&mut self, upstream: usize, owner: Owner) -> io::Result<ConnId> {
        let addr: SocketAddr = self.pool.upstreams()[upstream].spec.addr;
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM.cloexec(),
            Some(socket2::Protocol::TCP),
        )?;
        sock.set_tcp_nodelay(true)?;
        let fd = sock.into_raw_fd();
        let gen = self.gen();
        let conn = self.upconns.insert(UpstreamConn {
            fd,
            gen,
            upstream,
            state: UpState::Connecting { owner },
            recv: RecvCtl::default(),
            out: Vec::new(),
            sending: 0,
            spare: Vec::new(),
            reused: false,
            deadline: Some(self.now + self.cfg.connect_timeout),
        });
        self.stats.upstream_connects += 1;
        self.reactor
            .connect(fd, addr, token(SIDE_UPSTREAM, conn, gen));
        Ok(conn)
    }

    /// Report a failure of `owner`'s exchange to its agent; re-place it if
    /// the agent retries.
    fn fail_exchange(&mut self, owner: Owner, err: ProxyError, reused: bool) {
        let Some(c) = self
            .clients
            .get_mut(owner.client)
            .filter(|c| c.gen == owner.client_gen)
        else {
            return;
        };
        c.links.retain(|&(ex, _)| ex != owner.exchange);
        // A retry happens through drive_client's next_ready loop.
        let _: FailOutcome = match err {
            ProxyError::ClosedBeforeResponse => c.agent.on_upstream_eof(owner.exchange, reused),
            err => c.agent.on_upstream_error(owner.exchange, err, reused),
        };
        self.drive_client(owner.client);
    }

    /// Upstream capacity freed up: give it to queued exchanges.
    fn serve_waiters(&mut self) {
        while let Some(w) = self.waiters.pop_front() {
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

    // ----- upstreams ----------------------------------------------------------

    fn on_connected(&mut self, conn: usize, gen: u32, result: io::Result<()>) {
        let Some(u) = self.upconns.get_mut(conn).filter(|u| u.gen == gen) else {
            return;
        };
        let UpState::Connecting { owner } = u.state else {
            return;
        };
        match result {
            Ok(()) => {
                self.pool.connected(u.upstream);
                u.state = UpState::Busy {
                    owner,
                    responded: false,
                };
                u.deadline = Some(self.now + self.cfg.response_timeout);
                u.recv
                    .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, gen));
                let alive = self
                    .clients
                    .get(owner.client)
                    .is_some_and(|c| c.gen == owner.client_gen);
                if alive {
                    self.drive_client(owner.client);
                } else {
                    self.close_upstream(conn);
                }
            }
            Err(e) => {
                self.pool.connect_failed(u.upstream, self.now);
                self.discard_upstream(conn);
                self.fail_exchange(owner, ProxyError::ConnectFailed(e), false);
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
            u.recv.armed = false;
            u.recv.cancelling = false;
        }
        if result == -libc::ENOBUFS || result == -libc::ECANCELED {
            u.recv
                .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, gen));
            return;
        }
        match u.state {
            UpState::Busy { owner, .. } => {
                if result > 0 {
                    let Some(b) = buffer else { return };
                    u.state = UpState::Busy {
                        owner,
                        responded: true,
                    };
                    u.deadline = None;
                    let fate = match self
                        .clients
                        .get_mut(owner.client)
                        .filter(|c| c.gen == owner.client_gen)
                    {
                        Some(c) => c.agent.on_response_data(
                            owner.exchange,
                            self.reactor.buffer(b, result as usize),
                        ),
                        None => UpstreamFate::Close,
                    };
                    self.reactor.recycle(b);
                    self.after_response_data(conn, owner, fate);
                } else {
                    // EOF or error while carrying an exchange.
                    let reused = u.reused;
                    self.close_upstream(conn);
                    let err = if result == 0 {
                        ProxyError::ClosedBeforeResponse
                    } else {
                        ProxyError::UpstreamIo(io::Error::from_raw_os_error(-result))
                    };
                    self.fail_exchange(owner, err, reused);
                }
            }
            UpState::Idle => {
                if let Some(b) = buffer {
                    self.reactor.recycle(b);
                }
                // An idle connection spoke or closed: either way it is no
                // longer a clean keep-alive connection.
                let upstream = u.upstream;
                self.pool.idle_closed(upstream, conn);
                self.discard_upstream(conn);
                self.serve_waiters();
            }
            UpState::Connecting { .. } => {
                if let Some(b) = buffer {
                    self.reactor.recycle(b);
                }
            }
        }
    }

    fn after_response_data(&mut self, conn: ConnId, owner: Owner, fate: UpstreamFate) {
        let client_alive = self
            .clients
            .get(owner.client)
            .is_some_and(|c| c.gen == owner.client_gen);
        let u = &mut self.upconns[conn];
        match fate {
            UpstreamFate::Busy => {
                if let Some(c) = self.clients.get(owner.client).filter(|_| client_alive) {
                    if !c.agent.may_read_upstream(owner.exchange, c.sending) {
                        u.recv.paused = true;
                        u.recv
                            .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, u.gen));
                    }
                }
            }
            UpstreamFate::Reuse | UpstreamFate::Close => {
                if let Some(c) = self.clients.get_mut(owner.client).filter(|_| client_alive) {
                    c.links.retain(|&(ex, _)| ex != owner.exchange);
                }
                // Request bytes still queued mean the origin answered before
                // reading the whole request: the connection is not clean.
                let clean = fate == UpstreamFate::Reuse && u.sending == 0 && u.out.is_empty();
                if self.pool.release(u.upstream, conn, clean) {
                    u.state = UpState::Idle;
                    u.reused = false;
                    u.deadline = None;
                    // Keep reading while idle, to notice the origin closing.
                    u.recv.paused = false;
                    u.recv
                        .apply(&mut self.reactor, u.fd, token(SIDE_UPSTREAM, conn, u.gen));
                } else {
                    self.discard_upstream(conn);
                }
                self.serve_waiters();
            }
        }
        if client_alive {
            self.drive_client(owner.client);
        }
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
                flush_upstream(&mut self.reactor, conn, u);
                if let UpState::Busy { owner, .. } = u.state {
                    if self
                        .clients
                        .get(owner.client)
                        .is_some_and(|c| c.gen == owner.client_gen)
                    {
                        // Room on this connection: hand more of the body.
                        self.drive_client(owner.client);
                    }
                }
            }
            Err(e) => {
                let state = u.state;
                let reused = u.reused;
                self.close_upstream(conn);
                if let UpState::Busy { owner, .. } = state {
                    self.fail_exchange(owner, ProxyError::UpstreamIo(e), reused);
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
            UpState::Connecting { .. } => self.pool.connect_abandoned(u.upstream),
            UpState::Busy { .. } => self.pool.active_closed(u.upstream),
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
        if u.recv.armed && !u.recv.cancelling {
            self.reactor.cancel_recv(token(SIDE_UPSTREAM, conn, u.gen));
        }
        self.reactor.close(u.fd);
    }

    fn on_tick(&mut self) {
        let now = self.now;
        let expired: Vec<ConnId> = self
            .upconns
            .iter()
            .filter(|(_, u)| u.deadline.is_some_and(|d| now >= d))
            .map(|(i, _)| i)
            .collect();
        for conn in expired {
            let u = &self.upconns[conn];
            match u.state {
                UpState::Connecting { owner } => {
                    self.pool.connect_failed(u.upstream, now);
                    self.discard_upstream(conn);
                    self.fail_exchange(owner, ProxyError::ConnectTimeout, false);
                }
                UpState::Busy {
                    owner,
                    responded: false,
                } => {
                    self.close_upstream(conn);
                    self.fail_exchange(owner, ProxyError::ResponseTimeout, false);
                }
                UpState::Busy { .. } | UpState::Idle => {}
            }
        }
    }
}

/// Start a send of `u`'s queued request bytes if none is in flight.
fn flush_upstream(reactor: &mut Reactor, conn: ConnId, u: &mut UpstreamConn) {
    if u.sending == 0 && !u.out.is_empty() {
        let spare = std::mem::take(&mut u.spare);
        let buf = std::mem::replace(&mut u.out, spare);
        u.sending = buf.len();
        reactor.send(u.fd, buf, 0, token(SIDE_UPSTREAM, conn, u.gen));
    }
}
