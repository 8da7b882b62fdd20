//! Request heads: parses and strictly validates one HTTP/1.x request head
//! from the client, decides its body framing and whether the client
//! connection may persist, and writes the head to forward upstream
//! (origin-form target, always `HTTP/1.1`, hop-by-hop fields removed,
//! `X-Forwarded-For` / `Forwarded` appended).
//!
//! It never does I/O and never reads clocks; it never touches `out` unless the
//! head is accepted. It never looks past the head: body bytes are the
//! caller's (see `body.rs`).
//!
//! Decisions (all refusals close the client connection):
//! - Bare LF line endings are refused (400 "bare LF in head"). RFC 9112 §2.2
//!   lets a recipient accept them, but an upstream that does not would see a
//!   different message than we did: a smuggling vector.
//! - Leading empty lines (CRLF) before the request line are skipped and
//!   counted in `head_len` (RFC 9112 §2.2).
//! - obs-fold and whitespace before the first field line: 400.
//! - `Transfer-Encoding`: the list (across all fields) must be exactly
//!   `chunked`. Final coding not `chunked` or `chunked` twice: 400 (length
//!   unknowable / smuggling). Any other coding before `chunked`
//!   (`gzip, chunked`): 501, RFC 9112 §6.1's answer for codings a server
//!   does not implement. TE in an HTTP/1.0 request: 400 (RFC 9112 §6.1 says
//!   its framing is faulty).
//! - Absolute-form targets (`http://` or `https://`, case-insensitive scheme)
//!   are rewritten to origin-form and their authority replaces the value of
//!   any `Host` field, as RFC 9112 §3.2.2 demands, so the upstream routes on
//!   exactly what we saw; if there is no `Host` one is added. Absolute-form
//!   therefore satisfies the HTTP/1.1 `Host` requirement. Userinfo in the
//!   authority or a fragment in any target: 400.
//! - Asterisk-form `*` only with OPTIONS; authority-form only exists for
//!   CONNECT, which is refused with 501 for now.
//! - `Host` values must be made of URI host/port characters (400 otherwise).
//! - `Expect: 100-continue` sets `expect_continue` for HTTP/1.1 and is
//!   forwarded. In an HTTP/1.0 request it is ignored and dropped (RFC 9110
//!   §10.1.1). Other expectations are forwarded untouched.
//! - `X-Forwarded-For` / `Forwarded` fields are merged into one field each,
//!   written after the other fields.
//! - An error found later in a head may win over one found earlier when both
//!   exist (our line scan runs before httparse); each single fault is reported
//!   identically however the input is split.

use std::net::IpAddr;

use super::headers::{self, FramingFault, ScanOutcome};
use std::mem::MaybeUninit;

use super::{Framing, HeadError, HeadLimits, FIELDS_CEILING};

/// Request method. Methods are case-sensitive (RFC 9110 §9.1), so `get` is
/// `Other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// OPTIONS
    Options,
    /// POST
    Post,
    /// PUT
    Put,
    /// DELETE
    Delete,
    /// PATCH
    Patch,
    /// TRACE
    Trace,
    /// CONNECT
    Connect,
    /// Any other (valid token) method.
    Other,
}

impl Method {
    /// Classify a method token.
    pub fn from_token(token: &[u8]) -> Method {
        match token {
            b"GET" => Method::Get,
            b"HEAD" => Method::Head,
            b"OPTIONS" => Method::Options,
            b"POST" => Method::Post,
            b"PUT" => Method::Put,
            b"DELETE" => Method::Delete,
            b"PATCH" => Method::Patch,
            b"TRACE" => Method::Trace,
            b"CONNECT" => Method::Connect,
            _ => Method::Other,
        }
    }

