//! Power of two choices: draw two different up upstreams at random (each
//! with probability in proportion to its weight), send to the one with
//! fewer in-flight exchanges per unit of weight (on a tie, the one with
//! room, then the first drawn).
//!
//! Unlike least connections it needs no full scan to be good, and it does
//! not herd: several workers, each with its own counts, do not all pile on
//! the same momentarily lightest upstream. The pick is final: if the winner
//! has no room the request waits for it.

use super::policy::{Candidate, Change, Policy, RequestKey};

/// Two random choices, the lighter wins.
#[derive(Debug)]
pub struct RandomTwo {
    state: u64,
}

impl RandomTwo {
    /// Seeded with `seed` (each worker its own).
    pub fn new(seed: u64) -> Self {
        RandomTwo { state: seed | 1 }
    }

    /// xorshift64*: plenty for picking upstreams.
    fn next(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// One up candidate drawn by weight, other than `not`.
    fn draw(&mut self, candidates: &[Candidate], not: Option<usize>) -> Option<usize> {
        let eligible = |i: usize, c: &Candidate| c.up && Some(i) != not;
        let total: u64 = candidates
            .iter()
            .enumerate()
            .filter(|(i, c)| eligible(*i, c))
            .map(|(_, c)| u64::from(c.weight))
            .sum();
        if total == 0 {
            return None;
        }
        let mut at = self.next() % total;
        for (i, c) in candidates.iter().enumerate() {
            if !eligible(i, c) {
                continue;
            }
            let w = u64::from(c.weight);
            if at < w {
                return Some(i);
            }
            at -= w;
        }
        None
    }
}

impl Policy for RandomTwo {
    fn pick(&mut self, candidates: &[Candidate], _key: RequestKey) -> Option<usize> {
        let a = self.draw(candidates, None)?;
        let Some(b) = self.draw(candidates, Some(a)) else {
            return Some(a);
        };
        let (ca, cb) = (&candidates[a], &candidates[b]);
        let b_wins = cb.lighter_than(ca) || (cb.as_loaded_as(ca) && cb.room && !ca.room);
        Some(if b_wins { b } else { a })
    }

    fn flexible(&self) -> bool {
        false
    }

    fn changed(&mut self, _change: Change<'_>) {}
}

#[cfg(test)]
mod tests {
    use super::super::policy::testing::{cand, spread};
    use super::*;

    #[test]
    fn the_lighter_of_two_wins() {
        let mut p = RandomTwo::new(7);
        let mut c = [cand(1, 1), cand(2, 1)];
        c[0].inflight = 5;
        for _ in 0..50 {
            assert_eq!(p.pick(&c, RequestKey::default()), Some(1));
        }
        c[1].up = false;
        assert_eq!(p.pick(&c, RequestKey::default()), Some(0));
        c[0].up = false;
        assert_eq!(p.pick(&c, RequestKey::default()), None);
    }

    #[test]
    fn draws_follow_the_weights_when_idle() {
        let mut p = RandomTwo::new(42);
        let c = [cand(1, 1), cand(2, 3), cand(3, 1)];
        let got = spread(&mut p, &c, 10_000);
        // Idle, the first draw decides: shares 1/5, 3/5, 1/5.
        assert!((1700..=2300).contains(&got[0]), "{got:?}");
        assert!((5600..=6400).contains(&got[1]), "{got:?}");
    }

    #[test]
    fn load_evens_out_under_concurrency() {
        let mut p = RandomTwo::new(3);
        let mut c = [cand(1, 1), cand(2, 1), cand(3, 1), cand(4, 1)];
        for _ in 0..400 {
            let i = p.pick(&c, RequestKey::default()).unwrap();
            c[i].inflight += 1;
        }
        let (lo, hi) = (
            c.iter().map(|x| x.inflight).min().unwrap(),
            c.iter().map(|x| x.inflight).max().unwrap(),
        );
        assert!(hi - lo <= 6, "{c:?}");
    }
}
