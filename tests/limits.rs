//! Limits and timeouts, over real sockets: slow and idle clients are cut
//! off, oversized bodies refused, a full worker refuses connections, and
//! the clients that behave are served throughout.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Client;

fn up(p: &common::Proc) -> String {
    p.addr().to_string()
}

#[test]
fn slowloris_clients_are_cut_off_and_do_not_stop_others() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--client-header-timeout", "1500"]);
    let addr = p.addr();
    let head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Pad: aaaaaaaaaaaaaaaaaaaa\r\n";
    // 1,000 clients each trickle a byte at a time, about one a second.
    let mut slow: Vec<TcpStream> = (0..1000)
        .map(|_| {
            let s = TcpStream::connect(addr).expect("connect slow client");
            s.set_nodelay(true).unwrap();
            s
        })
        .collect();
    let start = Instant::now();
    let mut sent = 0;
    while start.elapsed() < Duration::from_millis(1200) {
        for s in &mut slow {
            let _ = s.write_all(&head[sent..sent + 1]);
        }
        sent += 1;
        // Meanwhile a normal client is served, promptly.
        let t = Instant::now();
        let r = common::get(addr, "/?size=5");
        assert_eq!((r.status, r.body.as_slice()), (200, &b"abcde"[..]));
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "normal client slowed down"
        );
        thread::sleep(Duration::from_millis(300));
    }
    // Past the header timeout each slow client gets a 408 and the close.
    let mut answered = 0;
    for s in &mut slow {
        let got = common::read_to_close(s, Duration::from_secs(5));
        if got.starts_with(b"HTTP/1.1 408 ") {
            answered += 1;
        }
    }
    assert_eq!(answered, slow.len(), "every slow client gets a 408");
    assert!(start.elapsed() < Duration::from_secs(6));
    // Nothing of theirs reached the origin.
    let (_, requests) = common::origin_stats(o.addr());
    assert!(requests < 20, "origin saw {requests} requests");
}

#[test]
fn a_silent_connection_is_closed_after_the_header_timeout() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--client-header-timeout", "300"]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let t = Instant::now();
    assert!(common::read_to_close(&mut s, Duration::from_secs(3)).is_empty());
    assert!(t.elapsed() >= Duration::from_millis(250));
}

#[test]
fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--client-idle-timeout", "400"]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("/?size=3").status, 200);
    thread::sleep(Duration::from_millis(200));
    assert_eq!(
        c.get("/?size=3").status,
        200,
        "still open within the timeout"
    );
    let t = Instant::now();
    c.expect_closed();
    let waited = t.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

#[test]
fn an_oversized_body_is_refused_before_it_reaches_the_origin() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--max-body-size", "1000"]);
    let (_, before) = common::origin_stats(o.addr());

    let mut c = Client::connect(p.addr());
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1001\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 413);
    assert_eq!(r.body, b"request body too large\n");
    c.expect_closed();
    let (_, after) = common::origin_stats(o.addr());
    assert_eq!(
        after,
        before + 1,
        "only the stats request reached the origin"
    );

    // At the limit it goes through.
    let mut c = Client::connect(p.addr());
    let body = vec![b'x'; 1000];
    c.send(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\n");
    c.send(&body);
    let r = c.response(false);
    assert_eq!((r.status, r.body.len()), (200, 1000));
}

#[test]
fn an_oversized_chunked_body_gets_413_and_the_close() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--max-body-size", "1000"]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    for _ in 0..3 {
        let _ = s.write_all(b"200\r\n");
        let _ = s.write_all(&[b'y'; 0x200]);
        let _ = s.write_all(b"\r\n");
    }
    let got = common::read_to_close(&mut s, Duration::from_secs(5));
    assert!(
        got.starts_with(b"HTTP/1.1 413 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
}

#[test]
fn head_limits_follow_their_flags() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[up(&o)],
        &["--max-head-size", "2048", "--max-headers", "4"],
    );
    let (_, before) = common::origin_stats(o.addr());
    // Four fields pass; a fifth gets 431 and the close.
    let mut c = Client::connect(p.addr());
    c.send(b"GET /?size=2 HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n");
    assert_eq!(c.response(false).status, 200);
    c.send(b"GET /?size=2 HTTP/1.1\r\nHost: t\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n");
    let r = c.response(false);
    assert_eq!(r.status, 431, "{}", r.body_str());
    c.expect_closed();
    // A head over 2 KiB gets 431 too, even before it ends.
    let mut c = Client::connect(p.addr());
    let mut head = b"GET / HTTP/1.1\r\nHost: t\r\nX-Pad: ".to_vec();
    head.resize(2100, b'p');
    c.send(&head);
    let r = c.response(false);
    assert_eq!(r.status, 431, "{}", r.body_str());
    c.expect_closed();
    let (_, after) = common::origin_stats(o.addr());
    // The good request, and the first /stats call itself.
    assert_eq!(
        after - before,
        2,
        "only the good request reached the origin"
    );
    // Out-of-range values are refused at start-up, naming the flag.
    for (flag, value) in [
        ("--max-head-size", "100"),
        ("--max-headers", "0"),
        ("--buffer-size", "10"),
    ] {
        let (status, _, err) = common::run_to_exit(
            common::PROXY,
            &[
                "--listen",
                "127.0.0.1:0",
                "--upstream",
                "127.0.0.1:1",
                flag,
                value,
            ],
        );
        assert_eq!(status.code(), Some(2), "{flag} {value}: {err}");
        assert!(err.contains(flag), "{flag}: {err}");
    }
}

