//! HTTP/2 for clients through the whole proxy, over loopback: curl
//! (`--http2-prior-knowledge`, and `--http2` over TLS where ALPN chooses),
//! nghttp and h2load, and a raw client (`tests/h2_client.py`, Python's
//! hyperframe and hpack) that sends what a well-behaved client would not:
//! one test per rule (streams answered out of order, a window left shut,
//! floods, a malformed request, a reset stream, a drain).

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use common::certs::TestCa;
use common::{origin, Proc};

/// ringmux with an `h2` plaintext listener in front of `o`; `extra` flags.
fn h2c_proxy(o: &Proc, extra: &[&str]) -> Proc {
    h2c_proxy_to(o.addr(), extra)
}

/// The same in front of `upstream` (an origin of the test's own).
fn h2c_proxy_to(upstream: SocketAddr, extra: &[&str]) -> Proc {
    let upstream = upstream.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0,h2",
        "--workers",
        "1",
        "--no-pin",
        "--upstream",
        &upstream,
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Proc::start(common::PROXY, &args, 1)
}

/// The raw client's `scenario` against `addr`: what it printed.
fn raw(scenario: &str, addr: SocketAddr, args: &[&str]) -> String {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/h2_client.py");
    let out = Command::new("timeout")
        .args(["30", "python3", script, scenario])
        .arg(addr.port().to_string())
        .args(args)
        .output()
        .expect("python3 runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{scenario}: {text}{err}");
    text
}

/// The line of `text` that starts with `key`, without it.
fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no `{key}` in {text}"))
}

/// Wait (up to 3 s: workers publish their figures now and then) for the
/// sample `name` to read `want`, and assert it does.
fn settles(p: &Proc, name: &str, want: f64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    let read = || {
        let mut c = common::Client::connect(p.admin_addr());
        c.send(format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", p.admin_addr()).as_bytes());
        let body = c.response(false).body_str();
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    loop {
        let got = read();
        if got == Some(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name}: {got:?}, not {want}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The count of HTTP/2 limit `kind` reaches `want`.
fn limit(p: &Proc, kind: &str, want: f64) {
    settles(
        p,
        &format!("ringmux_h2_limits_total{{limit=\"{kind}\"}}"),
        want,
    );
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("curl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn prior_knowledge_and_http1_share_the_listener() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let url = format!("http://{}/?size=300000", p.addr());
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(out, "2 200 300000", "{out}");
    // HTTP/1.1 on the same port.
    let r = common::get(p.addr(), "/");
    assert_eq!(r.status, 200);
    // A POST body both ways, without and with a content-length.
    let body = common::noise(500_000, 7);
    let file = std::env::temp_dir().join(format!("ringmux-h2-{}", std::process::id()));
    std::fs::write(&file, &body).unwrap();
    let echo = format!("http://{}/echo", p.addr());
    for how in ["--data-binary", "-T"] {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "10", "--http2-prior-knowledge"])
            .arg(how)
            .arg(format!(
                "{}{}",
                if how == "-T" { "" } else { "@" },
                file.display()
            ))
            .arg(&echo)
            .output()
            .unwrap();
        assert!(
            out.stdout == body,
            "{how}: {} octets back",
            out.stdout.len()
        );
    }
    std::fs::remove_file(&file).ok();
    settles(&p, "ringmux_h2_connections_total", 3.0);
}

#[test]
fn nghttp_and_h2load_get_every_answer() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let out = Command::new("h2load")
        .args(["-n", "2000", "-c", "4", "-m", "10"])
        .arg(format!("http://{}/", p.addr()))
        .output()
        .expect("h2load runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("2000 succeeded, 0 failed, 0 errored"),
        "{text}"
    );
    let out = Command::new("nghttp")
        .args(["-n", "-s"])
        .arg(format!("http://{}/?size=2000000", p.addr()))
        .arg(format!("http://{}/?delay=100", p.addr()))
        .output()
        .expect("nghttp runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches(" 200 ").count(), 2, "{text}");
}

#[test]
fn alpn_chooses_h2_over_tls_and_http1_stays_for_those_that_ask() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let listen = format!(
        "127.0.0.1:0,tls,h2,cert={},key={}",
        leaf.cert.display(),
        leaf.key.display()
    );
    let upstream = o.addr().to_string();
    let p = Proc::start(
        common::PROXY,
        &[
            "--listen",
            &listen,
            "--workers",
            "1",
            "--no-pin",
            "--upstream",
            &upstream,
        ],
        1,
    );
    let port = p.addr().port();
    let resolve = format!("site.test:{port}:127.0.0.1");
    let url = format!("https://site.test:{port}/?size=100000");
    let ca_file = ca.ca_file().display().to_string();
    let common = [
        "--cacert",
        &ca_file,
        "--resolve",
        &resolve,
        "-o",
        "/dev/null",
    ];
    let mut args = common.to_vec();
    args.extend([
        "--http2",
        "-w",
        "%{http_version} %{http_code} %{size_download}",
        &url,
    ]);
    assert_eq!(curl(&args), "2 200 100000");
    let mut args = common.to_vec();
    args.extend(["--http1.1", "-w", "%{http_version} %{http_code}", &url]);
    assert_eq!(curl(&args), "1.1 200");
    // A Host the certificate does not cover: 421, on HTTP/2 too.
    let mut args = common.to_vec();
    args.extend([
        "--http2",
        "-H",
        "Host: elsewhere.test",
        "-w",
        "%{http_version} %{http_code}",
        &url,
    ]);
    assert_eq!(curl(&args), "2 421");
}

#[test]
fn a_slow_stream_holds_up_no_other() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let out = raw("order", p.addr(), &[]);
    assert_eq!(line(&out, "order"), "3 1", "{out}");
    assert_eq!(line(&out, "status"), "200 200");
    // A window left shut stops its stream and no other.
    let out = raw("window", p.addr(), &[]);
    assert_eq!(line(&out, "stream3"), "100000 True", "{out}");
    assert_eq!(line(&out, "stream1_held"), "65535", "{out}");
    assert_eq!(line(&out, "stream1"), "1000000 True", "{out}");
}

#[test]
fn a_window_never_opened_is_timed_out_and_counted() {
    let o = origin("o");
    let p = h2c_proxy(&o, &["--client-idle-timeout", "1000"]);
    let out = raw("stall", p.addr(), &[]);
    let secs: f64 = line(&out, "closed True after").parse().unwrap();
    assert!((0.9..4.0).contains(&secs), "{out}");
    limit(&p, "window_stall", 1.0);
}

#[test]
fn request_bodies_larger_than_a_window_are_credited_as_they_go() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let out = raw("post", p.addr(), &[]);
    assert_eq!(out.trim(), "sent 300032 status 200 echoed 300032");
}

