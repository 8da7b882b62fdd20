//! Streaming body framing: finds where a message body ends and validates
//! chunked encoding byte by byte, so the proxy can forward body bytes verbatim
//! (or de-chunk them) without ever buffering a body.
//!
//! It never does I/O, never reads clocks and never buffers input: all state
//! between calls is a handful of counters, so the input may be split at any
//! byte boundary. It never decides what to do about a bad body (close, 502,
//! ...); it only reports the fault.

use std::fmt;

use super::{is_tchar, Framing};

/// Longest chunk-size line (size + extensions, without CRLF) we accept.
/// Extensions are legal but nobody needs kilobytes of them; the bound keeps a
/// peer from streaming an endless "line".
const MAX_CHUNK_LINE: usize = 4 * 1024;
/// Longest single trailer field line (without CRLF).
const MAX_TRAILER_LINE: usize = 8 * 1024;
/// Total bytes of the trailer section, including line endings.
const MAX_TRAILER_BYTES: usize = 64 * 1024;

/// Result of one [`BodyDecoder::feed`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyProgress {
    /// How many bytes from the front of the input belong to the body.
    pub consumed: usize,
    /// The body ended within those bytes (or had already ended).
    pub done: bool,
}

/// A body whose framing is broken; the connection it came from cannot be
/// reused and the message must be aborted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// A chunk-size that is empty or not hexadecimal.
    BadChunkSize,
    /// A chunk-size line or chunk data not terminated by exactly CRLF, a
    /// malformed extension, or an over-long size line.
    BadChunkLine,
    /// A chunk-size that does not fit in 64 bits.
    ChunkTooLarge,
    /// A malformed trailer field line.
    BadTrailer,
    /// A trailer line or the trailer section exceeded its bound.
    TrailerTooLarge,
}

impl BodyError {
    /// A one-line reason, for error responses.
    pub fn reason(self) -> &'static str {
        match self {
            BodyError::BadChunkSize => "invalid chunk size",
            BodyError::BadChunkLine => "malformed chunk line or missing CRLF after chunk data",
            BodyError::ChunkTooLarge => "chunk size does not fit in 64 bits",
            BodyError::BadTrailer => "malformed trailer field",
            BodyError::TrailerTooLarge => "trailer section too large",
        }
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for BodyError {}

/// Where the chunked parser is (RFC 9112 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChunkState {
    /// Reading the hex chunk-size.
    Size {
        /// Value of the digits so far.
        value: u64,
        /// How many hex digits have been read.
        digits: usize,
    },
    /// After the size: BWS and chunk extensions until CR.
    Extension {
        /// Size of the chunk being introduced.
        size: u64,
        /// Bytes of the size line so far (bounded by `MAX_CHUNK_LINE`).
        line_len: usize,
        /// Whether a `;` has been seen; before it only whitespace may appear.
        in_extension: bool,
    },
    /// Saw CR ending the size line; need LF.
    SizeLf {
        /// Size of the chunk being introduced.
        size: u64,
    },
    /// Inside chunk data.
    Data {
        /// Data bytes left in this chunk.
        remaining: u64,
    },
    /// Chunk data ended; need CR.
    DataCr,
    /// Need LF after the CR following chunk data.
    DataLf,
    /// At the start of a trailer line (or the final empty line).
    TrailerLineStart {
        /// Trailer bytes seen so far.
        total: usize,
    },
    /// Inside a trailer field name.
    TrailerName {
        /// Bytes of this line so far.
        line_len: usize,
        /// Trailer bytes seen so far.
        total: usize,
    },
    /// Inside a trailer field value.
    TrailerValue {
        /// Bytes of this line so far.
        line_len: usize,
        /// Trailer bytes seen so far.
        total: usize,
    },
    /// Saw CR ending a trailer field line; need LF.
    TrailerLf {
        /// Trailer bytes seen so far.
        total: usize,
    },
    /// Saw CR of the final empty line; need LF.
    FinalLf,
    /// A framing error happened; every later call reports it again.
    Failed {
        /// The error first reported.
        error: BodyError,
    },
}