/// The response timeout runs from the last request byte the origin took: a
/// body that keeps trickling in for longer than the timeout is not cut
/// off (an origin that stops reading is: see the faults tests).
#[test]
fn a_slow_upload_outlasting_the_response_timeout_is_not_cut_off() {
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--response-timeout", "800"]);
    let mut c = Client::connect(p.addr());
    let body = common::noise(25 * 4096, 3);
    c.send(
        format!(
            "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    // 25 pieces, 100 ms apart: 2.5 s, three times the response timeout.
    for piece in body.chunks(4096) {
        c.send(piece);
        thread::sleep(Duration::from_millis(100));
    }
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(common::hash(&r.body), common::hash(&body));
}

#[test]
fn connections_over_the_limit_are_refused_cleanly() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[up(&o)],
        &["--max-connections", "4", "--admin", "127.0.0.1:0"],
    );
    let mut held: Vec<Client> = (0..4).map(|_| Client::connect(p.addr())).collect();
    for c in &mut held {
        assert_eq!(c.get("/?size=2").status, 200);
    }
    // The fifth is accepted by the kernel and closed by the proxy at once.
    let mut extra = TcpStream::connect(p.addr()).unwrap();
    let _ = extra.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(common::read_to_close(&mut extra, Duration::from_secs(3)).is_empty());
    // The ones already in are not disturbed, and a freed slot is usable.
    assert_eq!(held[0].get("/?size=2").status, 200);
    drop(held.pop());
    thread::sleep(Duration::from_millis(100));
    assert_eq!(common::get(p.addr(), "/?size=2").status, 200);
    // Refusals are counted, and each episode is said (on the tick).
    p.wait_stderr("at --max-connections (4)", 1, Duration::from_secs(2));
    p.wait_stderr("1 connection(s) were refused", 1, Duration::from_secs(2));
    assert_eq!(
        common::metric(p.admin_addr(), "ringmux_connections_refused_total"),
        1.0
    );
}

#[test]
fn the_request_deadline_bounds_a_whole_exchange() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[up(&o)],
        &["--request-timeout", "600", "--response-timeout", "60000"],
    );
    let mut c = Client::connect(p.addr());
    let t = Instant::now();
    c.send(b"GET /?delay=5000 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response(false);
    let waited = t.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.body, b"request deadline exceeded\n");
    assert!(
        waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    c.expect_closed();
    // Other clients are served as usual.
    assert_eq!(common::get(p.addr(), "/?size=2").status, 200);
}

/// Clients that ask for large bodies and stop reading pin at most a
/// quarter of the receive-buffer ring (bodies are sent straight from it):
/// everyone else keeps being served. A client that takes no bytes for the
/// idle timeout is closed, and what it pinned is given back.
#[test]
fn stalled_readers_neither_starve_the_ring_nor_stay_forever() {
    let o = common::origin("o");
    let p = common::proxy_with(
        &[up(&o)],
        &[
            "--ring-buffers",
            "64",
            "--client-idle-timeout",
            "1500",
            "--pool-size",
            "0",
        ],
    );
    let addr = p.addr();
    thread::sleep(Duration::from_millis(200));
    let fds0 = common::fd_count(p.pid());
    // Twenty clients, each asking for 8 MB and reading nothing.
    let stalled: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /?size=8000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_millis(300));
    // Meanwhile others are served, large bodies included.
    for _ in 0..5 {
        let t = Instant::now();
        let r = common::get(addr, "/?size=300000");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), 300_000);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    }
    // After the idle timeout the stalled clients are closed.
    let fds = common::fds_settle(p.pid(), fds0, Duration::from_secs(6));
    assert!(fds <= fds0, "fds {fds0} before, {fds} after");
    drop(stalled);
    assert_eq!(common::get(addr, "/?size=5").status, 200);
}

