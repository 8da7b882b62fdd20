//! HTTP/2 to origins (`protocol = "h2"`): one upstream connection carries
//! many clients' exchanges at once, each on a stream of its own.
//!
//! What it owns: which stream belongs to which client's exchange, the
//! request of each written as HEADERS and DATA (from the HTTP/1.1 bytes the
//! agent writes for any upstream, de-chunked, within the origin's windows),
//! each response given back to its agent as HTTP/1.1 (see
//! [`crate::h2::upstream`]) as fast as that client takes it, and what
//! becomes of an exchange when its stream or its connection fails.
//!
//! # Isolation
//! A stream's bytes reach only its exchange: the origin names the owner of
//! every frame, so a stray response cannot become another client's. A slow
//! client holds back only its own stream: what it has not taken waits in
//! the stream's inbox, bounded by the stream's window (`--buffer-size`),
//! which is credited back only as the client takes the bytes. The
//! connection is read whenever bytes come.
//!
//! # In the pool
//! A connection counts as one active connection while it carries any
//! stream, and is *joinable* (see [`crate::pool::Upstream::joinable`])
//! while the origin's stream limit and its state let it take one more: a
//! request joins it before an idle connection is reused or a new one is
//! opened. With no stream left it goes idle like any other connection. A
//! connection still connecting is joinable too, so a burst of requests
//! shares the first connection instead of opening one each.
//!
//! # Failures
//! - RST_STREAM from the origin fails that exchange alone (502, or the cut
//!   once its answer started); REFUSED_STREAM and GOAWAY above the stream
//!   say the origin did not process it: it is sent again, anywhere.
//! - A connection error, or the connection's end, fails the streams whose
//!   responses are not whole; those whose responses are whole in their
//!   inboxes are still delivered.
//! - A client that goes away (or gives an exchange up) resets its stream
//!   with CANCEL; nobody else notices.
//! - Each stream's first response byte is due within its response timeout.

use std::time::Instant;

use super::core::{ClientId, ConnId, Core};
use super::upconn::{Job, UpState};
use crate::codec::body::BodyDecoder;
use crate::error::ProxyError;
use crate::h2::hpack::Fields;
use crate::h2::upstream::{Events, Http1Response, Limits, OpenError, RequestBody, Upstream};
use crate::session::{ExchangeId, UpstreamFate};
use crate::spec::UpstreamProtocol;

/// An idle HTTP/2 connection the origin has said nothing on for this long
/// gets a PING: one that does not answer within the connect timeout is
/// closed before a request picks it (a NAT or firewall that dropped it
/// silently would cost that request its response timeout).
const IDLE_PING: std::time::Duration = std::time::Duration::from_secs(15);

/// Octets of frames queued for an origin past which the connection is not
/// read (an origin that floods PINGs or SETTINGS without reading our
/// acknowledgements must not make us hold any amount).
const OUTPUT_LIMIT: usize = 1 << 20;

/// The HTTP/2 side of an upstream connection.
pub(crate) struct Mux {
    pub(super) h2: Upstream,
    /// The exchanges on it, in the order they joined.
    streams: Vec<Stream>,
    /// `:scheme` of its requests.
    scheme: &'static str,
    /// Some stream's body waits for the windows (see [`Core::mux_data`]).
    bodies_wait: bool,
    /// The origin refused a stream (REFUSED_STREAM, or GOAWAY above it):
    /// the connection takes nothing new, so the retry goes elsewhere.
    refused: bool,
    /// A stream was late: a PING went, and the connection takes nothing
    /// new until the origin says anything; nothing by then, and it is dead
    /// (see [`Core::mux_overdue`]).
    probe: Option<Instant>,
    /// When the origin last sent anything.
    heard: Instant,
}

/// How the rest of a request body comes from the agent.
#[derive(Debug)]
enum Body {
    /// The head has not been handed yet.
    Unopened,
    /// These many octets are still to come as they are.
    Length(u64),
    /// Chunked: de-chunked here.
    Chunked(BodyDecoder),
    /// All of it is out (or the request had none).
    Done,
}

/// Why a stream ended before its response was whole.
#[derive(Debug, Clone, Copy)]
enum Gone {
    Reset(u32),
    Refused,
}

