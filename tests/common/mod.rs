//! Shared harness for the loopback integration tests: child processes that
//! are killed on drop, the `listening on ADDR` handshake, a minimal blocking
//! HTTP/1.1 client and an RSS probe. Everything has a timeout so that no test
//! can hang.
#![allow(dead_code)]

pub mod certs;
pub mod haproxy;
pub mod nginx;
pub mod scripted;

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Socket read/write timeout and the wait for a process to become ready.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const PROXY: &str = env!("CARGO_BIN_EXE_ringmux");
pub const ORIGIN: &str = env!("CARGO_BIN_EXE_ringmux-origin");

/// A child process that is killed (and reaped) when dropped.
pub struct Proc {
    pub child: Child,
    /// Addresses from the `listening on` lines, in order.
    pub addrs: Vec<SocketAddr>,
    /// Everything the process wrote to stderr so far (for failure messages).
    pub stderr: Arc<Mutex<String>>,
    /// Where its `admin listening on ADDR` line said the admin listener is.
    pub admin: Arc<Mutex<Option<SocketAddr>>>,
}

impl Proc {
    /// Starts `program args` and waits (at most [`TIMEOUT`]) for
    /// `expect_addrs` lines of `listening on ADDR` on its stdout.
    pub fn start(program: &str, args: &[&str], expect_addrs: usize) -> Proc {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let stderr = child.stderr.take().unwrap();
        let err_buf = Arc::new(Mutex::new(String::new()));
        let eb = Arc::clone(&err_buf);
        thread::spawn(move || {
            let mut r = BufReader::new(stderr);
            let mut line = String::new();
            while matches!(r.read_line(&mut line), Ok(n) if n > 0) {
                eb.lock().unwrap().push_str(&line);
                line.clear();
            }
        });
        let (tx, rx) = mpsc::channel();
        let admin = Arc::new(Mutex::new(None));
        let admin2 = Arc::clone(&admin);
        thread::spawn(move || {
            // Keep draining stdout after the handshake so the pipe never fills.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(a) = line.strip_prefix("listening on ") {
                    let _ = tx.send(a.trim().to_string());
                } else if let Some(a) = line.strip_prefix("admin listening on ") {
                    *admin2.lock().unwrap() = a.trim().parse().ok();
                }
            }
        });
        let mut p = Proc {
            child,
            addrs: Vec::new(),
            stderr: err_buf,
            admin,
        };
        let deadline = Instant::now() + TIMEOUT;
        while p.addrs.len() < expect_addrs {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(a) => p.addrs.push(
                    a.parse()
                        .unwrap_or_else(|_| panic!("bad address {a:?} from {program}")),
                ),
                Err(_) => {
                    thread::sleep(Duration::from_millis(50));
                    panic!(
                        "{program} {args:?}: no `listening on` line within {TIMEOUT:?}; status {:?}; stderr:\n{}",
                        p.child.try_wait(),
                        p.stderr_text()
                    );
                }
            }
        }
        p
    }

    pub fn addr(&self) -> SocketAddr {
        self.addrs[0]
    }

    /// The admin listener's address (waits for its line).
    pub fn admin_addr(&self) -> SocketAddr {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(a) = *self.admin.lock().unwrap() {
                return a;
            }
            assert!(Instant::now() < deadline, "no `admin listening on` line");
            thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Send signal `name` (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .arg("-s")
            .arg(name)
            .arg(self.pid().to_string())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -s {name} {}", self.pid());
    }

    /// Wait (at most `limit`) until stderr has `n` lines containing
    /// `text`; panics with what it has otherwise.
    pub fn wait_stderr(&self, text: &str, n: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let err = self.stderr_text();
            if err.lines().filter(|l| l.contains(text)).count() >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no {n} line(s) with {text:?} on stderr within {limit:?}:\n{err}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait (at most `limit`) for the process to exit by itself.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Resident set size of the process, in KiB (VmRSS in /proc/PID/status).
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the proxy with `--listen 127.0.0.1:0 --workers 1 --no-pin` and
/// one `--upstream` per entry of `upstreams` (each `HOST:PORT[,opts]`).
pub fn proxy(upstreams: &[String]) -> Proc {
    proxy_with(upstreams, &[])
}

/// Like [`proxy`], with extra flags.
pub fn proxy_with(upstreams: &[String], extra: &[&str]) -> Proc {
    let mut args: Vec<&str> = vec!["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"];
    for u in upstreams {
        args.push("--upstream");
        args.push(u);
    }
    args.extend_from_slice(extra);
    Proc::start(PROXY, &args, 1)
}

/// Starts an origin process named `name`.
pub fn origin(name: &str) -> Proc {
    Proc::start(ORIGIN, &["--listen", "127.0.0.1:0", "--name", name], 1)
}

/// A loopback port with nothing listening on it (bound, then released).
pub fn dead_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Runs a command that is expected to exit by itself, with a timeout.
/// Returns its exit status, stdout and stderr.
pub fn run_to_exit(program: &str, args: &[&str]) -> (ExitStatus, String, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let t_out = thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{program} {args:?} did not exit within {TIMEOUT:?}");
        }
        thread::sleep(Duration::from_millis(20));
    };
    (status, t_out.join().unwrap(), t_err.join().unwrap())
}

