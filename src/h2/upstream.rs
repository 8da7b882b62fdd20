//! The client side of an HTTP/2 connection to an origin, sans-I/O:
//! requests in as the HTTP/1.1 heads and bodies the agents already write
//! for upstreams, frames out; the origin's frames in, each stream's
//! response out as HTTP/1.1 bytes for the agent that owns the stream
//! ([`Http1Response`]), so the agents need not know which protocol an
//! upstream speaks.
//!
//! What it owns: our preface and SETTINGS (push off, windows raised), the
//! origin's SETTINGS (concurrent streams, initial window, frame size, HPACK
//! table size) acknowledged and obeyed, PING answered, GOAWAY (streams
//! above its last id were not processed: [`Events::refused`], for the
//! caller to send them again elsewhere), RST_STREAM, flow control both
//! ways, and the bounds on what an origin may make it hold (a header block
//! at most `max_header_block`, a header list at most `max_header_list`).
//!
//! The worker's side of it (which exchange owns which stream, delivery
//! to clients, failures) is `worker::mux`.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::time::Instant;

use super::frame::{self, flag, kind, setting, ErrorCode, Frame, FrameError};
use super::hpack::{Decoder, Encoder, Fields};
use super::request;

/// The default initial window (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window (2^31 - 1).
const MAX_WINDOW: i64 = 0x7fff_ffff;
/// Streams an origin that announces no limit is given at once.
const UNANNOUNCED_STREAMS: u32 = 100;
/// CONTINUATION frames one header block may take.
const MAX_CONTINUATIONS: u32 = 32;

/// Hashes stream ids (odd numbers counting up, chosen by us): a multiply
/// spreads them well enough, where SipHash cost a measurable share of a
/// request.
#[derive(Debug, Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8 | u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// What we announce and hold to.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// The connection's receive window.
    pub conn_window: u32,
    pub max_header_list: u32,
    pub max_header_block: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            stream_window: 1 << 20,
            conn_window: 8 << 20,
            max_header_list: 64 * 1024,
            max_header_block: 64 * 1024,
        }
    }
}

/// What the origin's frames mean for the streams.
pub trait Events {
    /// `stream`'s response head (`:status` and its fields); `end_stream`:
    /// no body follows. Interim (1xx) heads are not reported.
    fn response(&mut self, stream: u32, status: u16, fields: &Fields, end_stream: bool);
    /// Body octets of `stream`; `end`: its last.
    fn data(&mut self, stream: u32, data: &[u8], end: bool);
    /// `stream`'s trailers (they end it).
    fn trailers(&mut self, stream: u32, fields: &Fields);
    /// The origin reset `stream` (or it broke a rule of its own): what it
    /// was doing stops. `code` is the RST_STREAM's.
    fn reset(&mut self, stream: u32, code: u32);
    /// The origin said (GOAWAY, or REFUSED_STREAM) that it did not
    /// process `stream`: it may be sent again, on another connection.
    fn refused(&mut self, stream: u32);
    /// An interim (1xx) head on `stream`, before its final one (`100
    /// Continue`, `103 Early Hints`).
    fn interim(&mut self, _stream: u32, _status: u16, _fields: &Fields) {}
}

/// Where a stream of ours is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Its request is still being sent; no response head yet.
    Sending,
    /// Its request is whole; waiting for or reading the response.
    Sent,
}

#[derive(Debug)]
struct Stream {
    phase: Phase,
    /// The request is HEAD: its response has no body, whatever its
    /// `content-length` says.
    head_request: bool,
    /// The response head came (what follows is body, then trailers).
    answered: bool,
    /// A head came, interim or final: the origin processed the request,
    /// whatever it says later.
    heard: bool,
    /// What the response's `content-length` said, and the body octets
    /// that came: they must agree when the stream ends.
    length: Option<u64>,
    received: u64,
    send_window: i64,
    recv_window: i64,
    /// Octets the caller consumed and not yet credited back.
    consumed: u32,
}

/// A header block being read (HEADERS, then CONTINUATION frames).
#[derive(Debug)]
struct Pending {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
    frames: u32,
}

