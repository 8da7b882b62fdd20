//! The lookup table behind `url-hash`: a Maglev-style table (Eisenbud et
//! al., NSDI 2016) of fixed size, filled by the upstreams in turn, each
//! along its own permutation of the slots, each up to its share by weight.
//!
//! A key's upstream is the slot its hash lands on; the slots after it give
//! the key's *hash order* (its next choice when the first is down or over
//! its bound), each upstream once. The table's size depends on how many
//! upstreams there are (a prime at least 100 times that, from 65,537 to
//! 4,194,301 slots), never on their weights: a ring with points per unit
//! of weight grew to 437 MiB for 100 upstreams weighted 1000/999 and took
//! seconds to build on the worker's thread.
//!
//! Tables are built once per upstream set and shared: [`table_for`] keeps
//! the ones in use in a process-wide cache, and the configuration holds
//! the current one (built by the supervisor when it reads a configuration,
//! so the workers only look it up).

use std::sync::{Arc, Mutex, Weak};

use crate::codec::mix;

/// Table sizes: primes, the smallest at least 100 × upstreams is used (the
/// largest beyond 41,943 upstreams).
const SIZES: [usize; 7] = [
    65_537, 131_071, 262_147, 524_287, 1_048_573, 2_097_143, 4_194_301,
];

/// A member's permutation of the slots: where it starts and its step.
fn permutation(name: &str, m: usize) -> (usize, usize) {
    let h = crate::codec::path_hash(name.as_bytes());
    let offset = (mix(h ^ 0x6f66_6673_6574) % m as u64) as usize;
    let skip = (mix(h ^ 0x736b_6970) % (m as u64 - 1)) as usize + 1;
    (offset, skip)
}

/// A filled table.
pub struct Table {
    /// The members, as (configured name, weight), sorted by name.
    pub members: Vec<(String, u32)>,
    /// Slot to member index.
    slots: Vec<u32>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "maglev::Table({} members, {} slots)",
            self.members.len(),
            self.slots.len()
        )
    }
}

impl Table {
    /// Fill a table for `members` (name, weight), in any order; each gets
    /// slots in proportion to its weight (at least one).
    pub fn build(members: &[(String, u32)]) -> Table {
        let mut members: Vec<(String, u32)> = members.to_vec();
        members.sort();
        members.dedup_by(|a, b| a.0 == b.0);
        let n = members.len();
        let m = SIZES
            .iter()
            .copied()
            .find(|&m| m >= 100 * n)
            .unwrap_or(SIZES[SIZES.len() - 1]);
        let mut slots = vec![u32::MAX; m];
        if n == 0 {
            return Table { members, slots };
        }
        let quotas = quotas(&members, m);
        let perms: Vec<(usize, usize)> = members
            .iter()
            .map(|(name, _)| permutation(name, m))
            .collect();
        let mut next = vec![0usize; n];
        let mut left = quotas;
        // Members that still have slots to take, in name order: each takes
        // one per round, along its permutation, skipping taken slots.
        let mut active: Vec<usize> = (0..n).filter(|&i| left[i] > 0).collect();
        let mut filled = 0;
        while filled < m && !active.is_empty() {
            active.retain(|&i| {
                let (offset, skip) = perms[i];
                loop {
                    let c = (offset + next[i] * skip) % m;
                    next[i] += 1;
                    if slots[c] == u32::MAX {
                        slots[c] = i as u32;
                        break;
                    }
                }
                filled += 1;
                left[i] -= 1;
                left[i] > 0
            });
        }
        Table { members, slots }
    }

    /// Slots in the table.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it has no member.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The members in `hash`'s order: its own first, then the owners of
    /// the slots after its slot, each once, at most `limit` of them.
    pub fn order(&self, hash: u64, limit: usize) -> impl Iterator<Item = usize> + '_ {
        let m = self.slots.len();
        let start = (mix(hash) % m as u64) as usize;
        let mut seen: Vec<u32> = Vec::new();
        let limit = limit.min(self.members.len());
        (0..m)
            .map(move |k| self.slots[(start + k) % m])
            .filter(move |&s| {
                if s == u32::MAX || seen.contains(&s) {
                    return false;
                }
                seen.push(s);
                true
            })
            .map(|s| s as usize)
            .take(limit)
    }
}

