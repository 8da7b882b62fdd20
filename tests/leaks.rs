//! Leak test: 50,000 client connections opened and closed in every way a
//! client can end one (reset, mid-head, mid-body, mid-response, pipelined
//! and unread, malformed, clean), after which the proxy's open fd count and
//! RSS return to their baseline (read from /proc).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

/// Close with RST (SO_LINGER 0) so that 50,000 client ports do not sit in
/// TIME_WAIT.
fn reset(s: TcpStream) {
    let _ = socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO));
}

fn read_some(s: &mut TcpStream, want: usize) {
    let mut buf = [0u8; 4096];
    let mut got = 0;
    while got < want {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => got += n,
        }
    }
}

/// One client connection ended in way `kind`.
fn one(addr: SocketAddr, kind: usize) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.set_nodelay(true).unwrap();
    match kind {
        // Connect and go away.
        0 => {}
        // A complete request, answer read, then reset.
        1 => {
            let _ = s.write_all(b"GET /?size=10 HTTP/1.1\r\nHost: t\r\n\r\n");
            read_some(&mut s, 10);
        }
        // Half a head.
        2 => {
            let _ = s.write_all(b"GET /?size=10 HTTP/1.1\r\nHo");
        }
        // Half a body.
        3 => {
            let _ =
                s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\nabc");
            thread::sleep(Duration::from_millis(1));
        }
        // Pipelined requests, nothing read.
        4 => {
            let _ = s.write_all(
                b"GET /?size=5 HTTP/1.1\r\nHost: t\r\n\r\nGET /?size=5 HTTP/1.1\r\nHost: t\r\n\r\n\
                  GET /?size=5 HTTP/1.1\r\nHost: t\r\n\r\n",
            );
        }
        // Malformed: 400 and the proxy closes.
        5 => {
            let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n");
            read_some(&mut s, 1 << 20);
        }
        // Mid-response: a large body, a little of it read.
        6 => {
            let _ = s.write_all(b"GET /?size=2000000 HTTP/1.1\r\nHost: t\r\n\r\n");
            read_some(&mut s, 1000);
        }
        // A clean close after a keep-alive exchange (FIN, not RST).
        _ => {
            let _ = s.write_all(b"GET /?size=1 HTTP/1.1\r\nHost: t\r\n\r\n");
            read_some(&mut s, 1);
            return; // dropped normally
        }
    }
    reset(s);
}

#[test]
fn fifty_thousand_connections_leave_no_fd_or_memory_behind() {
    let o = common::origin("o");
    let p = common::proxy_with(&[o.addr().to_string()], &["--pool-size", "0"]);
    let (addr, pid) = (p.addr(), p.pid());

    // Baseline after a warm-up of every kind.
    for kind in 0..8 {
        for _ in 0..50 {
            one(addr, kind);
        }
    }
    thread::sleep(Duration::from_millis(500));
    let (fds0, rss0) = (common::fd_count(pid), p.rss_kib());

    let total = 50_000;
    let threads = 8;
    let started = Instant::now();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            thread::spawn(move || {
                for i in 0..total / threads {
                    // Mid-response transfers are costly; keep them rarer.
                    let kind = if i % 40 == 0 {
                        6
                    } else {
                        [0, 1, 2, 3, 4, 5, 7][i % 7]
                    };
                    one(addr, kind);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let took = started.elapsed();

    // Everything the proxy opened for them is closed again.
    let fds = common::fds_settle(pid, fds0, Duration::from_secs(10));
    let rss = p.rss_kib();
    eprintln!("{total} connections in {took:?}: fds {fds0} -> {fds}, RSS {rss0} -> {rss} KiB");
    assert!(fds <= fds0, "fd leak: {fds0} before, {fds} after");
    assert!(
        rss < rss0 + 8 * 1024,
        "RSS grew from {rss0} KiB to {rss} KiB"
    );
    // And the proxy still serves.
    assert_eq!(common::get(addr, "/?size=4").body, b"abcd");
}
