//! Service times per route, in a bounded table: what decides whether a
//! client's pipelined requests may share one upstream connection, and when
//! a request waiting behind another on a shared connection has waited too
//! long.
//!
//! A route is an upstream and a request target (path and query, hashed by
//! the codec). One figure per origin cannot decide this: an origin with one
//! slow URL and many fast ones would either hold fast requests behind slow
//! ones or never batch at all. Per route, a URL that takes 200 ms is known
//! to take 200 ms however fast its neighbours are.
//!
//! Each route keeps, like TCP's retransmission timer (RFC 6298), a smoothed
//! service time and its mean deviation, plus the lowest time seen over the
//! last one or two [`WINDOW`]s. A route is *fast* when that minimum is under
//! [`FAST_BELOW`] and the smoothed time under [`TYPICAL_BELOW`]: the minimum
//! sees through queueing at a busy origin (which batching relieves, so it
//! must not switch batching off), the smoothed time keeps out a route that
//! is fast only now and then. Unknown routes are not fast: their requests
//! fan out. A request at the front of a shared connection is *late* after
//! [`Routes::late_after`]: the smoothed time plus four deviations, at least
//! [`LATE_FLOOR`].
//!
//! The table is direct-mapped with [`SLOTS`] entries and never grows: a
//! route that collides with another replaces it, and the one replaced is
//! unknown again (so it fans out, the safe choice) until it is measured.
//! Nothing here reads a clock; `now` is passed in.

use std::time::{Duration, Instant};

/// Entries in the table.
pub const SLOTS: usize = 4096;

/// A route whose lowest recent service time is under this may batch.
pub const FAST_BELOW: Duration = Duration::from_millis(1);

/// ... and only while its smoothed service time is under this.
pub const TYPICAL_BELOW: Duration = Duration::from_millis(10);

/// A request at the front of a shared connection is never late sooner.
pub const LATE_FLOOR: Duration = Duration::from_millis(5);

/// Nor later: past this, followers go elsewhere whatever the route's past.
pub const LATE_CEILING: Duration = Duration::from_secs(1);

/// The span over which the lowest service time is taken (the decision uses
/// this window's and the previous one's).
pub const WINDOW: Duration = Duration::from_secs(1);

/// Identifies a route: upstream and target hash, mixed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteKey(u64);

impl RouteKey {
    /// The route of `target_hash` on upstream `upstream`.
    pub fn new(upstream: usize, target_hash: u64) -> Self {
        let k = target_hash ^ (upstream as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // 0 marks an empty slot.
        RouteKey(k.max(1))
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    /// 0: empty.
    key: u64,
    /// Lowest service time in the current window ([0]) and the previous
    /// one ([1]), microseconds; `u32::MAX` when none.
    min_us: [u32; 2],
    window_start: Option<Instant>,
    /// Smoothed service time and mean deviation, microseconds (RFC 6298's
    /// SRTT and RTTVAR, with its gains 1/8 and 1/4).
    srtt_us: u32,
    rttvar_us: u32,
}

/// Service times of the routes one worker has seen lately.
pub struct Routes {
    slots: Box<[Slot]>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
        }
    }
}

impl Routes {
    fn slot(&self, key: RouteKey) -> Option<&Slot> {
        let s = &self.slots[(key.0 % SLOTS as u64) as usize];
        (s.key == key.0).then_some(s)
    }

    /// Record that a request on `key` got its first response byte `took`
    /// after it was on the wire at the front of its connection.
    pub fn observe(&mut self, key: RouteKey, took: Duration, now: Instant) {
        let sample = took.as_micros().min(u128::from(u32::MAX - 1)) as u32;
        let s = &mut self.slots[(key.0 % SLOTS as u64) as usize];
        if s.key != key.0 {
            *s = Slot {
                key: key.0,
                min_us: [sample, u32::MAX],
                window_start: Some(now),
                srtt_us: sample,
                rttvar_us: sample / 2,
            };
            return;
        }
        match s.window_start {
            Some(t) if now.saturating_duration_since(t) < WINDOW => {
                s.min_us[0] = s.min_us[0].min(sample);
            }
            _ => {
                s.min_us = [sample, s.min_us[0]];
                s.window_start = Some(now);
            }
        }
        let dev = s.srtt_us.abs_diff(sample);
        s.rttvar_us = s.rttvar_us - s.rttvar_us / 4 + dev / 4;
        s.srtt_us = s.srtt_us - s.srtt_us / 8 + sample / 8;
    }

