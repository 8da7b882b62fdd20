//! The client side of the core: accepting, reading requests into the
//! agent, carrying out what it is ready for, writing its output, tunnels'
//! half-closes, closing.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;
use std::time::Instant;

use super::core::{Action, ClientId, ConnId, Core, Recv, Target};
use super::timers::ClientLimits;
use crate::agent::{AgentShared, ClientAgent};
use crate::codec::ForwardCtx;
use crate::config::Config;
use crate::error::ProxyError;
use crate::reactor::{RecvBuf, Seg, MAX_SEGS};
use crate::session::{ClientSession, ExchangeId, TunnelEnds};

/// A busy connection keeps its spare output buffer up to this capacity, so
/// that streaming a large body does not map and zero fresh pages each turn.
pub(super) const KEEP_SPARE: usize = 4 * 1024 * 1024;
/// An idle client connection keeps at most this much spare capacity, so
/// that idle keep-alive connections cost little memory.
pub(super) const IDLE_SPARE: usize = 4 * 1024;
/// A lingering close (see [`ClientConn::lingering`]) ends when the client
/// has sent nothing for this long, or after [`LINGER_MAX`] in all (nginx's
/// `lingering_timeout` and `lingering_time` defaults).
pub(super) const LINGER_QUIET: std::time::Duration = std::time::Duration::from_secs(5);
pub(super) const LINGER_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// State of a socket's multishot recv.
#[derive(Debug, Default)]
pub(super) struct RecvCtl {
    /// A multishot recv is in the kernel (or waits there for a buffer).
    pub armed: bool,
    /// A cancel for it is in flight.
    pub cancelling: bool,
    /// We want no data now (backpressure).
    pub paused: bool,
    /// The peer closed; never re-arm.
    pub eof: bool,
    /// What is armed is a multishot without a limit.
    pub multishot: bool,
    /// Bytes a limited recv armed may still take.
    pub left: u32,
}

impl RecvCtl {
    /// What to do so that the socket is read exactly when not paused: arm
    /// (a multishot, or with `once` > 0 one that takes at most that many
    /// bytes in all), cancel, or nothing.
    ///
    /// A recv armed that may take more than `once` (a multishot on an idle
    /// upstream connection taken for an exchange, or a limit set for an
    /// exchange with more room) is cancelled first: the new one is armed
    /// once it has ended.
    pub fn decide(&mut self, fd: RawFd, token: u64, once: u32) -> Option<Action> {
        let too_much = once > 0 && (self.multishot || self.left > once);
        if self.paused || too_much {
            if self.armed && !self.cancelling {
                self.cancelling = true;
                return Some(Action::CancelRecv { fd, token });
            }
        } else if !self.armed && !self.eof {
            self.armed = true;
            self.multishot = once == 0;
            self.left = once;
            return Some(Action::Recv { fd, token, once });
        }
        None
    }

    /// `n` bytes came.
    pub fn took(&mut self, n: usize) {
        self.left = self.left.saturating_sub(n.min(u32::MAX as usize) as u32);
    }

    /// The multishot ended (final completion without MORE).
    pub fn ended(&mut self) {
        self.armed = false;
        self.cancelling = false;
        self.multishot = false;
        self.left = 0;
    }
}

/// What carries a session's bytes on a client's socket.
///
/// The seam for TLS: a transport takes what the socket received and gives
/// the session its bytes, and takes the session's output and gives the
/// socket bytes to send. Only plain TCP hands the ring's receive buffers
/// straight through (to the session, and to the client as lent response
/// bodies); a TLS transport decrypts into a buffer of its own and encrypts
/// whatever goes out.
pub(super) enum Transport {
    /// TCP as it is.
    Plain,
    /// TLS (see `tls.rs`).
    Tls(Box<super::tls::TlsConn>),
}

impl Transport {
    /// Whether response bytes may go to the client from the ring's receive
    /// buffers as they are.
    pub(super) fn lends(&self) -> bool {
        match self {
            Transport::Plain => true,
            Transport::Tls(_) => false,
        }
    }

    /// Records are due that the session did not write (the handshake's, a
    /// close_notify).
    pub(super) fn wants_write(&self) -> bool {
        match self {
            Transport::Plain => false,
            Transport::Tls(t) => t.stream.wants_write(),
        }
    }
}

