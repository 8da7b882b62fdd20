//! URL hash: a consistent hash of the request path (or path and query,
//! `--hash-key`) picks the upstream, so each URL's requests go to the same
//! origin and its cache stays warm, with a bound on how much more than its
//! share one upstream may carry.
//!
//! # The ring
//! Each upstream puts [`POINTS_PER_WEIGHT`] × weight points (weights above
//! 128 count as 128) on a 64-bit ring (hashes of its configured name and the point's number, so the
//! mapping survives restarts and address changes); a key belongs to the
//! first point at or after its own hash. Adding an upstream moves only the
//! keys its new points take (about 1/(n+1) of them), removing one moves
//! only its own keys, and walking on from a key's point gives its *hash
//! order*: the upstream it goes to when the first is down or full.
//!
//! A ring was picked over Maglev by measuring both (`cargo bench --bench
//! hashing`, figures in the README): Maglev's table balances load a little
//! better but moves keys between the upstreams that stay when one is
//! removed, and it has no second choice per key, which the bounded load
//! needs.
//!
//! # Bounded load
//! With `hash_balance = c` (default 1.25), an upstream already carrying
//! `⌈c × (load + 1) × weight / total weight⌉` (load: exchanges in flight
//! and requests waiting, over the up upstreams) takes no more:
//! the request goes to the next upstream in its hash order that is under
//! its bound. A hot URL then spreads over as many upstreams as it needs
//! instead of overloading one, and the others keep their keys. 0 turns the
//! bound off.

use super::policy::{Candidate, Change, Policy, RequestKey};
use crate::config::UpstreamId;

/// Ring points per unit of weight.
pub const POINTS_PER_WEIGHT: u32 = 1024;
/// The most points one upstream puts on the ring (2 MiB of ring): weights
/// above 128 count as 128 here.
const MAX_POINTS_EACH: u64 = 1 << 17;
/// Default of `hash_balance`.
pub const DEFAULT_BALANCE: f64 = 1.25;

/// One upstream on the ring.
#[derive(Debug, Clone)]
struct Member {
    id: UpstreamId,
    /// The configured name, hashed for its points.
    name: String,
    weight: u32,
}

/// Consistent hashing on a ring, with bounded load.
#[derive(Debug)]
pub struct UrlHash {
    members: Vec<Member>,
    /// (point, member index), sorted by point.
    ring: Vec<(u64, u32)>,
    /// `c`; 0: no bound.
    balance: f64,
    /// Points per unit of weight.
    points: u32,
    /// The members changed since the ring was built (it is built at the
    /// next pick, so a start-up or reload with many upstreams builds once).
    stale: bool,
}

/// A 64-bit finaliser (splitmix64): spreads FNV's clustered outputs over
/// the whole ring.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// The `i`-th point of the upstream called `name`.
pub fn point(name: &str, i: u32) -> u64 {
    mix(crate::codec::path_hash(name.as_bytes()) ^ mix(u64::from(i)))
}

impl UrlHash {
    /// An empty ring with bound `balance` (0: none).
    pub fn new(balance: f64) -> Self {
        UrlHash::with_points(balance, POINTS_PER_WEIGHT)
    }

    /// Like [`UrlHash::new`] with `points` per unit of weight (for
    /// measuring the choice).
    pub fn with_points(balance: f64, points: u32) -> Self {
        UrlHash {
            members: Vec::new(),
            ring: Vec::new(),
            balance,
            points: points.max(1),
            stale: false,
        }
    }

    fn rebuild(&mut self) {
        self.stale = false;
        self.ring.clear();
        for (i, m) in self.members.iter().enumerate() {
            // Its own weight alone decides its points: anything that
            // depends on the others (a common divisor, a cap on the whole
            // ring) would move keys between upstreams a change did not
            // touch.
            let n = (u64::from(self.points) * u64::from(m.weight)).min(MAX_POINTS_EACH) as u32;
            self.ring
                .extend((0..n).map(|p| (point(&m.name, p), i as u32)));
        }
        // Equal points (astronomically rare) go to the lower index, the
        // same in every worker.
        self.ring.sort_unstable();
    }

