//! DNS SRV discovery over real sockets: a small DNS server the test runs
//! answers `_http._tcp.svc.test` with two instances (with their addresses
//! in the additional records); ringmux, told to ask it, serves both in the
//! records' weights, and after the answer changes (one instance gone,
//! another come) re-resolution moves traffic as a reload would.

mod common;

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::{origin, Client, Proc};

/// What the DNS server answers: (host, port, weight) per instance.
type Answer = Arc<Mutex<Vec<(String, u16, u16)>>>;

/// A DNS server on loopback answering every SRV question with `answer`'s
/// instances, each host at 127.0.0.1 in the additional records.
fn dns_server(answer: Answer) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let q = &buf[..n];
            // The question: header, then labels, then type and class.
            let mut at = 12;
            while at < n && q[at] != 0 {
                at += 1 + q[at] as usize;
            }
            let qend = at + 5;
            if qend > n {
                continue;
            }
            let targets = answer.lock().unwrap().clone();
            let mut out = q[..qend].to_vec();
            out[2] = 0x81;
            out[3] = 0x80;
            out[6..8].copy_from_slice(&(targets.len() as u16).to_be_bytes());
            out[10..12].copy_from_slice(&(targets.len() as u16).to_be_bytes());
            let name = |host: &str| {
                let mut v = Vec::new();
                for l in host.split('.') {
                    v.push(l.len() as u8);
                    v.extend_from_slice(l.as_bytes());
                }
                v.push(0);
                v
            };
            for (host, port, weight) in &targets {
                out.extend_from_slice(&[0xc0, 12, 0, 33, 0, 1, 0, 0, 0, 5]);
                let t = name(host);
                out.extend_from_slice(&((6 + t.len()) as u16).to_be_bytes());
                out.extend_from_slice(&[0, 10]);
                out.extend_from_slice(&weight.to_be_bytes());
                out.extend_from_slice(&port.to_be_bytes());
                out.extend_from_slice(&t);
            }
            for (host, _, _) in &targets {
                out.extend_from_slice(&name(host));
                out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 5, 0, 4, 127, 0, 0, 1]);
            }
            let _ = socket.send_to(&out, from);
        }
    });
    addr
}

/// Who answered `n` requests on one keep-alive connection.
fn served(addr: SocketAddr, n: usize) -> HashMap<String, usize> {
    let mut c = Client::connect(addr);
    let mut by = HashMap::new();
    for _ in 0..n {
        let r = c.get("/");
        assert_eq!(r.status, 200, "{}", r.body_str());
        *by.entry(r.header("x-origin").unwrap_or("?").to_string())
            .or_default() += 1;
    }
    by
}

#[test]
fn srv_instances_are_served_in_their_weights_and_followed_when_they_change() {
    let (a, b, c) = (origin("a"), origin("b"), origin("c"));
    let answer: Answer = Arc::new(Mutex::new(vec![
        ("a.svc.test".into(), a.addr().port(), 1),
        ("b.svc.test".into(), b.addr().port(), 3),
    ]));
    let dns = dns_server(Arc::clone(&answer));
    let p = Proc::start(
        common::PROXY,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-pin",
            "--dns-server",
            &dns.to_string(),
            "--upstream",
            "srv:_http._tcp.svc.test",
            "--resolve-interval",
            "200",
        ],
        1,
    );
    let by = served(p.addr(), 400);
    let (na, nb) = (
        by.get("a").copied().unwrap_or(0),
        by.get("b").copied().unwrap_or(0),
    );
    assert_eq!(na + nb, 400, "{by:?}");
    assert!(
        (60..=140).contains(&na),
        "weights 1:3 give a about 100 of 400: {by:?}"
    );
    // `a` leaves, `c` comes.
    *answer.lock().unwrap() = vec![
        ("b.svc.test".into(), b.addr().port(), 1),
        ("c.svc.test".into(), c.addr().port(), 1),
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let by = served(p.addr(), 40);
        if !by.contains_key("a") && by.contains_key("c") {
            break;
        }
        assert!(Instant::now() < deadline, "still {by:?}");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(p.stderr_text().contains("DNS"), "{}", p.stderr_text());
}

#[test]
fn an_srv_name_with_no_server_answering_is_a_clear_error() {
    // A port nothing answers on: the query times out.
    let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &[
            "--dns-server",
            &quiet.local_addr().unwrap().to_string(),
            "--upstream",
            "srv:_http._tcp.none.test",
            "--check",
        ],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--upstream") && err.contains("SRV _http._tcp.none.test"),
        "{err}"
    );
}
