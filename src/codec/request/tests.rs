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
              Keep-Alive: 5\r\nProxy-Connection: keep-alive\r\nTE: gzip, trailers\r\n\
              Upgrade: websocket\r\nX-Bar: 2\r\nTrailer: X-T\r\nTE: trailers\r\n\
              Proxy-Authorization: Basic eA==\r\nx-foo: 3\r\n\r\n",
            Exp::Ok(Want {
                keep_alive: false,
                // (`TE: trailers` alone says the client takes trailers:
                // gRPC servers require it; any other TE is the hop's.)
                out: concat!(
                    "GET / HTTP/1.1\r\nHost: a\r\nX-Bar: 2\r\nTrailer: X-T\r\nTE: trailers\r\n",
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
                    target: head.target,
                    host: head.host,
                };
                assert_eq!(head, want, "{name}");
                assert_eq!(String::from_utf8_lossy(&out), w.out, "{name}");
                // The ranges name the target and the Host value written.
                let out = String::from_utf8_lossy(&out);
                let at = |(a, b): (u32, u32)| &out[a as usize..b as usize];
                assert_eq!(at(head.target), request_target(w.out), "{name}");
                let host_line = w.out.split("\r\n").find_map(|l| {
                    let (n, v) = l.split_once(": ")?;
                    n.eq_ignore_ascii_case("host").then_some(v)
                });
                assert_eq!(head.host.map(at), host_line, "{name}");
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
