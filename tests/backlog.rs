//! An origin with a small accept queue (Python's `http.server` listens
//! with 5) behind a client that pipelines: the proxy fans the requests out
//! but never has more connections opening at once than the queue holds, so
//! no SYN is dropped (a dropped SYN comes back a second later). Alone in
//! its test binary: it reads the kernel's listen-overflow counters, which
//! other tests running at the same time could move.

mod common;

use std::io::Write;
use std::thread;

use common::scripted::{ok, After, Scripted};

/// `ListenOverflows + ListenDrops` from /proc/net/netstat.
fn listen_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        return names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter(|(n, _)| *n == "ListenOverflows" || *n == "ListenDrops")
            .map(|(_, v)| v.parse::<u64>().unwrap())
            .sum();
    }
    panic!("no TcpExt line in /proc/net/netstat");
}

#[test]
fn pipelined_fan_out_does_not_overflow_a_small_accept_queue() {
    let origin = Scripted::with_backlog(5, |req, s| {
        let _ = s.write_all(&ok(&req.target));
        After::KeepOpen
    });
    let p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();
    let before = listen_drops();
    // h2load --h1 -c 4 -m 8: four clients, eight requests in flight each,
    // each to a URL the proxy has not seen (so they fan out).
    let clients: Vec<_> = (0..4)
        .map(|c| {
            thread::spawn(move || {
                let mut cl = common::Client::connect(addr);
                for round in 0..3 {
                    let targets: Vec<String> = (0..8)
                        .map(|i| format!("/item?c={c}&r={round}&i={i}"))
                        .collect();
                    let mut req = String::new();
                    for t in &targets {
                        req.push_str(&format!("GET {t} HTTP/1.1\r\nHost: t\r\n\r\n"));
                    }
                    cl.send(req.as_bytes());
                    for t in &targets {
                        let r = cl.response(false);
                        assert_eq!((r.status, r.body_str()), (200, t.clone()));
                    }
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(
        listen_drops() - before,
        0,
        "SYNs were dropped at the origin's accept queue"
    );
    let conns = origin.accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!(conns > 4, "the requests fanned out ({conns} connections)");
}
