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
//!   written after the other fields; so is `Via`, with our own entry
//!   (`1.x NAME`, RFC 9110 §7.6.3) last, unless [`ForwardCtx::via`] is off.
//! - HTTP/1.x with a minor version above 1 is processed as HTTP/1.1 (RFC
//!   9110 §6.2: as the highest minor version we implement).
//! - `Upgrade: h2c` is dropped with `HTTP2-Settings` and the request goes on
//!   as a plain one: a cleartext HTTP/2 upgrade through a proxy lets a
//!   client tunnel past it (h2c smuggling). Other upgrade tokens are kept.
//! - `Max-Forwards` on OPTIONS and TRACE (RFC 9110 §7.6.2): 0 means we are
//!   the final recipient ([`RequestHead::answer_here`]); other values go
//!   upstream decremented. Other methods forward it untouched.
//! - An HTTP/1.0 request without `Host` is forwarded without one and
//!   flagged ([`RequestHead::needs_host`]): the caller inserts the Host of
//!   the upstream it picks, which is what the origin expects to see.
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
    /// Our name in `Via` (`Via: 1.1 NAME`), or None to add no `Via`.
    pub via: Option<&'static str>,
    /// The affinity cookie's name: taken out of `Cookie` before the request
    /// goes upstream, its value reported in [`RequestHead::affinity`].
    pub affinity_cookie: Option<&'static str>,
    /// A field ringmux itself writes (the session hand-off's peer): a
    /// client's copy never goes upstream.
    pub drop_field: Option<&'static str>,
}

/// A parsed, validated request head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// 0 or 1 (HTTP/1.0 or HTTP/1.1; a higher HTTP/1.x minor version is
    /// reported as 1).
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
    /// FNV-1a hash of the forwarded target, query included: the route whose
    /// service times decide whether pipelined requests may share a
    /// connection.
    pub route_hash: u64,
    /// An HTTP/1.1 GET without a body that asks to switch protocols
    /// (`Connection: upgrade` and `Upgrade`, e.g. WebSocket): both fields
    /// are forwarded, and a 101 answer turns the connection into a tunnel.
    pub upgrade: bool,
    /// OPTIONS or TRACE with `Max-Forwards: 0`: not to be forwarded; the
    /// proxy answers it as the final recipient.
    pub answer_here: bool,
    /// No `Host` was received (HTTP/1.0) and none was written: the caller
    /// inserts one just before the forwarded head's final CRLF.
    pub needs_host: bool,
    /// Where the affinity cookie's value is in the input (offset from the
    /// start of `buf`, length), if the request carried one.
    pub affinity: Option<(u32, u8)>,
    /// Where the forwarded target (origin-form, query included) is in the
    /// head written to `out`: start and end, from the head's first byte.
    pub target: (u32, u32),
    /// Where the forwarded `Host` value is in the head written to `out`
    /// (from the field or an absolute-form target), if there is one.
    pub host: Option<(u32, u32)>,
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
    match parse_request_as_is(buf, ctx, out) {
        // httparse knows only 1.0 and 1.1. A later HTTP/1.x is processed as
        // 1.1 (RFC 9110 §6.2): parse a copy whose version digit says so.
        // Rare, so the copy costs nothing that matters.
        Err(e) if e.status == 505 => match later_minor_version(buf) {
            Some(digit_at) => {
                let mut copy = buf[..buf.len().min(ctx.limits.bytes + 1)].to_vec();
                copy[digit_at] = b'1';
                parse_request_as_is(&copy, ctx, out)
            }
            None => Err(e),
        },
        other => other,
    }
}

