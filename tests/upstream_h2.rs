//! HTTP/2 to origins (`protocol = "h2"`, `--upstream-protocol h2`): many
//! clients' requests on few connections, each on a stream of its own. The
//! origins are nginx speaking h2c and `tests/h2_origin.py` (Python's `h2`),
//! whose paths misbehave on purpose: answers out of order, GOAWAY with
//! streams in flight, RST_STREAM, a close mid-body, trailers, a request
//! never answered.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use common::{metric, Client, ConfigFile, Proc, PROXY};

/// The Python origin.
fn py_origin() -> Proc {
    Proc::start("python3", &["tests/h2_origin.py"], 1)
}

/// ringmux in front of `upstream`, speaking HTTP/2 to it.
fn h2_proxy(upstream: SocketAddr, extra: &[&str]) -> Proc {
    let up = upstream.to_string();
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &up,
        "--upstream-protocol",
        "h2",
    ];
    args.extend_from_slice(extra);
    Proc::start(PROXY, &args, 1)
}

/// ringmux listening on each of `listens` (an `h2` one takes HTTP/2
/// clients), speaking HTTP/2 to `upstream`.
fn h2_proxy_on(listens: &[&str], upstream: SocketAddr) -> Proc {
    let up = upstream.to_string();
    let mut args = Vec::new();
    for l in listens {
        args.extend_from_slice(&["--listen", l]);
    }
    args.extend_from_slice(&["--workers", "1", "--no-pin", "--upstream", &up]);
    args.extend_from_slice(&["--upstream-protocol", "h2"]);
    Proc::start(PROXY, &args, listens.len())
}

/// The origin's counters: (connections, streams, cancels it received).
fn origin_counts(origin: SocketAddr) -> (u64, u64, u64) {
    // (Straight to the origin, in HTTP/2: through curl.)
    let out = std::process::Command::new("curl")
        .args(["-s", "--http2-prior-knowledge", "--max-time", "5"])
        .arg(format!("http://{origin}/stats"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |k: &str| -> u64 {
        text.split_whitespace()
            .find_map(|w| w.strip_prefix(k)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in {text:?}"))
    };
    (field("conns"), field("streams"), field("cancels"))
}

/// GET `path` through `proxy` on a connection of its own, in a thread.
fn get_in_thread(proxy: SocketAddr, path: &str) -> thread::JoinHandle<common::Response> {
    let path = path.to_string();
    thread::spawn(move || Client::connect(proxy).get(&path))
}

#[test]
fn many_clients_share_one_connection_to_an_h2c_nginx() {
    let nginx = Nginx::start(
        "server { listen {addr} http2; location / { return 200 \"hello $request_uri over $server_protocol\\n\"; } }",
    );
    let p = h2_proxy(nginx.addr(), &[]);
    let admin = p.admin_addr();
    let handles: Vec<_> = (0..16)
        .map(|i| get_in_thread(p.addr(), &format!("/n{i}")))
        .collect();
    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body_str(), format!("hello /n{i} over HTTP/2.0\n"));
    }
    // Keep-alive clients on one connection each, many requests each.
    let mut clients: Vec<Client> = (0..8).map(|_| Client::connect(p.addr())).collect();
    for round in 0..20 {
        for (i, c) in clients.iter_mut().enumerate() {
            let r = c.get(&format!("/c{i}/{round}"));
            assert_eq!(r.body_str(), format!("hello /c{i}/{round} over HTTP/2.0\n"));
        }
    }
    // (The figures reach the admin port within a tick or two.)
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(admin, "ringmux_upstream_h2_streams_total") < 176.0 {
        assert!(
            Instant::now() < deadline,
            "not every request went as a stream"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let conns = metric(admin, "ringmux_upstream_connections_opened_total");
    assert!(
        conns <= 2.0,
        "176 requests took {conns} upstream connections"
    );
}

#[test]
fn answers_out_of_order_reach_their_own_clients() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let handles: Vec<_> = ["/rev/a", "/rev/b", "/rev/c"]
        .iter()
        .map(|path| {
            let h = get_in_thread(p.addr(), path);
            // (In this order on the origin's connection.)
            thread::sleep(Duration::from_millis(100));
            h
        })
        .collect();
    let mut streams = Vec::new();
    for (h, path) in handles.into_iter().zip(["/rev/a", "/rev/b", "/rev/c"]) {
        let r = h.join().unwrap();
        assert_eq!(r.status, 200);
        let body = r.body_str();
        assert!(
            body.starts_with(&format!("path={path} ")),
            "{path} got {body}"
        );
        streams.push(body);
    }
    // All three on one connection.
    assert!(streams.iter().all(|b| b.ends_with("conn=1")), "{streams:?}");
}

#[test]
fn goaway_sends_the_unprocessed_streams_again_on_a_new_connection() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let paths = ["/hold/a", "/hold/b", "/hold/c"];
    let handles: Vec<_> = paths
        .iter()
        .map(|path| {
            let h = get_in_thread(p.addr(), path);
            thread::sleep(Duration::from_millis(100));
            h
        })
        .collect();
    let bodies: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let r = h.join().unwrap();
            assert_eq!(r.status, 200, "{}", r.body_str());
            r.body_str()
        })
        .collect();
    // The first was processed on the first connection; the two above the
    // GOAWAY's last stream went again, on a second.
    assert!(
        bodies[0].starts_with("path=/hold/a ") && bodies[0].ends_with("conn=1"),
        "{bodies:?}"
    );
    for (b, path) in bodies[1..].iter().zip(&paths[1..]) {
        assert!(
            b.starts_with(&format!("path={path} ")) && b.ends_with("conn=2"),
            "{bodies:?}"
        );
    }
}