    /// Safe methods (RFC 9110 §9.2.1) that a retry policy may replay:
    /// GET, HEAD, OPTIONS. TRACE is safe too but deliberately excluded, since
    /// nothing is gained by retrying it.
    pub fn is_safe(self) -> bool {
        matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// Facts about the client connection that the forwarded head carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardCtx {
    /// The client's address, for `X-Forwarded-For` and `Forwarded: for=`.
    pub client: IpAddr,
    /// The protocol the client used, for `Forwarded: proto=` (`"http"`).
    pub proto: &'static str,
    /// How large the client's request heads may be.
    pub limits: HeadLimits,
}

/// A parsed, validated request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1).
    pub minor_version: u8,
    /// None, Length(n) or Chunked; never CloseDelimited for requests.
    pub framing: Framing,
    /// May the client connection stay open after this exchange (HTTP/1.1
    /// unless `Connection: close`; HTTP/1.0 only with
    /// `Connection: keep-alive`).
    pub keep_alive: bool,
    /// HTTP/1.1 request with `Expect: 100-continue`.
    pub expect_continue: bool,
    /// Bytes of input the head occupied (including leading empty lines and
    /// the final CRLFCRLF); the body or next request starts here.
    pub head_len: usize,
    /// FNV-1a hash of the target's path (no query), for URL-hash balancing.
    pub path_hash: u64,
    /// An HTTP/1.1 GET without a body that asks to switch protocols
    /// (`Connection: upgrade` and `Upgrade`, e.g. WebSocket): both fields
    /// are forwarded, and a 101 answer turns the connection into a tunnel.
    pub upgrade: bool,
}

