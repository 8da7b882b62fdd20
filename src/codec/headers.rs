//! Field-level rules shared by `request.rs` and `response.rs`: finding where a
//! head ends (and refusing bare LF / obs-fold while doing so), reading the
//! framing fields (`Content-Length`, `Transfer-Encoding`), the `Connection`
//! options, and deciding which fields are hop-by-hop.
//!
//! It never does I/O and never reads clocks. It never chooses status codes
//! either: it reports *what* is wrong and the request/response modules decide
//! which status that becomes, since the same fault is a 400 from a client but
//! a 502 from an upstream.

/// Where a complete head sits in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct HeadBounds {
    /// Offset of the start line, after any leading empty lines.
    pub start: usize,
    /// Offset just past the blank line that ends the head.
    pub end: usize,
}

/// Line-level faults found before httparse ever sees the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ScanOutcome {
    /// The head is complete.
    Complete(HeadBounds),
    /// No blank line yet and still within the size limit.
    Incomplete,
    /// The head does not end within `MAX_HEAD_BYTES`.
    TooLarge,
    /// An LF not preceded by CR.
    BareLf,
    /// A field line starting with SP/HT (obs-fold), or whitespace between
    /// the start line and the first field.
    ObsFold,
}

/// Find the end of the head at the start of `buf`.
///
/// Why our own scan instead of trusting httparse alone: httparse accepts bare
/// LF as a line ending, and a proxy that accepts what its upstream would
/// parse differently is a request-smuggling vector. Scanning first also gives
/// us the head boundary independently of httparse, so the size limit is
/// applied to exactly the first `max_bytes` bytes no matter how the input
/// was split across reads.
pub(super) fn scan_head(buf: &[u8], max_bytes: usize) -> ScanOutcome {
    // Only the first `max_bytes` can belong to an acceptable head; looking
    // further would make the verdict depend on how much the caller had read.
    let window = &buf[..buf.len().min(max_bytes)];
    let incomplete = if buf.len() > max_bytes {
        ScanOutcome::TooLarge
    } else {
        ScanOutcome::Incomplete
    };

    // RFC 9112 §2.2: a server SHOULD ignore at least one empty line (CRLF)
    // before the request line. We skip any number; they count in head_len.
    let mut start = 0;
    loop {
        match (window.get(start), window.get(start + 1)) {
            (Some(b'\r'), Some(b'\n')) => start += 2,
            (Some(b'\r'), None) => return incomplete,
            (Some(b'\n'), _) => return ScanOutcome::BareLf,
            _ => break,
        }
    }

    let mut line_start = start;
    loop {
        // Obs-fold is detectable from the first byte of a line; check it
        // before waiting for the LF so every prefix of the input gets the same
        // verdict as the whole.
        if line_start != start && matches!(window.get(line_start), Some(b' ' | b'\t')) {
            return ScanOutcome::ObsFold;
        }
        let Some(off) = window[line_start..].iter().position(|&b| b == b'\n') else {
            return incomplete;
        };
        let lf = line_start + off;
        // Every LF must close a CRLF. The CR cannot belong to an earlier
        // line: that line ended with an LF, which is not a CR.
        if lf == 0 || window[lf - 1] != b'\r' {
            return ScanOutcome::BareLf;
        }
        if lf - 1 == line_start {
            // Empty line: end of head. (The start line can't be empty because
            // leading empty lines were skipped above.)
            return ScanOutcome::Complete(HeadBounds { start, end: lf + 1 });
        }
        line_start = lf + 1;
    }
}

/// Trim optional whitespace (SP / HTAB) from both ends, RFC 9110 §5.6.3.
pub(super) fn trim_ows(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Iterate the non-empty, OWS-trimmed elements of a comma-separated list
/// (RFC 9110 §5.6.1: empty elements must be ignored).
pub(super) fn list_elements(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    v.split(|&b| b == b',')
        .map(trim_ows)
        .filter(|e| !e.is_empty())
}

/// FNV-1a (64 bit). Chosen for URL-hash balancing because it is tiny,
/// allocation-free and stable across builds and platforms (unlike std's
/// randomly keyed SipHash), so every worker maps a path to the same upstream.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Append the decimal digits of `n` (no allocation, unlike `to_string`).
pub(super) fn write_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Append `name: value CRLF` where the value is a decimal number.
pub(super) fn write_decimal_field(out: &mut Vec<u8>, name: &[u8], n: u64) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    write_decimal(out, n);
    out.extend_from_slice(b"\r\n");
}

