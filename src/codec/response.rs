//! Response heads: parses and strictly validates one HTTP/1.x response head
//! from an upstream, decides its body framing (RFC 9112 §6.3), whether the
//! upstream connection can be reused and whether the client connection stays
//! open, and writes the head to forward to the client.
//!
//! It never does I/O and never reads clocks; it never touches `out` unless the
//! head is accepted. It never reads the body (see `body.rs`).
//!
//! Decisions (every refusal is a 502 for the client and the upstream
//! connection must be closed):
//! - The same line rules as requests: bare LF, obs-fold, leading empty lines
//!   skipped (tolerates a stray CRLF some servers send after a body).
//! - `Content-Length` with `Transfer-Encoding`: 502. RFC 9112 §6.3 says TE
//!   wins, but a proxy that forwards an ambiguous message helps smuggling.
//! - `Transfer-Encoding` must be exactly `chunked`; anything else (final
//!   coding not chunked, `gzip, chunked`, `chunked` twice, TE in HTTP/1.0)
//!   is a 502 rather than RFC 9112 §6.3's close-delimited fallback: simpler,
//!   and no well-behaved origin sends it.
//! - Status codes outside 100..=599: 502.
//! - 1xx other than 101 to an HTTP/1.0 client: accepted, but nothing is
//!   appended to `out` (RFC 9110 §15.2: never send 1xx to HTTP/1.0); the
//!   caller then parses the next head as usual.
//! - 101 is passed on as a final, body-less response that ends both
//!   connections, until upgrades are implemented.
//! - `Via` gets our entry (`1.x NAME`) on final responses unless
//!   [`ResponseCtx::via`] is off; earlier entries are kept before it.
//! - Framing headers of body-less responses (HEAD, 204, 304) are still
//!   validated and forwarded (Content-Length of a HEAD response describes
//!   the GET), except that `Transfer-Encoding` never goes to HTTP/1.0
//!   clients.

use super::headers::{self, FramingFault, ScanOutcome};
use super::{Framing, HeadError, Method, MAX_HEADERS, MAX_HEAD_BYTES};

/// What the proxy knows about the request this response answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseCtx {
    /// Method of the request (HEAD responses have no body).
    pub request_method: Method,
    /// The client's HTTP minor version (0 or 1).
    pub client_minor_version: u8,
    /// `RequestHead::keep_alive` of that request.
    pub client_keep_alive: bool,
    /// The request asked to switch protocols (see `RequestHead::upgrade`).
    pub upgrade: bool,
    /// Our name in `Via` on forwarded responses, or None to add none.
    pub via: Option<&'static str>,
}

/// A parsed, validated response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code (100..=599).
    pub status: u16,
    /// 1xx other than 101: forward it, then parse the next head for the
    /// final response; body-less.
    pub informational: bool,
    /// Upstream body framing: None for HEAD requests, 1xx, 204, 304;
    /// Length(n); Chunked; CloseDelimited when neither CL nor TE on a
    /// response that has a body.
    pub framing: Framing,
    /// Can the upstream connection be reused after this response (HTTP/1.1
    /// without `Connection: close`, or HTTP/1.0 with keep-alive; never when
    /// close-delimited or 101).
    pub upstream_reusable: bool,
    /// Will the client connection stay open after this response.
    pub client_keep_alive: bool,
    /// The client is HTTP/1.0 and the body is chunked: send the decoded body
    /// and close the client (no Transfer-Encoding, no Content-Length).
    pub dechunk: bool,
    /// Bytes of input the head occupied.
    pub head_len: usize,
    /// A 101 answering an upgrade request: from here on both connections
    /// carry opaque bytes in both directions.
    pub tunnel: bool,
    /// The origin's `Keep-Alive: timeout=N`, in seconds: how long it says
    /// it keeps an idle connection (Node, Apache and others close at
    /// about that time).
    pub keep_alive_timeout: Option<u32>,
}

/// The `timeout=N` parameter of a `Keep-Alive` field value (RFC 2068
/// §19.7.1.1, still sent by Node, Apache, gunicorn and others).
pub fn keep_alive_timeout(value: &[u8]) -> Option<u32> {
    value.split(|&b| b == b',').find_map(|param| {
        let param = headers::trim_ows(param);
        let eq = param.iter().position(|&b| b == b'=')?;
        let (name, n) = (
            headers::trim_ows(&param[..eq]),
            headers::trim_ows(&param[eq + 1..]),
        );
        if !name.eq_ignore_ascii_case(b"timeout") || n.is_empty() || n.len() > 9 {
            return None;
        }
        n.iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    })
}

