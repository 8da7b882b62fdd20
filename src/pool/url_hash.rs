//! URL hash: a consistent hash of the request path (or path and query,
//! `--hash-key`) picks the upstream, so each URL's requests go to the same
//! origin and its cache stays warm, with a bound on how much more than its
//! share one upstream may carry.
//!
//! # The table
//! Keys map through a Maglev table ([`super::maglev`]): a fixed number of
//! slots (a prime at least 100 times the upstreams), filled by the
//! upstreams in turn along permutations of their configured names, so the
//! mapping survives restarts and address changes, each up to its share by
//! weight. A key belongs to the upstream of the slot its hash lands on;
//! the slots after it give its *hash order*, the upstream it goes to when
//! the first is down or over its bound. Adding an upstream moves about
//! 1/(n+1) of the keys; removing one moves its own keys and a few of the
//! others' (0.06% measured, against none for a ring: `cargo bench --bench
//! hashing`). A ring with points per unit of weight, used before, grew with
//! the weights (437 MiB for 100 upstreams weighted 1000/999) and took
//! seconds to build on the worker's thread; the table's size does not
//! depend on weights, it is built once per upstream set and shared by
//! every worker (the supervisor builds it when it reads a configuration).
//!
//! # Bounded load
//! With `hash_balance = c` (default 1.25), an upstream already carrying
//! `⌈c × (load + 1) × weight / total weight⌉` (load: exchanges in flight
//! and requests waiting, over the up upstreams) takes no more:
//! the request goes to the next upstream in its hash order that is under
//! its bound. A hot URL then spreads over as many upstreams as it needs
//! instead of overloading one, and the others keep their keys. 0 turns the
//! bound off.

use std::collections::HashMap;
use std::sync::Arc;

use super::maglev::{table_for, Table};
use super::policy::{Candidate, Change, Policy, RequestKey};
use crate::spec::UpstreamId;

/// Default of `hash_balance`.
pub const DEFAULT_BALANCE: f64 = 1.25;

/// How far along its hash order a request looks for an upstream under its
/// bound (or up) before it settles for its own.
const ORDER_LIMIT: usize = 64;

/// One upstream of the table.
#[derive(Debug, Clone)]
struct Member {
    id: UpstreamId,
    /// The configured name, hashed for its permutation.
    name: String,
    weight: u32,
}

/// Consistent hashing through a shared Maglev table, with bounded load.
#[derive(Debug)]
pub struct UrlHash {
    members: Vec<Member>,
    /// The table for `members`, and each of its member indexes' id.
    table: Option<Arc<Table>>,
    ids: Vec<UpstreamId>,
    /// `c`; 0: no bound.
    balance: f64,
    /// Where each upstream is among the candidates the pool passes (in the
    /// pool's order; checked at each use, rebuilt when it moved).
    position: HashMap<UpstreamId, usize>,
    /// The members changed since the table was taken (it is taken at the
    /// next pick, so a start-up or reload with many upstreams looks it up
    /// once).
    stale: bool,
}

/// The table `url-hash` uses for `upstreams` (name, weight): built now if
/// no worker or configuration holds it yet. The supervisor calls this as
/// it reads a configuration, so that the workers find it built.
pub fn prepare(upstreams: &[(String, u32)]) -> Arc<Table> {
    table_for(upstreams)
}

impl UrlHash {
    /// No upstream yet, with bound `balance` (0: none).
    pub fn new(balance: f64) -> Self {
        UrlHash {
            members: Vec::new(),
            table: None,
            ids: Vec::new(),
            balance,
            position: HashMap::new(),
            stale: false,
        }
    }

    fn retable(&mut self) {
        self.stale = false;
        let members: Vec<(String, u32)> = self
            .members
            .iter()
            .map(|m| (m.name.clone(), m.weight))
            .collect();
        let table = table_for(&members);
        let by_name: HashMap<&str, UpstreamId> = self
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.id))
            .collect();
        self.ids = table
            .members
            .iter()
            .map(|(name, _)| by_name[name.as_str()])
            .collect();
        self.table = Some(table);
    }

    /// The candidate index of upstream `id`.
    fn find(&mut self, candidates: &[Candidate], id: UpstreamId) -> Option<usize> {
        if let Some(&i) = self.position.get(&id) {
            if candidates.get(i).is_some_and(|c| c.id == id) {
                return Some(i);
            }
        }
        self.position = candidates
            .iter()
            .enumerate()
            .map(|(i, c)| (c.id, i))
            .collect();
        self.position.get(&id).copied()
    }
}

impl Policy for UrlHash {
    fn pick(&mut self, candidates: &[Candidate], key: RequestKey) -> Option<usize> {
        if self.stale || self.table.is_none() {
            self.retable();
        }
        let (mut load, mut weight) = (0u64, 0u64);
        for c in candidates.iter().filter(|c| c.up) {
            load += c.load();
            weight += u64::from(c.weight);
        }
        if weight == 0 {
            return None;
        }
        let table = Arc::clone(self.table.as_ref()?);
        let mut first_up = None;
        for m in table.order(key.hash, ORDER_LIMIT) {
            let id = self.ids[m];
            let Some(i) = self.find(candidates, id) else {
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
        // Every upstream looked at is at its bound (only possible with
        // c < 1) or down: the key's own, or any that is up.
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
        // And a table taken elsewhere (another worker) agrees.
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
        // Maglev: nearly all to the new one (a few between the others).
        let elsewhere = moved.iter().filter(|&&i| after[i] != UpstreamId(4)).count();
        assert!(elsewhere <= 10, "{elsewhere} moved between the others");
        assert!(moved.len() <= 300, "{} of 1000 moved", moved.len());
        p.changed(Change::Removed { id: UpstreamId(2) });
        let without: Vec<Candidate> = four.iter().copied().filter(|c| c.id.0 != 2).collect();
        let later = map(&mut p, &without, 1000);
        let strays = (0..1000)
            .filter(|&i| after[i] != UpstreamId(2) && later[i] != after[i])
            .count();
        assert!(
            strays <= 10,
            "{strays} keys moved though their upstream stayed"
        );
    }

    #[test]
    fn a_down_upstream_sends_its_keys_along_their_order_and_gets_them_back() {
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
        let between = (0..1000)
            .filter(|&i| before[i] != after[i] && after[i] != UpstreamId(3))
            .count();
        assert!(between <= 15, "{between} keys moved between the others");
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
