//! The HTTP/2 frame layer (RFC 9113 §4 and §6), sans-I/O: a frame's
//! header and payload read from the front of a buffer and checked for the
//! rules of its type (sizes, stream ids, flags), with the error each
//! breach is (of the connection or of its stream); and the frames
//! ringmux writes.

/// What a client sends first (RFC 9113 §3.4).
pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A frame header's length.
pub const HEADER_LEN: usize = 9;

/// The smallest SETTINGS_MAX_FRAME_SIZE (and its default).
pub const DEFAULT_MAX_FRAME: u32 = 16_384;

/// Frame types.
pub mod kind {
    pub const DATA: u8 = 0x0;
    pub const HEADERS: u8 = 0x1;
    pub const PRIORITY: u8 = 0x2;
    pub const RST_STREAM: u8 = 0x3;
    pub const SETTINGS: u8 = 0x4;
    pub const PUSH_PROMISE: u8 = 0x5;
    pub const PING: u8 = 0x6;
    pub const GOAWAY: u8 = 0x7;
    pub const WINDOW_UPDATE: u8 = 0x8;
    pub const CONTINUATION: u8 = 0x9;
}

/// Frame flags.
pub mod flag {
    pub const END_STREAM: u8 = 0x1;
    pub const ACK: u8 = 0x1;
    pub const END_HEADERS: u8 = 0x4;
    pub const PADDED: u8 = 0x8;
    pub const PRIORITY: u8 = 0x20;
}

/// SETTINGS identifiers.
pub mod setting {
    pub const HEADER_TABLE_SIZE: u16 = 0x1;
    pub const ENABLE_PUSH: u16 = 0x2;
    pub const MAX_CONCURRENT_STREAMS: u16 = 0x3;
    pub const INITIAL_WINDOW_SIZE: u16 = 0x4;
    pub const MAX_FRAME_SIZE: u16 = 0x5;
    pub const MAX_HEADER_LIST_SIZE: u16 = 0x6;
}

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    SettingsTimeout = 0x4,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
    Connect = 0xa,
    EnhanceYourCalm = 0xb,
    InadequateSecurity = 0xc,
    Http11Required = 0xd,
}

/// A breach of the frame rules: of the whole connection (GOAWAY) or of one
/// stream (RST_STREAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    Connection(ErrorCode),
    Stream(u32, ErrorCode),
}

/// A frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub len: u32,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Header {
    pub fn parse(b: &[u8; HEADER_LEN]) -> Header {
        Header {
            len: u32::from_be_bytes([0, b[0], b[1], b[2]]),
            kind: b[3],
            flags: b[4],
            // (The reserved bit is ignored.)
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.len.to_be_bytes()[1..]);
        out.push(self.kind);
        out.push(self.flags);
        out.extend_from_slice(&(self.stream & 0x7fff_ffff).to_be_bytes());
    }
}

/// A frame read and checked; its payload borrows the buffer, padding
/// removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame<'a> {
    Data {
        stream: u32,
        data: &'a [u8],
        end_stream: bool,
        /// Octets counted against flow control (the whole payload,
        /// padding included).
        flow_len: u32,
    },
    Headers {
        stream: u32,
        block: &'a [u8],
        end_stream: bool,
        end_headers: bool,
    },
    Priority {
        stream: u32,
    },
    RstStream {
        stream: u32,
        code: u32,
    },
    Settings {
        ack: bool,
        /// (identifier, value) pairs, six octets each.
        payload: &'a [u8],
    },
    Ping {
        ack: bool,
        data: [u8; 8],
    },
    GoAway {
        last_stream: u32,
        code: u32,
    },
    WindowUpdate {
        stream: u32,
        increment: u32,
    },
    Continuation {
        stream: u32,
        block: &'a [u8],
        end_headers: bool,
    },
    /// A type this implementation does not know: ignored (RFC 9113 §4.1).
    Unknown,
}

