//! The HTTP/2 session: a [`ClientSession`] over one [`Connection`], each
//! stream an exchange of its own.
//!
//! Each stream's request, once its header list is checked and written as
//! an HTTP/1.1 head (`request.rs`), goes to an HTTP/1.1 [`ClientAgent`] of
//! its own, the same one an HTTP/1.1 connection has: routes, backends,
//! header rules, 421 for a host the certificate does not cover, retries,
//! local answers and the access log work for streams as they do for
//! HTTP/1.1 requests. What the agent writes for its client (an HTTP/1.1
//! response) is read back here into HEADERS and DATA for the stream.
//!
//! Streams are independent: each answers as soon as its upstream does, in
//! any order. A response waits here only for its stream's (or the
//! connection's) window; each stream holds at most [`STREAM_HOLD`] of it
//! (or `--buffer-size`, if smaller) before its upstream is no longer read,
//! so a client that leaves one stream's window shut stops that stream and
//! no other. Request bodies are credited back to the client's windows as
//! they leave for the upstream, so what is buffered of them is bounded by
//! the windows ringmux announced ([`Limits`]).
//!
//! Memory per connection: the connection's own state (a few hundred
//! octets, the HPACK table up to 4 KiB once used) and, per open stream, an
//! agent and up to [`STREAM_HOLD`] of response and a stream window of
//! request body; at most `max_streams` (100) streams are open.

use std::rc::Rc;
use std::time::Instant;

use crate::access_log::Finished;
use crate::agent::{AgentShared, ClientAgent};
use crate::codec::{BodyDecoder, ForwardCtx, Framing};
use crate::error::ProxyError;
use crate::session::{
    ClientSession, ExchangeId, FailOutcome, Placing, TlsInfo, TunnelEnds, UpstreamFate,
};

use super::conn::{Connection, Counts, Handler, Limits, Refusal};
use super::frame::ErrorCode;
use super::request::Head;

/// Response octets one stream may hold for its window before its upstream
/// is no longer read.
pub const STREAM_HOLD: usize = 64 * 1024;

/// Fields a response head the agent writes may have: what it read from
/// the origin (at most the codec's bound) and what it adds (header rules,
/// Via, HSTS, a cookie), with room to spare: the slots are not
/// initialised, so a large bound costs nothing.
const MAX_FIELDS: usize = 4 * crate::codec::MAX_HEADERS;

/// Streams by id: a vector kept in id order. Ids come in rising order, so
/// an insert is nearly always a push; a lookup is a binary search over a
/// few cache lines (at most `max_streams` entries), which a B-tree's
/// nodes and a hash's probes both cost more than.
#[derive(Debug)]
struct IdMap<T>(Vec<(u32, T)>);

impl<T> Default for IdMap<T> {
    fn default() -> Self {
        IdMap(Vec::new())
    }
}

impl<T> IdMap<T> {
    fn at(&self, id: u32) -> Result<usize, usize> {
        match self.0.last() {
            Some(&(last, _)) if last < id => Err(self.0.len()),
            _ => self.0.binary_search_by_key(&id, |e| e.0),
        }
    }

    fn get(&self, id: &u32) -> Option<&T> {
        self.at(*id).ok().map(|i| &self.0[i].1)
    }

    fn get_mut(&mut self, id: &u32) -> Option<&mut T> {
        self.at(*id).ok().map(|i| &mut self.0[i].1)
    }

    fn contains_key(&self, id: &u32) -> bool {
        self.at(*id).is_ok()
    }

