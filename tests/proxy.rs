//! Loopback integration tests: the `ringmux` binary in front of
//! `ringmux-origin` processes, driven by a blocking std client. Every test
//! starts its own processes on ports picked by the OS.

mod common;

use std::collections::HashMap;
use std::io::Read;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Framing};
use ringmux::origin::{pattern, PATTERN};

fn up(p: &common::Proc) -> String {
    p.addr().to_string()
}

/// Checks that `body` is a single line ending in `\n`.
fn assert_one_line(body: &[u8]) {
    let text = String::from_utf8_lossy(body);
    assert!(
        body.ends_with(b"\n") && body.iter().filter(|&&b| b == b'\n').count() == 1,
        "expected a one-line body, got {text:?}"
    );
}

#[test]
fn get_and_head() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());

    let r = c.get("/?size=1000");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-origin"), Some("o"));
    assert_eq!(r.body.len(), 1000);
    assert!(r.body == pattern(1000), "body differs from pattern(1000)");

    c.send(b"HEAD /?size=1000 HTTP/1.1\r\nHost: test\r\n\r\n");
    let r = c.response(true);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert!(r.body.is_empty());

    // Still usable, and no stray HEAD body bytes precede the next response.
    let r = c.get("/?size=7");
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"abcdefg");
    assert!(c.buf.is_empty());
}

#[test]
fn keep_alive_reuse() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let addr = p.addr();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..50 {
                    let size = (t * 50 + i) % 97;
                    let r = c.get(&format!("/k?size={size}"));
                    assert_eq!(r.status, 200, "conn {t} request {i}");
                    assert!(r.body == pattern(size), "conn {t} request {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let (conns, reqs) = common::origin_stats(o.addr());
    // The stats request itself is one connection and one request.
    let (conns, reqs) = (conns - 1, reqs - 1);
    eprintln!("origin saw {conns} proxy connections for {reqs} requests");
    assert_eq!(reqs, 200);
    // A client's next request often comes before its last connection is
    // out of the pool's 200 µs quarantine; at a loopback round trip of
    // ~40 µs each client may rotate through up to five or six (16 seen on
    // a quiet machine, 12 on a busier one). Without reuse it would be 200.
    assert!(
        conns <= 24,
        "{conns} upstream connections for 200 requests: no keep-alive reuse"
    );
}

#[test]
fn pipelined_fan_out() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());
    let sizes: Vec<usize> = (101..=108).collect();
    let mut batch = Vec::new();
    for s in &sizes {
        batch.extend_from_slice(
            format!("GET /p?delay=200&size={s} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
        );
    }
    let t = Instant::now();
    c.send(&batch);
    for s in &sizes {
        let r = c.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), *s, "responses out of order");
        assert!(r.body == pattern(*s));
    }
    let elapsed = t.elapsed();
    eprintln!("8 pipelined 200 ms requests took {elapsed:?}");
    assert!(
        elapsed < Duration::from_millis(1000),
        "pipelined requests were not fanned out: {elapsed:?}"
    );
}

#[test]
fn post_in_pipeline_keeps_order() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());
    c.send(
        b"GET /a?delay=100&size=5 HTTP/1.1\r\nHost: test\r\n\r\n\
          POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: 11\r\n\r\nhello world\
          GET /c?size=3 HTTP/1.1\r\nHost: test\r\n\r\n",
    );
    let r = c.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-echo-method"), Some("POST"));
    assert_eq!(r.body, b"hello world");
    let r = c.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
}

