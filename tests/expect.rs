//! `Expect: 100-continue` through the proxy (RFC 9110 §10.1.1), against an
//! in-process origin that answers expectations itself: the interim 100 is
//! relayed and the body follows; an origin that refuses before the body
//! gets its final answer to the client and the half-sent request ends the
//! connection; a body over the proxy's own limit is refused at once, before
//! any 100 and before anything reaches an origin; an HTTP/1.0 client's
//! expectation is dropped.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::Client;

/// What the origin saw.
#[derive(Default)]
struct Seen {
    /// Connections accepted.
    connections: AtomicU64,
    /// Request heads read.
    requests: AtomicU64,
}

/// An origin that honours `Expect: 100-continue`. `/continue` sends the
/// interim 100 (when asked), reads the body and answers with its length and
/// hash and whether it saw the expectation; `/refuse` answers 417 at once
/// without reading anything more and closes.
fn expecting_origin() -> (SocketAddr, Arc<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s2 = seen.clone();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            s2.connections.fetch_add(1, Ordering::Relaxed);
            let seen = s2.clone();
            thread::spawn(move || serve(s, &seen));
        }
    });
    (addr, seen)
}

fn serve(mut s: TcpStream, seen: &Seen) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16384];
    loop {
        let end = loop {
            if let Some(i) = common::find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        seen.requests.fetch_add(1, Ordering::Relaxed);
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let expects = head.contains("\r\nexpect: 100-continue\r\n");
        let len: usize = head
            .split("\r\n")
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        if head.starts_with("post /refuse ") {
            let _ = s.write_all(
                b"HTTP/1.1 417 Expectation Failed\r\nContent-Length: 7\r\nConnection: close\r\n\r\nrefused",
            );
            return;
        }
        if expects && s.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }
        while buf.len() < len {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..len).collect();
        let text = format!("{} {:x}", body.len(), common::hash(&body));
        let reply = format!(
            "HTTP/1.1 200 OK\r\nX-Saw-Expect: {}\r\nContent-Length: {}\r\n\r\n{text}",
            if expects { "yes" } else { "no" },
            text.len()
        );
        if s.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

fn post_head(path: &str, version: &str, len: usize) -> Vec<u8> {
    format!(
        "POST {path} HTTP/{version}\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {len}\r\n\r\n"
    )
    .into_bytes()
}

#[test]
fn the_interim_100_is_relayed_and_the_body_follows() {
    let (origin, seen) = expecting_origin();
    let p = common::proxy(&[origin.to_string()]);
    let mut c = Client::connect(p.addr());
    for round in 0..2 {
        let body = common::noise(200_000, round + 1);
        c.send(&post_head("/continue", "1.1", body.len()));
        // The client holds the body back until it is told to go on.
        let t = Instant::now();
        let interim = c.response(false);
        assert_eq!(interim.status, 100, "round {round}");
        assert!(t.elapsed() < Duration::from_secs(2));
        c.send(&body);
        let r = c.response(false);
        assert_eq!(r.status, 200, "round {round}: {}", r.body_str());
        assert_eq!(r.header("x-saw-expect"), Some("yes"));
        assert_eq!(
            r.body_str(),
            format!("{} {:x}", body.len(), common::hash(&body)),
            "round {round}: the body arrived whole"
        );
    }
    // Both exchanges used the one keep-alive connection upstream.
    assert_eq!(seen.connections.load(Ordering::Relaxed), 1);
}

#[test]
fn a_refusal_before_the_body_reaches_the_client_and_ends_the_connection() {
    let (origin, _) = expecting_origin();
    let p = common::proxy(&[origin.to_string()]);
    let mut c = Client::connect(p.addr());
    c.send(&post_head("/refuse", "1.1", 1 << 20));
    let r = c.response(false);
    assert_eq!(r.status, 417);
    assert_eq!(r.body, b"refused");
    // The client may or may not send the body it announced; the proxy
    // cannot tell where a next request would start, so it closes.
    c.expect_closed();
    // The proxy is fine for everyone else.
    let mut d = Client::connect(p.addr());
    d.send(&post_head("/continue", "1.1", 5));
    assert_eq!(d.response(false).status, 100);
    d.send(b"hello");
    assert_eq!(d.response(false).status, 200);
}

#[test]
fn a_body_over_the_limit_is_refused_before_any_100_and_reaches_no_origin() {
    let (origin, seen) = expecting_origin();
    let p = common::proxy_with(&[origin.to_string()], &["--max-body-size", "1000"]);
    let mut c = Client::connect(p.addr());
    c.send(&post_head("/continue", "1.1", 5000));
    let r = c.response(false);
    assert_eq!(r.status, 413, "{}", r.body_str());
    c.expect_closed();
    assert_eq!(seen.requests.load(Ordering::Relaxed), 0);
}

#[test]
fn an_http10_clients_expectation_is_dropped() {
    let (origin, _) = expecting_origin();
    let p = common::proxy(&[origin.to_string()]);
    let mut c = Client::connect(p.addr());
    // An HTTP/1.0 client cannot know 100 Continue; it sends the body at once.
    let mut req = post_head("/continue", "1.0", 3);
    req.extend_from_slice(b"abc");
    c.send(&req);
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.body_str());
    assert_eq!(r.header("x-saw-expect"), Some("no"));
}
