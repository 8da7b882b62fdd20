//! Entry points shared by the cargo-fuzz targets (`fuzz/fuzz_targets/`) and
//! the corpus replay below (`corpus`, run by `cargo test`).
//!
//! Each function takes arbitrary bytes, runs one parser of the codec over
//! them in several ways and checks invariants with `assert!`: a panic means
//! either a codec bug or a wrong invariant here, never "just noise". The work
//! per input is bounded (at most [`MAX_SPLITS`] split points, byte-by-byte
//! feeding only over the first [`MAX_BYTEWISE`] bytes) so the fuzzer stays
//! fast.
//!
//! Not part of the proxy's data path; nothing in `src/` calls it.

use std::net::{IpAddr, Ipv4Addr};

use super::{
    parse_request, parse_response, BodyDecoder, BodyError, ForwardCtx, Framing, HeadError, Method,
    RequestHead, ResponseCtx, ResponseHead, MAX_HEADERS, MAX_HEAD_BYTES,
};

/// At most this many split points (prefixes, two-piece splits) per input.
pub const MAX_SPLITS: usize = 64;

/// Chunked bodies are fed byte by byte over at most this many bytes.
pub const MAX_BYTEWISE: usize = 4 * 1024;

/// At most this many pipelined heads are parsed from one input.
const MAX_PIPELINED: usize = 4;

/// Written to `out` before every parse, to check the parsers append.
const SENTINEL: &[u8] = b"<sentinel>";

const CTX: ForwardCtx = ForwardCtx {
    client: IpAddr::V4(Ipv4Addr::LOCALHOST),
    proto: "http",
    limits: super::HeadLimits::DEFAULT,
    via: Some("ringmux"),
    affinity_cookie: None,
    drop_field: None,
};

/// Fields that must never be forwarded as received (the codec's fixed
/// hop-by-hop set). `Transfer-Encoding` is checked separately: the codec
/// re-emits a normalised one.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
    "http2-settings",
];

/// `parse_request` invariants.
///
/// - Deterministic: the same input parsed twice gives the same result and
///   the same output.
/// - `out` is appended to on success and untouched otherwise.
/// - Errors: status 400, 413, 431, 501 or 505 with a one-line reason.
/// - A complete head: `head_len <= data.len()`, `minor_version` 0 or 1,
///   framing never close-delimited, `expect_continue` only for HTTP/1.1.
/// - The forwarded head starts with the method token and a space, its
///   request line ends in ` HTTP/1.1`, it ends with CRLFCRLF, every LF has a
///   CR before it and every CR an LF after it; no hop-by-hop field; at most
///   one `Transfer-Encoding`, exactly `chunked`, present iff the framing is
///   chunked; at most one `Content-Length`, equal to the framed length,
///   never together with `Transfer-Encoding`.
/// - The forwarded head parses again to the same method, framing and path
///   hash, as HTTP/1.1 (only size limits or a missing `Host` in an HTTP/1.0
///   request may make it fail).
/// - Prefixes (at most [`MAX_SPLITS`]): before a complete head ends they are
///   `Ok(None)` with nothing written; from `head_len` on they give exactly
///   the whole result. For an error, prefixes go from `Ok(None)` to `Err`
///   and never back. (Which error is reported may differ when the input has
///   several faults; see `request.rs`.)
/// - Pipelining: the bytes after a complete head are parsed again (up to a
///   few heads) with the same single-parse checks.
pub fn request_head(data: &[u8]) {
    let whole = request_once(data);
    check_prefixes(data, &whole, request_once, |h| h.head_len, MAX_SPLITS);

    let mut rest = data;
    let mut last = whole;
    for _ in 0..MAX_PIPELINED {
        let Ok(Some((head, _))) = last else { break };
        rest = &rest[head.head_len..];
        if rest.is_empty() {
            break;
        }
        last = request_once(rest);
    }
}

