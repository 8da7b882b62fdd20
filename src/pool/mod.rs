//! The upstream pool of one worker: per-upstream connection counts, idle
//! keep-alive connections, health, the waiting lists, per-route service
//! times, and the policy that picks an upstream.
//!
//! The pool tracks connections by the worker's id for them (its `C`) and
//! never touches sockets: the worker opens, closes and reports. Every count
//! changes in exactly one place, so `active + connecting + idle` is the
//! number of open connections to an upstream, which `max_conns` bounds.
//!
//! # One client per connection
//! A connection carries exchanges of one client connection at a time; the
//! pool hands out idle connections one exchange after another and never a
//! busy one. (Pipelining different clients' requests on one origin
//! connection was measured and removed: a stray byte from the origin became
//! another user's response, and a fast request waited behind another
//! user's slow one. A client's own pipelined requests may still share a
//! connection; that is the worker's decision, by route, see [`routes`].)
//!
//! # Idle connections
//! Reused last in, first out by default (`--idle-reuse lifo`): the most
//! recently used connection is the least likely to have hit the origin's
//! idle timeout, and the ones at the bottom of the stack may time out and
//! be dropped, which lets the pool shrink after a burst. `fifo` takes the
//! one idle the longest, which keeps every connection warm and so keeps
//! more of them open (see the README for both measured).
//!
//! A connection released in one event-loop turn is not handed out again in
//! that turn, nor before [`QUARANTINE`] has passed. The worker handles each
//! turn's completions for idle connections before it places anything, so
//! bytes an origin wrote after a response's end (a body after a HEAD
//! answer, a Content-Length that undercounts, a response written twice)
//! that arrive within that time are seen on the idle connection, which is
//! then closed, instead of being read as the next exchange's response.
//! Bytes that arrive later still, once the connection carries another
//! exchange, cannot be told from its response; nginx and HAProxy, which
//! close an idle connection when it turns readable, have the same window.
//!
//! Across upstreams, a worker keeps at most `max_idle` idle connections
//! (`--max-idle`, nginx's `keepalive N`): past it, the one idle the longest,
//! whatever its upstream, is closed. With thousands of upstreams a pool
//! per upstream alone would keep one or more connections to each (10,000
//! upstreams ran into a 20,000-descriptor limit).
//!
//! `pool_size` bounds the idle connections kept for the upstream idle
//! timeout, not the ones kept at all: a connection released while that many
//! are already idle is kept for [`SURPLUS_LINGER`] instead of being closed
//! at once. Under bursty load (64 clients pipelining 8 requests each need
//! 512 connections for a moment, then none) closing the surplus at once
//! would make every burst connect again, paying a handshake per request and
//! filling the origin's accept queue; lingering lets the next burst reuse
//! them, and the pool still shrinks back within a second of the load
//! dropping. The kept-long ones sit lowest in the LIFO stack (each was
//! pushed at a position below `pool_size`), so there are never more than
//! `pool_size` of them.
//!
//! # Opening connections
//! A connection is *opening* from its connect until the origin's first
//! response byte on it, for at most [`OPENING_FOR`]: a finished handshake
//! only says the origin's kernel queued it, not that the origin accepted
//! it. At most `max_connecting` connections to one upstream are opening at
//! once; other requests wait for a connection to free up, or for an opening
//! one to answer or age. An origin that answers quickly gets new
//! connections as fast as it answers; one that does not (a cold or slow
//! origin, or a far one) gets `max_connecting` per [`OPENING_FOR`], so its
//! accept queue never receives more than that at once. Without a bound one
//! client's 16 pipelined requests opened 16 connections at the same moment
//! and overflowed the 5-deep accept queue of Python's `http.server`; the
//! dropped SYNs came back a second later. The age limit keeps an origin
//! whose first requests are slow from holding everyone else back for long.
//!
//! # Never refuse without trying
//! When fewer than `panic_threshold` percent of the upstreams are up, the
//! verdicts are too likely wrong (or too costly) to follow: every upstream
//! is chosen from, down ones included, as Envoy does below its panic
//! threshold. An upstream that is really gone costs a connect failure and
//! a retry elsewhere; one that is back gets its traffic at once. A single
//! upstream is never refused for failures of traffic alone (only the
//! health checker's verdict can take it out, and only with the threshold
//! at 0). Each worker notices entering and leaving this state, and passive
//! verdicts, as [`Notice`]s its driver logs.
//!
//! # Waiting
//! Each upstream has its own FIFO of requests waiting for it (at most
//! `max_queue`, per worker). A request waits when the upstream the policy
//! picked has no room (at `max_conns`, or at `max_connecting` opening
//! connections); for a flexible policy (`wrr`, `least-conn`) only when
//! every live upstream has none. Capacity that frees up goes to the oldest
//! waiter that can use it: a flexible waiter goes wherever there is room,
//! a pinned one (`url-hash`, `random2`) waits for its own upstream. A full
//! queue, or a wait past `--queue-timeout`, is answered by the worker with
//! 503. Waiters of an upstream that goes down are placed again.

pub mod health;
pub mod least_conn;
pub mod maglev;
pub mod policy;
pub mod random2;
pub mod routes;
pub mod url_hash;
pub mod warmth;
pub mod wrr;

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::spec::{IdleReuse, PoolSettings, UpstreamId, UpstreamSpec};
use health::Health;
use policy::{Candidate, Change, Policy, RequestKey};
use routes::{RouteKey, Routes};
use warmth::WarmUp;

/// What the pool needs of the worker's ids (for a connection, `C`; for a
/// waiting request's client, `W`): values it keeps, compares and hands
/// back, never looks into.
pub trait Key: Copy + Eq + std::fmt::Debug {}

impl<T: Copy + Eq + std::fmt::Debug> Key for T {}

/// How long a connection released beyond `pool_size` idle ones is kept
/// for a burst to reuse before it is closed.
pub const SURPLUS_LINGER: Duration = Duration::from_secs(1);

/// Upstreams one worker warms up at once (each with its `warm_conns`
/// connections): with thousands of cold upstreams, warming every one a
/// request was kept away from opened 8,000 connections within 2 s and ran
/// into the descriptor limit. See [`Pool::warm_chosen`].
pub const MAX_WARMING: usize = 8;