/// Append `name: value CRLF`.
pub(super) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Why a head's framing fields cannot be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FramingFault {
    /// Both Content-Length and Transfer-Encoding.
    BothLengthAndChunked,
    /// Content-Length given more than once (or as a list).
    MultipleLength,
    /// Content-Length is not 1+ digits or overflows u64.
    BadLength,
    /// Transfer-Encoding whose final coding is not `chunked`.
    NotChunkedFinal,
    /// `chunked` listed more than once.
    ChunkedTwice,
    /// A coding other than `chunked` (e.g. `gzip, chunked`).
    UnsupportedCoding,
    /// Transfer-Encoding in an HTTP/1.0 message (RFC 9112 §6.1: faulty).
    TransferEncodingInHttp10,
}

/// Everything the head modules need to know about the fields, gathered in a
/// single pass.
#[derive(Debug, Default)]
pub(super) struct FieldFacts<'a> {
    /// `Connection: close` seen.
    pub close: bool,
    /// `Connection: keep-alive` seen.
    pub keep_alive: bool,
    /// Other options listed in `Connection`: these fields are hop-by-hop too.
    pub connection_listed: Vec<&'a [u8]>,
    /// Validated Content-Length, if present.
    pub content_length: Option<u64>,
    /// A (validated) `Transfer-Encoding: chunked` was present.
    pub chunked: bool,
}

/// Gather framing and connection facts, rejecting ambiguous framing.
pub(super) fn field_facts<'a>(
    headers: &[httparse::Header<'a>],
    minor_version: u8,
) -> Result<FieldFacts<'a>, FramingFault> {
    let mut facts = FieldFacts::default();
    let mut length_fields = 0usize;
    let mut length_value: &[u8] = b"";
    let mut te_seen = false;
    let mut chunked_count = 0usize;
    // The final coding across all Transfer-Encoding fields (they combine
    // into one list, RFC 9110 §5.3).
    let mut last_coding_is_chunked = false;
    let mut other_coding = false;

    for h in headers {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"connection") {
            for opt in list_elements(h.value) {
                if opt.eq_ignore_ascii_case(b"close") {
                    facts.close = true;
                } else if opt.eq_ignore_ascii_case(b"keep-alive") {
                    facts.keep_alive = true;
                } else {
                    facts.connection_listed.push(opt);
                }
            }
        } else if name.eq_ignore_ascii_case(b"content-length") {
            length_fields += 1;
            length_value = h.value;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te_seen = true;
            for coding in list_elements(h.value) {
                if coding.eq_ignore_ascii_case(b"chunked") {
                    chunked_count += 1;
                    last_coding_is_chunked = true;
                } else {
                    other_coding = true;
                    last_coding_is_chunked = false;
                }
            }
        }
    }

    if te_seen && minor_version == 0 {
        return Err(FramingFault::TransferEncodingInHttp10);
    }
    if te_seen && length_fields > 0 {
        return Err(FramingFault::BothLengthAndChunked);
    }
    if te_seen {
        // Order matters for the reason reported: a wrong final coding makes
        // the length unknowable (worst), a duplicate `chunked` is a
        // smuggling trick, an extra coding is merely unsupported.
        if !last_coding_is_chunked {
            return Err(FramingFault::NotChunkedFinal);
        }
        if chunked_count > 1 {
            return Err(FramingFault::ChunkedTwice);
        }
        if other_coding {
            return Err(FramingFault::UnsupportedCoding);
        }
        facts.chunked = true;
    }
    if length_fields > 1 {
        // Even identical duplicates are refused: RFC 9110 §8.6 allows
        // collapsing them, but refusing is simpler and never ambiguous.
        return Err(FramingFault::MultipleLength);
    }
    if length_fields == 1 {
        facts.content_length = Some(parse_length(length_value)?);
    }
    Ok(facts)
}

