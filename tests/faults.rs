//! Faults survived: an origin that resets, closes mid-response, sends
//! garbage, stops reading a request body, or is killed and restarted under
//! load; and clients that vanish mid-request or mid-response. Each fault
//! gets the affected client a clear answer (or a close), quickly, while
//! other clients' exchanges carry on and no fd is left behind.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Client;

/// An in-process origin that misbehaves by path: `/ok` answers properly
/// (keep-alive), `/reset` resets, `/midclose` closes mid-body, `/garbage`
/// answers with nonsense, `/noread` never reads the request body.
fn bad_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            thread::spawn(move || serve(s));
        }
    });
    addr
}

fn serve(mut s: TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        buf.drain(..end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_string();
        match path.as_str() {
            "/reset" => {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                return;
            }
            "/midclose" => {
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
                return;
            }
            "/garbage" => {
                let _ = s.write_all(b"garbage, not HTTP\r\n\r\n");
                thread::sleep(Duration::from_millis(200));
                return;
            }
            "/noread" => {
                thread::sleep(Duration::from_secs(5));
                return;
            }
            _ => {
                if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .is_err()
                {
                    return;
                }
            }
        }
    }
}

/// A client hammering `/ok` until told to stop; counts failures.
fn bystander(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    bad: Arc<AtomicU64>,
) -> thread::JoinHandle<u64> {
    thread::spawn(move || {
        let mut n = 0;
        let mut c = Client::connect(addr);
        while !stop.load(Ordering::Relaxed) {
            let r = c.get("/ok");
            if r.status != 200 || r.body != b"ok" {
                bad.fetch_add(1, Ordering::Relaxed);
            }
            n += 1;
        }
        n
    })
}

