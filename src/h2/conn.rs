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
use std::hash::{BuildHasherDefault, Hasher};
use std::time::{Duration, Instant};

use super::frame::{self, flag, kind, setting, ErrorCode, Frame, FrameError};
use super::hpack::{Decoder, Encoder, Fields};
use super::request::{self, Head, Malformed};

/// The window in which floods are counted.
const FLOOD_WINDOW: Duration = Duration::from_secs(10);
/// Ranges of stream ids jumped over that are remembered.
const MAX_SKIPPED_RANGES: usize = 8;
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
    /// Connections closed because a response waited too long for a
    /// window the client did not open (counted by the caller).
    pub window_stalls: u64,
}

impl Counts {
    /// Each count with its name (for `/metrics`).
    pub fn by_kind(&self) -> [(&'static str, u64); 10] {
        [
            ("refused_stream", self.refused_streams),
            ("rapid_reset", self.rapid_reset),
            ("continuation_flood", self.continuation_flood),
            ("header_list_too_large", self.header_lists_too_large),
            ("settings_flood", self.settings_flood),
            ("ping_flood", self.ping_flood),
            ("empty_frames", self.empty_frames),
            ("protocol_error", self.protocol_errors),
            ("flow_control_error", self.flow_control_errors),
            ("window_stall", self.window_stalls),
        ]
    }

    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Counts) {
        self.refused_streams += other.refused_streams;
        self.rapid_reset += other.rapid_reset;
        self.continuation_flood += other.continuation_flood;
        self.header_lists_too_large += other.header_lists_too_large;
        self.settings_flood += other.settings_flood;
        self.ping_flood += other.ping_flood;
        self.empty_frames += other.empty_frames;
        self.protocol_errors += other.protocol_errors;
        self.flow_control_errors += other.flow_control_errors;
        self.window_stalls += other.window_stalls;
    }
}

/// Connection-specific fields (a name in lower case), which have no place
/// in HTTP/2 (RFC 9113 §8.2.2): a peer would take the message for
/// malformed.
fn connection_specific(name: &[u8]) -> bool {
    matches!(
        name,
        b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding" | b"upgrade"
    )
}

/// Hashes stream ids (the client's to choose, but each is a key of ours
/// only while its stream is open, at most `max_streams` of them): a
/// multiply, not SipHash.
type StreamIds = BuildHasherDefault<IdHasher>;

#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
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
    /// Octets handed to the handler and not yet consumed: given back to
    /// the connection's window if the stream goes first.
    held: u32,
    /// Since when its response has waited for a window.
    blocked: Option<Instant>,
    content_length: Option<u64>,
    received: u64,
}

/// What a header block is for, decided at its HEADERS frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A new stream's request.
    Request,
    /// An open stream's trailers.
    Trailers,
    /// A stream we reset: decoded (the tables stay in step) and dropped.
    Discard,
}

/// A header block being read (HEADERS then CONTINUATION frames).
#[derive(Debug)]
struct Pending {
    stream: u32,
    target: Target,
    block: Vec<u8>,
    end_stream: bool,
    frames: u32,
}

/// Streams opened and reset in one window: Rapid Reset is judged on both
/// at once.
#[derive(Debug, Default, Clone, Copy)]
struct Churn {
    since: Option<Instant>,
    opened: u32,
    reset: u32,
}

impl Churn {
    fn roll(&mut self, now: Instant) {
        if self.since.is_none_or(|s| now >= s + FLOOD_WINDOW) {
            *self = Churn {
                since: Some(now),
                ..Churn::default()
            };
        }
    }
}

/// Streams we reset that the client may not know of yet: frames on them
/// are ignored (§5.1), not errors.
const RECENT_RESETS: usize = 128;