    /// Whether requests on `key` answer fast enough to follow one another
    /// on a connection (see the module doc). Unknown or stale routes are
    /// not fast.
    pub fn is_fast(&self, key: RouteKey, now: Instant) -> bool {
        let Some(s) = self.slot(key) else {
            return false;
        };
        let recent = s
            .window_start
            .is_some_and(|t| now.saturating_duration_since(t) < 2 * WINDOW);
        let min = s.min_us[0].min(s.min_us[1]);
        recent
            && u128::from(min) < FAST_BELOW.as_micros()
            && u128::from(s.srtt_us) < TYPICAL_BELOW.as_micros()
    }

    /// How long a request on `key` may wait for its first response byte at
    /// the front of a shared connection before the requests behind it are
    /// sent elsewhere.
    pub fn late_after(&self, key: RouteKey) -> Duration {
        let us = self
            .slot(key)
            .map_or(0, |s| u64::from(s.srtt_us) + 4 * u64::from(s.rttvar_us));
        Duration::from_micros(us).clamp(LATE_FLOOR, LATE_CEILING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: Duration = Duration::from_micros(1);

    #[test]
    fn unknown_routes_are_not_fast() {
        let r = Routes::default();
        assert!(!r.is_fast(RouteKey::new(0, 42), Instant::now()));
    }

    #[test]
    fn routes_of_one_origin_are_told_apart() {
        let mut r = Routes::default();
        let now = Instant::now();
        let fast = RouteKey::new(0, 1);
        let slow = RouteKey::new(0, 2);
        for i in 0..20 {
            r.observe(fast, 80 * US, now + i * US);
            r.observe(slow, Duration::from_millis(200), now + i * US);
        }
        assert!(r.is_fast(fast, now));
        assert!(!r.is_fast(slow, now), "a slow URL of a fast origin");
        assert!(
            !r.is_fast(RouteKey::new(1, 1), now),
            "same target, other upstream"
        );
    }

    #[test]
    fn queueing_at_a_busy_origin_does_not_stop_batching() {
        let mut r = Routes::default();
        let t0 = Instant::now();
        let key = RouteKey::new(0, 7);
        r.observe(key, 90 * US, t0);
        // Busy: most answers now take a few milliseconds, a few get through
        // at once; the route stays fast.
        for i in 0..200u32 {
            let took = if i % 10 == 0 { 90 * US } else { 3000 * US };
            r.observe(key, took, t0 + i * 4 * US);
        }
        assert!(r.is_fast(key, t0 + Duration::from_millis(1)));
    }

    #[test]
    fn a_route_fast_only_now_and_then_is_not_fast() {
        let mut r = Routes::default();
        let t0 = Instant::now();
        let key = RouteKey::new(0, 9);
        for i in 0..100u32 {
            let took = if i % 10 == 0 {
                100 * US
            } else {
                Duration::from_millis(50)
            };
            r.observe(key, took, t0 + i * US);
        }
        assert!(!r.is_fast(key, t0), "cache-miss shaped route");
    }

    #[test]
    fn fastness_expires_with_its_windows() {
        let mut r = Routes::default();
        let t0 = Instant::now();
        let key = RouteKey::new(0, 3);
        r.observe(key, 100 * US, t0);
        assert!(r.is_fast(key, t0 + WINDOW));
        assert!(
            !r.is_fast(key, t0 + 2 * WINDOW),
            "no sample for two windows"
        );
        // Slow samples push the fast one out after two windows.
        r.observe(key, Duration::from_millis(5), t0 + WINDOW);
        r.observe(key, Duration::from_millis(5), t0 + 2 * WINDOW);
        assert!(!r.is_fast(key, t0 + 2 * WINDOW));
    }

    #[test]
    fn late_after_follows_the_route_within_bounds() {
        let mut r = Routes::default();
        let now = Instant::now();
        let key = RouteKey::new(0, 5);
        assert_eq!(r.late_after(key), LATE_FLOOR, "unknown");
        for _ in 0..50 {
            r.observe(key, 100 * US, now);
        }
        assert_eq!(r.late_after(key), LATE_FLOOR, "fast and steady");
        let jittery = RouteKey::new(0, 6);
        for i in 0..50 {
            let took = if i % 2 == 0 { 1000 * US } else { 8000 * US };
            r.observe(jittery, took, now);
        }
        let late = r.late_after(jittery);
        assert!(
            late > Duration::from_millis(10) && late < LATE_CEILING,
            "{late:?}"
        );
    }

    #[test]
    fn a_colliding_route_replaces_the_old_one() {
        let mut r = Routes::default();
        let now = Instant::now();
        let a = RouteKey(5);
        let b = RouteKey(5 + SLOTS as u64);
        r.observe(a, 100 * US, now);
        r.observe(b, 100 * US, now);
        assert!(r.is_fast(b, now));
        assert!(!r.is_fast(a, now), "evicted: unknown again");
    }
}