/// Tracks one message body as its bytes stream past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyDecoder {
    /// `Content-Length` body.
    Length {
        /// Body bytes not yet seen.
        remaining: u64,
    },
    /// Chunked body.
    Chunked {
        /// Parser position.
        state: ChunkState,
    },
    /// Body delimited by connection close: everything is body.
    Close,
    /// The body is complete; further input belongs to the next message.
    Done,
}

impl BodyDecoder {
    /// A decoder for a body framed as `framing`. `Framing::None` and
    /// `Framing::Length(0)` start out done.
    pub fn new(framing: Framing) -> Self {
        match framing {
            Framing::None | Framing::Length(0) => BodyDecoder::Done,
            Framing::Length(n) => BodyDecoder::Length { remaining: n },
            Framing::Chunked => BodyDecoder::Chunked {
                state: ChunkState::Size {
                    value: 0,
                    digits: 0,
                },
            },
            Framing::CloseDelimited => BodyDecoder::Close,
        }
    }

    /// Has the whole body been seen?
    pub fn is_done(&self) -> bool {
        matches!(self, BodyDecoder::Done)
    }

    /// Consume body bytes from the front of `input`, validating framing.
    ///
    /// Returns how many bytes of `input` belong to the body (the caller
    /// forwards exactly `input[..consumed]` verbatim) and whether the body
    /// ended. Bytes after `consumed` belong to the next message. For Chunked,
    /// each chunk's DATA bytes (not the size lines/CRLFs/trailers) are also
    /// passed to `data` so a caller can de-chunk; callers that forward
    /// verbatim pass `&mut |_| {}`.
    ///
    /// On `Err`, `data` may already have received data bytes from this
    /// `input`; the message is broken and the connection must not be reused.
    /// A close-delimited body is never done: the caller ends it on EOF.
    pub fn feed(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
    ) -> Result<BodyProgress, BodyError> {
        match self {
            BodyDecoder::Done => Ok(BodyProgress {
                consumed: 0,
                done: true,
            }),
            BodyDecoder::Close => Ok(BodyProgress {
                consumed: input.len(),
                done: false,
            }),
            BodyDecoder::Length { remaining } => {
                let take = clamp(*remaining, input.len());
                *remaining -= take as u64;
                let done = *remaining == 0;
                if done {
                    *self = BodyDecoder::Done;
                }
                Ok(BodyProgress {
                    consumed: take,
                    done,
                })
            }
            BodyDecoder::Chunked { state } => {
                let result = feed_chunked(state, input, data, None);
                match result {
                    Ok(p) if p.done => *self = BodyDecoder::Done,
                    Ok(_) => {}
                    Err(error) => *state = ChunkState::Failed { error },
                }
                result
            }
        }
    }
}