#[test]
fn a_send_cut_short_by_a_close_never_goes_on_to_another_connection() {
    // Clients that take none of an 8 MB answer are closed after the idle
    // timeout, their sends cancelled half-way. Meanwhile new clients keep
    // connecting, so the closed descriptors are soon reused: had the
    // reactor continued a cancelled send, the rest of those 8 MB would
    // land on a new client's socket.
    let o = common::origin("o");
    let p = common::proxy_with(&[up(&o)], &["--client-idle-timeout", "200"]);
    let addr = p.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let churn: Vec<_> = (0..4)
        .map(|_| {
            let stop = Arc::clone(&stop);
            thread::spawn(move || {
                let mut served = 0;
                while !stop.load(Ordering::SeqCst) {
                    let mut c = common::Client::connect(addr);
                    let r = c.get("/?size=20");
                    assert_eq!((r.status, r.body.len()), (200, 20));
                    // Nothing may follow the answer on this connection.
                    c.stream.set_nonblocking(true).unwrap();
                    let mut b = [0u8; 64];
                    match std::io::Read::read(&mut c.stream, &mut b) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        other => panic!("bytes nobody asked for: {other:?} {:?}", &b[..8]),
                    }
                    served += 1;
                }
                served
            })
        })
        .collect();
    for _ in 0..4 {
        let stalled: Vec<TcpStream> = (0..16)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                s.write_all(b"GET /?size=8000000 HTTP/1.1\r\nHost: t\r\n\r\n")
                    .unwrap();
                s
            })
            .collect();
        thread::sleep(Duration::from_millis(450));
        drop(stalled);
    }
    stop.store(true, Ordering::SeqCst);
    let served: usize = churn.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(served > 10);
}

/// CPU time (user + system) process `pid` has used, from /proc.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

#[test]
fn out_of_descriptors_the_worker_waits_instead_of_spinning_and_says_so() {
    // With the descriptor limit at 200, 300 clients: the first ~190 are
    // accepted, the rest wait in the accept queue. An accept re-armed at
    // once after EMFILE fails at once again: both workers spun at 1.9
    // cores while every connection was idle, and nothing was logged.
    let o = common::origin("o");
    let cmd = format!(
        "ulimit -n 200 && exec {} --listen 127.0.0.1:0 --workers 1 --no-pin --upstream {}",
        common::PROXY,
        o.addr()
    );
    let p = common::Proc::start("sh", &["-c", &cmd], 1);
    p.wait_stderr(
        "the descriptor limit (200) cannot hold",
        1,
        Duration::from_secs(2),
    );
    let mut clients: Vec<TcpStream> = (0..300)
        .map(|_| TcpStream::connect(p.addr()).expect("the kernel queues it"))
        .collect();
    p.wait_stderr("accept failed", 1, Duration::from_secs(5));
    let before = cpu_time(p.pid());
    thread::sleep(Duration::from_secs(1));
    let used = cpu_time(p.pid()) - before;
    assert!(
        used < Duration::from_millis(150),
        "{used:?} of CPU in 1 s while idle"
    );
    // The last connections wait; as others end, they are accepted and
    // served.
    clients.drain(..150);
    let mut last = Client {
        stream: clients.pop().unwrap(),
        buf: Vec::new(),
    };
    last.stream.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    assert_eq!(last.get("/?size=5").status, 200);
    p.wait_stderr("accepting again", 1, Duration::from_secs(5));
    // Said once per episode (an episode ends when an accept works again),
    // however many accepts failed in it.
    let err = p.stderr_text();
    let (failed, again) = (
        err.matches("accept failed").count(),
        err.matches("accepting again").count(),
    );
    assert!(failed <= again + 1 && failed >= 1, "{err}");
}

#[test]
fn a_slow_reader_costs_about_its_buffer_size_not_a_megabyte() {
    // 100 clients ask for 16 MiB each and read nothing. Each multishot
    // recv took whatever the upstream socket had queued (the kernel grows
    // its buffer to megabytes), whatever --buffer-size said: about 1 MiB
    // per client at any setting.
    let o = common::origin("o");
    let buffer = 64 * 1024;
    let p = common::proxy_with(&[up(&o)], &["--buffer-size", &buffer.to_string()]);
    let addr = p.addr();
    // Touch the ring's buffers and the allocator first.
    for _ in 0..4 {
        assert_eq!(common::get(addr, "/?size=4000000").body.len(), 4_000_000);
    }
    thread::sleep(Duration::from_millis(300));
    let before = p.rss_kib();
    let n = 100;
    let clients: Vec<TcpStream> = (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(addr).unwrap();
            s.write_all(b"GET /?size=16777216 HTTP/1.1\r\nHost: t\r\n\r\n")
                .unwrap();
            s
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    let grown = p.rss_kib().saturating_sub(before) * 1024;
    let per_client = grown / n as u64;
    assert!(
        per_client < 4 * buffer,
        "{} KiB per slow client with --buffer-size {} KiB",
        per_client / 1024,
        buffer / 1024
    );
    drop(clients);
}
