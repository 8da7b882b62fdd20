//! Placing exchanges: which upstream connection an exchange goes on (a
//! connection of its own by default; behind another request of the same
//! client only where the route answers fast), what happens when there is
//! none (the waiting list), and the late-front rule for shared connections.

use std::collections::VecDeque;
use std::time::Instant;

use super::client::ClientConn;
use super::core::{ClientId, ConnId, Core};
use super::upstream::{Job, UpState, UPSTREAM_OUT_LIMIT};
use crate::agent::ExchangeId;
use crate::config::UpstreamId;
use crate::error::ProxyError;
use crate::pool::policy::RequestKey;
use crate::pool::Placement;

/// Waiters beyond this many get a 503 instead of a place in the queue.
const MAX_WAITERS: usize = 4096;
/// Requests of one client that may follow one another on one upstream
/// connection.
const MAX_SHARED: usize = 16;

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

/// An exchange waiting for an upstream connection to free up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Waiter {
    /// The upstream it is counted against (see `Pool::queue`).
    upstream: UpstreamId,
    client: ClientId,
    exchange: ExchangeId,
    /// Since when it waits (the queue-wait histogram).
    since: Instant,
}

impl Core {
    pub(super) fn place(&mut self, client: ClientId, ex: ExchangeId) {
        let Some(e) = self.clients.get(client).and_then(|c| c.agent.exchange(ex)) else {
            return;
        };
        if self.cfg.debug_panic_hash == Some(e.path_hash) {
            panic!("a request for --debug-panic-path");
        }
        let key = RequestKey {
            path_hash: e.path_hash,
        };
        let fresh = e.is_retry();
        let may_share = e.may_share();
        let target = e.route();
        if may_share {
            if let Some(conn) = self.shared_conn(client, target) {
                let u = self.upconns.get_mut(conn).expect("checked");
                let route = self.pool.route(u.upstream, target);
                u.jobs.push_back(Job {
                    exchange: ex,
                    route,
                });
                if u.jobs.len() == 2 {
                    self.shared_conns.push(conn);
                }
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                return;
            }
        }
        if self.idle_pass {
            // Not now (see Core::begin_idle_pass): after the pass.
            self.wait(client, ex, None);
            return;
        }
        let placement = self.pool.place(key, self.now, fresh);
        let (conn, upstream) = match placement {
            Placement::Reuse { upstream, conn } => {
                let conn = ConnId::from_bits(conn);
                let route = self.pool.route(upstream, target);
                let (now, timeout) = (self.now, self.cfg.response_timeout);
                let Some(u) = self.upconns.get_mut(conn) else {
                    // Cannot happen: the pool only holds live connections.
                    self.fail_exchange(client, ex, ProxyError::NoUpstream, false);
                    return;
                };
                u.state = UpState::Open;
                u.client = Some(client);
                u.jobs.push_back(Job {
                    exchange: ex,
                    route,
                });
                u.reused = true;
                u.responded = false;
                u.front_since = None;
                u.deadline = Some(now + timeout);
                self.link(client, ex, conn);
                self.hand_request(client, ex, conn);
                (conn, upstream)
            }
            Placement::Connect { upstream } | Placement::ConnectEvicting { upstream, .. } => {
                if let Placement::ConnectEvicting { evict, .. } = placement {
                    // The pool no longer counts it.
                    self.discard_upstream(ConnId::from_bits(evict));
                }
                match self.open_upstream(upstream, client, ex, target) {
                    Ok(conn) => {
                        self.link(client, ex, conn);
                        (conn, upstream)
                    }
                    Err(e) => {
                        self.pool.connect_failed(upstream, self.now);
                        self.fail_exchange(client, ex, ProxyError::ConnectFailed(e), false);
                        return;
                    }
                }
            }
            Placement::Wait { upstream } => {
                self.wait(client, ex, Some(upstream));
                return;
            }
            Placement::Unavailable => {
                self.fail_exchange(client, ex, ProxyError::NoUpstream, false);
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

    fn link(&mut self, client: ClientId, ex: ExchangeId, conn: ConnId) {
        if let Some(c) = self.clients.get_mut(client) {
            c.links.push((ex, conn));
        }
    }

    /// Put `client`'s exchange `ex` on the waiting list (counted against
    /// `upstream` when there is one), or answer 503 if it is full.
    fn wait(&mut self, client: ClientId, ex: ExchangeId, upstream: Option<UpstreamId>) {
        if self.waiters.len() >= MAX_WAITERS {
            self.fail_exchange(client, ex, ProxyError::NoUpstream, false);
            return;
        }
        let upstream = upstream.unwrap_or_default();
        self.pool.queue(upstream);
        self.waiters.push_back(Waiter {
            upstream,
            client,
            exchange: ex,
            since: self.now,
        });
    }

    /// The connection this turn's shareable request of `client` for
    /// `target` may follow others on, if any (see the module doc).
    fn shared_conn(&self, client: ClientId, target: u64) -> Option<ConnId> {
        let b = self
            .batch
            .filter(|b| b.turn == self.turn && b.client == client)?;
        let u = self.upconns.get(b.conn)?;
        let usable = u.client == Some(client)
            && matches!(u.state, UpState::Connecting | UpState::Open)
            && !u.late
            && !u.responded
            && u.jobs.len() < MAX_SHARED
            && u.out.len() < UPSTREAM_OUT_LIMIT;
        let fast = self
            .pool
            .route_is_fast(self.pool.route(u.upstream, target), self.now);
        (usable && fast).then_some(b.conn)
    }

    /// Report a failure of `client`'s exchange `ex` to its agent (which may
    /// queue it again: the retry is placed when the client is driven).
    pub(super) fn fail_exchange(
        &mut self,
        client: ClientId,
        ex: ExchangeId,
        err: ProxyError,
        reused: bool,
    ) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        c.links.retain(|&(e, _)| e != ex);
        match err {
            ProxyError::ClosedBeforeResponse => {
                c.agent.on_upstream_eof(ex, reused);
            }
            err => {
                c.agent.on_upstream_error(ex, err, reused);
            }
        }
        self.wake(client);
    }

    /// Upstream capacity freed up: give it to queued exchanges, oldest
    /// first.
    pub(super) fn serve_waiters(&mut self) {
        if self.idle_pass {
            return; // end_idle_pass serves them once the pass is over
        }
        while let Some(w) = self.waiters.pop_front() {
            self.pool.dequeue(w.upstream);
            let alive = self
                .clients
                .get(w.client)
                .is_some_and(|c: &ClientConn| c.agent.exchange(w.exchange).is_some());
            if !alive {
                continue;
            }
            let before = self.waiters.len();
            self.place(w.client, w.exchange);
            if self.waiters.len() > before {
                // Still no room: it went to the back (its wait counted from
                // the start); stop for now.
                if let Some(back) = self.waiters.back_mut() {
                    back.since = w.since;
                }
                break;
            }
            self.figures
                .queue_wait
                .observe(self.now.saturating_duration_since(w.since));
            self.wake(w.client);
        }
    }

    /// When the front exchange of shared connection `conn` is late, if it
    /// can be (still shared, front on the wire, no answer yet).
    pub(super) fn late_at(&self, conn: ConnId) -> Option<Instant> {
        let u = self.upconns.get(conn)?;
        let front = u.jobs.front()?;
        if u.state != UpState::Open || u.jobs.len() < 2 || u.late || u.responded {
            return None;
        }
        Some(u.front_since? + self.pool.late_after(front.route))
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
        let Some(client) = u.client else {
            return;
        };
        u.late = true;
        let followers: VecDeque<Job> = u.jobs.drain(1..).collect();
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        for job in followers {
            if c.agent.detach(job.exchange) {
                c.links.retain(|&(e, _)| e != job.exchange);
                self.figures.resent += 1;
            } else {
                // Cannot be taken back (cannot happen for shareable
                // requests): it stays where it is.
                u.jobs.push_back(job);
            }
        }
        self.wake(client);
    }
}
