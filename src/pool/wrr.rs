//! Smooth weighted round robin.
//!
//! Every pick adds each eligible upstream's weight to its running score,
//! takes the highest score and subtracts the total weight from it. Over any
//! window of `sum(weights)` picks each upstream is chosen `weight` times,
//! and the choices are interleaved (5,1,1 gives a a b a c a a, not a a a a a
//! b c), so a heavy upstream never gets a burst.

use super::policy::{Candidate, Policy, RequestKey};

/// Smooth weighted round robin over the eligible candidates.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    /// Running score per upstream index.
    scores: Vec<i64>,
}

impl Policy for WeightedRoundRobin {
    fn pick(&mut self, candidates: &[Candidate], _key: RequestKey) -> Option<usize> {
        self.scores.resize(candidates.len(), 0);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if !c.eligible {
                continue;
            }
            let w = i64::from(c.weight);
            self.scores[i] += w;
            total += w;
            if best.is_none_or(|b| self.scores[i] > self.scores[b]) {
                best = Some(i);
            }
        }
        let b = best?;
        self.scores[b] -= total;
        Some(b)
    }

    fn name(&self) -> &'static str {
        "wrr"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(weight: u32, eligible: bool) -> Candidate {
        Candidate {
            weight,
            active: 0,
            idle: 0,
            queued: 0,
            eligible,
        }
    }

    #[test]
    fn picks_in_proportion_to_weight_and_interleaved() {
        let c = [cand(5, true), cand(1, true), cand(1, true)];
        let mut p = WeightedRoundRobin::default();
        let picks: Vec<usize> = (0..7)
            .map(|_| p.pick(&c, RequestKey::default()).unwrap())
            .collect();
        assert_eq!(picks.iter().filter(|&&i| i == 0).count(), 5);
        assert_eq!(picks.iter().filter(|&&i| i == 1).count(), 1);
        assert_ne!(
            picks[..3],
            [0, 0, 0],
            "a heavy upstream gets no burst: {picks:?}"
        );
    }

    #[test]
    fn skips_ineligible_and_reports_none_when_all_are() {
        let mut p = WeightedRoundRobin::default();
        let c = [cand(3, false), cand(1, true)];
        for _ in 0..5 {
            assert_eq!(p.pick(&c, RequestKey::default()), Some(1));
        }
        assert_eq!(p.pick(&[cand(1, false)], RequestKey::default()), None);
    }

    #[test]
    fn two_to_one_over_many_picks() {
        let mut p = WeightedRoundRobin::default();
        let c = [cand(1, true), cand(2, true)];
        let mut n = [0; 2];
        for _ in 0..300 {
            n[p.pick(&c, RequestKey::default()).unwrap()] += 1;
        }
        assert_eq!(n, [100, 200]);
    }
}