/// 1+ ASCII digits, no sign, no list, fits in u64.
fn parse_length(v: &[u8]) -> Result<u64, FramingFault> {
    let v = trim_ows(v);
    if v.contains(&b',') {
        return Err(FramingFault::MultipleLength);
    }
    if v.is_empty() {
        return Err(FramingFault::BadLength);
    }
    let mut n: u64 = 0;
    for &b in v {
        if !b.is_ascii_digit() {
            return Err(FramingFault::BadLength);
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(b - b'0')))
            .ok_or(FramingFault::BadLength)?;
    }
    Ok(n)
}

/// Is this field hop-by-hop, i.e. never forwarded as received?
///
/// The fixed set is RFC 9110 §7.6.1 plus `Transfer-Encoding` (the proxy
/// re-emits a normalised one itself), `Proxy-Authorization` /
/// `Proxy-Authenticate` (credentials meant for a proxy must not leak to the
/// origin or from it) and `HTTP2-Settings` (RFC 9113 §3.2.1: it only means
/// something with the h2c upgrade, which is never passed on). Fields named in `Connection` are hop-by-hop too, except
/// `Content-Length` and `Host`: dropping those would change how the upstream
/// frames or routes the message, a known smuggling trick, so the listing is
/// ignored for them.
pub(super) fn is_hop_by_hop(name: &[u8], connection_listed: &[&[u8]]) -> bool {
    const FIXED: [&[u8]; 9] = [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"upgrade",
        b"transfer-encoding",
        b"proxy-authorization",
        b"proxy-authenticate",
        b"http2-settings",
    ];
    if FIXED.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return true;
    }
    if name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"host") {
        return false;
    }
    connection_listed
        .iter()
        .any(|l| name.eq_ignore_ascii_case(l))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::MAX_HEAD_BYTES;

    #[test]
    fn scan_cases() {
        let cases: &[(&str, &[u8], ScanOutcome)] = &[
            (
                "simple",
                b"GET / HTTP/1.1\r\n\r\n",
                ScanOutcome::Complete(HeadBounds { start: 0, end: 18 }),
            ),
            (
                "leading crlf",
                b"\r\n\r\nGET / HTTP/1.1\r\n\r\nBODY",
                ScanOutcome::Complete(HeadBounds { start: 4, end: 22 }),
            ),
            (
                "bare lf",
                b"GET / HTTP/1.1\nHost: a\r\n\r\n",
                ScanOutcome::BareLf,
            ),
            ("bare lf end", b"GET / HTTP/1.1\r\n\n", ScanOutcome::BareLf),
            (
                "leading bare lf",
                b"\nGET / HTTP/1.1\r\n\r\n",
                ScanOutcome::BareLf,
            ),
            (
                "obs fold",
                b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                ScanOutcome::ObsFold,
            ),
            (
                "incomplete",
                b"GET / HTTP/1.1\r\nA: b\r\n",
                ScanOutcome::Incomplete,
            ),
        ];
        for (name, input, want) in cases {
            assert_eq!(scan_head(input, MAX_HEAD_BYTES), *want, "{name}");
        }
    }

    #[test]
    fn too_large() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(MAX_HEAD_BYTES + 1, b'a');
        assert_eq!(scan_head(&big, MAX_HEAD_BYTES), ScanOutcome::TooLarge);
        big.truncate(MAX_HEAD_BYTES);
        assert_eq!(scan_head(&big, MAX_HEAD_BYTES), ScanOutcome::Incomplete);
    }

    #[test]
    fn helpers() {
        assert_eq!(trim_ows(b" \t a b\t "), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        let v: Vec<&[u8]> = list_elements(b" a, ,b ,, c").collect();
        assert_eq!(v, vec![&b"a"[..], b"b", b"c"]);
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(parse_length(b"0012"), Ok(12));
        assert_eq!(parse_length(b"18446744073709551615"), Ok(u64::MAX));
        assert_eq!(
            parse_length(b"18446744073709551616"),
            Err(FramingFault::BadLength)
        );
        assert_eq!(parse_length(b"+1"), Err(FramingFault::BadLength));
        assert_eq!(parse_length(b"1,1"), Err(FramingFault::MultipleLength));
        for n in [0, 7, 10, 1234567890, u64::MAX] {
            let mut out = b"x".to_vec();
            write_decimal(&mut out, n);
            assert_eq!(out, format!("x{n}").into_bytes());
        }
    }
}