    fn insert(&mut self, id: u32, value: T) {
        match self.at(id) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (id, value)),
        }
    }

    fn remove(&mut self, id: &u32) -> Option<T> {
        self.at(*id).ok().map(|i| self.0.remove(i).1)
    }

    fn keys(&self) -> impl Iterator<Item = &u32> {
        self.0.iter().map(|(k, _)| k)
    }

    fn values(&self) -> impl Iterator<Item = &T> {
        self.0.iter().map(|(_, v)| v)
    }

    fn iter(&self) -> impl Iterator<Item = (&u32, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    fn iter_mut(&mut self) -> impl Iterator<Item = (&u32, &mut T)> {
        self.0.iter_mut().map(|(k, v)| (&*k, v))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn len(&self) -> usize {
        self.0.len()
    }
}

/// What the worker's HTTP/2 connections did, summed (`/metrics`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct H2Totals {
    /// HTTP/2 connections begun (ALPN `h2`, or the preface on an `h2`
    /// plaintext listener).
    pub connections: u64,
    /// Streams that carried a request.
    pub streams: u64,
    /// Limits hit, by kind.
    pub limits: Counts,
}

impl H2Totals {
    /// Add `other`'s to these.
    pub fn add(&mut self, other: &H2Totals) {
        self.connections += other.connections;
        self.streams += other.streams;
        self.limits.add(&other.limits);
    }
}

/// How an HTTP/2 session's agents are made.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub ctx: ForwardCtx,
    pub max_body: u64,
    pub buffer: usize,
    pub limits: Limits,
    /// `--request-timeout`: a stream in progress for as long ends.
    pub request_timeout: Option<std::time::Duration>,
}

/// One client's HTTP/2 connection.
pub struct H2Session {
    conn: Connection,
    settings: Settings,
    shared: Rc<AgentShared>,
    /// (Boxed: a stream is a few hundred octets, and the map moves its
    /// entries as it changes.)
    streams: IdMap<Box<Stream>>,
    /// Frames for the client.
    out: Vec<u8>,
    /// Streams whose agents may have an exchange to place, in the order
    /// they became so (new requests, retries, detached followers).
    ready: std::collections::VecDeque<u32>,
    /// Streams that ended here, whose exchange may still be on an upstream
    /// connection (the client reset them, the connection failed, the agent
    /// answered before the request was all sent): the core lets that
    /// connection go.
    cancelled: Vec<ExchangeId>,
    finished: Vec<Finished>,
    /// The stream whose response was fed last (its agent has the idle
    /// hint of the connection it came on).
    last_fed: Option<u32>,
    requests: u64,
    tls: Option<TlsInfo>,
    /// GOAWAY is out (drain, a retiring worker, the client's end): the
    /// connection closes once its streams are done.
    closing: bool,
    /// A connection error: GOAWAY is out, nothing more is read.
    failed: bool,
    /// Scratch: the streams to pump after the client's bytes, and those
    /// the client's bytes opened.
    busy_ids: Vec<u32>,
    opened: Vec<u32>,
}

/// One stream: its agent, and its response on the way back.
struct Stream {
    agent: ClientAgent,
    /// The request is HEAD: its response has no body, whatever it says.
    head_request: bool,
    /// The request body goes to the agent chunked (it has no length).
    chunked: bool,
    /// Body octets given to the agent and not yet credited back to the
    /// client's windows.
    uncredited: u32,
    answer: Answer,
    /// Response body octets the windows have not let out yet.
    backlog: Vec<u8>,
    /// The response is whole: END_STREAM goes with the last of `backlog`
    /// (or with the trailers after it).
    ending: bool,
    /// The trailer lines of a chunked answer (`name: value` CRLF each).
    trailers: Vec<u8>,
    /// An answer of ours (a 431) waiting for a window: its agent never
    /// sees a byte, whatever body the client still sends (that is only
    /// credited back).
    stub: bool,
}

/// Where a stream's response is.
enum Answer {
    /// Waiting for its head (octets of it so far, rarely any: the agent
    /// writes a head whole).
    Head(Vec<u8>),
    /// HEADERS went; the body, delimited as the agent wrote it.
    Body(BodyDecoder),
    /// All of it was framed (or the stream was reset).
    Done,
}