/// Slots for httparse to parse header fields into, left uninitialised:
/// nothing to clear per head.
fn uninit_fields<'b>() -> [std::mem::MaybeUninit<httparse::Header<'b>>; MAX_HEADERS] {
    [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS]
}

/// Parse one response head at the start of `buf`.
///
/// `Ok(None)`: incomplete, call again with more bytes.
/// `Ok(Some(head))`: complete; the head to forward to the client was
/// APPENDED to `out` (nothing is appended for a 1xx to an HTTP/1.0 client).
/// `Err`: status 502; the upstream connection must be closed; `out` is
/// untouched.
pub fn parse_response(
    buf: &[u8],
    ctx: &ResponseCtx,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseHead>, HeadError> {
    let bounds = match headers::scan_head(buf, MAX_HEAD_BYTES) {
        ScanOutcome::Complete(b) => b,
        ScanOutcome::Incomplete => {
            let mut fields = uninit_fields();
            let mut resp = httparse::Response::new(&mut []);
            return match httparse::ParserConfig::default().parse_response_with_uninit_headers(
                &mut resp,
                buf,
                &mut fields,
            ) {
                Ok(_) => Ok(None),
                Err(e) => Err(map_httparse(e)),
            };
        }
        ScanOutcome::TooLarge => {
            return Err(bad("upstream sent a response head that is too large"));
        }
        ScanOutcome::BareLf => return Err(bad("upstream sent a malformed response: bare LF")),
        ScanOutcome::ObsFold => {
            return Err(bad(
                "upstream sent a malformed response: obsolete line folding",
            ));
        }
    };
    let head = &buf[..bounds.end];

    let mut fields = uninit_fields();
    let mut resp = httparse::Response::new(&mut []);
    match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut resp,
        head,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(n)) if n == bounds.end => {}
        Ok(_) => return Err(bad("upstream sent a malformed response head")),
        Err(e) => return Err(map_httparse(e)),
    }
    let (Some(minor_version), Some(status)) = (resp.version, resp.code) else {
        return Err(bad("upstream sent a malformed status line"));
    };
    if !(100..=599).contains(&status) {
        return Err(bad("upstream sent an invalid status code"));
    }
    let fields: &[httparse::Header<'_>] = resp.headers;
    let facts = headers::field_facts(fields, minor_version).map_err(framing_error)?;

    let switching = status == 101;
    if switching && !ctx.upgrade {
        // RFC 9110 §15.2.2: a server must not switch unless asked to.
        return Err(bad(
            "upstream sent 101 Switching Protocols without an upgrade request",
        ));
    }
    let informational = (100..200).contains(&status) && !switching;
    let bodyless = ctx.request_method == Method::Head
        || (100..200).contains(&status)
        || status == 204
        || status == 304;
    let framing = if bodyless {
        Framing::None
    } else if facts.chunked {
        Framing::Chunked
    } else if let Some(n) = facts.content_length {
        Framing::Length(n)
    } else {
        Framing::CloseDelimited
    };

    let upstream_persistent = if minor_version == 1 {
        !facts.close
    } else {
        facts.keep_alive && !facts.close
    };
    let upstream_reusable = upstream_persistent && framing != Framing::CloseDelimited && !switching;

    let client_http10 = ctx.client_minor_version == 0;
    let dechunk = framing == Framing::Chunked && client_http10;
    let client_keep_alive = if informational {
        // Not the final response: the exchange goes on either way.
        ctx.client_keep_alive
    } else {
        ctx.client_keep_alive
            && !switching
            && match framing {
                Framing::None | Framing::Length(_) => true,
                Framing::Chunked => !client_http10,
                Framing::CloseDelimited => false,
            }
    };

    let keep_alive_timeout = fields
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("keep-alive"))
        .find_map(|h| keep_alive_timeout(h.value));
    let result = ResponseHead {
        status,
        informational,
        framing,
        upstream_reusable,
        client_keep_alive,
        dechunk,
        head_len: bounds.end,
        tunnel: switching,
        keep_alive_timeout,
    };
    if informational && client_http10 {
        return Ok(Some(result));
    }

    // Status line: we speak HTTP/1.1 to every client (RFC 9110 §6.2 allows
    // it for 1.0 clients too) and keep the reason phrase bytes as received,
    // including obs-text, which httparse would blank out.
    let status_line_end = head[bounds.start..]
        .iter()
        .position(|&b| b == b'\r')
        .map_or(head.len(), |p| bounds.start + p);
    let status_line = &head[bounds.start..status_line_end];
    // "HTTP/1.x NNN " is 13 bytes; httparse has checked that shape.
    let reason = status_line.get(13..).unwrap_or(b"");
    out.extend_from_slice(b"HTTP/1.1 ");
    headers::write_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason);
    out.extend_from_slice(b"\r\n");

    // Our Via entry goes on final responses (and 101), after the origin's.
    let via_name = ctx.via.filter(|_| !informational);
    let mut via: Vec<&[u8]> = Vec::new();
    for h in fields {
        let name = h.name.as_bytes();
        if headers::is_hop_by_hop(name, &facts.connection_listed) {
            continue;
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            headers::write_decimal_field(out, b"Content-Length", facts.content_length.unwrap_or(0));
        } else if via_name.is_some() && name.eq_ignore_ascii_case(b"via") {
            via.push(h.value);
        } else {
            headers::write_field(out, name, h.value);
        }
    }
    if let Some(name) = via_name {
        super::request::write_via(out, &via, minor_version, name);
    }
    if facts.chunked && !client_http10 {
        headers::write_field(out, b"Transfer-Encoding", b"chunked");
    }
    if switching {
        headers::write_field(out, b"Connection", b"upgrade");
        if let Some(h) = fields
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("upgrade"))
        {
            headers::write_field(out, b"Upgrade", headers::trim_ows(h.value));
        }
    } else if !informational {
        if !client_keep_alive {
            headers::write_field(out, b"Connection", b"close");
        } else if client_http10 {
            headers::write_field(out, b"Connection", b"keep-alive");
        }
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(result))
}