#[test]
fn a_reset_stream_fails_its_exchange_alone() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let slow = get_in_thread(p.addr(), "/rev/x");
    thread::sleep(Duration::from_millis(100));
    let r = Client::connect(p.addr()).get("/reset");
    assert_eq!(r.status, 502, "{}", r.body_str());
    // The other stream on the connection goes on.
    let mut more: Vec<_> = ["/rev/y", "/rev/z"]
        .iter()
        .map(|path| get_in_thread(p.addr(), path))
        .collect();
    more.insert(0, slow);
    for h in more {
        assert_eq!(h.join().unwrap().status, 200);
    }
    let (conns, _, _) = origin_counts(o.addr());
    // (One for the proxy, one for the counting itself.)
    assert_eq!(conns, 2, "a stream's reset closed the shared connection");
}

#[test]
fn an_origin_that_closes_mid_body_cuts_only_its_streams() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /cut HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let got = common::read_to_close(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    // Ten octets of the hundred, then the client's connection is cut.
    let body = common::find(&got, b"\r\n\r\n").map_or(0, |at| got.len() - at - 4);
    assert!(body < 100, "{text}");
    // The next request gets a new connection and its answer.
    let r = Client::connect(p.addr()).get("/after");
    assert_eq!(r.status, 200);
    assert!(r.body_str().ends_with("conn=2"), "{}", r.body_str());
}

#[test]
fn a_client_that_leaves_resets_its_stream_and_nobody_else_notices() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let admin = p.admin_addr();
    let held = get_in_thread(p.addr(), "/rev/1");
    thread::sleep(Duration::from_millis(100));
    {
        let mut c = TcpStream::connect(p.addr()).unwrap();
        c.write_all(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        thread::sleep(Duration::from_millis(200));
        // Gone at once: a reset, not a half-close.
        socket2::SockRef::from(&c)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while origin_counts(o.addr()).2 < 1 {
        assert!(
            Instant::now() < deadline,
            "no RST_STREAM CANCEL reached the origin"
        );
        thread::sleep(Duration::from_millis(50));
    }
    let more: Vec<_> = ["/rev/2", "/rev/3"]
        .iter()
        .map(|path| get_in_thread(p.addr(), path))
        .collect();
    assert_eq!(held.join().unwrap().status, 200);
    for h in more {
        assert_eq!(h.join().unwrap().status, 200);
    }
    assert_eq!(
        metric(admin, "ringmux_upstream_connections_opened_total"),
        1.0
    );
}

#[test]
fn a_stream_that_gets_no_answer_times_out_alone() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &["--response-timeout", "500"]);
    let slow = get_in_thread(p.addr(), "/slow");
    thread::sleep(Duration::from_millis(100));
    let mut c = Client::connect(p.addr());
    for i in 0..5 {
        assert_eq!(c.get(&format!("/quick/{i}")).status, 200);
        thread::sleep(Duration::from_millis(100));
    }
    let r = slow.join().unwrap();
    assert_eq!(r.status, 504);
    let (conns, _, cancels) = origin_counts(o.addr());
    // (One for the counting. The late stream's PING keeps new streams off
    // the connection until the origin answers it, so a request in that
    // moment may open a second one; the first is not closed.)
    assert!(conns <= 3, "{conns} connections");
    assert_eq!(cancels, 1, "the late stream was not reset");
}

