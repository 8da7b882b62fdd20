//! `ringmux::h2::conn::Connection` on its own against real HTTP/2 clients
//! (curl, nghttp, h2load, Python's h2); the proxy's own use of it is
//! tested in `tests/h2.rs`. A small blocking server here drives it over a
//! loopback socket and answers
//! each request with its stream, path and body length, or with 1 MiB for
//! `/big` (which the client's windows pace).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ringmux::h2::conn::{Connection, Handler, Limits, Refusal};
use ringmux::h2::request::Head;

/// What the connection handed on: requests waiting for their body's end,
/// and answers to write.
#[derive(Default)]
struct App {
    /// (stream, path, body octets so far)
    open: Vec<(u32, String, usize)>,
    /// (stream, status, body) to answer.
    ready: Vec<(u32, u16, Vec<u8>)>,
    /// Body octets taken since the last window update, per stream.
    taken: Vec<(u32, u32)>,
}

impl App {
    fn answer(&mut self, stream: u32) {
        let Some(i) = self.open.iter().position(|o| o.0 == stream) else {
            return;
        };
        let (_, path, len) = self.open.remove(i);
        let body = if path == "/big" {
            vec![b'b'; 1 << 20]
        } else {
            format!("stream {stream} {path} {len}\n").into_bytes()
        };
        self.ready.push((stream, 200, body));
    }
}

impl Handler for App {
    fn request(&mut self, stream: u32, head: Head, end_stream: bool) {
        let text = String::from_utf8_lossy(&head.bytes).into_owned();
        let path = text.split(' ').nth(1).unwrap_or_default().to_string();
        self.open.push((stream, path, 0));
        if end_stream {
            self.answer(stream);
        }
    }
    fn refused(&mut self, stream: u32, why: Refusal) {
        let status = if why == Refusal::TooLarge { 431 } else { 400 };
        self.ready
            .push((stream, status, format!("{why:?}\n").into_bytes()));
    }
    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        if let Some(o) = self.open.iter_mut().find(|o| o.0 == stream) {
            o.2 += data.len();
        }
        self.taken.push((stream, data.len() as u32));
        if end {
            self.answer(stream);
        }
    }
    fn reset(&mut self, stream: u32) {
        self.open.retain(|o| o.0 != stream);
        self.ready.retain(|r| r.0 != stream);
    }
}

/// Serve one connection until the client goes or the connection ends.
fn serve_one(mut sock: TcpStream) {
    sock.set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    let mut c = Connection::new(Limits::default());
    let mut app = App::default();
    // Bodies partly sent: (stream, body, octets sent).
    let mut sending: Vec<(u32, Vec<u8>, usize)> = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let started = Instant::now();
    loop {
        let now = Instant::now();
        match sock.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if c.receive(&buf[..n], now, &mut app).is_err() {
                    let _ = sock.write_all(&c.take_output());
                    return;
                }
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(_) => return,
        }
        for (stream, n) in app.taken.drain(..) {
            c.consumed(stream, n);
        }
        for (stream, status, body) in app.ready.drain(..) {
            let len = body.len().to_string();
            c.send_headers(
                stream,
                status,
                &[
                    (b"content-type", b"text/plain"),
                    (b"content-length", len.as_bytes()),
                ],
                false,
            );
            sending.push((stream, body, 0));
        }
        for (stream, body, sent) in sending.iter_mut() {
            *sent += c.send_data(*stream, &body[*sent..], true, now);
        }
        sending.retain(|(_, body, sent)| *sent < body.len());
        let out = c.take_output();
        if !out.is_empty() && sock.write_all(&out).is_err() {
            return;
        }
        if c.is_done() || started.elapsed() > Duration::from_secs(30) {
            return;
        }
    }
}