#[test]
fn origin_faults_get_clear_answers_and_leave_others_alone() {
    let origin = bad_origin();
    let p = common::proxy_with(&[origin.to_string()], &["--response-timeout", "1000"]);
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let by: Vec<_> = (0..2)
        .map(|_| bystander(p.addr(), stop.clone(), bad.clone()))
        .collect();

    // Reset before any response byte: 502 with a one-line reason.
    for _ in 0..3 {
        let t = Instant::now();
        let r = common::get(p.addr(), "/reset");
        assert_eq!(r.status, 502, "{}", r.body_str());
        assert!(r.body_str().starts_with("upstream"), "{}", r.body_str());
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    // Closed mid-body: the client has the head, so the only signal left is
    // the close, after the bytes that did arrive.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.write_all(b"GET /midclose HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK"), "{text:?}");
    assert!(text.ends_with("0123456789"), "{text:?}");

    // Garbage instead of a response: 502 naming the problem.
    let r = common::get(p.addr(), "/garbage");
    assert_eq!(r.status, 502);
    assert!(
        r.body_str().contains("invalid response"),
        "{}",
        r.body_str()
    );

    // An origin that never reads the body nor answers: 504 after the
    // response timeout, and the client is not left hanging. Loopback socket
    // buffers may have absorbed the whole 8 MiB body by then, in which case
    // the exchange is complete and the connection may stay open; otherwise
    // the rest of the body is refused by closing. Either way the 504 comes
    // whole and on time.
    let mut c = common::Client::connect(p.addr());
    c.send(b"POST /noread HTTP/1.1\r\nHost: t\r\nContent-Length: 8388608\r\n\r\n");
    let mut writer = c.stream.try_clone().unwrap();
    let feeder = thread::spawn(move || {
        let block = vec![b'z'; 65536];
        for _ in 0..128 {
            if writer.write_all(&block).is_err() {
                return;
            }
        }
    });
    let t = Instant::now();
    let r = c.response(false);
    assert_eq!(r.status, 504, "{}", r.body_str());
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    let closing = r
        .header("connection")
        .is_some_and(|v| v.eq_ignore_ascii_case("close"));
    if closing {
        c.expect_closed();
    }
    drop(c);
    feeder.join().unwrap();

    stop.store(true, Ordering::Relaxed);
    let served: u64 = by.into_iter().map(|h| h.join().unwrap()).sum();
    assert_eq!(bad.load(Ordering::Relaxed), 0, "bystanders were disturbed");
    assert!(served > 10, "bystanders were starved: {served}");
}

#[test]
fn an_origin_killed_and_restarted_under_load() {
    let o = common::origin("o");
    let port = o.addr().port();
    let p = common::proxy(&[o.addr().to_string()]);
    let addr = p.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let failed_slowly = Arc::new(AtomicU64::new(0));
    let counts: Vec<_> = (0..4)
        .map(|_| {
            let (stop, slow) = (stop.clone(), failed_slowly.clone());
            thread::spawn(move || {
                let (mut ok, mut err) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    let t = Instant::now();
                    let r = common::get(addr, "/?size=8");
                    match r.status {
                        200 => ok += 1,
                        502..=504 => err += 1,
                        s => panic!("unexpected status {s}"),
                    }
                    if t.elapsed() > Duration::from_secs(2) {
                        slow.fetch_add(1, Ordering::Relaxed);
                    }
                }
                (ok, err)
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    drop(o); // killed
    thread::sleep(Duration::from_millis(700));
    // Restarted on the same port.
    let o2 = common::Proc::start(
        common::ORIGIN,
        &["--listen", &format!("127.0.0.1:{port}"), "--name", "o2"],
        1,
    );
    // Within a few seconds everything is served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut recovered = false;
    while Instant::now() < deadline {
        if common::get(addr, "/?size=3").status == 200 {
            recovered = true;
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    let (ok, err) = counts
        .into_iter()
        .map(|h| h.join().unwrap())
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert!(recovered, "the proxy did not use the restarted origin");
    assert!(ok > 0 && err > 0, "ok {ok}, errors {err}");
    assert_eq!(failed_slowly.load(Ordering::Relaxed), 0, "a request hung");
    drop(o2);
}

/// Clients that go away mid-request (part of a body sent) or mid-response
/// (a large body partly read, or a slow answer not waited for): their
/// upstream connections are dropped, every fd comes back, and the clients
/// around them are served throughout.
#[test]
fn clients_vanishing_mid_exchange_disturb_nobody() {
    let o = common::origin("o");
    // No idle pool: every upstream connection not in use is closed (after
    // lingering a second), so the fd count can return to the baseline.
    let p = common::proxy_with(&[o.addr().to_string()], &["--pool-size", "0"]);
    let addr = p.addr();
    // The baseline: before anyone connects (the bystanders are stopped
    // before the count is taken again).
    let fds0 = common::fd_count(p.pid());
    let stop = Arc::new(AtomicBool::new(false));
    let bad = Arc::new(AtomicU64::new(0));
    let by: Vec<_> = (0..2)
        .map(|_| {
            let (stop, bad) = (stop.clone(), bad.clone());
            thread::spawn(move || {
                let mut n = 0u64;
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::Relaxed) {
                    let r = c.get("/?size=3000");
                    if r.status != 200 || r.body != ringmux::origin::pattern(3000) {
                        bad.fetch_add(1, Ordering::Relaxed);
                    }
                    n += 1;
                }
                n
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(200));

    for i in 0..60 {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        match i % 3 {
            // Mid-request: a tenth of a 1 MB body, then gone.
            0 => {
                let _ = s.write_all(
                    b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n",
                );
                let _ = s.write_all(&vec![b'b'; 100_000]);
            }
            // Mid-response: 10 KB of a 4 MB body read, then gone.
            1 => {
                let _ = s.write_all(b"GET /?size=4000000 HTTP/1.1\r\nHost: t\r\n\r\n");
                let mut got = 0;
                let mut buf = [0u8; 4096];
                while got < 10_000 {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got += n,
                    }
                }
            }
            // Before the answer: the origin is still working on it.
            _ => {
                let _ = s.write_all(b"GET /?delay=300 HTTP/1.1\r\nHost: t\r\n\r\n");
                thread::sleep(Duration::from_millis(5));
            }
        }
        drop(s);
    }

    // Every fd the vanished clients needed is given back. (The bystanders
    // stop first: each may hold a second or third upstream connection for
    // a moment, in quarantine or lingering, so while they run the count
    // moves by a few.)
    stop.store(true, Ordering::Relaxed);
    let served: u64 = by.into_iter().map(|h| h.join().unwrap()).sum();
    let fds = common::fds_settle(p.pid(), fds0, Duration::from_secs(5));
    assert!(fds <= fds0, "fds {fds0} before, {fds} after");
    assert_eq!(bad.load(Ordering::Relaxed), 0, "bystanders were disturbed");
    assert!(served > 50, "bystanders were starved: {served}");
}

/// A worker that dies (here: a request for the hidden `--debug-panic-path`
/// makes it panic) is started again by the supervisor on the same
/// listening socket; the clients it had lose their connections, nothing
/// else, and its sockets are closed, not leaked.
#[test]
fn a_dead_worker_is_restarted() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[o.addr().to_string()],
        &["--pool-size", "0", "--debug-panic-path", "/__die"],
    );
    let addr = p.addr();
    assert_eq!(common::get(addr, "/?size=2").body, b"ab");
    thread::sleep(Duration::from_millis(200));
    let fds0 = common::fd_count(p.pid());
    for round in 0..3 {
        // A client with an exchange in flight when the worker dies.
        let mut waiting = Client::connect(addr);
        waiting.send(b"GET /?delay=2000 HTTP/1.1\r\nHost: t\r\n\r\n");
        thread::sleep(Duration::from_millis(100));
        let mut c = Client::connect(addr);
        c.send(b"GET /__die HTTP/1.1\r\nHost: t\r\n\r\n");
        // The dying worker's connections are closed: no answer, an EOF.
        waiting.expect_closed();
        // The replacement serves on the same address.
        let t = Instant::now();
        let r = loop {
            if let Ok(mut s) = TcpStream::connect(addr) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                if s.write_all(b"GET /?size=3 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
                    .is_ok()
                {
                    let got = common::read_to_close(&mut s, Duration::from_millis(500));
                    if got.starts_with(b"HTTP/1.1 200") {
                        break got;
                    }
                }
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "round {round}: no restart"
            );
            thread::sleep(Duration::from_millis(20));
        };
        assert!(r.ends_with(b"abc"), "round {round}");
    }
    let fds = common::fds_settle(p.pid(), fds0, Duration::from_secs(5));
    assert!(fds <= fds0, "fds {fds0} before, {fds} after three restarts");
    let err = p.stderr_text();
    assert_eq!(err.matches("restarting it").count(), 3, "{err}");
}

/// An origin that resets its first `resets` connections (as one that is
/// restarting does) and then answers every request with `fine`.
fn resetting_origin(resets: usize) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for (i, s) in l.incoming().enumerate() {
            let Ok(s) = s else { continue };
            if i < resets {
                let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
                drop(s);
                continue;
            }
            thread::spawn(move || {
                let mut s = s;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while common::find(&buf, b"\r\n\r\n").is_none() {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = common::find(&buf, b"\r\n\r\n").unwrap() + 4;
                    buf.drain(..end);
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nfine")
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn the_only_upstream_is_tried_again_while_marked_down() {
    // Three resets in a row take an upstream down (fall=3). With nobody
    // else to send to, ringmux must not answer 503 without trying: the
    // origin is answering again.
    let origin = resetting_origin(3);
    let p = common::proxy(&[origin.to_string()]);
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(common::get(p.addr(), "/").status);
    }
    let served = statuses.iter().filter(|&&s| s == 200).count();
    // The resets cost at most one answer per reset (each is retried once
    // where that is safe); everything after is served.
    assert!(
        statuses[4..].iter().all(|&s| s == 200),
        "{statuses:?}: {served} of 10 served\n{}",
        p.stderr_text()
    );
    // Both changes of the passive verdict are said.
    p.wait_stderr(
        "is down after 3 failure(s) in a row",
        1,
        Duration::from_secs(2),
    );
    p.wait_stderr("answers again", 1, Duration::from_secs(2));
}

#[test]
fn below_the_panic_threshold_every_upstream_is_tried_and_it_is_said() {
    // Two of three upstreams refuse connections: once both are down, one
    // of three is up (33% < 50%) and health is no longer followed.
    let live = resetting_origin(0);
    let dead = [common::dead_port(), common::dead_port()];
    let ups = [
        live.to_string(),
        format!("127.0.0.1:{}", dead[0]),
        format!("127.0.0.1:{}", dead[1]),
    ];
    let p = common::proxy_with(&ups, &["--admin", "127.0.0.1:0"]);
    let mut served = 0;
    for _ in 0..30 {
        served += usize::from(common::get(p.addr(), "/").status == 200);
    }
    p.wait_stderr("choosing from all of them", 1, Duration::from_secs(2));
    thread::sleep(Duration::from_millis(250));
    let placed = common::metric(p.admin_addr(), "ringmux_panic_placements_total");
    assert!(placed > 0.0, "{}", p.stderr_text());
    assert!(served >= 15, "{served} of 30 served");
}

/// An origin that announces `Keep-Alive: timeout=1` and keeps its word to
/// the letter: a request that arrives a second or more after the previous
/// answer on its connection finds the connection closing (it is closed
/// without an answer), as Node's server does to requests that cross its
/// idle close.
fn keep_alive_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut last = Instant::now();
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    while common::find(&buf, b"\r\n\r\n").is_none() {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    if last.elapsed() >= Duration::from_secs(1) {
                        return; // closed as it went idle too long
                    }
                    let end = common::find(&buf, b"\r\n\r\n").unwrap() + 4;
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .split("\r\n")
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < end + len {
                        match s.read(&mut chunk) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + len);
                    let ok = s.write_all(
                        b"HTTP/1.1 200 OK\r\nKeep-Alive: timeout=1\r\nContent-Length: 4\r\n\r\ndone",
                    );
                    if ok.is_err() {
                        return;
                    }
                    last = Instant::now();
                }
            });
        }
    });
    addr
}

#[test]
fn an_announced_keep_alive_timeout_retires_the_idle_connection_before_the_origin_does() {
    // A POST cannot be sent again once it may have reached the origin: one
    // that crosses the origin's idle close is a 502. The pool must let go
    // of the connection before the timeout the origin announced.
    let origin = keep_alive_origin();
    let p = common::proxy(&[origin.to_string()]);
    let mut c = Client::connect(p.addr());
    for round in 0..3 {
        c.send(b"POST /form HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi");
        let r = c.response(false);
        assert_eq!(
            (r.status, r.body_str().as_str()),
            (200, "done"),
            "round {round}"
        );
        thread::sleep(Duration::from_millis(1100));
    }
}