/// One exchange on the connection.
struct Stream {
    /// Its stream id (0 until its head went out).
    id: u32,
    client: ClientId,
    exchange: ExchangeId,
    job: Job,
    body: Body,
    /// De-chunked body octets the windows did not let out yet, and whether
    /// they end the request.
    unsent: Vec<u8>,
    end_pending: bool,
    /// Its response as HTTP/1.1, not yet taken by its agent.
    inbox: Vec<u8>,
    /// Response body octets in `inbox`: the stream's window gets them back
    /// as the agent takes them.
    uncredited: u32,
    response: Http1Response,
    /// The whole response is in `inbox`: the connection is no longer
    /// needed for it.
    ended: bool,
    /// The origin's answer began.
    answered: bool,
    /// When its head went out, and when its first response byte is due.
    since: Instant,
    due: Option<Instant>,
    gone: Option<Gone>,
}

impl Mux {
    /// The HTTP/2 side of a new connection whose clients buffer at most
    /// `buffer` octets each, over TLS if `tls`.
    pub(super) fn new(buffer: usize, tls: bool, now: Instant) -> Mux {
        // Each stream may bring what its client buffers; the connection,
        // sixteen such streams.
        let stream_window = buffer.clamp(1 << 16, 1 << 24) as u32;
        let limits = Limits {
            stream_window,
            conn_window: stream_window.saturating_mul(16).min(0x7fff_ffff),
            ..Limits::default()
        };
        Mux {
            h2: Upstream::new(limits),
            streams: Vec::new(),
            scheme: if tls { "https" } else { "http" },
            bodies_wait: false,
            refused: false,
            probe: None,
            heard: now,
        }
    }

    /// Exchanges on it.
    pub(super) fn exchanges(&self) -> usize {
        self.streams.len()
    }

    fn at(&self, id: u32) -> Option<usize> {
        self.streams.iter().position(|s| s.id == id && id != 0)
    }

    fn of(&self, client: ClientId, ex: ExchangeId) -> Option<usize> {
        self.streams
            .iter()
            .position(|s| s.client == client && s.exchange == ex)
    }

    /// Whether it may take one more exchange.
    fn has_room(&self) -> bool {
        !self.refused
            && self.probe.is_none()
            && self.h2.may_open()
            && self.streams.len() < self.h2.stream_limit()
    }
}

/// The origin's frames, written into the streams' inboxes.
struct Sink<'a> {
    streams: &'a mut [Stream],
    touched: &'a mut Vec<u32>,
    /// Body octets that came: the connection's window gets them back at
    /// once (each stream's own window bounds what it holds).
    arrived: u32,
}

impl Sink<'_> {
    fn stream(&mut self, id: u32) -> Option<&mut Stream> {
        let s = self.streams.iter_mut().find(|s| s.id == id && id != 0)?;
        if !self.touched.contains(&id) {
            self.touched.push(id);
        }
        Some(s)
    }
}

impl Events for Sink<'_> {
    fn response(&mut self, stream: u32, status: u16, fields: &Fields, end_stream: bool) {
        if let Some(s) = self.stream(stream) {
            s.answered = true;
            s.response.head(status, fields, end_stream, &mut s.inbox);
            s.ended = end_stream;
        }
    }

    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        self.arrived = self.arrived.saturating_add(data.len() as u32);
        if let Some(s) = self.stream(stream) {
            s.response.data(data, end, &mut s.inbox);
            s.uncredited = s.uncredited.saturating_add(data.len() as u32);
            s.ended = end;
        }
    }

    fn trailers(&mut self, stream: u32, fields: &Fields) {
        if let Some(s) = self.stream(stream) {
            s.response.trailers(fields, &mut s.inbox);
            s.ended = true;
        }
    }

    fn reset(&mut self, stream: u32, code: u32) {
        if let Some(s) = self.stream(stream) {
            s.gone = Some(Gone::Reset(code));
        }
    }

    fn interim(&mut self, stream: u32, status: u16, fields: &Fields) {
        if let Some(s) = self.stream(stream) {
            // The first response byte, as with HTTP/1.1: the response
            // timeout is over (an upload after a 100 may take longer).
            s.answered = true;
            // As an HTTP/1.1 origin writes it: the agent passes it on.
            s.inbox.extend_from_slice(b"HTTP/1.1 ");
            s.inbox.extend_from_slice(status.to_string().as_bytes());
            s.inbox.push(b' ');
            s.inbox
                .extend_from_slice(crate::codec::reason_phrase(status).as_bytes());
            s.inbox.extend_from_slice(b"\r\n");
            let framing = |n: &[u8]| n.starts_with(b":") || n == b"content-length";
            for (name, value) in fields.iter().filter(|(n, _)| !framing(n)) {
                s.inbox.extend_from_slice(name);
                s.inbox.extend_from_slice(b": ");
                s.inbox.extend_from_slice(value);
                s.inbox.extend_from_slice(b"\r\n");
            }
            s.inbox.extend_from_slice(b"\r\n");
        }
    }

    fn refused(&mut self, stream: u32) {
        if let Some(s) = self.stream(stream) {
            s.gone = Some(Gone::Refused);
        }
    }
}

