//! The upstream pool of one worker: per-upstream connection counts, idle
//! keep-alive connections, health, and the policy that picks an upstream.
//!
//! The pool tracks connections by the worker's id for them ([`ConnId`]) and
//! never touches sockets: the worker opens, closes and reports. Every count
//! changes in exactly one place, so `active + connecting + idle` is the
//! number of open connections to an upstream, which `max_conns` bounds.
//!
//! Idle connections are reused last-in first-out: the most recently used
//! connection is the least likely to have hit the origin's idle timeout,
//! and the ones at the bottom of the stack may time out and be dropped,
//! which lets the pool shrink after a burst.
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
//! # Joining a busy connection
//! Safe requests placed in the same event-loop turn may share one upstream
//! connection, written in one send and answered back to back (HTTP/1.1
//! pipelining towards the origin). On loopback the kernel charges each
//! segment's TCP work to the sender, so this divides the upstream side's
//! per-request cost by the batch size. It is done only while the origin
//! answers fast: towards a slow origin, requests fan out over separate
//! connections, as queueing behind another request would cost more than a
//! segment.
//!
//! "Fast" means the lowest service time seen over the last one to two
//! [`SERVICE_WINDOW`]s is under [`JOIN_BELOW`]. The minimum, not an
//! average, because the average feeds back on the decision: an origin
//! that is fast but busy answers slowly while requests fan out over
//! hundreds of connections (hundreds of its threads contending), which
//! would keep the requests fanned out, which keeps it busy. The minimum
//! sees through that queueing to what a request costs the origin when it
//! gets there, as BBR's minimum RTT does for a path. Its blind spot: an
//! origin with one fast path and one slow path counts as fast, so the slow
//! path's pipelined requests queue behind one another (as they would
//! through nginx or HAProxy) rather than fanning out.

pub mod policy;
pub mod wrr;

use std::time::{Duration, Instant};

use crate::config::UpstreamSpec;
use policy::{Candidate, Policy, RequestKey};

/// The worker's identifier for an upstream connection.
pub type ConnId = usize;

/// How long an upstream that refused a connection stays out of rotation
/// before the next request tries it again.
pub const DOWN_FOR: Duration = Duration::from_secs(1);

/// Requests join a busy connection only while the upstream's average
/// service time (first response byte after the request is on the wire and
/// at the front of its connection) is below this.
pub const JOIN_BELOW: Duration = Duration::from_millis(1);

/// How long a connection released beyond `pool_size` idle ones is kept
/// for a burst to reuse before it is closed.
pub const SURPLUS_LINGER: Duration = Duration::from_secs(1);

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

/// The span over which the lowest service time is taken (the decision
/// uses this window's and the previous one's).
pub const SERVICE_WINDOW: Duration = Duration::from_secs(1);

/// One origin and its connections in this worker.
#[derive(Debug)]
pub struct Upstream {
    /// What the command line said.
    pub spec: UpstreamSpec,
    /// Connections carrying an exchange.
    pub active: usize,
    /// Connections whose connect is in flight.
    pub connecting: usize,
    /// Requests queued for this upstream (all of them at their connection
    /// limit), waiting for a connection to free up.
    pub queued: usize,
    /// Idle keep-alive connections, most recently used last.
    pub idle: Vec<ConnId>,
    /// Out of rotation until this instant (a connect failed).
    pub down_until: Option<Instant>,
    /// Exchanges this upstream completed.
    pub served: u64,
    /// Connect failures seen.
    pub failures: u64,
    /// A connection accepting pipelined requests this turn.
    pub joinable: Option<ConnId>,
    /// Lowest service time seen, in microseconds: in the current window
    /// (`[0]`) and the previous one (`[1]`). Unknown is `u32::MAX`.
    pub service_min_us: [u32; 2],
    /// When the current service-time window began.
    pub window_start: Option<Instant>,
}

impl Upstream {
    fn open(&self) -> usize {
        self.active + self.connecting + self.idle.len()
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    fn is_fast(&self) -> bool {
        let min = self.service_min_us[0].min(self.service_min_us[1]);
        u128::from(min) < JOIN_BELOW.as_micros()
    }

    /// Sharing a busy connection beats a connection of its own: the origin
    /// answers fast, or no connection is left to open.
    fn prefers_join(&self) -> bool {
        self.is_fast() || self.open() >= self.spec.max_conns
    }
}

/// Where an exchange should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Reuse this idle connection to upstream `upstream`.
    Reuse { upstream: usize, conn: ConnId },
    /// Queue behind the requests already on this busy connection.
    Join { upstream: usize, conn: ConnId },
    /// Open a new connection to `upstream` (already counted as connecting).
    Connect { upstream: usize },
    /// Every live upstream is at its connection limit: wait for a release
    /// (counted against `upstream`, the one the policy would have chosen
    /// had it had room, once the caller calls [`Pool::queue`]).
    Wait { upstream: usize },
    /// Every upstream is down.
    Unavailable,
}

