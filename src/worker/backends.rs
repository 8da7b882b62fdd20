//! The worker's backends: a pool each (the default backend's first), found
//! by a backend's stable id or by one of its upstreams.
//!
//! A pool is kept in its place for as long as the worker runs: an upstream
//! connection names its pool by index, and a backend a reload removes is
//! only emptied (its connections close as their exchanges end); the same
//! name configured again takes its place back.

use std::collections::HashMap;
use std::ops::{Index, IndexMut};
use std::sync::Arc;
use std::time::Duration;

use super::core::{ConnId, Pool};
use crate::config::{Backend, Config};
use crate::pool::policy;
use crate::spec::{BackendId, PolicyConfig, ProxyVersion, UpstreamId};

/// What the worker keeps of a backend beside its pool.
pub(crate) struct BackendInfo {
    pub id: BackendId,
    pub name: Arc<str>,
    pub queue_timeout: Duration,
    pub send_proxy: Option<ProxyVersion>,
    /// Gone from the configuration: it takes no new exchange.
    pub removed: bool,
    pub policy: PolicyConfig,
    settings: crate::spec::PoolSettings,
}

/// Every backend's pool, in a fixed place.
pub(crate) struct Backends {
    pools: Vec<Pool>,
    info: Vec<BackendInfo>,
    /// Which pool has each upstream (upstream ids are not shared between
    /// backends).
    by_upstream: HashMap<UpstreamId, usize>,
}

impl Backends {
    /// The pools of `cfg`'s backends (policies seeded by `seed`).
    pub fn new(cfg: &Config, seed: impl Fn() -> u64) -> Backends {
        let mut b = Backends {
            pools: Vec::new(),
            info: Vec::new(),
            by_upstream: HashMap::new(),
        };
        for backend in cfg.backend_list() {
            b.push(backend, &seed);
        }
        b.index_upstreams();
        b
    }

    fn push(&mut self, backend: Backend, seed: &impl Fn() -> u64) {
        let pool = Pool::new(
            &backend.upstreams,
            backend.pool,
            policy::build(&backend.policy, seed()),
        );
        self.pools.push(pool);
        self.info.push(BackendInfo {
            id: backend.id,
            name: backend.name,
            queue_timeout: backend.queue_timeout,
            send_proxy: backend.send_proxy,
            removed: false,
            policy: backend.policy,
            settings: backend.pool,
        });
    }

    fn index_upstreams(&mut self) {
        self.by_upstream.clear();
        for (i, pool) in self.pools.iter().enumerate() {
            for u in pool.upstreams() {
                self.by_upstream.insert(u.spec.id, i);
            }
        }
    }

    /// Switch to `cfg`'s backends (a reload): a backend that stays keeps
    /// its pool (connections, counts, health, warmth); a new one gets a
    /// pool; a removed one is emptied. Returns the idle connections to
    /// close now.
    pub fn apply(
        &mut self,
        cfg: &Config,
        now: std::time::Instant,
        seed: impl Fn() -> u64,
    ) -> Vec<ConnId> {
        let mut close = Vec::new();
        let wanted = cfg.backend_list();
        for info in &mut self.info {
            info.removed = !wanted.iter().any(|b| b.id == info.id);
        }
        for backend in wanted {
            match self.info.iter().position(|i| i.id == backend.id) {
                Some(at) => {
                    let pool = &mut self.pools[at];
                    if self.info[at].policy != backend.policy {
                        pool.set_policy(policy::build(&backend.policy, seed()));
                    }
                    close.extend(pool.apply(&backend.upstreams, backend.pool, now));
                    if self.info[at].send_proxy != backend.send_proxy {
                        // Idle connections began (or did not begin) with a
                        // PROXY header: none fits what is sent now.
                        close.extend(pool.close_idle());
                    }
                    let info = &mut self.info[at];
                    info.name = backend.name;
                    info.queue_timeout = backend.queue_timeout;
                    info.send_proxy = backend.send_proxy;
                    info.policy = backend.policy;
                    info.settings = backend.pool;
                }
                None => self.push(backend, &seed),
            }
        }
        for (pool, info) in self.pools.iter_mut().zip(&self.info) {
            if info.removed {
                close.extend(pool.apply(&[], info.settings, now));
            }
        }
        self.index_upstreams();
        close
    }

    /// The pool of the backend with id `id`, if it is configured.
    pub fn index_of(&self, id: BackendId) -> Option<usize> {
        if id == BackendId::DEFAULT {
            return Some(0); // always first
        }
        self.info.iter().position(|i| i.id == id && !i.removed)
    }

    /// The pool that has `upstream`.
    pub fn of_upstream(&self, upstream: UpstreamId) -> Option<usize> {
        self.by_upstream.get(&upstream).copied()
    }

    /// What the worker keeps of backend `i`.
    pub fn info(&self, i: usize) -> &BackendInfo {
        &self.info[i]
    }

    /// How many pools there are.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Every pool, with its place.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Pool)> {
        self.pools.iter().enumerate()
    }

    /// Every pool, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pool> {
        self.pools.iter_mut()
    }

    /// Whether any request waits in any pool.
    pub fn has_waiters(&self) -> bool {
        self.pools.iter().any(Pool::has_waiters)
    }

    /// Requests waiting, in all.
    pub fn waiting(&self) -> usize {
        self.pools.iter().map(Pool::waiting).sum()
    }
}

impl Index<usize> for Backends {
    type Output = Pool;

    fn index(&self, i: usize) -> &Pool {
        &self.pools[i]
    }
}

impl IndexMut<usize> for Backends {
    fn index_mut(&mut self, i: usize) -> &mut Pool {
        &mut self.pools[i]
    }
}