/// One HTTP/2 connection to an origin.
#[derive(Debug)]
pub struct Upstream {
    limits: Limits,
    input: Vec<u8>,
    out: Vec<u8>,
    decoder: Decoder,
    encoder: Encoder,
    fields: Fields,
    streams: HashMap<u32, Stream, BuildHasherDefault<IdHasher>>,
    next_stream: u32,
    pending: Option<Pending>,
    /// The origin's first frame (its SETTINGS) came.
    settings_seen: bool,
    peer_max_streams: u32,
    peer_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    conn_consumed: u32,
    /// GOAWAY came: the last stream it will process.
    goaway: Option<u32>,
    /// A connection error: GOAWAY written, nothing more is read or sent.
    failed: bool,
}

impl Upstream {
    /// A connection with `limits`: our preface, SETTINGS and window raise
    /// are its first output.
    pub fn new(mut limits: Limits) -> Upstream {
        limits.stream_window = limits.stream_window.max(DEFAULT_WINDOW as u32);
        limits.conn_window = limits.conn_window.max(DEFAULT_WINDOW as u32);
        let mut out = frame::PREFACE.to_vec();
        frame::write_settings(
            &mut out,
            &[
                (setting::ENABLE_PUSH, 0),
                (setting::INITIAL_WINDOW_SIZE, limits.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, limits.max_header_list),
            ],
        );
        let raise = i64::from(limits.conn_window) - DEFAULT_WINDOW;
        if raise > 0 {
            frame::write_window_update(&mut out, 0, raise as u32);
        }
        Upstream {
            limits,
            input: Vec::new(),
            out,
            decoder: Decoder::new(4096),
            encoder: Encoder::indexing(4096),
            fields: Fields::default(),
            streams: HashMap::default(),
            next_stream: 1,
            pending: None,
            settings_seen: false,
            peer_max_streams: UNANNOUNCED_STREAMS,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(limits.conn_window),
            conn_consumed: 0,
            goaway: None,
            failed: false,
        }
    }

    /// The frames due out, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Octets of output not taken yet. The caller stops reading the origin
    /// while this is large: each PING or SETTINGS it sends queues an
    /// acknowledgement, and an origin that floods them without reading
    /// would otherwise make us hold any amount.
    pub fn output_len(&self) -> usize {
        self.out.len()
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// How many streams the origin lets us have open at once.
    pub fn stream_limit(&self) -> usize {
        self.peer_max_streams as usize
    }

    /// Whether the origin said GOAWAY (it takes no new stream).
    pub fn going_away(&self) -> bool {
        self.goaway.is_some() || self.failed
    }

    /// Whether another stream may be opened now (the origin's limit, no
    /// GOAWAY, ids left, the connection whole).
    pub fn may_open(&self) -> bool {
        !self.failed
            && self.goaway.is_none()
            && self.next_stream < 0x7fff_ffff
            && self.streams.len() < self.peer_max_streams as usize
    }

    /// The connection can carry nothing more once its streams end.
    pub fn is_done(&self) -> bool {
        self.failed || (self.goaway.is_some() && self.streams.is_empty())
    }

    /// Open a stream for `head` (an HTTP/1.1 request head, as an agent
    /// writes it for an upstream) over `scheme`; `end_stream`: no body
    /// follows. Returns the stream and how its body is framed in HTTP/1.1
    /// (for [`Upstream::send_body`]), or why it cannot be sent.
    pub fn open(
        &mut self,
        head: &[u8],
        scheme: &str,
        end_stream: bool,
    ) -> Result<(u32, RequestBody), OpenError> {
        if !self.may_open() {
            return Err(OpenError::NoRoom);
        }
        let mut block = Vec::with_capacity(128);
        self.encoder.begin(&mut block);
        // (It refuses a head before it encodes a field: the table is as it
        // was, but the size update `begin` wrote is owed again.)
        let body = encode_request(head, scheme, &mut self.encoder, &mut block)
            .inspect_err(|_| self.encoder.owe_update())?;
        let end_stream = end_stream || body == RequestBody::None;
        let stream = self.next_stream;
        self.next_stream += 2;
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        self.streams.insert(
            stream,
            Stream {
                phase: if end_stream {
                    Phase::Sent
                } else {
                    Phase::Sending
                },
                head_request: head.starts_with(b"HEAD "),
                answered: false,
                heard: false,
                length: None,
                received: 0,
                send_window: self.peer_window,
                recv_window: i64::from(self.limits.stream_window),
                consumed: 0,
            },
        );
        Ok((stream, body))
    }

    /// Send what the windows allow of `data` (request body octets, already
    /// de-chunked) on `stream`; returns how much went. `end` ends the
    /// request once all of `data` went.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end: bool) -> usize {
        if self.failed {
            return 0;
        }
        let Some(s) = self
            .streams
            .get_mut(&stream)
            .filter(|s| s.phase == Phase::Sending)
        else {
            return 0;
        };
        let room = self.send_window.min(s.send_window).max(0) as usize;
        let sent = frame::write_data(&mut self.out, stream, data, room, end, self.peer_max_frame);
        self.send_window -= sent as i64;
        s.send_window -= sent as i64;
        if end && sent == data.len() {
            s.phase = Phase::Sent;
        }
        sent
    }