#[test]
fn request_bodies_go_as_data_length_and_chunked() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let body = common::noise(300_000, 7);
    let mut c = Client::connect(p.addr());
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(common::hash(&r.body), common::hash(&body));
    // Chunked: de-chunked into DATA.
    c.send(b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.body_str(), "hello world");
}

#[test]
fn a_large_answer_to_a_slow_client_holds_back_only_its_stream() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &["--buffer-size", "65536"]);
    // A client that reads nothing of its 8 MB answer for now.
    let mut slow = TcpStream::connect(p.addr()).unwrap();
    slow.write_all(b"GET /big/8000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    thread::sleep(Duration::from_millis(300));
    // Others on the same connection are answered meanwhile.
    let mut c = Client::connect(p.addr());
    for i in 0..10 {
        let r = c.get(&format!("/meanwhile/{i}"));
        assert_eq!(r.status, 200);
        assert!(r.body_str().ends_with("conn=1"), "{}", r.body_str());
    }
    // Bounded by the stream's window, not the answer's size.
    let rss_before = p.rss_kib();
    assert!(rss_before < 64 * 1024, "{rss_before} KiB");
    // Then the slow client takes all of it.
    slow.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut total = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let mut head_done = false;
    let mut seen = Vec::new();
    while total < 8_000_000 {
        let n = slow.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {total}");
        if head_done {
            total += n;
        } else {
            seen.extend_from_slice(&buf[..n]);
            if let Some(at) = common::find(&seen, b"\r\n\r\n") {
                head_done = true;
                total += seen.len() - at - 4;
            }
        }
    }
    assert_eq!(total, 8_000_000);
}

#[test]
fn trailers_and_grpc_status_reach_an_http2_client() {
    let o = py_origin();
    let p = h2_proxy_on(&["127.0.0.1:0", "127.0.0.1:0,h2"], o.addr());
    let out = std::process::Command::new("curl")
        .args(["-s", "-v", "--http2-prior-knowledge", "--max-time", "5"])
        .arg(format!("http://{}/trailers", p.addrs[1]))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("< grpc-status: 0"), "{err}");
    assert!(err.contains("< content-type: application/grpc"), "{err}");
    // And as HTTP/1.1 chunked trailers to an HTTP/1.1 client.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\nConnection: close\r\n\r\n")
        .unwrap();
    let got =
        String::from_utf8_lossy(&common::read_to_close(&mut s, Duration::from_secs(5))).to_string();
    assert!(got.to_ascii_lowercase().contains("grpc-status: 0"), "{got}");
}

