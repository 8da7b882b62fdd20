//! Deadlines: the 100 ms tick (header, idle, request and upstream
//! timeouts, the drain deadline, the `Date`), and how long the ring may
//! sleep before something is due (late fronts, waiters).

use std::time::{Duration, Instant};

use super::client::IDLE_SPARE;
use super::core::{ClientId, ConnId, Core};
use super::upstream::UpState;
use crate::codec::date::http_date;
use crate::error::ProxyError;

impl Core {
    /// How long the next wait may sleep at most: until the earliest late
    /// bound of a shared connection or, with waiters, the moment an idle
    /// connection leaves its quarantine or an opening one stops counting;
    /// otherwise until a completion (the tick comes every 100 ms).
    pub(crate) fn next_wake(&self, now: Instant) -> Option<Duration> {
        let mut wake: Option<Instant> = None;
        let mut sooner = |at: Option<Instant>| {
            if let Some(at) = at {
                wake = Some(wake.map_or(at, |w| w.min(at)));
            }
        };
        if self.pool.has_waiters() || !self.deferred.is_empty() {
            sooner(self.pool.next_quarantine_end(now));
            sooner(self.pool.next_opening_expiry(now));
            sooner(
                self.pool
                    .oldest_waiter()
                    .map(|t| t + self.cfg.queue_timeout),
            );
        }
        for &conn in &self.shared_conns {
            sooner(self.late_at(conn));
        }
        wake.map(|at| at.saturating_duration_since(now))
    }

    /// The tick: refresh the `Date`, and act on every deadline that passed.
    pub(super) fn on_tick(&mut self) {
        self.on_tick_at(super::unix_secs());
    }

    /// [`Core::on_tick`] with the wall clock given (for tests).
    pub(crate) fn on_tick_at(&mut self, unix_secs: u64) {
        let now = self.now;
        if unix_secs != self.date_secs {
            self.date_secs = unix_secs;
            self.shared.date.set(http_date(unix_secs));
        }
        if self.draining.is_some_and(|d| now >= d) {
            // The drain took too long: what is left is closed.
            let all: Vec<ClientId> = self.clients.iter().map(|(h, _)| h).collect();
            for client in all {
                self.close_client(client);
            }
        }
        let (header_timeout, idle_timeout, request_timeout) = (
            self.cfg.client_header_timeout,
            self.idle_timeout(),
            self.cfg.request_timeout,
        );
        if self.pool.has_waiters() {
            self.expire_waiters();
        }
        let mut expired: Vec<ClientId> = Vec::new();
        for (client, c) in self.clients.iter_mut() {
            if c.sending == 0 && c.agent.pending() == 0 {
                // Idle keep-alive clients give back what a large response
                // needed. Done here, not when a response ends, so that a
                // client fetching large bodies back to back keeps them.
                if c.spare.capacity() > IDLE_SPARE {
                    c.spare = Vec::new();
                }
                c.agent.shrink_idle(IDLE_SPARE);
            }
            let head_late = c.head_since.is_some_and(|t| now >= t + header_timeout);
            // The rest of an answered body has as long as a head to keep
            // coming; a lingering close, until the client goes quiet.
            let discard_late = c.agent.is_discarding() && now >= c.last_use + header_timeout;
            let linger_over = c.lingering.is_some_and(|since| {
                now >= since + super::client::LINGER_MAX
                    || now >= since.max(c.last_use) + super::client::LINGER_QUIET
            });
            // (A retiring worker's grace is for idle keep-alive connections;
            // tunnels and stalled sends keep the configured timeout.)
            let idle_late = (c.agent.is_idle() && now >= c.idle_since + idle_timeout
                || c.agent.is_tunnel() && now >= c.idle_since + self.cfg.client_idle_timeout)
                && c.sending == 0
                && c.queue.is_empty();
            // A client that has taken no bytes of a send for as long: the
            // send is cancelled with the close (it pins buffers).
            let send_stalled = c.sending > 0 && now >= c.send_since + self.cfg.client_idle_timeout;
            // A tunnel lives as long as its two ends want (and move bytes).
            let busy_late = !c.agent.is_tunnel()
                && request_timeout
                    .is_some_and(|limit| c.busy_since.is_some_and(|t| now >= t + limit));
            if head_late || idle_late || busy_late || send_stalled || discard_late || linger_over {
                expired.push(client);
            }
        }
        for client in expired {
            // An earlier entry's close may have taken this one with it.
            let Some(c) = self.clients.get_mut(client) else {
                continue;
            };
            let busy_late = !c.agent.is_tunnel()
                && request_timeout
                    .is_some_and(|limit| c.busy_since.is_some_and(|t| now >= t + limit));
            if busy_late {
                // Past the request deadline: answer (or cut) and close; the
                // upstream connections still working for it are dropped.
                c.busy_since = None;
                c.agent.abandon(ProxyError::RequestDeadline);
                let links = std::mem::take(&mut c.links);
                for (_, conn) in links {
                    self.abort_upstream(conn, ProxyError::RequestDeadline);
                }
                self.wake(client);
            } else if c.agent.has_partial_head() && c.head_since.is_some() {
                // Slow or stalled head: 408 (after what the client is owed),
                // then close; the timer is spent.
                c.head_since = None;
                c.agent.on_header_timeout();
                self.wake(client);
            } else {
                self.close_client(client);
            }
        }
        let expired: Vec<ConnId> = self
            .upconns
            .iter()
            .filter(|(_, u)| u.deadline.is_some_and(|d| now >= d))
            .map(|(h, _)| h)
            .collect();
        for conn in expired {
            // An earlier entry's close may have taken this one with it.
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            match u.state {
                UpState::Connecting => {
                    let upstream = u.upstream;
                    self.pool.connect_failed(upstream, now);
                    let client = u.client;
                    let jobs = std::mem::take(&mut u.jobs);
                    self.pool.exchanges_ended(upstream, jobs.len(), 0);
                    self.discard_upstream(conn);
                    if let Some(client) = client {
                        for job in jobs {
                            let err = ProxyError::ConnectTimeout;
                            self.fail_exchange(client, job.exchange, err);
                        }
                    }
                    self.wake_waiters();
                }
                UpState::Open if !u.responded || u.write_failed => {
                    self.abort_upstream(conn, ProxyError::ResponseTimeout);
                }
                // Kept idle long enough: the origin may drop it any moment.
                UpState::Idle => self.close_upstream(conn),
                UpState::Open => {}
            }
        }
    }
}