/// The same failure again, for the next of a connection's exchanges.
fn again(err: &ProxyError) -> ProxyError {
    let io = |e: &std::io::Error| {
        e.raw_os_error()
            .map_or_else(|| e.kind().into(), std::io::Error::from_raw_os_error)
    };
    match err {
        ProxyError::ConnectFailed(e) => ProxyError::ConnectFailed(io(e)),
        ProxyError::UpstreamIo(e) => ProxyError::UpstreamIo(io(e)),
        ProxyError::ConnectTimeout => ProxyError::ConnectTimeout,
        ProxyError::ResponseTimeout => ProxyError::ResponseTimeout,
        ProxyError::RequestDeadline => ProxyError::RequestDeadline,
        ProxyError::UpstreamTls(f) => ProxyError::UpstreamTls(*f),
        ProxyError::BadResponse(r) => ProxyError::BadResponse(r),
        ProxyError::Cancelled => ProxyError::Cancelled,
        _ => ProxyError::ClosedBeforeResponse,
    }
}

impl Core {
    /// The HTTP/2 side for a new connection to `upstream` of pool `pool`,
    /// if its backend speaks HTTP/2.
    pub(super) fn mux_for(
        &self,
        pool: usize,
        upstream: crate::spec::UpstreamId,
    ) -> Option<Box<Mux>> {
        let spec = &self.pools[pool].upstream(upstream)?.spec;
        (spec.protocol == UpstreamProtocol::H2)
            .then(|| Box::new(Mux::new(self.cfg.buffer_size, spec.tls.is_some(), self.now)))
    }

    /// `client`'s exchange `ex` (its `job`) goes on multiplexed connection
    /// `conn` (taken idle, joined, or just opened). Its stream opens when
    /// its head is handed ([`Core::mux_hand`]).
    pub(super) fn mux_join(&mut self, conn: ConnId, client: ClientId, job: Job) {
        let now = self.now;
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        if u.state == UpState::Idle {
            u.state = UpState::Open;
            // (A PING in flight decides by its deadline.)
            u.deadline = u.mux.as_ref().and_then(|m| m.probe);
            u.reused = true;
        }
        let Some(mux) = u.mux.as_mut() else {
            return;
        };
        mux.streams.push(Stream {
            id: 0,
            client,
            exchange: job.exchange,
            job,
            body: Body::Unopened,
            unsent: Vec::new(),
            end_pending: false,
            inbox: Vec::new(),
            uncredited: 0,
            response: Http1Response::default(),
            ended: false,
            answered: false,
            since: now,
            due: Some(now + job.timeout),
            gone: None,
        });
        // (Its place among the joinable connections: a connection still
        // connecting takes more streams too.)
        self.mux_settle(conn);
    }