/// Parse one request head at the start of `buf`.
///
/// `Ok(None)`: incomplete, call again with more bytes (if
/// `buf.len() > ctx.limits.bytes` and still incomplete -> Err 431).
/// `Ok(Some(head))`: complete; the head to forward upstream was APPENDED to
/// `out`.
/// `Err`: the request must be refused with that status and the connection
/// closed; `out` is untouched.
pub fn parse_request(
    buf: &[u8],
    ctx: &ForwardCtx,
    out: &mut Vec<u8>,
) -> Result<Option<RequestHead>, HeadError> {
    let limits = ctx.limits;
    let max_fields = limits.fields.min(FIELDS_CEILING);
    // Fields are parsed into uninitialised slots: nothing to clear per head.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; FIELDS_CEILING];
    let bounds = match headers::scan_head(buf, limits.bytes) {
        ScanOutcome::Complete(b) => b,
        ScanOutcome::Incomplete => {
            // Run httparse on the partial head anyway so garbage is refused
            // as soon as it shows up, not after 64 KiB of it.
            let mut req = httparse::Request::new(&mut []);
            return match req.parse_with_uninit_headers(buf, &mut fields[..max_fields]) {
                Ok(_) => Ok(None),
                Err(e) => Err(map_httparse(e, buf)),
            };
        }
        ScanOutcome::TooLarge => return Err(err(431, "request head too large")),
        ScanOutcome::BareLf => return Err(bad("bare LF in head")),
        ScanOutcome::ObsFold => return Err(bad("obsolete line folding in head")),
    };
    let head = &buf[..bounds.end];

    let mut req = httparse::Request::new(&mut []);
    match req.parse_with_uninit_headers(head, &mut fields[..max_fields]) {
        Ok(httparse::Status::Complete(n)) if n == bounds.end => {}
        // Our scan and httparse disagree about where the head ends; trust
        // neither.
        Ok(_) => return Err(bad("malformed request head")),
        Err(e) => return Err(map_httparse(e, head)),
    }
    let (Some(method_str), Some(target), Some(minor_version)) = (req.method, req.path, req.version)
    else {
        return Err(bad("malformed request line"));
    };
    let method = Method::from_token(method_str.as_bytes());
    if method == Method::Connect {
        return Err(err(501, "CONNECT is not supported"));
    }
    let target = classify_target(method, target.as_bytes())?;
    let fields: &[httparse::Header<'_>] = req.headers;

    let facts = headers::field_facts(fields, minor_version).map_err(framing_error)?;
    let mut host_count = 0usize;
    let mut expect_continue = false;
    for h in fields {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"host") {
            host_count += 1;
            if !valid_host(headers::trim_ows(h.value)) {
                return Err(bad("invalid Host header"));
            }
        } else if name.eq_ignore_ascii_case(b"expect")
            && headers::trim_ows(h.value).eq_ignore_ascii_case(b"100-continue")
        {
            expect_continue = true;
        }
    }
    if host_count > 1 {
        return Err(bad("multiple Host headers"));
    }
    if host_count == 0 && minor_version == 1 && target.authority.is_none() {
        return Err(bad("missing Host header"));
    }
    // RFC 9110 §10.1.1: ignore 100-continue from HTTP/1.0 clients.
    let drop_expect = expect_continue && minor_version == 0;
    let expect_continue = expect_continue && minor_version == 1;

    let framing = if facts.chunked {
        Framing::Chunked
    } else if let Some(n) = facts.content_length {
        Framing::Length(n)
    } else {
        Framing::None
    };
    let keep_alive = if minor_version == 1 {
        !facts.close
    } else {
        facts.keep_alive && !facts.close
    };

    // RFC 9110 §7.8: an upgrade is asked for with the `Upgrade` field and
    // the `upgrade` option in `Connection`. Only plain GETs are let through
    // (WebSocket, RFC 6455 §4.1); anything else just loses the fields.
    let upgrade_to = if minor_version == 1 && method == Method::Get && framing == Framing::None {
        facts
            .connection_listed
            .iter()
            .any(|o| o.eq_ignore_ascii_case(b"upgrade"))
            .then(|| {
                fields
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
                    .map(|h| headers::trim_ows(h.value))
            })
            .flatten()
            .filter(|v| !v.is_empty())
    } else {
        None
    };

    // Everything is validated; from here on we only write.
    out.extend_from_slice(method_str.as_bytes());
    out.push(b' ');
    if target.origin_form.is_empty() || target.origin_form[0] == b'?' {
        // Absolute-form with an empty path: RFC 9112 §3.2.1 wants "/".
        out.push(b'/');
    }
    out.extend_from_slice(target.origin_form);
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut xff: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    for h in fields {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name, &facts.connection_listed) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Re-emitted normalised, so the upstream sees exactly the value
            // we framed the body with.
            let n = facts.content_length.unwrap_or(0).to_string();
            headers::write_field(out, b"Content-Length", n.as_bytes());
        } else if name.eq_ignore_ascii_case(b"host") {
            match target.authority {
                Some(authority) => headers::write_field(out, b"Host", authority),
                None => headers::write_field(out, name, h.value),
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff.push(h.value);
        } else if name.eq_ignore_ascii_case(b"forwarded") {
            forwarded.push(h.value);
        } else if drop_expect && name.eq_ignore_ascii_case(b"expect") {
            continue;
        } else {
            headers::write_field(out, name, h.value);
        }
    }
    match (target.authority, host_count) {
        (Some(authority), 0) => headers::write_field(out, b"Host", authority),
        // An HTTP/1.0 request may come without Host, but it goes upstream
        // as HTTP/1.1, which must carry one: an empty value is what RFC 9112
        // §3.2 prescribes when the authority is unknown.
        (None, 0) => headers::write_field(out, b"Host", b""),
        _ => {}
    }
    if framing == Framing::Chunked {
        headers::write_field(out, b"Transfer-Encoding", b"chunked");
    }
    if let Some(protocol) = upgrade_to {
        headers::write_field(out, b"Connection", b"upgrade");
        headers::write_field(out, b"Upgrade", protocol);
    }

    let client = ctx.client.to_canonical();
    let ip = client.to_string();
    write_appended(out, b"X-Forwarded-For", &xff, ip.as_bytes());
    let element = match client {
        IpAddr::V4(_) => format!("for={ip};proto={}", ctx.proto),
        IpAddr::V6(_) => format!("for=\"[{ip}]\";proto={}", ctx.proto),
    };
    write_appended(out, b"Forwarded", &forwarded, element.as_bytes());
    out.extend_from_slice(b"\r\n");

    Ok(Some(RequestHead {
        method,
        minor_version,
        framing,
        keep_alive,
        expect_continue,
        head_len: bounds.end,
        path_hash: headers::fnv1a(target.path),
        upgrade: upgrade_to.is_some(),
    }))
}

