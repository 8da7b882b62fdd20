//! The worker's dispatch core: every connection table and every decision of
//! one worker, and no I/O.
//!
//! The driver (`worker/mod.rs`) turns each ring completion into an
//! [`Input`], hands it to [`Core::handle`], and carries out the [`Action`]s
//! the core queued (arm a recv, send these bytes, connect, close). The core
//! never touches the reactor, so every transition can be driven by a unit
//! test with made-up inputs (`worker/tests.rs`).
//!
//! # No recursion
//! A handler that causes more work queues a [`Task`] instead of doing it:
//! a client whose exchange failed is *woken* (its agent may now have a
//! retry or an error page ready), and waiters are served once capacity
//! frees up. [`Core::handle`] drains the task queue before it returns, so
//! each step sees consistent tables: a client closed by one step is simply
//! not found by the next. Waking is idempotent (a flag on the connection),
//! so a burst of events for one client drives it once.
//!
//! The client side is in `client.rs`, the upstream side in `upstream.rs`,
//! placing exchanges (and the late-front rule) in `placement.rs`, deadlines
//! in `timers.rs`.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use super::backends::Backends;
use super::client::ClientConn;
use super::handles::{Handle, Table};
use super::placement::Batch;
use super::upconn::UpstreamConn;
use crate::agent::AgentShared;
use crate::codec::date::http_date;
use crate::config::Config;
use crate::metrics::{ConnInfo, ConnOrder, Figures, UpstreamFigures};
use crate::reactor::{RecvBuf, Seg};
use crate::session::ExchangeId;

/// A client connection of this worker.
pub(crate) type ClientId = Handle<ClientConn>;
/// An upstream connection of this worker.
pub(crate) type ConnId = Handle<UpstreamConn>;

/// This worker's pool: it knows connections and waiting clients by the
/// worker's own handles.
pub(crate) type Pool = crate::pool::Pool<ConnId, ClientId>;
pub(crate) type Waiter = crate::pool::Waiter<ClientId>;
pub(crate) type Placement = crate::pool::Placement<ConnId>;

/// Which side a ring token names.
const SIDE_UPSTREAM: u64 = 1 << 55;

/// The connection a ring operation was submitted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    Client(ClientId),
    Upstream(ConnId),
}

impl Target {
    /// The `user` token of the reactor's operations for this connection.
    pub(crate) fn token(self) -> u64 {
        match self {
            Target::Client(c) => c.to_bits(),
            Target::Upstream(u) => SIDE_UPSTREAM | u.to_bits(),
        }
    }

    /// The connection a token names.
    pub(crate) fn of(token: u64) -> Target {
        if token & SIDE_UPSTREAM != 0 {
            Target::Upstream(Handle::from_bits(token & !SIDE_UPSTREAM))
        } else {
            Target::Client(Handle::from_bits(token))
        }
    }
}

/// The outcome of one multishot recv completion.
#[derive(Debug)]
pub(crate) struct Recv<'a> {
    /// Bytes received (0: end of stream) or a negative errno.
    pub result: i32,
    /// The multishot is still armed.
    pub more: bool,
    /// The bytes (empty unless `result > 0`).
    pub data: &'a [u8],
    /// The buffer holding them, which the core gives back (an action) or
    /// forwards inside a segment.
    pub buf: Option<RecvBuf>,
}