/// `BodyDecoder` (chunked) invariants.
///
/// The input is fed whole, split in two at up to [`MAX_SPLITS`] points, and
/// byte by byte (over its first [`MAX_BYTEWISE`] bytes, compared with a
/// whole feed of that prefix). All feedings must agree on consumed count,
/// done flag, error and the decoded data (also on error: data bytes before
/// the faulty byte are the same however the input is split). Per call:
/// `consumed <= input.len()`; a call that is not done consumes all its
/// input; once done, the decoder is done and further feeding consumes 0;
/// once failed, further feeding reports the same error. The decoded data is
/// never longer than what was consumed, and a finished body re-encoded as a
/// single chunk decodes to the same data.
pub fn chunked(data: &[u8]) {
    let whole = feed_pieces(&[data]);
    if let Some(consumed) = whole.consumed {
        assert!(consumed <= data.len());
        assert!(whole.data.len() <= consumed);
        if !whole.done {
            assert_eq!(consumed, data.len(), "not done but input left over");
        }
    }
    assert!(whole.data.len() <= data.len());
    assert_eq!(feed_pieces(&[data]), whole, "not deterministic");

    for at in split_points(data.len(), MAX_SPLITS, &[]) {
        let (a, b) = data.split_at(at);
        assert_eq!(feed_pieces(&[a, b]), whole, "split at {at}");
    }

    let short = &data[..data.len().min(MAX_BYTEWISE)];
    let short_whole = if short.len() == data.len() {
        whole.clone()
    } else {
        feed_pieces(&[short])
    };
    let bytes: Vec<&[u8]> = short.chunks(1).collect();
    assert_eq!(feed_pieces(&bytes), short_whole, "byte by byte");

    if whole.done {
        let mut encoded = Vec::new();
        if !whole.data.is_empty() {
            encoded.extend_from_slice(format!("{:x}\r\n", whole.data.len()).as_bytes());
            encoded.extend_from_slice(&whole.data);
            encoded.extend_from_slice(b"\r\n");
        }
        encoded.extend_from_slice(b"0\r\n\r\n");
        let again = feed_pieces(&[&encoded]);
        assert_eq!(
            again,
            Fed {
                consumed: Some(encoded.len()),
                done: true,
                error: None,
                data: whole.data.clone(),
            },
            "re-encoded body"
        );
    }
}

/// `parse_response` invariants, for every combination of request method
/// (GET, HEAD), client version (1.0, 1.1) and client keep-alive.
///
/// - Deterministic, appends to `out` (untouched on error), errors are 502
///   with a one-line reason.
/// - A complete head: `head_len <= data.len()`, status 100..=599,
///   `informational` exactly for 1xx other than 101; HEAD requests, 1xx,
///   204 and 304 have framing `None`; `dechunk` exactly for a chunked body
///   to an HTTP/1.0 client; client keep-alive only if the request allowed it
///   and never with a close-delimited body, a dechunked body or 101;
///   upstream never reusable after a close-delimited body or 101.
/// - Output: nothing for a 1xx to an HTTP/1.0 client; otherwise starts with
///   `HTTP/1.1 <status> `, ends with CRLFCRLF, every LF has a CR before it
///   and every CR an LF after it, no hop-by-hop field except our own
///   `Connection` (exactly one: `close` iff the client connection closes,
///   `keep-alive` for a persistent HTTP/1.0 client, none otherwise and none
///   on 1xx); no `Transfer-Encoding` when dechunking or to HTTP/1.0 clients;
///   never both `Content-Length` and `Transfer-Encoding`.
/// - The forwarded head parses again (same context) to the same status and
///   client keep-alive, the framing the client will see, and an upstream
///   reusability that matches the client keep-alive we announced.
/// - Prefix consistency as for requests: at most [`MAX_SPLITS`] prefixes
///   for the GET / HTTP/1.1 / keep-alive context (until a head is complete
///   the verdict does not depend on the context); the other contexts check
///   the prefixes just before, at and after the end of the head.
pub fn response_head(data: &[u8]) {
    for method in [Method::Get, Method::Head] {
        for client_minor_version in [0, 1] {
            for client_keep_alive in [true, false] {
                // Not an upgrade request: a 101 must be refused. (The tunnel
                // path, upgrade: true, is covered by the agent's tests.)
                let ctx = ResponseCtx {
                    request_method: method,
                    client_minor_version,
                    client_keep_alive,
                    upgrade: false,
                    via: Some("ringmux"),
                };
                let whole = response_once(data, &ctx);
                // Until a head is complete the verdict does not depend on the
                // context, so the full prefix scan runs for the first context
                // only; the others check around the end of the head.
                let full = method == Method::Get && client_minor_version == 1 && client_keep_alive;
                let splits = if full { MAX_SPLITS } else { 0 };
                check_prefixes(
                    data,
                    &whole,
                    |buf| response_once(buf, &ctx),
                    |h| h.head_len,
                    splits,
                );
            }
        }
    }
}