/// Write `name: existing1, existing2, new`, skipping empty existing values.
fn write_appended(out: &mut Vec<u8>, name: &[u8], existing: &[&[u8]], new: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for v in existing {
        let v = headers::trim_ows(v);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    out.extend_from_slice(new);
    out.extend_from_slice(b"\r\n");
}

/// The request target, split the ways the proxy needs it.
struct Target<'a> {
    /// What goes on the forwarded request line (may be empty or start with
    /// `?` for absolute-form with an empty path; the writer adds `/`).
    origin_form: &'a [u8],
    /// The path without query, for hashing.
    path: &'a [u8],
    /// The authority of an absolute-form target.
    authority: Option<&'a [u8]>,
}

fn classify_target(method: Method, target: &[u8]) -> Result<Target<'_>, HeadError> {
    if target.contains(&b'#') {
        return Err(bad("fragment in request target"));
    }
    if target == b"*" {
        if method != Method::Options {
            return Err(bad("asterisk-form target is only allowed with OPTIONS"));
        }
        return Ok(Target {
            origin_form: target,
            path: target,
            authority: None,
        });
    }
    if target.first() == Some(&b'/') {
        return Ok(Target {
            origin_form: target,
            path: path_of(target),
            authority: None,
        });
    }
    let rest = strip_prefix_ignore_case(target, b"http://")
        .or_else(|| strip_prefix_ignore_case(target, b"https://"))
        .ok_or(bad("invalid request target"))?;
    let auth_end = rest
        .iter()
        .position(|&b| b == b'/' || b == b'?')
        .unwrap_or(rest.len());
    let (authority, origin_form) = rest.split_at(auth_end);
    if authority.contains(&b'@') {
        return Err(bad("userinfo in request target"));
    }
    if authority.is_empty() || !valid_host(authority) {
        return Err(bad("invalid authority in request target"));
    }
    let path = path_of(origin_form);
    Ok(Target {
        origin_form,
        // An empty path is "/" on the wire, so hash it as "/" too.
        path: if path.is_empty() { b"/" } else { path },
        authority: Some(authority),
    })
}

fn path_of(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|&b| b == b'?')
        .unwrap_or(target.len());
    &target[..end]
}

fn strip_prefix_ignore_case<'a>(s: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    if s.len() >= prefix.len() && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// `uri-host [ ":" port ]` characters: reg-name (unreserved, pct-encoded,
/// sub-delims), IP-literal brackets, and the port colon. Empty is allowed
/// (RFC 9110 §7.2 permits an empty Host).
fn valid_host(v: &[u8]) -> bool {
    v.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=:[]".contains(&b))
}

fn framing_error(fault: FramingFault) -> HeadError {
    match fault {
        FramingFault::BothLengthAndChunked => bad("both Content-Length and Transfer-Encoding"),
        FramingFault::MultipleLength => bad("multiple Content-Length values"),
        FramingFault::BadLength => bad("invalid Content-Length"),
        FramingFault::NotChunkedFinal => bad("Transfer-Encoding does not end with chunked"),
        FramingFault::ChunkedTwice => bad("chunked applied more than once"),
        FramingFault::UnsupportedCoding => err(501, "unsupported transfer coding"),
        FramingFault::TransferEncodingInHttp10 => bad("Transfer-Encoding in an HTTP/1.0 request"),
    }
}

fn map_httparse(e: httparse::Error, buf: &[u8]) -> HeadError {
    match e {
        httparse::Error::TooManyHeaders => err(431, "too many header fields"),
        // httparse only knows HTTP/1.0 and 1.1. Anything else that still
        // looks like an HTTP version is a version we don't support (505);
        // otherwise the request line is just garbage (400).
        httparse::Error::Version if first_line_has_http_version(buf) => {
            err(505, "HTTP version not supported")
        }
        httparse::Error::Version => bad("malformed request line"),
        httparse::Error::Token => bad("malformed request line"),
        httparse::Error::Status => bad("malformed request line"),
        httparse::Error::HeaderName => bad("invalid header name"),
        httparse::Error::HeaderValue => bad("invalid header value"),
        httparse::Error::NewLine => bad("invalid line ending"),
    }
}

fn first_line_has_http_version(buf: &[u8]) -> bool {
    let line = buf
        .split(|&b| b == b'\r' || b == b'\n')
        .find(|l| !l.is_empty())
        .unwrap_or(b"");
    // Exactly `method SP target SP HTTP/...`: a stray extra space is a
    // malformed line, not an unsupported version.
    let mut parts = line.split(|&b| b == b' ');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some(_), Some(_), Some(v), None) if v.starts_with(b"HTTP/")
    )
}