    /// The caller gave up on `stream` (its client went away): RST_STREAM
    /// CANCEL; whatever comes for it later is dropped.
    pub fn cancel(&mut self, stream: u32) {
        if self.streams.remove(&stream).is_some() && !self.failed {
            frame::write_rst(&mut self.out, stream, ErrorCode::Cancel);
        }
    }

    /// The caller took `n` octets of `stream`'s response body: the windows
    /// reopen (in steps of half a window).
    pub fn consumed(&mut self, stream: u32, n: u32) {
        self.credit_connection(n);
        self.credit_stream(stream, n);
    }

    /// `n` octets of response body are off the connection's hands: its
    /// window reopens (in steps of half a window). A caller that holds
    /// each stream's octets until its client takes them credits the
    /// connection as they come, so that streams whose clients read
    /// slowly (each bounded by its own window) cannot shut the others'.
    pub fn credit_connection(&mut self, n: u32) {
        self.conn_consumed += n;
        if self.conn_consumed >= self.limits.conn_window / 2 {
            frame::write_window_update(&mut self.out, 0, self.conn_consumed);
            self.recv_window += i64::from(self.conn_consumed);
            self.conn_consumed = 0;
        }
    }

    /// The caller took `n` octets of `stream`'s response body: its window
    /// reopens (in steps of half a window).
    pub fn credit_stream(&mut self, stream: u32, n: u32) {
        let half = self.limits.stream_window / 2;
        if let Some(s) = self.streams.get_mut(&stream) {
            s.consumed += n;
            if s.consumed >= half {
                frame::write_window_update(&mut self.out, stream, s.consumed);
                s.recv_window += i64::from(s.consumed);
                s.consumed = 0;
            }
        }
    }

    /// A PING to see the connection is still there (an idle one, now and
    /// then).
    pub fn ping(&mut self, data: [u8; 8]) {
        frame::write_simple(&mut self.out, kind::PING, 0, 0, &data);
    }

