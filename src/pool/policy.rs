//! The selection interface every balancing policy implements, and the
//! choice of policy (`--balance`).
//!
//! A policy sees a read-only view of each upstream: its stable id, weight,
//! in-flight exchanges and whether it is up and has room, and picks one. It
//! keeps whatever state it needs (round-robin scores, a hash ring) keyed by
//! upstream id, never by position, and is told of every change to the
//! upstream set ([`Change`]), so a reload that adds or reweights one
//! upstream leaves the others' state alone. It never touches connections.

use crate::spec::{Balance, PolicyConfig, UpstreamId};

/// What a policy may know about one upstream when choosing.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// Stable id (the key of any per-upstream state a policy keeps).
    pub id: UpstreamId,
    /// Configured weight, at least 1.
    pub weight: u32,
    /// Exchanges on its connections now (a connection may carry several
    /// of one client's pipelined requests).
    pub inflight: usize,
    /// Requests waiting in its queue.
    pub queued: usize,
    /// Up: not removed, not marked down by failures or health checks.
    pub up: bool,
    /// Up and able to take a request now (an idle connection to reuse, or
    /// below its limits for opening one).
    pub room: bool,
}

impl Candidate {
    /// What it has to do: exchanges in flight and requests waiting for it
    /// (a pinned policy's requests wait for their upstream; they are its
    /// load as much as those on the wire).
    pub fn load(&self) -> u64 {
        (self.inflight + self.queued) as u64
    }

    /// `self` carries less load per unit of weight than `other`.
    pub fn lighter_than(&self, other: &Candidate) -> bool {
        // load/weight compared without division.
        self.load() * u64::from(other.weight) < other.load() * u64::from(self.weight)
    }

    /// The same load per unit of weight as `other`.
    pub fn as_loaded_as(&self, other: &Candidate) -> bool {
        self.load() * u64::from(other.weight) == other.load() * u64::from(self.weight)
    }
}

/// Facts about the request being placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestKey {
    /// Hash of what URL-hash balancing keys on (`--hash-key`).
    pub hash: u64,
}

/// A change to the upstream set a policy is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change<'a> {
    /// A new upstream (at start, or by a reload), by its id, the name it
    /// was configured by (stable across restarts, so hashes keep their
    /// mapping) and weight.
    Added {
        id: UpstreamId,
        name: &'a str,
        weight: u32,
    },
    /// Gone from the configuration.
    Removed { id: UpstreamId },
    /// Its weight changed.
    Reweighted { id: UpstreamId, weight: u32 },
    /// It came back up.
    Up { id: UpstreamId },
    /// It was marked down (failures, or a health check).
    Down { id: UpstreamId },
}

/// A balancing policy.
pub trait Policy: Send {
    /// Pick the index of a candidate that is `up`, or None if none is.
    /// A *flexible* policy is only ever offered candidates with room (the
    /// pool masks `up` with `room`) unless none has any, when it picks the
    /// queue to wait in; a pinned one sees every up candidate and its pick
    /// is final: the request waits for that upstream if it has no room.
    fn pick(&mut self, candidates: &[Candidate], key: RequestKey) -> Option<usize>;
    /// Whether any upstream with room will do (`wrr`, `least-conn`), or the
    /// choice is tied to the request (`url-hash`) or to a load sample
    /// (`random2`) and the request waits for the upstream chosen.
    fn flexible(&self) -> bool;
    /// The upstream set changed.
    fn changed(&mut self, change: Change<'_>);
}

/// A fresh policy for `cfg`, seeded with `seed` where it draws random
/// numbers (each worker passes its own).
pub fn build(cfg: &PolicyConfig, seed: u64) -> Box<dyn Policy> {
    match cfg.balance {
        Balance::Wrr => Box::new(super::wrr::WeightedRoundRobin::default()),
        Balance::LeastConn => Box::new(super::least_conn::LeastConn::default()),
        Balance::UrlHash => Box::new(super::url_hash::UrlHash::new(cfg.hash_balance)),
        Balance::Random2 => Box::new(super::random2::RandomTwo::new(seed)),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers the policies' tests share.
    use super::*;

    pub fn cand(id: u32, weight: u32) -> Candidate {
        Candidate {
            id: UpstreamId(id),
            weight,
            inflight: 0,
            queued: 0,
            up: true,
            room: true,
        }
    }

    /// Tell `p` about every candidate of `c` (named `u<id>`).
    pub fn announce(p: &mut dyn Policy, c: &[Candidate]) {
        for x in c {
            let name = format!("u{}", x.id.0);
            p.changed(Change::Added {
                id: x.id,
                name: &name,
                weight: x.weight,
            });
        }
    }

    /// How many of `n` picks land on each candidate.
    pub fn spread(p: &mut dyn Policy, c: &[Candidate], n: usize) -> Vec<usize> {
        let mut got = vec![0; c.len()];
        for i in 0..n {
            let key = RequestKey {
                hash: crate::codec::path_hash(format!("/{i}").as_bytes()),
            };
            got[p.pick(c, key).expect("one is up")] += 1;
        }
        got
    }
}
