//! When the pool of workers grows or shrinks (`--workers MIN..MAX`),
//! decided from the busy fractions workers publish on their tick. No I/O,
//! time passed in: the supervisor asks, and carries the decision out.
//!
//! One more worker when every running worker has been busier than the
//! high mark for `up_after`; one fewer when the busiest has stayed below
//! the low mark for `down_after`; never below MIN nor above MAX. After a
//! change the clocks start again, so the new worker's effect is seen
//! before the next decision, and the pool steps one worker at a time.

use std::time::{Duration, Instant};

/// When elastic workers (`--workers MIN..MAX`) grow and shrink.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scale {
    /// Every worker busier than this for `up_after`: one more.
    pub high: f64,
    /// The busiest below this for `down_after`: one fewer.
    pub low: f64,
    pub up_after: Duration,
    pub down_after: Duration,
}

/// What to do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Grow,
    Shrink,
    Stay,
}

/// The scaler's memory between samples.
#[derive(Debug)]
pub struct Scaler {
    scale: Scale,
    min: usize,
    max: usize,
    /// Since when every worker has been above the high mark.
    high_since: Option<Instant>,
    /// Since when the busiest has been below the low mark.
    low_since: Option<Instant>,
}

impl Scaler {
    pub fn new(scale: Scale, min: usize, max: usize) -> Self {
        Scaler {
            scale,
            min,
            max,
            high_since: None,
            low_since: None,
        }
    }

    /// Whether the pool may change size at all.
    pub fn elastic(&self) -> bool {
        self.min < self.max
    }

    /// The running workers' busy fractions at `now`; `starting` says a
    /// worker is still coming up or one is retiring (no decision then).
    pub fn observe(&mut self, now: Instant, busy: &[f64], changing: bool) -> Decision {
        if !self.elastic() || busy.is_empty() || changing {
            self.high_since = None;
            self.low_since = None;
            return Decision::Stay;
        }
        let n = busy.len();
        let all_high = busy.iter().all(|&b| b >= self.scale.high);
        let all_low = busy.iter().all(|&b| b <= self.scale.low);
        self.high_since = if all_high && n < self.max {
            Some(self.high_since.unwrap_or(now))
        } else {
            None
        };
        self.low_since = if all_low && n > self.min {
            Some(self.low_since.unwrap_or(now))
        } else {
            None
        };
        if self
            .high_since
            .is_some_and(|t| now.duration_since(t) >= self.scale.up_after)
        {
            self.high_since = None;
            return Decision::Grow;
        }
        if self
            .low_since
            .is_some_and(|t| now.duration_since(t) >= self.scale.down_after)
        {
            self.low_since = None;
            return Decision::Shrink;
        }
        Decision::Stay
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn scaler(min: usize, max: usize) -> Scaler {
        Scaler::new(
            Scale {
                high: 0.75,
                low: 0.25,
                up_after: Duration::from_secs(2),
                down_after: Duration::from_secs(30),
            },
            min,
            max,
        )
    }

    #[test]
    fn grows_after_every_worker_stayed_busy_for_the_delay() {
        let mut s = scaler(1, 3);
        let t = Instant::now();
        assert_eq!(s.observe(t, &[0.9], false), Decision::Stay);
        assert_eq!(
            s.observe(t + Duration::from_secs(1), &[0.9], false),
            Decision::Stay
        );
        assert_eq!(
            s.observe(t + Duration::from_secs(2), &[0.8], false),
            Decision::Grow
        );
        // The clock starts again.
        assert_eq!(
            s.observe(t + Duration::from_secs(3), &[0.9, 0.9], false),
            Decision::Stay
        );
        // One quiet worker: no growth.
        assert_eq!(
            s.observe(t + Duration::from_secs(4), &[0.9, 0.5], false),
            Decision::Stay
        );
        assert_eq!(
            s.observe(t + Duration::from_secs(6), &[0.9, 0.9], false),
            Decision::Stay
        );
        assert_eq!(
            s.observe(t + Duration::from_secs(8), &[0.9, 0.9], false),
            Decision::Grow
        );
        // At MAX: never.
        for i in 0..10 {
            let at = t + Duration::from_secs(10 + i);
            assert_eq!(s.observe(at, &[1.0, 1.0, 1.0], false), Decision::Stay);
        }
    }

    #[test]
    fn shrinks_after_the_busiest_stayed_quiet_and_never_below_min() {
        let mut s = scaler(1, 3);
        let t = Instant::now();
        assert_eq!(s.observe(t, &[0.1, 0.2], false), Decision::Stay);
        assert_eq!(
            s.observe(t + Duration::from_secs(29), &[0.1, 0.2], false),
            Decision::Stay
        );
        assert_eq!(
            s.observe(t + Duration::from_secs(30), &[0.0, 0.1], false),
            Decision::Shrink
        );
        for i in 0..40 {
            let at = t + Duration::from_secs(31 + i);
            assert_eq!(s.observe(at, &[0.0], false), Decision::Stay, "at MIN");
        }
    }

    #[test]
    fn a_busy_moment_restarts_the_quiet_clock_and_changes_wait() {
        let mut s = scaler(1, 3);
        let t = Instant::now();
        s.observe(t, &[0.1, 0.1], false);
        s.observe(t + Duration::from_secs(20), &[0.5, 0.1], false);
        assert_eq!(
            s.observe(t + Duration::from_secs(31), &[0.1, 0.1], false),
            Decision::Stay
        );
        // A worker starting or retiring: nothing is decided, clocks reset.
        s.observe(t + Duration::from_secs(40), &[0.9], false);
        assert_eq!(
            s.observe(t + Duration::from_secs(43), &[0.9], true),
            Decision::Stay
        );
        assert_eq!(
            s.observe(t + Duration::from_secs(44), &[0.9], false),
            Decision::Stay
        );
        assert!(!scaler(2, 2).elastic());
    }
}