/// Read one frame from the front of `buf`: `Ok(None)` until it is whole,
/// then the frame and the octets it took. `max_frame` is our
/// SETTINGS_MAX_FRAME_SIZE.
pub fn read(buf: &[u8], max_frame: u32) -> Result<Option<(Frame<'_>, usize)>, FrameError> {
    let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(None);
    };
    let h = Header::parse(head);
    if h.len > max_frame {
        return Err(FrameError::Connection(ErrorCode::FrameSize));
    }
    let total = HEADER_LEN + h.len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let payload = &buf[HEADER_LEN..total];
    check(h, payload).map(|f| Some((f, total)))
}

fn conn(code: ErrorCode) -> FrameError {
    FrameError::Connection(code)
}

/// The payload without its padding (PADDED: a length octet first).
fn unpad(h: Header, payload: &[u8]) -> Result<&[u8], FrameError> {
    if h.flags & flag::PADDED == 0 {
        return Ok(payload);
    }
    // (No room for the pad length itself: a malformed frame, §6.1.)
    let (&pad, rest) = payload.split_first().ok_or(conn(ErrorCode::Protocol))?;
    if usize::from(pad) > rest.len() {
        return Err(conn(ErrorCode::Protocol));
    }
    Ok(&rest[..rest.len() - usize::from(pad)])
}

/// A frame's type rules (RFC 9113 §6).
fn check(h: Header, payload: &[u8]) -> Result<Frame<'_>, FrameError> {
    let on_stream = |ok: bool| {
        if ok {
            Ok(())
        } else {
            Err(conn(ErrorCode::Protocol))
        }
    };
    let word = |p: &[u8]| u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
    Ok(match h.kind {
        kind::DATA => {
            on_stream(h.stream != 0)?;
            Frame::Data {
                stream: h.stream,
                data: unpad(h, payload)?,
                end_stream: h.flags & flag::END_STREAM != 0,
                flow_len: h.len,
            }
        }
        kind::HEADERS => {
            on_stream(h.stream != 0)?;
            let mut block = unpad(h, payload)?;
            if h.flags & flag::PRIORITY != 0 {
                if block.len() < 5 {
                    return Err(conn(ErrorCode::FrameSize));
                }
                // Priorities are read past, not followed; a stream that
                // depends on itself is an error (§5.3.1), here of the
                // connection: its header block goes undecoded, so the
                // tables could not stay in step otherwise.
                if word(block) & 0x7fff_ffff == h.stream {
                    return Err(conn(ErrorCode::Protocol));
                }
                block = &block[5..];
            }
            Frame::Headers {
                stream: h.stream,
                block,
                end_stream: h.flags & flag::END_STREAM != 0,
                end_headers: h.flags & flag::END_HEADERS != 0,
            }
        }
        kind::PRIORITY => {
            on_stream(h.stream != 0)?;
            if payload.len() != 5 {
                return Err(FrameError::Stream(h.stream, ErrorCode::FrameSize));
            }
            if word(payload) & 0x7fff_ffff == h.stream {
                return Err(FrameError::Stream(h.stream, ErrorCode::Protocol));
            }
            Frame::Priority { stream: h.stream }
        }
        kind::RST_STREAM => {
            on_stream(h.stream != 0)?;
            if payload.len() != 4 {
                return Err(conn(ErrorCode::FrameSize));
            }
            Frame::RstStream {
                stream: h.stream,
                code: word(payload),
            }
        }
        kind::SETTINGS => {
            on_stream(h.stream == 0)?;
            let ack = h.flags & flag::ACK != 0;
            if (ack && !payload.is_empty()) || payload.len() % 6 != 0 {
                return Err(conn(ErrorCode::FrameSize));
            }
            Frame::Settings { ack, payload }
        }
        // A client never pushes.
        kind::PUSH_PROMISE => return Err(conn(ErrorCode::Protocol)),
        kind::PING => {
            on_stream(h.stream == 0)?;
            let data: [u8; 8] = payload.try_into().map_err(|_| conn(ErrorCode::FrameSize))?;
            Frame::Ping {
                ack: h.flags & flag::ACK != 0,
                data,
            }
        }
        kind::GOAWAY => {
            on_stream(h.stream == 0)?;
            if payload.len() < 8 {
                return Err(conn(ErrorCode::FrameSize));
            }
            Frame::GoAway {
                last_stream: word(payload) & 0x7fff_ffff,
                code: word(&payload[4..]),
            }
        }
        kind::WINDOW_UPDATE => {
            if payload.len() != 4 {
                return Err(conn(ErrorCode::FrameSize));
            }
            let increment = word(payload) & 0x7fff_ffff;
            if increment == 0 {
                return Err(if h.stream == 0 {
                    conn(ErrorCode::Protocol)
                } else {
                    FrameError::Stream(h.stream, ErrorCode::Protocol)
                });
            }
            Frame::WindowUpdate {
                stream: h.stream,
                increment,
            }
        }
        kind::CONTINUATION => {
            on_stream(h.stream != 0)?;
            Frame::Continuation {
                stream: h.stream,
                block: payload,
                end_headers: h.flags & flag::END_HEADERS != 0,
            }
        }
        _ => Frame::Unknown,
    })
}

