//! Sans-I/O HTTP/1.1 codec for ringmux.
//!
//! This module owns the wire-level rules of HTTP/1.1 as the proxy applies
//! them: parsing and validating request and response heads, deciding how each
//! message body is delimited (RFC 9112 §6), rewriting heads for forwarding
//! (hop-by-hop removal, `X-Forwarded-For`, `Forwarded`) and validating bodies
//! while they stream through.
//!
//! It must never do I/O, never read clocks, never spawn or block, and never
//! hold on to caller buffers: every function takes the bytes it is given,
//! reports how many it used, and appends whatever should be sent to a
//! caller-owned `Vec<u8>`. Timeouts, buffering and sockets belong to the
//! caller.

pub mod body;
pub mod date;
/// Entry points shared by the cargo-fuzz targets and the corpus replay test
/// (built for tests and with the `fuzzing` feature only).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod headers;
pub mod proxy_protocol;
pub mod request;
pub mod response;

pub use body::{write_chunk, BodyDecoder, BodyError, BodyProgress};

/// The reason phrase ringmux writes with `status` (in the answers it makes
/// itself, and for an origin that spoke HTTP/2, which has none): RFC
/// 9110's, or the name of the status's class.
pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        421 => "Misdirected Request",
        422 => "Unprocessable Content",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => match status / 100 {
            1 => "Informational",
            2 => "Success",
            3 => "Redirection",
            4 => "Client Error",
            _ => "Server Error",
        },
    }
}

/// The hash [`RequestHead::path_hash`] carries, of a path without query.
pub fn path_hash(path: &[u8]) -> u64 {
    headers::fnv1a(path)
}

/// A 64-bit finaliser (splitmix64): spreads FNV's clustered outputs.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
pub use request::{parse_request, ForwardCtx, Method, RequestHead};
pub use response::{parse_response, ResponseCtx, ResponseHead};

/// RFC 9110 `tchar` (the bytes of a token: field names, methods), by a
/// table: a field name is checked byte by byte on every request.
pub fn is_tchar(b: u8) -> bool {
    TCHAR[usize::from(b)]
}

const TCHAR: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    t
};

/// How a message body is delimited on the wire (RFC 9112 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body at all (or a body the recipient must not read, e.g. a
    /// response to HEAD).
    None,
    /// Exactly this many body bytes follow the head (`Content-Length`).
    Length(u64),
    /// A chunked body follows (`Transfer-Encoding: chunked`).
    Chunked,
    /// The body runs until the sender closes the connection (responses only).
    CloseDelimited,
}

/// A head that cannot be forwarded.
///
/// `status` is what the client gets (400, 413, 431, 501, 505; 502 for bad
/// responses), `reason` a one-line, human-readable reason (no CR/LF) used as
/// the body of the error response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadError {
    /// Status code of the error response the proxy sends to the client.
    pub status: u16,
    /// One-line reason, safe to put in a response body (no CR/LF).
    pub reason: &'static str,
}

/// A head larger than this is refused: 431 for requests (the default of
/// `--max-head-size`), 502 for responses.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// More header fields than this are refused: 431 for requests (the default
/// of `--max-headers`), 502 for responses.
pub const MAX_HEADERS: usize = 100;

/// The most a request head may be configured to hold.
pub const HEAD_BYTES_CEILING: usize = 1 << 20;

/// The most header fields a request may be configured to carry.
pub const FIELDS_CEILING: usize = 512;

/// How large a request head may be, in bytes and in header fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// Bytes, request line and final CRLF included (at most
    /// [`HEAD_BYTES_CEILING`]).
    pub bytes: usize,
    /// Header fields (at most [`FIELDS_CEILING`]).
    pub fields: usize,
}

impl HeadLimits {
    /// 64 KiB and 100 fields.
    pub const DEFAULT: HeadLimits = HeadLimits {
        bytes: MAX_HEAD_BYTES,
        fields: MAX_HEADERS,
    };
}

impl Default for HeadLimits {
    fn default() -> Self {
        HeadLimits::DEFAULT
    }
}

/// Test support shared by the head parsers' tests.
#[cfg(test)]
pub(crate) mod test_support {
    use super::HeadError;
    use std::fmt::Debug;

    /// Parse `input` whole, then every prefix of it, and check the prefixes
    /// agree with the whole: `Ok(None)` (and nothing written) until the head
    /// is complete, then exactly the whole result; for an error, `Ok(None)`
    /// until the error shows, then that same error. Returns the whole result
    /// and what it wrote.
    pub(crate) fn parse_all_prefixes<T: PartialEq + Debug>(
        name: &str,
        input: &[u8],
        parse: impl Fn(&[u8], &mut Vec<u8>) -> Result<Option<T>, HeadError>,
        head_len: impl Fn(&T) -> usize,
    ) -> (Result<Option<T>, HeadError>, Vec<u8>) {
        let mut whole_out = b"prefix".to_vec();
        let whole = parse(input, &mut whole_out);
        assert!(
            whole_out.starts_with(b"prefix"),
            "{name}: out was not appended to"
        );
        let whole_out = whole_out[b"prefix".len()..].to_vec();
        if whole.is_err() || matches!(whole, Ok(None)) {
            assert!(whole_out.is_empty(), "{name}: out written on failure");
        }
        let mut seen_err = false;
        for i in 0..input.len() {
            let mut out = Vec::new();
            let r = parse(&input[..i], &mut out);
            match (&whole, &r) {
                (Ok(Some(h)), _) if i >= head_len(h) => {
                    assert_eq!(r, whole, "{name}: prefix {i}");
                    assert_eq!(out, whole_out, "{name}: prefix {i} output");
                }
                (_, Ok(None)) => {
                    assert!(!seen_err, "{name}: prefix {i} incomplete after an error");
                    assert!(out.is_empty(), "{name}: prefix {i} wrote output");
                }
                (Err(_), Err(_)) => {
                    assert_eq!(r, whole, "{name}: prefix {i}");
                    assert!(out.is_empty(), "{name}: prefix {i} wrote output");
                    seen_err = true;
                }
                _ => panic!("{name}: prefix {i} gave {r:?}, whole gave {whole:?}"),
            }
        }
        (whole, whole_out)
    }
}

#[cfg(test)]
mod token_tests {
    #[test]
    fn the_tchar_table_is_rfc_9110s() {
        for b in 0..=255u8 {
            let spec = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            assert_eq!(super::is_tchar(b), spec, "{b:#04x}");
        }
    }
}