/// Where the minor version digit of the request line sits if the line
/// (complete or not) says `HTTP/1.d` with `d` from 2 to 9.
fn later_minor_version(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let line_len = buf[start..]
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(buf.len() - start);
    let line = &buf[start..start + line_len];
    let mut parts = line.split(|&b| b == b' ');
    let (Some(_), Some(_), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let digit_ok = version.len() == 8
        && version.starts_with(b"HTTP/1.")
        && (b'2'..=b'9').contains(&version[7]);
    digit_ok.then(|| start + line_len - 1)
}

fn parse_request_as_is(
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
    let mut max_forwards_fields = 0usize;
    let mut max_forwards = None;
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
        } else if name.eq_ignore_ascii_case(b"max-forwards") {
            max_forwards_fields += 1;
            max_forwards = parse_max_forwards(h.value);
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
    // RFC 9110 §7.6.2: Max-Forwards counts down on OPTIONS and TRACE only.
    // One valid value is honoured; anything else is forwarded as it came.
    let max_forwards = match method {
        Method::Options | Method::Trace if max_forwards_fields == 1 => max_forwards,
        _ => None,
    };
    let answer_here = max_forwards == Some(0);

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
    // (WebSocket, RFC 6455 §4.1); anything else just loses the fields. h2c
    // is never passed on (see the module doc).
    let mut upgrade_to: Vec<u8> = Vec::new();
    let asks_upgrade = minor_version == 1
        && method == Method::Get
        && framing == Framing::None
        && facts
            .connection_listed
            .iter()
            .any(|o| o.eq_ignore_ascii_case(b"upgrade"));
    if asks_upgrade {
        if let Some(h) = fields
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            for protocol in headers::list_elements(h.value) {
                let name = protocol.split(|&b| b == b'/').next().unwrap_or(b"");
                if name.eq_ignore_ascii_case(b"h2c") {
                    continue;
                }
                if !upgrade_to.is_empty() {
                    upgrade_to.extend_from_slice(b", ");
                }
                upgrade_to.extend_from_slice(protocol);
            }
        }
    }

    // Everything is validated; from here on we only write.
    let head_start = out.len();
    out.extend_from_slice(method_str.as_bytes());
    out.push(b' ');
    let target_start = out.len();
    if target.origin_form.is_empty() || target.origin_form[0] == b'?' {
        // Absolute-form with an empty path: RFC 9112 §3.2.1 wants "/".
        out.push(b'/');
    }
    out.extend_from_slice(target.origin_form);
    let route_hash = headers::fnv1a(&out[target_start..]);
    let target_at = (
        (target_start - head_start) as u32,
        (out.len() - head_start) as u32,
    );
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut host_at = None;
    // Where a field's value lands when written now.
    let value_at = |out: &Vec<u8>, name: &[u8], value: &[u8]| {
        let start = out.len() - head_start + name.len() + 2;
        Some((start as u32, (start + value.len()) as u32))
    };

    let mut xff: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut via: Vec<&[u8]> = Vec::new();
    let mut affinity = None;
    for h in fields {
        let name = h.name.as_bytes();
        if name.eq_ignore_ascii_case(b"te")
            && h.value.trim_ascii().eq_ignore_ascii_case(b"trailers")
        {
            // The one TE that says something of the message, not the hop:
            // the client takes trailers (gRPC servers require it).
            headers::write_field(out, b"TE", b"trailers");
            continue;
        }
        if headers::is_hop_by_hop(name, &facts.connection_listed) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Re-emitted normalised, so the upstream sees exactly the value
            // we framed the body with.
            headers::write_decimal_field(out, b"Content-Length", facts.content_length.unwrap_or(0));
        } else if name.eq_ignore_ascii_case(b"host") {
            let (name, value) = match target.authority {
                Some(authority) => (&b"Host"[..], authority),
                None => (name, h.value),
            };
            host_at = value_at(out, name, value);
            headers::write_field(out, name, value);
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff.push(h.value);
        } else if ctx.proto == "https" && name.eq_ignore_ascii_case(b"x-forwarded-proto") {
            // Over TLS we say what the client used; its own claim goes.
            continue;
        } else if name.eq_ignore_ascii_case(b"forwarded") {
            forwarded.push(h.value);
        } else if ctx.via.is_some() && name.eq_ignore_ascii_case(b"via") {
            via.push(h.value);
        } else if drop_expect && name.eq_ignore_ascii_case(b"expect") {
            continue;
        } else if let (Some(n), true) = (max_forwards, name.eq_ignore_ascii_case(b"max-forwards")) {
            headers::write_decimal_field(out, b"Max-Forwards", u64::from(n.saturating_sub(1)));
        } else if ctx
            .drop_field
            .is_some_and(|f| name.eq_ignore_ascii_case(f.as_bytes()))
        {
            continue;
        } else if let (Some(cookie), true) =
            (ctx.affinity_cookie, name.eq_ignore_ascii_case(b"cookie"))
        {
            let found = write_cookie_without(out, name, h.value, cookie.as_bytes());
            if affinity.is_none() {
                affinity = found.and_then(|v| offset_in(buf, v));
            }
        } else {
            headers::write_field(out, name, h.value);
        }
    }
    if let (Some(authority), 0) = (target.authority, host_count) {
        host_at = value_at(out, b"Host", authority);
        headers::write_field(out, b"Host", authority);
    }
    // An HTTP/1.0 request may come without Host, but it goes upstream as
    // HTTP/1.1, which must carry one: the caller adds the upstream's.
    let needs_host = host_count == 0 && target.authority.is_none();
    if framing == Framing::Chunked {
        headers::write_field(out, b"Transfer-Encoding", b"chunked");
    }
    if !upgrade_to.is_empty() {
        headers::write_field(out, b"Connection", b"upgrade");
        headers::write_field(out, b"Upgrade", &upgrade_to);
    }

    // Written in place: these run for every request, so nothing here may
    // allocate.
    let client = ctx.client.to_canonical();
    write_appended(out, b"X-Forwarded-For", &xff, |out| write_ip(out, client));
    if ctx.proto == "https" {
        headers::write_field(out, b"X-Forwarded-Proto", b"https");
    }
    write_appended(out, b"Forwarded", &forwarded, |out| {
        match client {
            IpAddr::V4(_) => {
                out.extend_from_slice(b"for=");
                write_ip(out, client);
            }
            IpAddr::V6(_) => {
                out.extend_from_slice(b"for=\"[");
                write_ip(out, client);
                out.extend_from_slice(b"]\"");
            }
        }
        out.extend_from_slice(b";proto=");
        out.extend_from_slice(ctx.proto.as_bytes());
    });
    if let Some(name) = ctx.via {
        write_via(out, &via, minor_version, name);
    }
    out.extend_from_slice(b"\r\n");

    Ok(Some(RequestHead {
        method,
        minor_version,
        framing,
        keep_alive,
        expect_continue,
        head_len: bounds.end,
        path_hash: headers::fnv1a(target.path),
        route_hash,
        upgrade: !upgrade_to.is_empty(),
        answer_here,
        needs_host,
        affinity,
        target: target_at,
        host: host_at,
    }))
}