    /// The origin's bytes; what they mean goes to `ev`. An error is the
    /// connection's: GOAWAY is in the output, every stream is over (each
    /// told to `ev` as reset).
    pub fn receive(
        &mut self,
        data: &[u8],
        _now: Instant,
        ev: &mut impl Events,
    ) -> Result<(), ErrorCode> {
        if self.failed {
            return Err(ErrorCode::Protocol);
        }
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            match frame::read(&input[at..], frame::DEFAULT_MAX_FRAME) {
                Ok(None) => break Ok(()),
                Ok(Some((f, n))) => {
                    let step = self.on_frame(f, ev);
                    at += n;
                    if let Err(e) = step {
                        break Err(e);
                    }
                }
                Err(FrameError::Connection(code)) => break Err(code),
                Err(FrameError::Stream(..)) if self.pending.is_some() => {
                    break Err(ErrorCode::Protocol)
                }
                Err(FrameError::Stream(id, code)) => {
                    let len = u32::from_be_bytes([0, input[at], input[at + 1], input[at + 2]]);
                    at += frame::HEADER_LEN + len as usize;
                    self.stream_error(id, code, ev);
                }
            }
        };
        input.drain(..at);
        self.input = input;
        if let Err(code) = result {
            self.fail(code, ev);
        }
        result
    }

    /// `stream`'s response is whole: it is over. If its request was still
    /// being sent (an origin that answers early), RST_STREAM NO_ERROR
    /// closes our half (RFC 9113 §8.1).
    fn answered_whole(&mut self, stream: u32) {
        if let Some(s) = self.streams.remove(&stream) {
            if s.phase == Phase::Sending {
                frame::write_rst(&mut self.out, stream, ErrorCode::NoError);
            }
        }
    }

    /// A connection error: GOAWAY with `code`; every stream is reset.
    fn fail(&mut self, code: ErrorCode, ev: &mut impl Events) {
        frame::write_goaway(&mut self.out, 0, code);
        self.failed = true;
        self.input = Vec::new();
        let mut ids: Vec<u32> = self.streams.keys().copied().collect();
        ids.sort_unstable();
        self.streams.clear();
        for id in ids {
            ev.reset(id, code as u32);
        }
    }

    /// `stream` broke a rule: RST_STREAM with `code`, and it is over.
    fn stream_error(&mut self, stream: u32, code: ErrorCode, ev: &mut impl Events) {
        frame::write_rst(&mut self.out, stream, code);
        if self.streams.remove(&stream).is_some() {
            ev.reset(stream, code as u32);
        }
    }

    fn on_frame(&mut self, f: Frame<'_>, ev: &mut impl Events) -> Result<(), ErrorCode> {
        // The server's preface is a SETTINGS frame (§3.4).
        if !self.settings_seen {
            match f {
                Frame::Settings { ack: false, .. } => self.settings_seen = true,
                _ => return Err(ErrorCode::Protocol),
            }
        }
        if let Some(p) = &self.pending {
            match f {
                Frame::Continuation { stream, .. } if stream == p.stream => {}
                _ => return Err(ErrorCode::Protocol),
            }
        }
        match f {
            Frame::Settings { ack: true, .. } => {}
            Frame::Settings {
                ack: false,
                payload,
            } => {
                self.apply_settings(payload)?;
                frame::write_simple(&mut self.out, kind::SETTINGS, flag::ACK, 0, &[]);
            }
            Frame::Ping { ack: false, data } => {
                frame::write_simple(&mut self.out, kind::PING, flag::ACK, 0, &data);
            }
            Frame::Ping { ack: true, .. } => {}
            Frame::WindowUpdate {
                stream: 0,
                increment,
            } => {
                self.send_window += i64::from(increment);
                if self.send_window > MAX_WINDOW {
                    return Err(ErrorCode::FlowControl);
                }
            }
            Frame::WindowUpdate { stream, increment } => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.send_window += i64::from(increment);
                    if s.send_window > MAX_WINDOW {
                        self.stream_error(stream, ErrorCode::FlowControl, ev);
                    }
                }
            }
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
            } => {
                if stream % 2 == 0 || stream >= self.next_stream {
                    // The origin opens no stream of its own (push is off).
                    return Err(ErrorCode::Protocol);
                }
                let p = Pending {
                    stream,
                    block: block.to_vec(),
                    end_stream,
                    frames: 0,
                };
                self.add_to_block(p, end_headers, ev)?;
            }
            Frame::Continuation {
                block, end_headers, ..
            } => {
                let Some(mut p) = self.pending.take() else {
                    return Err(ErrorCode::Protocol);
                };
                p.frames += 1;
                p.block.extend_from_slice(block);
                if p.frames > MAX_CONTINUATIONS {
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                self.add_to_block(p, end_headers, ev)?;
            }
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len, ev)?,
            Frame::RstStream { stream, code } => {
                if let Some(s) = self.streams.remove(&stream) {
                    // (A stream it answered was processed: not sent again.)
                    if code == ErrorCode::RefusedStream as u32 && !s.heard {
                        ev.refused(stream);
                    } else {
                        ev.reset(stream, code);
                    }
                }
            }
            Frame::GoAway { last_stream, .. } => {
                // Streams above `last_stream` were not processed: they may
                // go again elsewhere; those below finish here.
                let last = self.goaway.map_or(last_stream, |l| l.min(last_stream));
                self.goaway = Some(last);
                let mut above: Vec<u32> =
                    self.streams.keys().copied().filter(|&s| s > last).collect();
                above.sort_unstable();
                for id in above {
                    if self.streams.remove(&id).is_some_and(|s| s.heard) {
                        // (It answered that one: processed after all.)
                        ev.reset(id, ErrorCode::RefusedStream as u32);
                    } else {
                        ev.refused(id);
                    }
                }
            }
            Frame::Priority { .. } | Frame::Unknown => {}
        }
        Ok(())
    }

    fn apply_settings(&mut self, payload: &[u8]) -> Result<(), ErrorCode> {
        for pair in frame::settings(payload) {
            let (id, value) = pair?;
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.peer_table_size(value),
                setting::MAX_CONCURRENT_STREAMS => self.peer_max_streams = value,
                setting::INITIAL_WINDOW_SIZE => {
                    let delta = i64::from(value) - self.peer_window;
                    self.peer_window = i64::from(value);
                    for s in self.streams.values_mut() {
                        s.send_window += delta;
                        if s.send_window > MAX_WINDOW {
                            return Err(ErrorCode::FlowControl);
                        }
                    }
                }
                setting::MAX_FRAME_SIZE => self.peer_max_frame = value,
                _ => {}
            }
        }
        Ok(())
    }

    fn add_to_block(
        &mut self,
        p: Pending,
        end_headers: bool,
        ev: &mut impl Events,
    ) -> Result<(), ErrorCode> {
        if p.block.len() > self.limits.max_header_block {
            return Err(ErrorCode::EnhanceYourCalm);
        }
        if !end_headers {
            self.pending = Some(p);
            return Ok(());
        }
        let mut fields = std::mem::take(&mut self.fields);
        let decoded =
            self.decoder
                .decode(&p.block, self.limits.max_header_list as usize, &mut fields);
        let result = match decoded {
            Err(_) => Err(ErrorCode::Compression),
            Ok(()) => {
                self.on_head(p.stream, &fields, p.end_stream, ev);
                Ok(())
            }
        };
        self.fields = fields;
        result
    }

    /// A whole header block on `stream`: its response head, an interim
    /// one, or its trailers.
    fn on_head(&mut self, stream: u32, fields: &Fields, end_stream: bool, ev: &mut impl Events) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return; // one we cancelled: its answer is no one's
        };
        if fields.oversize {
            self.stream_error(stream, ErrorCode::Protocol, ev);
            return;
        }
        // Every field as RFC 9113 §8.2 says (no CR, LF or NUL to be
        // written into the HTTP/1.1 form, no connection-specific field).
        let mut length: Option<u64> = None;
        for (name, value) in fields.iter().filter(|(n, _)| !n.starts_with(b":")) {
            let bad_length = name == b"content-length"
                && match (request::decimal(value), length) {
                    (None, _) => true,
                    (Some(n), Some(was)) => n != was,
                    (Some(n), None) => {
                        length = Some(n);
                        false
                    }
                };
            if request::check_name(name).is_err()
                || request::check_value(value).is_err()
                || connection_specific(name)
                || bad_length
            {
                self.stream_error(stream, ErrorCode::Protocol, ev);
                return;
            }
        }
        if s.answered {
            // Trailers: they end the stream, have no pseudo-header, and
            // come after the whole body.
            let short = s.length.is_some_and(|n| n != s.received) && !s.head_request;
            if !end_stream || short || fields.iter().any(|(n, _)| n.starts_with(b":")) {
                self.stream_error(stream, ErrorCode::Protocol, ev);
                return;
            }
            self.answered_whole(stream);
            ev.trailers(stream, fields);
            return;
        }
        let Some(status) = response_status(fields) else {
            self.stream_error(stream, ErrorCode::Protocol, ev);
            return;
        };
        s.heard = true;
        let bodyless = s.head_request || status == 204 || status == 304;
        if end_stream && !bodyless && length.is_some_and(|n| n > 0) {
            // A body announced, and none.
            self.stream_error(stream, ErrorCode::Protocol, ev);
            return;
        }
        if (100..200).contains(&status) {
            if end_stream || status == 101 {
                // (101 has no place in HTTP/2, §8.6.)
                self.stream_error(stream, ErrorCode::Protocol, ev);
            } else {
                ev.interim(stream, status, fields);
            }
            return; // interim: the final head follows
        }
        s.length = if bodyless { Some(0) } else { length };
        s.answered = true;
        if end_stream {
            self.answered_whole(stream);
        }
        ev.response(stream, status, fields, end_stream);
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        flow_len: u32,
        ev: &mut impl Events,
    ) -> Result<(), ErrorCode> {
        self.recv_window -= i64::from(flow_len);
        if self.recv_window < 0 {
            return Err(ErrorCode::FlowControl);
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream we cancelled or that ended: its octets come back to
            // the connection's window.
            self.consumed(0, flow_len);
            if stream % 2 == 0 || stream >= self.next_stream {
                return Err(ErrorCode::Protocol);
            }
            return Ok(());
        };
        if !s.answered {
            // DATA before the response head.
            self.consumed(0, flow_len);
            self.stream_error(stream, ErrorCode::Protocol, ev);
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        if s.recv_window < 0 {
            self.consumed(0, flow_len);
            self.stream_error(stream, ErrorCode::FlowControl, ev);
            return Ok(());
        }
        // The body must be what `content-length` said (none for HEAD, 204
        // and 304): more, or an end before it, is a malformed response.
        s.received += data.len() as u64;
        let over = s.length.is_some_and(|n| s.received > n);
        let short = end_stream && s.length.is_some_and(|n| s.received != n);
        if over || short {
            self.consumed(0, flow_len);
            self.stream_error(stream, ErrorCode::Protocol, ev);
            return Ok(());
        }
        let padding = flow_len - data.len() as u32;
        if end_stream {
            self.answered_whole(stream);
        }
        ev.data(stream, data, end_stream);
        if padding > 0 {
            self.consumed(stream, padding);
        }
        Ok(())
    }
}