/// A client connection: its socket, its transport and its session.
pub(crate) struct ClientConn {
    pub(super) fd: OwnedFd,
    /// The client's address.
    pub(super) peer: SocketAddr,
    /// When it was accepted, and last moved a byte.
    pub(super) connected: Instant,
    pub(super) last_use: Instant,
    /// The protocol it speaks (HTTP/1.1 or HTTP/2).
    pub(super) session: Box<dyn ClientSession>,
    pub(super) transport: Transport,
    /// `--accept-proxy`: the PROXY protocol header is awaited (the bytes of
    /// it so far); nothing reaches the session before it.
    pub(super) proxy_header: Option<Vec<u8>>,
    /// The address the client connected to, when a PROXY header said (for
    /// the one written toward origins, see `send_proxy`).
    pub(super) local: Option<SocketAddr>,
    pub(super) recv: RecvCtl,
    /// Bytes of the send in flight (0: none).
    pub(super) sending: usize,
    pub(super) spare: Vec<u8>,
    /// Output queued ahead of the agent's: response bodies lent straight
    /// from receive buffers, and the agent's output sealed before each.
    pub(super) queue: Vec<Seg>,
    /// Bytes in `queue`.
    pub(super) queued: usize,
    /// Upstream connections serving this client's exchanges.
    pub(super) links: Vec<(ExchangeId, ConnId)>,
    /// Our write side is shut (a tunnel whose origin half-closed).
    pub(super) shut_wr: bool,
    /// Queued for a flush at the end of the turn.
    pub(super) dirty: bool,
    /// A [`super::core::Task::Drive`] for it is queued.
    pub(super) woken: bool,
    /// The session ticket whose hand-off field this connection already
    /// sent home: requests pipelined with the same old cookie do not
    /// repeat it (see `sessions.rs`).
    pub(super) handed_off: Option<crate::affinity::Ticket>,
    /// When the current request head began (or the connection was
    /// accepted, before its first request).
    pub(super) head_since: Option<Instant>,
    /// When the connection last became idle (for a tunnel: last moved a
    /// byte either way).
    pub(super) idle_since: Instant,
    /// When the send in flight was submitted (see the tick: a client that
    /// takes no bytes for the idle timeout is closed).
    pub(super) send_since: Instant,
    /// Since when it has had exchanges in flight (request deadline).
    pub(super) busy_since: Option<Instant>,
    /// Closing while the client may still be sending (see
    /// `ClientAgent::lingers`): since when our side is shut and what comes
    /// is read and dropped. Closing at once would answer those bytes with
    /// a reset, which can destroy the answer before the client reads it.
    pub(super) lingering: Option<Instant>,
    /// On a plaintext `h2` listener, until its first bytes say which
    /// protocol it speaks: those bytes so far (a prefix of the HTTP/2
    /// preface).
    pub(super) h2_sniff: Option<Vec<u8>>,
}

impl ClientConn {
    /// `ex` is on upstream connection `conn` now.
    pub(super) fn link(&mut self, ex: ExchangeId, conn: ConnId) {
        self.links.push((ex, conn));
    }

    /// `ex` left its upstream connection.
    pub(super) fn unlink(&mut self, ex: ExchangeId) {
        self.links.retain(|&(e, _)| e != ex);
    }

    /// `len` bytes of receive buffer `buf` from `off` go to the client as
    /// they are, after the output so far (see `Core::split_response`).
    pub(super) fn lend(&mut self, buf: RecvBuf, off: usize, len: usize) {
        seal_output(self);
        self.queue.push(Seg::Ring {
            buf,
            off: off as u32,
            len: len as u32,
        });
        self.queued += len;
    }

    /// Its exchanges have been in progress for `limit` or longer (a tunnel
    /// is never late: it lives as long as its two ends want).
    pub(super) fn busy_late(&self, now: Instant, limit: Option<std::time::Duration>) -> bool {
        !self.session.is_tunnel()
            && limit.is_some_and(|limit| self.busy_since.is_some_and(|t| now >= t + limit))
    }

    /// Whether a deadline of the connection passed at `now`.
    pub(super) fn overdue(&self, now: Instant, limits: &ClientLimits) -> bool {
        if let Transport::Tls(t) = &self.transport {
            if t.handshake_until.is_some_and(|d| now >= d) {
                return true;
            }
        }
        let head_late = self.head_since.is_some_and(|t| now >= t + limits.header);
        // The rest of an answered body has as long as a head to keep
        // coming; a lingering close, until the client goes quiet.
        let discard_late = self.session.is_discarding() && now >= self.last_use + limits.header;
        let linger_over = self.lingering.is_some_and(|since| {
            now >= since + LINGER_MAX || now >= since.max(self.last_use) + LINGER_QUIET
        });
        // (A retiring worker's grace is for idle keep-alive connections;
        // tunnels and stalled sends keep the configured timeout.)
        let idle_late = (self.session.is_idle() && now >= self.idle_since + limits.idle
            || self.session.is_tunnel() && now >= self.idle_since + limits.tunnel_idle)
            && self.sending == 0
            && self.queue.is_empty();
        // A client that has taken no bytes of a send for as long: the send
        // is cancelled with the close (it pins buffers).
        let send_stalled = self.sending > 0 && now >= self.send_since + limits.tunnel_idle;
        // An HTTP/2 response waiting as long for a window the client does
        // not open.
        let window_stalled = self
            .session
            .stalled_since()
            .is_some_and(|t| now >= t + limits.tunnel_idle);
        head_late
            || idle_late
            || self.busy_late(now, limits.request)
            || send_stalled
            || window_stalled
            || discard_late
            || linger_over
    }