/// Each member's number of slots: its share of `m` by weight, at least
/// one, the remainder to the largest fractions (ties by name order).
fn quotas(members: &[(String, u32)], m: usize) -> Vec<usize> {
    let total: u64 = members.iter().map(|(_, w)| u64::from((*w).max(1))).sum();
    let mut q: Vec<usize> = Vec::with_capacity(members.len());
    let mut frac: Vec<(u64, usize)> = Vec::with_capacity(members.len());
    for (i, (_, w)) in members.iter().enumerate() {
        let share = m as u64 * u64::from((*w).max(1));
        q.push(((share / total) as usize).max(1));
        frac.push((share % total, i));
    }
    let given: usize = q.iter().sum();
    if given < m {
        frac.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(_, i) in frac.iter().cycle().take(m - given) {
            q[i] += 1;
        }
    } else {
        // The minimum of one slot each overshot: take back from the
        // largest.
        let mut over = given - m;
        while over > 0 {
            let i = (0..q.len())
                .max_by_key(|&i| (q[i], usize::MAX - i))
                .expect("members");
            q[i] -= 1;
            over -= 1;
        }
    }
    q
}

/// Tables in use, by a hash of their members (weak: a table lives while a
/// configuration or a worker's policy holds it).
static CACHE: Mutex<Vec<(u64, Weak<Table>)>> = Mutex::new(Vec::new());

/// The table for `members` (name, weight): the one already in use if
/// there is one, else a new one. Built under the cache's lock, so that
/// workers that want the same table at the same time build it once.
pub fn table_for(members: &[(String, u32)]) -> Arc<Table> {
    let mut sorted: Vec<(String, u32)> = members.to_vec();
    sorted.sort();
    // As `Table::build` keeps them: one entry per name.
    sorted.dedup_by(|a, b| a.0 == b.0);
    let key = sorted.iter().fold(0x6d61_676c_6576u64, |h, (name, w)| {
        mix(h ^ crate::codec::path_hash(name.as_bytes()) ^ mix(u64::from(*w)))
    });
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    cache.retain(|(_, t)| t.strong_count() > 0);
    for (k, t) in cache.iter() {
        if *k == key {
            if let Some(t) = t.upgrade() {
                if t.members == sorted {
                    return t;
                }
            }
        }
    }
    let table = Arc::new(Table::build(&sorted));
    cache.push((key, Arc::downgrade(&table)));
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: usize, weight: u32) -> Vec<(String, u32)> {
        (0..n)
            .map(|i| (format!("10.0.{}.{}:80", i / 250, i % 250), weight))
            .collect()
    }

    fn shares(t: &Table) -> Vec<usize> {
        let mut s = vec![0; t.members.len()];
        for &slot in &t.slots {
            s[slot as usize] += 1;
        }
        s
    }

    #[test]
    fn every_slot_is_filled_and_shares_follow_weights() {
        let mut ms = members(3, 1);
        ms[0].1 = 2;
        let t = Table::build(&ms);
        assert_eq!(t.len(), 65_537);
        let s = shares(&t);
        assert_eq!(s.iter().sum::<usize>(), t.len(), "every slot filled");
        // Name order: "10.0.0.0:80" has weight 2.
        let i = t.members.iter().position(|m| m.1 == 2).unwrap();
        let one = s[(i + 1) % 3];
        assert!(s[i].abs_diff(2 * one) <= 2, "{s:?}");
    }

    #[test]
    fn the_size_follows_the_count_not_the_weights() {
        let light = Table::build(&members(100, 1));
        let heavy = Table::build(&members(100, 1000));
        assert_eq!(light.len(), heavy.len());
        assert_eq!(Table::build(&members(10_000, 1)).len(), 1_048_573);
    }

    #[test]
    fn a_key_has_an_order_of_distinct_members_and_keeps_it() {
        let t = Table::build(&members(5, 1));
        for key in 0..200u64 {
            let order: Vec<usize> = t.order(key, 5).collect();
            assert_eq!(order.len(), 5);
            let mut d = order.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 5);
            assert_eq!(order, t.order(key, 5).collect::<Vec<_>>());
        }
    }

    #[test]
    fn adding_a_member_moves_about_its_share() {
        let three = Table::build(&members(3, 1));
        let four = Table::build(&members(4, 1));
        let moved = (0..100_000u64)
            .filter(|&k| {
                let a = three.order(k, 1).next().unwrap();
                let b = four.order(k, 1).next().unwrap();
                three.members[a].0 != four.members[b].0
            })
            .count();
        assert!(
            (23_000..28_000).contains(&moved),
            "{moved} of 100,000 moved"
        );
    }

    #[test]
    fn the_cache_hands_out_one_table_per_member_set() {
        let a = table_for(&members(7, 3));
        let mut shuffled = members(7, 3);
        shuffled.reverse();
        let b = table_for(&shuffled);
        assert!(Arc::ptr_eq(&a, &b));
        let c = table_for(&members(7, 4));
        assert!(!Arc::ptr_eq(&a, &c));
    }
}
