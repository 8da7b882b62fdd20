//! `ringmux::h2::upstream::Upstream`, the client side of HTTP/2 to origins
//! (issue 24, not wired to the worker yet), against a real origin: nginx
//! speaking h2c by prior knowledge. A small blocking loop here drives it
//! over a loopback socket: five streams at once, one a 1 MiB answer paced by
//! our windows, and a GOAWAY after `keepalive_requests` with streams the
//! origin did not process.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::nginx::Nginx;
use ringmux::h2::hpack::Fields;
use ringmux::h2::upstream::{Events, Http1Response, Limits, Upstream};

/// Each stream's response as HTTP/1.1 (what an agent would be fed), and
/// what else happened.
#[derive(Default)]
struct Answers {
    text: std::collections::BTreeMap<u32, (Http1Response, Vec<u8>, bool)>,
    refused: Vec<u32>,
    resets: Vec<(u32, u32)>,
    /// Body octets to give back to the windows.
    taken: Vec<(u32, u32)>,
}

impl Events for Answers {
    fn response(&mut self, stream: u32, status: u16, fields: &Fields, end_stream: bool) {
        let (r, out, done) = self.text.entry(stream).or_default();
        r.head(status, fields, end_stream, out);
        *done = end_stream;
    }
    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        let (r, out, done) = self.text.entry(stream).or_default();
        r.data(data, end, out);
        *done = end;
        self.taken.push((stream, data.len() as u32));
    }
    fn trailers(&mut self, stream: u32, fields: &Fields) {
        let (r, out, done) = self.text.entry(stream).or_default();
        r.trailers(fields, out);
        *done = true;
    }
    fn reset(&mut self, stream: u32, code: u32) {
        self.resets.push((stream, code));
    }
    fn refused(&mut self, stream: u32) {
        self.refused.push(stream);
    }
}

/// Drive `c` over `sock` until `done` or 10 s.
fn run(c: &mut Upstream, sock: &mut TcpStream, a: &mut Answers, done: impl Fn(&Answers) -> bool) {
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut buf = vec![0u8; 64 * 1024];
    while !done(a) {
        assert!(Instant::now() < deadline, "no end: {:?}", a.text.keys());
        let out = c.take_output();
        if !out.is_empty() {
            sock.write_all(&out).unwrap();
        }
        match sock.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => c.receive(&buf[..n], Instant::now(), a).unwrap(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("{e}"),
        }
        for (stream, n) in std::mem::take(&mut a.taken) {
            c.consumed(stream, n);
        }
    }
}

fn origin() -> Nginx {
    let n = Nginx::start(
        "  keepalive_requests 5;\n  server {\n    listen {addr} http2;\n    root {dir}/www;\n    \
         location /hello { return 200 \"hello $request_uri\\n\"; }\n  }",
    );
    n.put("www/big.bin", &vec![b'b'; 1 << 20]);
    n
}

#[test]
fn streams_at_once_and_a_large_answer_paced_by_our_windows() {
    let nginx = origin();
    let mut sock = TcpStream::connect(nginx.addr()).unwrap();
    let limits = Limits {
        stream_window: 65_535,
        conn_window: 128 * 1024,
        ..Limits::default()
    };
    let mut c = Upstream::new(limits);
    let mut a = Answers::default();
    let host = nginx.addr().to_string();
    let mut streams = Vec::new();
    for i in 0..4 {
        let head =
            format!("GET /hello?{i} HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n\r\n");
        streams.push(c.open(head.as_bytes(), "http", true).unwrap().0);
    }
    let big = format!("GET /big.bin HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let big = c.open(big.as_bytes(), "http", true).unwrap().0;
    run(&mut c, &mut sock, &mut a, |a| {
        a.text.values().filter(|t| t.2).count() == 5
    });
    for (i, s) in streams.iter().enumerate() {
        let text = String::from_utf8_lossy(&a.text[s].1).into_owned();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        assert!(text.ends_with(&format!("hello /hello?{i}\n")), "{text}");
    }
    let body = &a.text[&big].1;
    let head_end = body.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(body.len() - head_end, 1 << 20);
    assert!(a.resets.is_empty() && a.refused.is_empty());
}

#[test]
fn goaway_after_keepalive_requests_refuses_the_streams_it_did_not_process() {
    let nginx = origin();
    let mut sock = TcpStream::connect(nginx.addr()).unwrap();
    let mut c = Upstream::new(Limits::default());
    let mut a = Answers::default();
    let host = nginx.addr().to_string();
    for i in 0..8 {
        let head = format!("GET /hello?{i} HTTP/1.1\r\nHost: {host}\r\n\r\n");
        c.open(head.as_bytes(), "http", true).unwrap();
    }
    run(&mut c, &mut sock, &mut a, |a| {
        a.text.values().filter(|t| t.2).count() + a.refused.len() == 8
    });
    // nginx answers keepalive_requests (5) and says the rest were not
    // processed: they may go again on another connection.
    assert_eq!(
        a.text.values().filter(|t| t.2).count(),
        5,
        "{:?}",
        a.refused
    );
    assert_eq!(a.refused, [11, 13, 15]);
    assert!(!c.may_open());
}