impl H2Session {
    /// A session for a client that spoke the preface (or chose `h2` by
    /// ALPN); its first output is our SETTINGS.
    pub fn new(settings: Settings, shared: Rc<AgentShared>) -> H2Session {
        let mut totals = shared.h2.get();
        totals.connections += 1;
        shared.h2.set(totals);
        let mut s = H2Session {
            conn: Connection::new(settings.limits),
            settings,
            shared,
            streams: IdMap::default(),
            out: Vec::new(),
            ready: std::collections::VecDeque::new(),
            cancelled: Vec::new(),
            finished: Vec::new(),
            last_fed: None,
            requests: 0,
            tls: None,
            closing: false,
            failed: false,
            busy_ids: Vec::new(),
            opened: Vec::new(),
        };
        s.collect_output();
        s
    }

    fn now(&self) -> Instant {
        self.shared.now.get()
    }

    /// Move the connection's frames to the output.
    fn collect_output(&mut self) {
        if !self.conn.has_output() {
            return;
        }
        if self.out.is_empty() {
            self.out = self.conn.take_output();
        } else {
            self.out.extend_from_slice(&self.conn.take_output());
        }
    }

    /// Move what the connection's limits counted to the worker's totals.
    fn report(&mut self) {
        if self.conn.counts == Counts::default() {
            return;
        }
        let mut t = self.shared.h2.get();
        t.limits.add(&std::mem::take(&mut self.conn.counts));
        self.shared.h2.set(t);
    }

    /// The stream of exchange `id`.
    fn stream(&self, id: ExchangeId) -> Option<&Stream> {
        self.streams.get(&u32::try_from(id).ok()?).map(|s| &**s)
    }

    fn stream_mut(&mut self, id: ExchangeId) -> Option<&mut Stream> {
        self.streams
            .get_mut(&u32::try_from(id).ok()?)
            .map(|s| &mut **s)
    }

    /// Read what `id`'s agent wrote into frames, send what the windows
    /// allow, and end the stream once its agent is done.
    fn pump(&mut self, id: u32) {
        let now = self.now();
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.stub && s.uncredited > 0 {
            self.conn.consumed(id, std::mem::take(&mut s.uncredited));
        }
        let written = std::mem::take(s.agent.output());
        if !written.is_empty() {
            s.translate(id, &written, &mut self.conn);
        }
        self.shared.give_bytes(written);
        if matches!(s.answer, Answer::Body(BodyDecoder::Close)) && s.agent.pending() == 0 {
            // A body delimited by the origin's close: whole when the agent
            // says the exchange is (an EOF brings no bytes of its own).
            s.answer = Answer::Done;
            s.ending = true;
        }
        if !s.backlog.is_empty() || s.ending {
            // With trailers, they end the stream, after the body.
            let trailers = s.ending && !s.trailers.is_empty();
            let n = self
                .conn
                .send_data(id, &s.backlog, s.ending && !trailers, now);
            s.backlog.drain(..n);
            if s.ending && s.backlog.is_empty() {
                if trailers {
                    send_trailers(&mut self.conn, id, &std::mem::take(&mut s.trailers));
                }
                s.ending = false;
            }
        }
        if s.agent.pending() == 0 {
            // The agent is done with the exchange: whatever is not framed
            // by now never will be.
            if !matches!(s.answer, Answer::Done) {
                // Cut short after its head (the origin failed mid-body).
                self.conn.cancel_stream(id, ErrorCode::Internal);
                s.answer = Answer::Done;
                s.backlog.clear();
            }
            if s.backlog.is_empty() && !s.ending {
                self.end_stream(id, false);
            }
        }
        self.collect_output();
    }

    /// Forget stream `id`: its agent's record goes to the log; `cut`: its
    /// exchange ends here, wherever it is.
    fn end_stream(&mut self, id: u32, cut: bool) {
        let Some(mut s) = self.streams.remove(&id) else {
            return;
        };
        if cut {
            s.agent.cut_short();
        }
        // Its exchange may still hold an upstream connection (an answer
        // of the agent's own before the request was all sent, a cut): the
        // core lets it go (nothing happens where it holds none).
        self.cancelled.push(ExchangeId::from(id));
        let finished = &mut self.finished;
        s.agent.drain_finished(&mut |f| finished.push(f));
        s.agent.shrink_idle(0);
    }