/// One worker's view of the upstream pool.
pub struct Pool {
    upstreams: Vec<Upstream>,
    policy: Box<dyn Policy>,
    /// Idle connections kept per upstream.
    pool_size: usize,
    /// Scratch space for the policy's view.
    candidates: Vec<Candidate>,
}

impl Pool {
    /// A pool over `specs`, keeping up to `pool_size` idle connections each.
    pub fn new(specs: &[UpstreamSpec], pool_size: usize, policy: Box<dyn Policy>) -> Self {
        Pool {
            upstreams: specs
                .iter()
                .map(|s| Upstream {
                    spec: s.clone(),
                    active: 0,
                    connecting: 0,
                    queued: 0,
                    idle: Vec::new(),
                    down_until: None,
                    served: 0,
                    failures: 0,
                    joinable: None,
                    service_min_us: [u32::MAX; 2],
                    window_start: None,
                })
                .collect(),
            policy,
            pool_size,
            candidates: Vec::with_capacity(specs.len()),
        }
    }

    /// The upstreams and their counts.
    pub fn upstreams(&self) -> &[Upstream] {
        &self.upstreams
    }

    /// Choose where an exchange goes. With `fresh`, an idle connection is
    /// not reused (a retry after a reused connection failed). `can_join`
    /// is `Some` for a request that may share a busy connection, and says
    /// whether a given connection will take it (depth, same client); its
    /// second argument is true where sharing is preferred (a fast origin,
    /// or the connection limit reached), where even the same client's
    /// pipelined requests may share: fanning them out would buy nothing.
    pub fn place(
        &mut self,
        key: RequestKey,
        now: Instant,
        fresh: bool,
        can_join: Option<&dyn Fn(ConnId, bool) -> bool>,
    ) -> Placement {
        self.candidates.clear();
        let mut any_up = false;
        for u in &self.upstreams {
            let up = u.is_up(now);
            any_up |= up;
            let room = u.open() < u.spec.max_conns;
            let prefers = u.prefers_join();
            let join = can_join.is_some_and(|f| u.joinable.is_some_and(|c| f(c, prefers)));
            self.candidates.push(Candidate {
                weight: u.spec.weight,
                active: u.active,
                idle: u.idle.len(),
                queued: u.queued,
                eligible: up && (room || join || (!fresh && !u.idle.is_empty())),
            });
        }
        let Some(i) = self.policy.pick(&self.candidates, key) else {
            if !any_up {
                return Placement::Unavailable;
            }
            // Every live upstream is full: queue against the one the policy
            // picks among the live ones, as if they had room.
            for (c, u) in self.candidates.iter_mut().zip(&self.upstreams) {
                c.eligible = u.is_up(now);
            }
            let upstream = self.policy.pick(&self.candidates, key).unwrap_or(0);
            return Placement::Wait { upstream };
        };
        let u = &mut self.upstreams[i];
        let prefers = u.prefers_join();
        let joinable = u
            .joinable
            .filter(|&c| can_join.is_some_and(|f| f(c, prefers)));
        if let Some(conn) = joinable {
            // Towards a fast origin, sharing beats a segment of its own; at
            // the connection limit it beats waiting.
            if prefers {
                return Placement::Join { upstream: i, conn };
            }
        }
        if !fresh {
            if let Some(conn) = u.idle.pop() {
                u.active += 1;
                return Placement::Reuse { upstream: i, conn };
            }
        }
        if u.open() < u.spec.max_conns {
            u.connecting += 1;
            return Placement::Connect { upstream: i };
        }
        match joinable {
            Some(conn) => Placement::Join { upstream: i, conn },
            None => Placement::Wait { upstream: i },
        }
    }

    /// A request was queued after [`Placement::Wait`] for `upstream`.
    pub fn queue(&mut self, upstream: usize) {
        self.upstreams[upstream].queued += 1;
    }

    /// A request queued for `upstream` left the queue (placed, or gone).
    pub fn dequeue(&mut self, upstream: usize) {
        let q = &mut self.upstreams[upstream].queued;
        *q = q.saturating_sub(1);
    }

    /// Offer `conn` to requests placed later in this turn.
    pub fn set_joinable(&mut self, upstream: usize, conn: ConnId) {
        self.upstreams[upstream].joinable = Some(conn);
    }

    /// The turn ended (its sends went out): no connection is joinable.
    pub fn end_turn(&mut self) {
        for u in &mut self.upstreams {
            u.joinable = None;
        }
    }

