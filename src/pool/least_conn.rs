//! Least connections: the upstream with the fewest in-flight exchanges per
//! unit of weight; ties are broken by smooth weighted round robin among the
//! tied, so equally loaded upstreams (an idle pool, sequential requests)
//! still share the work by weight.
//!
//! It counts exchanges, not connections: a connection carrying four of one
//! client's pipelined requests is four. An upstream that answers slowly
//! holds its exchanges longer and so gets fewer new ones, which is the
//! point (with one 20 times slower than another, nearly everything goes to
//! the fast one). Counts are per worker.

use super::policy::{Candidate, Change, Policy, RequestKey};
use super::wrr::Scores;

/// Least in-flight exchanges per weight, WRR among ties.
#[derive(Debug, Default)]
pub struct LeastConn {
    scores: Scores,
}

impl Policy for LeastConn {
    fn pick(&mut self, candidates: &[Candidate], _key: RequestKey) -> Option<usize> {
        let lightest =
            candidates
                .iter()
                .filter(|c| c.up)
                .reduce(|a, b| if b.lighter_than(a) { b } else { a })?;
        let lightest = *lightest;
        self.scores
            .step(candidates, |c| c.up && c.as_loaded_as(&lightest))
    }

    fn flexible(&self) -> bool {
        true
    }

    fn changed(&mut self, change: Change<'_>) {
        if let Change::Removed { id } = change {
            self.scores.forget(id);
        }
    }

    fn name(&self) -> &'static str {
        "least-conn"
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::testing::{cand, spread};
    use super::*;

    #[test]
    fn fewest_in_flight_per_weight_wins() {
        let mut p = LeastConn::default();
        let mut c = [cand(1, 1), cand(2, 2), cand(3, 1)];
        c[0].inflight = 2;
        c[1].inflight = 3; // 1.5 per weight
        c[2].inflight = 1;
        assert_eq!(p.pick(&c, RequestKey::default()), Some(2));
        c[2].inflight = 2; // 2, 1.5, 2
        assert_eq!(p.pick(&c, RequestKey::default()), Some(1));
        c[1].up = false;
        let got = p.pick(&c, RequestKey::default());
        assert!(matches!(got, Some(0 | 2)), "{got:?}");
    }

    #[test]
    fn ties_are_shared_by_weight() {
        let mut p = LeastConn::default();
        let c = [cand(1, 1), cand(2, 3)];
        assert_eq!(spread(&mut p, &c, 10_000), vec![2500, 7500]);
    }

    #[test]
    fn a_slow_upstream_gets_little_under_concurrency() {
        // A closed loop of 32 requests in flight: upstream 0 answers one
        // per step, upstream 1 one per 20 steps.
        let mut p = LeastConn::default();
        let mut c = [cand(1, 1), cand(2, 1)];
        let mut ages: [Vec<u32>; 2] = [Vec::new(), Vec::new()];
        let took = [1, 20];
        let mut sent = [0usize; 2];
        for _ in 0..32 {
            let i = p.pick(&c, RequestKey::default()).unwrap();
            c[i].inflight += 1;
            ages[i].push(0);
        }
        for _ in 0..2000 {
            for i in 0..2 {
                for a in ages[i].iter_mut() {
                    *a += 1;
                }
                let done = ages[i].iter().filter(|&&a| a >= took[i]).count();
                ages[i].retain(|&a| a < took[i]);
                c[i].inflight -= done;
                for _ in 0..done {
                    let j = p.pick(&c, RequestKey::default()).unwrap();
                    c[j].inflight += 1;
                    ages[j].push(0);
                    sent[j] += 1;
                }
            }
        }
        let share = sent[0] as f64 / (sent[0] + sent[1]) as f64;
        assert!(share > 0.9, "fast upstream got {share:.3} of {sent:?}");
    }
}