/// What happened, as the core hears it.
#[derive(Debug)]
pub(crate) enum Input<'a> {
    /// A client connection was accepted from `peer`.
    /// A connection accepted on listen address `listen` (an index into
    /// the configuration's).
    Accepted {
        fd: OwnedFd,
        peer: SocketAddr,
        listen: usize,
    },
    /// A client's multishot recv completed.
    ClientRecv { client: ClientId, recv: Recv<'a> },
    /// An upstream connection's multishot recv completed.
    UpstreamRecv { conn: ConnId, recv: Recv<'a> },
    /// A send to a client is over (all bytes, or failed); `lent` receive
    /// buffers it carried went back to the kernel.
    ClientSent {
        client: ClientId,
        result: io::Result<()>,
        spare: Option<Vec<u8>>,
        lent: usize,
    },
    /// A send to an upstream is over.
    UpstreamSent {
        conn: ConnId,
        result: io::Result<()>,
        spare: Option<Vec<u8>>,
    },
    /// A connect finished.
    Connected {
        conn: ConnId,
        result: io::Result<()>,
    },
    /// The 100 ms tick (deadlines, the `Date`).
    Tick,
}

/// What the driver must do, in order.
#[derive(Debug)]
pub(crate) enum Action {
    /// Arm a multishot recv (`once` 0), or one that takes at most `once`
    /// bytes in all.
    Recv { fd: RawFd, token: u64, once: u32 },
    /// Cancel the multishot recv armed on `fd` with `token`.
    CancelRecv { fd: RawFd, token: u64 },
    /// Send all of `buf`.
    Send { fd: RawFd, token: u64, buf: Vec<u8> },
    /// Send `segs` in one `sendmsg`.
    SendSegs {
        fd: RawFd,
        token: u64,
        segs: Vec<Seg>,
    },
    /// Connect `fd` to `addr`.
    Connect {
        fd: RawFd,
        token: u64,
        addr: SocketAddr,
    },
    /// Cancel every operation on `fd` (before its close).
    CancelAll { fd: RawFd },
    /// Shut `fd`'s write side.
    Shutdown { fd: RawFd },
    /// Close `fd` (once no operation names it: see `reactor::fds`).
    Close { fd: OwnedFd },
    /// Give the idle client connection on `fd` to the heir of a retiring
    /// worker (no operation names `fd` any more; see
    /// [`Core::begin_retire`]).
    HandOver {
        fd: OwnedFd,
        peer: SocketAddr,
        connected_at: std::time::SystemTime,
        requests: u64,
    },
    /// Give a receive buffer back.
    Recycle(RecvBuf),
}

/// Work a handler leaves for later in the same step (see the module doc).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Task {
    /// Carry out whatever the client's agent is ready for.
    Drive(ClientId),
    /// Give freed capacity to waiting exchanges.
    ServeWaiters,
}

/// Opens a TCP socket for `addr` (the driver's `socket()`; tests pass one
/// that opens no socket). `usize`: the buffer size (unused by sockets
/// today; kept for a transport that sizes its buffers).
pub(crate) type OpenSocket = fn(SocketAddr, usize) -> io::Result<OwnedFd>;

/// The access log as the core writes it: lines go into `buf`, which the
/// driver hands to the logger thread on the tick (see `crate::access_log`).
pub(crate) struct LogBuffer {
    pub format: crate::access_log::Format,
    pub buf: Vec<u8>,
}

/// How long a retiring worker keeps an idle client connection for its
/// next request.
pub(crate) const RETIRE_IDLE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// A seed for a policy's random numbers: different in every worker and
/// every run.
fn policy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

