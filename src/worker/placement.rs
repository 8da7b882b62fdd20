//! Placing exchanges: which upstream connection an exchange goes on (a
//! connection of its own by default; behind another request of the same
//! client only where the route answers fast), what happens when there is
//! none (the waiting list), and the late-front rule for shared connections.

use std::time::Instant;

use super::core::{ClientId, ConnId, Core, Placement, Waiter};
use super::upconn::Job;
use crate::error::ProxyError;
use crate::pool::policy::RequestKey;
use crate::pool::{QueueRefused, Release};
use crate::session::{ExchangeId, Placing};
use crate::spec::HashKey;
use crate::spec::UpstreamId;

/// The upstream connection that the next shareable requests of the client
/// being driven may follow. One per worker: a batch forms while one
/// client's requests are placed, and one client placing after another just
/// starts its own.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Batch {
    client: ClientId,
    conn: ConnId,
    turn: u64,
}

impl Core {
    pub(super) fn place(&mut self, client: ClientId, ex: ExchangeId) {
        let Some(e) = self.placing(client, ex) else {
            return;
        };
        if self.cfg.debug_panic_hash == Some(e.path_hash) {
            panic!("a request for --debug-panic-path");
        }
        let Some(pool) = self.pools.index_of(e.backend) else {
            // Its backend went with a reload since its head was read.
            self.fail_exchange(client, ex, ProxyError::NoUpstream);
            return;
        };
        let key = RequestKey {
            hash: match self.pools.info(pool).policy.hash_key {
                HashKey::Path => e.path_hash,
                HashKey::PathQuery => e.route,
            },
        };
        let fresh = e.retry;
        let avoid = e.retry.then(|| e.tried.map(UpstreamId)).flatten();
        let target = e.route;
        let timeout = e.response_timeout.unwrap_or(self.cfg.response_timeout);
        if e.may_share {
            if let Some(conn) = self.shared_conn(client, pool, target) {
                let u = self.upconns.get_mut(conn).expect("checked");
                let route = self.pools[pool].route(u.upstream, target);
                let job = Job {
                    exchange: ex,
                    route,
                    timeout,
                    handed: false,
                };
                if u.follow(job) == 2 {
                    self.shared_conns.push(conn);
                }
                let upstream = u.upstream;
                self.settle_session(client, ex, pool, upstream);
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                return;
            }
        }
        if self.idle_pass {
            // Not now (see Core::begin_idle_pass): after the pass.
            self.deferred.push((client, ex));
            return;
        }
        // A session whose home can take it goes home, and waits for it. A
        // retry goes home too, on a fresh connection (most retries follow
        // an idle connection the origin had just closed; a home that keeps
        // failing goes down and is no longer pinned).
        let home = self.session_home(client, ex, pool);
        if home.is_none() && self.cfg.affinity.is_some() {
            if let Some(cold) = self.cold_home(client, ex, pool) {
                self.pools[pool].warm_home(cold, self.now);
            }
        }
        let placement = match home {
            Some(home) => self.pools[pool].place_on(home, self.now, fresh),
            None => self.pools[pool].place(key, self.now, fresh, avoid),
        };
        if self.pools[pool].panicking() {
            self.figures.panic_placements += 1;
        }
        let waiter = Waiter {
            client,
            exchange: ex,
            since: self.now,
            key,
            fresh,
            avoid,
            flexible: home.is_none() && self.pools[pool].flexible(),
        };
        self.carry_out(pool, waiter, placement);
    }

    /// What placing `client`'s exchange `ex` needs to know (None: gone).
    fn placing(&self, client: ClientId, ex: ExchangeId) -> Option<Placing> {
        self.clients.get(client)?.session.placing(ex)
    }