/// What the pool noticed that the worker says on stderr (its driver takes
/// them with [`Pool::take_notices`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// Failures of traffic took `upstream` out of rotation for `backoff`.
    Down {
        upstream: UpstreamId,
        fails: u32,
        backoff: Duration,
    },
    /// An upstream taken out by traffic answered again.
    Back { upstream: UpstreamId },
    /// `up` of `live` upstreams are up, below the threshold: every one is
    /// chosen from now.
    Panic { up: usize, live: usize },
    /// Enough are up again: health decides again.
    Calm { up: usize, live: usize },
}

/// A released connection is not reused for this long (see the module doc):
/// on loopback an origin's second write lands within tens of microseconds
/// of its first.
pub const QUARANTINE: Duration = Duration::from_micros(200);

/// A connection without an answer yet counts as opening this long after
/// its connect began.
pub const OPENING_FOR: Duration = Duration::from_millis(5);

/// What becomes of a connection whose exchange finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Idle, kept for the upstream idle timeout.
    Keep,
    /// Idle beyond `pool_size`: kept for [`SURPLUS_LINGER`] only.
    Linger,
    /// Not reusable: the caller closes it.
    Close,
}

/// An idle connection and when it was released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Idle<C> {
    /// The connection.
    pub conn: C,
    /// The worker's turn when it went idle: it is not reused in that turn.
    pub turn: u64,
    /// When it went idle: it is not reused before [`QUARANTINE`] passed.
    pub since: Instant,
}

/// A request waiting in an upstream's queue. The pool keeps what placing
/// it again needs; `client` and `exchange` are the worker's and opaque
/// here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Waiter<W> {
    pub client: W,
    pub exchange: u64,
    /// Since when it waits (its queue timeout runs from here).
    pub since: Instant,
    pub key: RequestKey,
    /// A retry: it may not reuse an idle connection.
    pub fresh: bool,
    /// The upstream it failed on, to be avoided if another is up.
    pub avoid: Option<UpstreamId>,
    /// Any upstream with room will do (the policy is flexible); otherwise
    /// it waits for the upstream whose queue it is in.
    pub flexible: bool,
}

/// One origin and its connections in this worker.
#[derive(Debug)]
pub struct Upstream<C = u64, W = u64> {
    /// What the configuration says (its id never changes).
    pub spec: UpstreamSpec,
    /// Gone from the configuration: it takes nothing new, its connections
    /// close as their exchanges end, and it is forgotten once none is left.
    pub removed: bool,
    /// Connections carrying an exchange.
    pub active: usize,
    /// Connections whose connect is in flight.
    pub connecting: usize,
    /// When the connect of each connection the origin has not answered on
    /// yet began, oldest first. (An answer removes the oldest entry rather
    /// than its own: the count stays exact, the ages err towards young,
    /// which only makes the pool more careful.)
    /// INVARIANT: `opening.len() <= connecting + active`.
    pub opening: VecDeque<Instant>,
    /// Exchanges on its connections (what least-conn counts).
    pub inflight: usize,
    /// Requests waiting for it, oldest first (at most `spec.max_queue`).
    pub waiting: VecDeque<Waiter<W>>,
    /// Idle keep-alive connections, most recently used last.
    pub idle: Vec<Idle<C>>,
    /// Multiplexed (HTTP/2) connections carrying exchanges that have room
    /// for more, most recently opened last: a request joins one of them
    /// before anything else (they count as active).
    pub joinable: Vec<C>,
    /// Up or down, and why.
    pub health: Health,
    /// Cold, warming or warm (see [`warmth`]).
    pub warm: WarmUp,
    /// Exchanges this upstream completed.
    pub served: u64,
    /// Failures seen (connects, resets before an answer).
    pub failures: u64,
    /// Request on the wire to first response byte.
    pub response_time: crate::metrics::Histogram,
    /// When it last began answering.
    pub last_use: Option<Instant>,
    /// Idle connections the origin closed (or that failed) while idle.
    pub idle_lost: u64,
}

impl<C: Key, W: Key> Upstream<C, W> {
    fn open(&self) -> usize {
        self.active + self.connecting + self.idle.len()
    }

    /// Takes new requests at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        !self.removed && self.health.is_up(now)
    }

    /// `up`, `down` or `draining` (removed by a reload, finishing).
    pub fn state(&self, now: Instant) -> &'static str {
        if self.removed {
            "draining"
        } else if self.health.is_up(now) {
            "up"
        } else {
            "down"
        }
    }

    fn new(spec: &UpstreamSpec) -> Self {
        Upstream {
            spec: spec.clone(),
            removed: false,
            active: 0,
            connecting: 0,
            opening: VecDeque::new(),
            inflight: 0,
            waiting: VecDeque::new(),
            idle: Vec::new(),
            joinable: Vec::new(),
            health: Health::default(),
            warm: WarmUp::cold(spec.warmup_check.is_some()),
            served: 0,
            failures: 0,
            response_time: crate::metrics::Histogram::default(),
            last_use: None,
            idle_lost: 0,
        }
    }

    /// An idle connection that may be handed out in `turn` at `now`, as its
    /// index in `idle`: the most recently used such one (LIFO) or the one
    /// idle the longest (FIFO).
    fn reusable(&self, turn: u64, now: Instant, order: IdleReuse) -> Option<usize> {
        let ready = |i: &Idle<C>| i.turn < turn && now >= i.since + QUARANTINE;
        match order {
            IdleReuse::Lifo => self.idle.iter().rposition(ready),
            IdleReuse::Fifo => self.idle.iter().position(ready),
        }
    }

    /// Index in `opening` of the first entry that still counts at `now`.
    fn first_recent(&self, now: Instant) -> usize {
        self.opening.partition_point(|&t| t + OPENING_FOR <= now)
    }

    /// Whether another connection may be opened now.
    fn may_connect(&self, max_connecting: usize, now: Instant) -> bool {
        self.open() < self.spec.max_conns && self.opening_now(now) < max_connecting
    }

    fn opening_now(&self, now: Instant) -> usize {
        self.opening.len() - self.first_recent(now)
    }

    /// Whether a retry, which may not reuse an idle connection, may open one
    /// in place of the one idle the longest (idle ones fill the limit).
    fn may_evict_for_retry(&self, max_connecting: usize, now: Instant) -> bool {
        !self.idle.is_empty()
            && self.open() >= self.spec.max_conns
            && self.opening_now(now) < max_connecting
    }
}

