//! Deadlines: the 100 ms tick (header, idle, request and upstream
//! timeouts, the drain deadline, the `Date`), and how long the ring may
//! sleep before something is due (late fronts, waiters).

use std::time::{Duration, Instant};

use super::client::IDLE_SPARE;
use super::core::{ClientId, ConnId, Core};
use super::upconn::UpState;
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
        if self.pools.has_waiters() || !self.deferred.is_empty() {
            for (i, pool) in self.pools.iter() {
                sooner(pool.next_quarantine_end(now));
                sooner(pool.next_opening_expiry(now));
                let timeout = self.pools.info(i).queue_timeout;
                sooner(pool.oldest_waiter().map(|t| t + timeout));
            }
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
        if unix_secs != self.date_secs {
            self.date_secs = unix_secs;
            self.shared.date.set(http_date(unix_secs));
        }
        if self.draining.is_some_and(|d| self.now >= d) {
            // The drain took too long: what is left is closed.
            self.for_each_client(Core::close_client);
        }
        if self.pools.has_waiters() {
            self.expire_waiters();
        }
        self.shrink_idle_clients();
        for client in self.overdue_clients() {
            self.client_overdue(client);
        }
        for conn in self.overdue_upstreams() {
            self.upstream_overdue(conn);
        }
        self.ping_idle_multiplexed();
    }

    /// Idle keep-alive clients give back what a large response needed.
    /// Done on the tick, not when a response ends, so that a client
    /// fetching large bodies back to back keeps them.
    fn shrink_idle_clients(&mut self) {
        for (_, c) in self.clients.iter_mut() {
            if c.sending == 0 && c.session.pending() == 0 {
                if c.spare.capacity() > IDLE_SPARE {
                    c.spare = Vec::new();
                }
                c.session.shrink_idle(IDLE_SPARE);
            }
        }
    }

    /// The client timeouts as they apply now.
    fn client_limits(&self) -> ClientLimits {
        ClientLimits {
            header: self.cfg.client_header_timeout,
            idle: self.idle_timeout(),
            tunnel_idle: self.cfg.client_idle_timeout,
            request: self.cfg.request_timeout,
        }
    }

    /// Client connections past one of their deadlines.
    fn overdue_clients(&self) -> Vec<ClientId> {
        let limits = self.client_limits();
        self.clients
            .iter()
            .filter(|(_, c)| c.overdue(self.now, &limits))
            .map(|(h, _)| h)
            .collect()
    }

    /// `client` is past a deadline: past the request deadline its
    /// exchanges are answered (or cut) and it closes; a head too slow gets
    /// a 408; anything else closes now.
    fn client_overdue(&mut self, client: ClientId) {
        let (now, limit) = (self.now, self.cfg.request_timeout);
        // An earlier entry's close may have taken this one with it.
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        if c.busy_late(now, limit) {
            // The upstream connections still working for it are dropped.
            c.busy_since = None;
            c.session.abandon(ProxyError::RequestDeadline);
            if !c.session.independent_exchanges() {
                let links = std::mem::take(&mut c.links);
                for (ex, conn) in links {
                    self.let_go(client, ex, conn, ProxyError::RequestDeadline);
                }
            }
            // (An HTTP/2 stream's connection goes as a cancelled one's.)
            self.wake(client);
        } else if c.session.has_partial_head() && c.head_since.is_some() {
            // After what the client is owed, then close; the timer is spent.
            c.head_since = None;
            c.session.on_header_timeout();
            self.wake(client);
        } else if c.session.says_goodbye() {
            // Idle HTTP/2: GOAWAY first, the close once it is out.
            self.wake(client);
        } else {
            if c.proxy_header.is_some() {
                // No (whole) PROXY header within the header timeout.
                self.figures.proxy_errors += 1;
            }
            let stall = c.session.stalled_since();
            if stall.is_some_and(|t| now >= t + self.cfg.client_idle_timeout) {
                // An HTTP/2 client that left a window shut.
                let mut h2 = self.shared.h2.get();
                h2.limits.window_stalls += 1;
                self.shared.h2.set(h2);
            }
            if let super::client::Transport::Tls(t) = &c.transport {
                if t.handshake_until.is_some() {
                    self.tls_failed(crate::tls::transport::Failure::HandshakeTimeout);
                }
            }
            self.close_client(client);
        }
    }

    /// Upstream connections past their deadline.
    fn overdue_upstreams(&self) -> Vec<ConnId> {
        self.upconns
            .iter()
            .filter(|(_, u)| u.deadline.is_some_and(|d| self.now >= d))
            .map(|(h, _)| h)
            .collect()
    }

    /// `conn` is past its deadline: a connect or a first byte that did not
    /// come fails its exchanges; an idle one is let go of.
    fn upstream_overdue(&mut self, conn: ConnId) {
        // An earlier entry's close may have taken this one with it.
        let Some(u) = self.upconns.get(conn) else {
            return;
        };
        match u.state {
            UpState::Connecting => self.connect_failed(conn, || ProxyError::ConnectTimeout),
            // Its streams are late one by one.
            UpState::Open if u.mux.is_some() => self.mux_overdue(conn),
            UpState::Open if !u.responded || u.write_failed => {
                self.abort_upstream(conn, ProxyError::ResponseTimeout);
            }
            // Kept idle long enough: the origin may drop it any moment.
            UpState::Idle => self.close_upstream(conn),
            UpState::Open => {}
        }
    }
}

/// The timeouts a client connection is held to.
pub(super) struct ClientLimits {
    /// For a request head, and between bytes of a body being dropped.
    pub header: Duration,
    /// For an idle keep-alive connection (shorter while retiring).
    pub idle: Duration,
    /// For a tunnel moving no byte, and a send the client takes nothing of.
    pub tunnel_idle: Duration,
    /// For the exchanges in progress (`--request-timeout`).
    pub request: Option<Duration>,
}