type Parsed<T> = Result<Option<(T, Vec<u8>)>, HeadError>;

/// Parse once (twice, for determinism) and check the single-parse
/// invariants. Returns the head and what was appended.
fn request_once(data: &[u8]) -> Parsed<RequestHead> {
    let result = run_parser(data, |buf, out| parse_request(buf, &CTX, out));
    match &result {
        Err(e) => check_error(e, &[400, 413, 431, 501, 505]),
        Ok(None) => {}
        Ok(Some((head, out))) => check_request_head(data, head, out),
    }
    result
}

fn check_request_head(data: &[u8], head: &RequestHead, out: &[u8]) {
    assert!(head.head_len <= data.len() && head.head_len > 0);
    assert!(head.head_len <= MAX_HEAD_BYTES);
    assert!(head.minor_version <= 1);
    assert_ne!(head.framing, Framing::CloseDelimited);
    assert!(!head.expect_continue || head.minor_version == 1);

    // The method token as the client sent it, after leading empty lines.
    let mut start = 0;
    while data[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let method_end = data[start..]
        .iter()
        .position(|&b| b == b' ')
        .expect("accepted request line without a space");
    let method = &data[start..start + method_end];
    assert!(!method.is_empty());
    assert!(out.starts_with(method) && out[method.len()] == b' ');
    assert_eq!(head.method, Method::from_token(method));

    let lines = check_head_lines(out);
    let request_line = lines[0];
    assert!(request_line.ends_with(b" HTTP/1.1"));
    let target = &request_line[method.len() + 1..request_line.len() - b" HTTP/1.1".len()];
    assert!(
        target.starts_with(b"/") || target == b"*",
        "forwarded target"
    );

    let fields = field_lines(&lines[1..]);
    check_framing_fields(&fields, head.framing, true);

    assert!(
        !head.needs_host || head.minor_version == 0,
        "Host missing in 1.1"
    );
    assert!(
        !head.answer_here || matches!(head.method, Method::Options | Method::Trace),
        "only OPTIONS and TRACE are answered by the proxy"
    );
    let upgrade = fields
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(b"upgrade"));
    assert_eq!(upgrade.is_some(), head.upgrade);
    if let Some((_, v)) = upgrade {
        assert!(
            !String::from_utf8_lossy(v)
                .to_ascii_lowercase()
                .contains("h2c"),
            "h2c upgrade forwarded"
        );
    }
    let via: Vec<_> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"via"))
        .collect();
    assert_eq!(via.len(), 1, "one merged Via");
    assert!(via[0].1.ends_with(b" ringmux"), "our Via entry comes last");

    // The forwarded head is what the upstream parses: it must mean the same
    // (with the Host the caller inserts where none came).
    let mut out = out.to_vec();
    if head.needs_host {
        let at = out.len() - 2;
        out.splice(at..at, b"Host: upstream\r\n".iter().copied());
    }
    let out = &out[..];
    match parse_request(out, &CTX, &mut Vec::new()) {
        Ok(Some(again)) => {
            assert_eq!(again.head_len, out.len());
            assert_eq!(again.method, head.method);
            assert_eq!(again.minor_version, 1);
            assert_eq!(again.framing, head.framing);
            assert_eq!(again.path_hash, head.path_hash);
            assert!(again.keep_alive, "forwarded head carries no Connection");
            assert!(!again.expect_continue || head.expect_continue);
        }
        Ok(None) => panic!("forwarded request head is incomplete"),
        Err(e) => {
            let too_big = out.len() > MAX_HEAD_BYTES || fields.len() > MAX_HEADERS;
            assert!(
                e.status == 431 && too_big,
                "forwarded request head refused: {e:?}"
            );
        }
    }
}

fn response_once(data: &[u8], ctx: &ResponseCtx) -> Parsed<ResponseHead> {
    let result = run_parser(data, |buf, out| parse_response(buf, ctx, out));
    match &result {
        Err(e) => check_error(e, &[502]),
        Ok(None) => {}
        Ok(Some((head, out))) => check_response_head(data, ctx, head, out),
    }
    result
}