/// The connection's phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
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
    /// The client's preface came.
    preface_done: bool,
    /// The client's SETTINGS came (it must be its first frame, §3.4).
    settings_seen: bool,
    /// HEADERS or DATA went out since the client's last PING.
    sent_since_ping: bool,
    /// Bytes of a frame not complete yet.
    input: Vec<u8>,
    out: Vec<u8>,
    /// Scratch for the header blocks we write, and a field name in lower
    /// case.
    block: Vec<u8>,
    name: Vec<u8>,
    decoder: Decoder,
    encoder: Encoder,
    fields: Fields,
    streams: HashMap<u32, Stream, StreamIds>,
    /// The highest stream id the client opened.
    last_stream: u32,
    pending: Option<Pending>,
    /// The client's settings.
    peer_window: i64,
    peer_max_frame: u32,
    send_window: i64,
    recv_window: i64,
    conn_consumed: u32,
    churn: Churn,
    /// The time of the last call that said it (no clock is read here).
    now: Instant,
    /// Streams we reset lately (ids), oldest first.
    recent_resets: std::collections::VecDeque<u32>,
    /// Stream ids the client jumped over (never used), as ranges; the
    /// latest [`MAX_SKIPPED_RANGES`].
    skipped: Vec<(u32, u32)>,
    /// RST_STREAM frames we wrote in the window.
    local_resets: Window,
    /// A limit was passed inside a call that cannot fail: the connection
    /// ends once the frame is done.
    overloaded: bool,
    refusals: Window,
    settings: Window,
    pings: Window,
    empty: Window,
    pub counts: Counts,
}