    /// Nothing in progress and nothing owed either way: the connection may
    /// go to another worker (see `Core::begin_retire`).
    pub(super) fn may_hand_over(&self) -> bool {
        self.session.is_idle()
            && self.session.movable()
            && self.h2_sniff.is_none()
            && self.proxy_header.is_none()
            && matches!(self.transport, Transport::Plain)
            && self.sending == 0
            && self.queue.is_empty()
            && self.links.is_empty()
            && self.lingering.is_none()
            && !self.recv.eof
            && !self.shut_wr
    }

    /// What the connection is doing, for the status page.
    pub(super) fn state_name(&self) -> &'static str {
        if self.session.is_tunnel() {
            "tunnel"
        } else if self.lingering.is_some() {
            "closing"
        } else if self.sending > 0 || !self.queue.is_empty() {
            "sending"
        } else if self.session.pending() > 0 {
            "waiting"
        } else if self.session.has_partial_head() {
            "reading"
        } else {
            "idle"
        }
    }
}

impl Core {
    pub(super) fn client_token(client: ClientId) -> u64 {
        Target::Client(client).token()
    }

    pub(super) fn mark_client(&mut self, client: ClientId) {
        if let Some(c) = self.clients.get_mut(client) {
            if !c.dirty {
                c.dirty = true;
                self.dirty_clients.push(client);
            }
        }
    }

    pub(super) fn on_accept(&mut self, fd: OwnedFd, peer: SocketAddr, listen: usize) {
        let proxied = self.cfg.accept_proxy;
        let tls = self.cfg.listen_tls.get(listen).cloned().flatten();
        // (Over TLS, ALPN chooses HTTP/2; in plaintext, the first bytes.)
        let sniff = tls.is_none() && self.cfg.listen_h2.get(listen) == Some(&true);
        if let Some(client) = self.add_client(fd, peer, self.now, proxied, tls) {
            if let Some(c) = self.clients.get_mut(client).filter(|_| sniff) {
                c.h2_sniff = Some(Vec::new());
            }
            self.figures.accepted += 1;
        }
    }

    /// Take the client connection on `fd` (accepted here, or taken over
    /// from a retiring worker) and start reading it, or close it if this
    /// worker cannot have it. `proxied`: its first bytes are a PROXY
    /// protocol header; `tls`: it speaks TLS (served with that server).
    pub(super) fn add_client(
        &mut self,
        fd: OwnedFd,
        peer: SocketAddr,
        connected: Instant,
        proxied: bool,
        tls: Option<std::sync::Arc<crate::tls::TlsServer>>,
    ) -> Option<ClientId> {
        let refusing = self.draining.is_some() && !self.retiring;
        let full = self.clients.len() >= self.cfg.max_connections;
        if full || refusing {
            // Over the limit (or on the way out): refuse cleanly rather
            // than degrade everyone.
            self.act(Action::Close { fd });
            if full {
                self.figures.refused += 1;
                if self.refusing_since.is_none() {
                    self.refusing_since = Some(self.figures.refused - 1);
                    self.notices.push(format!(
                        "at --max-connections ({}): new connections are closed until some end",
                        self.cfg.max_connections
                    ));
                }
            }
            return None;
        }
        if let Some(before) = self.refusing_since.take() {
            self.notices.push(format!(
                "below --max-connections again; {} connection(s) were refused",
                self.figures.refused - before
            ));
        }
        let transport = match tls {
            None => Transport::Plain,
            Some(server) => {
                match super::tls::TlsConn::new(server, self.now + self.cfg.tls_handshake_timeout) {
                    Ok(t) => Transport::Tls(Box::new(t)),
                    Err(_) => {
                        self.act(Action::Close { fd });
                        return None;
                    }
                }
            }
        };
        let ctx = forward_ctx(&self.cfg, peer, !matches!(transport, Transport::Plain));
        let client = self.clients.insert(ClientConn {
            fd,
            peer,
            connected,
            last_use: self.now,
            session: Box::new(
                ClientAgent::new(ctx, self.cfg.pipeline_depth)
                    .with_max_body(self.cfg.max_body_size)
                    .with_buffer(self.cfg.buffer_size)
                    .with_shared(Rc::clone(&self.shared)),
            ),
            transport,
            proxy_header: proxied.then(Vec::new),
            local: None,
            recv: RecvCtl::default(),
            sending: 0,
            spare: Vec::new(),
            queue: Vec::new(),
            queued: 0,
            links: Vec::new(),
            shut_wr: false,
            dirty: false,
            woken: false,
            handed_off: None,
            head_since: Some(self.now),
            idle_since: self.now,
            send_since: self.now,
            busy_since: None,
            lingering: None,
            h2_sniff: None,
        });
        if self.handing_over {
            // Accepted before the accepts were cancelled: it goes to the
            // heir like any other.
            self.wake(client);
        } else if self.retiring {
            // Accepted before the accepts were cancelled: served, once.
            if let Some(c) = self.clients.get_mut(client) {
                c.session.close_soon();
            }
        }
        self.apply_client_recv(client);
        Some(client)
    }