    /// Credit the body octets `id`'s agent handed on back to the client's
    /// windows.
    fn credit(&mut self, id: u32) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.uncredited == 0 {
            return;
        }
        let held = if s.agent.pending() == 0 {
            0
        } else {
            s.agent.pending_request(0)
        };
        let n = s
            .uncredited
            .saturating_sub(held.min(u32::MAX as usize) as u32);
        if n > 0 {
            s.uncredited -= n;
            self.conn.consumed(id, n);
        }
    }

    /// A connection error: every stream ends here.
    fn fail_all(&mut self) {
        self.failed = true;
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.end_stream(id, true);
        }
    }

    /// Answer a request refused before it reached an agent.
    fn refuse(&mut self, id: u32, why: Refusal) {
        let (status, reason) = match why {
            Refusal::TooLarge => (431, "request header fields too large"),
            Refusal::Malformed(m) => (400, m.reason()),
        };
        let body = format!("{reason}\n");
        let len = body.len().to_string();
        self.conn.send_headers(
            id,
            status,
            &[
                (b"content-type", b"text/plain"),
                (b"content-length", len.as_bytes()),
            ],
            false,
        );
        let now = self.now();
        let sent = self.conn.send_data(id, body.as_bytes(), true, now);
        if let Refusal::Malformed(_) = why {
            // A malformed request is a stream error (RFC 9113 §8.1.1): the
            // answer says why (if the window lets it), the reset says it
            // was one.
            self.conn.cancel_stream(id, ErrorCode::Protocol);
        } else if sent < body.len() && self.conn.is_open(id) {
            // The rest waits for the window, like any answer's (unless the
            // client reset the stream meanwhile).
            let s = self.settings;
            self.streams.insert(
                id,
                Box::new(Stream {
                    agent: ClientAgent::new(s.ctx, 1).with_shared(Rc::clone(&self.shared)),
                    head_request: false,
                    chunked: false,
                    uncredited: 0,
                    answer: Answer::Done,
                    backlog: body.as_bytes()[sent..].to_vec(),
                    ending: true,
                    trailers: Vec::new(),
                    stub: true,
                }),
            );
        }
        let mut t = self.shared.h2.get();
        t.streams += 1;
        self.shared.h2.set(t);
        self.requests += 1;
    }
}

impl Stream {
    /// Whether [`H2Session::pump`] has anything to do for it: output of
    /// its agent's, octets waiting for a window, an end to send, or an
    /// agent done with it.
    fn has_work(&mut self) -> bool {
        (self.stub && self.uncredited > 0)
            || !self.backlog.is_empty()
            || self.ending
            || !self.agent.output().is_empty()
            || self.agent.pending() == 0
    }