/// Where an exchange should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<C = u64> {
    /// Reuse this idle connection to upstream `upstream`.
    Reuse { upstream: UpstreamId, conn: C },
    /// Join this multiplexed connection (it carries other exchanges, and
    /// has room for one more).
    Join { upstream: UpstreamId, conn: C },
    /// Open a new connection to `upstream` (already counted as connecting).
    Connect { upstream: UpstreamId },
    /// Open a new connection to `upstream` (counted as connecting) after
    /// closing idle connection `evict`, which is no longer counted: a retry
    /// must not reuse an idle connection, and idle ones filled the limit.
    ConnectEvicting { upstream: UpstreamId, evict: C },
    /// No room now: wait in `upstream`'s queue ([`Pool::enqueue`]). For a
    /// flexible policy every live upstream is full and this is the one it
    /// would have chosen; for a pinned one it is the one it chose.
    Wait { upstream: UpstreamId },
    /// Every upstream is down.
    Unavailable,
}

/// Why a request could not join a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRefused {
    /// The queue holds `max_queue` requests.
    Full,
    /// The upstream is gone.
    Gone,
}

/// One worker's view of the upstream pool.
pub struct Pool<C = u64, W = u64> {
    upstreams: Vec<Upstream<C, W>>,
    policy: Box<dyn Policy>,
    settings: PoolSettings,
    /// The worker's current turn (see [`Pool::begin_turn`]).
    turn: u64,

    /// Service times per route.
    routes: Routes,
    /// Scratch space for the policy's view.
    candidates: Vec<Candidate>,
    /// Cold upstreams a request was kept away from, to warm up now (see
    /// [`Pool::take_to_warm`]).
    to_warm: Vec<UpstreamId>,
    /// Indexes of the cold upstreams the last `fill_candidates` kept from
    /// taking anything (a warm peer is up): the policy may still have
    /// chosen one of them (see [`Pool::warm_chosen`]).
    masked_cold: Vec<usize>,
    /// Too few upstreams are up: every one is chosen from (as of the last
    /// placement; see the module doc).
    panicking: bool,
    /// For the driver's log (see [`Notice`]).
    notices: Vec<Notice>,
    /// Idle connections in all upstreams' `idle` lists.
    /// INVARIANT: `idle_total == upstreams.map(|u| u.idle.len()).sum()`.
    idle_total: usize,
    /// Idle connections closed to stay within `max_idle`: the caller
    /// closes them ([`Pool::take_evicted`]).
    evicted: Vec<C>,
    /// Where each upstream is in `upstreams` (every lookup by id is on the
    /// data path: with 10,000 upstreams a linear search cost more than
    /// the rest of a request).
    /// INVARIANT: `index[&u.spec.id] == i` for `upstreams[i]`, and nothing
    /// else is in it.
    index: std::collections::HashMap<UpstreamId, usize>,
    /// Some upstream is removed but still has connections or waiters.
    any_removed: bool,
    /// Requests waiting in all queues.
    /// INVARIANT: `waiters == upstreams.map(|u| u.waiting.len()).sum()`.
    waiters: usize,
    /// Whether too few are up and whether there is a single upstream, as
    /// of the turn it was worked out in (see [`Pool::panic_now`]).
    panic_at: Option<(u64, bool, bool)>,
    /// Upstreams in the configuration, and those of them a verdict may
    /// hold down (passive or active): while none is, nothing is counted
    /// per placement.
    live: usize,
    suspects: usize,
    /// Every connection released idle, oldest first, as (when, upstream,
    /// connection): the one idle the longest across upstreams, for
    /// `max_idle`. Entries whose connection was reused or closed since are
    /// skipped when met, and dropped whenever the list outgrows twice the
    /// idle connections (see [`Pool::evict_oldest_idle`]).
    /// `(when, turn, upstream, connection)`: the turn tells a connection's
    /// current idle period from an earlier one (a connection is never
    /// released twice in one turn).
    idle_order: VecDeque<(Instant, u64, UpstreamId, C)>,
}

impl<C: Key, W: Key> Pool<C, W> {
    /// A pool over `specs` with `settings`, choosing with `policy`.
    pub fn new(specs: &[UpstreamSpec], settings: PoolSettings, policy: Box<dyn Policy>) -> Self {
        let mut pool = Pool {
            upstreams: specs.iter().map(Upstream::new).collect(),
            policy,
            settings: PoolSettings {
                max_connecting: settings.max_connecting.max(1),
                ..settings
            },
            turn: 1,
            routes: Routes::default(),
            candidates: Vec::with_capacity(specs.len()),
            to_warm: Vec::new(),
            masked_cold: Vec::new(),
            panicking: false,
            notices: Vec::new(),
            idle_total: 0,
            evicted: Vec::new(),
            index: Default::default(),
            any_removed: false,
            waiters: 0,
            panic_at: None,
            live: 0,
            suspects: 0,
            idle_order: VecDeque::new(),
        };
        pool.reindex();
        pool.announce_all();
        pool
    }

    /// Tell the policy about every upstream still in the configuration.
    fn announce_all(&mut self) {
        for u in self.upstreams.iter().filter(|u| !u.removed) {
            self.policy.changed(Change::Added {
                id: u.spec.id,
                name: &u.spec.name,
                weight: u.spec.weight,
            });
        }
    }

    /// Choose with `policy` from now on (a reload changed `--balance`).
    pub fn set_policy(&mut self, policy: Box<dyn Policy>) {
        self.policy = policy;
        self.announce_all();
    }

    /// The upstreams and their counts.
    pub fn upstreams(&self) -> &[Upstream<C, W>] {
        &self.upstreams
    }

    /// The upstream with id `id`, if this worker still knows it.
    pub fn upstream(&self, id: UpstreamId) -> Option<&Upstream<C, W>> {
        self.index.get(&id).map(|&i| &self.upstreams[i])
    }

    fn get(&mut self, id: UpstreamId) -> Option<&mut Upstream<C, W>> {
        let i = *self.index.get(&id)?;
        Some(&mut self.upstreams[i])
    }

