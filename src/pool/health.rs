//! An upstream's health as one worker sees it: passive (failures of real
//! traffic) and active (the process's health checker's verdict, see
//! `crate::health_check`).
//!
//! Passive: `fall` consecutive failures (a connect that fails or times out,
//! a new connection reset before any answer) mark the upstream down for a
//! backoff that starts at [`FIRST_BACKOFF`] and doubles with each failed
//! retry, up to [`MAX_BACKOFF`]; when it ends one request tries the
//! upstream again, and an answer clears everything. Active: while the
//! checker says down, the upstream is down, whatever traffic says.

use std::time::{Duration, Instant};

/// The first time out of rotation after `fall` failures.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// The longest time out of rotation before the next try.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Health of one upstream.
#[derive(Debug, Clone)]
pub struct Health {
    /// Failures since the last answer.
    pub fails: u32,
    /// Out of rotation until then (passive).
    pub down_until: Option<Instant>,
    /// The next time out of rotation.
    backoff: Duration,
    /// The health checker says down.
    pub checked_down: bool,
}

impl Default for Health {
    fn default() -> Self {
        Health {
            fails: 0,
            down_until: None,
            backoff: FIRST_BACKOFF,
            checked_down: false,
        }
    }
}

impl Health {
    /// In rotation at `now`.
    pub fn is_up(&self, now: Instant) -> bool {
        !self.checked_down && self.down_until.is_none_or(|t| now >= t)
    }

    /// A failure of real traffic; true if it took the upstream down.
    pub fn failed(&mut self, now: Instant, fall: u32) -> bool {
        self.fails = self.fails.saturating_add(1);
        if self.fails < fall.max(1) {
            return false;
        }
        if !self.is_up(now) {
            // Already out (other connects of the same burst failing): the
            // backoff grows with failed retries, not with concurrency.
            return false;
        }
        self.down_until = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
        !self.checked_down
    }

    /// The origin answered: every failure is forgotten.
    pub fn answered(&mut self) {
        self.fails = 0;
        self.down_until = None;
        self.backoff = FIRST_BACKOFF;
    }

    /// The checker's verdict; true if it changed anything.
    pub fn checked(&mut self, up: bool) -> bool {
        let changed = self.checked_down == up;
        self.checked_down = !up;
        if up && changed {
            // Back by the checker's word: traffic starts afresh. (A verdict
            // sent again unchanged leaves what traffic said alone.)
            self.answered();
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fall_failures_in_a_row_take_it_down_with_a_growing_backoff() {
        let t = Instant::now();
        let mut h = Health::default();
        assert!(!h.failed(t, 3));
        assert!(!h.failed(t, 3));
        assert!(h.is_up(t));
        assert!(h.failed(t, 3), "the third");
        assert!(!h.is_up(t));
        assert!(!h.failed(t, 3), "more failures while down change nothing");
        let back = t + FIRST_BACKOFF;
        assert!(h.is_up(back), "tried again after the backoff");
        h.failed(back, 3);
        assert!(!h.is_up(back + FIRST_BACKOFF), "twice as long now");
        assert!(h.is_up(back + FIRST_BACKOFF * 2));
        let mut at = back + FIRST_BACKOFF * 2;
        for _ in 0..10 {
            h.failed(at, 3);
            at += MAX_BACKOFF;
        }
        assert_eq!(h.backoff, MAX_BACKOFF);
        h.answered();
        assert!(h.is_up(t));
        assert!(!h.failed(t, 3), "an answer starts the count again");
    }

    #[test]
    fn the_checker_overrides_traffic() {
        let t = Instant::now();
        let mut h = Health::default();
        assert!(h.checked(false));
        assert!(!h.is_up(t));
        h.answered();
        assert!(!h.is_up(t), "traffic cannot bring it back");
        assert!(!h.checked(false));
        assert!(h.checked(true));
        assert!(h.is_up(t));
        // An unchanged "up" sent again does not clear traffic's verdict.
        for _ in 0..3 {
            h.failed(t, 3);
        }
        assert!(!h.checked(true));
        assert!(!h.is_up(t));
    }
}