/// VmRSS of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS line");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Open file descriptors of process `pid`.
pub fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Wait up to `limit` for process `pid` to be back at `baseline` open fds
/// and return its count then. If it is not, print its fds and its sockets'
/// states, so a failing leak check says which connections were left.
pub fn fds_settle(pid: u32, baseline: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    let mut fds = fd_count(pid);
    while fds > baseline && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
        fds = fd_count(pid);
    }
    if fds > baseline {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ls -l /proc/{pid}/fd; ss -tanp | grep 'pid={pid},'"
            ))
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        eprintln!("pid {pid}: {fds} fds, {baseline} expected:\n{out}");
    }
    fds
}

/// Hash of a byte string (for comparing large bodies).
pub fn hash(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    h.write(bytes);
    h.finish()
}

/// Deterministic pseudo-random bytes (xorshift64).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One parsed response.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// First header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the body of a response is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    None,
    Length(usize),
    Chunked,
    Close,
}

/// A minimal HTTP/1.1 client over one TCP connection.
pub struct Client {
    pub stream: TcpStream,
    /// Bytes read but not yet consumed.
    pub buf: Vec<u8>,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect_timeout(&addr, TIMEOUT)
            .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Client {
            stream,
            buf: Vec::new(),
        }
    }

    /// Writes raw bytes.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("write to server");
    }

    /// Reads more bytes into the buffer; returns how many (0 at EOF).
    /// Panics on a timeout or error.
    pub fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 64 * 1024];
        match self.stream.read(&mut tmp) {
            Ok(n) => {
                self.buf.extend_from_slice(&tmp[..n]);
                n
            }
            Err(e) => panic!(
                "read failed ({e}) with {} unconsumed bytes: {:?}",
                self.buf.len(),
                String::from_utf8_lossy(&self.buf[..self.buf.len().min(300)])
            ),
        }
    }

    /// Like [`Client::fill`] but returns the error instead of panicking.
    pub fn try_fill(&mut self) -> std::io::Result<usize> {
        let mut tmp = [0u8; 64 * 1024];
        let n = self.stream.read(&mut tmp)?;
        self.buf.extend_from_slice(&tmp[..n]);
        Ok(n)
    }

    /// Reads a response head. Returns (status, headers, framing) with the head
    /// consumed from the buffer. `head_only`: the request was HEAD.
    pub fn read_head(&mut self, head_only: bool) -> (u16, Vec<(String, String)>, Framing) {
        let end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            assert!(
                self.fill() > 0,
                "EOF before a complete response head; got {:?}",
                String::from_utf8_lossy(&self.buf)
            );
        };
        let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
        self.buf.drain(..end);
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or("");
        assert!(
            version.starts_with("HTTP/1."),
            "bad status line {status_line:?}"
        );
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .unwrap_or_else(|| panic!("bad header line {l:?}"));
                (n.to_string(), v.trim().to_string())
            })
            .collect();
        let get = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let framing = if head_only || status == 204 || status == 304 || (100..200).contains(&status)
        {
            Framing::None
        } else if get("transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().ends_with("chunked"))
        {
            Framing::Chunked
        } else if let Some(cl) = get("content-length") {
            Framing::Length(
                cl.parse()
                    .unwrap_or_else(|_| panic!("bad Content-Length {cl:?}")),
            )
        } else {
            Framing::Close
        };
        (status, headers, framing)
    }

    /// Reads exactly `n` body bytes (from the buffer first).
    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            assert!(
                self.fill() > 0,
                "EOF in body: wanted {n} bytes, have {}",
                self.buf.len()
            );
        }
        self.buf.drain(..n).collect()
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    fn line(&mut self) -> String {
        loop {
            if let Some(i) = find(&self.buf, b"\r\n") {
                let l = String::from_utf8_lossy(&self.buf[..i]).into_owned();
                self.buf.drain(..i + 2);
                return l;
            }
            assert!(self.fill() > 0, "EOF in chunked framing");
        }
    }

    /// Reads one complete response.
    pub fn response(&mut self, head_only: bool) -> Response {
        let (status, headers, framing) = self.read_head(head_only);
        let body = match framing {
            Framing::None => Vec::new(),
            Framing::Length(n) => self.take(n),
            Framing::Chunked => {
                let mut body = Vec::new();
                loop {
                    let l = self.line();
                    let size = l.split(';').next().unwrap().trim();
                    let size = usize::from_str_radix(size, 16)
                        .unwrap_or_else(|_| panic!("bad chunk size line {l:?}"));
                    if size == 0 {
                        // Trailers, then the empty line.
                        while !self.line().is_empty() {}
                        break;
                    }
                    body.extend(self.take(size));
                    assert_eq!(self.take(2), b"\r\n", "chunk not followed by CRLF");
                }
                body
            }
            Framing::Close => {
                while self.fill() > 0 {}
                std::mem::take(&mut self.buf)
            }
        };
        Response {
            status,
            headers,
            body,
        }
    }

    /// Sends a GET for `target` and reads the response.
    pub fn get(&mut self, target: &str) -> Response {
        self.send(format!("GET {target} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes());
        self.response(false)
    }

    /// Reads until EOF; panics if any byte or a timeout comes instead.
    pub fn expect_closed(&mut self) {
        assert!(
            self.buf.is_empty(),
            "unexpected bytes before close: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
        match self.try_fill() {
            Ok(0) => {}
            // A reset after the response also means the connection is closed.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Ok(_) => panic!(
                "expected the connection to be closed, got {:?}",
                String::from_utf8_lossy(&self.buf)
            ),
            Err(e) => panic!("expected the connection to be closed, got error {e}"),
        }
    }

    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}

/// `GET /metrics` on the admin port at `admin`, and the value of the
/// sample named exactly `name` (labels included, if any) in it.
pub fn metric(admin: SocketAddr, name: &str) -> f64 {
    let mut c = Client::connect(admin);
    c.send(format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n").as_bytes());
    let body = c.response(false).body_str();
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}"))
}

/// One-shot GET on a new connection.
pub fn get(addr: SocketAddr, target: &str) -> Response {
    Client::connect(addr).get(target)
}

/// Reads an origin's counters with a direct connection (which counts itself:
/// one connection, one request).
pub fn origin_stats(addr: SocketAddr) -> (u64, u64) {
    let r = get(addr, "/stats");
    assert_eq!(r.status, 200);
    let s = r.body_str();
    let mut conns = None;
    let mut reqs = None;
    for kv in s.split_whitespace() {
        match kv.split_once('=') {
            Some(("connections", v)) => conns = v.parse().ok(),
            Some(("requests", v)) => reqs = v.parse().ok(),
            _ => {}
        }
    }
    (
        conns.unwrap_or_else(|| panic!("bad stats {s:?}")),
        reqs.unwrap_or_else(|| panic!("bad stats {s:?}")),
    )
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads until the peer closes (EOF or reset) and returns what arrived;
/// panics if it has not closed within `limit`.
pub fn read_to_close(s: &mut TcpStream, limit: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!(
                "expected the peer to close, got {e} after {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

/// A config file in a fresh temporary directory (removed on drop).
pub struct ConfigFile {
    dir: PathBuf,
    path: PathBuf,
}

impl ConfigFile {
    pub fn new(text: &str) -> ConfigFile {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "ringmux-test-config-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ringmux.toml");
        let f = ConfigFile { dir, path };
        f.write(text);
        f
    }

    /// Replace the file's contents (atomically: a reload never reads half).
    pub fn write(&self, text: &str) {
        let tmp = self.dir.join("next.toml");
        std::fs::File::create(&tmp)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        std::fs::rename(&tmp, &self.path).unwrap();
    }

    pub fn path(&self) -> &str {
        self.path.to_str().unwrap()
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub fn upstreams(addrs: &[std::net::SocketAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("[[upstream]]\naddr = \"{a}\"\n"))
        .collect()
}