#[test]
fn post_bodies_arrive_intact() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());

    // Content-Length, 1 MiB.
    let data = common::noise(1 << 20, 0x5eed);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
            data.len()
        )
        .as_bytes(),
    );
    c.send(&data);
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert_eq!(common::hash(&r.body), common::hash(&data));

    // Chunked, chunks of varying sizes, written in several pieces.
    let data = common::noise(700_001, 0xfeed);
    let mut req =
        b"POST /echo HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    let mut rest = &data[..];
    for size in [1usize, 17, 4096, 65_536, 3, 300_000, 100_000]
        .iter()
        .cycle()
    {
        if rest.is_empty() {
            break;
        }
        let n = (*size).min(rest.len());
        req.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        req.extend_from_slice(&rest[..n]);
        req.extend_from_slice(b"\r\n");
        rest = &rest[n..];
    }
    req.extend_from_slice(b"0\r\n\r\n");
    for piece in req.chunks(50_000) {
        c.send(piece);
    }
    let r = c.response(false);
    assert_eq!(r.status, 200);
    assert_eq!(r.body.len(), data.len());
    assert_eq!(common::hash(&r.body), common::hash(&data));

    // The connection is still in step.
    assert_eq!(c.get("/?size=2").body, b"ab");
}

/// Large bodies go to the client straight from the receive buffers; small
/// ones and heads are copied. Mixed sizes pipelined on one connection put
/// the end of one body, whole small responses and the start of the next
/// body in one receive buffer; several clients at once share the ring; with
/// a tiny ring the proxy must fall back to copying. Every body must arrive
/// whole and in order either way.
#[test]
fn bodies_sent_from_receive_buffers_arrive_whole_and_in_order() {
    let o = common::origin("o");
    for ring in ["1024", "8"] {
        let p = common::proxy_with(&[up(&o)], &["--ring-buffers", ring]);
        let addr = p.addr();
        let clients: Vec<_> = (0..4)
            .map(|t| {
                thread::spawn(move || {
                    let sizes = [100_000, 5, 70_001, 16_384, 4_095, 300_000, 1, 40_000];
                    let mut c = Client::connect(addr);
                    for round in 0..5 {
                        let mut batch = Vec::new();
                        for s in &sizes {
                            batch.extend_from_slice(
                                format!("GET /m?size={s} HTTP/1.1\r\nHost: test\r\n\r\n")
                                    .as_bytes(),
                            );
                        }
                        c.send(&batch);
                        for s in &sizes {
                            let r = c.response(false);
                            assert_eq!(r.status, 200);
                            assert_eq!(r.body.len(), *s, "client {t} round {round}");
                            assert!(r.body == pattern(*s), "client {t} round {round} size {s}");
                        }
                    }
                    // Random bytes, echoed: no pattern to hide a misplaced piece.
                    let data = common::noise(1 << 20, t + 7);
                    let mut req = format!(
                        "POST /echo HTTP/1.1\r\nHost: test\r\nContent-Length: {}\r\n\r\n",
                        data.len()
                    )
                    .into_bytes();
                    req.extend_from_slice(&data);
                    c.send(&req);
                    let r = c.response(false);
                    assert_eq!(
                        common::hash(&r.body),
                        common::hash(&data),
                        "client {t} echo"
                    );
                })
            })
            .collect();
        for h in clients {
            h.join().unwrap();
        }
    }
}

