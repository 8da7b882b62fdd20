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
        let key = RequestKey {
            hash: match self.cfg.policy.hash_key {
                HashKey::Path => e.path_hash,
                HashKey::PathQuery => e.route,
            },
        };
        let fresh = e.retry;
        let avoid = e.retry.then(|| e.tried.map(UpstreamId)).flatten();
        let target = e.route;
        if e.may_share {
            if let Some(conn) = self.shared_conn(client, target) {
                let u = self.upconns.get_mut(conn).expect("checked");
                let route = self.pool.route(u.upstream, target);
                let job = Job {
                    exchange: ex,
                    route,
                };
                if u.follow(job) == 2 {
                    self.shared_conns.push(conn);
                }
                let upstream = u.upstream;
                self.settle_session(client, ex, upstream);
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
        let home = self.session_home(client, ex);
        if home.is_none() && self.cfg.affinity.is_some() {
            if let Some(cold) = self.cold_home(client, ex) {
                self.pool.warm_home(cold, self.now);
            }
        }
        let placement = match home {
            Some(home) => self.pool.place_on(home, self.now, fresh),
            None => self.pool.place(key, self.now, fresh, avoid),
        };
        if self.pool.panicking() {
            self.figures.panic_placements += 1;
        }
        let waiter = Waiter {
            client,
            exchange: ex,
            since: self.now,
            key,
            fresh,
            avoid,
            flexible: home.is_none() && self.pool.flexible(),
        };
        self.carry_out(waiter, placement);
    }

    /// What placing `client`'s exchange `ex` needs to know (None: gone).
    fn placing(&self, client: ClientId, ex: ExchangeId) -> Option<Placing> {
        self.clients.get(client)?.session.placing(ex)
    }

    /// Put the exchange of `w` where `placement` says: on a connection, in
    /// a queue, or answered 503.
    fn carry_out(&mut self, w: Waiter, placement: Placement) {
        let (client, ex) = (w.client, w.exchange);
        let Some(Placing {
            route: target,
            may_share,
            ..
        }) = self.placing(client, ex)
        else {
            // Gone meanwhile: give back what the placement took.
            self.undo(placement);
            return;
        };
        // The session's cookie and hand-off, before the request goes out.
        if let Placement::Reuse { upstream, .. }
        | Placement::Connect { upstream }
        | Placement::ConnectEvicting { upstream, .. } = placement
        {
            self.settle_session(client, ex, upstream);
        }
        let (conn, upstream) = match placement {
            Placement::Reuse { upstream, conn } => {
                let route = self.pool.route(upstream, target);
                let (now, timeout) = (self.now, self.cfg.response_timeout);
                let Some(u) = self.upconns.get_mut(conn) else {
                    // Cannot happen: the pool only holds live connections.
                    self.fail_exchange(client, ex, ProxyError::NoUpstream);
                    return;
                };
                let job = Job {
                    exchange: ex,
                    route,
                };
                u.assign(client, job, now + timeout);
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                // Its idle multishot gives way to a limited one (see
                // `apply_upstream_recv`).
                self.redecide_upstream_recv(conn);
                (conn, upstream)
            }
            Placement::Connect { upstream } | Placement::ConnectEvicting { upstream, .. } => {
                if let Placement::ConnectEvicting { evict, .. } = placement {
                    // The pool no longer counts it.
                    self.discard_upstream(evict);
                }
                match self.open_upstream(upstream, client, ex, target) {
                    Ok(conn) => {
                        self.link(client, ex, conn);
                        (conn, upstream)
                    }
                    Err(e) => {
                        // A socket we could not make (out of descriptors,
                        // most likely) says nothing about the upstream.
                        self.pool.connect_abandoned(upstream);
                        self.fail_exchange(client, ex, ProxyError::ConnectFailed(e));
                        return;
                    }
                }
            }
            Placement::Wait { upstream } => {
                match self.pool.enqueue(upstream, w) {
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
        let route = self.pool.route(upstream, target);
        if may_share && self.pool.route_is_fast(route, self.now) {
            self.batch = Some(Batch {
                client,
                conn,
                turn: self.turn,
            });
        }
    }

    /// Give back what `placement` took from the pool (its exchange went
    /// away before it could use it).
    fn undo(&mut self, placement: Placement) {
        match placement {
            Placement::Reuse { upstream, conn } => {
                // Back to idle, as it was (its state and deadline were not
                // touched yet), unless the pool will not keep it.
                if self.pool.release(upstream, conn, true, self.now) == Release::Close {
                    self.discard_upstream(conn);
                }
                for idle in self.pool.take_evicted() {
                    self.discard_upstream(idle);
                }
            }
            Placement::Connect { upstream } => self.pool.connect_abandoned(upstream),
            Placement::ConnectEvicting { upstream, evict } => {
                self.pool.connect_abandoned(upstream);
                self.discard_upstream(evict);
            }
            Placement::Wait { .. } | Placement::Unavailable => {}
        }
    }

    /// `client`'s exchange `ex` is on `conn` now.
    fn link(&mut self, client: ClientId, ex: ExchangeId, conn: ConnId) {
        let Some(upstream) = self.upconns.get(conn).map(|u| u.upstream) else {
            return;
        };
        self.pool.exchange_started(upstream);
        let addr = self.pool.upstream(upstream).map(|u| u.spec.addr);
        if let Some(c) = self.clients.get_mut(client) {
            c.link(ex, conn);
            if let Some(addr) = addr {
                c.session.placed_on(ex, upstream.0, addr);
            }
        }
    }

    /// The connection this turn's shareable request of `client` for
    /// `target` may follow others on, if any (see the module doc).
    fn shared_conn(&self, client: ClientId, target: u64) -> Option<ConnId> {
        let b = self
            .batch
            .filter(|b| b.turn == self.turn && b.client == client)?;
        let u = self.upconns.get(b.conn)?;
        let usable = u.may_follow(client);
        let fast = self
            .pool
            .route_is_fast(self.pool.route(u.upstream, target), self.now);
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
        for w in self.pool.take_stranded(self.now) {
            if !self.waiter_alive(&w) {
                continue;
            }
            let placement = self.pool.place(w.key, self.now, w.fresh, w.avoid);
            self.carry_out(w, placement);
        }
        loop {
            let clients = &self.clients;
            let alive = |w: &Waiter| {
                clients
                    .get(w.client)
                    .is_some_and(|c| c.session.placing(w.exchange).is_some())
            };
            let Some((w, placement)) = self.pool.next_servable(self.now, alive) else {
                break;
            };
            self.figures
                .queue_wait
                .observe(self.now.saturating_duration_since(w.since));
            let client = w.client;
            self.carry_out(w, placement);
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
        for w in self.pool.expire_waiters(self.now, self.cfg.queue_timeout) {
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
        let (since, route) = self.upconns.get(conn)?.late_from()?;
        Some(since + self.pool.late_after(route))
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
        self.pool.exchanges_ended(upstream, moved, 0);
        self.wake(client);
    }
}
