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
    out.extend_from_slice(method_str.as_bytes());
    out.push(b' ');
    let target_start = out.len();
    if target.origin_form.is_empty() || target.origin_form[0] == b'?' {
        // Absolute-form with an empty path: RFC 9112 §3.2.1 wants "/".
        out.push(b'/');
    }
    out.extend_from_slice(target.origin_form);
    let route_hash = headers::fnv1a(&out[target_start..]);
    out.extend_from_slice(b" HTTP/1.1\r\n");

    let mut xff: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut via: Vec<&[u8]> = Vec::new();
    let mut affinity = None;
    for h in fields {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name, &facts.connection_listed) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            // Re-emitted normalised, so the upstream sees exactly the value
            // we framed the body with.
            headers::write_decimal_field(out, b"Content-Length", facts.content_length.unwrap_or(0));
        } else if name.eq_ignore_ascii_case(b"host") {
            match target.authority {
                Some(authority) => headers::write_field(out, b"Host", authority),
                None => headers::write_field(out, name, h.value),
            }
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") {
            xff.push(h.value);
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
        via: None,
        affinity_cookie: None,
        drop_field: None,
    };

    fn ctx(ip: &str) -> ForwardCtx {
        ForwardCtx {
            client: ip.parse().unwrap(),
            proto: "http",
            limits: HeadLimits::DEFAULT,
            via: None,
            affinity_cookie: None,
            drop_field: None,
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
        /// No Host came, none was written.
        needs_host: bool,
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
        needs_host: false,
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
                    needs_host: true,
                    out: concat!("GET / HTTP/1.1\r\n", fwd!()),
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
                    needs_host: true,
                    out: concat!("POST / HTTP/1.1\r\nContent-Length: 0\r\n", fwd!()),
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
            ("http/1.10", &V4, b"GET / HTTP/1.10\r\nHost: a\r\n\r\n", Exp::Err(400)),
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
                        route_hash: headers::fnv1a(request_target(w.out).as_bytes()),
                        upgrade: w.upgrade,
                        answer_here: false,
                        needs_host: w.needs_host,
                        affinity: None,
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

    /// Parse `input` whole (and checked at every prefix), expecting a
    /// complete head; returns it and the forwarded bytes as text.
    fn accept(ctx: &ForwardCtx, input: &[u8]) -> (RequestHead, String) {
        let (got, out) = run("accept", ctx, input);
        let head = got.expect("accepted").expect("complete");
        (head, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_later_http_1_minor_version_is_processed_as_1_1() {
        for v in ["1.2", "1.9"] {
            let input = format!("GET /x HTTP/{v}\r\nHost: a\r\n\r\n");
            let (head, out) = accept(&V4, input.as_bytes());
            assert_eq!(head.minor_version, 1, "{v}");
            assert!(head.keep_alive);
            assert_eq!(head.head_len, input.len());
            assert!(out.starts_with("GET /x HTTP/1.1\r\nHost: a\r\n"), "{out}");
        }
        // Still HTTP/1.1 rules: Host is required.
        let (got, _) = run("1.2 no host", &V4, b"GET / HTTP/1.2\r\n\r\n");
        assert_eq!(got.unwrap_err().status, 400);
        for bad in ["2.0", "0.9"] {
            let input = format!("GET / HTTP/{bad}\r\nHost: a\r\n\r\n");
            let (got, _) = run(bad, &V4, input.as_bytes());
            assert_eq!(got.unwrap_err().status, 505, "{bad}");
        }
    }

    #[test]
    fn an_h2c_upgrade_is_dropped_and_the_request_goes_on_plain() {
        let (head, out) = accept(
            &V4,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert!(!head.upgrade);
        assert_eq!(out, concat!("GET / HTTP/1.1\r\nHost: a\r\n", fwd!()));
        // HTTP2-Settings goes even when Connection does not list it.
        let (head, out) = accept(
            &V4,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: H2C\r\n\
              HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
        );
        assert!(!head.upgrade);
        assert!(
            !out.to_ascii_lowercase().contains("http2-settings"),
            "{out}"
        );
        // Other protocols offered with it keep working.
        let (head, out) = accept(
            &V4,
            b"GET / HTTP/1.1\r\nHost: a\r\nConnection: upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
        );
        assert!(head.upgrade);
        assert!(
            out.contains("\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"),
            "{out}"
        );
    }

    #[test]
    fn max_forwards_counts_down_on_options_and_trace_only() {
        let (head, out) = accept(
            &V4,
            b"OPTIONS * HTTP/1.1\r\nHost: a\r\nMax-Forwards: 3\r\n\r\n",
        );
        assert!(!head.answer_here);
        assert!(out.contains("\r\nMax-Forwards: 2\r\n"), "{out}");
        let (head, _) = accept(
            &V4,
            b"TRACE / HTTP/1.1\r\nHost: a\r\nMax-Forwards:  0 \r\n\r\n",
        );
        assert!(head.answer_here, "0: we are the final recipient");
        let (head, out) = accept(&V4, b"GET / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\n\r\n");
        assert!(!head.answer_here, "other methods ignore it");
        assert!(out.contains("\r\nMax-Forwards: 0\r\n"), "{out}");
        // Malformed or repeated: forwarded as it came.
        let (head, out) = accept(
            &V4,
            b"OPTIONS / HTTP/1.1\r\nHost: a\r\nMax-Forwards: x1\r\n\r\n",
        );
        assert!(!head.answer_here);
        assert!(out.contains("\r\nMax-Forwards: x1\r\n"), "{out}");
        let (head, _) = accept(
            &V4,
            b"OPTIONS / HTTP/1.1\r\nHost: a\r\nMax-Forwards: 0\r\nMax-Forwards: 0\r\n\r\n",
        );
        assert!(!head.answer_here);
    }

    #[test]
    fn via_gets_our_entry_after_the_ones_received() {
        let ctx = ForwardCtx {
            via: Some("edge-1"),
            ..V4
        };
        let (_, out) = accept(&ctx, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(out.ends_with("\r\nVia: 1.1 edge-1\r\n\r\n"), "{out}");
        let (_, out) = accept(
            &ctx,
            b"GET / HTTP/1.0\r\nHost: a\r\nVia: 1.0 fred\r\nVia: 1.1 p.example (Apache/1.1)\r\n\r\n",
        );
        assert!(
            out.ends_with("\r\nVia: 1.0 fred, 1.1 p.example (Apache/1.1), 1.0 edge-1\r\n\r\n"),
            "{out}"
        );
        assert_eq!(out.matches("Via:").count(), 1, "{out}");
    }

    #[test]
    fn the_route_is_the_target_with_its_query() {
        let (a, _) = accept(&V4, b"GET /p?x=1 HTTP/1.1\r\nHost: a\r\n\r\n");
        let (b, _) = accept(&V4, b"GET /p?x=2 HTTP/1.1\r\nHost: a\r\n\r\n");
        let (c, _) = accept(&V4, b"GET http://a/p?x=1 HTTP/1.1\r\n\r\n");
        assert_eq!(a.path_hash, b.path_hash);
        assert_ne!(a.route_hash, b.route_hash);
        assert_eq!(
            a.route_hash, c.route_hash,
            "absolute-form is the same route"
        );
    }

    #[test]
    fn a_trace_echo_leaves_credentials_out() {
        let head = b"TRACE /t HTTP/1.1\r\nHost: a\r\nCookie: s=1\r\nAuthorization: Basic x\r\n\
                     X-Seen: yes\r\nMax-Forwards: 0\r\n\r\n";
        let mut out = Vec::new();
        trace_echo(head, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "TRACE /t HTTP/1.1\r\nHost: a\r\nX-Seen: yes\r\nMax-Forwards: 0\r\n\r\n"
        );
    }

    /// The target on the request line of a forwarded head.
    fn request_target(out: &str) -> &str {
        out.split(' ').nth(1).unwrap_or("")
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

    #[test]
    fn the_affinity_cookie_is_taken_out_and_reported() {
        let ctx = ForwardCtx {
            affinity_cookie: Some("sid"),
            drop_field: None,
            ..V4
        };
        let input = b"GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1; sid=v1.x.-.9.ff ; b=2\r\nCookie: sid=late\r\n\r\n";
        let mut out = Vec::new();
        let head = parse_request(input, &ctx, &mut out).unwrap().unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\r\nCookie: a=1; b=2\r\n"), "{text}");
        assert!(!text.contains("sid"), "{text}");
        let (at, len) = head.affinity.expect("found");
        assert_eq!(
            &input[at as usize..at as usize + len as usize],
            b"v1.x.-.9.ff"
        );
        // A Cookie field with only ours is dropped whole; without the
        // setting, nothing is touched.
        let mut out = Vec::new();
        parse_request(
            b"GET / HTTP/1.1\r\nHost: a\r\nCookie: sid=1\r\n\r\n",
            &ctx,
            &mut out,
        )
        .unwrap();
        assert!(!String::from_utf8_lossy(&out).contains("Cookie"));
        let mut out = Vec::new();
        let head = parse_request(input, &V4, &mut out).unwrap().unwrap();
        assert!(head.affinity.is_none());
        assert!(String::from_utf8_lossy(&out).contains("sid=v1.x.-.9.ff"));
    }
}