    /// Frame `written` (the agent's HTTP/1.1 output for this stream): the
    /// head as HEADERS, the body (de-chunked) into the backlog.
    fn translate(&mut self, id: u32, written: &[u8], conn: &mut Connection) {
        let carried;
        let mut rest: &[u8] = written;
        if let Answer::Head(partial) = &mut self.answer {
            if !partial.is_empty() {
                partial.extend_from_slice(written);
                carried = std::mem::take(partial);
                rest = &carried;
            }
        }
        while !rest.is_empty() {
            match &mut self.answer {
                Answer::Head(_) => match read_head(rest, self.head_request) {
                    Ok(None) => {
                        self.answer = Answer::Head(rest.to_vec());
                        return;
                    }
                    Ok(Some(head)) => {
                        if head.status < 200 {
                            // An interim answer (100 Continue, 103 Early
                            // Hints): HEADERS that do not end the stream
                            // (RFC 9113 §8.1); a client waiting for 100
                            // before its body gets it.
                            // (Its length, if it says one, is of nothing.)
                            let fields: Vec<(&[u8], &[u8])> = head
                                .fields
                                .iter()
                                .filter(|(n, _)| !n.eq_ignore_ascii_case(b"content-length"))
                                .copied()
                                .collect();
                            conn.send_headers(id, head.status, &fields, false);
                            rest = &rest[head.len..];
                            continue;
                        }
                        let bodyless = matches!(head.framing, Framing::None | Framing::Length(0));
                        conn.send_headers(id, head.status, &head.fields, bodyless);
                        rest = &rest[head.len..];
                        self.answer = if bodyless {
                            Answer::Done
                        } else {
                            Answer::Body(BodyDecoder::new(head.framing))
                        };
                    }
                    Err(()) => {
                        conn.cancel_stream(id, ErrorCode::Internal);
                        self.answer = Answer::Done;
                        return;
                    }
                },
                Answer::Body(decoder) => {
                    let chunked = matches!(decoder, BodyDecoder::Chunked { .. });
                    let backlog = &mut self.backlog;
                    let step = decoder.feed_keeping_trailers(
                        rest,
                        &mut |d| backlog.extend_from_slice(d),
                        &mut self.trailers,
                    );
                    let Ok(p) = step else {
                        conn.cancel_stream(id, ErrorCode::Internal);
                        self.answer = Answer::Done;
                        self.backlog.clear();
                        return;
                    };
                    if !chunked {
                        self.backlog.extend_from_slice(&rest[..p.consumed]);
                    }
                    rest = &rest[p.consumed..];
                    if p.done {
                        self.answer = Answer::Done;
                        self.ending = true;
                    } else if p.consumed == 0 {
                        return;
                    }
                }
                // (Nothing follows a whole response on a stream.)
                Answer::Done => return,
            }
        }
    }
}

/// Send `lines` (trailer lines as HTTP/1.1 wrote them, each checked by
/// the chunked decoder) as `stream`'s trailers, which end it; framing
/// fields are left out here, connection-specific ones by the connection.
fn send_trailers(conn: &mut Connection, stream: u32, lines: &[u8]) {
    let fields: Vec<(&[u8], &[u8])> = lines
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let colon = line.iter().position(|&b| b == b':')?;
            let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
            let framing = [&b"content-length"[..], b"te", b"trailer"]
                .iter()
                .any(|n| name.eq_ignore_ascii_case(n));
            (!framing).then_some((name, value))
        })
        .collect();
    conn.send_trailers(stream, &fields);
}

/// A response head the agent wrote: its status, its fields and how its
/// body is delimited.
struct ReadHead<'b> {
    len: usize,
    status: u16,
    fields: Vec<(&'b [u8], &'b [u8])>,
    framing: Framing,
}

/// Read the response head at the start of `bytes` (None: not whole yet).
fn read_head(bytes: &[u8], head_request: bool) -> Result<Option<ReadHead<'_>>, ()> {
    let mut slots = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut r = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default()
        .parse_response_with_uninit_headers(&mut r, bytes, &mut slots);
    let len = match parsed {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(()),
    };
    let status = r.code.ok_or(())?;
    let mut framing = Framing::CloseDelimited;
    let mut fields = Vec::with_capacity(r.headers.len());
    for h in r.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(())?;
            framing = Framing::Length(n);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            framing = Framing::Chunked;
        }
        fields.push((h.name.as_bytes(), h.value));
    }
    if head_request || status < 200 || status == 204 || status == 304 {
        framing = Framing::None;
    }
    Ok(Some(ReadHead {
        len,
        status,
        fields,
        framing,
    }))
}

/// The connection's requests and bodies, as they are read, to the
/// streams' agents.
struct Intake<'a> {
    streams: &'a mut IdMap<Box<Stream>>,
    settings: &'a Settings,
    shared: &'a Rc<AgentShared>,
    tls: &'a Option<TlsInfo>,
    refused: &'a mut Vec<(u32, Refusal)>,
    reset: &'a mut Vec<u32>,
    opened: Vec<u32>,
    scratch: Vec<u8>,
}