/// One worker's connections and decisions.
pub(crate) struct Core {
    pub(super) cfg: Arc<Config>,
    pub(super) clients: Table<ClientConn>,
    pub(super) upconns: Table<UpstreamConn>,
    /// A pool per backend (see `backends.rs`).
    pub(super) pools: Backends,
    /// Exchanges ready while the idle pass ran: placed once it is over.
    pub(super) deferred: Vec<(ClientId, ExchangeId)>,
    /// The time of the current turn.
    pub(super) now: Instant,
    /// Event-loop turns so far.
    pub(super) turn: u64,
    /// Where the shareable requests being placed may go.
    pub(super) batch: Option<Batch>,
    /// The turn's completions for idle upstream connections are being
    /// handled: nothing may be placed until they all are.
    pub(super) idle_pass: bool,
    /// What every agent of this worker shares (date, buffer stash), and
    /// the second the date shows.
    pub(super) shared: Rc<AgentShared>,
    pub(super) date_secs: u64,
    /// Connections to flush when the turn ends.
    pub(super) dirty_clients: Vec<ClientId>,
    pub(super) dirty_upconns: Vec<ConnId>,
    /// Upstream connections that got a second exchange (checked for a late
    /// front each turn; entries that no longer apply are dropped there).
    pub(super) shared_conns: Vec<ConnId>,
    /// Receive buffers lent to sends now, and the most that may be: the
    /// rest stay for receiving, so clients that stop reading cannot starve
    /// the worker.
    pub(super) lent: usize,
    pub(super) lend_cap: usize,
    /// Draining (SIGTERM) or retiring: until when, at the latest.
    pub(super) draining: Option<Instant>,
    /// Retiring, not draining: connections accepted meanwhile are served,
    /// idle ones get a grace (see [`Core::begin_retire`]).
    pub(super) retiring: bool,
    /// Retiring with an heir: client connections go to it as soon as they
    /// have nothing in progress.
    pub(super) handing_over: bool,
    pub(super) open_socket: OpenSocket,
    tasks: VecDeque<Task>,
    serve_queued: bool,
    /// What the driver must do, in order.
    pub(super) actions: Vec<Action>,
    /// Counters (see `crate::metrics`).
    pub(crate) figures: Figures,
    /// The access log, when it is on.
    pub(crate) log: Option<LogBuffer>,
    /// Lines for stderr, taken by the driver on the tick (see
    /// [`Core::take_notices`]).
    pub(super) notices: Vec<String>,
    /// Refusing at `--max-connections` since the refusal counter was this.
    pub(super) refusing_since: Option<u64>,
    /// An instant and the Unix time (ms) it was: to show instants as times.
    epoch: (Instant, u64),
    /// Plaintext decrypted from a TLS connection, on its way to the session
    /// (kept to reuse its capacity).
    pub(super) tls_plain: Vec<u8>,
    /// Ciphertext on its way through rustls (lent to each client stream).
    pub(super) tls_scratch: Vec<u8>,
}

/// `Strict-Transport-Security` as `--hsts` says (for answers over TLS).
fn hsts_rule(cfg: &Config) -> Option<crate::routes::HeaderRules> {
    let secs = cfg.hsts?;
    Some(crate::routes::HeaderRules {
        set: vec![(
            "Strict-Transport-Security".into(),
            format!("max-age={secs}").into(),
        )],
        ..Default::default()
    })
}

/// The affinity cookie's name and the hand-off field's name, as `cfg`
/// says (what the agent takes out of each request head).
fn affinity_fields(cfg: &Config) -> (Option<&'static str>, Option<&'static str>) {
    let a = cfg.affinity.as_ref();
    (a.map(|a| a.cookie), a.and_then(|a| a.peer_header))
}

impl Core {
    /// A core for a worker whose ring has `ring_buffers` receive buffers.
    pub(crate) fn new(
        cfg: Arc<Config>,
        ring_buffers: usize,
        now: Instant,
        unix_secs: u64,
        open_socket: OpenSocket,
    ) -> Self {
        let pools = Backends::new(&cfg, policy_seed);
        let shared = AgentShared::default();
        shared.date.set(http_date(unix_secs));
        shared.affinity.set(affinity_fields(&cfg));
        *shared.routes.borrow_mut() = cfg.routes.clone();
        *shared.hsts.borrow_mut() = hsts_rule(&cfg);
        Core {
            cfg,
            clients: Table::with_capacity(1024),
            upconns: Table::with_capacity(256),
            pools,
            deferred: Vec::new(),
            now,
            turn: 0,
            batch: None,
            idle_pass: false,
            shared: Rc::new(shared),
            date_secs: unix_secs,
            dirty_clients: Vec::with_capacity(256),
            dirty_upconns: Vec::with_capacity(64),
            shared_conns: Vec::new(),
            lent: 0,
            // 16 clients streaming 1 MiB bodies lend about half the ring; a
            // quarter forced copies (+10% CPU, 4x the peak RSS).
            lend_cap: ring_buffers * 3 / 4,
            draining: None,
            retiring: false,
            handing_over: false,
            open_socket,
            tasks: VecDeque::new(),
            serve_queued: false,
            actions: Vec::with_capacity(64),
            figures: Figures::default(),
            log: None,
            notices: Vec::new(),
            refusing_since: None,
            // To the millisecond: whole seconds would show connections up
            // to a second early.
            tls_plain: Vec::new(),
            tls_scratch: Vec::new(),
            epoch: (
                now,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(unix_secs * 1000, |d| d.as_millis() as u64),
            ),
        }
    }

    /// Queue an action for the driver.
    pub(super) fn act(&mut self, a: Action) {
        self.actions.push(a);
    }