#[test]
fn floods_end_the_connection_with_enhance_your_calm_and_are_counted() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    for (scenario, kind) in [
        ("rapid_reset", "rapid_reset"),
        ("continuation", "continuation_flood"),
        ("settings_flood", "settings_flood"),
        ("ping_flood", "ping_flood"),
    ] {
        let out = raw(scenario, p.addr(), &[]);
        let goaway = line(&out, "goaway");
        assert!(goaway.ends_with(", 11)"), "{scenario}: {out}");
        limit(&p, kind, 1.0);
    }
    // The origin saw far fewer than the 500 requests Rapid Reset opened.
    let (_, requests) = common::origin_stats(o.addr());
    assert!(requests < 300, "{requests}");
    // Others are served meanwhile.
    assert_eq!(common::get(p.addr(), "/").status, 200);
}

#[test]
fn stream_errors_end_the_stream_and_the_connection_goes_on() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    // Malformed: 400 with the reason, then RST_STREAM PROTOCOL_ERROR.
    let out = raw("malformed", p.addr(), &[]);
    assert_eq!(line(&out, "stream1"), "400 1", "{out}");
    assert_eq!(line(&out, "stream3"), "200");
    // An HPACK bomb: 431, and the tables stay in step.
    let out = raw("bomb", p.addr(), &[]);
    assert_eq!(line(&out, "stream1"), "431", "{out}");
    assert_eq!(line(&out, "stream3"), "200");
    limit(&p, "header_list_too_large", 1.0);
    // DATA after END_STREAM: STREAM_CLOSED.
    let out = raw("data_after_end", p.addr(), &[]);
    assert_eq!(line(&out, "stream1"), "5 None", "{out}");
    // One stream past the 100 announced: REFUSED_STREAM, the rest served.
    let out = raw("too_many", p.addr(), &[]);
    assert_eq!(line(&out, "refused"), "[(201, 7)]", "{out}");
    assert_eq!(line(&out, "answered"), "100");
    assert_eq!(line(&out, "announced"), "100 262144");
    limit(&p, "refused_stream", 1.0);
}