/// Why a request cannot go on an HTTP/2 connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The origin's concurrent-stream limit is reached, or it said GOAWAY:
    /// another connection.
    NoRoom,
    /// The head is not an HTTP/1.1 request head ringmux could have written
    /// (a bug, or an upgrade: HTTP/2 has no Upgrade).
    BadHead,
}

/// How the request's body comes in the HTTP/1.1 form the agent writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestBody {
    None,
    /// `content-length` octets follow as they are.
    Length(u64),
    /// Chunked: the caller de-chunks before [`Upstream::send_data`].
    Chunked,
}

/// The `:status` of a response head, if it is one (the only
/// pseudo-header, first, three digits).
fn response_status(fields: &Fields) -> Option<u16> {
    let mut status = None;
    for (i, (name, value)) in fields.iter().enumerate() {
        if !name.starts_with(b":") {
            continue;
        }
        if i != 0 || name != b":status" || value.len() != 3 {
            return None;
        }
        let n = std::str::from_utf8(value).ok()?.parse::<u16>().ok()?;
        status = Some(n).filter(|n| (100..1000).contains(n));
    }
    status
}

/// Fields of HTTP/1.1 that have no place in HTTP/2 (RFC 9113 §8.2.2).
fn connection_specific(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"connection")
        || name.eq_ignore_ascii_case(b"keep-alive")
        || name.eq_ignore_ascii_case(b"proxy-connection")
        || name.eq_ignore_ascii_case(b"transfer-encoding")
        || name.eq_ignore_ascii_case(b"upgrade")
        || name.eq_ignore_ascii_case(b"host")
}

