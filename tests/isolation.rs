//! Isolation between clients over real sockets: an upstream connection
//! carries one client's exchanges at a time, so an origin that mis-frames
//! its responses cannot hand one client another's bytes, and a slow request
//! holds up nobody else; a client's own pipelined requests fan out, and
//! where they do share a connection, a late front sends the others
//! elsewhere without duplicating or reordering anything.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::scripted::{ok, After, Gate, Meeting, Scripted};
use common::Client;

/// What a scripted origin answered for /ok/<tag>: the tag, so every body
/// names its request.
fn named(target: &str) -> String {
    format!("for {target}")
}

#[test]
fn a_response_written_past_its_framing_reaches_nobody() {
    // /poison is answered with a body one byte longer than its
    // Content-Length says, and then a whole second response, in one write:
    // the response-queue-poisoning shape.
    let poisoned_conns = Arc::new(Mutex::new(Vec::<usize>::new()));
    let seen = Arc::clone(&poisoned_conns);
    let origin = Scripted::start(move |req, s| {
        if req.target == "/poison" {
            seen.lock().unwrap().push(req.conn);
            let _ = s.write_all(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\npoisonHTTP/1.1 200 OK\r\n\
                  Content-Length: 5\r\n\r\nSTRAY",
            );
        } else {
            let _ = s.write_all(&ok(&named(&req.target)));
        }
        After::KeepOpen
    });
    let p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();

    let wrong = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let mut threads = Vec::new();
    for t in 0..64 {
        let (wrong, served) = (Arc::clone(&wrong), Arc::clone(&served));
        threads.push(thread::spawn(move || {
            let mut c = Client::connect(addr);
            for i in 0..40 {
                let target = format!("/ok/{t}-{i}");
                let r = c.get(&target);
                if r.status != 200 || r.body_str() != named(&target) {
                    eprintln!(
                        "client {t} asked {target}, got {} {:?}",
                        r.status,
                        r.body_str()
                    );
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    for t in 0..4 {
        let wrong = Arc::clone(&wrong);
        threads.push(thread::spawn(move || {
            for i in 0..40 {
                // A new connection each time: the proxy may close this
                // client after a response it cannot vouch for.
                let r = common::get(addr, "/poison");
                if r.status != 200 || r.body_str() != "poiso" {
                    eprintln!("poison client {t}/{i} got {} {:?}", r.status, r.body_str());
                    wrong.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(served.load(Ordering::SeqCst), 64 * 40);
    assert_eq!(
        wrong.load(Ordering::SeqCst),
        0,
        "responses reached a client that had not asked for them"
    );
    // Every connection that carried a poisoned response was closed: no
    // request came on it afterwards.
    let log = origin.log();
    let poisoned = poisoned_conns.lock().unwrap().clone();
    assert_eq!(poisoned.len(), 160);
    for conn in poisoned {
        let last = log.iter().filter(|r| r.conn == conn).map(|r| r.nth).max();
        let poison_at = log
            .iter()
            .find(|r| r.conn == conn && r.target == "/poison")
            .map(|r| r.nth);
        assert_eq!(
            last, poison_at,
            "connection {conn} was used after the stray bytes"
        );
    }
}

#[test]
fn fast_requests_never_wait_behind_another_clients_slow_one() {
    // /slow is held at a gate until the test opens it; /fast answers at
    // once. With 8 slow requests in flight, 16 other clients' 30 fast
    // requests each all complete: none of them was queued on a connection
    // behind a slow one (it would wait at the gate, and its client's read
    // would time out).
    let gate = Gate::default();
    let g = gate.clone();
    let origin = Scripted::start(move |req, s| {
        if req.target == "/slow" {
            g.pass();
        }
        let _ = s.write_all(&ok(&named(&req.target)));
        After::KeepOpen
    });
    let p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();

    let slow: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let r = common::get(addr, "/slow");
                (r.status, r.body_str())
            })
        })
        .collect();
    assert!(
        gate.wait_for_waiting(8),
        "the slow requests reached the origin"
    );

    let fast: Vec<_> = (0..16)
        .map(|t| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for i in 0..30 {
                    let target = format!("/fast/{t}-{i}");
                    let r = c.get(&target);
                    assert_eq!((r.status, r.body_str()), (200, named(&target)));
                }
            })
        })
        .collect();
    for t in fast {
        t.join()
            .expect("a fast request failed or waited behind a slow one");
    }
    assert_eq!(gate.waiting(), 8, "the slow ones were pending all along");
    // No fast request ever arrived on a connection with a slow one pending:
    // a slow request is always the last its connection carried before the
    // gate opened.
    let log = origin.log();
    for slow_req in log.iter().filter(|r| r.target == "/slow") {
        let after = log
            .iter()
            .filter(|r| r.conn == slow_req.conn && r.nth > slow_req.nth)
            .count();
        assert_eq!(
            after, 0,
            "a request queued behind /slow on conn {}",
            slow_req.conn
        );
    }
    gate.open();
    for t in slow {
        assert_eq!(t.join().unwrap(), (200, named("/slow")));
    }
}

/// Pipelined GETs for `target`, one write; returns the bodies in order.
fn pipeline(c: &mut Client, targets: &[String], extra: &str) -> Vec<String> {
    let mut req = String::new();
    for t in targets {
        req.push_str(&format!("GET {t} HTTP/1.1\r\nHost: test\r\n{extra}\r\n"));
    }
    c.send(req.as_bytes());
    targets
        .iter()
        .map(|_| {
            let r = c.response(false);
            assert_eq!(r.status, 200, "{}", r.body_str());
            r.body_str()
        })
        .collect()
}

#[test]
fn pipelined_slow_requests_fan_out_right_after_fast_traffic() {
    // /slow requests wait at the origin until 8 of them are there at once
    // (then all are answered "together"), or give up and answer "alone".
    // Only if the 8 pipelined requests went out on 8 connections at the
    // same time can they meet.
    let meeting = Meeting::default();
    let origin = Scripted::start(move |req, s| {
        let body = if req.target == "/slow" {
            if meeting.meet(8, Duration::from_secs(3)) {
                "together"
            } else {
                "alone"
            }
        } else {
            "fast"
        };
        let _ = s.write_all(&ok(body));
        After::KeepOpen
    });
    let p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();
    // Fast traffic first, from 8 clients at once: the pool is warm and the
    // origin has answered fast (the old per-origin figure would now have
    // sent the next pipeline down one connection).
    let warm: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..20 {
                    assert_eq!(c.get("/fast").body_str(), "fast");
                }
            })
        })
        .collect();
    for t in warm {
        t.join().unwrap();
    }
    let mut c = Client::connect(addr);
    let targets = vec!["/slow".to_string(); 8];
    let bodies = pipeline(&mut c, &targets, "");
    assert_eq!(bodies, vec!["together"; 8]);
    // Each went out once, on a connection of its own. (Had they shared one
    // and been sent again when the first was late, the copies left on the
    // shared connection would show up here too, just after the first.)
    thread::sleep(Duration::from_millis(100));
    let slow: Vec<usize> = origin
        .log()
        .iter()
        .filter(|r| r.target == "/slow")
        .map(|r| r.conn)
        .collect();
    let conns: std::collections::HashSet<usize> = slow.iter().copied().collect();
    assert_eq!((slow.len(), conns.len()), (8, 8), "one connection each");
}

#[test]
fn a_late_front_sends_the_requests_behind_it_elsewhere() {
    // /route answers at once, so the proxy learns it is fast and lets a
    // client's pipelined requests for it share a connection. Then the
    // origin holds the next /route request at a gate: the requests behind
    // it on that connection must go out again on connections of their own,
    // and the client still gets every response once, in order.
    let stall_next = Arc::new(AtomicBool::new(false));
    let gate = Gate::default();
    let (stall, g) = (Arc::clone(&stall_next), gate.clone());
    let origin = Scripted::start(move |req, s| {
        if req.target == "/route" && stall.swap(false, Ordering::SeqCst) {
            g.pass();
        }
        let seq = req.header("x-seq").unwrap_or("-").to_string();
        let _ = s.write_all(&ok(&format!("seq {seq}")));
        After::KeepOpen
    });
    let p = common::proxy(&[origin.addr.to_string()]);
    let mut c = Client::connect(p.addr());
    for i in 0..20 {
        let r = c.get("/route");
        assert_eq!(r.body_str(), "seq -", "warm-up {i}");
    }
    // Learned fast: a pipeline of 6 shares one connection.
    let before = origin.log().len();
    let mut req = String::new();
    for seq in 1..=6 {
        req.push_str(&format!(
            "GET /route HTTP/1.1\r\nHost: test\r\nX-Seq: a{seq}\r\n\r\n"
        ));
    }
    c.send(req.as_bytes());
    for seq in 1..=6 {
        assert_eq!(c.response(false).body_str(), format!("seq a{seq}"));
    }
    let batch: Vec<_> = origin.log()[before..].to_vec();
    let conns: std::collections::HashSet<usize> = batch.iter().map(|r| r.conn).collect();
    assert_eq!(
        conns.len(),
        1,
        "a fast route's pipeline shares a connection: {batch:#?}"
    );

    // Now the front stalls.
    stall_next.store(true, Ordering::SeqCst);
    let before = origin.log().len();
    let mut req = String::new();
    for seq in 1..=6 {
        req.push_str(&format!(
            "GET /route HTTP/1.1\r\nHost: test\r\nX-Seq: b{seq}\r\n\r\n"
        ));
    }
    c.send(req.as_bytes());
    // While the front is held, the five behind it are answered elsewhere.
    origin.wait_for("b2..b6 on other connections", |log| {
        let log = &log[before..];
        let front_conn = log
            .iter()
            .find(|r| r.header("x-seq") == Some("b1"))
            .map(|r| r.conn);
        (2..=6).all(|seq| {
            let tag = format!("b{seq}");
            log.iter()
                .any(|r| r.header("x-seq") == Some(tag.as_str()) && Some(r.conn) != front_conn)
        })
    });
    assert_eq!(gate.waiting(), 1, "the front is still held");
    gate.open();
    for seq in 1..=6 {
        assert_eq!(
            c.response(false).body_str(),
            format!("seq b{seq}"),
            "in order"
        );
    }
    // Nothing stale follows: the next answer on this connection is the
    // next request's.
    let r = c.get("/other");
    assert_eq!(r.body_str(), "seq -");
    assert!(
        c.buf.is_empty(),
        "stray bytes: {:?}",
        String::from_utf8_lossy(&c.buf)
    );
    // Each of b2..b6 was answered to the client once, though the origin
    // may have seen it twice.
    let per_seq: HashMap<String, usize> =
        origin.log()[before..]
            .iter()
            .fold(HashMap::new(), |mut m, r| {
                *m.entry(r.header("x-seq").unwrap_or("-").to_string())
                    .or_default() += 1;
                m
            });
    assert_eq!(per_seq.get("b1"), Some(&1), "{per_seq:?}");
    thread::sleep(Duration::from_millis(50));
}