    /// Arm or cancel `client`'s recv as its `recv.paused` now says.
    pub(super) fn apply_client_recv(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        if let Some(a) = c
            .recv
            .decide(c.fd.as_raw_fd(), Core::client_token(client), 0)
        {
            self.actions.push(a);
        }
    }

    pub(super) fn on_client_recv(&mut self, client: ClientId, recv: Recv<'_>) {
        let Some(c) = self.clients.get_mut(client) else {
            if let Some(b) = recv.buf {
                self.act(Action::Recycle(b));
            }
            return;
        };
        if !recv.more {
            c.recv.ended();
        }
        if recv.result > 0 {
            c.last_use = self.now;
            if c.proxy_header.is_some() {
                if !self.read_proxy_header(client, recv.data) {
                    if let Some(b) = recv.buf {
                        self.act(Action::Recycle(b));
                    }
                    self.close_client(client);
                    return;
                }
            } else if let Transport::Plain = c.transport {
                self.plain_data(client, recv.data);
            } else if !self.tls_receive(client, recv.data) {
                if let Some(b) = recv.buf {
                    self.act(Action::Recycle(b));
                }
                self.close_client(client);
                return;
            }
        } else if recv.result == 0 && c.proxy_header.is_some() {
            // Gone before saying whose connection it was.
            self.figures.proxy_errors += 1;
            if let Some(b) = recv.buf {
                self.act(Action::Recycle(b));
            }
            self.close_client(client);
            return;
        } else if recv.result == 0 {
            c.recv.eof = true;
            if let Some(seen) = c.h2_sniff.take().filter(|s| !s.is_empty()) {
                // Part of a preface, then the end: HTTP/1.1 says what it
                // makes of it.
                c.session.on_client_data(&seen);
            }
            c.session.on_client_eof();
            if let Transport::Tls(t) = &c.transport {
                if t.stream.mid_record() {
                    self.tls_failed(crate::tls::transport::Failure::Truncated);
                }
            }
        } else if recv.result != -libc::ENOBUFS && recv.result != -libc::ECANCELED {
            // Reset or another socket error: nothing more can be delivered.
            if let Some(b) = recv.buf {
                self.act(Action::Recycle(b));
            }
            self.close_client(client);
            return;
        }
        if let Some(b) = recv.buf {
            self.act(Action::Recycle(b));
        }
        if recv.result > 0 {
            // (An HTTP/2 client's window update may make room for the
            // responses of upstreams paused for the lack of it.)
            self.resume_upstreams_of(client);
        }
        self.wake(client);
    }

    pub(super) fn on_client_sent(
        &mut self,
        client: ClientId,
        result: io::Result<()>,
        spare: Option<Vec<u8>>,
    ) {
        let now = self.now;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        c.sending = 0;
        if result.is_err() {
            self.close_client(client);
            return;
        }
        // Idle time counts from the last byte the client took.
        c.idle_since = now;
        c.last_use = now;
        if let Some(buf) = spare {
            if c.session.is_idle() && buf.capacity() <= IDLE_SPARE {
                // The last answer went out and nothing else is asked: an
                // idle keep-alive connection keeps no buffer at all (small
                // ones go to the stash for the next request on any
                // connection; large ones are kept until the tick, for
                // clients fetching large bodies back to back).
                self.shared.give_bytes(std::mem::take(&mut c.spare));
                self.shared.give_bytes(buf);
                c.session.shrink_idle(0);
            } else if buf.capacity() <= KEEP_SPARE && buf.capacity() > c.spare.capacity() {
                c.spare = buf;
            }
        }
        self.resume_upstreams_of(client);
        self.wake(client);
    }