    /// Hand what `client`'s agent has of `ex`'s request to its stream on
    /// `conn`: the head opens the stream; body octets go out as the
    /// windows allow, the rest waits (and the agent is not asked for more
    /// until it is out).
    pub(super) fn mux_hand(&mut self, client: ClientId, ex: ExchangeId, conn: ConnId) {
        let now = self.now;
        let (Some(u), Some(c)) = (self.upconns.get_mut(conn), self.clients.get_mut(client)) else {
            return;
        };
        let host = self.pools[u.pool]
            .upstream(u.upstream)
            .map_or("", |up| up.spec.host());
        let Some(mux) = u.mux.as_mut() else {
            return;
        };
        let Some(i) = mux.of(client, ex) else {
            return;
        };
        let s = &mut mux.streams[i];
        let fresh = matches!(s.body, Body::Unopened);
        if !s.unsent.is_empty() || s.end_pending || matches!(s.body, Body::Done) {
            return;
        }
        if !fresh && c.session.pending_request(ex) == 0 {
            return;
        }
        if fresh && mux.probe.is_some() {
            // (Taken idle while a PING asks whether the origin is still
            // there: handed once it answers, refused unsent if it does
            // not, see mux_overdue.)
            return;
        }
        if fresh && u.state == UpState::Connecting {
            // Nothing is handed before the connect: a request whose
            // connect fails may go again, whatever its method (its bytes
            // are still the agent's). It is handed once it is open.
            return;
        }
        if fresh && !mux.h2.may_open() {
            // (The origin said GOAWAY, or lowered its limit, since the
            // request joined: nothing went, it may go elsewhere.)
            self.mux_fail_stream(conn, i, ProxyError::Refused);
            self.mux_settle(conn);
            return;
        }
        let mut bytes = std::mem::take(&mut self.tls_plain);
        bytes.clear();
        c.session.hand_request(ex, &mut bytes, host.as_bytes());
        let mut rest = &bytes[..];
        if fresh {
            let Some(end) = rest.windows(4).position(|w| w == b"\r\n\r\n") else {
                self.tls_plain = bytes;
                return;
            };
            let (head, body) = rest.split_at(end + 4);
            rest = body;
            match mux.h2.open(head, mux.scheme, false) {
                Ok((id, framing)) => {
                    self.figures.upstream_h2_streams += 1;
                    s.id = id;
                    s.since = now;
                    let due = now + s.job.timeout;
                    s.due = Some(due);
                    u.deadline = Some(u.deadline.map_or(due, |d| d.min(due)));
                    s.body = match framing {
                        RequestBody::None => Body::Done,
                        RequestBody::Length(n) => Body::Length(n),
                        RequestBody::Chunked => {
                            Body::Chunked(BodyDecoder::new(crate::codec::Framing::Chunked))
                        }
                    };
                }
                Err(e) => {
                    self.tls_plain = bytes;
                    let err = match e {
                        // (Checked above: cannot happen.)
                        OpenError::NoRoom => ProxyError::ClosedBeforeResponse,
                        OpenError::BadHead => ProxyError::NotOverH2,
                    };
                    self.mux_fail_stream(conn, i, err);
                    self.mux_settle(conn);
                    return;
                }
            }
        }
        let mut broken = false;
        match &mut s.body {
            Body::Length(left) => {
                let take = (*left).min(rest.len() as u64) as usize;
                s.unsent.extend_from_slice(&rest[..take]);
                *left -= take as u64;
                if *left == 0 {
                    s.body = Body::Done;
                    s.end_pending = true;
                }
            }
            Body::Chunked(decoder) => {
                let unsent = &mut s.unsent;
                match decoder.feed(rest, &mut |d| unsent.extend_from_slice(d)) {
                    Ok(p) if p.done => {
                        s.body = Body::Done;
                        s.end_pending = true;
                    }
                    Ok(_) => {}
                    // (The agent checked the framing as it read it.)
                    Err(_) => broken = true,
                }
            }
            Body::Unopened | Body::Done => {}
        }
        self.tls_plain = bytes;
        if broken {
            self.mux_fail_stream(conn, i, ProxyError::BadRequestBody("chunk framing"));
            self.mux_settle(conn);
            return;
        }
        self.mux_push(conn, i);
        self.mux_settle(conn);
    }

    /// Send what the windows allow of stream `i`'s waiting body; true if
    /// none is left waiting.
    fn mux_push(&mut self, conn: ConnId, i: usize) -> bool {
        let Some(mux) = self.upconns.get_mut(conn).and_then(|u| u.mux.as_mut()) else {
            return true;
        };
        let s = &mut mux.streams[i];
        if s.id == 0 || (s.unsent.is_empty() && !s.end_pending) {
            return true;
        }
        let sent = mux.h2.send_data(s.id, &s.unsent, s.end_pending);
        let all = sent == s.unsent.len();
        s.unsent.drain(..sent);
        if all {
            s.end_pending = false;
            s.unsent = Vec::new();
        } else {
            mux.bodies_wait = true;
        }
        self.mark_upstream(conn);
        all
    }

    /// Multiplexed connection `conn` is open: the requests that joined it
    /// while it connected are handed now.
    pub(super) fn mux_opened(&mut self, conn: ConnId) {
        let waiting: Vec<(ClientId, ExchangeId)> = self
            .upconns
            .get(conn)
            .and_then(|u| u.mux.as_ref())
            .map(|m| {
                m.streams
                    .iter()
                    .filter(|s| s.id == 0)
                    .map(|s| (s.client, s.exchange))
                    .collect()
            })
            .unwrap_or_default();
        for (client, ex) in waiting {
            self.mux_hand(client, ex, conn);
        }
    }

