//! Smooth weighted round robin.
//!
//! Every pick adds each eligible upstream's weight to its running score,
//! takes the highest score and subtracts the total weight from it. Over any
//! window of `sum(weights)` picks each upstream is chosen `weight` times,
//! and the choices are interleaved (5,1,1 gives a a b a c a a, not a a a a a
//! b c), so a heavy upstream never gets a burst. Scores are kept by
//! upstream id: a reload that adds one upstream does not reset the others.

use super::policy::{Candidate, Change, Policy, RequestKey};
use crate::spec::UpstreamId;

/// Running scores by upstream id, in the candidates' order (re-sorted
/// only when the set changes).
#[derive(Debug, Default)]
pub struct Scores {
    by_id: Vec<(UpstreamId, i64)>,
}

impl Scores {
    /// One smooth WRR step over the candidates `among` accepts.
    pub fn step(
        &mut self,
        candidates: &[Candidate],
        among: impl Fn(&Candidate) -> bool,
    ) -> Option<usize> {
        self.align(candidates);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for (i, c) in candidates.iter().enumerate() {
            if !among(c) {
                continue;
            }
            let w = i64::from(c.weight);
            self.by_id[i].1 += w;
            total += w;
            if best.is_none_or(|b| self.by_id[i].1 > self.by_id[b].1) {
                best = Some(i);
            }
        }
        let b = best?;
        self.by_id[b].1 -= total;
        Some(b)
    }

    /// Make `by_id[i]` the entry of `candidates[i]`, keeping the scores of
    /// ids seen before (new ones start at 0).
    fn align(&mut self, candidates: &[Candidate]) {
        let aligned = self.by_id.len() == candidates.len()
            && self.by_id.iter().zip(candidates).all(|(s, c)| s.0 == c.id);
        if aligned {
            return;
        }
        let old = std::mem::take(&mut self.by_id);
        self.by_id = candidates
            .iter()
            .map(|c| {
                let score = old.iter().find(|s| s.0 == c.id).map_or(0, |s| s.1);
                (c.id, score)
            })
            .collect();
    }

    /// Forget a removed upstream's score.
    pub fn forget(&mut self, id: UpstreamId) {
        self.by_id.retain(|s| s.0 != id);
    }

    /// The score of `id` (tests).
    #[cfg(test)]
    pub fn score(&self, id: UpstreamId) -> Option<i64> {
        self.by_id.iter().find(|s| s.0 == id).map(|s| s.1)
    }
}

/// Smooth weighted round robin over the up candidates.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    scores: Scores,
}

impl Policy for WeightedRoundRobin {
    fn pick(&mut self, candidates: &[Candidate], _key: RequestKey) -> Option<usize> {
        self.scores.step(candidates, |c| c.up)
    }

    fn flexible(&self) -> bool {
        true
    }

    fn changed(&mut self, change: Change<'_>) {
        if let Change::Removed { id } = change {
            self.scores.forget(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::testing::{cand, spread};
    use super::*;

    #[test]
    fn picks_in_proportion_to_weight_and_interleaved() {
        let c = [cand(1, 5), cand(2, 1), cand(3, 1)];
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
    fn skips_the_down_and_reports_none_when_all_are() {
        let mut p = WeightedRoundRobin::default();
        let mut c = [cand(1, 3), cand(2, 1)];
        c[0].up = false;
        for _ in 0..5 {
            assert_eq!(p.pick(&c, RequestKey::default()), Some(1));
        }
        c[1].up = false;
        assert_eq!(p.pick(&c, RequestKey::default()), None);
    }

    #[test]
    fn within_a_percent_of_the_weights_over_ten_thousand() {
        let mut p = WeightedRoundRobin::default();
        let c = [cand(1, 1), cand(2, 3), cand(3, 6)];
        assert_eq!(spread(&mut p, &c, 10_000), vec![1000, 3000, 6000]);
    }

    #[test]
    fn scores_follow_the_id_when_the_set_changes() {
        let mut p = WeightedRoundRobin::default();
        let c = [cand(1, 1), cand(2, 2)];
        for _ in 0..2 {
            p.pick(&c, RequestKey::default());
        }
        let before = p.scores.score(UpstreamId(2));
        // A reload puts a new upstream first: 2 keeps its score.
        let c = [cand(7, 1), cand(1, 1), cand(2, 2)];
        p.scores.align(&c);
        assert_eq!(p.scores.score(UpstreamId(2)), before);
        assert_eq!(p.scores.score(UpstreamId(7)), Some(0));
        p.changed(Change::Removed { id: UpstreamId(1) });
        assert_eq!(p.scores.score(UpstreamId(1)), None);
    }
}