#[test]
fn a_reload_that_changes_the_protocol_takes_effect_for_new_requests() {
    let o = py_origin();
    let file = ConfigFile::new(&format!("[[upstream]]\naddr = \"{}\"\n", o.addr()));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--config",
        file.path(),
    ];
    let p = Proc::start(PROXY, &args, 1);
    let mut c = Client::connect(p.addr());
    let r = c.get("/one");
    assert!(r.body_str().contains("proto=http/1.1"), "{}", r.body_str());
    file.write(&format!(
        "upstream_protocol = \"h2\"\n[[upstream]]\naddr = \"{}\"\n",
        o.addr()
    ));
    p.signal("HUP");
    p.wait_stderr("configuration reloaded", 1, Duration::from_secs(10));
    let r = c.get("/two");
    assert!(
        r.body_str().starts_with("path=/two stream="),
        "{}",
        r.body_str()
    );
    // And back: the HTTP/2 connection is not used for HTTP/1.1.
    file.write(&format!("[[upstream]]\naddr = \"{}\"\n", o.addr()));
    p.signal("HUP");
    p.wait_stderr("configuration reloaded", 2, Duration::from_secs(10));
    let r = c.get("/three");
    assert!(r.body_str().contains("proto=http/1.1"), "{}", r.body_str());
}

#[test]
fn send_proxy_with_h2_is_refused_by_name() {
    let (status, _, err) = common::run_to_exit(
        PROXY,
        &[
            "--upstream",
            "127.0.0.1:1",
            "--upstream-protocol",
            "h2",
            "--send-proxy",
            "v1",
            "--check",
        ],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--send-proxy"), "{err}");
}

#[test]
fn grpc_calls_pass_end_to_end_with_their_status_in_trailers() {
    let server = Proc::start("python3", &["tests/grpc_echo.py", "serve"], 1);
    let p = h2_proxy_on(&["127.0.0.1:0,h2"], server.addr());
    let (status, out, err) = common::run_to_exit(
        "python3",
        &["tests/grpc_echo.py", "call", &p.addr().to_string()],
    );
    assert!(status.success(), "{out}\n{err}\n{}", p.stderr_text());
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "say cprg olleh",
            "big True",
            "fail NOT_FOUND no such thing",
            "count 5 message 4",
            "many True",
        ],
        "{err}"
    );
}

#[test]
fn an_answer_whole_before_the_origin_closes_still_reaches_a_slow_client() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &["--buffer-size", "65536"]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET /big-close/3000000 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Slow to start reading: the origin's last window of it waits in the
    // stream when the origin closes.
    thread::sleep(Duration::from_millis(500));
    let got = common::read_to_close(&mut s, Duration::from_secs(20));
    let body = common::find(&got, b"\r\n\r\n").map_or(0, |at| got.len() - at - 4);
    assert_eq!(
        body,
        3_000_000,
        "{:?}",
        String::from_utf8_lossy(&got[..got.len().min(200)])
    );
}

#[test]
fn slow_clients_do_not_shut_the_connection_window_for_the_others() {
    let o = py_origin();
    // Stream windows of 64 KiB, a connection window of sixteen of them.
    let p = h2_proxy(o.addr(), &["--buffer-size", "65536"]);
    // Twenty clients that read nothing of their 4 MB answers hold a window
    // each: more than the connection's, were it credited only as clients
    // read.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(p.addr()).unwrap();
            socket2::SockRef::from(&s)
                .set_recv_buffer_size(4096)
                .unwrap();
            s.write_all(b"GET /big/4000000 HTTP/1.1\r\nHost: x\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    let mut c = Client::connect(p.addr());
    let r = c.get("/big/2000000");
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), 2_000_000);
    let r = c.get("/after");
    assert!(r.body_str().ends_with("conn=1"), "{}", r.body_str());
    drop(stalled);
}

/// Two GETs held on the origin's first connection, then `post` (a POST of
/// `body` octets to `/hold/c`): the origin's GOAWAY refuses the second and
/// the POST. The POST's answer, and how long it took.
fn post_refused_by_goaway(body: usize) -> (common::Response, Duration) {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let a = get_in_thread(p.addr(), "/hold/a");
    thread::sleep(Duration::from_millis(100));
    let b = get_in_thread(p.addr(), "/hold/b");
    thread::sleep(Duration::from_millis(100));
    let started = Instant::now();
    let mut c = Client::connect(p.addr());
    let mut req =
        format!("POST /hold/c HTTP/1.1\r\nHost: x\r\nContent-Length: {body}\r\n\r\n").into_bytes();
    req.extend(std::iter::repeat_n(b'p', body));
    c.send(&req);
    let r = c.response(false);
    let took = started.elapsed();
    assert_eq!(a.join().unwrap().status, 200);
    let rb = b.join().unwrap();
    assert!(rb.body_str().ends_with("conn=2"), "{}", rb.body_str());
    (r, took)
}