    /// Bytes `client` sent in the clear, to its session. On a plaintext
    /// `h2` listener the first bytes choose the session: the HTTP/2
    /// preface, or HTTP/1.1 (the session the connection began with).
    fn plain_data(&mut self, client: ClientId, data: &[u8]) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let Some(seen) = c.h2_sniff.as_mut() else {
            c.session.on_client_data(data);
            return;
        };
        let preface = crate::h2::frame::PREFACE;
        let had = seen.len();
        let take = (preface.len() - had).min(data.len());
        seen.extend_from_slice(&data[..take]);
        if seen[..] != preface[..seen.len()] {
            let seen = c.h2_sniff.take().unwrap_or_default();
            if had == 0 {
                c.session.on_client_data(data);
            } else {
                c.session.on_client_data(&seen);
                c.session.on_client_data(&data[take..]);
            }
        } else if seen.len() == preface.len() {
            let seen = c.h2_sniff.take().unwrap_or_default();
            c.session = h2_session(&self.cfg, &self.shared, c.peer, false);
            c.session.on_client_data(&seen);
            c.session.on_client_data(&data[take..]);
        }
        // (Otherwise a prefix of the preface: more is needed to tell.)
    }

    /// Bytes of `client`'s PROXY protocol header: once it is whole, its
    /// source is the client's address and what follows it goes to the
    /// session (through TLS on a TLS port). False if the connection is to
    /// close (no header, a bad one, one too long, or TLS failed).
    fn read_proxy_header(&mut self, client: ClientId, data: &[u8]) -> bool {
        let Some(c) = self.clients.get_mut(client) else {
            return false;
        };
        let Some(pending) = c.proxy_header.as_mut() else {
            return true;
        };
        pending.extend_from_slice(data);
        match crate::codec::proxy_protocol::parse(pending) {
            Ok(None) => true,
            Ok(Some((header, used))) => {
                let rest = c.proxy_header.take().unwrap_or_default();
                if let Some(source) = header.source {
                    c.peer = source;
                    c.local = header.destination;
                    c.session.set_client_addr(source.ip());
                }
                // What followed the header in the same recv goes on as if
                // it had come alone (over TLS: the ClientHello).
                if used == rest.len() {
                    true
                } else if let Transport::Plain = c.transport {
                    self.plain_data(client, &rest[used..]);
                    true
                } else {
                    self.tls_receive(client, &rest[used..])
                }
            }
            Err(_) => {
                self.figures.proxy_errors += 1;
                false
            }
        }
    }

    /// Whether the front exchange on `conn` has room for more response.
    pub(super) fn upstream_may_read(&self, conn: ConnId) -> bool {
        if let Some(may) = self.mux_may_read(conn) {
            // (HTTP/2: streams are held back by their windows, not here.)
            return may;
        }
        self.upstream_room(conn).is_none_or(|room| room > 0)
    }

    /// How many response bytes the front exchange on `conn` has room for
    /// (None: no exchange is reading, e.g. an idle connection).
    pub(super) fn upstream_room(&self, conn: ConnId) -> Option<usize> {
        let u = self.upconns.get(conn)?;
        let (Some(client), Some(front)) = (u.client, u.jobs.front()) else {
            return None;
        };
        let c = self.clients.get(client)?;
        Some(
            c.session
                .upstream_room(front.exchange, c.sending + c.queued),
        )
    }

    /// Client output drained: upstreams paused for lack of room may go on.
    fn resume_upstreams_of(&mut self, client: ClientId) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let upconns = &self.upconns;
        if c.links
            .iter()
            .any(|&(_, conn)| upconns.get(conn).is_some_and(|u| u.mux.is_some()))
        {
            // Responses waiting in HTTP/2 streams' inboxes.
            self.mux_resume(client);
        }
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let upconns = &self.upconns;
        let any_paused = c
            .links
            .iter()
            .any(|&(_, conn)| upconns.get(conn).is_some_and(|u| u.recv.paused));
        if !any_paused {
            return;
        }
        let links: Vec<ConnId> = c.links.iter().map(|&(_, conn)| conn).collect();
        for conn in links {
            let paused = self.upconns.get(conn).is_some_and(|u| u.recv.paused);
            if paused && self.upstream_may_read(conn) {
                if let Some(u) = self.upconns.get_mut(conn) {
                    u.recv.paused = false;
                }
                self.apply_upstream_recv(conn);
            }
        }
    }

    /// Count (and log) the client's exchanges that left its agent.
    pub(super) fn account(&mut self, client: ClientId) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let peer = c.peer.ip();
        let (figures, log) = (&mut self.figures, &mut self.log);
        let unix_secs = self.date_secs;
        c.session.drain_finished(&mut |f| {
            figures.requests += 1;
            if f.aborted && f.status == crate::access_log::CLOSED_BEFORE_ANSWER {
                figures.aborted += 1;
            } else {
                figures.response(f.status);
            }
            let took = f.done.saturating_duration_since(f.started);
            figures.request_duration.observe(took);
            if let Some(route) = &f.route {
                figures
                    .routes
                    .entry(route.clone())
                    .or_default()
                    .count(f.status, took);
            }
            if let Some(backend) = &f.backend {
                figures
                    .backends
                    .entry(backend.clone())
                    .or_default()
                    .count(f.status, took);
            }
            if let Some(log) = log {
                crate::access_log::write_line(&mut log.buf, log.format, peer, &f, unix_secs);
            }
        });
    }

    /// Carry out everything the client's agent is ready for.
    pub(super) fn drive_client(&mut self, client: ClientId) {
        self.account(client);
        // 0. Exchanges the session gave up let their connections go.
        let mut cancelled = Vec::new();
        if let Some(c) = self.clients.get_mut(client) {
            c.session.take_cancelled(&mut |ex| cancelled.push(ex));
        }
        for ex in cancelled {
            self.cancel_exchange(client, ex);
        }
        // 1. Place exchanges that may start.
        loop {
            let Some(c) = self.clients.get_mut(client) else {
                return;
            };
            let Some(ex) = c.session.next_ready() else {
                break;
            };
            self.place(client, ex);
        }
        // 2. Hand more request body to connected upstreams (by index: a
        // hand that fails an HTTP/2 stream unlinks it, and the link after
        // it waits for the wake that failure queued).
        let mut i = 0;
        while let Some(&(ex, conn)) = self.clients.get(client).and_then(|c| c.links.get(i)) {
            self.hand_request(client, ex, conn);
            i += 1;
        }
        // 3. A tunnel passes half-closes on.
        let Some(c) = self.clients.get(client) else {
            return;
        };
        if let Some(ends) = c.session.tunnel() {
            if self.drive_tunnel(client, ends) {
                return;
            }
        }
        let now = self.now;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        // Timers: a head in progress runs against the header timeout, an
        // idle keep-alive connection against the idle timeout.
        if c.session.has_partial_head() || !c.session.any_request() {
            c.head_since.get_or_insert(now);
        } else {
            c.head_since = None;
        }
        if !c.session.is_idle() || c.sending > 0 || !c.queue.is_empty() {
            c.idle_since = now;
        }
        if c.session.independent_exchanges() {
            // The oldest stream in progress (HTTP/2): each is late alone.
            c.busy_since = c.session.busy_since();
        } else if c.session.pending() > 0 {
            c.busy_since.get_or_insert(now);
        } else {
            c.busy_since = None;
        }
        // 4. Output leaves at the end of the turn.
        let has_output =
            !c.session.output().is_empty() || !c.queue.is_empty() || c.transport.wants_write();
        // 5. Read the client only while there is room (and all it sends
        // while the close lingers); not at all once it is to be handed
        // over.
        let hand_over = self.handing_over && c.may_hand_over();
        c.recv.paused = hand_over || !c.session.may_read_client() && c.lingering.is_none();
        let close = c.session.wants_close() && c.sending == 0 && !has_output;
        self.apply_client_recv(client);
        if hand_over {
            // Once the recv's last completion is in (no byte can be left
            // with this ring), the connection goes.
            if self.clients.get(client).is_some_and(|c| !c.recv.armed) {
                self.hand_over(client);
            }
            return;
        }
        // 6. Close once everything owed has been written.
        if close {
            self.close_or_linger(client);
        } else if has_output {
            self.mark_client(client);
        }
    }

    /// `client`'s session gave exchange `ex` up: the upstream connection
    /// carrying it closes (its response can reach nobody), or its place in
    /// a waiting list is given up. On a connection it shares with others
    /// of the client's, behind the one being answered, it leaves the line
    /// if its request was never written; otherwise it stays: its response,
    /// when it comes, is no one's and closes the connection then (those
    /// behind it are placed again).
    fn cancel_exchange(&mut self, client: ClientId, ex: ExchangeId) {
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let conn = c
            .links
            .iter()
            .find(|&&(e, _)| e == ex)
            .map(|&(_, conn)| conn);
        match conn {
            Some(conn) => {
                c.unlink(ex);
                let Some(u) = self.upconns.get_mut(conn) else {
                    return;
                };
                if u.mux.is_some() {
                    // Its stream is reset; the connection carries on.
                    self.mux_cancel(conn, client, ex);
                    return;
                }
                match u.jobs.iter().position(|j| j.exchange == ex) {
                    Some(0) => self.abort_upstream(conn, ProxyError::Cancelled),
                    Some(at) if !u.jobs[at].handed => {
                        // Behind others and never written: it leaves the
                        // line as if it had never joined.
                        u.jobs.remove(at);
                        self.pools[u.pool].exchanges_ended(u.upstream, 1, 0);
                    }
                    // Written, behind others: its answer will come, and
                    // closes the connection then.
                    _ => {}
                }
            }
            None => {
                for pool in self.pools.iter_mut() {
                    if pool.has_waiters() {
                        pool.forget_waiters(|w| w.client == client && w.exchange == ex);
                    }
                }
            }
        }
    }

    /// Give `client` to the heir (see `Core::begin_retire`): it leaves
    /// this worker's table without being closed.
    fn hand_over(&mut self, client: ClientId) {
        self.account(client);
        let Some(c) = self.clients.remove(client) else {
            return;
        };
        self.shared.give_bytes(c.spare);
        let age = self.now.saturating_duration_since(c.connected);
        self.figures.handed_over += 1;
        self.act(Action::HandOver {
            fd: c.fd,
            peer: c.peer,
            connected_at: std::time::SystemTime::now() - age,
            requests: c.session.requests(),
        });
    }

    /// Everything owed is written and the connection ends: closed now, or,
    /// if the client may still be sending, our side is shut and the close
    /// waits for the client's end (or [`LINGER_QUIET`] / [`LINGER_MAX`]).
    fn close_or_linger(&mut self, client: ClientId) {
        let now = self.now;
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        if let Transport::Tls(t) = &mut c.transport {
            // A TLS connection says it closes (close_notify) before it does.
            if !c.shut_wr && t.stream.close() {
                self.mark_client(client);
                return;
            }
        }
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        let lingers = c.session.lingers() && !c.recv.eof && !c.shut_wr;
        match c.lingering {
            Some(_) if !c.recv.eof => {}
            None if lingers => {
                c.lingering = Some(now);
                c.shut_wr = true;
                c.recv.paused = false;
                let fd = c.fd.as_raw_fd();
                self.act(Action::Shutdown { fd });
                self.apply_client_recv(client);
            }
            _ => self.close_client(client),
        }
    }

    /// Pass a tunnel's half-closes on: the client's FIN goes to the origin
    /// once every byte the client sent is out, the origin's to the client
    /// once every byte for it is out. When both directions are shut the
    /// tunnel is over and both connections close. Returns true if the
    /// client connection was closed.
    fn drive_tunnel(&mut self, client: ClientId, ends: TunnelEnds) -> bool {
        let Some(c) = self.clients.get_mut(client) else {
            return true;
        };
        let conn = c
            .links
            .iter()
            .find(|&&(ex, _)| ex == ends.exchange)
            .map(|&(_, conn)| conn);
        let Some(u) = conn.and_then(|conn| self.upconns.get_mut(conn)) else {
            return false; // the upstream side failed: the agent closes
        };
        let mut shut = Vec::new();
        let mut seal = None;
        if ends.client_done
            && !u.shut_wr
            && c.session.pending_request(ends.exchange) == 0
            && u.out.is_empty()
            && u.sending == 0
        {
            // Over TLS, a close_notify says it first (the FIN follows once
            // it is out: the send's end wakes the client).
            let sealing = u.tls.as_mut().is_some_and(|t| t.close() || t.wants_write());
            if sealing {
                seal = conn;
            } else {
                shut.push(u.fd.as_raw_fd());
                u.shut_wr = true;
            }
        }
        let tls_due = matches!(&c.transport, Transport::Tls(t) if t.stream.wants_write());
        let flushed = c.sending == 0
            && c.queue.is_empty()
            && c.session.output().is_empty()
            && !tls_due
            && ends.owed_nothing_else;
        let mut seal_client = false;
        if ends.upstream_done && !c.shut_wr && flushed {
            // A TLS client hears close_notify before the FIN (which follows
            // once it is out: the send's end comes back here).
            seal_client = match &mut c.transport {
                Transport::Tls(t) => t.stream.close(),
                Transport::Plain => false,
            };
            if !seal_client {
                shut.push(c.fd.as_raw_fd());
                c.shut_wr = true;
            }
        }
        let over = c.shut_wr && u.shut_wr;
        for fd in shut {
            self.act(Action::Shutdown { fd });
        }
        if let Some(conn) = seal {
            self.mark_upstream(conn);
        }
        if seal_client {
            self.mark_client(client);
        }
        if over {
            self.close_client(client);
        }
        over
    }

    /// Copy the request bytes of `ex` that are ready into `conn`'s output,
    /// if the connection is open and has room.
    pub(super) fn hand_request(&mut self, client: ClientId, ex: ExchangeId, conn: ConnId) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.mux.is_some() {
            self.mux_hand(client, ex, conn);
            return;
        }
        if !u.may_take_request() {
            return;
        }
        let Some(c) = self.clients.get_mut(client) else {
            return;
        };
        if c.session.pending_request(ex) == 0 {
            return;
        }
        let host = self.pools[u.pool]
            .upstream(u.upstream)
            .map_or("", |up| up.spec.host());
        c.session.hand_request(ex, &mut u.out, host.as_bytes());
        if let Some(job) = u.jobs.iter_mut().find(|j| j.exchange == ex) {
            job.handed = true;
        }
        self.mark_upstream(conn);
    }

    /// `client`'s exchange `ex` on `conn` is over for it (the client left,
    /// or ran out of time): a connection of its own closes (the response
    /// can reach nobody, and nobody can parse past it), a multiplexed one
    /// only resets its stream.
    pub(super) fn let_go(
        &mut self,
        client: ClientId,
        ex: ExchangeId,
        conn: ConnId,
        err: ProxyError,
    ) {
        if self.upconns.get(conn).is_some_and(|u| u.mux.is_some()) {
            self.mux_cancel(conn, client, ex);
        } else {
            self.abort_upstream(conn, err);
        }
    }

    /// Close a client connection. Upstream connections carrying its
    /// exchanges will bring responses nobody can read (and nobody can
    /// parse past): they close too. They carry nobody else's.
    pub(super) fn close_client(&mut self, client: ClientId) {
        // What is still in progress is counted and logged as cut short.
        if let Some(c) = self.clients.get_mut(client) {
            c.session.cut_short();
        }
        self.account(client);
        let Some(mut c) = self.clients.remove(client) else {
            return;
        };
        for seg in c.queue.drain(..) {
            if let Seg::Ring { buf, .. } = seg {
                self.lent -= 1;
                self.act(Action::Recycle(buf));
            }
        }
        if c.sending > 0 {
            // Its send must not outlive the connection (see CancelAll).
            self.act(Action::CancelAll {
                fd: c.fd.as_raw_fd(),
            });
        } else if c.recv.armed && !c.recv.cancelling {
            self.act(Action::CancelRecv {
                fd: c.fd.as_raw_fd(),
                token: Core::client_token(client),
            });
        }
        self.act(Action::Close { fd: c.fd });
        for (ex, conn) in c.links {
            self.let_go(client, ex, conn, ProxyError::ClosedBeforeResponse);
        }
        // Its queued exchanges must not hold places in a queue.
        for pool in self.pools.iter_mut() {
            if pool.has_waiters() {
                pool.forget_waiters(|w| w.client == client);
            }
        }
        self.wake_waiters();
    }

    /// Every dirty client's output goes out: one send per socket.
    pub(super) fn flush_clients(&mut self) {
        let now = self.now;
        let mut broken = Vec::new();
        for client in std::mem::take(&mut self.dirty_clients) {
            let Some(c) = self.clients.get_mut(client) else {
                continue;
            };
            c.dirty = false;
            if c.sending > 0 {
                continue;
            }
            let token = Core::client_token(client);
            let fd = c.fd.as_raw_fd();
            if let Transport::Tls(t) = &mut c.transport {
                let mut buf = std::mem::take(&mut c.spare);
                buf.clear();
                let sealed = if t.stream.is_handshaking() {
                    // Nothing may be encrypted yet: what the session wrote
                    // waits for the handshake's end.
                    t.stream.write_records(&mut buf)
                } else {
                    // What the session wrote, encrypted (with any records
                    // due before it).
                    let plain = std::mem::take(c.session.output());
                    let sealed = t.stream.send(&plain, &mut buf);
                    *c.session.output() = plain;
                    c.session.output().clear();
                    sealed
                };
                if sealed.is_err() {
                    // rustls refused the bytes: they cannot be delivered,
                    // so the connection ends.
                    c.spare = buf;
                    broken.push(client);
                    continue;
                }
                if buf.is_empty() {
                    c.spare = buf;
                    continue;
                }
                c.sending = buf.len();
                c.send_since = now;
                self.act(Action::Send { fd, token, buf });
                continue;
            }
            if !c.queue.is_empty() {
                // Lent body pieces (and the output around them) go out in
                // one sendmsg; whatever does not fit waits for the next.
                seal_output(c);
                let rest = if c.queue.len() > MAX_SEGS {
                    c.queue.split_off(MAX_SEGS)
                } else {
                    Vec::new()
                };
                let segs = std::mem::replace(&mut c.queue, rest);
                let n: usize = segs.iter().map(Seg::len).sum();
                c.queued -= n;
                c.sending = n;
                c.send_since = now;
                self.act(Action::SendSegs { fd, token, segs });
            } else if !c.session.output().is_empty() {
                let spare = std::mem::take(&mut c.spare);
                let buf = std::mem::replace(c.session.output(), spare);
                c.sending = buf.len();
                c.send_since = now;
                self.act(Action::Send { fd, token, buf });
            }
        }
        for client in broken {
            self.tls_failed(crate::tls::transport::Failure::Other);
            self.close_client(client);
        }
    }
}

