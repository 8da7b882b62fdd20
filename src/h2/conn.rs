//! One HTTP/2 server connection's protocol state (RFC 9113), sans-I/O: the
//! client's bytes in, requests and their bodies out to a [`Handler`];
//! responses in, frames out. It owns the stream states, both directions'
//! flow control, SETTINGS and PING, and the limits that keep a client from
//! making the connection cost more than it serves. Each limit closes the
//! connection with GOAWAY and the right code, and is counted in
//! [`Counts`].
//!
//! The limits (each per connection, counted over a 10 s window):
//! - concurrent streams: `max_streams`; more are refused (REFUSED_STREAM),
//!   and more than `flood / 10` refusals is a flood;
//! - Rapid Reset (CVE-2023-44487): streams the client cancels while their
//!   request is in progress, more than `flood / 10` and more than half of
//!   the streams it opened in the window: ENHANCE_YOUR_CALM;
//! - CONTINUATION flood (CVE-2024-27316): a header block is at most
//!   `max_header_block` octets and `MAX_CONTINUATIONS` frames;
//! - HPACK bomb: a header list past `max_header_list` is read to its end
//!   (the tables stay in step) and the stream answered 431 by the caller;
//! - SETTINGS and PING: at most `flood` each; empty DATA, HEADERS and
//!   CONTINUATION frames that end nothing: at most `flood / 10`;
//! - flow control: a client that sends past the windows we gave is a
//!   FLOW_CONTROL_ERROR; one that never opens its window is for the caller
//!   to time out ([`Connection::blocked_since`]).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::frame::{self, flag, kind, setting, ErrorCode, Frame, FrameError};
use super::hpack::{Decoder, Encoder, Fields};
use super::request::{self, Head, Malformed};

/// The window in which floods are counted.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// CONTINUATION frames one header block may take.
const MAX_CONTINUATIONS: u32 = 32;
/// The default initial window (RFC 9113 §6.9.2).
const DEFAULT_WINDOW: i64 = 65_535;
/// The largest window (2^31 - 1).
const MAX_WINDOW: i64 = 0x7fff_ffff;

/// What ringmux announces and enforces.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_streams: u32,
    /// Each stream's receive window (SETTINGS_INITIAL_WINDOW_SIZE).
    pub stream_window: u32,
    /// The connection's receive window.
    pub conn_window: u32,
    pub max_header_list: u32,
    pub max_header_block: usize,
    /// Floods: events of one kind allowed per [`FLOOD_WINDOW`].
    pub flood: u32,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_streams: 100,
            stream_window: 256 * 1024,
            conn_window: 1024 * 1024,
            max_header_list: 64 * 1024,
            max_header_block: 64 * 1024,
            flood: 1000,
        }
    }
}

/// Where the requests go.
pub trait Handler {
    /// A request on `stream`, its head in HTTP/1.1 form; `end_stream`: it
    /// has no body.
    fn request(&mut self, stream: u32, head: Head, end_stream: bool);
    /// A request whose header list is malformed or too large: answer it
    /// (400 or 431, with the reason) or reset it.
    fn refused(&mut self, stream: u32, why: Refusal);
    /// Body octets of `stream`; `end`: its last.
    fn data(&mut self, stream: u32, data: &[u8], end: bool);
    /// `stream` was reset (by the client, or for an error of its own):
    /// whatever it was doing stops.
    fn reset(&mut self, stream: u32);
}

/// Why a request was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    Malformed(Malformed),
    /// Its header list passed `max_header_list` (431).
    TooLarge,
}

/// The limits that were hit, for `/metrics`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub refused_streams: u64,
    pub rapid_reset: u64,
    pub continuation_flood: u64,
    pub header_lists_too_large: u64,
    pub settings_flood: u64,
    pub ping_flood: u64,
    pub empty_frames: u64,
    pub protocol_errors: u64,
    pub flow_control_errors: u64,
}

/// A flood counter over [`FLOOD_WINDOW`].
#[derive(Debug, Default, Clone, Copy)]
struct Window {
    since: Option<Instant>,
    n: u32,
}

impl Window {
    /// Count one at `now`; the count in the current window.
    fn hit(&mut self, now: Instant) -> u32 {
        if self.since.is_none_or(|s| now >= s + FLOOD_WINDOW) {
            self.since = Some(now);
            self.n = 0;
        }
        self.n += 1;
        self.n
    }

    fn count(&self, now: Instant) -> u32 {
        match self.since {
            Some(s) if now < s + FLOOD_WINDOW => self.n,
            _ => 0,
        }
    }
}

