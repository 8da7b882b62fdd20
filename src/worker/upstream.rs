//! The upstream side of the core: connecting, writing requests, splitting
//! what an origin sends among the client's exchanges on the connection,
//! giving the connection back to the pool or closing it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use super::client::{seal_output, RecvCtl, KEEP_SPARE};
use super::core::{Action, ClientId, ConnId, Core, Recv, Target};
use crate::agent::{ExchangeId, UpstreamFate};
use crate::error::ProxyError;
use crate::pool::routes::RouteKey;
use crate::pool::{Release, SURPLUS_LINGER};
use crate::reactor::Seg;
use crate::spec::UpstreamId;

/// Request bytes queued on an upstream connection before the client is
/// paused.
pub(super) const UPSTREAM_OUT_LIMIT: usize = 256 * 1024;
/// Response body pieces at least this long go to the client straight from
/// the receive buffer; shorter ones are cheaper copied.
const LEND_MIN: usize = 4096;

/// How long an idle connection is kept to an origin that announced
/// `Keep-Alive: timeout=secs`: a second less (half of it for a timeout of
/// a second or two), so that a request is never sent just as the origin
/// closes (a POST crossing that close cannot be sent again: 502). The
/// worker's tick checks idle deadlines every 100 ms.
fn idle_limit(secs: u32) -> std::time::Duration {
    let ms = u64::from(secs) * 1000;
    std::time::Duration::from_millis(ms.saturating_sub(1000).max(ms / 2))
}

/// One of the client's exchanges on an upstream connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    pub exchange: ExchangeId,
    pub route: RouteKey,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    /// Connect in flight.
    Connecting,
    /// Connected, carrying the exchanges in `jobs`.
    Open,
    /// In the idle pool.
    Idle,
}

/// A connection to an origin.
pub(crate) struct UpstreamConn {
    pub(super) fd: OwnedFd,
    pub(super) upstream: UpstreamId,
    pub(super) state: UpState,
    /// The one client whose exchanges this connection carries; None while
    /// idle. INVARIANT: `jobs` is empty when this is None.
    pub(super) client: Option<ClientId>,
    /// That client's exchanges here, in the order their requests were
    /// written; the front one is reading its response.
    pub(super) jobs: VecDeque<Job>,
    pub(super) recv: RecvCtl,
    /// Request bytes waiting to be sent.
    pub(super) out: Vec<u8>,
    pub(super) sending: usize,
    pub(super) spare: Vec<u8>,
    /// The front exchange got the connection from the idle pool.
    pub(super) reused: bool,
    /// The front exchange has received a response byte.
    pub(super) responded: bool,
    /// The origin has answered on this connection at least once.
    pub(super) proven: bool,
    /// The exchanges behind the front were sent elsewhere because the
    /// front was late: the connection closes after the front's response.
    pub(super) late: bool,
    /// Our write side is shut (a tunnel whose client half-closed).
    pub(super) shut_wr: bool,
    /// How long the origin said it keeps an idle connection (`Keep-Alive:
    /// timeout=N`), less a margin: the pool lets go of it before then.
    pub(super) idle_limit: Option<std::time::Duration>,
    /// A send failed (the origin closed or reset): nothing more is
    /// written, and the connection is read to its end, since an origin
    /// that answers early and closes may have answered already.
    pub(super) write_failed: bool,
    /// Since when the front exchange's request has been on the wire at the
    /// front (None: not written yet).
    pub(super) front_since: Option<Instant>,
    /// Connect deadline, or the front exchange's first-byte deadline.
    pub(super) deadline: Option<Instant>,
    /// Queued for a flush at the end of the turn.
    pub(super) dirty: bool,
}