#[test]
fn large_response_to_slow_reader_is_streamed() {
    const SIZE: usize = 64 << 20;
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());
    // Warm-up.
    let r = c.get("/?size=1048576");
    assert!(r.body == pattern(1 << 20));
    thread::sleep(Duration::from_millis(100));
    let before = p.rss_kib();

    c.send(format!("GET /big?size={SIZE} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
    let (status, _, framing) = c.read_head(false);
    assert_eq!(status, 200);
    assert_eq!(framing, Framing::Length(SIZE));
    let mut peak = before;
    let mut got = 0usize;
    let mut mismatch = None;
    let mut check = |bytes: &[u8], got: &mut usize| {
        for (i, b) in bytes.iter().enumerate() {
            if *b != PATTERN[(*got + i) % PATTERN.len()] && mismatch.is_none() {
                mismatch = Some(*got + i);
            }
        }
        *got += bytes.len();
    };
    let early = std::mem::take(&mut c.buf);
    check(&early, &mut got);
    let mut chunk = vec![0u8; 256 * 1024];
    while got < SIZE {
        // Read up to 256 KiB, then pause.
        let want = chunk.len().min(SIZE - got);
        let mut filled = 0;
        while filled < want {
            let n = c.stream.read(&mut chunk[filled..want]).expect("read body");
            assert!(n > 0, "EOF after {} of {SIZE} body bytes", got + filled);
            filled += n;
        }
        check(&chunk[..filled], &mut got);
        peak = peak.max(p.rss_kib());
        thread::sleep(Duration::from_millis(5));
    }
    let after = p.rss_kib();
    let growth = peak.saturating_sub(before);
    eprintln!(
        "proxy VmRSS: before {before} KiB, peak {peak} KiB, after {after} KiB, growth {growth} KiB"
    );
    assert_eq!(got, SIZE);
    assert_eq!(mismatch, None, "first byte differing from the pattern");
    assert!(
        growth < 24 * 1024,
        "proxy RSS grew by {growth} KiB while streaming 64 MiB (before {before}, peak {peak})"
    );
    // Still usable afterwards.
    assert_eq!(c.get("/?size=3").body, b"abc");
}

#[test]
fn weighted_upstreams() {
    let a = common::origin("A");
    let b = common::origin("B");
    let p = common::proxy(&[
        format!("{},weight=1", up(&a)),
        format!("{},weight=2", up(&b)),
    ]);
    let addr = p.addr();
    let handles: Vec<_> = (0..6)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let mut seen: HashMap<String, usize> = HashMap::new();
                for _ in 0..50 {
                    let r = c.get("/w?size=10");
                    assert_eq!(r.status, 200);
                    *seen
                        .entry(r.header("x-origin").unwrap_or("?").to_string())
                        .or_default() += 1;
                }
                seen
            })
        })
        .collect();
    let mut total: HashMap<String, usize> = HashMap::new();
    for h in handles {
        for (k, v) in h.join().unwrap() {
            *total.entry(k).or_default() += v;
        }
    }
    let na = total.get("A").copied().unwrap_or(0);
    let nb = total.get("B").copied().unwrap_or(0);
    eprintln!("weighted split: {total:?}");
    assert_eq!(na + nb, 300, "{total:?}");
    assert!(na > 0 && nb > 0, "{total:?}");
    let share = nb as f64 / 300.0;
    assert!(
        (0.55..=0.78).contains(&share),
        "B (weight 2) served {share:.3} of requests: {total:?}"
    );
}

#[test]
fn upstream_down_gives_5xx_quickly() {
    let port = common::dead_port();
    let p = common::proxy(&[format!("127.0.0.1:{port}")]);
    for round in 0..2 {
        let t = Instant::now();
        let mut c = Client::connect(p.addr());
        let r = c.get("/");
        let elapsed = t.elapsed();
        eprintln!(
            "round {round}: {} {:?} in {elapsed:?}",
            r.status,
            r.body_str()
        );
        assert!(
            r.status == 502 || r.status == 503,
            "round {round}: status {} body {:?}",
            r.status,
            r.body_str()
        );
        assert_one_line(&r.body);
        assert!(
            elapsed < Duration::from_secs(2),
            "round {round}: took {elapsed:?}"
        );
    }
}

#[test]
fn one_upstream_down_of_two() {
    let o = common::origin("alive");
    let port = common::dead_port();
    let p = common::proxy(&[format!("127.0.0.1:{port}"), up(&o)]);
    let mut failures = Vec::new();
    for i in 0..20 {
        // Half on fresh connections, half on one kept-alive connection.
        let r = if i % 2 == 0 {
            common::get(p.addr(), "/?size=5")
        } else {
            thread_local! {
                static C: std::cell::RefCell<Option<Client>> = const { std::cell::RefCell::new(None) };
            }
            let addr = p.addr();
            C.with(|c| {
                c.borrow_mut()
                    .get_or_insert_with(|| Client::connect(addr))
                    .get("/?size=5")
            })
        };
        if r.status != 200 || r.body != b"abcde" {
            failures.push((i, r.status, r.body_str()));
        }
    }
    assert!(failures.is_empty(), "failed requests: {failures:?}");
}