impl Handler for Intake<'_> {
    fn request(&mut self, stream: u32, head: Head, end_stream: bool) {
        let s = self.settings;
        let mut agent = ClientAgent::new(s.ctx, 1)
            .with_max_body(s.max_body)
            .with_buffer(s.buffer)
            .with_shared(Rc::clone(self.shared));
        if let Some(tls) = self.tls {
            agent.set_tls(tls.clone());
        }
        let head_request = head.bytes.starts_with(b"HEAD ");
        agent.on_client_data(&head.bytes);
        self.opened.push(stream);
        self.streams.insert(
            stream,
            Box::new(Stream {
                agent,
                head_request,
                chunked: head.chunked && !end_stream,
                uncredited: 0,
                answer: Answer::Head(Vec::new()),
                backlog: Vec::new(),
                ending: false,
                trailers: Vec::new(),
                stub: false,
            }),
        );
    }

    fn refused(&mut self, stream: u32, why: Refusal) {
        self.refused.push((stream, why));
    }

    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        s.uncredited += data.len() as u32;
        if s.stub {
            return; // credited back in `pump`, never read
        }
        if !s.chunked {
            if !data.is_empty() {
                s.agent.on_client_data(data);
            }
            return;
        }
        let b = &mut self.scratch;
        b.clear();
        crate::codec::write_chunk(b, data);
        if end {
            b.extend_from_slice(b"0\r\n\r\n");
        }
        if !b.is_empty() {
            s.agent.on_client_data(b);
        }
    }

    fn reset(&mut self, stream: u32) {
        self.reset.push(stream);
    }
}

impl ClientSession for H2Session {
    fn on_client_data(&mut self, data: &[u8]) {
        if self.failed {
            return;
        }
        let now = self.now();
        let mut refused = Vec::new();
        let mut reset = Vec::new();
        let mut intake = Intake {
            streams: &mut self.streams,
            settings: &self.settings,
            shared: &self.shared,
            tls: &self.tls,
            refused: &mut refused,
            reset: &mut reset,
            opened: std::mem::take(&mut self.opened),
            scratch: Vec::new(),
        };
        let result = self.conn.receive(data, now, &mut intake);
        let mut opened_ids = intake.opened;
        let opened = opened_ids.len() as u64;
        self.ready.extend(opened_ids.drain(..));
        self.opened = opened_ids;
        if opened > 0 {
            self.requests += opened;
            let mut t = self.shared.h2.get();
            t.streams += opened;
            self.shared.h2.set(t);
        }
        for id in reset {
            self.end_stream(id, true);
        }
        for (id, why) in refused {
            self.refuse(id, why);
        }
        if result.is_err() {
            self.fail_all();
        } else {
            // Requests answered here already (a route's redirect, a 404)
            // and window updates that let backlogs go.
            let mut ids = std::mem::take(&mut self.busy_ids);
            ids.clear();
            ids.extend(
                self.streams
                    .iter_mut()
                    .filter_map(|(&id, s)| s.has_work().then_some(id)),
            );
            for &id in &ids {
                self.pump(id);
            }
            self.busy_ids = ids;
        }
        self.report();
        self.collect_output();
    }

    fn on_client_eof(&mut self) {
        // The client sends nothing more (no window update either): what is
        // in flight may still finish.
        self.conn.go_away();
        self.closing = true;
        self.collect_output();
    }

    fn may_read_client(&self) -> bool {
        !self.failed && self.out.len() + self.conn.output_len() < self.settings.buffer
    }

    fn next_ready(&mut self) -> Option<ExchangeId> {
        while let Some(id) = self.ready.pop_front() {
            let Some(s) = self.streams.get_mut(&id) else {
                continue; // gone meanwhile
            };
            if !s.stub && s.agent.next_ready().is_some() {
                return Some(ExchangeId::from(id));
            }
        }
        None
    }

    fn placing(&self, id: ExchangeId) -> Option<Placing> {
        self.stream(id)?.agent.placing(0)
    }

    fn affinity(&self, id: ExchangeId) -> Option<&[u8]> {
        self.stream(id)?.agent.affinity(0)
    }

    fn set_extra_head(&mut self, id: ExchangeId, fields: Option<Vec<u8>>) {
        if let Some(s) = self.stream_mut(id) {
            s.agent.set_extra_head(0, fields);
        }
    }