fn check_response_head(data: &[u8], ctx: &ResponseCtx, head: &ResponseHead, out: &[u8]) {
    assert!(head.head_len <= data.len() && head.head_len > 0);
    assert!(head.head_len <= MAX_HEAD_BYTES);
    assert!((100..=599).contains(&head.status));
    let switching = head.status == 101;
    assert_eq!(
        head.informational,
        (100..200).contains(&head.status) && !switching
    );
    if ctx.request_method == Method::Head
        || (100..200).contains(&head.status)
        || head.status == 204
        || head.status == 304
    {
        assert_eq!(head.framing, Framing::None);
    }
    let client_http10 = ctx.client_minor_version == 0;
    assert_eq!(
        head.dechunk,
        head.framing == Framing::Chunked && client_http10
    );
    assert!(!head.client_keep_alive || ctx.client_keep_alive);
    if !head.informational {
        assert!(!(head.client_keep_alive && switching));
        assert!(!(head.client_keep_alive && head.dechunk));
        assert!(!(head.client_keep_alive && head.framing == Framing::CloseDelimited));
    }
    assert!(!(head.upstream_reusable && switching));
    assert!(!(head.upstream_reusable && head.framing == Framing::CloseDelimited));

    if head.informational && client_http10 {
        assert!(out.is_empty(), "1xx forwarded to an HTTP/1.0 client");
        return;
    }
    let status_prefix = format!("HTTP/1.1 {} ", head.status);
    assert!(out.starts_with(status_prefix.as_bytes()), "status line");
    let lines = check_head_lines(out);
    let fields = field_lines(&lines[1..]);

    // Framing fields as forwarded. Bodyless responses keep their (validated)
    // framing fields, so check against the upstream framing where it
    // exists.
    let has_te = fields
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"));
    if head.dechunk || client_http10 {
        assert!(!has_te, "Transfer-Encoding to an HTTP/1.0 client");
    }
    if head.framing != Framing::None {
        let sent = match head.framing {
            Framing::Chunked if head.dechunk => Framing::CloseDelimited,
            f => f,
        };
        check_framing_fields(&fields, sent, false);
    } else {
        check_framing_fields(&fields, Framing::None, false);
    }

    // Hop-by-hop fields: only the codec's own Connection.
    let connection: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"connection"))
        .map(|(_, v)| *v)
        .collect();
    for (name, _) in &fields {
        let hop = HOP_BY_HOP
            .iter()
            .any(|h| *h != "connection" && name.eq_ignore_ascii_case(h.as_bytes()));
        assert!(!hop, "hop-by-hop field forwarded");
    }
    let want_connection: &[&[u8]] = if head.informational {
        &[]
    } else if !head.client_keep_alive {
        &[b"close"]
    } else if client_http10 {
        &[b"keep-alive"]
    } else {
        &[]
    };
    assert_eq!(connection, want_connection, "Connection field");

    match parse_response(out, ctx, &mut Vec::new()) {
        Ok(Some(again)) => {
            assert_eq!(again.head_len, out.len());
            assert_eq!(again.status, head.status);
            assert_eq!(again.informational, head.informational);
            let want = match head.framing {
                Framing::Chunked if head.dechunk => Framing::CloseDelimited,
                f => f,
            };
            assert_eq!(again.framing, want);
            assert!(!again.dechunk);
            assert_eq!(again.client_keep_alive, head.client_keep_alive);
            if !head.informational {
                assert_eq!(again.upstream_reusable, head.client_keep_alive);
            }
        }
        Ok(None) => panic!("forwarded response head is incomplete"),
        Err(e) => {
            let too_big = out.len() > MAX_HEAD_BYTES || fields.len() > MAX_HEADERS;
            assert!(too_big, "forwarded response head refused: {e:?}");
        }
    }
}

/// Run a head parser twice with a sentinel in `out`; check determinism and
/// that `out` is only appended to, and only on success.
fn run_parser<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    parse: impl Fn(&[u8], &mut Vec<u8>) -> Result<Option<T>, HeadError>,
) -> Parsed<T> {
    let mut out = SENTINEL.to_vec();
    let first = parse(data, &mut out);
    let mut out2 = SENTINEL.to_vec();
    let second = parse(data, &mut out2);
    assert_eq!(first, second, "not deterministic");
    assert_eq!(out, out2, "output not deterministic");
    assert!(out.starts_with(SENTINEL), "out was not appended to");
    let written = out[SENTINEL.len()..].to_vec();
    match first {
        Ok(Some(head)) => Ok(Some((head, written))),
        other => {
            assert!(written.is_empty(), "out written without a complete head");
            other.map(|_| None)
        }
    }
}