/// A stream's state (RFC 9113 §5.1), as the server sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StreamState {
    /// Both sides may send.
    Open,
    /// The client is done (END_STREAM); the response goes on.
    HalfClosedRemote,
    /// The response is done; the request body goes on.
    HalfClosedLocal,
}

#[derive(Debug)]
struct Stream {
    state: StreamState,
    /// What we may still send on it.
    send_window: i64,
    /// What the client may still send on it.
    recv_window: i64,
    /// Octets the handler took since the last WINDOW_UPDATE.
    consumed: u32,
    content_length: Option<u64>,
    received: u64,
}

/// A header block being read (HEADERS then CONTINUATION frames).
#[derive(Debug)]
struct Pending {
    stream: u32,
    block: Vec<u8>,
    end_stream: bool,
    frames: u32,
}

/// The connection's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Waiting for the client's preface.
    Preface,
    Open,
    /// GOAWAY sent: streams above `last` are refused.
    Draining {
        last: u32,
    },
    /// A connection error: GOAWAY written, nothing more is read.
    Failed,
}

/// One HTTP/2 server connection.
#[derive(Debug)]
pub struct Connection {
    limits: Limits,
    phase: Phase,
    /// Bytes of a frame not complete yet.
    input: Vec<u8>,
    out: Vec<u8>,
    decoder: Decoder,
    encoder: Encoder,
    fields: Fields,
    streams: HashMap<u32, Stream>,
    /// The highest stream id the client opened.
    last_stream: u32,
    pending: Option<Pending>,
    /// The client's settings.
    peer_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    conn_consumed: u32,
    /// Since when a stream with a response to send has had no window.
    blocked: Option<Instant>,
    opened: Window,
    resets: Window,
    refusals: Window,
    settings: Window,
    pings: Window,
    empty: Window,
    pub counts: Counts,
}

impl Connection {
    /// A connection with `limits`: our SETTINGS (and the connection
    /// window's raise) are the first output.
    pub fn new(limits: Limits) -> Connection {
        let mut c = Connection {
            limits,
            phase: Phase::Preface,
            input: Vec::new(),
            out: Vec::new(),
            decoder: Decoder::new(4096),
            encoder: Encoder::default(),
            fields: Fields::default(),
            streams: HashMap::new(),
            last_stream: 0,
            pending: None,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(limits.conn_window),
            conn_consumed: 0,
            blocked: None,
            opened: Window::default(),
            resets: Window::default(),
            refusals: Window::default(),
            settings: Window::default(),
            pings: Window::default(),
            empty: Window::default(),
            counts: Counts::default(),
        };
        frame::write_settings(
            &mut c.out,
            &[
                (setting::MAX_CONCURRENT_STREAMS, limits.max_streams),
                (setting::INITIAL_WINDOW_SIZE, limits.stream_window),
                (setting::MAX_HEADER_LIST_SIZE, limits.max_header_list),
            ],
        );
        let raise = i64::from(limits.conn_window) - DEFAULT_WINDOW;
        if raise > 0 {
            frame::write_window_update(&mut c.out, 0, raise as u32);
        }
        c
    }

    /// The frames due out, taken.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// The connection failed or finished draining: once the output is
    /// written, it closes.
    pub fn is_done(&self) -> bool {
        match self.phase {
            Phase::Failed => true,
            Phase::Draining { .. } => self.streams.is_empty(),
            _ => false,
        }
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.streams.len()
    }

    /// Since when a response has waited for a window the client does not
    /// open (the caller times it out).
    pub fn blocked_since(&self) -> Option<Instant> {
        self.blocked
    }

