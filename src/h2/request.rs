//! An HTTP/2 request's header list checked against RFC 9113 §8.2-8.3 and
//! written as an HTTP/1.1 request head, the form the rest of ringmux (the
//! routes, the upstream side) reads: `Host` from `:authority`, cookie
//! crumbs joined (§8.2.3), the body framed by its `content-length` or, when
//! it has none and a body may come, chunked.

use super::hpack::Fields;
use crate::codec::is_tchar;

/// Why a request's header list is malformed: a stream error
/// (PROTOCOL_ERROR), or a 4xx where the request is well-formed HTTP/2 but
/// not something ringmux forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// A field name with upper case, or empty, or with a byte a token
    /// cannot hold.
    Name,
    /// A value with CR, LF or NUL, or with whitespace at either end.
    Value,
    /// A connection-specific field (`connection`, `keep-alive`,
    /// `proxy-connection`, `transfer-encoding`, `upgrade`).
    ConnectionField,
    /// `te` other than `trailers`.
    Te,
    /// A pseudo-header after a regular field, twice, unknown, or of a
    /// response.
    Pseudo,
    /// `:method`, `:scheme` or `:path` missing (or `:path` empty).
    Missing,
    /// `:authority` and `host` disagree.
    Authority,
    /// `content-length` not one decimal number (or several that differ).
    ContentLength,
    /// `:path` not starting with `/` (or `*` for OPTIONS), or with `#`.
    Path,
    /// `:scheme` other than http or https.
    Scheme,
    /// CONNECT (and extended CONNECT): ringmux is not a tunnel to anywhere.
    Connect,
}

impl Malformed {
    /// A one-line reason.
    pub fn reason(self) -> &'static str {
        match self {
            Malformed::Name => "malformed field name",
            Malformed::Value => "malformed field value",
            Malformed::ConnectionField => "connection-specific field",
            Malformed::Te => "te other than trailers",
            Malformed::Pseudo => "misplaced, repeated or unknown pseudo-header",
            Malformed::Missing => "missing :method, :scheme or :path",
            Malformed::Authority => ":authority and host disagree",
            Malformed::ContentLength => "malformed content-length",
            Malformed::Path => "malformed :path",
            Malformed::Scheme => "unsupported :scheme",
            Malformed::Connect => "CONNECT is not supported",
        }
    }
}

/// A request head in HTTP/1.1 form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// `METHOD target HTTP/1.1\r\n` ... `\r\n`.
    pub bytes: Vec<u8>,
    /// What `content-length` said (the DATA frames must add up to it).
    pub content_length: Option<u64>,
    /// No content-length and a body may follow: it is sent chunked.
    pub chunked: bool,
}

