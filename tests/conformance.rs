//! Conformance table: each case is sent over a real socket through the
//! proxy to an origin that records what it received. Refused requests get
//! their status and a one-line reason, the connection is closed, and the
//! origin sees nothing; accepted ones reach the origin normalized.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

/// Send `raw`, read until the proxy closes (at most 3 s); return the bytes.
fn exchange(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(raw).unwrap();
    common::read_to_close(&mut s, Duration::from_secs(3))
}

/// (name, request bytes, expected status) for requests that must be refused.
fn refused_cases() -> Vec<(&'static str, Vec<u8>, u16)> {
    let h = |extra: &str| format!("GET / HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes();
    let post = |extra: &str| format!("POST / HTTP/1.1\r\nHost: t\r\n{extra}\r\n").into_bytes();
    vec![
        (
            "cl_and_te",
            post("Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"),
            400,
        ),
        (
            "te_and_cl",
            post("Transfer-Encoding: chunked\r\nContent-Length: 3\r\n"),
            400,
        ),
        (
            "two_cl_equal",
            post("Content-Length: 3\r\nContent-Length: 3\r\n"),
            400,
        ),
        (
            "two_cl_differ",
            post("Content-Length: 3\r\nContent-Length: 4\r\n"),
            400,
        ),
        ("cl_list", post("Content-Length: 3, 3\r\n"), 400),
        ("cl_plus_sign", post("Content-Length: +3\r\n"), 400),
        ("cl_minus_sign", post("Content-Length: -3\r\n"), 400),
        ("cl_inner_space", post("Content-Length: 1 2\r\n"), 400),
        ("cl_not_digits", post("Content-Length: abc\r\n"), 400),
        ("cl_hex", post("Content-Length: 0x10\r\n"), 400),
        (
            "cl_overflow",
            post("Content-Length: 99999999999999999999999\r\n"),
            400,
        ),
        ("te_gzip_only", post("Transfer-Encoding: gzip\r\n"), 400),
        (
            "te_chunked_twice",
            post("Transfer-Encoding: chunked, chunked\r\n"),
            400,
        ),
        (
            "te_chunked_not_last",
            post("Transfer-Encoding: chunked, gzip\r\n"),
            400,
        ),
        ("te_identity", post("Transfer-Encoding: identity\r\n"), 400),
        (
            "te_in_http10",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".to_vec(),
            400,
        ),
        ("obs_fold", h("X-A: 1\r\n continued\r\n"), 400),
        ("space_before_colon", h("X-A : 1\r\n"), 400),
        ("tab_before_colon", h("X-A\t: 1\r\n"), 400),
        ("bare_cr_in_value", h("X-A: 1\r2\r\n"), 400),
        ("nul_in_value", h("X-A: 1\x002\r\n"), 400),
        ("ctl_in_value", h("X-A: 1\x012\r\n"), 400),
        ("bare_lf_line", b"GET / HTTP/1.1\nHost: t\n\n".to_vec(), 400),
        (
            "bare_lf_in_head",
            b"GET / HTTP/1.1\r\nHost: t\nX-A: 1\r\n\r\n".to_vec(),
            400,
        ),
        ("missing_host", b"GET / HTTP/1.1\r\n\r\n".to_vec(), 400),
        ("duplicate_host", h("Host: u\r\n"), 400),
        (
            "http_2_0",
            b"GET / HTTP/2.0\r\nHost: t\r\n\r\n".to_vec(),
            505,
        ),
        ("http_0_9_style", b"GET /\r\n\r\n".to_vec(), 400),
        (
            "lowercase_version",
            b"GET / http/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (
            "connect_method",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n".to_vec(),
            501,
        ),
        (
            "garbage",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03".to_vec(),
            400,
        ),
        (
            "head_too_large",
            h(&format!("X-Big: {}\r\n", "a".repeat(70 * 1024))),
            431,
        ),
        (
            "too_many_headers",
            h(&(0..120)
                .map(|i| format!("X-{i}: v\r\n"))
                .collect::<String>()),
            431,
        ),
    ]
}

#[test]
fn malformed_requests_are_refused_and_never_reach_the_origin() {
    let o = common::origin("o");
    let p = common::proxy(&[o.addr().to_string()]);
    let mut failures = Vec::new();
    for (name, raw, status) in refused_cases() {
        let (_, before) = common::origin_stats(o.addr());
        let got = exchange(p.addr(), &raw);
        let text = String::from_utf8_lossy(&got).to_string();
        let (_, after) = common::origin_stats(o.addr());
        let want = format!("HTTP/1.1 {status} ");
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("");
        if !text.starts_with(&want) {
            failures.push(format!("{name}: expected {status}, got {text:?}"));
        } else if !text.contains("Connection: close") {
            failures.push(format!("{name}: no Connection: close in {text:?}"));
        } else if body.is_empty() || !body.ends_with('\n') || body.trim_end().contains('\n') {
            failures.push(format!("{name}: body is not one line: {body:?}"));
        }
        // Only the second /stats request itself reached the origin.
        if after != before + 1 {
            failures.push(format!(
                "{name}: the origin saw {} request(s)",
                after - before - 1
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn bad_chunked_bodies_get_400_and_the_close() {
    let o = common::origin("o");
    let p = common::proxy(&[o.addr().to_string()]);
    for (name, body) in [
        ("chunk_size_not_hex", "zz\r\nabc\r\n0\r\n\r\n"),
        ("chunk_size_negative", "-1\r\nabc\r\n0\r\n\r\n"),
        (
            "chunk_size_overflow",
            "1ffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
        ),
        ("chunk_size_empty", "\r\nabc\r\n0\r\n\r\n"),
        ("no_crlf_after_data", "3\r\nabcXY0\r\n\r\n"),
        ("bare_lf_chunk_line", "3\nabc\r\n0\r\n\r\n"),
    ] {
        let raw =
            format!("POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let got = exchange(p.addr(), raw.as_bytes());
        let text = String::from_utf8_lossy(&got);
        // The head went upstream before the body was seen; the origin gets
        // a cut-off request and never a complete one, the client a 400.
        assert!(text.starts_with("HTTP/1.1 400 "), "{name}: {text:?}");
        assert!(text.contains("bad request body"), "{name}: {text:?}");
    }
}

fn seen_by_origin(p: &common::Proc, raw: &str) -> String {
    let got = exchange_keepalive(p.addr(), raw.as_bytes());
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200 "), "{text:?}");
    text.split_once("\r\n\r\n").unwrap().1.to_string()
}

/// Send one request with `Connection: close` semantics left to the caller;
/// read one response by Content-Length.
fn exchange_keepalive(addr: std::net::SocketAddr, raw: &[u8]) -> Vec<u8> {
    let mut c = common::Client::connect(addr);
    c.send(raw);
    let r = c.response(false);
    let mut out = format!("HTTP/1.1 {} X\r\n\r\n", r.status).into_bytes();
    out.extend_from_slice(&r.body);
    out
}

#[test]
fn accepted_requests_reach_the_origin_normalized() {
    let o = common::origin("o");
    let p = common::proxy(&[o.addr().to_string()]);

    // Absolute-form target: origin-form upstream, Host from the authority.
    let seen = seen_by_origin(
        &p,
        "GET http://example.test:8080/head?x=1 HTTP/1.1\r\nHost: other\r\n\r\n",
    );
    assert!(seen.starts_with("GET /head?x=1 HTTP/1.1\r\n"), "{seen:?}");
    assert!(seen.contains("\r\nHost: example.test:8080\r\n"), "{seen:?}");

    // Hop-by-hop fields are dropped, including the ones Connection names.
    let seen = seen_by_origin(
        &p,
        "GET /head HTTP/1.1\r\nHost: t\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\n\
         Keep-Alive: timeout=5\r\nTE: deflate\r\nUpgrade: websocket\r\n\
         Proxy-Connection: keep-alive\r\nProxy-Authorization: Basic eA==\r\nX-End: 2\r\n\r\n",
    );
    for gone in [
        "Connection",
        "X-Hop",
        "Keep-Alive",
        "TE:",
        "Upgrade",
        "Proxy-",
    ] {
        assert!(!seen.contains(gone), "{gone} reached the origin: {seen:?}");
    }
    assert!(seen.contains("\r\nX-End: 2\r\n"), "{seen:?}");
    // `TE: trailers` alone goes on: it says the client takes trailers, which
    // ringmux passes (gRPC servers require it).
    let seen = seen_by_origin(&p, "GET /head HTTP/1.1\r\nHost: t\r\nTE: trailers\r\n\r\n");
    assert!(seen.contains("\r\nTE: trailers\r\n"), "{seen:?}");

    // Forwarded and X-Forwarded-For are appended to what the client sent.
    let seen = seen_by_origin(
        &p,
        "GET /head HTTP/1.1\r\nHost: t\r\nX-Forwarded-For: 192.0.2.1\r\nForwarded: for=192.0.2.1\r\n\r\n",
    );
    assert!(
        seen.contains("X-Forwarded-For: 192.0.2.1, 127.0.0.1\r\n"),
        "{seen:?}"
    );
    assert!(
        seen.contains("Forwarded: for=192.0.2.1, for=127.0.0.1;proto=http\r\n"),
        "{seen:?}"
    );

    // An HTTP/1.0 request goes upstream as HTTP/1.1.
    let seen = seen_by_origin(&p, "GET /head HTTP/1.0\r\nHost: t\r\n\r\n");
    assert!(seen.starts_with("GET /head HTTP/1.1\r\n"), "{seen:?}");
}

/// An origin that answers every request with its head as received.
fn head_echo() -> common::scripted::Scripted {
    common::scripted::Scripted::start(|req, s| {
        use std::io::Write;
        let _ = s.write_all(&common::scripted::ok(&req.raw));
        common::scripted::After::KeepOpen
    })
}

/// Send raw request bytes on a new connection and read one response.
fn ask(addr: std::net::SocketAddr, raw: &str) -> common::Response {
    let mut c = common::Client::connect(addr);
    c.send(raw.as_bytes());
    c.response(raw.starts_with("HEAD "))
}

/// `Date` is an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
fn assert_dated(r: &common::Response, what: &str) {
    let d = r
        .header("date")
        .unwrap_or_else(|| panic!("{what}: no Date"));
    let b = d.as_bytes();
    let shape = b.len() == 29
        && b[3] == b','
        && d.ends_with(" GMT")
        && b[7] == b' '
        && b[11] == b' '
        && b[16] == b' '
        && b[19] == b':'
        && b[22] == b':';
    assert!(shape, "{what}: Date {d:?}");
}

#[test]
fn h2c_later_versions_max_forwards_and_via_over_real_sockets() {
    let origin = head_echo();
    let p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();

    // h2c: the upgrade and its settings never reach the origin; the
    // request is answered as a plain one.
    let r = ask(
        addr,
        "GET /h2c HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let seen = r.body_str().to_ascii_lowercase();
    assert!(
        !seen.contains("upgrade") && !seen.contains("http2-settings"),
        "{seen}"
    );

    // HTTP/1.2 is served as HTTP/1.1.
    let r = ask(addr, "GET /v12 HTTP/1.2\r\nHost: t\r\n\r\n");
    assert_eq!(r.status, 200);
    assert!(
        r.body_str().starts_with("GET /v12 HTTP/1.1\r\n"),
        "{}",
        r.body_str()
    );

    // Max-Forwards: counted down on OPTIONS and TRACE; at 0 we answer.
    let r = ask(
        addr,
        "OPTIONS /mf HTTP/1.1\r\nHost: t\r\nMax-Forwards: 5\r\n\r\n",
    );
    assert!(
        r.body_str().contains("\r\nMax-Forwards: 4\r\n"),
        "{}",
        r.body_str()
    );
    let before = origin.log().len();
    let r = ask(
        addr,
        "OPTIONS * HTTP/1.1\r\nHost: t\r\nMax-Forwards: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.header("allow").is_some_and(|a| a.contains("GET")),
        "{:?}",
        r.headers
    );
    assert_dated(&r, "OPTIONS answered here");
    let r = ask(
        addr,
        "TRACE /t HTTP/1.1\r\nHost: t\r\nCookie: secret=1\r\nX-Mark: 7\r\nMax-Forwards: 0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("message/http"));
    let echo = r.body_str();
    assert!(
        echo.starts_with("TRACE /t HTTP/1.1\r\n") && echo.contains("X-Mark: 7"),
        "{echo}"
    );
    assert!(!echo.contains("secret"), "credentials echoed: {echo}");
    assert_eq!(
        origin.log().len(),
        before,
        "Max-Forwards 0 reached the origin"
    );

    // No Via of ours unless asked (see `via_follows_its_flag`); the
    // client's passes.
    let r = ask(
        addr,
        "GET /via HTTP/1.1\r\nHost: t\r\nVia: 1.0 fred\r\n\r\n",
    );
    assert!(
        r.body_str().contains("\r\nVia: 1.0 fred\r\n"),
        "{}",
        r.body_str()
    );
    assert_eq!(r.header("via"), None);

    // An HTTP/1.0 request without Host gets the upstream's.
    let r = ask(addr, "GET /h10 HTTP/1.0\r\n\r\n");
    assert_eq!(r.status, 200);
    let host = format!("\r\nHost: {}\r\n", origin.addr);
    assert!(r.body_str().contains(&host), "{}", r.body_str());

    // Our own answers carry a Date.
    assert_dated(&ask(addr, "GET /x HTTP/1.1\r\n\r\n"), "400");
    let dead = common::proxy(&[format!("127.0.0.1:{}", common::dead_port())]);
    let r = ask(dead.addr(), "GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(r.status == 502 || r.status == 503, "{}", r.status);
    assert_dated(&r, "dead upstream");
}

#[test]
fn via_follows_its_flag() {
    let origin = head_echo();
    let named = common::proxy_with(&[origin.addr.to_string()], &["--via", "edge-7"]);
    let r = ask(
        named.addr(),
        "GET / HTTP/1.1\r\nHost: t\r\nVia: 1.0 fred\r\n\r\n",
    );
    assert!(
        r.body_str().contains("\r\nVia: 1.0 fred, 1.1 edge-7\r\n"),
        "{}",
        r.body_str()
    );
    assert_eq!(r.header("via"), Some("1.1 edge-7"));
    let off = common::proxy_with(&[origin.addr.to_string()], &["--via", "off"]);
    let r = ask(
        off.addr(),
        "GET / HTTP/1.1\r\nHost: t\r\nVia: 1.0 fred\r\n\r\n",
    );
    assert!(
        r.body_str().contains("\r\nVia: 1.0 fred\r\n"),
        "{}",
        r.body_str()
    );
    assert_eq!(r.header("via"), None);
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &["--upstream", "127.0.0.1:1", "--via", "a b"],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--via"), "{err}");
}

#[test]
fn an_nginx_origin_still_compresses_behind_ringmux() {
    // nginx does not compress for a request that carries `Via` unless told
    // to (`gzip_proxied` is off by default): a `Via` added by default made
    // every nginx origin send its pages uncompressed.
    let body = "ringmux ".repeat(4000);
    let nginx = common::nginx::Nginx::start(
        "gzip on; gzip_types text/plain; gzip_min_length 100;\n\
         server { listen {addr}; root {dir}/www; default_type text/plain; }",
    );
    nginx.put("www/page.txt", body.as_bytes());
    let p = common::proxy(&[nginx.addr().to_string()]);
    let mut c = common::Client::connect(p.addr());
    c.send(b"GET /page.txt HTTP/1.1\r\nHost: t\r\nAccept-Encoding: gzip\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-encoding"),
        Some("gzip"),
        "{:?}",
        r.headers
    );
    assert!(r.body.len() < body.len() / 10, "{} bytes", r.body.len());
    assert_eq!(r.header("via"), None, "no Via unless asked");
}