/// A SETTINGS payload's pairs, each checked (§6.5.2): a value out of range
/// is the error returned; unknown identifiers are ignored by the caller.
pub fn settings(payload: &[u8]) -> impl Iterator<Item = Result<(u16, u32), ErrorCode>> + '_ {
    payload.chunks_exact(6).map(|p| {
        let id = u16::from_be_bytes([p[0], p[1]]);
        let value = u32::from_be_bytes([p[2], p[3], p[4], p[5]]);
        match id {
            setting::ENABLE_PUSH if value > 1 => Err(ErrorCode::Protocol),
            setting::INITIAL_WINDOW_SIZE if value > 0x7fff_ffff => Err(ErrorCode::FlowControl),
            setting::MAX_FRAME_SIZE if !(DEFAULT_MAX_FRAME..=0x00ff_ffff).contains(&value) => {
                Err(ErrorCode::Protocol)
            }
            _ => Ok((id, value)),
        }
    })
}

// What ringmux writes.

/// A SETTINGS frame with `pairs`.
pub fn write_settings(out: &mut Vec<u8>, pairs: &[(u16, u32)]) {
    Header {
        len: (pairs.len() * 6) as u32,
        kind: kind::SETTINGS,
        flags: 0,
        stream: 0,
    }
    .write(out);
    for (id, value) in pairs {
        out.extend_from_slice(&id.to_be_bytes());
        out.extend_from_slice(&value.to_be_bytes());
    }
}

/// A frame with no payload but its flags (a SETTINGS ACK) or a fixed one.
pub fn write_simple(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: &[u8]) {
    Header {
        len: payload.len() as u32,
        kind,
        flags,
        stream,
    }
    .write(out);
    out.extend_from_slice(payload);
}

/// GOAWAY with the last stream processed and why.
pub fn write_goaway(out: &mut Vec<u8>, last_stream: u32, code: ErrorCode) {
    let mut p = [0u8; 8];
    p[..4].copy_from_slice(&last_stream.to_be_bytes());
    p[4..].copy_from_slice(&(code as u32).to_be_bytes());
    write_simple(out, kind::GOAWAY, 0, 0, &p);
}

/// RST_STREAM.
pub fn write_rst(out: &mut Vec<u8>, stream: u32, code: ErrorCode) {
    write_simple(
        out,
        kind::RST_STREAM,
        0,
        stream,
        &(code as u32).to_be_bytes(),
    );
}

/// WINDOW_UPDATE.
pub fn write_window_update(out: &mut Vec<u8>, stream: u32, increment: u32) {
    write_simple(
        out,
        kind::WINDOW_UPDATE,
        0,
        stream,
        &increment.to_be_bytes(),
    );
}