    /// Take the client's bytes; requests and bodies go to `h`. An error is
    /// the connection's: its GOAWAY is in the output, nothing more is read.
    pub fn receive(
        &mut self,
        data: &[u8],
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        if self.phase == Phase::Failed {
            return Err(ErrorCode::Protocol);
        }
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            if self.phase == Phase::Preface {
                let want = frame::PREFACE.len();
                let have = (input.len() - at).min(want);
                if input[at..at + have] != frame::PREFACE[..have] {
                    break Err(ErrorCode::Protocol);
                }
                if have < want {
                    break Ok(());
                }
                at += want;
                self.phase = Phase::Open;
            }
            match frame::read(&input[at..], frame::DEFAULT_MAX_FRAME) {
                Ok(None) => break Ok(()),
                Ok(Some((f, n))) => {
                    let step = self.on_frame(f, now, h);
                    at += n;
                    if let Err(e) = step {
                        break Err(e);
                    }
                }
                Err(FrameError::Connection(code)) => break Err(code),
                Err(FrameError::Stream(id, code)) => {
                    // (The frame's length is known: skip it.)
                    let len = u32::from_be_bytes([0, input[at], input[at + 1], input[at + 2]]);
                    at += frame::HEADER_LEN + len as usize;
                    self.reset_stream(id, code, h);
                }
            }
        };
        input.drain(..at);
        self.input = input;
        if let Err(code) = result {
            self.fail(code);
        }
        result
    }

    /// A connection error: GOAWAY with `code`, then the end.
    fn fail(&mut self, code: ErrorCode) {
        match code {
            ErrorCode::Protocol | ErrorCode::FrameSize | ErrorCode::Compression => {
                self.counts.protocol_errors += 1
            }
            ErrorCode::FlowControl => self.counts.flow_control_errors += 1,
            _ => {}
        }
        frame::write_goaway(&mut self.out, self.last_stream, code);
        self.phase = Phase::Failed;
        self.input = Vec::new();
    }

    /// A flood of one kind: true (and counted by the caller) past the
    /// limit.
    fn flooded(window: &mut Window, now: Instant, limit: u32) -> bool {
        window.hit(now) > limit
    }

    fn on_frame(
        &mut self,
        f: Frame<'_>,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        // Inside a header block only its CONTINUATION frames may come.
        if let Some(p) = &self.pending {
            match f {
                Frame::Continuation { stream, .. } if stream == p.stream => {}
                _ => return Err(ErrorCode::Protocol),
            }
        }
        let flood = self.limits.flood;
        match f {
            Frame::Settings { ack, payload } => {
                if Self::flooded(&mut self.settings, now, flood) {
                    self.counts.settings_flood += 1;
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                if !ack {
                    self.apply_settings(payload)?;
                    frame::write_simple(&mut self.out, kind::SETTINGS, flag::ACK, 0, &[]);
                }
            }
            Frame::Ping { ack, data } => {
                if Self::flooded(&mut self.pings, now, flood) {
                    self.counts.ping_flood += 1;
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                if !ack {
                    frame::write_simple(&mut self.out, kind::PING, flag::ACK, 0, &data);
                }
            }
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
                        self.reset_stream(stream, ErrorCode::FlowControl, h);
                    }
                } else if stream > self.last_stream {
                    // On an idle stream.
                    return Err(ErrorCode::Protocol);
                }
            }
            Frame::Headers {
                stream,
                block,
                end_stream,
                end_headers,
            } => {
                if block.is_empty() && !end_headers && self.empty_flood(now) {
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                self.begin_headers(stream, now, h)?;
                let p = Pending {
                    stream,
                    block: block.to_vec(),
                    end_stream,
                    frames: 0,
                };
                self.add_to_block(p, end_headers, now, h)?;
            }
            Frame::Continuation {
                block, end_headers, ..
            } => {
                let Some(mut p) = self.pending.take() else {
                    return Err(ErrorCode::Protocol);
                };
                if block.is_empty() && !end_headers && self.empty_flood(now) {
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                p.frames += 1;
                p.block.extend_from_slice(block);
                if p.frames > MAX_CONTINUATIONS || p.block.len() > self.limits.max_header_block {
                    self.counts.continuation_flood += 1;
                    return Err(ErrorCode::EnhanceYourCalm);
                }
                self.add_to_block(p, end_headers, now, h)?;
            }
            Frame::Data {
                stream,
                data,
                end_stream,
                flow_len,
            } => self.on_data(stream, data, end_stream, flow_len, now, h)?,
            Frame::RstStream { stream, .. } => {
                if stream > self.last_stream {
                    return Err(ErrorCode::Protocol);
                }
                if self.streams.remove(&stream).is_some() {
                    h.reset(stream);
                    // Cancelled while its request was in progress: Rapid
                    // Reset past the limit, and past half the streams
                    // opened meanwhile.
                    let resets = self.resets.hit(now);
                    if resets > flood / 10 && resets > self.opened.count(now) / 2 {
                        self.counts.rapid_reset += 1;
                        return Err(ErrorCode::EnhanceYourCalm);
                    }
                }
            }
            Frame::Priority { .. } | Frame::Unknown => {}
            Frame::GoAway { .. } => {
                // The client leaves: streams in flight finish.
                if let Phase::Open = self.phase {
                    self.phase = Phase::Draining {
                        last: self.last_stream,
                    };
                }
            }
        }
        Ok(())
    }

    fn empty_flood(&mut self, now: Instant) -> bool {
        if Self::flooded(&mut self.empty, now, self.limits.flood / 10) {
            self.counts.empty_frames += 1;
            return true;
        }
        false
    }

    fn apply_settings(&mut self, payload: &[u8]) -> Result<(), ErrorCode> {
        for pair in frame::settings(payload) {
            let (id, value) = pair?;
            match id {
                setting::HEADER_TABLE_SIZE => self.encoder.peer_table_size(value),
                setting::INITIAL_WINDOW_SIZE => {
                    // Every stream's window moves by the change (§6.9.2).
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

    /// A HEADERS frame for `stream`: a new stream (ids odd and rising) or
    /// trailers on an open one.
    fn begin_headers(
        &mut self,
        stream: u32,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        if stream % 2 == 0 {
            return Err(ErrorCode::Protocol);
        }
        if stream <= self.last_stream {
            return match self.streams.get(&stream).map(|s| s.state) {
                // Trailers: the block must end the stream (checked when
                // it is whole).
                Some(StreamState::Open | StreamState::HalfClosedLocal) => Ok(()),
                Some(StreamState::HalfClosedRemote) => {
                    self.reset_stream(stream, ErrorCode::StreamClosed, h);
                    Ok(())
                }
                // A closed stream (§5.1: STREAM_CLOSED, of the connection
                // since we keep no memory of which closed how).
                None => Err(ErrorCode::StreamClosed),
            };
        }
        self.last_stream = stream;
        self.opened.hit(now);
        Ok(())
    }

    /// Add to the header block; once it ends, decode it and act on it.
    fn add_to_block(
        &mut self,
        p: Pending,
        end_headers: bool,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        if p.block.len() > self.limits.max_header_block {
            self.counts.continuation_flood += 1;
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
            Ok(()) => self.on_block(p.stream, &fields, p.end_stream, now, h),
        };
        self.fields = fields;
        result
    }

    /// A whole header block: a request, or a stream's trailers.
    fn on_block(
        &mut self,
        stream: u32,
        fields: &Fields,
        end_stream: bool,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        if let Some(s) = self.streams.get(&stream) {
            // Trailers end the request; they carry no pseudo-headers, and
            // the body before them is whole.
            let short = s.content_length.is_some_and(|n| n != s.received);
            if !end_stream || short || fields.iter().any(|(n, _)| n.starts_with(b":")) {
                self.reset_stream(stream, ErrorCode::Protocol, h);
                return Ok(());
            }
            if s.state == StreamState::HalfClosedLocal {
                self.streams.remove(&stream);
            } else if let Some(s) = self.streams.get_mut(&stream) {
                s.state = StreamState::HalfClosedRemote;
            }
            h.data(stream, &[], true);
            return Ok(());
        }
        let draining = matches!(self.phase, Phase::Draining { last } if stream > last);
        if draining || self.streams.len() >= self.limits.max_streams as usize {
            // Over the concurrent limit (or after our GOAWAY): refused,
            // which says it was not processed and may be retried.
            self.counts.refused_streams += 1;
            frame::write_rst(&mut self.out, stream, ErrorCode::RefusedStream);
            // A client that opens streams only to have them refused.
            if self.refusals.hit(now) > self.limits.flood / 10 {
                return Err(ErrorCode::EnhanceYourCalm);
            }
            return Ok(());
        }
        if fields.oversize {
            self.counts.header_lists_too_large += 1;
            self.open(stream, None, end_stream);
            h.refused(stream, Refusal::TooLarge);
            return Ok(());
        }
        match request::to_http1(fields, end_stream) {
            Ok(head) => {
                self.open(stream, head.content_length, end_stream);
                if end_stream && head.content_length.is_some_and(|n| n > 0) {
                    self.reset_stream(stream, ErrorCode::Protocol, h);
                    return Ok(());
                }
                h.request(stream, head, end_stream);
            }
            Err(why) => {
                self.open(stream, None, end_stream);
                h.refused(stream, Refusal::Malformed(why));
            }
        }
        Ok(())
    }

    fn open(&mut self, stream: u32, content_length: Option<u64>, end_stream: bool) {
        self.streams.insert(
            stream,
            Stream {
                state: if end_stream {
                    StreamState::HalfClosedRemote
                } else {
                    StreamState::Open
                },
                send_window: self.peer_window,
                recv_window: i64::from(self.limits.stream_window),
                consumed: 0,
                content_length,
                received: 0,
            },
        );
    }

    fn on_data(
        &mut self,
        stream: u32,
        data: &[u8],
        end_stream: bool,
        flow_len: u32,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        if stream > self.last_stream {
            return Err(ErrorCode::Protocol);
        }
        // The connection's window counts every DATA frame, whatever its
        // stream's fate.
        self.recv_window -= i64::from(flow_len);
        if self.recv_window < 0 {
            return Err(ErrorCode::FlowControl);
        }
        if flow_len == 0 && !end_stream && self.empty_flood(now) {
            return Err(ErrorCode::EnhanceYourCalm);
        }
        let Some(s) = self.streams.get_mut(&stream) else {
            // A stream already closed: its octets are given back.
            self.give_back(flow_len);
            frame::write_rst(&mut self.out, stream, ErrorCode::StreamClosed);
            return Ok(());
        };
        if s.state == StreamState::HalfClosedRemote {
            // DATA after END_STREAM.
            self.give_back(flow_len);
            self.reset_stream(stream, ErrorCode::StreamClosed, h);
            return Ok(());
        }
        s.recv_window -= i64::from(flow_len);
        if s.recv_window < 0 {
            self.give_back(flow_len);
            self.reset_stream(stream, ErrorCode::FlowControl, h);
            return Ok(());
        }
        s.received += data.len() as u64;
        let over = s.content_length.is_some_and(|n| s.received > n)
            || (end_stream && s.content_length.is_some_and(|n| s.received != n));
        if over {
            self.reset_stream(stream, ErrorCode::Protocol, h);
            return Ok(());
        }
        // Padding is flow-controlled but never reaches the handler: it is
        // given back at once.
        let padding = flow_len - data.len() as u32;
        if end_stream {
            s.state = match s.state {
                StreamState::HalfClosedLocal => {
                    self.streams.remove(&stream);
                    h.data(stream, data, true);
                    self.give_back(padding);
                    return Ok(());
                }
                _ => StreamState::HalfClosedRemote,
            };
        }
        h.data(stream, data, end_stream);
        if padding > 0 {
            self.consumed(stream, padding);
        }
        Ok(())
    }

    /// Octets of the connection window given back with no stream to
    /// credit.
    fn give_back(&mut self, n: u32) {
        self.conn_consumed += n;
        self.update_conn_window();
    }

    fn update_conn_window(&mut self) {
        if self.conn_consumed >= self.limits.conn_window / 2 {
            frame::write_window_update(&mut self.out, 0, self.conn_consumed);
            self.recv_window += i64::from(self.conn_consumed);
            self.conn_consumed = 0;
        }
    }

    /// The handler took `n` octets of `stream`'s body: the windows reopen
    /// (in steps of half a window, so that updates stay few).
    pub fn consumed(&mut self, stream: u32, n: u32) {
        self.conn_consumed += n;
        self.update_conn_window();
        let half = self.limits.stream_window / 2;
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.state == StreamState::HalfClosedRemote {
                return;
            }
            s.consumed += n;
            if s.consumed >= half {
                frame::write_window_update(&mut self.out, stream, s.consumed);
                s.recv_window += i64::from(s.consumed);
                s.consumed = 0;
            }
        }
    }

    /// Reset `stream` with `code` (RST_STREAM); the handler is told.
    pub fn reset_stream(&mut self, stream: u32, code: ErrorCode, h: &mut impl Handler) {
        frame::write_rst(&mut self.out, stream, code);
        if self.streams.remove(&stream).is_some() {
            h.reset(stream);
        }
    }

    /// The response head for `stream` (`:status` first, then `fields`,
    /// lower-case names); `end_stream`: no body follows.
    pub fn send_headers(
        &mut self,
        stream: u32,
        status: u16,
        fields: &[(&[u8], &[u8])],
        end_stream: bool,
    ) {
        if !self.streams.contains_key(&stream) {
            return;
        }
        let mut block = Vec::with_capacity(64);
        self.encoder.begin(&mut block);
        self.encoder
            .field(&mut block, b":status", status.to_string().as_bytes(), false);
        for (n, v) in fields {
            let sensitive = *n == b"set-cookie" || *n == b"authorization";
            self.encoder.field(&mut block, n, v, sensitive);
        }
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        if end_stream {
            self.local_end(stream);
        }
    }

    /// Send what the windows allow of `data` on `stream`; returns how much
    /// went (the rest waits for a WINDOW_UPDATE). `end` ends the stream
    /// once all of `data` went.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end: bool, now: Instant) -> usize {
        let Some(s) = self.streams.get_mut(&stream) else {
            return 0;
        };
        let room = self.send_window.min(s.send_window).max(0) as usize;
        let n = data.len().min(room);
        let mut sent = 0;
        // (An empty DATA frame only to end the stream.)
        if n > 0 || (end && data.is_empty()) {
            loop {
                let len = (n - sent).min(self.peer_max_frame as usize);
                let last = sent + len == data.len();
                frame::write_data_header(&mut self.out, stream, len, end && last);
                self.out.extend_from_slice(&data[sent..sent + len]);
                sent += len;
                if sent >= n {
                    break;
                }
            }
        }
        self.send_window -= sent as i64;
        s.send_window -= sent as i64;
        self.blocked = if sent < data.len() {
            self.blocked.or(Some(now))
        } else {
            None
        };
        if end && sent == data.len() {
            self.local_end(stream);
        }
        sent
    }

    /// Our side of `stream` is done.
    fn local_end(&mut self, stream: u32) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        match s.state {
            StreamState::HalfClosedRemote => {
                self.streams.remove(&stream);
            }
            _ => s.state = StreamState::HalfClosedLocal,
        }
    }

    /// Stop taking new streams (drain, a retiring worker): GOAWAY with the
    /// last stream taken; those finish.
    pub fn go_away(&mut self) {
        if let Phase::Open | Phase::Preface = self.phase {
            frame::write_goaway(&mut self.out, self.last_stream, ErrorCode::NoError);
            self.phase = Phase::Draining {
                last: self.last_stream,
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::frame::write_simple;

    /// What the handler was told.
    #[derive(Default)]
    struct Log(Vec<String>);

    impl Handler for Log {
        fn request(&mut self, stream: u32, head: Head, end_stream: bool) {
            let line = String::from_utf8_lossy(&head.bytes);
            let first = line.lines().next().unwrap_or_default().to_string();
            self.0
                .push(format!("request {stream} {first} end={end_stream}"));
        }
        fn refused(&mut self, stream: u32, why: Refusal) {
            self.0.push(format!("refused {stream} {why:?}"));
        }
        fn data(&mut self, stream: u32, data: &[u8], end: bool) {
            self.0
                .push(format!("data {stream} {} end={end}", data.len()));
        }
        fn reset(&mut self, stream: u32) {
            self.0.push(format!("reset {stream}"));
        }
    }

    fn block(pairs: &[(&str, &str)]) -> Vec<u8> {
        let mut e = Encoder::default();
        let mut b = Vec::new();
        for (n, v) in pairs {
            e.field(&mut b, n.as_bytes(), v.as_bytes(), false);
        }
        b
    }

    fn get(path: &str) -> Vec<u8> {
        block(&[
            (":method", "GET"),
            (":scheme", "https"),
            (":path", path),
            (":authority", "a.test"),
        ])
    }

    fn headers(stream: u32, b: &[u8], flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        write_simple(&mut out, kind::HEADERS, flags, stream, b);
        out
    }

    fn start() -> (Connection, Log, Instant) {
        let mut c = Connection::new(Limits::default());
        let mut log = Log::default();
        let now = Instant::now();
        let mut hello = frame::PREFACE.to_vec();
        frame::write_settings(&mut hello, &[]);
        c.receive(&hello, now, &mut log).unwrap();
        (c, log, now)
    }

    /// The frames in `out`: (kind, flags, stream, payload).
    fn frames(out: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut v = Vec::new();
        let mut at = 0;
        while at < out.len() {
            let h = frame::Header::parse(out[at..].first_chunk().unwrap());
            let end = at + frame::HEADER_LEN + h.len as usize;
            v.push((
                h.kind,
                h.flags,
                h.stream,
                out[at + frame::HEADER_LEN..end].to_vec(),
            ));
            at = end;
        }
        v
    }

    fn goaway_code(out: &[u8]) -> Option<u32> {
        frames(out)
            .iter()
            .find(|f| f.0 == kind::GOAWAY)
            .map(|f| u32::from_be_bytes([f.3[4], f.3[5], f.3[6], f.3[7]]))
    }

    #[test]
    fn preface_settings_and_ping_are_answered() {
        let mut c = Connection::new(Limits::default());
        let first = frames(&c.take_output());
        assert_eq!(first[0].0, kind::SETTINGS);
        assert_eq!(first[1].0, kind::WINDOW_UPDATE);
        let mut log = Log::default();
        let now = Instant::now();
        let mut hello = frame::PREFACE.to_vec();
        frame::write_settings(&mut hello, &[(setting::INITIAL_WINDOW_SIZE, 1000)]);
        write_simple(&mut hello, kind::PING, 0, 0, b"pingpong");
        // Byte by byte: the preface and frames may come cut anywhere.
        for b in &hello {
            c.receive(std::slice::from_ref(b), now, &mut log).unwrap();
        }
        let out = frames(&c.take_output());
        assert_eq!(out[0], (kind::SETTINGS, flag::ACK, 0, vec![]));
        assert_eq!(out[1], (kind::PING, flag::ACK, 0, b"pingpong".to_vec()));
        // Not a preface at all: PROTOCOL_ERROR.
        let mut c = Connection::new(Limits::default());
        c.take_output();
        assert!(c.receive(b"GET / HTTP/1.1\r\n\r\n", now, &mut log).is_err());
        assert_eq!(goaway_code(&c.take_output()), Some(1));
    }

    #[test]
    fn requests_become_streams_and_responses_follow_the_windows() {
        let (mut c, mut log, now) = start();
        let mut wire = headers(1, &get("/a"), flag::END_HEADERS | flag::END_STREAM);
        let post = block(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/up"),
            (":authority", "a.test"),
            ("content-length", "3"),
        ]);
        wire.extend(headers(3, &post, flag::END_HEADERS));
        write_simple(&mut wire, kind::DATA, flag::END_STREAM, 3, b"abc");
        c.receive(&wire, now, &mut log).unwrap();
        assert_eq!(
            log.0,
            [
                "request 1 GET /a HTTP/1.1 end=true",
                "request 3 POST /up HTTP/1.1 end=false",
                "data 3 3 end=true"
            ]
        );
        c.take_output();
        // A 100 000-octet response against the default 65 535 window.
        c.send_headers(1, 200, &[(b"content-type", b"text/plain")], false);
        let body = vec![b'x'; 100_000];
        let sent = c.send_data(1, &body, true, now);
        assert_eq!(sent, 65_535);
        assert!(c.blocked_since().is_some());
        let mut wu = Vec::new();
        frame::write_window_update(&mut wu, 0, 50_000);
        frame::write_window_update(&mut wu, 1, 50_000);
        c.receive(&wu, now, &mut log).unwrap();
        assert_eq!(c.send_data(1, &body[sent..], true, now), 100_000 - 65_535);
        assert!(c.blocked_since().is_none());
        let out = frames(&c.take_output());
        assert!(out.iter().all(|f| f.3.len() <= 16_384));
        let last = out.last().unwrap();
        assert_eq!(
            (last.0, last.1 & flag::END_STREAM),
            (kind::DATA, flag::END_STREAM)
        );
        assert_eq!(c.open_streams(), 1, "stream 3 still open (no response yet)");
    }

    #[test]
    fn too_many_streams_are_refused_and_data_after_end_stream_is_an_error() {
        let limits = Limits {
            max_streams: 2,
            ..Limits::default()
        };
        let mut c = Connection::new(limits);
        let mut log = Log::default();
        let now = Instant::now();
        let mut wire = frame::PREFACE.to_vec();
        frame::write_settings(&mut wire, &[]);
        for id in [1, 3, 5] {
            wire.extend(headers(id, &get("/"), flag::END_HEADERS | flag::END_STREAM));
        }
        write_simple(&mut wire, kind::DATA, 0, 1, b"late");
        c.receive(&wire, now, &mut log).unwrap();
        let out = frames(&c.take_output());
        let rst: Vec<_> = out
            .iter()
            .filter(|f| f.0 == kind::RST_STREAM)
            .map(|f| (f.2, f.3[3]))
            .collect();
        assert_eq!(
            rst,
            [
                (5, ErrorCode::RefusedStream as u8),
                (1, ErrorCode::StreamClosed as u8)
            ]
        );
        assert_eq!(c.counts.refused_streams, 1);
        assert!(log.0.contains(&"reset 1".to_string()));
    }

    #[test]
    fn rapid_reset_closes_the_connection() {
        let (mut c, mut log, now) = start();
        let mut wire = Vec::new();
        let mut id = 1;
        for _ in 0..500 {
            wire.extend(headers(id, &get("/"), flag::END_HEADERS | flag::END_STREAM));
            frame::write_rst(&mut wire, id, ErrorCode::Cancel);
            id += 2;
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert_eq!(c.counts.rapid_reset, 1);
        assert_eq!(
            goaway_code(&c.take_output()),
            Some(ErrorCode::EnhanceYourCalm as u32)
        );
        assert!(c.is_done());
    }

    #[test]
    fn continuation_flood_and_interleaving_are_errors() {
        let (mut c, mut log, now) = start();
        let mut wire = headers(1, &get("/")[..2], 0);
        for _ in 0..40 {
            write_simple(&mut wire, kind::CONTINUATION, 0, 1, b"\x00");
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert_eq!(c.counts.continuation_flood, 1);
        // Another frame inside a header block.
        let (mut c, mut log, now) = start();
        let mut wire = headers(1, &get("/")[..2], 0);
        write_simple(&mut wire, kind::PING, 0, 0, b"12345678");
        assert_eq!(c.receive(&wire, now, &mut log), Err(ErrorCode::Protocol));
    }

    #[test]
    fn a_header_list_too_large_is_refused_but_the_tables_stay_in_step() {
        let limits = Limits {
            max_header_list: 200,
            ..Limits::default()
        };
        let mut c = Connection::new(limits);
        let mut log = Log::default();
        let now = Instant::now();
        let mut wire = frame::PREFACE.to_vec();
        frame::write_settings(&mut wire, &[]);
        let mut big = get("/");
        big.extend(block(&[("x-big", &"v".repeat(300))]));
        wire.extend(headers(1, &big, flag::END_HEADERS | flag::END_STREAM));
        wire.extend(headers(
            3,
            &get("/next"),
            flag::END_HEADERS | flag::END_STREAM,
        ));
        c.receive(&wire, now, &mut log).unwrap();
        assert_eq!(
            log.0,
            [
                "refused 1 TooLarge",
                "request 3 GET /next HTTP/1.1 end=true"
            ]
        );
        assert_eq!(c.counts.header_lists_too_large, 1);
    }

    #[test]
    fn flow_control_breaches() {
        let limits = Limits {
            stream_window: 10,
            ..Limits::default()
        };
        let mut c = Connection::new(limits);
        let mut log = Log::default();
        let now = Instant::now();
        let mut wire = frame::PREFACE.to_vec();
        frame::write_settings(&mut wire, &[]);
        let post = block(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "a"),
        ]);
        wire.extend(headers(1, &post, flag::END_HEADERS));
        write_simple(&mut wire, kind::DATA, 0, 1, &[0; 11]);
        c.receive(&wire, now, &mut log).unwrap();
        let out = frames(&c.take_output());
        assert!(out
            .iter()
            .any(|f| f.0 == kind::RST_STREAM && f.3[3] == ErrorCode::FlowControl as u8));
        // A WINDOW_UPDATE past 2^31 - 1 on the connection.
        let mut wu = Vec::new();
        frame::write_window_update(&mut wu, 0, 0x7fff_ffff);
        assert_eq!(c.receive(&wu, now, &mut log), Err(ErrorCode::FlowControl));
    }

    #[test]
    fn settings_and_ping_floods_and_empty_frames() {
        let (mut c, mut log, now) = start();
        let mut wire = Vec::new();
        for _ in 0..1100 {
            write_simple(&mut wire, kind::PING, 0, 0, b"12345678");
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert_eq!(c.counts.ping_flood, 1);
        let (mut c, mut log, now) = start();
        let mut wire = Vec::new();
        for _ in 0..1100 {
            frame::write_settings(&mut wire, &[]);
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        let (mut c, mut log, now) = start();
        let post = block(&[
            (":method", "POST"),
            (":scheme", "https"),
            (":path", "/"),
            (":authority", "a"),
        ]);
        let mut wire = headers(1, &post, flag::END_HEADERS);
        for _ in 0..200 {
            write_simple(&mut wire, kind::DATA, 0, 1, &[]);
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert_eq!(c.counts.empty_frames, 1);
    }

    #[test]
    fn go_away_lets_streams_in_flight_finish_and_refuses_new_ones() {
        let (mut c, mut log, now) = start();
        c.receive(
            &headers(1, &get("/"), flag::END_HEADERS | flag::END_STREAM),
            now,
            &mut log,
        )
        .unwrap();
        c.go_away();
        let out = c.take_output();
        assert_eq!(goaway_code(&out), Some(0));
        c.receive(
            &headers(3, &get("/"), flag::END_HEADERS | flag::END_STREAM),
            now,
            &mut log,
        )
        .unwrap();
        assert!(frames(&c.take_output())
            .iter()
            .any(|f| f.0 == kind::RST_STREAM && f.2 == 3));
        assert!(!c.is_done());
        c.send_headers(1, 204, &[], true);
        assert!(c.is_done());
    }
}
