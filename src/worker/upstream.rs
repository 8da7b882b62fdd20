//! The upstream side of the core: connecting, writing requests, splitting
//! what an origin sends among the client's exchanges on the connection,
//! giving the connection back to the pool or closing it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;

use super::core::{Action, ClientId, ConnId, Core, Recv, Target};
use super::upconn::{Job, UpState, UpstreamConn};
use crate::codec::proxy_protocol;
use crate::error::ProxyError;
use crate::pool::{Release, SURPLUS_LINGER};
use crate::reactor::RecvBuf;
use crate::session::UpstreamFate;
use crate::spec::{ProxyVersion, UpstreamId};
use std::net::SocketAddr;

/// Response body pieces at least this long go to the client straight from
/// the receive buffer; shorter ones are cheaper copied.
const LEND_MIN: usize = 4096;

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
    /// A connection an exchange reads a response on is read by a multishot
    /// limited to the room the exchange has (it ends at the limit and is
    /// armed again with the room there is then): a multishot without a
    /// limit takes whatever the socket holds whenever it runs (on loopback
    /// the origin refills it within the same wait), so a client that reads
    /// slowly cost about 1 MiB whatever `--buffer-size` said. (Single recvs
    /// of one buffer bounded it too, at twice the CPU for a 1 MiB response:
    /// one buffer per connection per turn.) An idle connection (nothing to
    /// overrun; it is read to notice the origin closing) keeps what it has.
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
        for pool in 0..self.pools.len() {
            for upstream in self.pools[pool].take_to_warm() {
                if self.pools.info(pool).send_proxy.is_some() {
                    // A connection of nobody's cannot say whose it is.
                    self.pools[pool].warmup_opened(upstream);
                    continue;
                }
                self.warm_up(pool, upstream);
            }
        }
    }

    /// Open `upstream`'s `warm_conns` connections (in pool `pool`).
    fn warm_up(&mut self, pool: usize, upstream: UpstreamId) {
        let Some((addr, n, tls, protocol)) = self.pools[pool].upstream(upstream).map(|u| {
            (
                u.spec.addr,
                u.spec.warm_conns,
                u.spec.tls.clone(),
                u.spec.protocol,
            )
        }) else {
            return;
        };
        for _ in 0..n {
            if !self.pools[pool].reserve_spare(upstream, self.now) {
                break;
            }
            let fd = match (self.open_socket)(addr, self.cfg.buffer_size) {
                Ok(fd) => fd,
                Err(_) => {
                    self.pools[pool].connect_abandoned(upstream);
                    break;
                }
            };
            let raw = fd.as_raw_fd();
            let mut u = UpstreamConn::connecting(
                fd,
                pool,
                upstream,
                None,
                VecDeque::new(),
                self.now + self.cfg.connect_timeout,
            );
            u.mux = self.mux_for(pool, upstream);
            u.opened_with = tls.clone();
            if let Some(t) = &tls {
                match t.connect_for(protocol) {
                    Ok(stream) => u.tls = Some(Box::new(stream)),
                    Err(_) => {
                        self.pools[pool].connect_abandoned(upstream);
                        break;
                    }
                }
            }
            let conn = self.upconns.insert(u);
            self.figures.upstream_opened += 1;
            self.act(Action::Connect {
                fd: raw,
                token: Core::upstream_token(conn),
                addr,
            });
        }
        self.pools[pool].warmup_opened(upstream);
    }

    /// Open a connection to `upstream` (in pool `pool`) for `client`'s
    /// exchange `job`.
    pub(super) fn open_upstream(
        &mut self,
        pool: usize,
        upstream: UpstreamId,
        client: ClientId,
        job: Job,
    ) -> io::Result<ConnId> {
        let (addr, tls, opened_with) = self.pools[pool]
            .upstream(upstream)
            .map(|u| {
                let tls = u.spec.tls.as_ref().map(|t| t.connect_for(u.spec.protocol));
                (u.spec.addr, tls, u.spec.tls.clone())
            })
            .ok_or_else(|| io::Error::other("upstream removed"))?;
        let tls = tls.transpose().map_err(io::Error::other)?;
        let fd = (self.open_socket)(addr, self.cfg.buffer_size)?;
        let raw = fd.as_raw_fd();
        let mux = self.mux_for(pool, upstream);
        // A multiplexed connection is nobody's: its exchanges are streams.
        let (owner, jobs) = match mux {
            Some(_) => (None, VecDeque::new()),
            None => (Some(client), VecDeque::from([job])),
        };
        let mut u = UpstreamConn::connecting(
            fd,
            pool,
            upstream,
            owner,
            jobs,
            self.now + self.cfg.connect_timeout,
        );
        let multiplexed = mux.is_some();
        u.mux = mux;
        u.opened_with = opened_with;
        if let Some(version) = self.pools.info(pool).send_proxy {
            // The connection's first bytes say whose it is; it serves this
            // client only (see `release_upstream`).
            self.write_proxy_header(client, version, &mut u.out);
            u.proxied = true;
        }
        if let Some(stream) = tls {
            // A PROXY header goes before the TLS, in the clear.
            u.clear_prefix = u.out.len();
            u.tls = Some(Box::new(stream));
        }
        let conn = self.upconns.insert(u);
        self.figures.upstream_opened += 1;
        self.act(Action::Connect {
            fd: raw,
            token: Core::upstream_token(conn),
            addr,
        });
        if multiplexed {
            self.mux_join(conn, client, job);
        }
        Ok(conn)
    }

    pub(super) fn on_connected(&mut self, conn: ConnId, result: io::Result<()>) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.state != UpState::Connecting {
            return;
        }
        if let Err(e) = result {
            let kind = e.kind();
            self.connect_failed(conn, || ProxyError::ConnectFailed(kind.into()));
            return;
        }
        self.pools[u.pool].connected(u.upstream, self.now);
        u.opened(self.now);
        let client = u.client;
        if u.tls.is_some() && !u.dirty {
            // The ClientHello goes out now.
            u.dirty = true;
            self.dirty_upconns.push(conn);
        }
        if u.mux.as_ref().is_some_and(|m| m.exchanges() > 0) {
            // Its preface and the streams that joined it meanwhile go out.
            self.mark_upstream(conn);
            self.redecide_upstream_recv(conn);
            self.mux_opened(conn);
            self.mux_settle(conn);
            return;
        }
        if u.mux.is_some() {
            // (Its preface goes out with it idle.)
            u.dirty = true;
            self.dirty_upconns.push(conn);
        }
        if client.is_none() && u.jobs.is_empty() {
            // A warm-up connection: established, it waits in the pool (it
            // counts as proven for the opening bound: it is the origin's to
            // accept, and it did).
            u.prove();
            self.pools[u.pool].proven(u.upstream);
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

    /// Append the PROXY protocol header (of `version`) for `client`'s
    /// connection: its source, and the address it came to.
    fn write_proxy_header(&self, client: ClientId, version: ProxyVersion, out: &mut Vec<u8>) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let local = c.local.or_else(|| {
            socket2::SockRef::from(&c.fd)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
        });
        let local = local.unwrap_or_else(|| SocketAddr::new(c.peer.ip(), 0));
        match version {
            ProxyVersion::V1 => proxy_protocol::write_v1(out, c.peer, local),
            ProxyVersion::V2 => proxy_protocol::write_v2(out, c.peer, local),
        }
    }

    /// `conn`'s connect failed (or timed out) with `err`: the upstream
    /// hears of it, and so does every exchange that was waiting for it.
    pub(super) fn connect_failed(&mut self, conn: ConnId, err: impl FnMut() -> ProxyError) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.mux.is_some() {
            self.pools[u.pool].connect_failed(u.upstream, self.now);
            // Nothing was handed before the connect: each exchange may go
            // again, whatever its method.
            self.mux_fail_all(conn, err);
            // (Counted: the connect in flight is cancelled, the fd closed.)
            self.discard_upstream(conn);
            self.wake_waiters();
            return;
        }
        let (upstream, client, jobs) = (u.upstream, u.client, u.take_jobs());
        let pool = &mut self.pools[u.pool];
        pool.connect_failed(upstream, self.now);
        pool.exchanges_ended(upstream, jobs.len(), 0);
        self.discard_upstream(conn);
        if let Some(client) = client {
            self.fail_jobs(client, jobs, err);
        }
        // Its place is free (and the upstream may be down now: waiters
        // learn it at once rather than at their timeout).
        self.wake_waiters();
    }

    /// Tell `client` each of its `jobs` failed, with the error `err` makes
    /// for it.
    fn fail_jobs(
        &mut self,
        client: ClientId,
        jobs: VecDeque<Job>,
        mut err: impl FnMut() -> ProxyError,
    ) {
        for job in jobs {
            self.fail_exchange(client, job.exchange, err());
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
        } else if recv.result > 0 {
            u.recv.took(recv.result as usize);
        }
        let result = recv.result;
        // The ring ran dry while bytes arrived: on an idle connection those
        // are bytes nobody asked for, like any other.
        // (An idle HTTP/2 connection may hear frames: they wait.)
        let idle_speaks = result == -libc::ENOBUFS && u.state == UpState::Idle && u.mux.is_none();
        if (result == -libc::ENOBUFS || result == -libc::ECANCELED) && !idle_speaks {
            // Re-arm unless the front exchange still has no room (decided
            // afresh: the front may have changed since the pause).
            self.redecide_upstream_recv(conn);
            return;
        }
        if result > 0 && u.tls.is_some() {
            if let Some(b) = recv.buf {
                self.act(Action::Recycle(b));
            }
            self.upstream_tls_data(conn, recv.data);
            return;
        }
        self.upstream_data(conn, result, recv.data, recv.buf, idle_speaks);
    }

    /// Ciphertext `data` came on `conn`: what it decrypts to goes on as
    /// if it had come in the clear, and a close_notify as the connection's
    /// end. The plaintext of one recv may pass the room the recv was
    /// limited to by what rustls held of a record begun before (at most a
    /// record, 16 KiB): the session takes it all.
    fn upstream_tls_data(&mut self, conn: ConnId, data: &[u8]) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let waiting = !u.out.is_empty() || u.mux.as_ref().is_some_and(|m| m.h2.has_output());
        let Some(tls) = u.tls.as_mut() else {
            return;
        };
        let mut plain = std::mem::take(&mut self.tls_plain);
        plain.clear();
        let received = tls.receive(data, &mut plain);
        let due = tls.wants_write();
        let figures = &mut self.figures.tls;
        let progress = match received {
            Ok(p) => p,
            Err(failure) => {
                self.tls_plain = plain;
                *figures
                    .upstream_failures
                    .entry(failure.as_str())
                    .or_default() += 1;
                self.abort_upstream(conn, ProxyError::UpstreamTls(failure));
                return;
            }
        };
        if progress.handshake_done {
            figures.upstream_handshakes += 1;
            figures.upstream_resumed += u64::from(tls.resumed());
        }
        if due || (progress.handshake_done && waiting) {
            // The handshake's next flight, or a request that waited for it.
            self.mark_upstream(conn);
        }
        if !plain.is_empty() {
            let n = plain.len().min(i32::MAX as usize) as i32;
            self.upstream_data(conn, n, &plain, None, false);
        }
        self.tls_plain = plain;
        if progress.closed {
            // (If the bytes before it closed or released the connection,
            // this finds it idle, or gone.)
            self.upstream_data(conn, 0, &[], None, false);
        } else if self.upconns.contains(conn) {
            self.redecide_upstream_recv(conn);
        }
    }

    /// `result` (bytes, 0 for the end, or an error) came on `conn`, in
    /// the clear: split among the exchanges there, or the end of the
    /// connection. `buf` holds `data` when it is the ring's buffer.
    fn upstream_data(
        &mut self,
        conn: ConnId,
        result: i32,
        data: &[u8],
        buf: Option<RecvBuf>,
        idle_speaks: bool,
    ) {
        if self.upconns.get(conn).is_some_and(|u| u.mux.is_some()) {
            if let Some(b) = buf {
                self.act(Action::Recycle(b));
            }
            self.mux_data(conn, result, data);
            return;
        }
        let open = self
            .upconns
            .get(conn)
            .is_some_and(|u| u.state == UpState::Open);
        if result == 0 && open && self.tunnel_upstream_done(conn) {
            return;
        }
        let client = match self.reader_of(conn) {
            Some(client) if result > 0 => client,
            _ => {
                if let Some(b) = buf {
                    self.act(Action::Recycle(b));
                }
                self.upstream_stopped(conn, result, idle_speaks);
                return;
            }
        };
        let newly_proven = self.first_response_byte(conn, client);
        let (used, mut close) = self.split_response(conn, client, data, buf);
        // Bytes left with no exchange to own them: the origin broke framing.
        if used < data.len() {
            self.figures.stray_closes += 1;
            close = true;
        }
        if close {
            self.abort_upstream(conn, ProxyError::ClosedBeforeResponse);
        } else if self.upconns.get(conn).is_some_and(|u| u.jobs.is_empty()) {
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

    /// The client whose exchange reads a response on `conn` now, if any
    /// (and if it is still there).
    fn reader_of(&self, conn: ConnId) -> Option<ClientId> {
        let u = self.upconns.get(conn)?;
        let client = u
            .client
            .filter(|_| u.state == UpState::Open && !u.jobs.is_empty())?;
        self.clients.contains(client).then_some(client)
    }

    /// `conn` ended (`result` 0), failed, or spoke with nobody to hear it
    /// (bytes on an idle connection, or for a client that left): it can
    /// carry nothing more.
    fn upstream_stopped(&mut self, conn: ConnId, result: i32, idle_speaks: bool) {
        if result > 0 || idle_speaks {
            self.figures.stray_closes += 1;
        }
        let err = if result < 0 {
            ProxyError::UpstreamIo(io::Error::from_raw_os_error(-result))
        } else {
            ProxyError::ClosedBeforeResponse
        };
        self.abort_upstream(conn, err);
    }

    /// Bytes came for the front exchange on `conn`: if they are its first,
    /// time the route and the upstream by them and tell the client's agent.
    /// True if the origin answered on this connection for the first time.
    fn first_response_byte(&mut self, conn: ConnId, client: ClientId) -> bool {
        let Some(u) = self.upconns.get_mut(conn) else {
            return false;
        };
        let pool = &mut self.pools[u.pool];
        if let Some((front, took)) = u.first_byte(self.now) {
            pool.observe_service(front.route, took, self.now);
            pool.record_response(u.upstream, took, self.now);
            if let Some(c) = self.clients.get_mut(client) {
                c.session.note_upstream(front.exchange, took);
            }
        }
        let proven = u.prove();
        if proven {
            pool.proven(u.upstream);
        }
        proven
    }

    /// Split `data` among `client`'s exchanges on `conn`, front first: a
    /// response that completes hands the rest to the next. A piece of body
    /// that goes to the client as it came may take `buf` (the ring's
    /// buffer `data` is in, if it is) with it (lent to the client's
    /// output); otherwise `buf` goes back to the ring. Returns the bytes
    /// used and whether the connection must close.
    fn split_response(
        &mut self,
        conn: ConnId,
        client: ClientId,
        data: &[u8],
        mut buf: Option<RecvBuf>,
    ) -> (usize, bool) {
        let (Some(u), Some(c)) = (self.upconns.get_mut(conn), self.clients.get_mut(client)) else {
            if let Some(buf) = buf {
                self.act(Action::Recycle(buf));
            }
            return (0, true);
        };
        let len = data.len();
        let mut used = 0;
        let mut close = false;
        while let Some(&job) = u.jobs.front() {
            let ex = job.exchange;
            let verbatim = c.session.verbatim_body(ex);
            let lend = verbatim > 0
                && len - used >= LEND_MIN
                && self.lent < self.lend_cap
                && c.transport.lends()
                && buf.is_some();
            let fate = if lend {
                // The buffer itself goes to the client, after the output
                // so far: the bytes cross the proxy without a copy in user
                // space, and the buffer returns when that send is over.
                // (What follows in it is still read from `data`: nothing
                // gives it back before this call returns.)
                let n = verbatim.min((len - used) as u64) as usize;
                c.lend(buf.take().expect("checked above"), used, n);
                self.lent += 1;
                used += n;
                c.session.take_verbatim(ex, n)
            } else {
                let (fate, n) = c.session.on_response_data(ex, &data[used..]);
                used += n;
                fate
            };
            if fate == UpstreamFate::Busy {
                break;
            }
            self.pools[u.pool].exchanges_ended(u.upstream, 1, 1);
            c.unlink(ex);
            if fate == UpstreamFate::Close || u.late {
                // Whatever is still queued here never saw a byte: it may be
                // retried (as a follower on a reused connection is).
                u.jobs.pop_front();
                u.reused = true;
                close = true;
                break;
            }
            u.next_front(self.now, used < len);
            if used == len {
                break;
            }
        }
        if let Some(buf) = buf {
            // Not lent: back to the kernel.
            self.actions.push(Action::Recycle(buf));
        }
        if let Some(secs) = c.session.take_upstream_idle_hint() {
            u.origin_keeps_idle(secs);
        }
        (used, close)
    }

    /// The front exchange on `conn` finished and nothing else is queued
    /// there: back to the pool (or closed, if not clean or not wanted).
    pub(super) fn release_upstream(&mut self, conn: ConnId) {
        let reusable = self.mux_reusable(conn);
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        self.pools[u.pool].joinable(u.upstream, conn, false);
        // Request bytes still queued mean the origin answered before
        // reading the whole request: the connection is not clean. (On an
        // HTTP/2 one, frames of its own may wait: a stream's end is its.)
        let clean = (u.mux.is_some() || u.sending == 0 && u.out.is_empty())
            && !u.write_failed
            && self.draining.is_none()
            && reusable;
        // An origin that announced how long it keeps an idle connection
        // gets it back before then (`idle_limit`; zero: not at all). A
        // connection that began with a client's PROXY header is that
        // client's: never another's.
        let clean = clean && u.idle_limit.is_none_or(|l| !l.is_zero()) && !u.proxied;
        let pool = &mut self.pools[u.pool];
        let keep_for = match pool.release(u.upstream, conn, clean, self.now) {
            Release::Keep => Some(self.cfg.upstream_idle_timeout),
            Release::Linger => Some(SURPLUS_LINGER.min(self.cfg.upstream_idle_timeout)),
            Release::Close => None,
        }
        .map(|k| u.idle_limit.map_or(k, |l| k.min(l)));
        let evicted = pool.take_evicted();
        match keep_for {
            Some(keep_for) => {
                u.go_idle(self.now + keep_for);
                if u.mux.is_some() {
                    pool.ready_at_once(u.upstream, conn);
                }
                self.apply_upstream_recv(conn);
            }
            None => self.discard_upstream(conn),
        }
        for idle in evicted {
            // (Over --max-idle: no longer counted by the pool.)
            self.discard_upstream(idle);
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
        if c.session
            .tunnel()
            .is_none_or(|t| t.exchange != front.exchange)
        {
            return false;
        }
        u.recv.eof = true;
        c.session.on_upstream_eof(front.exchange);
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
        if let Err(e) = result {
            u.sending = 0;
            // An origin that answered before reading the whole request
            // (and then closed) may have its answer on the way in: read
            // on until the connection's end, which decides. Not while the
            // read is held back for room, nor with nothing to read for.
            let reading = u.recv.armed && !u.recv.paused && !u.recv.eof;
            let tunnel = u
                .client
                .is_some_and(|c| self.clients.get(c).is_some_and(|c| c.session.is_tunnel()));
            if reading && u.state == UpState::Open && !u.jobs.is_empty() && !tunnel {
                // An origin that neither answers nor closes is not waited
                // for forever.
                u.fail_write(self.now);
                return;
            }
            self.abort_upstream(conn, ProxyError::UpstreamIo(e));
            return;
        }
        u.sent(spare, self.now);
        let (more, client) = (u.has_output(), u.client);
        let held = u.mux.is_some() && u.recv.paused;
        if more {
            self.mark_upstream(conn);
        }
        if held {
            // Acknowledgements went out: the origin may be read again.
            self.redecide_upstream_recv(conn);
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
        if u.mux.as_ref().is_some_and(|m| m.exchanges() > 0) {
            self.mux_abort(conn, err);
            return;
        }
        let reused = u.reused;
        let client = u.client;
        let upstream = u.upstream;
        let jobs = u.take_jobs();
        let pool = u.pool;
        self.pools[pool].exchanges_ended(upstream, jobs.len(), 0);
        let fresh_failure = !u.proven && !reused && err.is_origin_refusal();
        if fresh_failure && client.is_some_and(|c| self.clients.contains(c)) {
            // A new connection the origin reset or closed before any
            // answer: that counts towards taking it down.
            self.pools[pool].reset_before_answer(upstream, self.now);
        }
        self.close_upstream(conn);
        if let Some(client) = client {
            // The front one is told `err`; the ones behind it never saw a
            // byte and may be retried.
            let mut front = Some(err);
            self.fail_jobs(client, jobs, || {
                front.take().unwrap_or(ProxyError::ClosedBeforeResponse)
            });
        }
    }

    /// Close an upstream connection and settle its pool counts.
    pub(super) fn close_upstream(&mut self, conn: ConnId) {
        let Some(u) = self.upconns.get(conn) else {
            return;
        };
        match u.state {
            UpState::Connecting => self.pools[u.pool].connect_abandoned(u.upstream),
            UpState::Open => self.pools[u.pool].active_closed(u.upstream, u.proven),
            UpState::Idle => {
                // Closed while idle before its time: the origin (or the
                // network) dropped it.
                let lost = u.deadline.is_none_or(|d| self.now < d);
                self.pools[u.pool].idle_closed(u.upstream, conn, lost);
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
        let streams = u.mux.as_ref().map_or(0, |m| m.exchanges());
        self.pools[u.pool].exchanges_ended(u.upstream, u.jobs.len() + streams, 0);
        self.pools[u.pool].joinable(u.upstream, conn, false);
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
        for conn in std::mem::take(&mut self.dirty_upconns) {
            let Some(u) = self.upconns.get_mut(conn) else {
                continue;
            };
            u.dirty = false;
            Core::mux_output(u);
            if let Some(buf) = u.take_output(self.now) {
                let (fd, token) = (u.fd.as_raw_fd(), Core::upstream_token(conn));
                self.actions.push(Action::Send { fd, token, buf });
            }
        }
    }
}