    /// The member holding `hash` and those after it, each once, in ring
    /// order.
    fn order(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.ring.partition_point(|p| p.0 < hash);
        let n = self.ring.len();
        let mut seen = 0u64; // bitset for the first 64 members
        let mut seen_more: Vec<u32> = Vec::new();
        (0..n)
            .map(move |k| self.ring[(start + k) % n].1)
            .filter(move |&m| {
                if m < 64 {
                    let bit = 1u64 << m;
                    let fresh = seen & bit == 0;
                    seen |= bit;
                    fresh
                } else if seen_more.contains(&m) {
                    false
                } else {
                    seen_more.push(m);
                    true
                }
            })
            .map(|m| m as usize)
            .take(self.members.len())
    }
}

impl Policy for UrlHash {
    fn pick(&mut self, candidates: &[Candidate], key: RequestKey) -> Option<usize> {
        if self.stale {
            self.rebuild();
        }
        let hash = mix(key.hash);
        let (mut load, mut weight) = (0u64, 0u64);
        for c in candidates.iter().filter(|c| c.up) {
            load += c.load();
            weight += u64::from(c.weight);
        }
        if weight == 0 {
            return None;
        }
        let mut first_up = None;
        for m in self.order(hash) {
            let id = self.members[m].id;
            let Some(i) = candidates.iter().position(|c| c.id == id) else {
                continue;
            };
            let c = &candidates[i];
            if !c.up {
                continue;
            }
            if self.balance <= 0.0 {
                return Some(i);
            }
            first_up.get_or_insert(i);
            let bound = (self.balance * (load + 1) as f64 * f64::from(c.weight) / weight as f64)
                .ceil() as u64;
            if c.load() < bound {
                return Some(i);
            }
        }
        // Every upstream is at its bound (only possible with c < 1): the
        // key's own.
        first_up.or_else(|| candidates.iter().position(|c| c.up))
    }

    fn flexible(&self) -> bool {
        false
    }

    fn changed(&mut self, change: Change<'_>) {
        match change {
            Change::Added { id, name, weight } => {
                self.members.retain(|m| m.id != id);
                self.members.push(Member {
                    id,
                    name: name.to_string(),
                    weight,
                });
                self.stale = true;
            }
            Change::Removed { id } => {
                self.members.retain(|m| m.id != id);
                self.stale = true;
            }
            Change::Reweighted { id, weight } => {
                if let Some(m) = self.members.iter_mut().find(|m| m.id == id) {
                    m.weight = weight;
                }
                self.stale = true;
            }
            Change::Up { .. } | Change::Down { .. } => {}
        }
    }

    fn name(&self) -> &'static str {
        "url-hash"
    }
}

#[cfg(test)]
mod tests {
    use super::super::policy::testing::{announce, cand};
    use super::*;

    fn key(path: &str) -> RequestKey {
        RequestKey {
            hash: crate::codec::path_hash(path.as_bytes()),
        }
    }

    fn map(p: &mut UrlHash, c: &[Candidate], n: usize) -> Vec<UpstreamId> {
        (0..n)
            .map(|i| c[p.pick(c, key(&format!("/item/{i}"))).unwrap()].id)
            .collect()
    }

    #[test]
    fn a_path_always_goes_to_the_same_upstream() {
        let c = [cand(1, 1), cand(2, 1), cand(3, 1)];
        let mut p = UrlHash::new(0.0);
        announce(&mut p, &c);
        let first = map(&mut p, &c, 1000);
        for _ in 0..3 {
            assert_eq!(map(&mut p, &c, 1000), first);
        }
        // And a ring built elsewhere (another worker) agrees.
        let mut q = UrlHash::new(0.0);
        announce(&mut q, &[c[2], c[0], c[1]]);
        assert_eq!(map(&mut q, &c, 1000), first);
        for id in 1..=3 {
            let n = first.iter().filter(|u| u.0 == id).count();
            assert!((250..=420).contains(&n), "upstream {id} got {n}");
        }
    }