#[test]
fn a_small_post_refused_by_goaway_goes_again_whole() {
    let (r, _) = post_refused_by_goaway(5);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().ends_with("conn=2"), "{}", r.body_str());
}

#[test]
fn a_large_post_refused_by_goaway_is_not_sent_again_empty() {
    // Its body went as it came and was freed: it cannot go again; 502, at
    // once (not a hang to the response timeout).
    let (r, took) = post_refused_by_goaway(100_000);
    assert_eq!(r.status, 502, "{}", r.body_str());
    assert!(took < Duration::from_secs(5), "{took:?}");
}

#[test]
fn a_silent_connection_goes_at_its_first_late_stream() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &["--response-timeout", "500"]);
    assert_eq!(Client::connect(p.addr()).get("/freeze").status, 504);
    // The next request does not join the dead connection.
    let r = Client::connect(p.addr()).get("/after");
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert!(r.body_str().ends_with("conn=2"), "{}", r.body_str());
}

#[test]
fn stray_answers_after_a_stream_ended_reach_nobody() {
    // HTTP/1.1's desync test, over HTTP/2: after each answer the origin
    // writes a second one on the same, closed stream. With HTTP/1.1 such
    // bytes became the next user's response; here the stream id says they
    // are nobody's.
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let admin = p.admin_addr();
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let addr = p.addr();
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..25 {
                    let path = format!("/stray/{t}-{i}");
                    let r = c.get(&path);
                    assert_eq!(r.status, 200);
                    let body = r.body_str();
                    assert!(
                        body.starts_with(&format!("path={path} ")),
                        "{path} got {body}"
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    thread::sleep(Duration::from_millis(300));
    // No connection was closed over them. (A request in the very turn its
    // connection went idle opens another: a few, not one per request.)
    assert_eq!(metric(admin, "ringmux_upstream_stray_closes_total"), 0.0);
    assert!(metric(admin, "ringmux_upstream_connections_opened_total") <= 4.0);
}

#[test]
fn health_checks_speak_http2_to_an_h2c_origin() {
    // nginx's h2c port answers nothing but HTTP/2: an HTTP/1.1 check would
    // take it down.
    let nginx = Nginx::start(
        "server { listen {addr} http2; location = /health { return 200; } \
         location = /sick { return 503; } location / { return 200 \"ok\"; } }",
    );
    let up = |path: &str| {
        format!(
            "{},health_check={path},interval=100,rise=1,fall=1",
            nginx.addr()
        )
    };
    let (well, sick) = (up("/health"), up("/sick"));
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &well,
        "--upstream-protocol",
        "h2",
    ];
    let p = Proc::start(PROXY, &args, 1);
    let name = format!("ringmux_upstream_up{{upstream=\"{}\"}}", nginx.addr());
    thread::sleep(Duration::from_millis(600));
    assert_eq!(metric(p.admin_addr(), &name), 1.0);
    assert_eq!(Client::connect(p.addr()).get("/").body_str(), "ok");
    drop(p);
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--admin",
        "127.0.0.1:0",
        "--upstream",
        &sick,
        "--upstream-protocol",
        "h2",
    ];
    let p = Proc::start(PROXY, &args, 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    while metric(p.admin_addr(), &name) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "a 503 check did not take it down"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_100_continue_from_the_origin_reaches_a_client_that_waits_for_it() {
    let o = py_origin();
    let p = h2_proxy(o.addr(), &[]);
    let started = Instant::now();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "10", "--expect100-timeout", "8"])
        .args([
            "-H",
            "Expect: 100-continue",
            "--data-binary",
            "hello, origin",
        ])
        .arg(format!("http://{}/echo", p.addr()))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello, origin");
    // (Without the interim answer curl waits its 8 s, then sends.)
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}
