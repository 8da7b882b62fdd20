//! Uploads an origin answers before reading them whole (nginx's `return`,
//! an auth check, an early 413): the client must never be reset while it
//! may still be sending (RFC 9112 §9.6, RFC 9110 §9.3.3). The rest of its
//! body is read and dropped, and the connection goes on serving requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::thread;

use common::Client;

/// An origin that answers a POST as soon as its head has arrived, before
/// any of the body (as nginx's `return` does); a GET gets `got it`. With
/// `close`, it says `Connection: close` and closes at once, with the body
/// unread; without, it then reads the body and drops it, and goes on
/// serving the connection.
fn early_origin(close: bool) -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
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
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    buf.drain(..end);
                    if head.starts_with("post ") {
                        if close {
                            let _ = s.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nearly",
                            );
                            return;
                        }
                        let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nearly");
                        let len: usize = head
                            .split("\r\n")
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .map_or(0, |v| v.trim().parse().unwrap());
                        while buf.len() < len {
                            match s.read(&mut chunk) {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..len);
                        continue;
                    }
                    if s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ngot it")
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

/// POST `len` body bytes in 64 KiB pieces on `c` (from another thread, as
/// a client that writes while it reads), read the answer, then GET on the
/// same connection. Err says what went wrong.
fn upload_then_get(c: &mut Client, len: usize) -> Result<(), String> {
    c.send(format!("POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes());
    let mut w = c.stream.try_clone().unwrap();
    let writer = thread::spawn(move || {
        let piece = vec![b'x'; 64 * 1024];
        let mut left = len;
        while left > 0 {
            let n = left.min(piece.len());
            w.write_all(&piece[..n])
                .map_err(|e| format!("writing the body: {e}"))?;
            left -= n;
        }
        Ok::<(), String>(())
    });
    let (status, _, _) = read_head(c).map_err(|e| format!("the POST's answer: {e}"))?;
    writer.join().unwrap()?;
    let mut body = [0u8; 5];
    if c.buf.len() < 5 {
        c.stream
            .read_exact(&mut body[c.buf.len()..])
            .map_err(|e| format!("body: {e}"))?;
    }
    let have = c.buf.len().min(5);
    body[..have].copy_from_slice(&c.buf[..have]);
    c.buf.drain(..have);
    if (status, &body) != (200, b"early") {
        return Err(format!(
            "answer {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    c.send(b"GET /after HTTP/1.1\r\nHost: t\r\n\r\n");
    let (status, _, _) = read_head(c).map_err(|e| format!("the GET's answer: {e}"))?;
    let mut body = vec![0u8; 6];
    let have = c.buf.len().min(6);
    body[..have].copy_from_slice(&c.buf[..have]);
    c.buf.drain(..have);
    c.stream
        .read_exact(&mut body[have..])
        .map_err(|e| format!("GET body: {e}"))?;
    if status != 200 || body != b"got it" {
        return Err(format!(
            "GET after: {status} {:?}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(())
}

/// A response head, read without panicking.
fn read_head(c: &mut Client) -> Result<(u16, String, usize), String> {
    loop {
        if let Some(i) = common::find(&c.buf, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&c.buf[..i + 4]).to_string();
            c.buf.drain(..i + 4);
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| format!("bad head {head:?}"))?;
            return Ok((status, head, i + 4));
        }
        match c.try_fill() {
            Ok(0) => return Err("closed before an answer".into()),
            Ok(_) => {}
            Err(e) => return Err(format!("{e} before an answer")),
        }
    }
}

#[test]
fn an_early_answer_to_an_upload_does_not_reset_the_client_and_the_connection_goes_on() {
    for close in [false, true] {
        let origin = early_origin(close);
        let p = common::proxy(&[origin.to_string()]);
        let mut failed = Vec::new();
        for round in 0..20 {
            let mut c = Client::connect(p.addr());
            if let Err(e) = upload_then_get(&mut c, 1 << 20) {
                failed.push(format!("round {round}: {e}"));
            }
        }
        assert!(
            failed.is_empty(),
            "origin closing: {close}: {} of 20 rounds failed: {failed:#?}",
            failed.len()
        );
    }
}

#[test]
fn early_answers_on_one_connection_back_to_back() {
    for close in [false, true] {
        let origin = early_origin(close);
        let p = common::proxy(&[origin.to_string()]);
        let mut c = Client::connect(p.addr());
        for round in 0..10 {
            upload_then_get(&mut c, 100 * 1024)
                .unwrap_or_else(|e| panic!("origin closing: {close}: round {round}: {e}"));
        }
    }
}

#[test]
fn a_refused_upload_still_being_sent_gets_its_answer_not_a_reset() {
    // 413 from the head alone, while the client keeps writing the body it
    // announced: closing at once would answer those bytes with a reset,
    // which destroys the 413 in the client's receive queue.
    let origin = early_origin(false);
    let p = common::proxy_with(&[origin.to_string()], &["--max-body-size", "1000"]);
    for round in 0..20 {
        let mut c = Client::connect(p.addr());
        let len = 4 << 20;
        c.send(format!("POST /up HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n").as_bytes());
        let mut w = c.stream.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let piece = vec![b'x'; 64 * 1024];
            for _ in 0..len / piece.len() {
                if w.write_all(&piece).is_err() {
                    return;
                }
            }
        });
        let got = read_head(&mut c).map(|h| h.0);
        assert_eq!(got, Ok(413), "round {round}");
        // Then a clean end (the proxy shut its side and read on), not a
        // reset: a slower link would have lost the 413 to it.
        let mut rest = Vec::new();
        let end = c.stream.read_to_end(&mut rest);
        assert!(end.is_ok(), "round {round}: {end:?} after the 413");
        writer.join().unwrap();
    }
}