    fn set_cookie(&mut self, id: ExchangeId, field: Option<Vec<u8>>) {
        if let Some(s) = self.stream_mut(id) {
            s.agent.set_cookie(0, field);
        }
    }

    fn placed_on(&mut self, id: ExchangeId, upstream: u32, addr: std::net::SocketAddr) {
        if let Some(s) = self.stream_mut(id) {
            s.agent.placed_on(0, upstream, addr);
        }
    }

    fn pending_request(&self, id: ExchangeId) -> usize {
        self.stream(id).map_or(0, |s| s.agent.pending_request(0))
    }

    fn hand_request(&mut self, id: ExchangeId, out: &mut Vec<u8>, host: &[u8]) -> usize {
        let Some(s) = self.stream_mut(id) else {
            return 0;
        };
        let n = s.agent.hand_request(0, out, host);
        self.credit(id as u32);
        self.collect_output();
        n
    }

    fn detach(&mut self, id: ExchangeId) -> bool {
        let detached = self.stream_mut(id).is_some_and(|s| s.agent.detach(0));
        // (It is placed again, on a connection of its own.)
        if detached {
            self.ready.push_back(id as u32);
        }
        detached
    }

    fn note_upstream(&mut self, id: ExchangeId, ttfb: std::time::Duration) {
        if let Some(s) = self.stream_mut(id) {
            s.agent.note_upstream(0, ttfb);
        }
    }

    fn on_response_data(&mut self, id: ExchangeId, data: &[u8]) -> (UpstreamFate, usize) {
        let Some(s) = self.stream_mut(id) else {
            return (UpstreamFate::Close, data.len());
        };
        let step = s.agent.on_response_data(0, data);
        self.last_fed = Some(id as u32);
        self.pump(id as u32);
        self.credit(id as u32);
        step
    }

    fn verbatim_body(&self, _id: ExchangeId) -> u64 {
        0 // every byte is framed
    }

    fn take_verbatim(&mut self, _id: ExchangeId, _n: usize) -> UpstreamFate {
        UpstreamFate::Close // never offered (see verbatim_body)
    }

    fn upstream_room(&self, id: ExchangeId, client_unsent: usize) -> usize {
        if self.out.len() + client_unsent >= self.settings.buffer {
            return 0; // the client is not reading the connection at all
        }
        let hold = STREAM_HOLD.min(self.settings.buffer);
        self.stream(id)
            .map_or(hold, |s| hold.saturating_sub(s.backlog.len()))
    }

    fn take_upstream_idle_hint(&mut self) -> Option<u32> {
        let id = self.last_fed.take()?;
        self.streams.get_mut(&id)?.agent.take_upstream_idle_hint()
    }

    fn on_upstream_eof(&mut self, id: ExchangeId) -> FailOutcome {
        let Some(s) = self.stream_mut(id) else {
            return FailOutcome::Answered;
        };
        let outcome = s.agent.on_upstream_eof(0);
        self.after_failure(id, outcome)
    }

    fn on_upstream_error(&mut self, id: ExchangeId, err: ProxyError) -> FailOutcome {
        let Some(s) = self.stream_mut(id) else {
            return FailOutcome::Answered;
        };
        let outcome = s.agent.on_upstream_error(0, err);
        self.after_failure(id, outcome)
    }

    fn output(&mut self) -> &mut Vec<u8> {
        self.collect_output();
        &mut self.out
    }

    fn wants_close(&self) -> bool {
        (self.failed || self.closing) && self.streams.is_empty()
    }

    fn lingers(&self) -> bool {
        // After GOAWAY the client may still be sending (window updates,
        // pings, a request that crossed the GOAWAY): a close now could
        // reset the connection before it reads the last answers or why.
        self.failed || self.closing
    }

    fn is_tunnel(&self) -> bool {
        false
    }

    fn tunnel(&self) -> Option<TunnelEnds> {
        None
    }