/// Append `data` to `out` as one chunk of a chunked body (nothing for no
/// data: an empty chunk would end the body).
pub fn write_chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    let len = data.len();
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4);
    for i in (0..digits).rev() {
        out.push(b"0123456789abcdef"[(len >> (4 * i)) & 0xf]);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

impl BodyDecoder {
    /// [`BodyDecoder::feed`], and the trailer section's lines of a chunked
    /// body (`name: value` CRLF each, as they came) appended to
    /// `trailers`.
    pub fn feed_keeping_trailers(
        &mut self,
        input: &[u8],
        data: &mut dyn FnMut(&[u8]),
        trailers: &mut Vec<u8>,
    ) -> Result<BodyProgress, BodyError> {
        let BodyDecoder::Chunked { state } = self else {
            return self.feed(input, data);
        };
        let result = feed_chunked(state, input, data, Some(trailers));
        match result {
            Ok(p) if p.done => *self = BodyDecoder::Done,
            Ok(_) => {}
            Err(error) => *state = ChunkState::Failed { error },
        }
        result
    }
}

/// `min(remaining, avail)` without a lossy cast.
fn clamp(remaining: u64, avail: usize) -> usize {
    usize::try_from(remaining).map_or(avail, |r| r.min(avail))
}

/// Bytes allowed inside a chunk extension or trailer value: HTAB, SP, VCHAR
/// and obs-text. Everything else (NUL, other controls, a lone CR) is refused
/// because peers disagree about it.
fn is_field_byte(b: u8) -> bool {
    b == b'\t' || b == b' ' || (0x21..=0x7e).contains(&b) || b >= 0x80
}

fn hex_value(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

/// Run the chunked state machine over `input`. Bytes are handled one at a
/// time except chunk data, which is passed through in bulk.
fn feed_chunked(
    state: &mut ChunkState,
    input: &[u8],
    data: &mut dyn FnMut(&[u8]),
    mut trailers: Option<&mut Vec<u8>>,
) -> Result<BodyProgress, BodyError> {
    if let ChunkState::Failed { error } = *state {
        return Err(error);
    }
    let mut i = 0;
    while i < input.len() {
        if let ChunkState::Data { remaining } = state {
            let take = clamp(*remaining, input.len() - i);
            data(&input[i..i + take]);
            *remaining -= take as u64;
            i += take;
            if *remaining == 0 {
                *state = ChunkState::DataCr;
            }
            continue;
        }
        let b = input[i];
        i += 1;
        let in_trailer_line = matches!(
            state,
            ChunkState::TrailerName { .. }
                | ChunkState::TrailerValue { .. }
                | ChunkState::TrailerLf { .. }
        ) || matches!(state, ChunkState::TrailerLineStart { .. } if b != b'\r');
        if let (true, Some(t)) = (in_trailer_line, trailers.as_deref_mut()) {
            t.push(b);
        }
        match step(*state, b)? {
            Some(next) => *state = next,
            None => {
                return Ok(BodyProgress {
                    consumed: i,
                    done: true,
                });
            }
        }
    }
    Ok(BodyProgress {
        consumed: i,
        done: false,
    })
}

/// One byte of every state except `Data`. `Ok(None)` means the body ended
/// with this byte.
fn step(state: ChunkState, b: u8) -> Result<Option<ChunkState>, BodyError> {
    use ChunkState as S;
    let next = match state {
        S::Size { value, digits } => match (hex_value(b), b) {
            (Some(v), _) => {
                // Checked arithmetic rather than a digit count: leading zeros
                // are legal, and the line-length bound still applies.
                let value = value
                    .checked_mul(16)
                    .and_then(|x| x.checked_add(v))
                    .ok_or(BodyError::ChunkTooLarge)?;
                if digits + 1 > MAX_CHUNK_LINE {
                    return Err(BodyError::BadChunkLine);
                }
                S::Size {
                    value,
                    digits: digits + 1,
                }
            }
            // A bare LF is a line-ending fault, whatever came before it.
            (None, b'\n') => return Err(BodyError::BadChunkLine),
            (None, _) if digits == 0 => return Err(BodyError::BadChunkSize),
            (None, b'\r') => S::SizeLf { size: value },
            (None, b';') => S::Extension {
                size: value,
                line_len: digits + 1,
                in_extension: true,
            },
            // RFC 9112 §7.1.1 allows BWS before the `;`.
            (None, b' ' | b'\t') => S::Extension {
                size: value,
                line_len: digits + 1,
                in_extension: false,
            },
            (None, _) => return Err(BodyError::BadChunkSize),
        },
        S::Extension {
            size,
            line_len,
            in_extension,
        } => {
            if line_len + 1 > MAX_CHUNK_LINE {
                return Err(BodyError::BadChunkLine);
            }
            let line_len = line_len + 1;
            match b {
                // Whitespace then CR with no `;` is not in the grammar; we
                // refuse it rather than guess what the next hop does.
                b'\r' if in_extension => S::SizeLf { size },
                b';' => S::Extension {
                    size,
                    line_len,
                    in_extension: true,
                },
                b' ' | b'\t' => S::Extension {
                    size,
                    line_len,
                    in_extension,
                },
                // The extension content (names, `=`, tokens, quoted strings)
                // is passed on verbatim and never interpreted, so we only make
                // sure it cannot hide a line break or a control byte.
                _ if in_extension && is_field_byte(b) => S::Extension {
                    size,
                    line_len,
                    in_extension,
                },
                _ => return Err(BodyError::BadChunkLine),
            }
        }
        S::SizeLf { size } => match b {
            b'\n' if size == 0 => S::TrailerLineStart { total: 0 },
            b'\n' => S::Data { remaining: size },
            _ => return Err(BodyError::BadChunkLine),
        },
        S::Data { .. } => unreachable!("Data is handled in bulk by feed_chunked"),
        S::DataCr => match b {
            b'\r' => S::DataLf,
            _ => return Err(BodyError::BadChunkLine),
        },
        S::DataLf => match b {
            b'\n' => S::Size {
                value: 0,
                digits: 0,
            },
            _ => return Err(BodyError::BadChunkLine),
        },
        S::TrailerLineStart { total } => {
            let total = bump_total(total)?;
            match b {
                b'\r' => S::FinalLf,
                _ if is_tchar(b) => S::TrailerName { line_len: 1, total },
                // Includes SP/HT: obs-fold is as unwelcome here as in heads.
                _ => return Err(BodyError::BadTrailer),
            }
        }
        S::TrailerName { line_len, total } => {
            let (line_len, total) = bump_line(line_len, total)?;
            match b {
                b':' => S::TrailerValue { line_len, total },
                _ if is_tchar(b) => S::TrailerName { line_len, total },
                _ => return Err(BodyError::BadTrailer),
            }
        }
        S::TrailerValue { line_len, total } => {
            let (line_len, total) = bump_line(line_len, total)?;
            match b {
                b'\r' => S::TrailerLf { total },
                _ if is_field_byte(b) => S::TrailerValue { line_len, total },
                _ => return Err(BodyError::BadTrailer),
            }
        }
        S::TrailerLf { total } => match b {
            b'\n' => S::TrailerLineStart {
                total: bump_total(total)?,
            },
            _ => return Err(BodyError::BadTrailer),
        },
        S::FinalLf => match b {
            b'\n' => return Ok(None),
            _ => return Err(BodyError::BadTrailer),
        },
        S::Failed { error } => return Err(error),
    };
    Ok(Some(next))
}

/// Count one more trailer byte against the section bound.
fn bump_total(total: usize) -> Result<usize, BodyError> {
    if total + 1 > MAX_TRAILER_BYTES {
        return Err(BodyError::TrailerTooLarge);
    }
    Ok(total + 1)
}

/// Count one more byte against both the line and the section bound.
fn bump_line(line_len: usize, total: usize) -> Result<(usize, usize), BodyError> {
    if line_len + 1 > MAX_TRAILER_LINE {
        return Err(BodyError::TrailerTooLarge);
    }
    Ok((line_len + 1, bump_total(total)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    type Outcome = Result<(usize, bool, Vec<u8>), BodyError>;

    #[test]
    fn trailer_lines_are_kept_whatever_the_pieces() {
        let body = b"3\r\nabc\r\n0;ext\r\nX-A: 1\r\nx-b:  two words\r\n\r\n";
        for cut in 0..body.len() {
            let mut dec = BodyDecoder::new(Framing::Chunked);
            let (mut data, mut trailers) = (Vec::new(), Vec::new());
            let mut done = false;
            for piece in [&body[..cut], &body[cut..]] {
                let p = dec
                    .feed_keeping_trailers(piece, &mut |d| data.extend_from_slice(d), &mut trailers)
                    .unwrap();
                done = p.done;
            }
            assert!(done);
            assert_eq!(data, b"abc");
            assert_eq!(trailers, b"X-A: 1\r\nx-b:  two words\r\n", "cut at {cut}");
        }
        // None: nothing kept.
        let mut trailers = Vec::new();
        let mut dec = BodyDecoder::new(Framing::Chunked);
        dec.feed_keeping_trailers(b"0\r\n\r\n", &mut |_| {}, &mut trailers)
            .unwrap();
        assert!(trailers.is_empty() && dec.is_done());
    }

    #[test]
    fn chunks_written_decode_to_what_went_in() {
        let mut out = Vec::new();
        for len in [1usize, 15, 16, 255, 4096, 70_000] {
            write_chunk(&mut out, &vec![b'a'; len]);
        }
        write_chunk(&mut out, b"");
        assert!(out.starts_with(b"1\r\na\r\nf\r\n"));
        out.extend_from_slice(b"0\r\n\r\n");
        let (consumed, done, data) = run(Framing::Chunked, &[&out]).unwrap();
        assert!(done && consumed == out.len());
        assert_eq!(data.len(), 1 + 15 + 16 + 255 + 4096 + 70_000);
    }

    /// Feed `pieces` in order, as a caller would, stopping at done/error.
    fn run(framing: Framing, pieces: &[&[u8]]) -> Outcome {
        let mut dec = BodyDecoder::new(framing);
        let mut consumed = 0;
        let mut data = Vec::new();
        for piece in pieces {
            let p = dec.feed(piece, &mut |d| data.extend_from_slice(d))?;
            consumed += p.consumed;
            if p.done {
                assert!(dec.is_done());
                return Ok((consumed, true, data));
            }
            // A body that is not done must have used every byte offered.
            assert_eq!(p.consumed, piece.len());
        }
        Ok((consumed, dec.is_done(), data))
    }

    /// The whole input at once, then split in two at every offset, then one
    /// byte at a time: all must agree.
    fn check(name: &str, framing: Framing, input: &[u8]) -> Outcome {
        let whole = run(framing, &[input]);
        for i in 0..=input.len() {
            let split = run(framing, &[&input[..i], &input[i..]]);
            assert_eq!(split, whole, "{name}: split at {i}");
        }
        let bytes: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(run(framing, &bytes), whole, "{name}: byte at a time");
        whole
    }

    #[test]
    fn table() {
        use BodyError::*;
        use Framing::{Chunked, CloseDelimited, Length};
        let ok = |consumed: usize, done: bool, data: &str| -> Outcome {
            Ok((consumed, done, data.as_bytes().to_vec()))
        };
        let cases: Vec<(&str, Framing, &[u8], Outcome)> = vec![
            ("none", Framing::None, b"abc", ok(0, true, "")),
            ("length exact", Length(5), b"hello", ok(5, true, "")),
            ("length then next", Length(3), b"abcGET", ok(3, true, "")),
            ("length partial", Length(10), b"abc", ok(3, false, "")),
            ("length zero", Length(0), b"abc", ok(0, true, "")),
            ("close", CloseDelimited, b"abc\r\n", ok(5, false, "")),
            (
                "chunked simple",
                Chunked,
                b"5\r\nhello\r\n0\r\n\r\n",
                ok(15, true, "hello"),
            ),
            (
                "chunked multi then next",
                Chunked,
                b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\nGET",
                ok(20, true, "abcde"),
            ),
            (
                "hex both cases",
                Chunked,
                b"A\r\n0123456789\r\nb\r\n0123456789a\r\n0\r\n\r\n",
                ok(36, true, "01234567890123456789a"),
            ),
            (
                "leading zeros",
                Chunked,
                b"0005\r\nhello\r\n0\r\n\r\n",
                ok(18, true, "hello"),
            ),
            (
                "extensions",
                Chunked,
                b"5;name=value;flag\r\nhello\r\n0;x=\"q;s\"\r\n\r\n",
                ok(39, true, "hello"),
            ),
            (
                "bws before ext",
                Chunked,
                b"5 \t;a\r\nhello\r\n0\r\n\r\n",
                ok(19, true, "hello"),
            ),
            (
                "trailers",
                Chunked,
                b"2\r\nhi\r\n0\r\nX-T: 1\r\nY:\r\n\r\nnext",
                ok(24, true, "hi"),
            ),
            ("incomplete", Chunked, b"5\r\nhel", ok(6, false, "hel")),
            (
                "max size",
                Chunked,
                b"ffffffffffffffff\r\nab",
                ok(20, false, "ab"),
            ),
            ("size zz", Chunked, b"zz\r\n", Err(BadChunkSize)),
            ("size -1", Chunked, b"-1\r\n", Err(BadChunkSize)),
            ("size empty", Chunked, b"\r\n", Err(BadChunkSize)),
            ("size 0x", Chunked, b"0x5\r\n", Err(BadChunkSize)),
            (
                "size overflow",
                Chunked,
                b"10000000000000000\r\n",
                Err(ChunkTooLarge),
            ),
            ("size bare lf", Chunked, b"5\nhello", Err(BadChunkLine)),
            ("size cr cr", Chunked, b"5\r\rhello", Err(BadChunkLine)),
            (
                "size trailing ws",
                Chunked,
                b"5 \r\nhello",
                Err(BadChunkLine),
            ),
            (
                "ext control byte",
                Chunked,
                b"5;a\x00\r\nhello",
                Err(BadChunkLine),
            ),
            ("ext bare lf", Chunked, b"5;a\nhello", Err(BadChunkLine)),
            (
                "no crlf after data",
                Chunked,
                b"5\r\nhelloX\r\n0\r\n\r\n",
                Err(BadChunkLine),
            ),
            (
                "cr then junk after data",
                Chunked,
                b"5\r\nhello\rX",
                Err(BadChunkLine),
            ),
            (
                "bare lf after data",
                Chunked,
                b"5\r\nhello\n0\r\n\r\n",
                Err(BadChunkLine),
            ),
            (
                "trailer obs-fold",
                Chunked,
                b"0\r\n X: 1\r\n\r\n",
                Err(BadTrailer),
            ),
            (
                "trailer no colon",
                Chunked,
                b"0\r\nX 1\r\n\r\n",
                Err(BadTrailer),
            ),
            (
                "trailer bare lf",
                Chunked,
                b"0\r\nX: 1\n\r\n",
                Err(BadTrailer),
            ),
            ("final bare lf", Chunked, b"0\r\n\n", Err(BadTrailer)),
            ("final cr junk", Chunked, b"0\r\n\rX", Err(BadTrailer)),
        ];
        for (name, framing, input, want) in cases {
            assert_eq!(check(name, framing, input), want, "{name}");
        }
    }

    #[test]
    fn decoded_data_callback() {
        let input = b"4;ext\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\n";
        let mut dec = BodyDecoder::new(Framing::Chunked);
        let mut calls = Vec::new();
        let p = dec
            .feed(input, &mut |d| calls.push(d.to_vec()))
            .expect("valid body");
        assert_eq!(
            p,
            BodyProgress {
                consumed: input.len(),
                done: true
            }
        );
        let joined: Vec<u8> = calls.concat();
        assert_eq!(joined, b"Wikipedia in\r\n\r\nchunks.");
        // Data reaches the callback chunk by chunk, without framing bytes.
        assert_eq!(
            calls,
            vec![
                b"Wiki".to_vec(),
                b"pedia".to_vec(),
                b" in\r\n\r\nchunks.".to_vec()
            ]
        );
        assert!(dec.is_done());
        // Once done, nothing more is consumed.
        let p = dec
            .feed(b"more", &mut |_| panic!("no data after done"))
            .unwrap();
        assert_eq!(
            p,
            BodyProgress {
                consumed: 0,
                done: true
            }
        );
    }

    #[test]
    fn errors_are_sticky() {
        let mut dec = BodyDecoder::new(Framing::Chunked);
        assert_eq!(dec.feed(b"zz", &mut |_| {}), Err(BodyError::BadChunkSize));
        assert_eq!(
            dec.feed(b"5\r\n", &mut |_| {}),
            Err(BodyError::BadChunkSize)
        );
    }

    #[test]
    fn bounded_lines() {
        let mut long_ext = b"5;".to_vec();
        long_ext.resize(MAX_CHUNK_LINE + 10, b'a');
        assert_eq!(
            run(Framing::Chunked, &[&long_ext]),
            Err(BodyError::BadChunkLine)
        );

        let mut long_trailer = b"0\r\nX: ".to_vec();
        long_trailer.resize(MAX_TRAILER_LINE + 10, b'a');
        assert_eq!(
            run(Framing::Chunked, &[&long_trailer]),
            Err(BodyError::TrailerTooLarge)
        );

        let mut many = b"0\r\n".to_vec();
        while many.len() < MAX_TRAILER_BYTES + 100 {
            many.extend_from_slice(b"X-Trailer: some value here\r\n");
        }
        assert_eq!(
            run(Framing::Chunked, &[&many]),
            Err(BodyError::TrailerTooLarge)
        );
    }

    #[test]
    fn display_is_one_line() {
        use BodyError::*;
        for e in [
            BadChunkSize,
            BadChunkLine,
            ChunkTooLarge,
            BadTrailer,
            TrailerTooLarge,
        ] {
            let s = e.to_string();
            assert!(!s.is_empty() && !s.contains('\r') && !s.contains('\n'));
        }
    }
}
