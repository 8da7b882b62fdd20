//! A scripted origin for the tests: thread per connection, pipelined
//! requests read one after another, and a handler closure that decides what
//! each request gets (it may write anything, block on a [`Gate`], or end the
//! connection). Every request is logged with the connection it came on.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::TIMEOUT;

/// One request as the origin received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    /// The head exactly as received.
    pub raw: String,
    /// Which connection (numbered from 1 in accept order) it came on, and
    /// its position on that connection (from 1).
    pub conn: usize,
    pub nth: usize,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the handler wants done with the connection afterwards.
pub enum After {
    KeepOpen,
    Close,
}

type Handler = dyn Fn(&Request, &mut TcpStream) -> After + Send + Sync;

/// A running scripted origin (its threads live as long as the test
/// process; the listener stops accepting when this is dropped).
pub struct Scripted {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    /// Connections accepted so far.
    pub accepted: Arc<AtomicUsize>,
    /// Connections open now (accepted, not yet closed by the peer).
    pub open: Arc<AtomicUsize>,
}

impl Scripted {
    /// Listen on loopback (with the kernel's default backlog) and serve
    /// every request with `handler`.
    pub fn start(
        handler: impl Fn(&Request, &mut TcpStream) -> After + Send + Sync + 'static,
    ) -> Scripted {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        Scripted::serve(l, Arc::new(handler))
    }

    /// Like [`Scripted::start`], on a listener with accept queue `backlog`.
    pub fn with_backlog(
        backlog: i32,
        handler: impl Fn(&Request, &mut TcpStream) -> After + Send + Sync + 'static,
    ) -> Scripted {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(backlog).unwrap();
        Scripted::serve(s.into(), Arc::new(handler))
    }

    fn serve(l: TcpListener, handler: Arc<Handler>) -> Scripted {
        let addr = l.local_addr().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let (log2, stop2, accepted2, open2) = (
            Arc::clone(&log),
            Arc::clone(&stop),
            Arc::clone(&accepted),
            Arc::clone(&open),
        );
        thread::spawn(move || {
            for s in l.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(s) = s else { continue };
                let conn = accepted2.fetch_add(1, Ordering::SeqCst) + 1;
                let (log, handler, open) =
                    (Arc::clone(&log2), Arc::clone(&handler), Arc::clone(&open2));
                open.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    serve_conn(s, conn, &log, &*handler);
                    open.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Scripted {
            addr,
            log,
            stop,
            accepted,
            open,
        }
    }

    /// Every request received so far, in arrival order.
    pub fn log(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }

    /// Wait (at most [`TIMEOUT`]) until `pred` holds for the log.
    pub fn wait_for(&self, what: &str, pred: impl Fn(&[Request]) -> bool) {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if pred(&self.log.lock().unwrap()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "origin never saw {what}; log: {:#?}",
                self.log()
            );
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

fn serve_conn(mut s: TcpStream, conn: usize, log: &Mutex<Vec<Request>>, handler: &Handler) {
    let _ = s.set_nodelay(true);
    let mut buf: Vec<u8> = Vec::new();
    let mut nth = 0;
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut tmp = [0u8; 16 * 1024];
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let raw = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end);
        let mut lines = raw.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let headers: Vec<(String, String)> = lines
            .filter(|l| !l.is_empty())
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_string(), v.trim().to_string()))
            .collect();
        // A Content-Length body is read and dropped.
        let len: usize = headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            let mut tmp = [0u8; 16 * 1024];
            match s.read(&mut tmp) {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        buf.drain(..len);
        nth += 1;
        let req = Request {
            method,
            target,
            headers,
            raw,
            conn,
            nth,
        };
        log.lock().unwrap().push(req.clone());
        if let After::Close = handler(&req, &mut s) {
            return;
        }
    }
}

/// A response with a `Content-Length` body.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A gate that handlers wait at until the test opens it (or `TIMEOUT`
/// passes, so that no test can hang on it).
#[derive(Clone, Default)]
pub struct Gate {
    inner: Arc<(Mutex<GateState>, Condvar)>,
}

#[derive(Default)]
struct GateState {
    open: bool,
    waiting: usize,
}

impl Gate {
    /// Block until the gate opens; true if it did (false: timed out).
    pub fn pass(&self) -> bool {
        let (m, cv) = &*self.inner;
        let mut st = m.lock().unwrap();
        st.waiting += 1;
        cv.notify_all();
        let (mut st, t) = cv.wait_timeout_while(st, TIMEOUT, |st| !st.open).unwrap();
        st.waiting -= 1;
        !t.timed_out()
    }

    /// How many handlers wait at the gate now.
    pub fn waiting(&self) -> usize {
        self.inner.0.lock().unwrap().waiting
    }

    /// Wait (at most `TIMEOUT`) until `n` handlers wait at the gate; true
    /// if they did.
    pub fn wait_for_waiting(&self, n: usize) -> bool {
        let (m, cv) = &*self.inner;
        let st = m.lock().unwrap();
        let (_st, t) = cv
            .wait_timeout_while(st, TIMEOUT, |st| st.waiting < n)
            .unwrap();
        !t.timed_out()
    }

    pub fn open(&self) {
        let (m, cv) = &*self.inner;
        m.lock().unwrap().open = true;
        cv.notify_all();
    }
}

/// A meeting point: each handler that arrives waits until `n` are there
/// at the same time.
#[derive(Clone, Default)]
pub struct Meeting {
    inner: Arc<(Mutex<usize>, Condvar)>,
}

impl Meeting {
    /// Arrive and wait (at most `limit`) for `n` to be here; true if they
    /// were.
    pub fn meet(&self, n: usize, limit: Duration) -> bool {
        let (m, cv) = &*self.inner;
        let mut here = m.lock().unwrap();
        *here += 1;
        cv.notify_all();
        let (_here, t) = cv.wait_timeout_while(here, limit, |h| *h < n).unwrap();
        !t.timed_out()
    }
}