impl UpstreamConn {
    /// A connection whose connect is about to go out, for `client`'s
    /// `jobs` (none: a warm-up connection).
    fn connecting(
        fd: OwnedFd,
        upstream: UpstreamId,
        client: Option<ClientId>,
        jobs: VecDeque<Job>,
        deadline: Instant,
    ) -> Self {
        UpstreamConn {
            fd,
            upstream,
            state: UpState::Connecting,
            client,
            jobs,
            recv: RecvCtl::default(),
            out: Vec::new(),
            sending: 0,
            spare: Vec::new(),
            reused: false,
            responded: false,
            proven: false,
            late: false,
            shut_wr: false,
            idle_limit: None,
            write_failed: false,
            front_since: None,
            deadline: Some(deadline),
            dirty: false,
        }
    }
}

impl UpstreamConn {
    pub(super) fn is_idle(&self) -> bool {
        self.state == UpState::Idle
    }

    /// Open and with room for more request bytes.
    pub(super) fn may_take_request(&self) -> bool {
        self.state == UpState::Open && self.out.len() < UPSTREAM_OUT_LIMIT && !self.write_failed
    }
}

impl Core {
    pub(super) fn upstream_token(conn: ConnId) -> u64 {
        Target::Upstream(conn).token()
    }

    pub(super) fn mark_upstream(&mut self, conn: ConnId) {
        if let Some(u) = self.upconns.get_mut(conn) {
            if !u.dirty {
                u.dirty = true;
                self.dirty_upconns.push(conn);
            }
        }
    }

    /// Arm or cancel `conn`'s recv as its `recv.paused` now says.
    ///
    /// A connection an exchange reads a response on is read one buffer at a
    /// time, never more than the exchange has room for: a multishot takes
    /// whatever the socket holds whenever it runs (on loopback the origin
    /// refills it within the same wait), so a client that reads slowly
    /// cost about 1 MiB whatever `--buffer-size` said. An idle connection
    /// (nothing to overrun; it is read to notice the origin closing) keeps
    /// a multishot.
    pub(super) fn apply_upstream_recv(&mut self, conn: ConnId) {
        let once = self
            .upstream_room(conn)
            .map_or(0, |room| room.clamp(1, u32::MAX as usize) as u32);
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if let Some(a) = u
            .recv
            .decide(u.fd.as_raw_fd(), Core::upstream_token(conn), once)
        {
            self.actions.push(a);
        }
    }

    /// Pause or resume `conn`'s recv for the front exchange there now.
    /// Applied even when the decision is unchanged: the multishot may have
    /// ended with the last data (no MORE flag, e.g. a full completion
    /// queue) and must be armed again.
    pub(super) fn redecide_upstream_recv(&mut self, conn: ConnId) {
        let paused = !self.upstream_may_read(conn);
        if let Some(u) = self.upconns.get_mut(conn) {
            u.recv.paused = paused;
        }
        self.apply_upstream_recv(conn);
    }

    /// Warm up the cold upstreams placement kept requests away from: open
    /// their `warm_conns` connections now (see `pool::warmth`).
    pub(super) fn start_warmups(&mut self) {
        for upstream in self.pool.take_to_warm() {
            let Some((addr, n)) = self
                .pool
                .upstream(upstream)
                .map(|u| (u.spec.addr, u.spec.warm_conns))
            else {
                continue;
            };
            for _ in 0..n {
                if !self.pool.reserve_spare(upstream, self.now) {
                    break;
                }
                let fd = match (self.open_socket)(addr, self.cfg.buffer_size) {
                    Ok(fd) => fd,
                    Err(_) => {
                        self.pool.connect_abandoned(upstream);
                        break;
                    }
                };
                let raw = fd.as_raw_fd();
                let conn = self.upconns.insert(UpstreamConn::connecting(
                    fd,
                    upstream,
                    None,
                    VecDeque::new(),
                    self.now + self.cfg.connect_timeout,
                ));
                self.act(Action::Connect {
                    fd: raw,
                    token: Core::upstream_token(conn),
                    addr,
                });
            }
            self.pool.warmup_opened(upstream);
        }
    }