impl Connection {
    /// A connection with `limits`: our SETTINGS (and the connection
    /// window's raise) are the first output.
    pub fn new(mut limits: Limits) -> Connection {
        // (A client may send a default window's worth before it has our
        // SETTINGS: smaller windows would make it a FLOW_CONTROL_ERROR.)
        limits.stream_window = limits.stream_window.max(DEFAULT_WINDOW as u32);
        limits.conn_window = limits.conn_window.max(DEFAULT_WINDOW as u32);
        limits.flood = limits.flood.max(10);
        let mut c = Connection {
            limits,
            phase: Phase::Open,
            preface_done: false,
            settings_seen: false,
            sent_since_ping: false,
            input: Vec::new(),
            out: Vec::new(),
            block: Vec::new(),
            name: Vec::new(),
            decoder: Decoder::new(4096),
            encoder: Encoder::default(),
            fields: Fields::default(),
            streams: HashMap::default(),
            last_stream: 0,
            pending: None,
            peer_window: DEFAULT_WINDOW,
            peer_max_frame: frame::DEFAULT_MAX_FRAME,
            send_window: DEFAULT_WINDOW,
            recv_window: i64::from(limits.conn_window),
            conn_consumed: 0,
            churn: Churn::default(),
            now: Instant::now(),
            recent_resets: std::collections::VecDeque::new(),
            skipped: Vec::new(),
            local_resets: Window::default(),
            overloaded: false,
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

    /// Since when the longest-waiting response has waited for a window
    /// the client does not open (the caller times it out).
    pub fn blocked_since(&self) -> Option<Instant> {
        self.streams.values().filter_map(|s| s.blocked).min()
    }

    /// Octets of output not taken yet: the caller stops reading the client
    /// while this is large (a client that sends but does not read).
    pub fn output_len(&self) -> usize {
        self.out.len()
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
        self.now = now;
        let mut input = std::mem::take(&mut self.input);
        input.extend_from_slice(data);
        let mut at = 0;
        let result = loop {
            if !self.preface_done {
                let want = frame::PREFACE.len();
                let have = (input.len() - at).min(want);
                if input[at..at + have] != frame::PREFACE[..have] {
                    break Err(ErrorCode::Protocol);
                }
                if have < want {
                    break Ok(());
                }
                at += want;
                self.preface_done = true;
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
                // Inside a header block, or on a stream never opened, a
                // stream's error is the connection's (§6.10, §5.1).
                Err(FrameError::Stream(..)) if self.pending.is_some() => {
                    break Err(ErrorCode::Protocol)
                }
                Err(FrameError::Stream(id, _)) if id > self.last_stream => {
                    break Err(ErrorCode::Protocol)
                }
                Err(FrameError::Stream(id, code)) => {
                    // (The frame's length is known: skip it.)
                    let len = u32::from_be_bytes([0, input[at], input[at + 1], input[at + 2]]);
                    at += frame::HEADER_LEN + len as usize;
                    self.reset_stream(id, code, h);
                }
            }
            if std::mem::take(&mut self.overloaded) {
                break Err(ErrorCode::EnhanceYourCalm);
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
        // The preface's SETTINGS comes first (§3.4).
        if !self.settings_seen {
            match f {
                Frame::Settings { ack: false, .. } => self.settings_seen = true,
                _ => return Err(ErrorCode::Protocol),
            }
        }
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
            // A PING after we sent something is free (gRPC measures its
            // bandwidth so while a response streams); only pings with
            // nothing sent between them count toward the flood.
            Frame::Ping { ack, data } => {
                if !std::mem::take(&mut self.sent_since_ping)
                    && Self::flooded(&mut self.pings, now, flood)
                {
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
                let target = self.begin_headers(stream, h)?;
                let p = Pending {
                    stream,
                    target,
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
                if let Some(s) = self.streams.remove(&stream) {
                    self.give_back(s.held);
                    h.reset(stream);
                    if self.cancelled(now) {
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

    /// A stream whose request was handed on ended early (the client's
    /// RST, or ours for its error: "MadeYouReset"): Rapid Reset past a
    /// tenth of `flood` such streams in the window and past half the
    /// requests handed on in it. True if the connection is to end.
    fn cancelled(&mut self, now: Instant) -> bool {
        self.churn.roll(now);
        self.churn.reset += 1;
        if self.churn.reset > self.limits.flood / 10 && self.churn.reset > self.churn.opened / 2 {
            self.counts.rapid_reset += 1;
            return true;
        }
        false
    }

    /// A request handed on.
    fn handed_on(&mut self, now: Instant) {
        self.churn.roll(now);
        self.churn.opened += 1;
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

    /// A HEADERS frame for `stream`: what its block is for.
    fn begin_headers(&mut self, stream: u32, h: &mut impl Handler) -> Result<Target, ErrorCode> {
        if stream % 2 == 0 {
            return Err(ErrorCode::Protocol);
        }
        if stream > self.last_stream {
            // Ids jumped over were never used (they are closed, §5.1.1):
            // remembered, so that one named later is told apart from a
            // stream that was. (Clients count up by two: nothing to keep.)
            let first_skipped = if self.last_stream == 0 {
                1
            } else {
                self.last_stream + 2
            };
            if stream > first_skipped {
                if self.skipped.len() == MAX_SKIPPED_RANGES {
                    self.skipped.remove(0);
                }
                self.skipped.push((first_skipped, stream - 2));
            }
            self.last_stream = stream;
            return Ok(Target::Request);
        }
        match self.streams.get(&stream).map(|s| s.state) {
            Some(StreamState::Open | StreamState::HalfClosedLocal) => Ok(Target::Trailers),
            // After END_STREAM: a stream error; the block is still read.
            Some(StreamState::HalfClosedRemote) => {
                self.reset_stream(stream, ErrorCode::StreamClosed, h);
                Ok(Target::Discard)
            }
            // One we reset: ignored (§5.1).
            None if self.recent_resets.contains(&stream) => Ok(Target::Discard),
            // An id lower than one in use and never used itself: not the
            // next id (§5.1.1).
            None if self
                .skipped
                .iter()
                .any(|&(lo, hi)| (lo..=hi).contains(&stream)) =>
            {
                Err(ErrorCode::Protocol)
            }
            // Closed long ago or by both ends.
            None => Err(ErrorCode::StreamClosed),
        }
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
            Ok(()) => match p.target {
                Target::Discard => Ok(()),
                Target::Trailers => {
                    self.on_trailers(p.stream, &fields, p.end_stream, h);
                    Ok(())
                }
                Target::Request => self.on_block(p.stream, &fields, p.end_stream, now, h),
            },
        };
        self.fields = fields;
        result
    }

    /// A whole header block: a request, or a stream's trailers.
    /// A stream's trailers: they end its request and carry no
    /// pseudo-headers, and the body before them is whole.
    fn on_trailers(
        &mut self,
        stream: u32,
        fields: &Fields,
        end_stream: bool,
        h: &mut impl Handler,
    ) {
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        let short = s.content_length.is_some_and(|n| n != s.received);
        if !end_stream || short || fields.iter().any(|(n, _)| n.starts_with(b":")) {
            self.reset_stream(stream, ErrorCode::Protocol, h);
            return;
        }
        if s.state == StreamState::HalfClosedLocal {
            self.remove(stream);
        } else if let Some(s) = self.streams.get_mut(&stream) {
            s.state = StreamState::HalfClosedRemote;
        }
        h.data(stream, &[], true);
    }

    fn on_block(
        &mut self,
        stream: u32,
        fields: &Fields,
        end_stream: bool,
        now: Instant,
        h: &mut impl Handler,
    ) -> Result<(), ErrorCode> {
        let draining = matches!(self.phase, Phase::Draining { last } if stream > last);
        if draining || self.streams.len() >= self.limits.max_streams as usize {
            // Over the concurrent limit (or after our GOAWAY): refused,
            // which says it was not processed and may be retried.
            self.counts.refused_streams += 1;
            frame::write_rst(&mut self.out, stream, ErrorCode::RefusedStream);
            if self.recent_resets.len() == RECENT_RESETS {
                self.recent_resets.pop_front();
            }
            self.recent_resets.push_back(stream);
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
            // A body announced and none to come.
            Ok(head) if end_stream && head.content_length.is_some_and(|n| n > 0) => {
                self.counts.protocol_errors += 1;
                self.local_reset(stream, ErrorCode::Protocol, now);
            }
            Ok(head) => {
                self.open(stream, head.content_length, end_stream);
                self.handed_on(now);
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
                held: 0,
                blocked: None,
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
            // A stream already closed: its octets are given back; one we
            // reset is ignored (§5.1), another answered STREAM_CLOSED.
            self.give_back(flow_len);
            if !self.recent_resets.contains(&stream) {
                self.local_reset(stream, ErrorCode::StreamClosed, now);
            }
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
            self.give_back(flow_len);
            self.reset_stream(stream, ErrorCode::Protocol, h);
            return Ok(());
        }
        s.held += data.len() as u32;
        // Padding is flow-controlled but never reaches the handler: it is
        // given back at once.
        let padding = flow_len - data.len() as u32;
        if end_stream {
            s.state = match s.state {
                StreamState::HalfClosedLocal => {
                    h.data(stream, data, true);
                    self.give_back(padding);
                    self.remove(stream);
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
        if self.conn_consumed > 0 && self.conn_consumed >= self.limits.conn_window / 2 {
            frame::write_window_update(&mut self.out, 0, self.conn_consumed);
            self.recv_window += i64::from(self.conn_consumed);
            self.conn_consumed = 0;
        }
    }

    /// The handler took `n` octets of `stream`'s body: the windows reopen
    /// (in steps of half a window, so that updates stay few).
    pub fn consumed(&mut self, stream: u32, n: u32) {
        let half = self.limits.stream_window / 2;
        // (A stream gone gave back what it held when it went.)
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let n = n.min(s.held);
        if n == 0 {
            return;
        }
        s.held -= n;
        self.conn_consumed += n;
        if let Some(s) = self.streams.get_mut(&stream) {
            if s.state == StreamState::HalfClosedRemote {
                self.update_conn_window();
                return;
            }
            s.consumed += n;
            if s.consumed >= half {
                frame::write_window_update(&mut self.out, stream, s.consumed);
                s.recv_window += i64::from(s.consumed);
                s.consumed = 0;
            }
        }
        self.update_conn_window();
    }

    /// Reset `stream` with `code` (RST_STREAM); the handler is told.
    pub fn reset_stream(&mut self, stream: u32, code: ErrorCode, h: &mut impl Handler) {
        let now = self.now;
        self.local_reset(stream, code, now);
        if self.remove(stream) {
            h.reset(stream);
            // A request handed on and ended by our reset counts as one
            // cancelled (a client can provoke resets: "MadeYouReset").
            if self.cancelled(now) {
                self.overloaded = true;
            }
        }
    }

    /// End `stream` with RST_STREAM `code` for a reason of ours (its
    /// response was cut short by the origin, or its client left the
    /// caller's side): the handler is not told, nothing counts against the
    /// client.
    pub fn cancel_stream(&mut self, stream: u32, code: ErrorCode) {
        frame::write_rst(&mut self.out, stream, code);
        if self.recent_resets.len() == RECENT_RESETS {
            self.recent_resets.pop_front();
        }
        self.recent_resets.push_back(stream);
        self.remove(stream);
    }

    /// Whether `stream` is open (its request or its response goes on).
    pub fn is_open(&self, stream: u32) -> bool {
        self.streams.contains_key(&stream)
    }

    /// Write RST_STREAM for `stream` and remember it; past a tenth of
    /// `flood` of them in a window the connection ends (each costs the
    /// client a few octets and us a frame).
    fn local_reset(&mut self, stream: u32, code: ErrorCode, now: Instant) {
        frame::write_rst(&mut self.out, stream, code);
        if self.recent_resets.len() == RECENT_RESETS {
            self.recent_resets.pop_front();
        }
        self.recent_resets.push_back(stream);
        if self.local_resets.hit(now) > self.limits.flood / 10 {
            self.counts.rapid_reset += 1;
            self.overloaded = true;
        }
    }

    /// Forget `stream`, giving back the window octets it held; true if it
    /// was there.
    fn remove(&mut self, stream: u32) -> bool {
        match self.streams.remove(&stream) {
            Some(s) => {
                self.give_back(s.held);
                true
            }
            None => false,
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
        if self
            .streams
            .get(&stream)
            .is_none_or(|s| s.state == StreamState::HalfClosedLocal)
        {
            return;
        }
        let mut block = std::mem::take(&mut self.block);
        block.clear();
        self.encoder.begin(&mut block);
        let digits = [
            b'0' + (status / 100 % 10) as u8,
            b'0' + (status / 10 % 10) as u8,
            b'0' + (status % 10) as u8,
        ];
        self.encoder.field(&mut block, b":status", &digits, false);
        let mut name = std::mem::take(&mut self.name);
        for (n, v) in fields {
            name.clear();
            name.extend(n.iter().map(u8::to_ascii_lowercase));
            if connection_specific(&name) {
                continue;
            }
            let sensitive = name == b"set-cookie" || name == b"authorization";
            self.encoder.field(&mut block, &name, v, sensitive);
        }
        frame::write_headers(
            &mut self.out,
            stream,
            &block,
            end_stream,
            self.peer_max_frame,
        );
        self.block = block;
        self.name = name;
        self.sent_since_ping = true;
        if end_stream {
            self.local_end(stream);
        }
    }

    /// Send what the windows allow of `data` on `stream`; returns how much
    /// went (the rest waits for a WINDOW_UPDATE). `end` ends the stream
    /// once all of `data` went.
    pub fn send_data(&mut self, stream: u32, data: &[u8], end: bool, now: Instant) -> usize {
        let Some(s) = self
            .streams
            .get_mut(&stream)
            .filter(|s| s.state != StreamState::HalfClosedLocal)
        else {
            return 0;
        };
        let room = self.send_window.min(s.send_window).max(0) as usize;
        let sent = frame::write_data(&mut self.out, stream, data, room, end, self.peer_max_frame);
        self.send_window -= sent as i64;
        s.send_window -= sent as i64;
        self.sent_since_ping |= sent > 0;
        // Waiting since now if some of it went (the client reads, slowly),
        // since the first time if none did.
        s.blocked = match (sent < data.len(), sent > 0) {
            (false, _) => None,
            (true, true) => Some(now),
            (true, false) => s.blocked.or(Some(now)),
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
            StreamState::HalfClosedRemote | StreamState::HalfClosedLocal => {
                self.remove(stream);
            }
            // The response is whole before the request: the client may
            // stop sending it (RST_STREAM NO_ERROR, §8.1); what it sent
            // meanwhile is ignored.
            StreamState::Open => {
                frame::write_rst(&mut self.out, stream, ErrorCode::NoError);
                if self.recent_resets.len() == RECENT_RESETS {
                    self.recent_resets.pop_front();
                }
                self.recent_resets.push_back(stream);
                self.remove(stream);
            }
        }
    }

    /// Trailers ending `stream`'s response (gRPC's `grpc-status`, ...):
    /// lower-case names, no pseudo-headers.
    pub fn send_trailers(&mut self, stream: u32, fields: &[(&[u8], &[u8])]) {
        if self
            .streams
            .get(&stream)
            .is_none_or(|s| s.state == StreamState::HalfClosedLocal)
        {
            return;
        }
        let mut block = Vec::with_capacity(64);
        self.encoder.begin(&mut block);
        let mut name = Vec::new();
        for (n, v) in fields {
            name.clear();
            name.extend(n.iter().map(u8::to_ascii_lowercase));
            if !name.starts_with(b":") && !connection_specific(&name) {
                self.encoder.field(&mut block, &name, v, false);
            }
        }
        frame::write_headers(&mut self.out, stream, &block, true, self.peer_max_frame);
        self.local_end(stream);
    }

    /// Give back the capacity of buffers an idle connection does not need
    /// (its input, the header list, the decoder's scratch, the stream
    /// table): an idle HTTP/2 connection keeps its HPACK table and its
    /// state, little else.
    pub fn shrink_idle(&mut self) {
        if self.input.is_empty() {
            self.input = Vec::new();
        }
        if self.out.is_empty() {
            self.out = Vec::new();
        }
        if self.pending.is_none() {
            self.fields = Fields::default();
            self.decoder.shrink_scratch();
        }
        self.block = Vec::new();
        self.name = Vec::new();
        if self.streams.is_empty() {
            self.streams = HashMap::default();
        }
    }

    /// Stop taking new streams (drain, a retiring worker): GOAWAY with the
    /// last stream taken; those finish.
    pub fn go_away(&mut self) {
        if let Phase::Open = self.phase {
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

    /// A POST to `path` with `extra` fields.
    fn post(path: &str, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut all = vec![
            (":method", "POST"),
            (":scheme", "https"),
            (":path", path),
            (":authority", "a.test"),
        ];
        all.extend_from_slice(extra);
        block(&all)
    }

    fn headers(stream: u32, b: &[u8], flags: u8) -> Vec<u8> {
        let mut out = Vec::new();
        write_simple(&mut out, kind::HEADERS, flags, stream, b);
        out
    }

    fn start() -> (Connection, Log, Instant) {
        start_with(Limits::default())
    }

    /// A connection with `limits` past the client's preface and SETTINGS.
    fn start_with(limits: Limits) -> (Connection, Log, Instant) {
        let mut c = Connection::new(limits);
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
        let post = post("/up", &[("content-length", "3")]);
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
    fn a_response_that_moves_is_not_stalled() {
        let (mut c, mut log, t0) = start();
        let wire = headers(1, &get("/big"), flag::END_HEADERS | flag::END_STREAM);
        c.receive(&wire, t0, &mut log).unwrap();
        c.send_headers(1, 200, &[], false);
        let body = vec![b'x'; 200_000];
        let mut sent = c.send_data(1, &body, true, t0);
        assert_eq!(c.blocked_since(), Some(t0));
        // The client reads slowly: 10 000 octets every 10 s. Each send
        // that lets some go restarts the wait; one that lets none go keeps
        // it.
        for step in 1..=3u64 {
            let t = t0 + Duration::from_secs(10 * step);
            let mut wu = Vec::new();
            frame::write_window_update(&mut wu, 0, 10_000);
            frame::write_window_update(&mut wu, 1, 10_000);
            c.receive(&wu, t, &mut log).unwrap();
            sent += c.send_data(1, &body[sent..], true, t);
            assert_eq!(c.blocked_since(), Some(t));
            let later = t + Duration::from_secs(1);
            assert_eq!(c.send_data(1, &body[sent..], true, later), 0);
            assert_eq!(c.blocked_since(), Some(t));
        }
    }

    #[test]
    fn too_many_streams_are_refused_and_data_after_end_stream_is_an_error() {
        let limits = Limits {
            max_streams: 2,
            ..Limits::default()
        };
        let (mut c, mut log, now) = start_with(limits);
        let mut wire = Vec::new();
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
        let (mut c, mut log, now) = start_with(limits);
        let mut wire = Vec::new();
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
        // (Windows below the default are raised to it.)
        let limits = Limits {
            stream_window: 10,
            ..Limits::default()
        };
        let (mut c, mut log, now) = start_with(limits);
        let mut wire = Vec::new();
        let post = post("/", &[]);
        wire.extend(headers(1, &post, flag::END_HEADERS));
        for _ in 0..4 {
            write_simple(&mut wire, kind::DATA, 0, 1, &[0; 16_384]);
        }
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
        let post = post("/", &[]);
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

    #[test]
    fn headers_again_on_a_finished_stream_is_no_new_request() {
        let (mut c, mut log, now) = start();
        let get1 = headers(1, &get("/"), flag::END_HEADERS | flag::END_STREAM);
        c.receive(&get1, now, &mut log).unwrap();
        // Again on stream 1 (half-closed): a stream error, no request.
        c.receive(&get1, now, &mut log).unwrap();
        // And once more, after our RST: ignored.
        c.receive(&get1, now, &mut log).unwrap();
        assert_eq!(log.0, ["request 1 GET / HTTP/1.1 end=true", "reset 1"]);
        // The tables stayed in step: a new request decodes.
        c.receive(
            &headers(3, &get("/next"), flag::END_HEADERS | flag::END_STREAM),
            now,
            &mut log,
        )
        .unwrap();
        assert_eq!(
            log.0.last().unwrap(),
            "request 3 GET /next HTTP/1.1 end=true"
        );
    }

    #[test]
    fn a_lower_stream_id_never_used_is_a_protocol_error_one_closed_is_stream_closed() {
        // Stream 5 first: 1 and 3 were never used (h2spec 5.1.1).
        let (mut c, mut log, now) = start();
        let get5 = headers(5, &get("/"), flag::END_HEADERS | flag::END_STREAM);
        c.receive(&get5, now, &mut log).unwrap();
        c.take_output();
        let get3 = headers(3, &get("/"), flag::END_HEADERS | flag::END_STREAM);
        assert_eq!(c.receive(&get3, now, &mut log), Err(ErrorCode::Protocol));
        assert_eq!(
            goaway_code(&c.take_output()),
            Some(ErrorCode::Protocol as u32)
        );
        // Stream 1 used and closed (answered, both ends done): STREAM_CLOSED.
        let (mut c, mut log, now) = start();
        let get1 = headers(1, &get("/"), flag::END_HEADERS | flag::END_STREAM);
        c.receive(&get1, now, &mut log).unwrap();
        c.send_headers(1, 200, &[], true);
        c.receive(
            &headers(3, &get("/"), flag::END_HEADERS | flag::END_STREAM),
            now,
            &mut log,
        )
        .unwrap();
        c.take_output();
        assert_eq!(
            c.receive(&get1, now, &mut log),
            Err(ErrorCode::StreamClosed)
        );
    }

    #[test]
    fn resets_a_client_provokes_count_as_rapid_reset() {
        // HEADERS ending the stream, then DATA on it: each makes us reset a
        // request already handed on ("MadeYouReset").
        let (mut c, mut log, now) = start();
        let mut wire = Vec::new();
        let mut id = 1;
        for _ in 0..300 {
            wire.extend(headers(id, &get("/"), flag::END_HEADERS | flag::END_STREAM));
            write_simple(&mut wire, kind::DATA, flag::END_STREAM, id, &[]);
            id += 2;
        }
        assert_eq!(
            c.receive(&wire, now, &mut log),
            Err(ErrorCode::EnhanceYourCalm)
        );
        assert!(c.counts.rapid_reset >= 1);
    }

    #[test]
    fn octets_of_reset_streams_are_given_back_to_the_connection() {
        let (mut c, mut log, now) = start();
        c.take_output();
        let mut id = 1;
        for _ in 0..40 {
            let post = post("/", &[("content-length", "1")]);
            let mut wire = headers(id, &post, flag::END_HEADERS);
            write_simple(&mut wire, kind::DATA, 0, id, &[0; 16_384]);
            c.receive(&wire, now, &mut log).unwrap();
            id += 2;
        }
        // 40 x 16 KiB passed half the connection's 1 MiB window: it was
        // reopened, though no byte reached the handler.
        let out = frames(&c.take_output());
        assert!(
            out.iter().any(|f| f.0 == kind::WINDOW_UPDATE && f.2 == 0),
            "{out:?}"
        );
    }

    #[test]
    fn a_response_before_the_whole_request_ends_the_stream_and_trailers_end_one() {
        let (mut c, mut log, now) = start();
        let post = post("/", &[]);
        let mut wire = headers(1, &post, flag::END_HEADERS);
        wire.extend(headers(
            3,
            &get("/grpc"),
            flag::END_HEADERS | flag::END_STREAM,
        ));
        c.receive(&wire, now, &mut log).unwrap();
        c.take_output();
        // Answered (413, say) while its body is still coming.
        c.send_headers(1, 413, &[], true);
        let out = frames(&c.take_output());
        assert_eq!(
            (out[1].0, out[1].3.clone()),
            (kind::RST_STREAM, vec![0, 0, 0, 0])
        );
        // What the client sent meanwhile is ignored, not an error.
        let mut late = Vec::new();
        write_simple(&mut late, kind::DATA, 0, 1, b"more");
        c.receive(&late, now, &mut log).unwrap();
        assert!(frames(&c.take_output())
            .iter()
            .all(|f| f.0 == kind::WINDOW_UPDATE));
        // A response with trailers.
        c.send_headers(3, 200, &[(b"Content-Type", b"application/grpc")], false);
        c.send_data(3, b"\0\0\0\0\0", false, now);
        c.send_trailers(3, &[(b"grpc-status", b"0")]);
        let out = frames(&c.take_output());
        let last = out.last().unwrap();
        assert_eq!(
            (last.0, last.1 & flag::END_STREAM),
            (kind::HEADERS, flag::END_STREAM)
        );
        assert_eq!(c.open_streams(), 0);
        // GOAWAY before the preface: the preface is still read.
        let mut c = Connection::new(Limits::default());
        c.go_away();
        assert!(c.receive(frame::PREFACE, now, &mut log).is_ok());
    }

    #[test]
    fn the_first_frame_is_settings_and_pings_between_sends_are_free() {
        let mut c = Connection::new(Limits::default());
        let mut log = Log::default();
        let now = Instant::now();
        let mut wire = frame::PREFACE.to_vec();
        write_simple(&mut wire, kind::PING, 0, 0, b"12345678");
        assert_eq!(c.receive(&wire, now, &mut log), Err(ErrorCode::Protocol));
        // A response streaming while the client pings after each piece:
        // 2,000 pings, none counted.
        let (mut c, mut log, now) = start();
        c.receive(
            &headers(1, &get("/"), flag::END_HEADERS | flag::END_STREAM),
            now,
            &mut log,
        )
        .unwrap();
        c.send_headers(1, 200, &[], false);
        for _ in 0..2000 {
            c.send_data(1, b"x", false, now);
            let mut ping = Vec::new();
            write_simple(&mut ping, kind::PING, 0, 0, b"bdp-ping");
            c.receive(&ping, now, &mut log).unwrap();
        }
        assert_eq!(c.counts.ping_flood, 0);
    }
}