    /// Take every exchange off multiplexed connection `conn` and fail it
    /// with what `err` makes (its connect failed: nothing was handed, each
    /// may go again).
    pub(super) fn mux_fail_all(&mut self, conn: ConnId, mut err: impl FnMut() -> ProxyError) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let (pool, upstream) = (u.pool, u.upstream);
        let streams = u.mux.as_mut().map(|m| std::mem::take(&mut m.streams));
        for s in streams.unwrap_or_default() {
            self.pools[pool].exchanges_ended(upstream, 1, 0);
            self.fail_exchange(s.client, s.exchange, err());
        }
    }

    /// Bytes (`result` > 0), the end (0) or an error came on multiplexed
    /// connection `conn`, in the clear.
    pub(super) fn mux_data(&mut self, conn: ConnId, result: i32, data: &[u8]) {
        if result <= 0 {
            self.mux_ended(conn, result);
            return;
        }
        let now = self.now;
        let mut touched = Vec::new();
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let Some(mux) = u.mux.as_mut() else {
            return;
        };
        let mut sink = Sink {
            streams: &mut mux.streams,
            touched: &mut touched,
            arrived: 0,
        };
        let failed = mux.h2.receive(data, now, &mut sink).is_err();
        let arrived = sink.arrived;
        // (The origin is there: a probe is answered.)
        let probed = mux.probe.take().is_some();
        mux.heard = now;
        if arrived > 0 {
            mux.h2.credit_connection(arrived);
        }
        // Bodies the windows held back may go now (a WINDOW_UPDATE).
        let waiting: Vec<usize> = if std::mem::take(&mut mux.bodies_wait) {
            (0..mux.streams.len())
                .filter(|&i| {
                    let s = &mux.streams[i];
                    s.id != 0 && (!s.unsent.is_empty() || s.end_pending)
                })
                .collect()
        } else {
            Vec::new()
        };
        for i in waiting {
            let client = self
                .upconns
                .get(conn)
                .and_then(|u| u.mux.as_ref())
                .map(|m| m.streams[i].client);
            if self.mux_push(conn, i) {
                if let Some(client) = client {
                    // It may hand more of its body.
                    self.wake(client);
                }
            }
        }
        for id in touched {
            self.mux_deliver(conn, id);
        }
        if probed {
            // Streams that waited for the PING's answer go now.
            self.mux_opened(conn);
        }
        if failed {
            // A connection error (GOAWAY is written; every stream was
            // reset and failed above).
            self.figures.stray_closes += 1;
            self.abort_upstream(conn, ProxyError::BadResponse("HTTP/2 connection error"));
            return;
        }
        if let Some(u) = self.upconns.get_mut(conn) {
            if u.mux.as_ref().is_some_and(|m| m.h2.has_output()) {
                self.mark_upstream(conn);
            }
        }
        self.mux_settle(conn);
        if self.upconns.contains(conn) {
            self.redecide_upstream_recv(conn);
        }
    }

    /// The tick: idle multiplexed connections quiet for [`IDLE_PING`] get a
    /// PING; those whose PING went unanswered for the connect timeout are
    /// closed.
    pub(super) fn ping_idle_multiplexed(&mut self) {
        let now = self.now;
        let mut dead = Vec::new();
        let mut pinged = Vec::new();
        for (conn, u) in self.upconns.iter_mut() {
            let Some(m) = u.mux.as_mut().filter(|_| u.state == UpState::Idle) else {
                continue;
            };
            match m.probe {
                Some(d) if now >= d => dead.push(conn),
                None if now >= m.heard + IDLE_PING => {
                    m.h2.ping(*b"ringmux!");
                    m.probe = Some(now + self.cfg.connect_timeout);
                    pinged.push(conn);
                }
                _ => {}
            }
        }
        for conn in pinged {
            self.mark_upstream(conn);
        }
        for conn in dead {
            self.close_upstream(conn);
        }
    }

    /// Whether the origin on multiplexed connection `conn` may be read (its
    /// acknowledgements are not piling up).
    pub(super) fn mux_may_read(&self, conn: ConnId) -> Option<bool> {
        let u = self.upconns.get(conn)?;
        let mux = u.mux.as_ref()?;
        Some(u.out.len() + mux.h2.output_len() < OUTPUT_LIMIT)
    }

    /// Give stream `id`'s inbox to its agent, as much as the client has
    /// room for; end the stream if its response is over, or failed.
    pub(super) fn mux_deliver(&mut self, conn: ConnId, id: u32) {
        let now = self.now;
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let (pool, upstream) = (u.pool, u.upstream);
        let Some(mux) = u.mux.as_mut() else {
            return;
        };
        let Some(i) = mux.at(id) else {
            return;
        };
        let s = &mut mux.streams[i];
        let (client, ex) = (s.client, s.exchange);
        let Some(c) = self.clients.get_mut(client) else {
            // Its client is gone (it would have cancelled it).
            self.mux_cancel_at(conn, i);
            return;
        };
        let mut first = None;
        if s.answered && s.due.is_some() {
            // Its first response byte: timed.
            s.due = None;
            let took = now.saturating_duration_since(s.since);
            c.session.note_upstream(ex, took);
            first = Some((s.job.route, took));
        }
        let mut fate = UpstreamFate::Busy;
        let mut moved = false;
        if !s.inbox.is_empty() {
            let room = c.session.upstream_room(ex, c.sending + c.queued);
            let k = room.min(s.inbox.len());
            if k > 0 {
                moved = true;
                fate = c.session.on_response_data(ex, &s.inbox[..k]).0;
                s.inbox.drain(..k);
                if s.inbox.is_empty() && s.inbox.capacity() > 64 * 1024 {
                    s.inbox = Vec::new();
                }
                let credit = s.uncredited.min(k as u32);
                s.uncredited -= credit;
                // (The connection's window had it back as it came.)
                mux.h2.credit_stream(id, credit);
            }
        }
        let gone = s.gone;
        let proven = first.is_some() && u.prove();
        if let Some((route, took)) = first {
            let p = &mut self.pools[pool];
            p.observe_service(route, took, now);
            p.record_response(upstream, took, now);
            if proven {
                p.proven(upstream);
                self.wake_waiters();
            }
        }
        if moved {
            self.wake(client);
            self.mark_upstream(conn);
        }
        if fate != UpstreamFate::Busy {
            // Its response is whole (or the agent gave it up).
            self.mux_finish(conn, i, fate);
        } else if let Some(gone) = gone {
            let err = match gone {
                Gone::Refused => {
                    self.figures.upstream_h2_refused += 1;
                    if let Some(m) = self.upconns.get_mut(conn).and_then(|u| u.mux.as_mut()) {
                        m.refused = true;
                    }
                    ProxyError::Refused
                }
                Gone::Reset(code) => ProxyError::StreamReset(code),
            };
            self.mux_fail_stream(conn, i, err);
            self.mux_settle(conn);
        }
    }

    /// Take stream `i` off `conn`, resetting it (RST_STREAM CANCEL) if
    /// `reset` says so: its pool and upstream, and the stream.
    fn mux_take(
        &mut self,
        conn: ConnId,
        i: usize,
        reset: impl FnOnce(&Stream) -> bool,
    ) -> Option<(usize, crate::spec::UpstreamId, Stream)> {
        let u = self.upconns.get_mut(conn)?;
        let (pool, upstream) = (u.pool, u.upstream);
        let mux = u.mux.as_mut()?;
        let s = mux.streams.remove(i);
        if reset(&s) {
            mux.h2.cancel(s.id);
        }
        self.mark_upstream(conn);
        Some((pool, upstream, s))
    }

    /// Stream `i` on `conn` has its whole answer with its agent (`fate`
    /// Close: the agent gave it up before its end, which resets it).
    fn mux_finish(&mut self, conn: ConnId, i: usize, fate: UpstreamFate) {
        let reset = |s: &Stream| !s.ended && s.gone.is_none() && fate == UpstreamFate::Close;
        let Some((pool, upstream, s)) = self.mux_take(conn, i, reset) else {
            return;
        };
        self.pools[pool].exchanges_ended(upstream, 1, 1);
        if let Some(c) = self.clients.get_mut(s.client) {
            c.unlink(s.exchange);
        }
        self.mux_settle(conn);
    }

    /// Stream `i` on `conn` failed with `err`: its exchange hears it (and
    /// may be retried elsewhere).
    fn mux_fail_stream(&mut self, conn: ConnId, i: usize, err: ProxyError) {
        let reset = |s: &Stream| s.id != 0 && s.gone.is_none();
        let Some((pool, upstream, s)) = self.mux_take(conn, i, reset) else {
            return;
        };
        self.pools[pool].exchanges_ended(upstream, 1, 0);
        self.fail_exchange(s.client, s.exchange, err);
    }

    /// Stream `i` on `conn` is no one's any more: RST_STREAM CANCEL.
    fn mux_cancel_at(&mut self, conn: ConnId, i: usize) {
        let reset = |s: &Stream| s.id != 0 && !s.ended && s.gone.is_none();
        let Some((pool, upstream, s)) = self.mux_take(conn, i, reset) else {
            return;
        };
        self.pools[pool].exchanges_ended(upstream, 1, 0);
        if let Some(c) = self.clients.get_mut(s.client) {
            c.unlink(s.exchange);
        }
        self.mux_settle(conn);
    }

    /// `client` gave exchange `ex` up (or went away): its stream on `conn`
    /// is reset with CANCEL; the connection carries on for the others.
    pub(super) fn mux_cancel(&mut self, conn: ConnId, client: ClientId, ex: ExchangeId) {
        let i = self
            .upconns
            .get(conn)
            .and_then(|u| u.mux.as_ref())
            .and_then(|m| m.of(client, ex));
        if let Some(i) = i {
            self.mux_cancel_at(conn, i);
        }
    }

    /// Responses of `client`'s streams wait for its room: give them what it
    /// has now.
    pub(super) fn mux_resume(&mut self, client: ClientId) {
        let Some(c) = self.clients.get(client) else {
            return;
        };
        let mut due = Vec::new();
        for &(ex, conn) in &c.links {
            let Some(mux) = self.upconns.get(conn).and_then(|u| u.mux.as_ref()) else {
                continue;
            };
            if let Some(s) = mux.of(client, ex).map(|i| &mux.streams[i]) {
                if !s.inbox.is_empty() && s.id != 0 {
                    due.push((conn, s.id));
                }
            }
        }
        for (conn, id) in due {
            self.mux_deliver(conn, id);
        }
    }

    /// Multiplexed connection `conn` ended (`result` 0) or failed.
    fn mux_ended(&mut self, conn: ConnId, result: i32) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        u.recv.eof = true;
        let err = if result < 0 {
            ProxyError::UpstreamIo(std::io::Error::from_raw_os_error(-result))
        } else {
            ProxyError::ClosedBeforeResponse
        };
        self.abort_upstream(conn, err);
    }

    /// Multiplexed connection `conn` goes (it failed, or ended): exchanges
    /// whose answers are whole in their inboxes get all of it now (the
    /// stream's window bounded it); the others fail with `err` (or its
    /// like), each by its retry rules.
    pub(super) fn mux_abort(&mut self, conn: ConnId, err: ProxyError) {
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let (pool, upstream, proven, reused) = (u.pool, u.upstream, u.proven, u.reused);
        let Some(mux) = u.mux.as_mut() else {
            return;
        };
        let streams = std::mem::take(&mut mux.streams);
        let fresh_failure = !proven && !reused && err.is_origin_refusal();
        if fresh_failure && !streams.is_empty() {
            self.pools[pool].reset_before_answer(upstream, self.now);
        }
        self.close_upstream(conn);
        for s in streams {
            let whole = s.ended && s.gone.is_none();
            let delivered = whole
                && self.clients.get_mut(s.client).is_some_and(|c| {
                    let (fate, _) = c.session.on_response_data(s.exchange, &s.inbox);
                    fate != UpstreamFate::Busy
                });
            if delivered {
                self.pools[pool].exchanges_ended(upstream, 1, 1);
                if let Some(c) = self.clients.get_mut(s.client) {
                    c.unlink(s.exchange);
                }
                self.wake(s.client);
            } else {
                self.pools[pool].exchanges_ended(upstream, 1, 0);
                self.fail_exchange(s.client, s.exchange, again(&err));
            }
        }
    }

    /// Multiplexed connection `conn` is past a deadline: the streams whose
    /// first response byte is overdue fail (504); the others go on.
    pub(super) fn mux_overdue(&mut self, conn: ConnId) {
        let now = self.now;
        let dead = self
            .upconns
            .get(conn)
            .and_then(|u| u.mux.as_ref())
            .is_some_and(|m| m.probe.is_some_and(|d| now >= d));
        if dead {
            // Not a frame since the probe: an origin (or a path) that
            // stopped without a FIN. Every request joining it would wait as
            // long; it goes, with its streams. Those never handed (they
            // waited for the PING's answer) may go again anywhere.
            while let Some(i) = self
                .upconns
                .get(conn)
                .and_then(|u| u.mux.as_ref())
                .and_then(|m| m.streams.iter().position(|s| s.id == 0))
            {
                self.mux_fail_stream(conn, i, ProxyError::Refused);
            }
            self.abort_upstream(conn, ProxyError::ResponseTimeout);
            return;
        }
        let mut late = false;
        loop {
            let next = self
                .upconns
                .get(conn)
                .and_then(|u| u.mux.as_ref())
                .and_then(|m| {
                    m.streams
                        .iter()
                        .position(|s| s.due.is_some_and(|d| now >= d))
                });
            let Some(i) = next else {
                break;
            };
            self.mux_fail_stream(conn, i, ProxyError::ResponseTimeout);
            late = true;
        }
        let probe_for = self.cfg.connect_timeout;
        if let Some(u) = self.upconns.get_mut(conn) {
            if let Some(m) = u.mux.as_mut() {
                if late && m.probe.is_none() {
                    // Is the origin still there? A PING says, within the
                    // connect timeout; meanwhile nothing new joins.
                    m.h2.ping(*b"ringmux?");
                    m.probe = Some(now + probe_for);
                }
                let due = m.streams.iter().filter_map(|s| s.due).min();
                u.deadline = match (due, m.probe) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
            }
        }
        self.mux_settle(conn);
    }

    /// After a change on multiplexed connection `conn`: its deadline, its
    /// place among the joinable connections, and back to the idle pool
    /// once it carries nothing.
    pub(super) fn mux_settle(&mut self, conn: ConnId) {
        let draining = self.draining.is_some();
        let Some(u) = self.upconns.get_mut(conn) else {
            return;
        };
        let Some(mux) = u.mux.as_ref() else {
            return;
        };
        let pool = &mut self.pools[u.pool];
        let wanted = pool.upstream(u.upstream).is_some_and(|up| {
            up.spec.protocol == UpstreamProtocol::H2 && !up.removed && up.spec.tls == u.opened_with
        });
        let room = wanted
            && !draining
            && u.state != UpState::Idle
            && !u.recv.eof
            && !u.write_failed
            && mux.has_room();
        pool.joinable(u.upstream, conn, room);
        if u.state == UpState::Open {
            // The earliest first-byte deadline, kept as streams join: one
            // that passed for a stream answered since costs one look at the
            // streams then (mux_overdue), not one at every change.
            let due = mux.streams.last().and_then(|s| s.due);
            u.deadline = match (u.deadline, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
        let empty = mux.streams.is_empty();
        let done = mux.h2.is_done() || u.recv.eof;
        if u.state == UpState::Idle && (mux.h2.going_away() || u.recv.eof) {
            // An idle connection the origin said GOAWAY on takes nothing
            // more: it goes now, not when a request picks it.
            self.close_upstream(conn);
            return;
        }
        let output = mux.h2.has_output();
        let probing = mux.probe.is_some();
        let open = u.state == UpState::Open;
        if output {
            self.mark_upstream(conn);
        }
        if empty && open {
            if done {
                self.close_upstream(conn);
            } else if !probing {
                self.release_upstream(conn);
            }
            // (Probing: it waits for the origin's word, or its deadline.)
        } else if room {
            self.wake_waiters();
        }
    }

    /// Whether connection `conn` may go back to the idle pool: it speaks
    /// what its backend speaks now, and, if HTTP/2, the origin still
    /// takes streams on it.
    pub(super) fn mux_reusable(&self, conn: ConnId) -> bool {
        let Some(u) = self.upconns.get(conn) else {
            return false;
        };
        let h2 = self.pools[u.pool]
            .upstream(u.upstream)
            .is_some_and(|up| up.spec.protocol == UpstreamProtocol::H2);
        // (A connection made with TLS settings a reload changed since is
        // not reused either.)
        let same_tls = self.pools[u.pool]
            .upstream(u.upstream)
            .is_some_and(|up| up.spec.tls == u.opened_with);
        same_tls
            && match u.mux.as_ref() {
                None => !h2,
                Some(mux) => {
                    h2 && !u.recv.eof
                        && !u.write_failed
                        && !mux.refused
                        && mux.probe.is_none()
                        && mux.h2.may_open()
                }
            }
    }

    /// Move the frames due out of `conn`'s HTTP/2 side into its output.
    pub(super) fn mux_output(u: &mut super::upconn::UpstreamConn) {
        if let Some(mux) = u.mux.as_mut() {
            if mux.h2.has_output() {
                if u.out.is_empty() {
                    u.out = mux.h2.take_output();
                } else {
                    let more = mux.h2.take_output();
                    u.out.extend_from_slice(&more);
                }
            }
        }
    }

    /// Exchanges on multiplexed connections (tests: the pool's counts).
    #[cfg(test)]
    pub(super) fn mux_exchanges(u: &super::upconn::UpstreamConn) -> usize {
        u.mux.as_ref().map_or(0, |m| m.exchanges())
    }
}