/// Write the HTTP/1.1 request `head` as an HPACK block into `block`:
/// `:method`, `:scheme`, `:authority` (from Host), `:path`, then its
/// fields in lower case without the connection-specific ones (and those
/// `Connection` names); `te` only as `trailers`.
pub fn encode_request(
    head: &[u8],
    scheme: &str,
    encoder: &mut Encoder,
    block: &mut Vec<u8>,
) -> Result<RequestBody, OpenError> {
    let mut slots = [httparse::EMPTY_HEADER; 128];
    let mut req = httparse::Request::new(&mut slots);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        _ => return Err(OpenError::BadHead),
    }
    let (Some(method), Some(path)) = (req.method, req.path) else {
        return Err(OpenError::BadHead);
    };
    if method == "CONNECT" {
        return Err(OpenError::BadHead);
    }
    let host = req
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("host"))
        .map(|h| h.value)
        .ok_or(OpenError::BadHead)?;
    let mut body = RequestBody::None;
    let mut named_by_connection: Vec<&str> = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("connection") {
            let tokens = std::str::from_utf8(h.value).map_err(|_| OpenError::BadHead)?;
            named_by_connection.extend(tokens.split(',').map(str::trim));
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .ok_or(OpenError::BadHead)?;
            body = if n == 0 {
                RequestBody::None
            } else {
                RequestBody::Length(n)
            };
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            body = RequestBody::Chunked;
        } else if h.name.eq_ignore_ascii_case("upgrade") {
            return Err(OpenError::BadHead);
        }
    }
    encoder.field(block, b":method", method.as_bytes(), false);
    encoder.field(block, b":scheme", scheme.as_bytes(), false);
    encoder.field(block, b":authority", host, false);
    encoder.field(block, b":path", path.as_bytes(), false);
    let mut name = Vec::with_capacity(32);
    for h in req.headers.iter() {
        let n = h.name.as_bytes();
        if connection_specific(n)
            || named_by_connection
                .iter()
                .any(|t| t.eq_ignore_ascii_case(h.name))
        {
            continue;
        }
        name.clear();
        name.extend(n.iter().map(u8::to_ascii_lowercase));
        if name == b"te" && !h.value.eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        let sensitive = name == b"authorization" || name == b"cookie";
        encoder.field(block, &name, h.value, sensitive);
    }
    Ok(body)
}