    /// Put the exchange of `w` where `placement` (made by pool `pool`)
    /// says: on a connection, in a queue, or answered 503.
    fn carry_out(&mut self, pool: usize, w: Waiter, placement: Placement) {
        let (client, ex) = (w.client, w.exchange);
        let Some(Placing {
            route: target,
            may_share,
            response_timeout,
            ..
        }) = self.placing(client, ex)
        else {
            // Gone meanwhile: give back what the placement took.
            self.undo(pool, placement);
            return;
        };
        let timeout = response_timeout.unwrap_or(self.cfg.response_timeout);
        // The session's cookie and hand-off, before the request goes out.
        if let Placement::Reuse { upstream, .. }
        | Placement::Join { upstream, .. }
        | Placement::Connect { upstream }
        | Placement::ConnectEvicting { upstream, .. } = placement
        {
            self.settle_session(client, ex, pool, upstream);
        }
        let (conn, upstream) = match placement {
            Placement::Reuse { upstream, conn } => {
                let route = self.pools[pool].route(upstream, target);
                let now = self.now;
                let Some(u) = self.upconns.get_mut(conn) else {
                    // Cannot happen: the pool only holds live connections.
                    self.fail_exchange(client, ex, ProxyError::NoUpstream);
                    return;
                };
                let job = Job {
                    exchange: ex,
                    route,
                    timeout,
                    handed: false,
                };
                if u.mux.is_some() {
                    self.mux_join(conn, client, job);
                } else {
                    u.assign(client, job, now);
                }
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                // Its idle multishot gives way to a limited one (see
                // `apply_upstream_recv`).
                self.redecide_upstream_recv(conn);
                (conn, upstream)
            }
            Placement::Join { upstream, conn } => {
                let job = Job {
                    exchange: ex,
                    route: self.pools[pool].route(upstream, target),
                    timeout,
                    handed: false,
                };
                self.mux_join(conn, client, job);
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                // (No batch: its requests share the connection anyway.)
                return;
            }
            Placement::Connect { upstream } | Placement::ConnectEvicting { upstream, .. } => {
                if let Placement::ConnectEvicting { evict, .. } = placement {
                    // The pool no longer counts it.
                    self.discard_upstream(evict);
                }
                let job = Job {
                    exchange: ex,
                    route: self.pools[pool].route(upstream, target),
                    timeout,
                    handed: false,
                };
                match self.open_upstream(pool, upstream, client, job) {
                    Ok(conn) => {
                        self.link(client, ex, conn);
                        if self.upconns.get(conn).is_some_and(|u| u.mux.is_some()) {
                            // (Nothing is handed while it connects: its
                            // request goes once it is open, mux_opened.)
                            self.hand_request(client, ex, conn);
                        }
                        (conn, upstream)
                    }
                    Err(e) => {
                        // A socket we could not make (out of descriptors,
                        // most likely) says nothing about the upstream.
                        self.pools[pool].connect_abandoned(upstream);
                        self.fail_exchange(client, ex, ProxyError::ConnectFailed(e));
                        return;
                    }
                }
            }
            Placement::Wait { upstream } => {
                match self.pools[pool].enqueue(upstream, w) {
                    Ok(()) => {}
                    Err(QueueRefused::Full) => {
                        self.figures.queue_full += 1;
                        self.fail_exchange(client, ex, ProxyError::QueueFull);
                    }
                    Err(QueueRefused::Gone) => {
                        self.fail_exchange(client, ex, ProxyError::NoUpstream);
                    }
                }
                return;
            }
            Placement::Unavailable => {
                self.fail_exchange(client, ex, ProxyError::NoUpstream);
                return;
            }
        };
        // Later shareable requests of this turn may follow this one if its
        // route answers fast.
        let route = self.pools[pool].route(upstream, target);
        if may_share && self.pools[pool].route_is_fast(route, self.now) {
            self.batch = Some(Batch {
                client,
                conn,
                turn: self.turn,
            });
        }
    }

    /// Give back what `placement` took from the pool (its exchange went
    /// away before it could use it).
    fn undo(&mut self, pool: usize, placement: Placement) {
        match placement {
            Placement::Reuse { upstream, conn } => {
                // Back to idle, as it was (its state and deadline were not
                // touched yet), unless the pool will not keep it.
                if self.pools[pool].release(upstream, conn, true, self.now) == Release::Close {
                    self.discard_upstream(conn);
                }
                for idle in self.pools[pool].take_evicted() {
                    self.discard_upstream(idle);
                }
            }
            Placement::Connect { upstream } => self.pools[pool].connect_abandoned(upstream),
            // (Joining took nothing from the pool.)
            Placement::Join { .. } => {}
            Placement::ConnectEvicting { upstream, evict } => {
                self.pools[pool].connect_abandoned(upstream);
                self.discard_upstream(evict);
            }
            Placement::Wait { .. } | Placement::Unavailable => {}
        }
    }

    /// `client`'s exchange `ex` is on `conn` now.
    fn link(&mut self, client: ClientId, ex: ExchangeId, conn: ConnId) {
        let Some((pool, upstream)) = self.upconns.get(conn).map(|u| (u.pool, u.upstream)) else {
            return;
        };
        self.pools[pool].exchange_started(upstream);
        let addr = self.pools[pool].upstream(upstream).map(|u| u.spec.addr);
        if let Some(c) = self.clients.get_mut(client) {
            c.link(ex, conn);
            if let Some(addr) = addr {
                c.session.placed_on(ex, upstream.0, addr);
            }
        }
    }

    /// The connection this turn's shareable request of `client` for
    /// `target` (in pool `pool`) may follow others on, if any (see the
    /// module doc).
    fn shared_conn(&self, client: ClientId, pool: usize, target: u64) -> Option<ConnId> {
        let b = self
            .batch
            .filter(|b| b.turn == self.turn && b.client == client)?;
        let u = self.upconns.get(b.conn).filter(|u| u.pool == pool)?;
        let usable = u.may_follow(client);
        let p = &self.pools[pool];
        let fast = p.route_is_fast(p.route(u.upstream, target), self.now);
        (usable && fast).then_some(b.conn)
    }