fn check_error(e: &HeadError, statuses: &[u16]) {
    assert!(statuses.contains(&e.status), "unexpected status {e:?}");
    assert!(!e.reason.is_empty());
    assert!(!e.reason.contains(['\r', '\n']));
}

/// Prefixes agree with the whole: see [`request_head`].
fn check_prefixes<T: PartialEq + std::fmt::Debug>(
    data: &[u8],
    whole: &Parsed<T>,
    parse: impl Fn(&[u8]) -> Parsed<T>,
    head_len: impl Fn(&T) -> usize,
    max_splits: usize,
) {
    let extra = match whole {
        Ok(Some((h, _))) => {
            let n = head_len(h);
            vec![n.saturating_sub(1), n, n + 1]
        }
        _ => Vec::new(),
    };
    let mut seen_err = false;
    for at in split_points(data.len(), max_splits, &extra) {
        let r = parse(&data[..at]);
        match (whole, &r) {
            (Ok(Some((h, _))), _) if at >= head_len(h) => {
                assert_eq!(&r, whole, "prefix {at} of a complete head");
            }
            (_, Ok(None)) => assert!(!seen_err, "prefix {at} incomplete after an error"),
            (Err(_), Err(_)) => seen_err = true,
            _ => panic!("prefix {at} gave {r:?}, whole gave {whole:?}"),
        }
    }
}

/// Every split point for short inputs; otherwise `max` points spread over
/// the input; plus `extra` (clamped to the input) and the whole input.
fn split_points(len: usize, max: usize, extra: &[usize]) -> Vec<usize> {
    let mut points: Vec<usize> = if len <= max {
        (0..=len).collect()
    } else {
        (0..max).map(|i| i * len / max).collect()
    };
    points.extend(extra.iter().map(|&p| p.min(len)));
    points.push(len);
    points.sort_unstable();
    points.dedup();
    points
}

/// Check a forwarded head's line structure and return its lines (without
/// CRLF, without the final empty line).
fn check_head_lines(out: &[u8]) -> Vec<&[u8]> {
    assert!(
        out.ends_with(b"\r\n\r\n"),
        "head does not end with CRLFCRLF"
    );
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            assert!(i > 0 && out[i - 1] == b'\r', "bare LF at {i}");
        }
        if b == b'\r' {
            assert_eq!(out.get(i + 1), Some(&b'\n'), "bare CR at {i}");
        }
    }
    // No bare CR anywhere, so stripping one CR per line is exact.
    let body = &out[..out.len() - 4];
    let lines: Vec<&[u8]> = body
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .collect();
    for l in &lines {
        assert!(!l.is_empty(), "empty line inside a head");
    }
    lines
}

/// Split field lines into (name, value); every line must have a colon, a
/// non-empty name and no whitespace before it.
fn field_lines<'a>(lines: &[&'a [u8]]) -> Vec<(&'a [u8], &'a [u8])> {
    lines
        .iter()
        .map(|l| {
            let colon = l
                .iter()
                .position(|&b| b == b':')
                .expect("field without colon");
            let (name, value) = (&l[..colon], &l[colon + 1..]);
            assert!(!name.is_empty(), "empty field name");
            assert!(
                !name.iter().any(|b| b.is_ascii_whitespace()),
                "whitespace in field name"
            );
            (name, trim(value))
        })
        .collect()
}