/// A header block as HEADERS and as many CONTINUATION frames as
/// `max_frame` (the peer's SETTINGS_MAX_FRAME_SIZE) needs.
pub fn write_headers(
    out: &mut Vec<u8>,
    stream: u32,
    block: &[u8],
    end_stream: bool,
    max_frame: u32,
) {
    let max = max_frame as usize;
    let mut chunks = block.chunks(max.max(1)).peekable();
    let mut first = true;
    if block.is_empty() {
        let flags = flag::END_HEADERS | if end_stream { flag::END_STREAM } else { 0 };
        write_simple(out, kind::HEADERS, flags, stream, &[]);
        return;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        let mut flags = if last { flag::END_HEADERS } else { 0 };
        if first && end_stream {
            flags |= flag::END_STREAM;
        }
        let kind = if first {
            kind::HEADERS
        } else {
            kind::CONTINUATION
        };
        write_simple(out, kind, flags, stream, chunk);
        first = false;
    }
}

/// As much of `data` as `room` allows, as DATA frames of at most
/// `max_frame` octets; `end` sets END_STREAM on the last one if all of
/// `data` went (an empty DATA frame only to end the stream). Returns how
/// much went.
pub fn write_data(
    out: &mut Vec<u8>,
    stream: u32,
    data: &[u8],
    room: usize,
    end: bool,
    max_frame: u32,
) -> usize {
    let n = data.len().min(room);
    let mut sent = 0;
    if n > 0 || (end && data.is_empty()) {
        loop {
            let len = (n - sent).min(max_frame as usize);
            let last = sent + len == data.len();
            write_data_header(out, stream, len, end && last);
            out.extend_from_slice(&data[sent..sent + len]);
            sent += len;
            if sent >= n {
                break;
            }
        }
    }
    sent
}