    /// Report a failure of `client`'s exchange `ex` to its agent (which may
    /// queue it again: the retry is placed when the client is driven).
    pub(super) fn fail_exchange(&mut self, client: ClientId, ex: ExchangeId, err: ProxyError) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        c.unlink(ex);
        match err {
            ProxyError::ClosedBeforeResponse => {
                c.session.on_upstream_eof(ex);
            }
            err => {
                c.session.on_upstream_error(ex, err);
            }
        }
        self.wake(client);
    }

    /// Upstream capacity freed up: give it to queued exchanges, oldest
    /// first (see the pool's module doc); waiters of upstreams that went
    /// down are placed again.
    pub(super) fn serve_waiters(&mut self) {
        if self.idle_pass {
            return; // end_idle_pass serves them once the pass is over
        }
        for (client, ex) in std::mem::take(&mut self.deferred) {
            self.place(client, ex);
        }
        for pool in 0..self.pools.len() {
            self.serve_waiters_of(pool);
        }
    }

    /// [`Core::serve_waiters`] for the waiters of pool `pool`.
    fn serve_waiters_of(&mut self, pool: usize) {
        for w in self.pools[pool].take_stranded(self.now) {
            if !self.waiter_alive(&w) {
                continue;
            }
            let placement = self.pools[pool].place(w.key, self.now, w.fresh, w.avoid);
            self.carry_out(pool, w, placement);
        }
        loop {
            let clients = &self.clients;
            let alive = |w: &Waiter| {
                clients
                    .get(w.client)
                    .is_some_and(|c| c.session.placing(w.exchange).is_some())
            };
            let Some((w, placement)) = self.pools[pool].next_servable(self.now, alive) else {
                break;
            };
            self.figures
                .queue_wait
                .observe(self.now.saturating_duration_since(w.since));
            let client = w.client;
            self.carry_out(pool, w, placement);
            self.wake(client);
        }
    }

    fn waiter_alive(&self, w: &Waiter) -> bool {
        self.clients
            .get(w.client)
            .is_some_and(|c| c.session.placing(w.exchange).is_some())
    }

    /// Waiters past the queue timeout get 503.
    pub(super) fn expire_waiters(&mut self) {
        let mut expired = Vec::new();
        for pool in 0..self.pools.len() {
            let timeout = self.pools.info(pool).queue_timeout;
            expired.extend(self.pools[pool].expire_waiters(self.now, timeout));
        }
        for w in expired {
            if !self.waiter_alive(&w) {
                continue;
            }
            self.figures
                .queue_wait
                .observe(self.now.saturating_duration_since(w.since));
            self.figures.queue_timeouts += 1;
            let client = w.client;
            self.fail_exchange(client, w.exchange, ProxyError::QueueTimeout);
        }
    }

    /// When the front exchange of shared connection `conn` is late, if it
    /// can be (still shared, front on the wire, no answer yet).
    pub(super) fn late_at(&self, conn: ConnId) -> Option<Instant> {
        let u = self.upconns.get(conn)?;
        let (since, route) = u.late_from()?;
        Some(since + self.pools[u.pool].late_after(route))
    }

    /// Shared connections whose front is late: the exchanges behind it go
    /// on connections of their own.
    pub(super) fn check_late(&mut self) {
        let mut i = 0;
        while i < self.shared_conns.len() {
            let conn = self.shared_conns[i];
            let alive = self
                .upconns
                .get(conn)
                .is_some_and(|u| u.jobs.len() > 1 && !u.late);
            if !alive {
                self.shared_conns.swap_remove(i);
                continue;
            }
            match self.late_at(conn) {
                Some(at) if self.now >= at => {
                    self.shared_conns.swap_remove(i);
                    self.send_followers_elsewhere(conn);
                }
                _ => i += 1,
            }
        }
    }

    fn send_followers_elsewhere(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let Some(client) = u.client.filter(|&c| self.clients.contains(c)) else {
            return;
        };
        let c = self.clients.get_mut(client).expect("checked");
        let followers = u.take_followers();
        let upstream = u.upstream;
        let mut moved = 0;
        for job in followers {
            if c.session.detach(job.exchange) {
                c.unlink(job.exchange);
                self.figures.resent += 1;
                moved += 1;
            } else {
                // Cannot be taken back (cannot happen for shareable
                // requests): it stays where it is.
                u.jobs.push_back(job);
            }
        }
        self.pools[u.pool].exchanges_ended(upstream, moved, 0);
        self.wake(client);
    }
}