/// Check `fields` (a request's header list) and write its HTTP/1.1 head;
/// `end_stream`: the HEADERS frame ended the stream (no body).
pub fn to_http1(fields: &Fields, end_stream: bool) -> Result<Head, Malformed> {
    let (mut method, mut scheme, mut path, mut authority) = (None, None, None, None);
    let mut protocol = false;
    let mut regular = false;
    let mut host: Option<&[u8]> = None;
    let mut content_length: Option<u64> = None;
    for (name, value) in fields.iter() {
        check_value(value)?;
        if let Some(pseudo) = name.strip_prefix(b":") {
            if regular {
                return Err(Malformed::Pseudo);
            }
            let slot = match pseudo {
                b"method" => &mut method,
                b"scheme" => &mut scheme,
                b"path" => &mut path,
                b"authority" => &mut authority,
                b"protocol" => {
                    protocol = true;
                    continue;
                }
                _ => return Err(Malformed::Pseudo),
            };
            if slot.replace(value).is_some() {
                return Err(Malformed::Pseudo);
            }
            continue;
        }
        regular = true;
        check_name(name)?;
        match name {
            b"connection" | b"keep-alive" | b"proxy-connection" | b"transfer-encoding"
            | b"upgrade" => return Err(Malformed::ConnectionField),
            b"te" if value != b"trailers" => return Err(Malformed::Te),
            b"host" if host.replace(value).is_some() => return Err(Malformed::Authority),
            b"content-length" => {
                let n = decimal(value).ok_or(Malformed::ContentLength)?;
                if content_length.is_some_and(|m| m != n) {
                    return Err(Malformed::ContentLength);
                }
                content_length = Some(n);
            }
            _ => {}
        }
    }
    let method = method.ok_or(Malformed::Missing)?;
    if method == b"CONNECT" || protocol {
        return Err(Malformed::Connect);
    }
    let (Some(scheme), Some(path)) = (scheme, path) else {
        return Err(Malformed::Missing);
    };
    if path.is_empty() {
        return Err(Malformed::Missing);
    }
    if scheme != b"http" && scheme != b"https" {
        return Err(Malformed::Scheme);
    }
    // Origin form only (an absolute :path would name another host than
    // the one routed by), or `*` for OPTIONS (§8.3.1).
    let asterisk = path == b"*" && method == b"OPTIONS";
    if !(path.starts_with(b"/") || asterisk)
        || path.iter().any(|&b| b <= b' ' || b == 0x7f || b == b'#')
    {
        return Err(Malformed::Path);
    }
    if let (Some(a), Some(h)) = (authority, host) {
        if !a.eq_ignore_ascii_case(h) {
            return Err(Malformed::Authority);
        }
    }
    // One host: `uri-host[:port]`, no userinfo, not empty (§8.3.1).
    let host = authority.or(host).unwrap_or_default();
    if host.is_empty() || !host.iter().all(|&b| is_host_char(b)) {
        return Err(Malformed::Authority);
    }
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(Malformed::Pseudo);
    }
    let mut out = Vec::with_capacity(64 + fields.size);
    out.extend_from_slice(method);
    out.push(b' ');
    out.extend_from_slice(path);
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host);
    out.extend_from_slice(b"\r\n");
    // Cookie crumbs become one field (§8.2.3), where the first was; a
    // content-length given twice (the same) is written once.
    let mut cookies_written = false;
    let mut length_written = false;
    for (name, value) in fields.iter() {
        // (`te` can only be `trailers` here, which the agent forwards:
        // gRPC servers require it.)
        if name.starts_with(b":") || name == b"host" {
            continue;
        }
        if name == b"content-length" {
            if length_written {
                continue;
            }
            length_written = true;
        }
        if name == b"cookie" {
            if cookies_written {
                continue;
            }
            cookies_written = true;
            out.extend_from_slice(b"cookie: ");
            let mut first = true;
            for (n, v) in fields.iter() {
                if n == b"cookie" {
                    if !first {
                        out.extend_from_slice(b"; ");
                    }
                    out.extend_from_slice(v);
                    first = false;
                }
            }
            out.extend_from_slice(b"\r\n");
            continue;
        }
        out.extend_from_slice(name);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    let chunked = content_length.is_none() && !end_stream;
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Head {
        bytes: out,
        content_length,
        chunked,
    })
}

/// A byte of `uri-host[:port]`: letters, digits, `-._~`, `%` escapes,
/// `!$&'()*+;=` and the brackets and colons of an IP literal (no `@`, no
/// `/`, no `,`, no whitespace).
fn is_host_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~%!$&'()*+;=[]:".contains(&b)
}

/// A field name: a token in lower case (§8.2.1).
pub(super) fn check_name(name: &[u8]) -> Result<(), Malformed> {
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b) && !b.is_ascii_uppercase()) {
        return Err(Malformed::Name);
    }
    Ok(())
}

/// A field value: no control bytes but HTAB (§8.2.1 forbids CR, LF and
/// NUL; the others a lenient HTTP/1 parser might misread), no whitespace
/// at its ends.
pub(super) fn check_value(value: &[u8]) -> Result<(), Malformed> {
    let edge = |b: Option<&u8>| b.is_some_and(|&b| b == b' ' || b == b'\t');
    if value.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
        || edge(value.first())
        || edge(value.last())
    {
        return Err(Malformed::Value);
    }
    Ok(())
}