fn framing_error(fault: FramingFault) -> HeadError {
    bad(match fault {
        FramingFault::BothLengthAndChunked => {
            "upstream sent a malformed response: both Content-Length and Transfer-Encoding"
        }
        FramingFault::MultipleLength => {
            "upstream sent a malformed response: multiple Content-Length values"
        }
        FramingFault::BadLength => "upstream sent a malformed response: invalid Content-Length",
        FramingFault::NotChunkedFinal => {
            "upstream sent a malformed response: Transfer-Encoding does not end with chunked"
        }
        FramingFault::ChunkedTwice => {
            "upstream sent a malformed response: chunked applied more than once"
        }
        FramingFault::UnsupportedCoding => {
            "upstream sent a malformed response: unsupported transfer coding"
        }
        FramingFault::TransferEncodingInHttp10 => {
            "upstream sent a malformed response: Transfer-Encoding in HTTP/1.0"
        }
    })
}

fn map_httparse(e: httparse::Error) -> HeadError {
    bad(match e {
        httparse::Error::TooManyHeaders => "upstream sent a response with too many header fields",
        httparse::Error::Version => "upstream sent a malformed response: invalid HTTP version",
        httparse::Error::Status | httparse::Error::Token => {
            "upstream sent a malformed response: invalid status line"
        }
        httparse::Error::HeaderName => "upstream sent a malformed response: invalid header name",
        httparse::Error::HeaderValue => "upstream sent a malformed response: invalid header value",
        httparse::Error::NewLine => "upstream sent a malformed response: invalid line ending",
    })
}