/// A DATA frame's header (its payload, `len` octets, follows).
pub fn write_data_header(out: &mut Vec<u8>, stream: u32, len: usize, end_stream: bool) {
    Header {
        len: len as u32,
        kind: kind::DATA,
        flags: if end_stream { flag::END_STREAM } else { 0 },
        stream,
    }
    .write(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_simple(&mut out, kind, flags, stream, payload);
        out
    }

    #[test]
    fn a_frame_is_read_once_whole() {
        let f = frame(kind::PING, 0, 0, b"12345678");
        for cut in 0..f.len() {
            assert_eq!(read(&f[..cut], DEFAULT_MAX_FRAME), Ok(None), "cut at {cut}");
        }
        assert_eq!(
            read(&f, DEFAULT_MAX_FRAME),
            Ok(Some((
                Frame::Ping {
                    ack: false,
                    data: *b"12345678"
                },
                17
            )))
        );
    }

    #[test]
    fn padding_and_priority_are_taken_off() {
        // PADDED + PRIORITY HEADERS: pad length 2, dependency, weight.
        let mut p = vec![2, 0, 0, 0, 3, 16];
        p.extend_from_slice(b"block");
        p.extend_from_slice(&[0, 0]);
        let f = frame(
            kind::HEADERS,
            flag::PADDED | flag::PRIORITY | flag::END_HEADERS,
            1,
            &p,
        );
        match read(&f, DEFAULT_MAX_FRAME).unwrap().unwrap().0 {
            Frame::Headers {
                block, end_headers, ..
            } => {
                assert_eq!(block, b"block");
                assert!(end_headers);
            }
            other => panic!("{other:?}"),
        }
        // Padding longer than the payload.
        let f = frame(kind::DATA, flag::PADDED, 1, &[9, 1, 2]);
        assert_eq!(
            read(&f, DEFAULT_MAX_FRAME),
            Err(FrameError::Connection(ErrorCode::Protocol))
        );
    }

    #[test]
    fn each_type_s_rules() {
        let err = |f: Vec<u8>| read(&f, DEFAULT_MAX_FRAME).err();
        use ErrorCode::*;
        use FrameError::{Connection as C, Stream as S};
        assert_eq!(err(frame(kind::DATA, 0, 0, b"x")), Some(C(Protocol)));
        assert_eq!(err(frame(kind::SETTINGS, 0, 1, &[])), Some(C(Protocol)));
        assert_eq!(
            err(frame(kind::SETTINGS, flag::ACK, 0, &[0; 6])),
            Some(C(FrameSize))
        );
        assert_eq!(
            err(frame(kind::SETTINGS, 0, 0, &[0; 5])),
            Some(C(FrameSize))
        );
        assert_eq!(err(frame(kind::PING, 0, 0, &[0; 7])), Some(C(FrameSize)));
        assert_eq!(err(frame(kind::PING, 0, 3, &[0; 8])), Some(C(Protocol)));
        assert_eq!(
            err(frame(kind::RST_STREAM, 0, 1, &[0; 3])),
            Some(C(FrameSize))
        );
        assert_eq!(
            err(frame(kind::PRIORITY, 0, 1, &[0; 4])),
            Some(S(1, FrameSize))
        );
        assert_eq!(
            err(frame(kind::PRIORITY, 0, 3, &[0, 0, 0, 3, 0])),
            Some(S(3, Protocol))
        );
        assert_eq!(
            err(frame(kind::WINDOW_UPDATE, 0, 0, &[0; 4])),
            Some(C(Protocol))
        );
        assert_eq!(
            err(frame(kind::WINDOW_UPDATE, 0, 5, &[0; 4])),
            Some(S(5, Protocol))
        );
        assert_eq!(
            err(frame(kind::PUSH_PROMISE, 0, 1, &[0; 4])),
            Some(C(Protocol))
        );
        assert_eq!(
            err(frame(kind::CONTINUATION, 0, 0, b"x")),
            Some(C(Protocol))
        );
        assert_eq!(err(frame(kind::GOAWAY, 0, 0, &[0; 7])), Some(C(FrameSize)));
        // Larger than our SETTINGS_MAX_FRAME_SIZE.
        let big = frame(kind::DATA, 0, 1, &vec![0; 16_385]);
        assert_eq!(err(big), Some(C(FrameSize)));
        // An unknown type is read past.
        let f = frame(0xfa, 0xff, 7, b"whatever");
        assert_eq!(read(&f, DEFAULT_MAX_FRAME), Ok(Some((Frame::Unknown, 17))));
    }

    #[test]
    fn settings_values_are_checked() {
        let mut p = Vec::new();
        for (id, v) in [
            (1u16, 4096u32),
            (2, 2),
            (4, 0x8000_0000),
            (5, 100),
            (0x99, 7),
        ] {
            p.extend_from_slice(&id.to_be_bytes());
            p.extend_from_slice(&v.to_be_bytes());
        }
        let got: Vec<_> = settings(&p).collect();
        assert_eq!(
            got,
            [
                Ok((1, 4096)),
                Err(ErrorCode::Protocol),
                Err(ErrorCode::FlowControl),
                Err(ErrorCode::Protocol),
                Ok((0x99, 7)),
            ]
        );
    }

    #[test]
    fn a_large_header_block_is_split_into_continuations() {
        let block = vec![7u8; 40_000];
        let mut out = Vec::new();
        write_headers(&mut out, 3, &block, true, DEFAULT_MAX_FRAME);
        let mut at = 0;
        let mut joined = Vec::new();
        let mut kinds = Vec::new();
        while at < out.len() {
            let (f, n) = read(&out[at..], DEFAULT_MAX_FRAME).unwrap().unwrap();
            match f {
                Frame::Headers {
                    block,
                    end_stream,
                    end_headers,
                    ..
                } => {
                    assert!(end_stream && !end_headers);
                    kinds.push("H");
                    joined.extend_from_slice(block);
                }
                Frame::Continuation {
                    block, end_headers, ..
                } => {
                    kinds.push(if end_headers { "C." } else { "C" });
                    joined.extend_from_slice(block);
                }
                other => panic!("{other:?}"),
            }
            at += n;
        }
        assert_eq!(kinds, ["H", "C", "C."]);
        assert_eq!(joined, block);
    }
}