#[test]
fn malformed_request_is_refused_and_not_forwarded() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let (_, before) = common::origin_stats(o.addr());
    let mut c = Client::connect(p.addr());
    c.send(b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n");
    let r = c.response(false);
    eprintln!(
        "malformed request: {} {:?} {:?}",
        r.status,
        r.headers,
        r.body_str()
    );
    assert_eq!(r.status, 400, "body {:?}", r.body_str());
    assert_one_line(&r.body);
    c.expect_closed();
    let (_, after) = common::origin_stats(o.addr());
    // Only the second /stats request is new.
    assert_eq!(
        after,
        before + 1,
        "the malformed request reached the origin"
    );
}

#[test]
fn bad_flags_exit_2() {
    let cases: [(&[&str], &str); 3] = [
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1,weight=0",
            ],
            "--upstream",
        ),
        (
            &[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
                "--workers",
                "0",
            ],
            "--workers",
        ),
        (&["--listen", "127.0.0.1:0", "--workers", "1"], "--upstream"),
    ];
    for (args, flag) in cases {
        let (status, _out, err) = common::run_to_exit(common::PROXY, args);
        assert_eq!(status.code(), Some(2), "{args:?}: stderr {err:?}");
        assert!(
            err.contains(flag),
            "{args:?}: stderr {err:?} does not name {flag}"
        );
    }
}

#[test]
fn the_demo_origin_says_what_answered() {
    let p = common::Proc::start(
        common::PROXY,
        &[
            "--demo",
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-pin",
        ],
        1,
    );
    // A newcomer's first curl: it says what answered (it was twenty
    // letters of a test pattern).
    let r = common::get(p.addr(), "/");
    assert_eq!(r.status, 200);
    assert!(
        r.body_str().contains("ringmux's built-in demo origin"),
        "{}",
        r.body_str()
    );
    assert_eq!(r.header("x-origin"), Some("demo"));
    // The rest is the test origin's, as documented.
    let r = common::get(p.addr(), "/?size=20");
    assert!(r.body == pattern(20));
}

#[test]
fn upstream_close_keeps_client_connection() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());
    let r = c.get("/?size=1000&close=1");
    eprintln!("close=1 response headers: {:?}", r.headers);
    assert_eq!(r.status, 200);
    assert!(r.body == pattern(1000));
    // The proxy keeps the client connection, so it must not relay the
    // upstream's `Connection: close`.
    assert_ne!(
        r.header("connection")
            .map(str::to_ascii_lowercase)
            .as_deref(),
        Some("close")
    );
    // Immediately, and again after the close has surely been seen.
    let r = c.get("/?size=10");
    assert_eq!((r.status, r.body.as_slice()), (200, &pattern(10)[..]));
    let r = c.get("/?size=1000&close=1");
    assert!(r.body == pattern(1000));
    thread::sleep(Duration::from_millis(100));
    let r = c.get("/?size=11");
    assert_eq!((r.status, r.body.as_slice()), (200, &pattern(11)[..]));
}

/// Header fields of a raw request head as the origin received it.
fn head_fields(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').expect("field line");
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect()
}