    /// Record one service-time sample for `upstream`.
    pub fn observe_service(&mut self, upstream: usize, took: Duration, now: Instant) {
        let u = &mut self.upstreams[upstream];
        let sample = took.as_micros().min(u128::from(u32::MAX - 1)) as u32;
        match u.window_start {
            Some(t) if now.saturating_duration_since(t) < SERVICE_WINDOW => {
                u.service_min_us[0] = u.service_min_us[0].min(sample);
            }
            _ => {
                u.service_min_us = [sample, u.service_min_us[0]];
                u.window_start = Some(now);
            }
        }
    }

    /// An exchange on `upstream` finished.
    pub fn exchange_done(&mut self, upstream: usize) {
        self.upstreams[upstream].served += 1;
    }

    /// A connect finished: the connection now carries its exchange.
    pub fn connected(&mut self, upstream: usize) {
        let u = &mut self.upstreams[upstream];
        u.connecting -= 1;
        u.active += 1;
        u.down_until = None;
    }

    /// A connect failed or timed out: take the upstream out of rotation
    /// for [`DOWN_FOR`].
    pub fn connect_failed(&mut self, upstream: usize, now: Instant) {
        let u = &mut self.upstreams[upstream];
        u.connecting -= 1;
        u.failures += 1;
        u.down_until = Some(now + DOWN_FOR);
    }

    /// A connect was given up before it finished (its client went away).
    pub fn connect_abandoned(&mut self, upstream: usize) {
        self.upstreams[upstream].connecting -= 1;
    }

    /// An active connection finished its exchange: it goes idle (for the
    /// idle timeout, or only for [`SURPLUS_LINGER`] beyond `pool_size`), or
    /// the caller closes it.
    pub fn release(&mut self, upstream: usize, conn: ConnId, reusable: bool) -> Release {
        let size = self.pool_size;
        let u = &mut self.upstreams[upstream];
        u.active -= 1;
        if u.joinable == Some(conn) {
            u.joinable = None;
        }
        if !reusable {
            return Release::Close;
        }
        u.idle.push(conn);
        if u.idle.len() <= size {
            Release::Keep
        } else {
            Release::Linger
        }
    }

    /// An active connection was closed (error, or its client went away).
    pub fn active_closed(&mut self, upstream: usize, conn: ConnId) {
        let u = &mut self.upstreams[upstream];
        u.active -= 1;
        if u.joinable == Some(conn) {
            u.joinable = None;
        }
    }

    /// An idle connection was closed by the origin or timed out. Returns
    /// false if it was not idle (already taken).
    pub fn idle_closed(&mut self, upstream: usize, conn: ConnId) -> bool {
        let idle = &mut self.upstreams[upstream].idle;
        match idle.iter().position(|&c| c == conn) {
            Some(i) => {
                idle.remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(port: u16, weight: u32, max_conns: usize) -> UpstreamSpec {
        UpstreamSpec {
            name: format!("u{port}"),
            addr: ([127, 0, 0, 1], port).into(),
            weight,
            max_conns,
        }
    }

    fn pool(specs: &[UpstreamSpec]) -> Pool {
        Pool::new(specs, 2, Box::new(wrr::WeightedRoundRobin::default()))
    }

    #[test]
    fn connects_then_reuses_idle() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Connect { upstream: 0 }
        );
        p.connected(0);
        assert_eq!(p.release(0, 7, true), Release::Keep);
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Reuse {
                upstream: 0,
                conn: 7
            }
        );
        assert_eq!(p.upstreams()[0].active, 1);
    }