    fn drain(&mut self) {
        self.conn.go_away();
        self.closing = true;
        self.collect_output();
    }

    fn close_soon(&mut self) {
        self.drain();
    }

    fn on_header_timeout(&mut self) {
        self.drain();
    }

    fn abandon(&mut self, err: ProxyError) {
        // The late streams end (504, or cut if their answer began); the
        // others go on. Late: in progress for the request timeout (the
        // oldest, whatever the timeout, since the core says it is late).
        let now = self.now();
        let limit = self.settings.request_timeout;
        let oldest = self.busy_since();
        let late: Vec<u32> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                s.agent
                    .busy_since()
                    .is_some_and(|t| Some(t) == oldest || limit.is_some_and(|l| now >= t + l))
            })
            .map(|(&id, _)| id)
            .collect();
        let mut err = Some(err);
        for id in late {
            if let Some(s) = self.streams.get_mut(&id) {
                s.agent
                    .abandon(err.take().unwrap_or(ProxyError::RequestDeadline));
            }
            self.pump(id);
            if self.streams.contains_key(&id) {
                // Its answer waits for a window it will not get in time.
                self.conn.cancel_stream(id, ErrorCode::Cancel);
                self.end_stream(id, true);
            }
        }
        self.collect_output();
    }

    fn cut_short(&mut self) {
        let ids: Vec<u32> = self.streams.keys().copied().collect();
        for id in ids {
            self.end_stream(id, true);
        }
        // (The core ends every upstream connection with the client.)
        self.cancelled.clear();
    }

    fn is_idle(&self) -> bool {
        self.streams.is_empty() && self.out.is_empty() && !self.conn.has_output()
    }

    fn pending(&self) -> usize {
        self.streams.len()
    }

    fn has_partial_head(&self) -> bool {
        false
    }

    fn is_discarding(&self) -> bool {
        false
    }

    fn any_request(&self) -> bool {
        self.requests > 0
    }

    fn busy_since(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|s| s.agent.busy_since())
            .min()
    }

    fn requests(&self) -> u64 {
        self.requests
    }

    fn set_requests(&mut self, n: u64) {
        self.requests = n;
    }

    fn set_client_addr(&mut self, addr: std::net::IpAddr) {
        self.settings.ctx.client = addr;
    }

    fn set_tls(&mut self, tls: TlsInfo) {
        self.tls = Some(tls);
    }

    fn shrink_idle(&mut self, keep: usize) {
        if self.out.is_empty() && self.out.capacity() > keep {
            self.shared.give_bytes(std::mem::take(&mut self.out));
        }
        if self.streams.is_empty() {
            self.finished = Vec::new();
            self.cancelled = Vec::new();
            self.ready = std::collections::VecDeque::new();
            self.busy_ids = Vec::new();
            self.opened = Vec::new();
            self.conn.shrink_idle();
        }
    }

    fn drain_finished(&mut self, f: &mut dyn FnMut(Finished)) {
        for done in self.finished.drain(..) {
            f(done);
        }
    }

    fn movable(&self) -> bool {
        false // its HPACK tables and streams live here
    }

    fn protocol(&self) -> &'static str {
        "h2"
    }

    fn independent_exchanges(&self) -> bool {
        true
    }

    fn says_goodbye(&mut self) -> bool {
        if self.closing || self.failed {
            return false;
        }
        self.drain();
        true
    }

    fn stalled_since(&self) -> Option<Instant> {
        self.conn.blocked_since()
    }

    fn take_cancelled(&mut self, f: &mut dyn FnMut(ExchangeId)) {
        for id in self.cancelled.drain(..) {
            f(id);
        }
    }
}

impl H2Session {
    /// After an upstream failure of `id`: a retry makes it ready again, an
    /// answer goes out.
    fn after_failure(&mut self, id: ExchangeId, outcome: FailOutcome) -> FailOutcome {
        match outcome {
            FailOutcome::Retry => self.ready.push_back(id as u32),
            FailOutcome::Answered => self.pump(id as u32),
        }
        outcome
    }
}