#[test]
fn forwarded_headers() {
    let o = common::origin("o");
    let p = common::proxy(&[up(&o)]);
    let mut c = Client::connect(p.addr());
    let r = c.get("/head");
    assert_eq!(r.status, 200);
    let head = r.body_str();
    let fields = head_fields(&head);
    let get = |n: &str| {
        fields
            .iter()
            .filter(|(k, _)| k == n)
            .map(|(_, v)| v.as_str())
            .collect::<Vec<_>>()
    };
    assert_eq!(get("x-forwarded-for"), ["127.0.0.1"], "head: {head:?}");
    assert_eq!(
        get("forwarded"),
        ["for=127.0.0.1;proto=http"],
        "head: {head:?}"
    );

    c.send(b"GET /head HTTP/1.1\r\nHost: test\r\nConnection: keep-alive, X-Drop-Me\r\nX-Drop-Me: 1\r\nX-Keep-Me: 2\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 200);
    let head = r.body_str();
    let fields = head_fields(&head);
    assert!(
        !fields
            .iter()
            .any(|(k, _)| k == "x-drop-me" || k == "connection"),
        "hop-by-hop fields forwarded: {head:?}"
    );
    assert!(
        fields.iter().any(|(k, v)| k == "x-keep-me" && v == "2"),
        "end-to-end field lost: {head:?}"
    );
    // keep-alive was asked for: the connection stays usable.
    assert_eq!(c.get("/?size=1").body, b"a");
}

#[test]
fn buffer_ring_running_dry_loses_nothing() {
    // Eight 16 KiB receive buffers for the whole worker: concurrent 2 MiB
    // responses and 1 MiB uploads exhaust the ring again and again, so
    // every multishot recv ends with ENOBUFS and must be re-armed once
    // buffers come back, without dropping or reordering a byte.
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--ring-buffers", "8"]);
    let addr = p.addr();
    let workers: Vec<_> = (0..6u64)
        .map(|i| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for round in 0..3u64 {
                    let r = c.get("/?size=2097152");
                    assert_eq!(r.status, 200);
                    assert!(r.body == pattern(2 << 20), "download {i}/{round} corrupted");
                    let data = common::noise(1 << 20, i * 10 + round);
                    c.send(
                        format!(
                            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
                            data.len()
                        )
                        .as_bytes(),
                    );
                    c.send(&data);
                    let r = c.response(false);
                    assert_eq!(r.status, 200);
                    assert_eq!(
                        common::hash(&r.body),
                        common::hash(&data),
                        "upload {i}/{round}"
                    );
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("client thread");
    }
}

/// `max_conns` caps the connections to an upstream; requests beyond it
/// queue (or share a busy connection) and are all answered.
#[test]
fn requests_beyond_max_conns_wait_their_turn() {
    let o = common::origin("o");
    let p = common::proxy(&[format!("{},max_conns=2", o.addr())]);
    let (conns0, _) = common::origin_stats(o.addr());
    let addr = p.addr();
    let t = Instant::now();
    let clients: Vec<_> = (0..6)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                let r = c.get("/q?delay=200&size=3");
                assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]));
            })
        })
        .collect();
    for h in clients {
        h.join().unwrap();
    }
    let took = t.elapsed();
    let (conns1, _) = common::origin_stats(o.addr());
    // The /stats requests above use connections of their own.
    assert!(
        conns1 - conns0 <= 2 + 1,
        "{} upstream connections",
        conns1 - conns0
    );
    // Six 200 ms answers over two connections cannot take less than 600 ms.
    assert!(
        took >= Duration::from_millis(590),
        "{took:?}: the limit was not applied"
    );
}

/// `--busy-poll`: a worker that polls its ring before sleeping serves
/// everything a sleeping one does, and its timers (driven by the ring's
/// tick) still fire.
#[test]
fn a_busy_polling_worker_serves_and_keeps_its_timers() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[up(&o)],
        // (An idle timeout long enough that a client thread starved of CPU
        // for a moment, beside a worker that polls one of two cores, is not
        // taken for an idle one: 300 ms failed that way in full runs.)
        &["--busy-poll", "50", "--client-idle-timeout", "1500"],
    );
    let addr = p.addr();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..40 {
                    let size = [3, 5000, 70_000, 1 << 20][(t + i) % 4];
                    let delay = if i % 5 == 0 { 20 } else { 0 };
                    let r = c.get(&format!("/b?size={size}&delay={delay}"));
                    assert_eq!(r.status, 200, "conn {t} request {i}");
                    assert!(r.body == pattern(size), "conn {t} request {i}");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    // Pipelined, fanned out.
    let mut c = Client::connect(addr);
    let batch: String = (1..=6)
        .map(|s| format!("GET /p?delay=50&size={s} HTTP/1.1\r\nHost: t\r\n\r\n"))
        .collect();
    c.send(batch.as_bytes());
    for s in 1..=6 {
        assert!(c.response(false).body == pattern(s));
    }
    // The idle timeout is a timer: the connection is closed after it.
    let t = Instant::now();
    c.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(1200) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