/// Every response fault is the upstream's, so the client gets a 502.
fn bad(reason: &'static str) -> HeadError {
    HeadError {
        status: 502,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_support::parse_all_prefixes;

    const C11: ResponseCtx = ResponseCtx {
        via: None,
        request_method: Method::Get,
        client_minor_version: 1,
        client_keep_alive: true,
        upgrade: false,
    };
    const C11_UPGRADE: ResponseCtx = ResponseCtx {
        upgrade: true,
        ..C11
    };
    const C10: ResponseCtx = ResponseCtx {
        client_minor_version: 0,
        ..C11
    };
    const C10_CLOSE: ResponseCtx = ResponseCtx {
        client_keep_alive: false,
        ..C10
    };
    const C11_HEAD: ResponseCtx = ResponseCtx {
        request_method: Method::Head,
        ..C11
    };

    /// What an accepted response should produce.
    #[derive(Clone, Copy)]
    struct Want {
        status: u16,
        informational: bool,
        framing: Framing,
        upstream_reusable: bool,
        client_keep_alive: bool,
        dechunk: bool,
        trailing: usize,
        out: &'static str,
    }

    const OK200: Want = Want {
        status: 200,
        informational: false,
        framing: Framing::Length(0),
        upstream_reusable: true,
        client_keep_alive: true,
        dechunk: false,
        trailing: 0,
        out: "",
    };

    enum Exp {
        Ok(Want),
        Err,
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, &ResponseCtx, &[u8], Exp)> = vec![
            (
                "200 with length, body follows",
                &C11,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\nhello",
                Exp::Ok(Want {
                    framing: Framing::Length(5),
                    trailing: 5,
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: x\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "chunked to 1.1 client",
                &C11,
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::Chunked,
                    out: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "chunked to 1.0 client is dechunked",
                &C10,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX: y\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::Chunked,
                    dechunk: true,
                    client_keep_alive: false,
                    out: "HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "length to 1.0 keep-alive client",
                &C10,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "length to 1.0 client without keep-alive",
                &C10_CLOSE,
                b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    client_keep_alive: false,
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "close-delimited",
                &C11,
                b"HTTP/1.1 200 OK\r\nX: y\r\n\r\nbody...",
                Exp::Ok(Want {
                    framing: Framing::CloseDelimited,
                    upstream_reusable: false,
                    client_keep_alive: false,
                    trailing: 7,
                    out: "HTTP/1.1 200 OK\r\nX: y\r\nConnection: close\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "upstream connection close",
                &C11,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::Length(2),
                    upstream_reusable: false,
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "upstream 1.0 without keep-alive",
                &C11,
                b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::Length(2),
                    upstream_reusable: false,
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "upstream 1.0 with keep-alive",
                &C11,
                b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 2\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::Length(2),
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "hop-by-hop removal",
                &C11,
                b"HTTP/1.1 200 OK\r\nConnection: X-Foo\r\nX-Foo: 1\r\nUpgrade: h2c\r\n\
                  Proxy-Authenticate: Basic\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    out: "HTTP/1.1 200 OK\r\nTrailer: X-T\r\nContent-Length: 0\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "head response keeps content-length, no body",
                &C11_HEAD,
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::None,
                    out: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "head response chunked, no body",
                &C11_HEAD,
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Ok(Want {
                    framing: Framing::None,
                    out: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "204",
                &C11,
                b"HTTP/1.1 204 No Content\r\n\r\n",
                Exp::Ok(Want {
                    status: 204,
                    framing: Framing::None,
                    out: "HTTP/1.1 204 No Content\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "304 with length",
                &C11,
                b"HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n",
                Exp::Ok(Want {
                    status: 304,
                    framing: Framing::None,
                    out: "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\nETag: \"x\"\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "100 continue then final",
                &C11,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n",
                Exp::Ok(Want {
                    status: 100,
                    informational: true,
                    framing: Framing::None,
                    trailing: 17,
                    out: "HTTP/1.1 100 Continue\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "103 early hints",
                &C11,
                b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                Exp::Ok(Want {
                    status: 103,
                    informational: true,
                    framing: Framing::None,
                    out: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "1xx not sent to 1.0 client",
                &C10,
                b"HTTP/1.1 100 Continue\r\n\r\n",
                Exp::Ok(Want {
                    status: 100,
                    informational: true,
                    framing: Framing::None,
                    out: "",
                    ..OK200
                }),
            ),
            (
                "101 without an upgrade request is refused",
                &C11,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                Exp::Err,
            ),
            (
                "101 to an upgrade request opens a tunnel",
                &C11_UPGRADE,
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n",
                Exp::Ok(Want {
                    status: 101,
                    framing: Framing::None,
                    upstream_reusable: false,
                    client_keep_alive: false,
                    out: "HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "empty reason phrase",
                &C11,
                b"HTTP/1.1 200\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    out: "HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
                    ..OK200
                }),
            ),
            (
                "leading empty line",
                &C11,
                b"\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                Exp::Ok(Want {
                    status: 404,
                    out: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n",
                    ..OK200
                }),
            ),
            // Rejections: all 502.
            (
                "cl and te",
                &C11,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Err,
            ),
            (
                "two cl",
                &C11,
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
                Exp::Err,
            ),
            ("bad cl", &C11, b"HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n", Exp::Err),
            ("te gzip", &C11, b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", Exp::Err),
            (
                "te in 1.0 response",
                &C11,
                b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
                Exp::Err,
            ),
            ("bare lf", &C11, b"HTTP/1.1 200 OK\nContent-Length: 0\n\n", Exp::Err),
            ("obs-fold", &C11, b"HTTP/1.1 200 OK\r\nX: a\r\n\tb\r\n\r\n", Exp::Err),
            ("status 600", &C11, b"HTTP/1.1 600 Weird\r\n\r\n", Exp::Err),
            ("status 099", &C11, b"HTTP/1.1 099 Weird\r\n\r\n", Exp::Err),
            ("http/2", &C11, b"HTTP/2 200 OK\r\n\r\n", Exp::Err),
            ("garbage", &C11, b"<html>hello</html>\r\n\r\n", Exp::Err),
            ("bad header", &C11, b"HTTP/1.1 200 OK\r\nX y: 1\r\n\r\n", Exp::Err),
        ];
        for (name, ctx, input, exp) in cases {
            let (got, out) = parse_all_prefixes(
                name,
                input,
                |b, out| parse_response(b, ctx, out),
                |h| h.head_len,
            );
            match exp {
                Exp::Ok(w) => {
                    let head = got.unwrap_or_else(|e| panic!("{name}: {e:?}")).expect(name);
                    let want = ResponseHead {
                        status: w.status,
                        informational: w.informational,
                        framing: w.framing,
                        upstream_reusable: w.upstream_reusable,
                        client_keep_alive: w.client_keep_alive,
                        dechunk: w.dechunk,
                        head_len: input.len() - w.trailing,
                        tunnel: w.status == 101,
                        keep_alive_timeout: head.keep_alive_timeout,
                    };
                    assert_eq!(head, want, "{name}");
                    assert_eq!(String::from_utf8_lossy(&out), w.out, "{name}");
                }
                Exp::Err => {
                    let e = got.expect_err(name);
                    assert_eq!(e.status, 502, "{name}: {e:?}");
                    assert!(e.reason.starts_with("upstream sent"), "{name}: {e:?}");
                    assert!(!e.reason.contains(['\r', '\n']));
                }
            }
        }
    }

    #[test]
    fn reason_phrase_bytes_kept() {
        let input = b"HTTP/1.1 200 Tr\xe8s bien\r\nContent-Length: 0\r\n\r\n";
        let mut out = Vec::new();
        parse_response(input, &C11, &mut out).unwrap().unwrap();
        assert!(out.starts_with(b"HTTP/1.1 200 Tr\xe8s bien\r\n"));
    }

    #[test]
    fn informational_then_final_sequence() {
        // The caller's loop: parse, forward, skip head_len, repeat while
        // informational.
        let input = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\n\r\n\
                      HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nokNEXT";
        let mut pos = 0;
        let mut out = Vec::new();
        let mut statuses = Vec::new();
        loop {
            let head = parse_response(&input[pos..], &C11, &mut out)
                .unwrap()
                .unwrap();
            statuses.push(head.status);
            pos += head.head_len;
            if !head.informational {
                assert_eq!(head.framing, Framing::Length(2));
                break;
            }
        }
        assert_eq!(statuses, vec![100, 103, 201]);
        assert_eq!(&input[pos..], b"okNEXT");
    }

    #[test]
    fn an_announced_keep_alive_timeout_is_read_and_not_forwarded() {
        assert_eq!(keep_alive_timeout(b"timeout=5, max=1000"), Some(5));
        assert_eq!(keep_alive_timeout(b"max=10 , Timeout = 15"), Some(15));
        for bad in [
            &b"timeout="[..],
            b"timeout=x",
            b"timeout=-1",
            b"max=3",
            b"timeout=9999999999",
        ] {
            assert_eq!(
                keep_alive_timeout(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut out = Vec::new();
        let head = parse_response(
            b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            &C11,
            &mut out,
        )
        .unwrap()
        .unwrap();
        assert_eq!(head.keep_alive_timeout, Some(5));
        assert!(!String::from_utf8_lossy(&out)
            .to_ascii_lowercase()
            .contains("keep-alive"));
    }
}