#[test]
fn a_stream_the_client_resets_lets_its_upstream_connection_go() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let admin = p.admin_addr().port().to_string();
    let out = raw("cancel", p.addr(), &[&admin]);
    assert_eq!(line(&out, "stream3"), "200 stream1 None", "{out}");
    // The connection of the cancelled stream was closed at once, not kept
    // for the 3 s its response takes, while the client stays.
    assert_eq!(line(&out, "active"), "0", "{out}");
}

#[test]
fn drain_says_goaway_and_streams_in_flight_finish() {
    let o = origin("o");
    let mut p = h2c_proxy(&o, &[]);
    let pid = p.pid().to_string();
    let out = raw("drain", p.addr(), &[&pid]);
    assert_eq!(line(&out, "goaway"), "(1, 0)", "{out}");
    assert_eq!(line(&out, "stream1"), "200 True");
    assert!(p.wait_exit(Duration::from_secs(5)).is_some());
}

#[test]
fn a_late_stream_ends_alone_at_the_request_deadline() {
    let o = origin("o");
    let p = h2c_proxy(&o, &["--request-timeout", "1000"]);
    let out = raw("deadline", p.addr(), &[]);
    assert_eq!(
        line(&out, "stream1"),
        "504 stream3 200 stream5 200",
        "{out}"
    );
}

#[test]
fn an_upload_refused_midway_lets_its_upstream_connection_go() {
    let o = origin("o");
    let p = h2c_proxy(&o, &["--max-body-size", "2000"]);
    let admin = p.admin_addr().port().to_string();
    let out = raw("oversize", p.addr(), &[&admin]);
    assert_eq!(line(&out, "stream1"), "413", "{out}");
    assert_eq!(line(&out, "active"), "0", "{out}");
}

#[test]
fn an_answer_of_our_own_waits_for_a_shut_window() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let out = raw("bomb_shut", p.addr(), &[]);
    assert_eq!(line(&out, "stream1"), "431 False True", "{out}");
}

#[test]
fn an_idle_connection_hears_goaway_before_the_close() {
    let o = origin("o");
    let p = h2c_proxy(&o, &["--client-idle-timeout", "500"]);
    let out = raw("idle_goaway", p.addr(), &[]);
    assert_eq!(line(&out, "goaway"), "(1, 0) closed True", "{out}");
}

#[test]
fn a_body_delimited_by_the_origins_close_ends_its_stream_whole() {
    // An origin of the HTTP/1.0 kind: no length, the end is the close.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n");
            std::thread::sleep(Duration::from_millis(50));
            let _ = s.write_all(b"until the close\n");
        }
    });
    let p = h2c_proxy_to(at, &[]);
    let out = curl(&[
        "--http2-prior-knowledge",
        "-w",
        " %{http_code}",
        &format!("http://{}/", p.addr()),
    ]);
    assert_eq!(out, "until the close\n 200");
}

#[test]
fn the_body_of_a_refused_stream_reaches_nothing() {
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    let out = raw("stub_body", p.addr(), &[]);
    assert_eq!(line(&out, "stream1"), "431 stream3 200", "{out}");
    // Stream 3's request, and the stats request itself: no smuggled GET.
    let (_, requests) = common::origin_stats(o.addr());
    assert_eq!(requests, 2, "{out}");
}

#[test]
fn a_refused_stream_the_client_reset_leaves_nothing_behind() {
    let o = origin("o");
    let p = h2c_proxy(&o, &["--client-idle-timeout", "500"]);
    let out = raw("stub_reset", p.addr(), &[]);
    assert_eq!(line(&out, "closed"), "True goaway (1, 0)", "{out}");
}

/// An origin that answers `Expect: 100-continue` with `100 Continue`
/// before it reads the body, then says how many octets came.
fn continuing_origin() -> SocketAddr {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s);
                loop {
                    let (mut length, mut expect) = (0usize, false);
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                        expect |= lower.starts_with("expect: 100-continue");
                        if line == "\r\n" {
                            break;
                        }
                    }
                    if expect {
                        r.get_mut()
                            .write_all(b"HTTP/1.1 100 Continue\r\n\r\n")
                            .unwrap();
                    }
                    let mut body = vec![0u8; length];
                    r.read_exact(&mut body).unwrap();
                    let text = format!("{length}");
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{text}",
                        text.len()
                    );
                    r.get_mut().write_all(answer.as_bytes()).unwrap();
                }
            });
        }
    });
    at
}