/// One stream's response written as HTTP/1.1 for the agent that owns it:
/// the head with its framing (the origin's `content-length`, else
/// chunked), the body (chunked if so), the trailers in the last chunk.
#[derive(Debug, Default)]
pub struct Http1Response {
    chunked: bool,
}

impl Http1Response {
    /// Append the head for `status` and `fields` to `out`; `end_stream`:
    /// the response has no body.
    pub fn head(&mut self, status: u16, fields: &Fields, end_stream: bool, out: &mut Vec<u8>) {
        out.extend_from_slice(b"HTTP/1.1 ");
        out.extend_from_slice(status.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(crate::codec::reason_phrase(status).as_bytes());
        out.extend_from_slice(b"\r\n");
        let mut length = false;
        for (name, value) in fields.iter() {
            if name.starts_with(b":") || connection_specific(name) {
                continue;
            }
            length |= name == b"content-length";
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        let bodyless = end_stream || status == 204 || status == 304;
        if !length && !bodyless {
            out.extend_from_slice(b"transfer-encoding: chunked\r\n");
            self.chunked = true;
        } else if !length && end_stream && status != 204 && status != 304 {
            out.extend_from_slice(b"content-length: 0\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }

    /// Append body octets (and, with `end`, the body's end).
    pub fn data(&mut self, data: &[u8], end: bool, out: &mut Vec<u8>) {
        if !self.chunked {
            out.extend_from_slice(data);
            return;
        }
        crate::codec::write_chunk(out, data);
        if end {
            out.extend_from_slice(b"0\r\n\r\n");
        }
    }

    /// Append the trailers, which end the body.
    pub fn trailers(&mut self, fields: &Fields, out: &mut Vec<u8>) {
        if !self.chunked {
            return; // a length-delimited body has no place for them
        }
        out.extend_from_slice(b"0\r\n");
        for (name, value) in fields.iter() {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests;