    /// Where `id` is in `upstreams`.
    fn position(&self, id: UpstreamId) -> Option<usize> {
        self.index.get(&id).copied()
    }

    /// Rebuild `index` after `upstreams` changed shape.
    fn reindex(&mut self) {
        self.index = self
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, u)| (u.spec.id, i))
            .collect();
        self.any_removed = self.upstreams.iter().any(|u| u.removed);
        self.live = self.upstreams.iter().filter(|u| !u.removed).count();
        self.suspects = self.upstreams.iter().filter(|u| Pool::suspect(u)).count();
        self.panic_at = None;
    }

    /// A verdict may hold `u` down (until an answer or the checker clears
    /// it).
    fn suspect(u: &Upstream<C, W>) -> bool {
        !u.removed && (u.health.down_until.is_some() || u.health.checked_down)
    }

    /// `was` said whether `id` was a suspect before a health change.
    fn resuspect(&mut self, id: UpstreamId, was: bool) {
        let now = self.upstream(id).is_some_and(Pool::suspect);
        match (was, now) {
            (false, true) => self.suspects += 1,
            (true, false) => self.suspects -= 1,
            _ => {}
        }
        self.panic_at = None;
    }

    /// Switch to a new upstream set (a reload): upstreams whose id is still
    /// there take its weight and limits and keep their connections, counts,
    /// queue and health; new ones start empty; the others are marked
    /// removed. Returns the idle connections of removed upstreams, which
    /// the caller closes now (busy ones close when their exchange ends, see
    /// [`Pool::release`]); their waiters are left for
    /// [`Pool::take_stranded`].
    pub fn apply(
        &mut self,
        specs: &[UpstreamSpec],
        settings: PoolSettings,
        now: Instant,
    ) -> Vec<C> {
        self.settings = PoolSettings {
            max_connecting: settings.max_connecting.max(1),
            ..settings
        };
        let mut close = Vec::new();
        for u in &mut self.upstreams {
            match specs.iter().find(|s| s.id == u.spec.id) {
                Some(s) => {
                    if u.removed {
                        // Back in the configuration: cold, like any upstream
                        // a reload adds.
                        u.warm = WarmUp::cold(s.warmup_check.is_some());
                        self.policy.changed(Change::Added {
                            id: s.id,
                            name: &s.name,
                            weight: s.weight,
                        });
                    } else if s.weight != u.spec.weight {
                        self.policy.changed(Change::Reweighted {
                            id: s.id,
                            weight: s.weight,
                        });
                    }
                    if !u.removed && s.warmup_check.is_some() != u.spec.warmup_check.is_some() {
                        u.warm.check_changed(s.warmup_check.is_some(), now);
                    }
                    if s.tls != u.spec.tls || s.protocol != u.spec.protocol {
                        // Its idle connections speak (or do not speak) TLS,
                        // or to another name: none fits what is asked now.
                        self.idle_total -= u.idle.len();
                        close.extend(u.idle.drain(..).map(|i| i.conn));
                        // Busy ones finish what they carry, and take no more.
                        u.joinable.clear();
                    }
                    u.spec = s.clone();
                    u.removed = false;
                }
                None => {
                    if !u.removed {
                        self.policy.changed(Change::Removed { id: u.spec.id });
                    }
                    u.removed = true;
                    u.joinable.clear();
                    self.idle_total -= u.idle.len();
                    close.extend(u.idle.drain(..).map(|i| i.conn));
                }
            }
        }
        for s in specs {
            if !self.index.contains_key(&s.id) {
                self.index.insert(s.id, self.upstreams.len());
                self.upstreams.push(Upstream::new(s));
                self.policy.changed(Change::Added {
                    id: s.id,
                    name: &s.name,
                    weight: s.weight,
                });
            }
        }
        self.reindex();
        self.forget_removed();
        close
    }

    /// Drop removed upstreams nothing refers to any more.
    fn forget_removed(&mut self) {
        if !self.any_removed {
            return;
        }
        let before = self.upstreams.len();
        self.upstreams
            .retain(|u| !u.removed || u.open() > 0 || !u.waiting.is_empty());
        if self.upstreams.len() != before {
            self.reindex();
        }
    }

    /// A new event-loop turn begins: connections released in earlier turns
    /// may be handed out again.
    /// Let go of every idle connection (their first bytes no longer fit
    /// what the backend sends: `send_proxy` changed). The caller closes
    /// them.
    pub fn close_idle(&mut self) -> Vec<C> {
        let mut close = Vec::new();
        for u in &mut self.upstreams {
            self.idle_total -= u.idle.len();
            close.extend(u.idle.drain(..).map(|i| i.conn));
        }
        close
    }

    pub fn begin_turn(&mut self) {
        self.turn += 1;
    }

    /// When the next idle connection still in quarantine may be reused (a
    /// waiter may want the loop to wake then), if any is.
    pub fn next_quarantine_end(&self, now: Instant) -> Option<Instant> {
        self.upstreams
            .iter()
            .flat_map(|u| {
                // Newest last: the ones still held are at the end.
                u.idle
                    .iter()
                    .rev()
                    .take_while(|i| i.turn >= self.turn || now < i.since + QUARANTINE)
            })
            .map(|i| (i.since + QUARANTINE).max(now))
            .min()
    }

    /// Whether too few upstreams are up (see the module doc), noticing a
    /// change; and whether there is a single upstream.
    fn panic_now(&mut self, now: Instant) -> (bool, bool) {
        // Once per turn (or after a health change): it counts every
        // upstream.
        if let Some((turn, panic, single)) = self.panic_at {
            if turn == self.turn {
                return (panic, single);
            }
        }
        if self.suspects == 0 {
            // Every upstream is up: nothing to count.
            if self.panicking {
                self.panicking = false;
                let live = self.live;
                self.notices.push(Notice::Calm { up: live, live });
            }
            return (false, self.live == 1);
        }
        let live = self.live;
        let up = self.upstreams.iter().filter(|u| u.is_up(now)).count();
        let threshold = usize::from(self.settings.panic_threshold);
        let panic = live > 0 && up * 100 < threshold * live;
        if panic != self.panicking {
            self.panicking = panic;
            self.notices.push(if panic {
                Notice::Panic { up, live }
            } else {
                Notice::Calm { up, live }
            });
        }
        self.panic_at = Some((self.turn, panic, live == 1));
        (panic, live == 1)
    }

    /// Whether `u` may take a request at `now`: it is up, or too few are
    /// (`panic`), or it is the only one and only traffic said down.
    fn takes(u: &Upstream<C, W>, now: Instant, panic: bool, single: bool) -> bool {
        u.is_up(now) || !u.removed && (panic || single && !u.health.checked_down)
    }

    /// Whether the last placement found too few upstreams up.
    pub fn panicking(&self) -> bool {
        self.panicking
    }

    /// What was noticed since the last call (see [`Notice`]).
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// The policy's view of every upstream for a request that is a retry
    /// (`fresh`) or should avoid `avoid`.
    fn fill_candidates(&mut self, now: Instant, fresh: bool, avoid: Option<UpstreamId>) {
        self.candidates.clear();
        let (turn, s) = (self.turn, self.settings);
        let (panic, single) = self.panic_now(now);
        // While a warm upstream is up, cold ones take nothing: they warm up
        // in the background (see [`warmth`]).
        let warm_peer = self
            .upstreams
            .iter()
            .any(|u| u.is_up(now) && u.warm.is_warm());
        self.masked_cold.clear();
        for (i, u) in self.upstreams.iter().enumerate() {
            let mut up = Pool::takes(u, now, panic, single);
            if up && warm_peer && !u.warm.is_warm() {
                up = false;
                self.masked_cold.push(i);
            }
            let reuse =
                !u.joinable.is_empty() || !fresh && u.reusable(turn, now, s.idle_reuse).is_some();
            let evict = fresh && u.may_evict_for_retry(s.max_connecting, now);
            self.candidates.push(Candidate {
                id: u.spec.id,
                weight: u
                    .warm
                    .effective_weight(u.spec.weight, u.spec.slow_start, now),
                inflight: u.inflight,
                queued: u.waiting.len(),
                up,
                room: up && (reuse || evict || u.may_connect(s.max_connecting, now)),
            });
        }
        if let Some(a) = avoid {
            // A preference: the failed upstream is left out only while
            // another one can take the request now.
            let others = self.candidates.iter().any(|c| c.room && c.id != a);
            if others {
                for c in self.candidates.iter_mut().filter(|c| c.id == a) {
                    c.up = false;
                    c.room = false;
                }
            }
        }
    }

    /// Choose where an exchange goes. With `fresh`, an idle connection is
    /// not reused (a retry after a reused connection failed); `avoid` is
    /// left out while another upstream is up (the one a retry failed on).
    pub fn place(
        &mut self,
        key: RequestKey,
        now: Instant,
        fresh: bool,
        avoid: Option<UpstreamId>,
    ) -> Placement<C> {
        self.fill_candidates(now, fresh, avoid);
        self.warm_chosen(key, now);
        if !self.candidates.iter().any(|c| c.up) {
            return Placement::Unavailable;
        }
        let i = if self.policy.flexible() {
            // Any upstream with room will do; the queue only when none has.
            let mut masked = false;
            for c in &mut self.candidates {
                if c.up && !c.room {
                    c.up = false;
                    masked = true;
                }
            }
            match self.policy.pick(&self.candidates, key) {
                Some(i) => i,
                None => {
                    if masked {
                        self.fill_candidates(now, fresh, avoid);
                    }
                    let i = self.policy.pick(&self.candidates, key).unwrap_or(0);
                    return Placement::Wait {
                        upstream: self.upstreams[i].spec.id,
                    };
                }
            }
        } else {
            match self.policy.pick(&self.candidates, key) {
                Some(i) => i,
                None => return Placement::Unavailable,
            }
        };
        self.take(i, now, fresh)
    }

    /// Place on upstream `id` and no other (a session's home): reuse,
    /// connect, or wait in its queue; Unavailable if it is gone or down.
    pub fn place_on(&mut self, id: UpstreamId, now: Instant, fresh: bool) -> Placement<C> {
        self.fill_candidates(now, fresh, None);
        let Some(i) = self.position(id) else {
            return Placement::Unavailable;
        };
        if !self.candidates[i].up && !self.upstreams[i].is_up(now) {
            return Placement::Unavailable;
        }
        if !self.candidates[i].room {
            return Placement::Wait { upstream: id };
        }
        self.take(i, now, fresh)
    }

    /// The request for `key` is kept from cold upstreams (a warm peer is
    /// up), but the policy may have chosen one of them: that one starts
    /// warming (seed 003: connect to the chosen upstream in the background,
    /// serve from a ready peer meanwhile), if fewer than [`MAX_WARMING`]
    /// are warming. Cold upstreams no request chose are left alone. (The
    /// policy picks once more for the request itself; for wrr the cold one
    /// has had its turn.)
    fn warm_chosen(&mut self, key: RequestKey, now: Instant) {
        if self.masked_cold.is_empty() {
            return;
        }
        for &i in &self.masked_cold {
            self.candidates[i].up = true;
        }
        let chosen = self.policy.pick(&self.candidates, key);
        for &i in &self.masked_cold {
            self.candidates[i].up = false;
        }
        if let Some(i) = chosen.filter(|i| self.masked_cold.contains(i)) {
            self.warm_up(i, now);
        }
    }

    /// Start warming upstream `i` if it is cold and the budget allows.
    fn warm_up(&mut self, i: usize, now: Instant) {
        if self.upstreams[i].warm.warmth != warmth::Warmth::Cold {
            return;
        }
        // Those still connecting count: one that connected and waits for
        // its readiness check opens nothing more (and may wait for good).
        let warming = self
            .upstreams
            .iter()
            .filter(|u| {
                matches!(u.warm.warmth, warmth::Warmth::Warming { .. }) && !u.warm.connected
            })
            .count();
        if warming < MAX_WARMING && self.upstreams[i].warm.start(now) {
            self.to_warm.push(self.upstreams[i].spec.id);
        }
    }

    /// A session's home `id` is cold while a peer serves its requests:
    /// it starts warming (within [`MAX_WARMING`]).
    pub fn warm_home(&mut self, id: UpstreamId, now: Instant) {
        if let Some(i) = self.position(id) {
            if self.upstreams[i].is_up(now) {
                self.warm_up(i, now);
            }
        }
    }

    /// Whether a warm upstream is up (then cold ones take nothing).
    pub fn warm_peer_up(&self, now: Instant) -> bool {
        self.upstreams
            .iter()
            .any(|u| u.is_up(now) && u.warm.is_warm())
    }

    /// Place on upstream index `i`: reuse, connect, evict for a retry, or
    /// wait.
    fn take(&mut self, i: usize, now: Instant, fresh: bool) -> Placement<C> {
        let s = self.settings;
        let turn = self.turn;
        let u = &mut self.upstreams[i];
        let upstream = u.spec.id;
        if let Some(&conn) = u.joinable.last() {
            // (A retry too: a multiplexed connection with room is live, and
            // one that failed or refused a stream is no longer joinable.)
            return Placement::Join { upstream, conn };
        }
        if !fresh {
            if let Some(at) = u.reusable(turn, now, s.idle_reuse) {
                let conn = u.idle.remove(at).conn;
                self.idle_total -= 1;
                u.active += 1;
                return Placement::Reuse { upstream, conn };
            }
        }
        if u.may_connect(s.max_connecting, now) {
            u.connecting += 1;
            u.opening.push_back(now);
            return Placement::Connect { upstream };
        }
        if fresh && u.may_evict_for_retry(s.max_connecting, now) {
            // Idle connections fill the limit and a retry may not use them:
            // the one idle the longest makes room.
            let evict = u.idle.remove(0).conn;
            self.idle_total -= 1;
            u.connecting += 1;
            u.opening.push_back(now);
            return Placement::ConnectEvicting { upstream, evict };
        }
        Placement::Wait { upstream }
    }

    /// Put `w` in `upstream`'s queue, unless it is full or gone.
    pub fn enqueue(&mut self, upstream: UpstreamId, w: Waiter<W>) -> Result<(), QueueRefused> {
        let Some(u) = self.get(upstream) else {
            return Err(QueueRefused::Gone);
        };
        if u.waiting.len() >= u.spec.max_queue {
            return Err(QueueRefused::Full);
        }
        // Oldest first, also for a waiter placed again (its upstream went
        // down) that has waited longer than some already here.
        let at = u.waiting.partition_point(|q| q.since <= w.since);
        u.waiting.insert(at, w);
        self.waiters += 1;
        Ok(())
    }

    /// Whether the policy lets a request go to any upstream with room.
    pub fn flexible(&self) -> bool {
        self.policy.flexible()
    }

    /// Whether any request waits.
    pub fn has_waiters(&self) -> bool {
        self.waiters > 0
    }

    /// Requests waiting in every queue.
    pub fn waiting(&self) -> usize {
        debug_assert_eq!(
            self.waiters,
            self.upstreams
                .iter()
                .map(|u| u.waiting.len())
                .sum::<usize>()
        );
        self.waiters
    }

    /// The oldest waiter that can be placed now, placed, taken out of its
    /// queue. Queues are served oldest head first; a flexible waiter goes
    /// wherever the policy finds room, a pinned one only to its upstream.
    /// Waiters `alive` rejects (their client or exchange is gone) are
    /// dropped on the way. `Placement::Unavailable` means every upstream
    /// is down: the caller answers it.
    pub fn next_servable(
        &mut self,
        now: Instant,
        mut alive: impl FnMut(&Waiter<W>) -> bool,
    ) -> Option<(Waiter<W>, Placement<C>)> {
        'again: loop {
            let mut heads: Vec<(Instant, usize)> = self
                .upstreams
                .iter()
                .enumerate()
                .filter_map(|(i, u)| u.waiting.front().map(|w| (w.since, i)))
                .collect();
            heads.sort_unstable();
            let mut flexible_blocked = false;
            for (_, i) in heads {
                let w = *self.upstreams[i].waiting.front().expect("a head");
                if !alive(&w) {
                    self.upstreams[i].waiting.pop_front();
                    self.waiters -= 1;
                    continue 'again;
                }
                let placement = if w.flexible {
                    if flexible_blocked {
                        continue;
                    }
                    match self.place(w.key, now, w.fresh, w.avoid) {
                        Placement::Wait { .. } => {
                            flexible_blocked = true;
                            continue;
                        }
                        p => p,
                    }
                } else {
                    self.fill_candidates(now, w.fresh, None);
                    if !self.candidates[i].room {
                        continue;
                    }
                    self.take(i, now, w.fresh)
                };
                // `place` may have dropped nothing: index `i` is still the
                // upstream whose head this is.
                self.upstreams[i].waiting.pop_front();
                self.waiters -= 1;
                self.forget_removed();
                return Some((w, placement));
            }
            return None;
        }
    }

    /// Waiters of upstreams that take nothing now (down, removed by a
    /// reload, or cold while a warm peer is up), out of their queues: the caller places them again (on
    /// another upstream, or answers them when none is up).
    pub fn take_stranded(&mut self, now: Instant) -> Vec<Waiter<W>> {
        let mut out = Vec::new();
        let warm_peer = self.warm_peer_up(now);
        let (panic, single) = self.panic_now(now);
        for u in &mut self.upstreams {
            // A cold upstream's waiters (queued while nothing was warm, or
            // sessions pinned to it) go to the warm peer that is up now.
            let takes = Pool::takes(u, now, panic, single) && (u.warm.is_warm() || !warm_peer);
            if !u.waiting.is_empty() && !takes {
                out.extend(u.waiting.drain(..));
            }
        }
        if !out.is_empty() {
            self.waiters -= out.len();
            out.sort_by_key(|w| w.since);
            self.forget_removed();
        }
        out
    }

    /// Waiters that have waited `timeout` or longer at `now`, out of their
    /// queues.
    pub fn expire_waiters(&mut self, now: Instant, timeout: Duration) -> Vec<Waiter<W>> {
        let mut out = Vec::new();
        for u in &mut self.upstreams {
            while u.waiting.front().is_some_and(|w| now >= w.since + timeout) {
                out.extend(u.waiting.pop_front());
            }
        }
        if !out.is_empty() {
            self.waiters -= out.len();
            self.forget_removed();
        }
        out
    }

    /// When the oldest waiter started waiting, if any waits.
    pub fn oldest_waiter(&self) -> Option<Instant> {
        self.upstreams
            .iter()
            .filter_map(|u| u.waiting.front().map(|w| w.since))
            .min()
    }

    /// Drop every waiter `gone` says belongs to something that went away.
    pub fn forget_waiters(&mut self, mut gone: impl FnMut(&Waiter<W>) -> bool) {
        for u in &mut self.upstreams {
            let before = u.waiting.len();
            u.waiting.retain(|w| !gone(w));
            self.waiters -= before - u.waiting.len();
        }
        self.forget_removed();
    }

    /// The route of `target_hash` on `upstream`.
    pub fn route(&self, upstream: UpstreamId, target_hash: u64) -> RouteKey {
        RouteKey::new(upstream.0 as usize, target_hash)
    }

    /// Record a service time for a route (see [`routes`]).
    pub fn observe_service(&mut self, route: RouteKey, took: Duration, now: Instant) {
        self.routes.observe(route, took, now);
    }

    /// `upstream` began answering a request `took` after it was on the
    /// wire: it is healthy.
    pub fn record_response(&mut self, upstream: UpstreamId, took: Duration, now: Instant) {
        let mut came_back = false;
        let mut was_out = false;
        let suspect = self.upstream(upstream).is_some_and(Pool::suspect);
        if let Some(u) = self.get(upstream) {
            u.response_time.observe(took);
            u.last_use = Some(now);
            came_back = u.health.fails > 0;
            was_out = u.health.down_until.is_some();
            u.health.answered();
            u.warm.on_connected(now);
        }
        if came_back {
            self.policy.changed(Change::Up { id: upstream });
        }
        if was_out {
            self.notices.push(Notice::Back { upstream });
        }
        if suspect {
            self.resuspect(upstream, suspect);
        }
    }

    /// Whether requests on `route` may follow one another on a connection.
    pub fn route_is_fast(&self, route: RouteKey, now: Instant) -> bool {
        self.routes.is_fast(route, now)
    }

    /// How long the front request on a shared connection may wait for its
    /// first response byte before the ones behind it go elsewhere.
    pub fn late_after(&self, route: RouteKey) -> Duration {
        self.routes.late_after(route)
    }

    /// An exchange was put on a connection to `upstream`.
    pub fn exchange_started(&mut self, upstream: UpstreamId) {
        if let Some(u) = self.get(upstream) {
            u.inflight += 1;
        }
    }

    /// `n` exchanges left connections to `upstream` (answered, failed,
    /// moved elsewhere, or their client went away); `completed` of them
    /// were answered in full.
    pub fn exchanges_ended(&mut self, upstream: UpstreamId, n: usize, completed: usize) {
        if let Some(u) = self.get(upstream) {
            u.inflight = u.inflight.saturating_sub(n);
            u.served += completed as u64;
        }
    }

    /// A connect finished: the connection now carries its exchange (or is
    /// a warm-up connection, about to be released idle).
    pub fn connected(&mut self, upstream: UpstreamId, now: Instant) {
        if let Some(u) = self.get(upstream) {
            u.connecting -= 1;
            u.active += 1;
            u.warm.on_connected(now);
        }
    }

    /// Cold upstreams requests were kept away from since the last call:
    /// the caller opens their `warm_conns` connections.
    pub fn take_to_warm(&mut self) -> Vec<UpstreamId> {
        std::mem::take(&mut self.to_warm)
    }

    /// The warm-up connections of `upstream` are opened (as many as its
    /// limits allowed): if none could be, it is cold again, and the next
    /// request kept away from it starts another warm-up.
    pub fn warmup_opened(&mut self, upstream: UpstreamId) {
        if let Some(u) = self.get(upstream) {
            u.warm.stalled(u.connecting);
        }
    }

    /// Count a warm-up connection to `upstream` as connecting, if its
    /// limits allow one more now.
    pub fn reserve_spare(&mut self, upstream: UpstreamId, now: Instant) -> bool {
        let max_connecting = self.settings.max_connecting;
        let Some(u) = self.get(upstream) else {
            return false;
        };
        if !u.may_connect(max_connecting, now) {
            return false;
        }
        u.connecting += 1;
        u.opening.push_back(now);
        true
    }

    /// `warm` are warm in another worker of this process (this one is just
    /// starting): they are warm here, their slow start already over, so a
    /// new worker does not send their sessions to a peer while it makes
    /// its first connections.
    pub fn seed_warm(&mut self, warm: &[UpstreamId], now: Instant) {
        for u in &mut self.upstreams {
            if warm.contains(&u.spec.id) {
                u.warm.seed(u.spec.slow_start, now);
            }
        }
    }

    /// The checker's readiness verdict on `upstream` (its `warmup_check`).
    pub fn ready(&mut self, upstream: UpstreamId, ready: bool, now: Instant) {
        if let Some(u) = self.get(upstream) {
            u.warm.on_ready(ready, now);
        }
    }

    /// The origin answered on a connection for the first time.
    pub fn proven(&mut self, upstream: UpstreamId) {
        if let Some(u) = self.get(upstream) {
            u.opening.pop_front();
        }
    }

    /// When the next opening connection stops counting as one (a waiter
    /// may then connect), if any counts now.
    pub fn next_opening_expiry(&self, now: Instant) -> Option<Instant> {
        self.upstreams
            .iter()
            .filter_map(|u| u.opening.get(u.first_recent(now)).map(|&t| t + OPENING_FOR))
            .min()
    }

    /// A failure of real traffic on `upstream` (see [`health`]).
    fn failed(&mut self, upstream: UpstreamId, now: Instant) {
        let mut went_down = None;
        let suspect = self.upstream(upstream).is_some_and(Pool::suspect);
        if let Some(u) = self.get(upstream) {
            u.failures += 1;
            if u.health.failed(now, u.spec.fall) {
                u.warm.on_down();
                let until = u.health.down_until.unwrap_or(now);
                went_down = Some((u.health.fails, until.saturating_duration_since(now)));
            }
        }
        if let Some((fails, backoff)) = went_down {
            self.resuspect(upstream, suspect);
            self.policy.changed(Change::Down { id: upstream });
            self.notices.push(Notice::Down {
                upstream,
                fails,
                backoff,
            });
        }
    }

    /// A connect failed or timed out.
    pub fn connect_failed(&mut self, upstream: UpstreamId, now: Instant) {
        if let Some(u) = self.get(upstream) {
            u.connecting -= 1;
            u.opening.pop_front();
            u.warm.stalled(u.connecting);
        }
        self.failed(upstream, now);
        self.forget_removed();
    }

    /// A new connection was reset or closed before the origin answered on
    /// it (counted towards `fall`; the caller closes it as usual).
    pub fn reset_before_answer(&mut self, upstream: UpstreamId, now: Instant) {
        self.failed(upstream, now);
    }

    /// The health checker's verdict on `upstream`.
    pub fn checked(&mut self, upstream: UpstreamId, up: bool) {
        let mut changed = false;
        let suspect = self.upstream(upstream).is_some_and(Pool::suspect);
        if let Some(u) = self.get(upstream) {
            changed = u.health.checked(up);
            if changed && !up {
                u.warm.on_down();
            }
        }
        if changed {
            self.resuspect(upstream, suspect);
            let id = upstream;
            self.policy.changed(if up {
                Change::Up { id }
            } else {
                Change::Down { id }
            });
        }
    }

    /// A connect was given up before it finished (its client went away).
    pub fn connect_abandoned(&mut self, upstream: UpstreamId) {
        if let Some(u) = self.get(upstream) {
            u.connecting -= 1;
            u.opening.pop_front();
            u.warm.stalled(u.connecting);
        }
        self.forget_removed();
    }

    /// Whether the multiplexed connection `conn` to `upstream` may take
    /// another exchange (see [`Upstream::joinable`]).
    pub fn joinable(&mut self, upstream: UpstreamId, conn: C, room: bool) {
        let Some(u) = self.get(upstream) else {
            return;
        };
        let at = u.joinable.iter().position(|&c| c == conn);
        match (room, at) {
            (true, None) if !u.removed => u.joinable.push(conn),
            (false, Some(i)) => {
                u.joinable.remove(i);
            }
            _ => {}
        }
    }

    /// Idle connection `conn` may be handed out without the quarantine's
    /// wait (from the next turn on, as any other: the turn's completions
    /// for it come first): a multiplexed connection has no stray bytes to
    /// wait for, the origin names the stream of each frame.
    pub fn ready_at_once(&mut self, upstream: UpstreamId, conn: C) {
        if let Some(u) = self.get(upstream) {
            if let Some(i) = u.idle.iter_mut().find(|i| i.conn == conn) {
                i.since = i.since.checked_sub(QUARANTINE).unwrap_or(i.since);
            }
        }
    }

    /// An active connection finished its exchange (the origin answered on
    /// it, so it is proven): it goes idle (for the idle timeout, or only
    /// for [`SURPLUS_LINGER`] beyond `pool_size`), or the caller closes it.
    pub fn release(
        &mut self,
        upstream: UpstreamId,
        conn: C,
        reusable: bool,
        now: Instant,
    ) -> Release {
        let size = self.settings.pool_size;
        let turn = self.turn;
        let Some(u) = self.get(upstream) else {
            return Release::Close;
        };
        u.active -= 1;
        if !reusable || u.removed {
            self.forget_removed();
            return Release::Close;
        }
        u.idle.push(Idle {
            conn,
            turn,
            since: now,
        });
        let kept = if u.idle.len() <= size {
            Release::Keep
        } else {
            Release::Linger
        };
        self.idle_total += 1;
        self.idle_order.push_back((now, turn, upstream, conn));
        if self.idle_total > self.settings.max_idle {
            self.evict_oldest_idle();
        }
        if self.idle_order.len() > 2 * self.idle_total + 64 {
            // Mostly connections reused since: start the list again from
            // the idle lists themselves.
            let mut all: Vec<(Instant, u64, UpstreamId, C)> = self
                .upstreams
                .iter()
                .flat_map(|u| u.idle.iter().map(|i| (i.since, i.turn, u.spec.id, i.conn)))
                .collect();
            all.sort_unstable_by_key(|e| e.0);
            self.idle_order = all.into();
        }
        kept
    }

    /// Close the connection idle the longest, whatever its upstream (over
    /// `max_idle`; see the module doc).
    fn evict_oldest_idle(&mut self) {
        while let Some((_, turn, upstream, conn)) = self.idle_order.pop_front() {
            let Some(u) = self.get(upstream) else {
                continue;
            };
            // Still idle since then? (It may have been reused, or closed,
            // and be idle again since a later release.)
            if let Some(at) = u.idle.iter().position(|i| i.conn == conn && i.turn == turn) {
                u.idle.remove(at);
                self.idle_total -= 1;
                self.evicted.push(conn);
                return;
            }
        }
    }

    /// Idle connections closed to stay within `max_idle` since the last
    /// call: the caller closes them.
    pub fn take_evicted(&mut self) -> Vec<C> {
        std::mem::take(&mut self.evicted)
    }

    /// Idle connections kept now, across upstreams.
    pub fn idle_total(&self) -> usize {
        debug_assert_eq!(
            self.idle_total,
            self.upstreams.iter().map(|u| u.idle.len()).sum::<usize>()
        );
        self.idle_total
    }

    /// An active connection was closed (error, or its client went away);
    /// `proven` says whether the origin had answered on it.
    pub fn active_closed(&mut self, upstream: UpstreamId, proven: bool) {
        if let Some(u) = self.get(upstream) {
            u.active -= 1;
            if !proven {
                u.opening.pop_front();
            }
        }
        self.forget_removed();
    }

    /// An idle connection was closed (by the origin, or it timed out:
    /// `lost` says the origin closed it or it failed). Returns false if it
    /// was not idle (already taken).
    pub fn idle_closed(&mut self, upstream: UpstreamId, conn: C, lost: bool) -> bool {
        let Some(u) = self.get(upstream) else {
            return false;
        };
        let found = match u.idle.iter().position(|i| i.conn == conn) {
            Some(i) => {
                u.idle.remove(i);
                u.idle_lost += u64::from(lost);
                self.idle_total -= 1;
                true
            }
            None => false,
        };
        self.forget_removed();
        found
    }
}

#[cfg(test)]
mod tests;