#[test]
fn expect_100_continue_gets_its_interim_answer() {
    // A client that waits for `100 Continue` before its body (curl waits
    // a second for it, then sends the body anyway).
    let p = h2c_proxy_to(continuing_origin(), &[]);
    let file = std::env::temp_dir().join(format!("ringmux-h2-expect-{}", std::process::id()));
    std::fs::write(&file, common::noise(2_000_000, 3)).unwrap();
    let out = curl(&[
        "--http2-prior-knowledge",
        "--data-binary",
        &format!("@{}", file.display()),
        "-H",
        "Expect: 100-continue",
        "-D",
        "-",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &format!("http://{}/up", p.addr()),
    ]);
    std::fs::remove_file(&file).ok();
    assert!(out.starts_with("HTTP/2 100"), "{out}");
    assert!(out.contains("\r\nHTTP/2 200"), "{out}");
    assert!(out.ends_with("\r\n7"), "{out}");
}

#[test]
fn trailers_from_an_http1_origin_reach_the_client_as_trailers() {
    // An origin that answers chunked, with trailers after the body (one
    // connection-specific: HTTP/2 has no place for it, it is left out).
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let at = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            use std::io::{Read, Write};
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n\
                  5\r\nhello\r\n0\r\nX-Checksum: abc\r\nUpgrade: nonsense\r\n\r\n",
            );
        }
    });
    let p = h2c_proxy_to(at, &[]);
    let out = raw("trailers", p.addr(), &[]);
    assert_eq!(
        line(&out, "stream1"),
        "200 5 [('x-checksum', 'abc')]",
        "{out}"
    );
}

#[test]
fn h2_in_a_listen_table_and_a_bad_listen_option_named() {
    let o = origin("o");
    let file = common::ConfigFile::new(&format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\nh2 = true\n\n[[upstream]]\naddr = \"{}\"\n",
        o.addr()
    ));
    let p = Proc::start(
        common::PROXY,
        &["--config", file.path(), "--workers", "1", "--no-pin"],
        1,
    );
    let out = curl(&[
        "--http2-prior-knowledge",
        "-o",
        "/dev/null",
        "-w",
        "%{http_version} %{http_code}",
        &format!("http://{}/", p.addr()),
    ]);
    assert_eq!(out, "2 200");
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &[
            "--listen",
            "127.0.0.1:0,h3",
            "--upstream",
            "127.0.0.1:9",
            "--check",
        ],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--listen") && err.contains("'h3'"), "{err}");
}

#[test]
fn the_status_page_says_which_connections_speak_http2() {
    use std::io::{Read, Write};
    let o = origin("o");
    let p = h2c_proxy(&o, &[]);
    // One HTTP/2 connection (the preface and an empty SETTINGS; the
    // server's SETTINGS read back), one HTTP/1.1 keep-alive connection.
    let mut h2 = std::net::TcpStream::connect(p.addr()).unwrap();
    h2.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    h2.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .unwrap();
    let mut buf = [0u8; 64];
    let _ = h2.read(&mut buf).unwrap();
    let mut h1 = common::Client::connect(p.addr());
    assert_eq!(h1.get("/").status, 200);
    let admin = p.admin_addr();
    let mut c = common::Client::connect(admin);
    c.send(format!("GET /status HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes());
    let body = c.response(false).body_str();
    assert_eq!(body.matches("\"protocol\":\"h2\"").count(), 1, "{body}");
    assert_eq!(
        body.matches("\"protocol\":\"http/1.1\"").count(),
        1,
        "{body}"
    );
}

#[test]
fn the_stream_limit_and_windows_are_flags() {
    let o = origin("o");
    let p = h2c_proxy(
        &o,
        &["--h2-max-streams", "2", "--h2-stream-window", "100000"],
    );
    let out = raw("too_many", p.addr(), &["3"]);
    assert_eq!(line(&out, "refused"), "[(5, 7)]", "{out}");
    assert_eq!(line(&out, "answered"), "2");
    assert_eq!(line(&out, "announced"), "2 100000");
    for (flag, value) in [("--h2-max-streams", "0"), ("--h2-stream-window", "1000")] {
        let (status, _, err) = common::run_to_exit(
            common::PROXY,
            &[flag, value, "--upstream", "127.0.0.1:9", "--check"],
        );
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains(flag), "{err}");
    }
}