/// A server on a loopback port, one thread per connection.
fn server() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for sock in l.incoming().flatten() {
            std::thread::spawn(move || serve_one(sock));
        }
    });
    addr
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("the client runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// curl with prior knowledge, two requests at once (`--parallel`: curl
/// 7.88's reuse of an h2c connection for a second, sequential request
/// fails against any server, nginx 1.22 included) and an upload.
#[test]
fn curl_with_prior_knowledge() {
    let addr = server();
    let out = run(Command::new("curl").args([
        "-sS",
        "--parallel",
        "--parallel-immediate",
        "--http2-prior-knowledge",
        "--max-time",
        "10",
        &format!("http://{addr}/a"),
        &format!("http://{addr}/b?x=1"),
    ]));
    // (Whether curl puts both on one connection is its choice.)
    let mut paths: Vec<&str> = out
        .lines()
        .map(|l| l.splitn(3, ' ').nth(2).unwrap_or_default())
        .collect();
    paths.sort();
    assert_eq!(paths, ["/a 0", "/b?x=1 0"], "{out}");
    let out = run(Command::new("curl").args([
        "-sS",
        "--http2-prior-knowledge",
        "--max-time",
        "10",
        "-d",
        "hello",
        &format!("http://{addr}/post"),
    ]));
    assert_eq!(out, "stream 1 /post 5\n");
}

#[test]
fn nghttp_multiplexes_and_a_large_body_follows_the_windows() {
    let addr = server();
    let out = run(Command::new("nghttp").args([
        "-n",
        "-s",
        "-t",
        "10",
        &format!("http://{addr}/big"),
        &format!("http://{addr}/one"),
        &format!("http://{addr}/two"),
    ]));
    // nghttp -s prints a table of the streams it completed.
    for p in ["/big", "/one", "/two"] {
        assert!(out.contains(p), "{out}");
    }
    assert!(out.contains("1M") || out.contains("1048576"), "{out}");
}

#[test]
fn h2load_runs_many_streams_on_few_connections() {
    let addr = server();
    let out = run(Command::new("h2load").args([
        "-n",
        "2000",
        "-c",
        "4",
        "-m",
        "20",
        &format!("http://{addr}/x"),
    ]));
    assert!(
        out.contains("2000 total, 2000 started, 2000 done, 2000 succeeded, 0 failed, 0 errored"),
        "{out}"
    );
}

/// Python's h2: concurrent streams with bodies, a malformed request (an
/// upper-case field name) answered 400 on its stream while the others go
/// on, and a header list too large answered 431.
const PYTHON_CLIENT: &str = r#"
import socket, sys, h2.connection, h2.config, h2.events
s = socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=10)
c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, validate_outbound_headers=False, normalize_outbound_headers=False))
c.initiate_connection()
base = [(':method', 'POST'), (':scheme', 'http'), (':authority', 'x'), ]
for i in range(10):
    c.send_headers(1 + 2 * i, base + [(':path', '/p%d' % i)])
    c.send_data(1 + 2 * i, b'x' * (1000 * i), end_stream=True)
c.send_headers(21, [(':method', 'GET'), (':scheme', 'http'), (':authority', 'x'), (':path', '/bad'), ('X-Upper', '1')], end_stream=True)
c.send_headers(23, [(':method', 'GET'), (':scheme', 'http'), (':authority', 'x'), (':path', '/huge'), ('x-huge', 'v' * 70000)], end_stream=True)
s.sendall(c.data_to_send())
status, bodies, done = {}, {}, set()
while len(done) < 12:
    data = s.recv(65536)
    if not data:
        break
    for e in c.receive_data(data):
        if isinstance(e, h2.events.ResponseReceived):
            status[e.stream_id] = dict(e.headers)[b':status'].decode()
        elif isinstance(e, h2.events.DataReceived):
            bodies[e.stream_id] = bodies.get(e.stream_id, b'') + e.data
            c.acknowledge_received_data(e.flow_controlled_length, e.stream_id)
        elif isinstance(e, h2.events.StreamEnded):
            done.add(e.stream_id)
    s.sendall(c.data_to_send())
for sid in sorted(done):
    print(sid, status.get(sid), bodies.get(sid, b'').decode().strip())
"#;

#[test]
fn python_h2_streams_bodies_and_stream_errors() {
    let addr = server();
    let out = run(Command::new("python3")
        .args(["-c", PYTHON_CLIENT])
        .arg(addr.port().to_string()));
    let lines: Vec<&str> = out.lines().collect();
    for i in 0..10 {
        let id = 1 + 2 * i;
        let want = format!("{id} 200 stream {id} /p{i} {}", 1000 * i);
        assert!(lines.contains(&want.as_str()), "{want} in {out}");
    }
    assert!(lines.contains(&"21 400 Malformed(Name)"), "{out}");
    assert!(lines.contains(&"23 431 TooLarge"), "{out}");
}