/// Move the agent's output into the client's queue, ahead of what comes
/// next (a lent body piece).
pub(super) fn seal_output(c: &mut ClientConn) {
    if !c.session.output().is_empty() {
        let spare = std::mem::take(&mut c.spare);
        let out = std::mem::replace(c.session.output(), spare);
        c.queued += out.len();
        c.queue.push(Seg::Bytes(out));
    }
}

/// What an agent for a client at `peer` forwards with.
pub(super) fn forward_ctx(cfg: &Config, peer: SocketAddr, tls: bool) -> ForwardCtx {
    ForwardCtx {
        client: peer.ip(),
        proto: if tls { "https" } else { "http" },
        limits: cfg.head_limits,
        via: cfg.via,
        // Read from the worker's current configuration at each head (see
        // `AgentShared::affinity`), so a reload reaches kept connections
        // too.
        affinity_cookie: None,
        drop_field: None,
    }
}

/// An HTTP/2 session for a client at `peer` (over TLS if `tls`).
pub(super) fn h2_session(
    cfg: &Config,
    shared: &Rc<AgentShared>,
    peer: SocketAddr,
    tls: bool,
) -> Box<dyn ClientSession> {
    let settings = crate::h2::session::Settings {
        ctx: forward_ctx(cfg, peer, tls),
        max_body: cfg.max_body_size,
        buffer: cfg.buffer_size,
        limits: cfg.h2_limits,
        request_timeout: cfg.request_timeout,
    };
    Box::new(crate::h2::session::H2Session::new(
        settings,
        Rc::clone(shared),
    ))
}