/// One decimal number, at most 19 digits.
pub(super) fn decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 19 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h2::hpack::{Decoder, Encoder};

    /// A header list as the decoder gives it.
    fn list(pairs: &[(&str, &str)]) -> Fields {
        let mut e = Encoder::default();
        let mut block = Vec::new();
        for (n, v) in pairs {
            e.field(&mut block, n.as_bytes(), v.as_bytes(), false);
        }
        let mut f = Fields::default();
        Decoder::new(4096).decode(&block, 1 << 20, &mut f).unwrap();
        f
    }

    const BASE: [(&str, &str); 4] = [
        (":method", "GET"),
        (":scheme", "https"),
        (":path", "/a?b=c"),
        (":authority", "example.com"),
    ];

    fn with(extra: &[(&'static str, &'static str)]) -> Fields {
        let mut all = BASE.to_vec();
        all.extend_from_slice(extra);
        list(&all)
    }

    #[test]
    fn a_request_becomes_an_http1_head_with_its_cookies_joined() {
        let head = to_http1(
            &with(&[
                ("cookie", "a=1"),
                ("accept", "*/*"),
                ("cookie", "b=2"),
                ("te", "trailers"),
            ]),
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8(head.bytes).unwrap(),
            "GET /a?b=c HTTP/1.1\r\nhost: example.com\r\ncookie: a=1; b=2\r\naccept: */*\r\n\
             te: trailers\r\n\r\n"
        );
        assert_eq!((head.content_length, head.chunked), (None, false));
    }

    #[test]
    fn a_body_is_framed_by_its_length_or_chunked() {
        let post = |extra: &[(&'static str, &'static str)], end| {
            let mut all = vec![(":method", "POST"), (":scheme", "http"), (":path", "/up")];
            all.extend_from_slice(extra);
            to_http1(&list(&all), end).unwrap()
        };
        let h = post(&[("host", "h.test"), ("content-length", "5")], false);
        assert_eq!(h.content_length, Some(5));
        assert!(!h.chunked);
        assert!(String::from_utf8_lossy(&h.bytes).contains("host: h.test\r\n"));
        let h = post(&[("host", "h.test")], false);
        assert!(h.chunked);
        assert!(String::from_utf8_lossy(&h.bytes).ends_with("transfer-encoding: chunked\r\n\r\n"));
    }

    #[test]
    fn each_rule_of_rfc_9113_8_2_and_8_3() {
        use Malformed::*;
        let bad = |f: Fields| to_http1(&f, true).unwrap_err();
        assert_eq!(bad(with(&[("Accept", "x")])), Name);
        assert_eq!(bad(with(&[("x-a", "line\r\nbreak")])), Value);
        assert_eq!(bad(with(&[("x-a", " padded")])), Value);
        for f in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "upgrade",
        ] {
            assert_eq!(bad(with(&[(f, "x")])), ConnectionField, "{f}");
        }
        assert_eq!(bad(with(&[("te", "gzip")])), Te);
        assert_eq!(bad(with(&[("accept", "x"), (":path", "/late")])), Pseudo);
        assert_eq!(bad(with(&[(":path", "/twice")])), Pseudo);
        assert_eq!(bad(with(&[(":status", "200")])), Pseudo);
        assert_eq!(
            bad(list(&[(":method", "GET"), (":scheme", "https")])),
            Missing
        );
        assert_eq!(bad(with(&[("host", "other.com")])), Authority);
        assert_eq!(bad(with(&[("content-length", "1,1")])), ContentLength);
        assert_eq!(
            bad(with(&[("content-length", "1"), ("content-length", "2")])),
            ContentLength
        );
        assert_eq!(
            bad(list(&[(":method", "CONNECT"), (":authority", "a:443")])),
            Connect
        );
        assert_eq!(bad(with(&[("x-a", "bell\u{7}")])), Value);
        let req =
            |path: &'static str, method: &'static str, scheme: &'static str, auth: &'static str| {
                to_http1(
                    &list(&[
                        (":method", method),
                        (":scheme", scheme),
                        (":path", path),
                        (":authority", auth),
                    ]),
                    true,
                )
            };
        assert_eq!(
            req("http://inner/admin", "GET", "https", "a.test"),
            Err(Path)
        );
        assert_eq!(req("*", "GET", "https", "a.test"), Err(Path));
        assert!(req("*", "OPTIONS", "https", "a.test").is_ok());
        assert_eq!(req("/a#frag", "GET", "https", "a.test"), Err(Path));
        assert_eq!(req("/", "GET", "ftp", "a.test"), Err(Scheme));
        assert_eq!(req("/", "GET", "https", "user@evil.test"), Err(Authority));
        assert_eq!(req("/", "GET", "https", "a.test, b.test"), Err(Authority));
        assert_eq!(req("/", "GET", "https", ""), Err(Authority));
        assert!(req("/", "GET", "https", "[::1]:8443").is_ok());
        let twice = to_http1(
            &with(&[("content-length", "0"), ("content-length", "0")]),
            true,
        )
        .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&twice.bytes)
                .matches("content-length")
                .count(),
            1
        );
        // The same host in both, in another case, is one host.
        assert!(to_http1(&with(&[("host", "EXAMPLE.com")]), true).is_ok());
    }
}