fn trim(mut v: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = v {
        v = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = v {
        v = rest;
    }
    v
}

/// Transfer-Encoding (at most one, exactly `chunked`) and Content-Length (at
/// most one, digits) never together, and matching `framing` (`None`: for
/// requests no field at all; for responses anything valid may describe a
/// bodyless message).
fn check_framing_fields(fields: &[(&[u8], &[u8])], framing: Framing, request: bool) {
    let te: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"transfer-encoding"))
        .map(|(_, v)| *v)
        .collect();
    let cl: Vec<&[u8]> = fields
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(b"content-length"))
        .map(|(_, v)| *v)
        .collect();
    assert!(te.len() <= 1, "several Transfer-Encoding fields");
    assert!(cl.len() <= 1, "several Content-Length fields");
    assert!(
        te.is_empty() || cl.is_empty(),
        "both Content-Length and Transfer-Encoding"
    );
    if let Some(v) = te.first() {
        assert_eq!(*v, b"chunked", "Transfer-Encoding other than chunked");
    }
    let length: Option<u64> = cl.first().map(|v| {
        assert!(
            !v.is_empty() && v.iter().all(u8::is_ascii_digit),
            "Content-Length"
        );
        std::str::from_utf8(v)
            .unwrap()
            .parse()
            .expect("Content-Length fits u64")
    });
    match framing {
        Framing::Chunked => assert!(!te.is_empty(), "chunked framing without TE"),
        Framing::Length(n) => assert_eq!(length, Some(n), "Content-Length"),
        Framing::CloseDelimited => assert!(te.is_empty() && cl.is_empty()),
        Framing::None if request => assert!(te.is_empty() && cl.is_empty()),
        Framing::None => {}
    }
}

/// What feeding a chunked decoder produced.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fed {
    /// Total bytes consumed (`None` after an error: unknown).
    consumed: Option<usize>,
    done: bool,
    error: Option<BodyError>,
    data: Vec<u8>,
}

/// Feed `pieces` in order as a caller would, checking the per-call rules.
fn feed_pieces(pieces: &[&[u8]]) -> Fed {
    let mut dec = BodyDecoder::new(Framing::Chunked);
    let mut data = Vec::new();
    let mut consumed = 0usize;
    let mut done = false;
    for piece in pieces {
        let before = data.len();
        let r = dec.feed(piece, &mut |d| data.extend_from_slice(d));
        match r {
            Ok(p) if done => {
                assert_eq!((p.consumed, p.done), (0, true), "fed after done");
                assert_eq!(data.len(), before, "data after done");
            }
            Ok(p) => {
                assert!(p.consumed <= piece.len(), "consumed more than given");
                assert!(data.len() - before <= p.consumed, "more data than consumed");
                consumed += p.consumed;
                assert_eq!(p.done, dec.is_done());
                if p.done {
                    done = true;
                } else {
                    assert_eq!(p.consumed, piece.len(), "not done but input left");
                }
            }
            Err(error) => {
                assert!(!dec.is_done());
                let again = dec.feed(b"0\r\n\r\n", &mut |_| panic!("data after an error"));
                assert_eq!(again, Err(error), "error not sticky");
                return Fed {
                    consumed: None,
                    done: false,
                    error: Some(error),
                    data,
                };
            }
        }
    }
    if done {
        let p = dec.feed(b"0\r\n\r\n", &mut |_| panic!("data after done"));
        assert_eq!(p.map(|p| (p.consumed, p.done)), Ok((0, true)));
    }
    Fed {
        consumed: Some(consumed),
        done,
        error: None,
        data,
    }
}

/// The committed cargo-fuzz seed corpus (`fuzz/corpus/<target>/`) through the
/// same checks the fuzz targets run, so every `cargo test` exercises them
/// without a nightly toolchain or libFuzzer.
#[cfg(test)]
pub(crate) mod corpus {
    use std::fs;
    use std::path::Path;

    /// Run `check` on every file of `fuzz/corpus/<target>/`; the directory must
    /// hold at least one file. (Also replays the HTTP/2 targets' corpora.)
    pub(crate) fn replay(target: &str, check: fn(&[u8])) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target);
        let mut entries: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("corpus entry").path())
            .filter(|p| p.is_file())
            .collect();
        entries.sort();
        assert!(!entries.is_empty(), "{}: empty corpus", dir.display());
        for path in entries {
            let data = fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Name the failing file: the panic message alone doesn't say which.
            let result = std::panic::catch_unwind(|| check(&data));
            if let Err(panic) = result {
                eprintln!("corpus file {} failed", path.display());
                std::panic::resume_unwind(panic);
            }
        }
    }

    #[test]
    fn request_head_corpus() {
        replay("request_head", super::request_head);
    }

    #[test]
    fn chunked_corpus() {
        replay("chunked", super::chunked);
    }

    #[test]
    fn response_head_corpus() {
        replay("response_head", super::response_head);
    }
}
