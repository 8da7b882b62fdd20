//! Whether an upstream is ready for traffic, as one worker sees it: cold,
//! warming, warm; and the slow-start ramp a warm upstream enters rotation
//! on.
//!
//! An upstream is *cold* when it was just added (at start or by a reload),
//! just came back from down, or has no established connection in this
//! worker yet; with a readiness check (`warmup_check=/ready`) it stays cold
//! until the check passes. While a warm peer is up, no request goes to a
//! cold upstream: it starts *warming* instead (the worker opens
//! `warm_conns` connections to it in the background, the health checker
//! polls its readiness path), and the request is served by the peer at
//! once. It is *warm* once a connection to it is established (or an answer
//! came) and its readiness check, if any, passed. From then its effective
//! weight ramps from 10% to 100% over `slow_start` (0: at once).

use std::time::{Duration, Instant};

/// Effective weights are in tenths of the configured weight (10% steps
/// are then whole numbers).
pub const WEIGHT_SCALE: u32 = 10;

/// Where an upstream stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Warmth {
    /// Not ready, and nothing done about it yet.
    Cold,
    /// Connections are being opened to it (and its readiness polled).
    Warming { since: Instant },
    /// Ready: in rotation since `since` (the slow-start ramp runs from it).
    Warm { since: Instant },
}

/// An upstream's warmth and what makes it warm.
#[derive(Debug, Clone)]
pub struct WarmUp {
    pub warmth: Warmth,
    /// It has a readiness check, and the checker has not said ready.
    pub awaiting_check: bool,
    /// A connection to it was established (or it answered) since it went
    /// cold.
    pub connected: bool,
}

impl WarmUp {
    /// A cold upstream; `checked` if it has a readiness check.
    pub fn cold(checked: bool) -> Self {
        WarmUp {
            warmth: Warmth::Cold,
            awaiting_check: checked,
            connected: false,
        }
    }

    pub fn is_warm(&self) -> bool {
        matches!(self.warmth, Warmth::Warm { .. })
    }

    /// Warm elsewhere in the process (see `Pool::seed_warm`): warm, the
    /// readiness check passed, the ramp of `slow_start` behind it.
    pub fn seed(&mut self, slow_start: Duration, now: Instant) {
        self.connected = true;
        self.awaiting_check = false;
        self.warmth = Warmth::Warm {
            since: now.checked_sub(slow_start).unwrap_or(now),
        };
    }

    /// Begin warming; true if it was cold (the caller opens connections).
    pub fn start(&mut self, now: Instant) -> bool {
        if self.warmth == Warmth::Cold {
            self.warmth = Warmth::Warming { since: now };
            return true;
        }
        false
    }

    /// A connection was established or the origin answered.
    pub fn on_connected(&mut self, now: Instant) {
        self.connected = true;
        self.settle(now);
    }

    /// The readiness check passed (`true`) or failed again (`false`).
    pub fn on_ready(&mut self, ready: bool, now: Instant) {
        self.awaiting_check = !ready;
        if ready {
            self.settle(now);
        } else if self.is_warm() {
            self.warmth = Warmth::Cold;
        }
    }

    /// It went down: cold again when it comes back, until a connection is
    /// established again. (The readiness verdict is the checker's, for the
    /// whole process: it says when it changes.)
    pub fn on_down(&mut self) {
        self.warmth = Warmth::Cold;
        self.connected = false;
    }

    /// No connection to it is being opened (`connecting` is 0): a warm-up
    /// that connected nowhere is over, and it is cold again.
    pub fn stalled(&mut self, connecting: usize) {
        if connecting == 0 && !self.connected && matches!(self.warmth, Warmth::Warming { .. }) {
            self.warmth = Warmth::Cold;
        }
    }

    /// A reload gave it a readiness check (`checked`) or took it away.
    /// With a new check it keeps serving until the checker says otherwise.
    pub fn check_changed(&mut self, checked: bool, now: Instant) {
        self.awaiting_check = checked && !self.is_warm();
        self.settle(now);
    }

    fn settle(&mut self, now: Instant) {
        if self.connected && !self.awaiting_check && !self.is_warm() {
            self.warmth = Warmth::Warm { since: now };
        }
    }

    /// The weight the policy sees, in [`WEIGHT_SCALE`]ths: 10% of the
    /// configured one when it turns warm, climbing to 100% over
    /// `slow_start`.
    pub fn effective_weight(&self, weight: u32, slow_start: Duration, now: Instant) -> u32 {
        let full = weight * WEIGHT_SCALE;
        let since = match self.warmth {
            Warmth::Warm { since } => since,
            // Only used when no peer is warm: as is.
            Warmth::Cold | Warmth::Warming { .. } => return full,
        };
        if slow_start.is_zero() {
            return full;
        }
        let t = now.saturating_duration_since(since).as_secs_f64() / slow_start.as_secs_f64();
        let share = 0.1 + 0.9 * t.min(1.0);
        ((f64::from(full) * share).round() as u32).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warm_once_connected_and_checked() {
        let t = Instant::now();
        let mut w = WarmUp::cold(true);
        assert!(w.start(t));
        assert!(!w.start(t), "once");
        w.on_connected(t);
        assert!(!w.is_warm(), "the readiness check has not passed");
        w.on_ready(true, t);
        assert!(w.is_warm());
        w.on_down();
        assert_eq!(w.warmth, Warmth::Cold);
        w.on_connected(t);
        assert!(w.is_warm(), "the check passed already: a connection again");
        let mut plain = WarmUp::cold(false);
        plain.on_connected(t);
        assert!(plain.is_warm(), "no check: a connection is enough");
    }

    #[test]
    fn the_slow_start_ramp_climbs_from_a_tenth_to_all() {
        let t = Instant::now();
        let mut w = WarmUp::cold(false);
        w.on_connected(t);
        let ramp = Duration::from_secs(10);
        let at = |s: u64| w.effective_weight(3, ramp, t + Duration::from_secs(s));
        assert_eq!(at(0), 3); // 10% of 30
        assert_eq!(at(5), 17); // 55%
        assert_eq!(at(10), 30);
        assert_eq!(at(60), 30);
        let steps: Vec<u32> = (0..=10).map(at).collect();
        assert!(steps.windows(2).all(|s| s[0] <= s[1]), "{steps:?}");
        assert_eq!(w.effective_weight(3, Duration::ZERO, t), 30, "no ramp");
        assert_eq!(WarmUp::cold(false).effective_weight(1, ramp, t), 10);
        // The smallest weight never rounds to nothing.
        let mut one = WarmUp::cold(false);
        one.on_connected(t);
        assert_eq!(one.effective_weight(1, Duration::from_secs(100), t), 1);
    }
}