    /// Open a connection to `upstream` for `client`'s exchange `ex`.
    pub(super) fn open_upstream(
        &mut self,
        upstream: UpstreamId,
        client: ClientId,
        ex: ExchangeId,
        target: u64,
    ) -> io::Result<ConnId> {
        let addr = self
            .pool
            .upstream(upstream)
            .map(|u| u.spec.addr)
            .ok_or_else(|| io::Error::other("upstream removed"))?;
        let fd = (self.open_socket)(addr, self.cfg.buffer_size)?;
        let route = self.pool.route(upstream, target);
        let raw = fd.as_raw_fd();
        let conn = self.upconns.insert(UpstreamConn::connecting(
            fd,
            upstream,
            Some(client),
            VecDeque::from([Job {
                exchange: ex,
                route,
            }]),
            self.now + self.cfg.connect_timeout,
        ));
        self.act(Action::Connect {
            fd: raw,
            token: Core::upstream_token(conn),
            addr,
        });
        Ok(conn)
    }

    pub(super) fn on_connected(&mut self, conn: ConnId, result: io::Result<()>) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.state != UpState::Connecting {
            return;
        }
        match result {
            Ok(()) => {
                self.pool.connected(u.upstream, self.now);
                u.state = UpState::Open;
                u.deadline = Some(self.now + self.cfg.response_timeout);
                let client = u.client;
                if client.is_none() && u.jobs.is_empty() {
                    // A warm-up connection: established, it waits in the
                    // pool (it counts as proven for the opening bound: it
                    // is the origin's to accept, and it did).
                    u.proven = true;
                    self.pool.proven(u.upstream);
                    self.release_upstream(conn);
                    self.wake_waiters();
                    return;
                }
                self.redecide_upstream_recv(conn);
                match client.filter(|&c| self.clients.contains(c)) {
                    Some(client) => self.wake(client),
                    None => self.close_upstream(conn),
                }
            }
            Err(e) => {
                let upstream = u.upstream;
                self.pool.connect_failed(upstream, self.now);
                let client = u.client;
                let jobs = std::mem::take(&mut u.jobs);
                self.pool.exchanges_ended(upstream, jobs.len(), 0);
                self.discard_upstream(conn);
                if let Some(client) = client {
                    for job in jobs {
                        let err = ProxyError::ConnectFailed(e.kind().into());
                        self.fail_exchange(client, job.exchange, err);
                    }
                }
                // Its place is free (and the upstream may be down now:
                // waiters learn it at once rather than at their timeout).
                self.wake_waiters();
            }
        }
    }

    pub(super) fn on_upstream_recv(&mut self, conn: ConnId, recv: Recv<'_>) {
        let Some(u) = self.upconns.get_mut(conn) else {
            if let Some(b) = recv.buf {
                self.act(Action::Recycle(b));
            }
            return;
        };
        if !recv.more {
            u.recv.ended();
        }
        let result = recv.result;
        // The ring ran dry while bytes arrived: on an idle connection those
        // are bytes nobody asked for, like any other.
        let idle_speaks = result == -libc::ENOBUFS && u.state == UpState::Idle;
        if (result == -libc::ENOBUFS || result == -libc::ECANCELED) && !idle_speaks {
            // Re-arm unless the front exchange still has no room (decided
            // afresh: the front may have changed since the pause).
            self.redecide_upstream_recv(conn);
            return;
        }
        if result == 0 && u.state == UpState::Open && self.tunnel_upstream_done(conn) {
            return;
        }
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let client = u
            .client
            .filter(|_| u.state == UpState::Open && !u.jobs.is_empty());
        let (client, buf) = match (client, recv.buf) {
            (Some(client), Some(buf)) if result > 0 => (client, buf),
            (_, buf) => {
                if result > 0 || idle_speaks {
                    self.figures.stray_closes += 1;
                }
                if let Some(b) = buf {
                    self.act(Action::Recycle(b));
                }
                // End of stream or an error, or bytes nobody asked for (an idle
                // connection speaking): it can carry nothing more.
                let err = if result < 0 {
                    ProxyError::UpstreamIo(io::Error::from_raw_os_error(-result))
                } else {
                    ProxyError::ClosedBeforeResponse
                };
                self.abort_upstream(conn, err);
                return;
            }
        };
        let mut newly_proven = false;
        let mut first_byte = None;
        if !u.responded {
            if let (Some(since), Some(front)) = (u.front_since, u.jobs.front()) {
                let took = self.now.saturating_duration_since(since);
                self.pool.observe_service(front.route, took, self.now);
                self.pool.record_response(u.upstream, took, self.now);
                first_byte = Some((front.exchange, took));
            }
            if !u.proven {
                u.proven = true;
                newly_proven = true;
                self.pool.proven(u.upstream);
            }
            u.responded = true;
            u.deadline = None;
        }
        let Some(c) = self.clients.get_mut(client) else {
            self.act(Action::Recycle(buf));
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
            return;
        };
        if let Some((ex, took)) = first_byte {
            c.agent.note_upstream(ex, took);
        }
        // Split the bytes among the client's exchanges on this connection,
        // front first: a response that completes hands the rest to the
        // next.
        let data = recv.data;
        let len = data.len();
        let mut used = 0;
        let mut close = false;
        // The receive buffer, until it is lent to the client's output.
        let mut buf = Some(buf);
        while let Some(&job) = u.jobs.front() {
            let ex = job.exchange;
            let verbatim = c.agent.verbatim_body(ex);
            let lend = verbatim > 0
                && len - used >= LEND_MIN
                && self.lent < self.lend_cap
                && buf.is_some();
            let fate = if lend {
                // The buffer itself goes to the client, after the output
                // so far: the bytes cross the proxy without a copy in user
                // space, and the buffer returns when that send is over.
                // (What follows in it is still read from `data`: nothing
                // gives it back before this call returns.)
                let n = verbatim.min((len - used) as u64) as usize;
                seal_output(c);
                c.queue.push(Seg::Ring {
                    buf: buf.take().expect("checked above"),
                    off: used as u32,
                    len: n as u32,
                });
                c.queued += n;
                self.lent += 1;
                used += n;
                c.agent.take_verbatim(ex, n)
            } else {
                let (fate, n) = c.agent.on_response_data(ex, &data[used..]);
                used += n;
                fate
            };
            if fate == UpstreamFate::Busy {
                break;
            }
            u.jobs.pop_front();
            self.pool.exchanges_ended(u.upstream, 1, 1);
            c.links.retain(|&(e, _)| e != ex);
            if fate == UpstreamFate::Close || u.late {
                // Whatever is still queued here never saw a byte: it may be
                // retried (as a follower on a reused connection is).
                u.reused = true;
                close = true;
                break;
            }
            // The next exchange's request is on the wire already, unless
            // some of it still waits to be sent.
            u.front_since = u.out.is_empty().then_some(self.now);
            u.reused = true;
            u.responded = used < len;
            u.deadline = Some(self.now + self.cfg.response_timeout);
            if used == len {
                break;
            }
        }
        if let Some(buf) = buf {
            // Not lent: back to the kernel.
            self.actions.push(Action::Recycle(buf));
        }
        if let Some(secs) = c.agent.take_upstream_idle_hint() {
            u.idle_limit = Some(idle_limit(secs));
        }
        // Bytes left with no exchange to own them: the origin broke framing.
        if used < len {
            self.figures.stray_closes += 1;
            close = true;
        }
        let done = u.jobs.is_empty();
        if close {
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
        } else if done {
            self.release_upstream(conn);
        } else {
            self.redecide_upstream_recv(conn);
        }
        // After the waiters a release queued: they were first.
        self.wake(client);
        if newly_proven {
            // One more answering connection may let another open.
            self.wake_waiters();
        }
    }

    /// The front exchange on `conn` finished and nothing else is queued
    /// there: back to the pool (or closed, if not clean or not wanted).
    fn release_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        // Request bytes still queued mean the origin answered before
        // reading the whole request: the connection is not clean.
        let clean =
            u.sending == 0 && u.out.is_empty() && !u.write_failed && self.draining.is_none();
        // An origin that announced how long it keeps an idle connection
        // gets it back before then (`idle_limit`; zero: not at all).
        let clean = clean && u.idle_limit.is_none_or(|l| !l.is_zero());
        let keep_for = match self
            .pool
            .release(u.upstream, conn.to_bits(), clean, self.now)
        {
            Release::Keep => Some(self.cfg.upstream_idle_timeout),
            Release::Linger => Some(SURPLUS_LINGER.min(self.cfg.upstream_idle_timeout)),
            Release::Close => None,
        }
        .map(|k| u.idle_limit.map_or(k, |l| k.min(l)));
        let evicted = self.pool.take_evicted();
        match keep_for {
            Some(keep_for) => {
                u.state = UpState::Idle;
                u.client = None;
                u.reused = false;
                u.responded = false;
                u.front_since = None;
                u.deadline = Some(self.now + keep_for);
                // Keep reading while idle, to notice the origin closing.
                u.recv.paused = false;
                self.apply_upstream_recv(conn);
            }
            None => self.discard_upstream(conn),
        }
        for idle in evicted {
            // (Over --max-idle: no longer counted by the pool.)
            self.discard_upstream(ConnId::from_bits(idle));
        }
        self.wake_waiters();
    }

    /// The origin half-closed a tunnel: pass it on (see `drive_tunnel`).
    /// False if `conn` is not a tunnel's upstream.
    fn tunnel_upstream_done(&mut self, conn: ConnId) -> bool {
        let Some(u) = self.upconns.get_mut(conn) else {
            return false;
        };
        let (Some(client), Some(front)) = (u.client, u.jobs.front()) else {
            return false;
        };
        let Some(c) = self.clients.get_mut(client) else {
            return false;
        };
        if c.agent
            .tunnel()
            .is_none_or(|t| t.exchange != front.exchange)
        {
            return false;
        }
        u.recv.eof = true;
        c.agent.on_upstream_eof(front.exchange);
        self.wake(client);
        true
    }

    pub(super) fn on_upstream_sent(
        &mut self,
        conn: ConnId,
        result: io::Result<()>,
        spare: Option<Vec<u8>>,
    ) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        u.sending = 0;
        if let Err(e) = result {
            // An origin that answered before reading the whole request
            // (and then closed) may have its answer on the way in: read
            // on until the connection's end, which decides. Not while the
            // read is held back for room, nor with nothing to read for.
            let reading = u.recv.armed && !u.recv.paused && !u.recv.eof;
            let tunnel = u
                .client
                .is_some_and(|c| self.clients.get(c).is_some_and(|c| c.agent.is_tunnel()));
            if reading && u.state == UpState::Open && !u.jobs.is_empty() && !tunnel {
                u.write_failed = true;
                u.out.clear();
                // An origin that neither answers nor closes is not waited
                // for forever.
                u.deadline = Some(self.now + self.cfg.response_timeout);
                return;
            }
            self.abort_upstream(conn, ProxyError::UpstreamIo(e));
            return;
        }
        if !u.responded && u.state == UpState::Open {
            // The response timeout runs from the last request byte the
            // origin took, not from dispatch: a long upload that keeps
            // moving is not cut off, one the origin stopped reading is.
            u.deadline = Some(self.now + self.cfg.response_timeout);
        }
        if let Some(buf) = spare {
            if buf.capacity() <= KEEP_SPARE && buf.capacity() > u.spare.capacity() {
                u.spare = buf;
            }
        }
        let (more, client) = (!u.out.is_empty(), u.client);
        if more {
            self.mark_upstream(conn);
        }
        // Room on this connection: the front exchange may hand more of its
        // body.
        if let Some(client) = client {
            self.wake(client);
        }
    }

    /// Close an upstream connection because it failed (or its client went
    /// away), and tell every exchange on it. The front one is told `err`;
    /// the ones behind it never saw a byte and may be retried.
    pub(super) fn abort_upstream(&mut self, conn: ConnId, err: ProxyError) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let reused = u.reused;
        let client = u.client;
        let upstream = u.upstream;
        let jobs = std::mem::take(&mut u.jobs);
        self.pool.exchanges_ended(upstream, jobs.len(), 0);
        let fresh_failure = !u.proven
            && !reused
            && matches!(
                err,
                ProxyError::ClosedBeforeResponse | ProxyError::UpstreamIo(_)
            );
        if fresh_failure && client.is_some_and(|c| self.clients.contains(c)) {
            // A new connection the origin reset or closed before any
            // answer: that counts towards taking it down.
            self.pool.reset_before_answer(upstream, self.now);
        }
        self.close_upstream(conn);
        let Some(client) = client else {
            return;
        };
        let mut err = Some(err);
        for job in jobs {
            match err.take() {
                Some(e) => self.fail_exchange(client, job.exchange, e),
                None => {
                    let e = ProxyError::ClosedBeforeResponse;
                    self.fail_exchange(client, job.exchange, e);
                }
            }
        }
    }

    /// Close an upstream connection and settle its pool counts.
    pub(super) fn close_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.get(conn) else {
            return;
        };
        match u.state {
            UpState::Connecting => self.pool.connect_abandoned(u.upstream),
            UpState::Open => self.pool.active_closed(u.upstream, u.proven),
            UpState::Idle => {
                // Closed while idle before its time: the origin (or the
                // network) dropped it.
                let lost = u.deadline.is_none_or(|d| self.now < d);
                self.pool.idle_closed(u.upstream, conn.to_bits(), lost);
            }
        }
        self.discard_upstream(conn);
        self.wake_waiters();
    }

    /// Release an upstream connection's slot, recv and fd (no pool counts).
    pub(super) fn discard_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.remove(conn) else {
            return;
        };
        // Exchanges still on it are gone with it (their client closed).
        self.pool.exchanges_ended(u.upstream, u.jobs.len(), 0);
        if u.sending > 0 || u.state == UpState::Connecting {
            // An origin that stopped reading would keep the send (and the
            // socket) alive forever, and a connect in flight keeps the
            // socket until it finishes or times out: cancel everything on
            // it.
            self.act(Action::CancelAll {
                fd: u.fd.as_raw_fd(),
            });
        } else if u.recv.armed && !u.recv.cancelling {
            self.act(Action::CancelRecv {
                fd: u.fd.as_raw_fd(),
                token: Core::upstream_token(conn),
            });
        }
        self.act(Action::Close { fd: u.fd });
    }

    /// Every dirty upstream connection's queued request bytes go out.
    pub(super) fn flush_upstreams(&mut self) {
        let now = self.now;
        for conn in std::mem::take(&mut self.dirty_upconns) {
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            u.dirty = false;
            if u.sending > 0 || u.out.is_empty() {
                continue;
            }
            if u.front_since.is_none() && !u.responded && !u.jobs.is_empty() {
                // The front exchange's request goes on the wire now.
                u.front_since = Some(now);
            }
            let spare = std::mem::take(&mut u.spare);
            let buf = std::mem::replace(&mut u.out, spare);
            u.sending = buf.len();
            let (fd, token) = (u.fd.as_raw_fd(), Core::upstream_token(conn));
            self.actions.push(Action::Send { fd, token, buf });
        }
    }
}
