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
}

impl Upstream {
    fn open(&self) -> usize {
        self.active + self.connecting + self.idle.len()
    }

    fn is_up(&self, now: Instant) -> bool {
        self.down_until.is_none_or(|t| now >= t)
    }
}

/// Where an exchange should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Reuse this idle connection to upstream `upstream`.
    Reuse { upstream: usize, conn: ConnId },
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
    /// not reused (a retry after a reused connection failed).
    pub fn place(&mut self, key: RequestKey, now: Instant, fresh: bool) -> Placement {
        self.candidates.clear();
        let mut any_up = false;
        for u in &self.upstreams {
            let up = u.is_up(now);
            any_up |= up;
            let room = u.open() < u.spec.max_conns;
            self.candidates.push(Candidate {
                weight: u.spec.weight,
                active: u.active,
                idle: u.idle.len(),
                eligible: up && (room || (!fresh && !u.idle.is_empty())),
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
        if !fresh {
            if let Some(conn) = u.idle.pop() {
                u.active += 1;
                return Placement::Reuse { upstream: i, conn };
            }
        }
        u.connecting += 1;
        Placement::Connect { upstream: i }
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
        u.served += 1;
        if reusable && u.idle.len() < size {
            u.idle.push(conn);
            true
        } else {
            false
        }
    }

    /// An active connection was closed (error, or its client went away).
    pub fn active_closed(&mut self, upstream: usize) {
        self.upstreams[upstream].active -= 1;
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
            p.place(RequestKey::default(), now, false),
            Placement::Connect { upstream: 0 }
        );
        p.connected(0);
        assert!(p.release(0, 7, true));
        assert_eq!(
            p.place(RequestKey::default(), now, false),
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
            p.place(RequestKey::default(), now, false);
            p.connected(0);
        }
        assert!(p.release(0, 1, true));
        assert!(p.release(0, 2, true));
        assert!(!p.release(0, 3, true), "pool size is 2");
        assert!(!p.release_would_keep_unreusable());
    }

    impl Pool {
        fn release_would_keep_unreusable(&mut self) -> bool {
            self.place(RequestKey::default(), Instant::now(), true);
            self.connected(0);
            self.release(0, 9, false)
        }
    }

    #[test]
    fn waits_at_max_conns_and_reports_unavailable_when_down() {
        let mut p = pool(&[spec(1, 1, 1)]);
        let now = Instant::now();
        assert_eq!(
            p.place(RequestKey::default(), now, false),
            Placement::Connect { upstream: 0 }
        );
        assert_eq!(p.place(RequestKey::default(), now, false), Placement::Wait);
        p.connect_failed(0, now);
        assert_eq!(
            p.place(RequestKey::default(), now, false),
            Placement::Unavailable
        );
        // After DOWN_FOR it is tried again.
        assert_eq!(
            p.place(RequestKey::default(), now + DOWN_FOR, false),
            Placement::Connect { upstream: 0 }
        );
    }

    #[test]
    fn failed_upstream_is_skipped_while_another_is_up() {
        let mut p = pool(&[spec(1, 1, 10), spec(2, 1, 10)]);
        let now = Instant::now();
        let Placement::Connect { upstream } = p.place(RequestKey::default(), now, false) else {
            panic!()
        };
        p.connect_failed(upstream, now);
        for _ in 0..4 {
            assert_eq!(
                p.place(RequestKey::default(), now, false),
                Placement::Connect {
                    upstream: 1 - upstream
                }
            );
        }
    }

    #[test]
    fn idle_closed_removes_only_idle() {
        let mut p = pool(&[spec(1, 1, 10)]);
        let now = Instant::now();
        p.place(RequestKey::default(), now, false);
        p.connected(0);
        p.release(0, 4, true);
        assert!(p.idle_closed(0, 4));
        assert!(!p.idle_closed(0, 4));
        assert_eq!(p.upstreams()[0].open(), 0);
    }
}