    /// The actions queued so far, in order (the driver carries them out).
    pub(crate) fn take_actions(&mut self) -> std::vec::Drain<'_, Action> {
        self.actions.drain(..)
    }

    /// Carry out everything the agent of `client` is ready for, once the
    /// current step is over.
    pub(super) fn wake(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(client) {
            if !c.woken {
                c.woken = true;
                self.tasks.push_back(Task::Drive(client));
            }
        }
    }

    /// Give freed capacity to waiting exchanges, once the current step is
    /// over.
    pub(super) fn wake_waiters(&mut self) {
        if !self.serve_queued && (self.pools.has_waiters() || !self.deferred.is_empty()) {
            self.serve_queued = true;
            self.tasks.push_back(Task::ServeWaiters);
        }
    }

    fn run_tasks(&mut self) {
        while let Some(task) = self.tasks.pop_front() {
            match task {
                Task::Drive(client) => {
                    if let Some(c) = self.clients.get_mut(client) {
                        c.woken = false;
                        self.drive_client(client);
                    }
                }
                Task::ServeWaiters => {
                    self.serve_queued = false;
                    self.serve_waiters();
                }
            }
        }
    }

    /// Handle one input, then everything it caused.
    pub(crate) fn handle(&mut self, input: Input<'_>) {
        match input {
            Input::Accepted { fd, peer, listen } => self.on_accept(fd, peer, listen),
            Input::ClientRecv { client, recv } => self.on_client_recv(client, recv),
            Input::UpstreamRecv { conn, recv } => self.on_upstream_recv(conn, recv),
            Input::ClientSent {
                client,
                result,
                spare,
                lent,
            } => {
                self.lent -= lent.min(self.lent);
                self.on_client_sent(client, result, spare);
            }
            Input::UpstreamSent {
                conn,
                result,
                spare,
            } => self.on_upstream_sent(conn, result, spare),
            Input::Connected { conn, result } => self.on_connected(conn, result),
            Input::Tick => self.on_tick(),
        }
        self.run_tasks();
    }

    /// A turn begins at `now`: connections released in earlier turns may be
    /// handed out again.
    pub(crate) fn begin_turn(&mut self, now: Instant) {
        self.now = now;
        self.shared.now.set(now);
        self.turn += 1;
        for pool in self.pools.iter_mut() {
            pool.begin_turn();
        }
    }

    /// The turn's completions for idle upstream connections are handled
    /// first (the driver hands them over between this and
    /// [`Core::end_idle_pass`]), and nothing is placed meanwhile: closing
    /// one frees room, which would serve a waiter, which could take another
    /// idle connection whose own completion is still queued.
    pub(crate) fn begin_idle_pass(&mut self) {
        self.idle_pass = true;
    }

    /// The idle pass is over: waiters may now take what it left.
    pub(crate) fn end_idle_pass(&mut self) {
        self.idle_pass = false;
        self.wake_waiters();
        self.run_tasks();
    }

    /// Whether `token` names an idle upstream connection (whose completion
    /// belongs in [`Core::idle_pass`]).
    pub(crate) fn is_idle_upstream(&self, token: u64) -> Option<ConnId> {
        match Target::of(token) {
            Target::Upstream(conn) => self.upconns.get(conn).filter(|u| u.is_idle()).map(|_| conn),
            Target::Client(_) => None,
        }
    }

    /// The turn is over: late fronts are dealt with, then everything it
    /// produced goes out, one send per dirty socket.
    pub(crate) fn end_turn(&mut self) {
        self.check_late();
        // Waiters whose queue timeout came (the wait was bounded by it).
        let due = self.pools.iter().any(|(i, pool)| {
            let timeout = self.pools.info(i).queue_timeout;
            pool.oldest_waiter()
                .is_some_and(|t| self.now >= t + timeout)
        });
        if due {
            self.expire_waiters();
        }
        self.run_tasks();
        self.start_warmups();
        self.flush_clients();
        self.flush_upstreams();
    }

    /// The worker's counters, with what its sessions keep (HTTP/2).
    pub(crate) fn figures_now(&self) -> crate::metrics::Figures {
        let mut f = self.figures.clone();
        f.h2 = self.shared.h2.get();
        f
    }

    /// Switch to `cfg` (a reload) at this safe point: new exchanges use its
    /// upstreams, weights and limits; exchanges in flight finish where they
    /// are; idle connections of removed upstreams close now, busy ones when
    /// their exchange ends.
    pub(crate) fn reconfigure(&mut self, cfg: Arc<Config>) {
        let close = self.pools.apply(&cfg, self.now, policy_seed);
        self.shared.affinity.set(affinity_fields(&cfg));
        *self.shared.routes.borrow_mut() = cfg.routes.clone();
        *self.shared.hsts.borrow_mut() = hsts_rule(&cfg);
        self.cfg = cfg;
        for conn in close {
            self.discard_upstream(conn);
        }
        self.wake_waiters();
        self.run_tasks();
    }

    /// Upstreams another worker has warm as this one starts (elastic
    /// growth, a restart): warm here too, past their ramp.
    pub(crate) fn seed_warm(&mut self, warm: &[crate::spec::UpstreamId]) {
        for pool in self.pools.iter_mut() {
            pool.seed_warm(warm, self.now);
        }
    }

    /// The checker's readiness verdict on `upstream` (`warmup_check`).
    pub(crate) fn ready(&mut self, upstream: crate::spec::UpstreamId, ready: bool) {
        if let Some(i) = self.pools.of_upstream(upstream) {
            self.pools[i].ready(upstream, ready, self.now);
        }
        self.wake_waiters();
        self.run_tasks();
    }

    /// The health checker says `upstream` is `up` (or not): waiters of an
    /// upstream that went down are placed elsewhere.
    pub(crate) fn health(&mut self, upstream: crate::spec::UpstreamId, up: bool) {
        if let Some(i) = self.pools.of_upstream(upstream) {
            self.pools[i].checked(upstream, up);
        }
        self.wake_waiters();
        self.run_tasks();
    }

    /// Begin a graceful drain (SIGTERM): idle client connections close now;
    /// busy ones get their answers, the last with `Connection: close`, and
    /// close; nothing new is read. After `deadline` whatever is left is
    /// closed.
    pub(crate) fn begin_drain(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        self.for_each_client(|core, client| {
            if let Some(c) = core.clients.get_mut(client) {
                c.session.drain();
            }
            core.wake(client);
        });
        self.run_tasks();
    }

    /// Retire this worker (the supervisor shrinks the pool of workers): it
    /// accepts nothing new (the driver has cancelled its accepts; what the
    /// ring already accepted is served) and gives its client connections
    /// up without closing them under a client that may be sending.
    ///
    /// With an heir (`hand_over`), each connection goes to the heir as
    /// soon as it has nothing in progress: its recv is cancelled, and once
    /// the recv's last completion shows no byte came meanwhile (bytes that
    /// did are a request, served here first), the fd goes over
    /// ([`Action::HandOver`]); what the client sends from then on waits in
    /// the socket for the heir's recv. Connections in the middle of an
    /// exchange follow once it is over. Nothing is closed, nothing says
    /// `Connection: close`.
    ///
    /// Without one, every exchange in progress is finished and its
    /// connection closed after it, and a connection with nothing in
    /// progress gets [`RETIRE_IDLE_GRACE`] for a next request, answered
    /// with `Connection: close`.
    ///
    /// At `deadline` whatever is left is closed.
    pub(crate) fn begin_retire(&mut self, deadline: Instant, hand_over: bool) {
        self.draining = Some(deadline);
        self.retiring = true;
        self.handing_over = hand_over;
        self.for_each_client(|core, client| {
            if let Some(c) = core.clients.get_mut(client) {
                if !hand_over {
                    c.session.close_soon();
                }
                // The grace runs from now.
                c.idle_since = core.now;
            }
            core.wake(client);
        });
        self.run_tasks();
    }

    /// A retiring worker's client connection comes to this one (see
    /// [`Core::begin_retire`]): served from here on like one accepted here.
    pub(crate) fn take_client(
        &mut self,
        fd: OwnedFd,
        peer: SocketAddr,
        connected_at: std::time::SystemTime,
        requests: u64,
    ) {
        // When it was accepted, on this worker's clock.
        let age = std::time::SystemTime::now()
            .duration_since(connected_at)
            .unwrap_or_default();
        let connected = self.now.checked_sub(age).unwrap_or(self.now);
        // (Past its PROXY header, if it had one: that was read here.)
        if let Some(client) = self.add_client(fd, peer, connected, false, None) {
            self.figures.taken_over += 1;
            if let Some(c) = self.clients.get_mut(client) {
                c.session.set_requests(requests);
            }
        }
        self.run_tasks();
    }

    /// Close one in `every` client connections at its next request
    /// boundary (the pool of workers grew: see `Command::Shed`).
    pub(crate) fn shed(&mut self, every: usize) {
        let every = every.max(1);
        let mut i = 0;
        self.for_each_client(|core, client| {
            i += 1;
            if (i - 1) % every != 0 {
                return;
            }
            if let Some(c) = core.clients.get_mut(client) {
                c.session.close_soon();
            }
            core.wake(client);
        });
        self.run_tasks();
    }

    /// Do `f` for every client connection there is now (their handles are
    /// taken first: `f` may close some, or open others).
    pub(super) fn for_each_client(&mut self, mut f: impl FnMut(&mut Core, ClientId)) {
        let all: Vec<ClientId> = self.clients.iter().map(|(h, _)| h).collect();
        for client in all {
            f(self, client);
        }
    }

    /// How long an idle client connection is kept now.
    pub(super) fn idle_timeout(&self) -> std::time::Duration {
        if self.retiring {
            self.cfg.client_idle_timeout.min(RETIRE_IDLE_GRACE)
        } else {
            self.cfg.client_idle_timeout
        }
    }

    /// Whether a drain is over: no client connection left. (Idle upstream
    /// connections are the driver's to close on the way out.)
    pub(crate) fn drained(&self) -> bool {
        self.draining.is_some() && self.clients.is_empty()
    }

    /// The pool's counts agree with the connections (tests): every
    /// upstream's in-flight exchanges are the jobs on its connections.
    #[cfg(test)]
    pub(crate) fn check_counts(&self) {
        for (_, pool) in self.pools.iter() {
            let _ = pool.idle_total(); // checks its own count
            for u in pool.upstreams() {
                let jobs: usize = self
                    .upconns
                    .iter()
                    .filter(|(_, c)| c.upstream == u.spec.id)
                    .map(|(_, c)| c.jobs.len() + Core::mux_exchanges(c))
                    .sum();
                assert_eq!(u.inflight, jobs, "in flight on {}", u.spec.name);
            }
        }
    }

    /// Client connections open (for tests).
    #[cfg(test)]
    pub(crate) fn client_fds_for_tests(&self) -> usize {
        self.clients.len()
    }

    /// Start writing access log lines in `format`.
    pub(crate) fn enable_access_log(&mut self, format: crate::access_log::Format) {
        self.shared.keep_request_lines.set(true);
        self.log = Some(LogBuffer {
            format,
            buf: Vec::with_capacity(64 * 1024),
        });
    }

    /// `at` as milliseconds since the Unix epoch.
    pub(crate) fn unix_ms(&self, at: Instant) -> u64 {
        let (base, base_ms) = self.epoch;
        match at.checked_duration_since(base) {
            Some(d) => base_ms + d.as_millis() as u64,
            None => base_ms.saturating_sub(base.duration_since(at).as_millis() as u64),
        }
    }

    /// Every upstream as this worker sees it.
    pub(crate) fn upstream_figures(&self) -> Vec<UpstreamFigures> {
        self.pools
            .iter()
            .flat_map(|(i, pool)| pool.upstreams().iter().map(move |u| (i, u)))
            .map(|(i, u)| UpstreamFigures {
                backend: self.pools.info(i).name.to_string(),
                id: u.spec.id.0,
                name: u.spec.name.clone(),
                addr: u.spec.addr.to_string(),
                state: u.state(self.now),
                warmth: match u.warm.warmth {
                    crate::pool::warmth::Warmth::Cold => "cold",
                    crate::pool::warmth::Warmth::Warming { .. } => "warming",
                    crate::pool::warmth::Warmth::Warm { .. } => "warm",
                },
                weight: u.spec.weight,
                active: u.active,
                idle: u.idle.len(),
                connecting: u.connecting,
                queued: u.waiting.len(),
                inflight: u.inflight,
                idle_lost: u.idle_lost,
                served: u.served,
                failures: u.failures,
                response_time: u.response_time.clone(),
                last_use_ms: u.last_use.map(|t| self.unix_ms(t)),
            })
            .collect()
    }

    /// What the pool noticed since the last call, as lines for stderr
    /// (passive verdicts, too few upstreams up).
    pub(crate) fn take_notices(&mut self) -> Vec<String> {
        let mut notices = Vec::new();
        for pool in self.pools.iter_mut() {
            notices.extend(pool.take_notices());
        }
        let pools = &self.pools;
        let name = |id| {
            pools
                .of_upstream(id)
                .and_then(|i| pools[i].upstream(id))
                .map_or_else(|| format!("#{}", id.0), |u| u.spec.name.clone())
        };
        let own = std::mem::take(&mut self.notices);
        own.into_iter()
            .chain(notices.into_iter()
            .map(|n| match n {
                crate::pool::Notice::Down {
                    upstream,
                    fails,
                    backoff,
                } => format!(
                    "upstream {} is down after {fails} failure(s) in a row; tried again in {} ms",
                    name(upstream),
                    backoff.as_millis()
                ),
                crate::pool::Notice::Back { upstream } => {
                    format!("upstream {} answers again", name(upstream))
                }
                crate::pool::Notice::Panic { up, live } => format!(
                    "only {up} of {live} upstream(s) up, below --panic-threshold {}%: choosing from all of them",
                    self.cfg.panic_threshold
                ),
                crate::pool::Notice::Calm { up, live } => format!(
                    "{up} of {live} upstream(s) up again: health decides again"
                ),
            }))
            .collect()
    }

    /// Exchanges waiting for an upstream connection.
    pub(crate) fn waiting(&self) -> usize {
        self.pools.waiting()
    }

    /// Client connections open now.
    pub(crate) fn client_count(&self) -> usize {
        self.clients.len()
    }

    /// Upstream connections open now.
    pub(crate) fn upstream_count(&self) -> usize {
        self.upconns.len()
    }

    /// The client connections, least recently used first, at most `limit`.
    pub(crate) fn connections(
        &self,
        worker: usize,
        limit: usize,
        order: ConnOrder,
    ) -> (Vec<ConnInfo>, usize) {
        // Since when each client is busy: the exchange in progress, or the
        // head being read.
        let busy_since = |c: &ClientConn| {
            c.session
                .busy_since()
                .or(c.head_since.filter(|_| c.session.has_partial_head()))
        };
        // Pick the `limit` first by the order's key before building
        // anything: a worker with 100,000 clients must not format them all
        // for a page that shows twenty.
        let mut keyed: Vec<(Instant, ClientId)> = self
            .clients
            .iter()
            .filter_map(|(h, c)| match order {
                ConnOrder::LastUse => Some((c.last_use, h)),
                ConnOrder::Busiest => busy_since(c).map(|t| (t, h)),
            })
            .collect();
        let total = self.clients.len();
        if keyed.len() > limit {
            keyed.select_nth_unstable_by_key(limit, |k| k.0);
            keyed.truncate(limit);
        }
        keyed.sort_unstable_by_key(|k| k.0);
        let list = keyed
            .into_iter()
            .filter_map(|(_, h)| self.clients.get(h))
            .map(|c| {
                let upstream = c
                    .links
                    .first()
                    .and_then(|&(_, conn)| self.upconns.get(conn))
                    .and_then(|u| self.pools[u.pool].upstream(u.upstream))
                    .map(|u| u.spec.name.clone());
                ConnInfo {
                    worker,
                    peer: c.peer.to_string(),
                    state: c.state_name(),
                    protocol: c.session.protocol(),
                    requests: c.session.requests(),
                    connected_ms: self.unix_ms(c.connected),
                    last_use_ms: self.unix_ms(c.last_use),
                    busy_ms: busy_since(c)
                        .map(|t| self.now.saturating_duration_since(t).as_millis() as u64),
                    upstream,
                }
            })
            .collect();
        (list, total)
    }
}