    #[test]
    fn idle_beyond_pool_size_only_lingers() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        for _ in 0..3 {
            p.place(RequestKey::default(), now, false, None);
            p.connected(0);
        }
        assert_eq!(p.release(0, 1, true), Release::Keep);
        assert_eq!(p.release(0, 2, true), Release::Keep);
        assert_eq!(p.release(0, 3, true), Release::Linger, "pool size is 2");
        // The lingering one is on top, so a burst reuses it first.
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Reuse {
                upstream: 0,
                conn: 3
            }
        );
    }

    #[test]
    fn an_unreusable_connection_is_never_kept() {
        let mut p = pool(&[spec(1, 1, 10)]);
        p.place(RequestKey::default(), Instant::now(), false, None);
        p.connected(0);
        assert_eq!(p.release(0, 9, false), Release::Close);
        assert!(p.upstreams()[0].idle.is_empty());
    }

    #[test]
    fn waits_at_max_conns_and_reports_unavailable_when_down() {
        let mut p = pool(&[spec(1, 1, 1)]);
        let now = Instant::now();
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Connect { upstream: 0 }
        );
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Wait { upstream: 0 }
        );
        p.queue(0);
        assert_eq!(p.upstreams()[0].queued, 1);
        p.dequeue(0);
        assert_eq!(p.upstreams()[0].queued, 0);
        p.connect_failed(0, now);
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Unavailable
        );
        // After DOWN_FOR it is tried again.
        assert_eq!(
            p.place(RequestKey::default(), now + DOWN_FOR, false, None),
            Placement::Connect { upstream: 0 }
        );
    }

    #[test]
    fn failed_upstream_is_skipped_while_another_is_up() {
        let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
        let now = Instant::now();
        let Placement::Connect { upstream } = p.place(RequestKey::default(), now, false, None)
        else {
            panic!()
        };
        p.connect_failed(upstream, now);
        for _ in 0..4 {
            assert_eq!(
                p.place(RequestKey::default(), now, false, None),
                Placement::Connect {
                    upstream: 1 - upstream
                }
            );
        }
    }

    #[test]
    fn joins_a_busy_connection_only_towards_a_fast_origin() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        let yes: &dyn Fn(ConnId, bool) -> bool = &|_, _| true;
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Connect { upstream: 0 }
        );
        p.connected(0);
        p.observe_service(0, Duration::from_micros(100), now);
        p.set_joinable(0, 5);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Join {
                upstream: 0,
                conn: 5
            }
        );
        let no: &dyn Fn(ConnId, bool) -> bool = &|_, _| false;
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(no)),
            Placement::Connect { upstream: 0 }
        );
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Connect { upstream: 0 }
        );
        let now = slow_for_two_windows(&mut p, now);
        p.set_joinable(0, 5);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Connect { upstream: 0 },
            "a slow origin gets its own connection per request"
        );
        p.end_turn();
        assert_eq!(p.upstreams()[0].joinable, None);
    }

    #[test]
    fn the_same_clients_requests_share_only_where_sharing_is_preferred() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        // What the worker passes for a connection already carrying one of
        // this client's requests: join only if sharing is preferred.
        let same_client: &dyn Fn(ConnId, bool) -> bool = &|_, shared| shared;
        p.place(RequestKey::default(), now, false, None);
        p.connected(0);
        p.observe_service(0, Duration::from_micros(100), now);
        p.set_joinable(0, 5);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(same_client)),
            Placement::Join {
                upstream: 0,
                conn: 5
            },
            "fast origin: one send for the batch"
        );
        let now = slow_for_two_windows(&mut p, now);
        p.set_joinable(0, 5);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(same_client)),
            Placement::Connect { upstream: 0 },
            "slow origin: the pipeline fans out"
        );
    }

    /// Feed `p`'s upstream 0 slow samples until its fast ones are two
    /// windows old; returns the time reached.
    fn slow_for_two_windows(p: &mut Pool, mut now: Instant) -> Instant {
        for _ in 0..3 {
            now += SERVICE_WINDOW;
            p.observe_service(0, Duration::from_millis(5), now);
        }
        now
    }

    #[test]
    fn an_origin_is_fast_by_its_lowest_recent_service_time() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let t0 = Instant::now();
        assert!(!p.upstreams()[0].is_fast(), "unknown counts as slow");
        p.observe_service(0, Duration::from_micros(80), t0);
        // Busy: most requests now take long, but one still went through
        // quickly in this window or the last, so the origin is fast.
        for i in 0..100 {
            p.observe_service(0, Duration::from_millis(20), t0 + Duration::from_millis(i));
        }
        assert!(p.upstreams()[0].is_fast());
        p.observe_service(0, Duration::from_millis(20), t0 + SERVICE_WINDOW);
        assert!(
            p.upstreams()[0].is_fast(),
            "the previous window still counts"
        );
        p.observe_service(0, Duration::from_millis(20), t0 + 2 * SERVICE_WINDOW);
        assert!(
            !p.upstreams()[0].is_fast(),
            "two windows without a fast answer"
        );
        p.observe_service(0, Duration::from_micros(300), t0 + 2 * SERVICE_WINDOW);
        assert!(p.upstreams()[0].is_fast());
    }

    #[test]
    fn at_the_limit_a_request_joins_rather_than_waits() {
        let mut p = pool(&[spec(1, 1, 1)]);
        let now = Instant::now();
        let yes: &dyn Fn(ConnId, bool) -> bool = &|_, _| true;
        p.place(RequestKey::default(), now, false, Some(yes));
        p.connected(0);
        let now = slow_for_two_windows(&mut p, now);
        p.set_joinable(0, 3);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Join {
                upstream: 0,
                conn: 3
            }
        );
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Wait { upstream: 0 }
        );
    }

    #[test]
    fn idle_closed_removes_only_idle() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        p.place(RequestKey::default(), now, false, None);
        p.connected(0);
        p.release(0, 4, true);
        assert!(p.idle_closed(0, 4));
        assert!(!p.idle_closed(0, 4));
        assert_eq!(p.upstreams()[0].open(), 0);
    }
}