/// Write the `Cookie` field `value` without the pairs named `cookie`
/// (nothing when none is left); returns the first such pair's value.
fn write_cookie_without<'a>(
    out: &mut Vec<u8>,
    name: &[u8],
    value: &'a [u8],
    cookie: &[u8],
) -> Option<&'a [u8]> {
    let mut found = None;
    let mut wrote = false;
    for pair in value.split(|&b| b == b';') {
        let pair = headers::trim_ows(pair);
        if pair.is_empty() {
            continue;
        }
        let is_ours = pair
            .split(|&b| b == b'=')
            .next()
            .is_some_and(|n| headers::trim_ows(n) == cookie);
        if is_ours {
            if found.is_none() {
                let eq = pair
                    .iter()
                    .position(|&b| b == b'=')
                    .map_or(pair.len(), |i| i + 1);
                found = Some(headers::trim_ows(&pair[eq..]));
            }
            continue;
        }
        if wrote {
            out.extend_from_slice(b"; ");
        } else {
            out.extend_from_slice(name);
            out.extend_from_slice(b": ");
            wrote = true;
        }
        out.extend_from_slice(pair);
    }
    if wrote {
        out.extend_from_slice(b"\r\n");
    }
    found
}

/// Where `part` (a slice of `buf`) starts in `buf`, with its length, if it
/// is short enough to be a cookie of ours.
fn offset_in(buf: &[u8], part: &[u8]) -> Option<(u32, u8)> {
    let start = (part.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let len = u8::try_from(part.len()).ok()?;
    (start + part.len() <= buf.len()).then_some((start as u32, len))
}

/// `Max-Forwards = 1*DIGIT` (RFC 9110 §7.6.2); None if malformed. Values
/// beyond u32 are capped: the count only ever goes down.
fn parse_max_forwards(v: &[u8]) -> Option<u32> {
    let v = headers::trim_ows(v);
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |n, &d| {
        n.saturating_mul(10).saturating_add(u32::from(d - b'0'))
    }))
}

/// Write the merged `Via` field with our own entry last.
pub(super) fn write_via(out: &mut Vec<u8>, existing: &[&[u8]], minor_version: u8, name: &str) {
    write_appended(out, b"Via", existing, |out| {
        out.extend_from_slice(b"1.");
        headers::write_decimal(out, u64::from(minor_version));
        out.push(b' ');
        out.extend_from_slice(name.as_bytes());
    });
}

/// An address in its usual text form, without an intermediate `String`
/// (IPv4, the common case, without the formatting machinery at all).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                headers::write_decimal(out, u64::from(octet));
            }
        }
        IpAddr::V6(v6) => {
            use std::io::Write as _;
            // Writing to a Vec cannot fail.
            let _ = write!(out, "{v6}");
        }
    }
}

/// The body of our answer to a `TRACE` with `Max-Forwards: 0` (RFC 9110
/// §9.3.8): the request head as received (`head` is a complete head that
/// [`parse_request`] accepted), minus the fields likely to carry
/// credentials, which the final recipient should leave out.
pub fn trace_echo(head: &[u8], out: &mut Vec<u8>) {
    const SENSITIVE: [&[u8]; 3] = [b"authorization", b"proxy-authorization", b"cookie"];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let request_line = lines.by_ref().find(|l| !l.is_empty()).unwrap_or(b"");
    out.extend_from_slice(request_line);
    out.extend_from_slice(b"\r\n");
    for line in lines.take_while(|l| !l.is_empty()) {
        let name = line.split(|&b| b == b':').next().unwrap_or(b"");
        if SENSITIVE.iter().any(|s| name.eq_ignore_ascii_case(s)) {
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Write `name: existing1, existing2, new`, skipping empty existing values;
/// `new` writes the last element.
fn write_appended(
    out: &mut Vec<u8>,
    name: &[u8],
    existing: &[&[u8]],
    new: impl FnOnce(&mut Vec<u8>),
) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    for v in existing {
        let v = headers::trim_ows(v);
        if !v.is_empty() {
            out.extend_from_slice(v);
            out.extend_from_slice(b", ");
        }
    }
    new(out);
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
mod tests;