fn bad(reason: &'static str) -> HeadError {
    err(400, reason)
}

fn err(status: u16, reason: &'static str) -> HeadError {
    HeadError { status, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_support::parse_all_prefixes;
    use crate::codec::{MAX_HEADERS, MAX_HEAD_BYTES};

    /// The forwarding fields added for the default (IPv4) client, plus the
    /// blank line.
    macro_rules! fwd {
        () => {
            "X-Forwarded-For: 10.0.0.9\r\nForwarded: for=10.0.0.9;proto=http\r\n\r\n"
        };
    }

    const V4: ForwardCtx = ForwardCtx {
        client: IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9)),
        proto: "http",
        limits: HeadLimits::DEFAULT,
    };

    fn ctx(ip: &str) -> ForwardCtx {
        ForwardCtx {
            client: ip.parse().unwrap(),
            proto: "http",
            limits: HeadLimits::DEFAULT,
        }
    }

    /// What an accepted request should produce.
    #[derive(Clone, Copy)]
    struct Want {
        method: Method,
        minor: u8,
        framing: Framing,
        keep_alive: bool,
        expect_continue: bool,
        path: &'static str,
        /// Bytes after the head (body / next request) in the input.
        trailing: usize,
        upgrade: bool,
        out: &'static str,
    }

    const GET11: Want = Want {
        method: Method::Get,
        minor: 1,
        framing: Framing::None,
        keep_alive: true,
        expect_continue: false,
        path: "/",
        trailing: 0,
        upgrade: false,
        out: "",
    };

    enum Exp {
        Ok(Want),
        Err(u16),
    }

    fn run(
        name: &str,
        ctx: &ForwardCtx,
        input: &[u8],
    ) -> (Result<Option<RequestHead>, HeadError>, Vec<u8>) {
        parse_all_prefixes(
            name,
            input,
            |b, out| parse_request(b, ctx, out),
            |h| h.head_len,
        )
    }

    #[test]
    fn table() {
        let v6 = ctx("2001:db8::1");
        let mapped = ctx("::ffff:10.0.0.9");
        let cases: Vec<(&str, &ForwardCtx, &[u8], Exp)> = vec![
            (
                "get 1.1 defaults",
                &V4,
                b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n\r\n",
                Exp::Ok(Want {
                    path: "/a/b",
                    out: concat!(
                        "GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nAccept: */*\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "get 1.0 defaults, no host",
                &V4,
                b"GET / HTTP/1.0\r\n\r\n",
                Exp::Ok(Want {
                    minor: 0,
                    keep_alive: false,
                    out: concat!("GET / HTTP/1.1\r\nHost: \r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "websocket upgrade keeps Upgrade and Connection: upgrade",
                &V4,
                b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: k\r\n\r\n",
                Exp::Ok(Want {
                    path: "/ws",
                    upgrade: true,
                    out: concat!(
                        "GET /ws HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: k\r\n",
                        "Connection: upgrade\r\nUpgrade: websocket\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "upgrade on a POST is not forwarded",
                &V4,
                b"POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Post,
                    path: "/ws",
                    framing: Framing::Length(0),
                    out: concat!("POST /ws HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "get 1.0 keep-alive",
                &V4,
                b"GET / HTTP/1.0\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n",
                Exp::Ok(Want {
                    minor: 0,
                    out: concat!("GET / HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "head 1.1 connection close",
                &V4,
                b"HEAD /h HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Head,
                    keep_alive: false,
                    path: "/h",
                    out: concat!("HEAD /h HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "hop-by-hop removal",
                &V4,
                b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\
                  Keep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\n\
                  Upgrade: websocket\r\nX-Bar: 2\r\nTrailer: X-T\r\n\
                  Proxy-Authorization: Basic eA==\r\nx-foo: 3\r\n\r\n",
                Exp::Ok(Want {
                    keep_alive: false,
                    out: concat!(
                        "GET / HTTP/1.1\r\nHost: a\r\nX-Bar: 2\r\nTrailer: X-T\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "connection cannot drop framing fields",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nConnection: Content-Length, Host\r\nContent-Length: 3\r\n\r\nabc",
                Exp::Ok(Want {
                    method: Method::Post,
                    framing: Framing::Length(3),
                    trailing: 3,
                    out: concat!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "xff and forwarded appended to existing",
                &V4,
                b"GET / HTTP/1.1\r\nX-Forwarded-For: 1.1.1.1\r\nHost: a\r\n\
                  x-forwarded-for: 2.2.2.2, 3.3.3.3\r\nForwarded: for=1.1.1.1;proto=https\r\n\r\n",
                Exp::Ok(Want {
                    out: "GET / HTTP/1.1\r\nHost: a\r\n\
                          X-Forwarded-For: 1.1.1.1, 2.2.2.2, 3.3.3.3, 10.0.0.9\r\n\
                          Forwarded: for=1.1.1.1;proto=https, for=10.0.0.9;proto=http\r\n\r\n",
                    ..GET11
                }),
            ),
            (
                "ipv6 client",
                &v6,
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Exp::Ok(Want {
                    out: "GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 2001:db8::1\r\n\
                          Forwarded: for=\"[2001:db8::1]\";proto=http\r\n\r\n",
                    ..GET11
                }),
            ),
            (
                "ipv4-mapped client shown as ipv4",
                &mapped,
                b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Exp::Ok(Want {
                    out: concat!("GET / HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "absolute-form adds host",
                &V4,
                b"GET http://Example.com:8080/p?q=1 HTTP/1.1\r\nAccept: x\r\n\r\n",
                Exp::Ok(Want {
                    path: "/p",
                    out: concat!(
                        "GET /p?q=1 HTTP/1.1\r\nAccept: x\r\nHost: Example.com:8080\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "absolute-form replaces host, empty path",
                &V4,
                b"GET HTTP://a.example HTTP/1.1\r\nHost: other\r\nX: y\r\n\r\n",
                Exp::Ok(Want {
                    out: concat!("GET / HTTP/1.1\r\nHost: a.example\r\nX: y\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "absolute-form query only",
                &V4,
                b"GET https://a?x HTTP/1.1\r\n\r\n",
                Exp::Ok(Want {
                    out: concat!("GET /?x HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "options asterisk",
                &V4,
                b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Options,
                    path: "*",
                    out: concat!("OPTIONS * HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "chunked post",
                &V4,
                b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nX: 1\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Post,
                    framing: Framing::Chunked,
                    path: "/up",
                    trailing: 15,
                    out: concat!(
                        "POST /up HTTP/1.1\r\nHost: a\r\nX: 1\r\nTransfer-Encoding: chunked\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "chunked with empty list elements and case",
                &V4,
                b"PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: , Chunked \r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Put,
                    framing: Framing::Chunked,
                    out: concat!("PUT / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "expect 100-continue",
                &V4,
                b"PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Put,
                    framing: Framing::Length(10),
                    expect_continue: true,
                    path: "/x",
                    out: concat!(
                        "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 10\r\n",
                        fwd!()
                    ),
                    ..GET11
                }),
            ),
            (
                "expect ignored for 1.0",
                &V4,
                b"POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Post,
                    minor: 0,
                    keep_alive: false,
                    framing: Framing::Length(0),
                    out: concat!("POST / HTTP/1.1\r\nContent-Length: 0\r\nHost: \r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "leading empty lines",
                &V4,
                b"\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
                Exp::Ok(Want {
                    out: concat!("GET / HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "content-length normalised",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\ncontent-length:  007 \r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Post,
                    framing: Framing::Length(7),
                    out: concat!("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 7\r\n", fwd!()),
                    ..GET11
                }),
            ),
            (
                "unknown and lowercase methods",
                &V4,
                b"get / HTTP/1.1\r\nHost: a\r\n\r\n",
                Exp::Ok(Want {
                    method: Method::Other,
                    out: concat!("get / HTTP/1.1\r\nHost: a\r\n", fwd!()),
                    ..GET11
                }),
            ),
            // Rejections.
            ("bare lf", &V4, b"GET / HTTP/1.1\nHost: a\n\n", Exp::Err(400)),
            ("bare lf at end", &V4, b"GET / HTTP/1.1\r\nHost: a\r\n\n", Exp::Err(400)),
            ("leading bare lf", &V4, b"\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("obs-fold", &V4, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", Exp::Err(400)),
            ("space before first field", &V4, b"GET / HTTP/1.1\r\n Host: a\r\n\r\n", Exp::Err(400)),
            ("space before colon", &V4, b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", Exp::Err(400)),
            (
                "cl and te",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Err(400),
            ),
            (
                "two equal cl",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
                Exp::Err(400),
            ),
            ("cl list", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3, 3\r\n\r\n", Exp::Err(400)),
            ("cl alpha", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3a\r\n\r\n", Exp::Err(400)),
            ("cl negative", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", Exp::Err(400)),
            ("cl plus", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +1\r\n\r\n", Exp::Err(400)),
            ("cl empty", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: \r\n\r\n", Exp::Err(400)),
            (
                "cl overflow",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 18446744073709551616\r\n\r\n",
                Exp::Err(400),
            ),
            ("te gzip", &V4, b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", Exp::Err(400)),
            (
                "te chunked not final",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
                Exp::Err(400),
            ),
            (
                "te chunked twice",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
                Exp::Err(400),
            ),
            (
                "te chunked twice across fields",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Err(400),
            ),
            (
                "te chunked with params",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n",
                Exp::Err(400),
            ),
            (
                "te unsupported coding",
                &V4,
                b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
                Exp::Err(501),
            ),
            (
                "te in http/1.0",
                &V4,
                b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Err(400),
            ),
            ("missing host", &V4, b"GET / HTTP/1.1\r\nX: y\r\n\r\n", Exp::Err(400)),
            ("two hosts", &V4, b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("two hosts 1.0", &V4, b"GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", Exp::Err(400)),
            ("host with space", &V4, b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", Exp::Err(400)),
            ("host with slash", &V4, b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", Exp::Err(400)),
            ("http/2.0", &V4, b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", Exp::Err(505)),
            ("http/1.2", &V4, b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", Exp::Err(505)),
            ("not http", &V4, b"GET / FOO/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("double space", &V4, b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("garbage", &V4, b"\x01\x02\x03\r\n\r\n", Exp::Err(400)),
            ("connect", &V4, b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", Exp::Err(501)),
            ("nul in value", &V4, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", Exp::Err(400)),
            ("bare cr in value", &V4, b"GET / HTTP/1.1\r\nHost: a\r\nX: a\rb\r\n\r\n", Exp::Err(400)),
            ("bad header name", &V4, b"GET / HTTP/1.1\r\nHost: a\r\nX(y): 1\r\n\r\n", Exp::Err(400)),
            ("userinfo", &V4, b"GET http://u:p@a/ HTTP/1.1\r\n\r\n", Exp::Err(400)),
            ("fragment", &V4, b"GET /a#b HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("asterisk with get", &V4, b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("relative target", &V4, b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("other scheme", &V4, b"GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
            ("empty authority", &V4, b"GET http:///x HTTP/1.1\r\nHost: a\r\n\r\n", Exp::Err(400)),
        ];
        for (name, ctx, input, exp) in cases {
            let (got, out) = run(name, ctx, input);
            match exp {
                Exp::Ok(w) => {
                    let head = got.unwrap_or_else(|e| panic!("{name}: {e:?}")).expect(name);
                    let want = RequestHead {
                        method: w.method,
                        minor_version: w.minor,
                        framing: w.framing,
                        keep_alive: w.keep_alive,
                        expect_continue: w.expect_continue,
                        head_len: input.len() - w.trailing,
                        path_hash: headers::fnv1a(w.path.as_bytes()),
                        upgrade: w.upgrade,
                    };
                    assert_eq!(head, want, "{name}");
                    assert_eq!(String::from_utf8_lossy(&out), w.out, "{name}");
                }
                Exp::Err(status) => {
                    let e = got.expect_err(name);
                    assert_eq!(e.status, status, "{name}: {e:?}");
                    assert!(!e.reason.is_empty() && !e.reason.contains(['\r', '\n']));
                }
            }
        }
    }

    #[test]
    fn obs_text_value_forwarded_verbatim() {
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Name: caf\xc3\xa9\r\n\r\n";
        let (got, out) = run("obs-text", &V4, input);
        assert!(got.unwrap().is_some());
        let want: &[u8] = b"X-Name: caf\xc3\xa9\r\n";
        assert!(out.windows(want.len()).any(|w| w == want));
    }

    #[test]
    fn pipelined() {
        let input = b"GET /one HTTP/1.1\r\nHost: a\r\n\r\nGET /two HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n";
        let mut out = Vec::new();
        let first = parse_request(input, &V4, &mut out).unwrap().unwrap();
        assert_eq!(first.path_hash, headers::fnv1a(b"/one"));
        assert!(first.keep_alive);
        let rest = &input[first.head_len..];
        let second = parse_request(rest, &V4, &mut out).unwrap().unwrap();
        assert_eq!(second.path_hash, headers::fnv1a(b"/two"));
        assert!(!second.keep_alive);
        assert_eq!(second.head_len, rest.len());
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("GET /one HTTP/1.1\r\n"));
        assert_eq!(text.matches("GET /two HTTP/1.1\r\n").count(), 1);
    }

    #[test]
    fn too_many_headers() {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 0..MAX_HEADERS {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        let (got, _) = run("too many headers", &V4, &input);
        assert_eq!(got.unwrap_err().status, 431);

        // Exactly MAX_HEADERS is fine.
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\n".to_vec();
        for i in 1..MAX_HEADERS {
            input.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        input.extend_from_slice(b"\r\n");
        assert!(parse_request(&input, &V4, &mut Vec::new())
            .unwrap()
            .is_some());
    }

    #[test]
    fn head_too_large() {
        let mut input = b"GET / HTTP/1.1\r\nHost: a\r\nX-Big: ".to_vec();
        input.resize(MAX_HEAD_BYTES - 4, b'a');
        input.extend_from_slice(b"\r\n\r\n");
        // A head of exactly MAX_HEAD_BYTES is accepted...
        assert_eq!(input.len(), MAX_HEAD_BYTES);
        let mut out = Vec::new();
        let head = parse_request(&input, &V4, &mut out).unwrap().unwrap();
        assert_eq!(head.head_len, MAX_HEAD_BYTES);
        // ...one byte more is 431, whether complete or not.
        input.insert(40, b'a');
        let mut out = Vec::new();
        assert_eq!(
            parse_request(&input, &V4, &mut out).unwrap_err().status,
            431
        );
        assert!(out.is_empty());
        for cut in [MAX_HEAD_BYTES - 1, MAX_HEAD_BYTES] {
            assert_eq!(parse_request(&input[..cut], &V4, &mut out), Ok(None));
        }
        assert_eq!(
            parse_request(&input[..MAX_HEAD_BYTES + 1], &V4, &mut out)
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn configured_limits_replace_the_defaults() {
        let small = ForwardCtx {
            limits: HeadLimits {
                bytes: 2048,
                fields: 3,
            },
            ..V4
        };
        let mut out = Vec::new();
        let three = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(parse_request(three, &small, &mut out).unwrap().is_some());
        let four = b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(
            parse_request(four, &small, &mut out).unwrap_err().status,
            431
        );
        assert!(parse_request(four, &V4, &mut out).unwrap().is_some());
        let mut long = b"GET / HTTP/1.1\r\nHost: a\r\nA: ".to_vec();
        long.resize(3000, b'x');
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(
            parse_request(&long, &small, &mut out).unwrap_err().status,
            431
        );
        assert!(parse_request(&long, &V4, &mut out).unwrap().is_some());
        // A partial head past the limit is refused before it ends.
        assert_eq!(
            parse_request(&long[..2100], &small, &mut out)
                .unwrap_err()
                .status,
            431
        );
    }

    #[test]
    fn is_safe() {
        assert!(Method::Get.is_safe() && Method::Head.is_safe() && Method::Options.is_safe());
        assert!(!Method::Post.is_safe() && !Method::Other.is_safe());
    }
}