    #[test]
    fn adding_moves_a_fair_share_and_removing_moves_only_its_own() {
        let three = [cand(1, 1), cand(2, 1), cand(3, 1)];
        let four = [cand(1, 1), cand(2, 1), cand(3, 1), cand(4, 1)];
        let mut p = UrlHash::new(0.0);
        announce(&mut p, &three);
        let before = map(&mut p, &three, 1000);
        announce(&mut p, &four[3..]);
        let after = map(&mut p, &four, 1000);
        let moved: Vec<usize> = (0..1000).filter(|&i| before[i] != after[i]).collect();
        assert!(
            moved.iter().all(|&i| after[i] == UpstreamId(4)),
            "only to the new one"
        );
        assert!(moved.len() <= 300, "{} of 1000 moved", moved.len());
        p.changed(Change::Removed { id: UpstreamId(2) });
        let without: Vec<Candidate> = four.iter().copied().filter(|c| c.id.0 != 2).collect();
        let later = map(&mut p, &without, 1000);
        for i in 0..1000 {
            if after[i] != UpstreamId(2) {
                assert_eq!(
                    later[i], after[i],
                    "key {i} moved though its upstream stayed"
                );
            }
        }
    }

    #[test]
    fn a_down_upstream_sends_its_keys_along_the_ring_and_gets_them_back() {
        let mut c = [cand(1, 1), cand(2, 1), cand(3, 1)];
        let mut p = UrlHash::new(0.0);
        announce(&mut p, &c);
        let before = map(&mut p, &c, 300);
        c[0].up = false;
        let during = map(&mut p, &c, 300);
        for i in 0..300 {
            if before[i] != UpstreamId(1) {
                assert_eq!(during[i], before[i]);
            } else {
                assert_ne!(during[i], UpstreamId(1));
            }
        }
        c[0].up = true;
        assert_eq!(map(&mut p, &c, 300), before);
    }

    #[test]
    fn weights_scale_the_share() {
        let c = [cand(1, 1), cand(2, 3)];
        let mut p = UrlHash::new(0.0);
        announce(&mut p, &c);
        let got = map(&mut p, &c, 4000);
        let heavy = got.iter().filter(|u| u.0 == 2).count();
        assert!((2700..=3300).contains(&heavy), "{heavy} of 4000");
    }

    #[test]
    fn reweighting_one_moves_keys_only_to_or_from_it() {
        let c = [cand(1, 100), cand(2, 100), cand(3, 100)];
        let mut p = UrlHash::new(0.0);
        announce(&mut p, &c);
        let before = map(&mut p, &c, 1000);
        p.changed(Change::Reweighted {
            id: UpstreamId(3),
            weight: 150,
        });
        let mut after_c = c;
        after_c[2].weight = 150;
        let after = map(&mut p, &after_c, 1000);
        for i in 0..1000 {
            if before[i] != after[i] {
                assert_eq!(after[i], UpstreamId(3), "key {i} moved between the others");
            }
        }
    }

    #[test]
    fn a_hot_key_spills_past_its_bound() {
        let mut c = [cand(1, 1), cand(2, 1), cand(3, 1)];
        let mut p = UrlHash::new(1.25);
        announce(&mut p, &c);
        // 64 concurrent requests for one path.
        for _ in 0..64 {
            let i = p.pick(&c, key("/hot")).unwrap();
            c[i].inflight += 1;
        }
        let mean = 64.0 / 3.0;
        let bound = (1.25f64 * mean).ceil() as usize;
        for x in &c {
            assert!(x.inflight <= bound, "{c:?}");
        }
        // Without load the key has one home.
        let idle = [cand(1, 1), cand(2, 1), cand(3, 1)];
        let home = p.pick(&idle, key("/hot"));
        assert_eq!(home, p.pick(&idle, key("/hot")));
    }
}
