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
//! # Joining a busy connection
//! Safe requests placed in the same event-loop turn may share one upstream
//! connection, written in one send and answered back to back (HTTP/1.1
//! pipelining towards the origin). On loopback the kernel charges each
//! segment's TCP work to the sender, so this divides the upstream side's
//! per-request cost by the batch size. It is done only while the origin
//! answers fast ([`JOIN_BELOW`], an average of its observed service time):
//! towards a slow origin, requests fan out over separate connections, as
//! queueing behind another request would cost more than a segment.

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

/// One origin and its connections in this worker.
#[derive(Debug)]
pub struct Upstream {
    /// What the command line said.
    pub spec: UpstreamSpec,
    /// Connections carrying an exchange.
    pub active: usize,
    /// Connections whose connect is in flight.
    pub connecting: usize,
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
    /// Moving average of the service time, in microseconds (weight 1/8).
    pub service_us: u32,
}

impl Upstream {
    fn open(&self) -> usize {
        self.active + self.connecting + self.idle.len()
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }

    fn is_fast(&self) -> bool {
        u128::from(self.service_us) < JOIN_BELOW.as_micros()
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
    /// Every live upstream is at its connection limit: wait for a release.
    Wait,
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
                    idle: Vec::new(),
                    down_until: None,
                    served: 0,
                    failures: 0,
                    joinable: None,
                    service_us: 0,
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
    /// whether a given connection will take it (depth, same client).
    pub fn place(
        &mut self,
        key: RequestKey,
        now: Instant,
        fresh: bool,
        can_join: Option<&dyn Fn(ConnId) -> bool>,
    ) -> Placement {
        self.candidates.clear();
        let mut any_up = false;
        for u in &self.upstreams {
            let up = u.is_up(now);
            any_up |= up;
            let room = u.open() < u.spec.max_conns;
            let join = can_join.is_some_and(|f| u.joinable.is_some_and(f));
            self.candidates.push(Candidate {
                weight: u.spec.weight,
                active: u.active,
                idle: u.idle.len(),
                eligible: up && (room || join || (!fresh && !u.idle.is_empty())),
            });
        }
        let Some(i) = self.policy.pick(&self.candidates, key) else {
            return if any_up {
                Placement::Wait
            } else {
                Placement::Unavailable
            };
        };
        let u = &mut self.upstreams[i];
        let joinable = u.joinable.filter(|&c| can_join.is_some_and(|f| f(c)));
        if let Some(conn) = joinable {
            // Towards a fast origin, sharing beats a segment of its own; at
            // the connection limit it beats waiting.
            if u.is_fast() || u.open() >= u.spec.max_conns {
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
            None => Placement::Wait,
        }
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
    pub fn observe_service(&mut self, upstream: usize, took: Duration) {
        let u = &mut self.upstreams[upstream];
        let sample = took.as_micros().min(u128::from(u32::MAX)) as i64;
        let avg = i64::from(u.service_us);
        u.service_us = (avg + (sample - avg) / 8).max(0) as u32;
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

    /// An active connection finished its exchange. Returns true if it was
    /// put in the idle pool; false means the caller closes it.
    pub fn release(&mut self, upstream: usize, conn: ConnId, reusable: bool) -> bool {
        let size = self.pool_size;
        let u = &mut self.upstreams[upstream];
        u.active -= 1;
        if u.joinable == Some(conn) {
            u.joinable = None;
        }
        if reusable && u.idle.len() < size {
            u.idle.push(conn);
            true
        } else {
            false
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
        assert!(p.release(0, 7, true));
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
    fn idle_beyond_pool_size_is_closed() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        for _ in 0..3 {
            p.place(RequestKey::default(), now, false, None);
            p.connected(0);
        }
        assert!(p.release(0, 1, true));
        assert!(p.release(0, 2, true));
        assert!(!p.release(0, 3, true), "pool size is 2");
    }

    #[test]
    fn an_unreusable_connection_is_never_kept() {
        let mut p = pool(&[spec(1, 1, 10)]);
        p.place(RequestKey::default(), Instant::now(), false, None);
        p.connected(0);
        assert!(!p.release(0, 9, false));
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
            Placement::Wait
        );
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
        let yes: &dyn Fn(ConnId) -> bool = &|_| true;
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Connect { upstream: 0 }
        );
        p.connected(0);
        p.set_joinable(0, 5);
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Join {
                upstream: 0,
                conn: 5
            }
        );
        let no: &dyn Fn(ConnId) -> bool = &|_| false;
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(no)),
            Placement::Connect { upstream: 0 }
        );
        assert_eq!(
            p.place(RequestKey::default(), now, false, None),
            Placement::Connect { upstream: 0 }
        );
        for _ in 0..40 {
            p.observe_service(0, Duration::from_millis(5));
        }
        assert_eq!(
            p.place(RequestKey::default(), now, false, Some(yes)),
            Placement::Connect { upstream: 0 },
            "a slow origin gets its own connection per request"
        );
        p.end_turn();
        assert_eq!(p.upstreams()[0].joinable, None);
    }

    #[test]
    fn at_the_limit_a_request_joins_rather_than_waits() {
        let mut p = pool(&[spec(1, 1, 1)]);
        let now = Instant::now();
        let yes: &dyn Fn(ConnId) -> bool = &|_| true;
        p.place(RequestKey::default(), now, false, Some(yes));
        p.connected(0);
        for _ in 0..40 {
            p.observe_service(0, Duration::from_millis(5));
        }
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
            Placement::Wait
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
