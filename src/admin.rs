//! The admin listener (`--admin ADDR`): a status page, JSON status,
//! Prometheus metrics, the connection table and a reload button.
//!
//! It runs on a thread of its own and never on a worker's data path. The
//! figures it shows are the snapshots workers publish on their tick (see
//! [`crate::metrics`]), summed here when a page is asked for; the
//! connection table is asked of each worker through its control inbox and
//! built between two of its turns. Requests are parsed with the project's
//! codec, so the admin port is exactly as strict as the proxy's (a
//! smuggling shape gets the same 400). One request per connection.
//!
//! | method and path | answer |
//! |---|---|
//! | `GET /` | an HTML page that refreshes itself every 2 s |
//! | `GET /status` | JSON: workers, upstreams, totals, connections |
//! | `GET /metrics` | Prometheus text exposition format 0.0.4 |
//! | `GET /connections?limit=N` | JSON: client connections, least recently used first (default 100) |
//! | `POST /reload` | the reload SIGHUP does; 200 with what changed, or 409 with why not |
//!
//! Anything else is 404, or 405 for a known path with another method.
//!
//! # Who may use it
//! - A token (`--admin-token-file`) is required, as `Authorization: Bearer
//!   TOKEN`, for what changes state, and with `--admin-token-reads` for
//!   every path (401 otherwise; compared in constant time).
//! - No state change from a web page: a `POST` with an `Origin` (browsers
//!   send one; curl and scripts do not), a `Sec-Fetch-Site` other than
//!   `none`, or one of the content types a form may send without asking
//!   (`application/x-www-form-urlencoded`, `multipart/form-data`,
//!   `text/plain`) gets 403.
//! - The `Host` must be an IP address, `localhost`, or a name given with
//!   `--admin-host` (421 otherwise): a page whose name the attacker makes
//!   resolve to the admin address (DNS rebinding) sends its own name.
//! - At most [`MAX_OPEN`] connections at once, [`MAX_PER_PEER`] of them
//!   from one address, and a request head within [`READ_TIMEOUT`]: a few
//!   idle connections from one place cannot lock the scrapes out.
//! - The connection table costs the workers a pass over their
//!   connections: it is built at most once per [`TABLE_TTL`] and order,
//!   and other requests meanwhile get that answer.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::access_log::json_string;
use crate::codec::{self, ForwardCtx, HeadLimits};
use crate::config::AdminAccess;
use crate::control::{Command, Mailbox};
use crate::metrics::{
    names, Board, ConnInfo, ConnOrder, Histogram, UpstreamFigures, WorkerSnapshot, BUCKETS,
};

/// How long a client of the admin port may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a worker may take to list its connections.
const WORKER_TIMEOUT: Duration = Duration::from_secs(1);
/// Admin connections served at once; more get a 503.
const MAX_OPEN: usize = 64;
/// Admin connections from one address at once; more get a 503.
const MAX_PER_PEER: usize = 4;
/// How long a connection table answers again from what was built.
const TABLE_TTL: Duration = Duration::from_millis(500);
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The busiest connections the HTML page shows.
const BUSIEST_SHOWN: usize = 20;
/// The most connections `/status` lists (`/connections?limit=` for more).
const STATUS_CONNECTIONS: usize = 1000;
/// The most connections one answer lists.
const MAX_LIMIT: usize = 10_000;

/// Runs a reload and says what came of it (`Err`: refused, and why).
pub type Reload = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// What the admin side reads.
#[derive(Clone)]
pub struct Admin {
    /// The workers' published figures and the supervisor's counters.
    pub board: Arc<Mutex<Board>>,
    /// The workers' inboxes (None for a worker that is gone).
    pub mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
    /// The reload.
    pub reload: Reload,
    /// Who may use it (a reload replaces it: the token file is read again).
    pub access: Arc<std::sync::RwLock<AdminAccess>>,
    /// Connection tables built lately (see [`TABLE_TTL`]).
    pub tables: Arc<Mutex<Vec<Table>>>,
}

/// A connection table built at `at` for `order` and `limit`: the
/// connections listed and how many are open.
pub struct Table {
    order: ConnOrder,
    limit: usize,
    at: Instant,
    built: (Vec<ConnInfo>, usize),
}

/// Bind `addr` and serve on a thread of its own; returns the bound address.
pub fn start(addr: SocketAddr, admin: Admin) -> std::io::Result<(SocketAddr, JoinHandle<()>)> {
    let listener = TcpListener::bind(addr)?;
    let bound = listener.local_addr()?;
    let handle = std::thread::Builder::new()
        .name("ringmux-admin".into())
        .spawn(move || {
            // A thread per connection, a few at most: the admin side is for
            // people and scrapers, not for load, but one slow client must
            // not hold a scrape up for the read timeout.
            let open = Arc::new(AtomicUsize::new(0));
            let peers: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
            let mut failing = false;
            loop {
                let (mut conn, peer) = match listener.accept() {
                    Ok((conn, peer)) => {
                        failing = false;
                        (conn, peer.ip())
                    }
                    Err(e) => {
                        // Out of descriptors, most likely: say so once, and
                        // do not spin on it.
                        if !failing {
                            eprintln!("ringmux: admin accept failed: {e}");
                            failing = true;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                let from_peer = {
                    let mut p = peers.lock().unwrap_or_else(|e| e.into_inner());
                    let n = p.entry(peer).or_insert(0);
                    *n += 1;
                    *n
                };
                let release = {
                    let (open, peers) = (Arc::clone(&open), Arc::clone(&peers));
                    move || {
                        open.fetch_sub(1, Ordering::AcqRel);
                        let mut p = peers.lock().unwrap_or_else(|e| e.into_inner());
                        if let Some(n) = p.get_mut(&peer) {
                            *n -= 1;
                            if *n == 0 {
                                p.remove(&peer);
                            }
                        }
                    }
                };
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_OPEN || from_peer > MAX_PER_PEER {
                    release();
                    let _ = conn.write_all(BUSY);
                    continue;
                }
                let admin = admin.clone();
                // Released when the connection's thread ends however it ends
                // (a panic too), or here if the thread never started.
                let guard = Release(Some(Box::new(release)));
                let spawned = std::thread::Builder::new()
                    .name("ringmux-admin-conn".into())
                    .spawn(move || {
                        let _guard = guard;
                        let _ = serve(conn, &admin);
                    });
                drop(spawned);
            }
        })?;
    Ok((bound, handle))
}

/// Gives a connection's place back (its counts) when dropped.
struct Release(Option<Box<dyn FnOnce() + Send>>);

impl Drop for Release {
    fn drop(&mut self) {
        if let Some(r) = self.0.take() {
            r();
        }
    }
}

/// An answer of the admin side.
struct Answer {
    status: u16,
    ctype: &'static str,
    body: Vec<u8>,
    /// For a 405: the methods the path takes.
    allow: Option<&'static str>,
}

impl Answer {
    fn new(status: u16, ctype: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Answer {
            status,
            ctype,
            body: body.into(),
            allow: None,
        }
    }

    fn text(status: u16, body: impl Into<Vec<u8>>) -> Self {
        Answer::new(status, "text/plain", body)
    }

    fn not_allowed(allow: &'static str) -> Self {
        Answer {
            allow: Some(allow),
            ..Answer::text(405, "method not allowed\n")
        }
    }
}

fn serve(mut conn: TcpStream, admin: &Admin) -> std::io::Result<()> {
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let (answer, head_only) = match read_head(&mut conn) {
        Ok(Some((head, line, fields))) => {
            let access = admin
                .access
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let answer = match refused(&access, &line, &fields) {
                Some(no) => no,
                None => route(admin, &head, &line),
            };
            (answer, head.method == codec::Method::Head)
        }
        Ok(None) => return Ok(()),
        Err(answer) => (answer, false),
    };
    write_answer(&mut conn, &answer, head_only)
}

/// The header fields of a head the codec accepted, names in lower case.
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Whether `a` and `b` are equal, in time that does not depend on where
/// they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Why `access` refuses the request `line` with `fields`, if it does (see
/// the module doc).
fn refused(access: &AdminAccess, line: &str, fields: &Fields) -> Option<Answer> {
    // DNS rebinding: the page's own name in Host. (No Host at all is no
    // browser's request.)
    let host = field(fields, "host").unwrap_or("localhost");
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    }
    .to_ascii_lowercase();
    let known =
        name.parse::<IpAddr>().is_ok() || name == "localhost" || access.hosts.contains(&name);
    if !known {
        return Some(Answer::text(
            421,
            "this admin port answers to its IP address, localhost, or an --admin-host name\n",
        ));
    }
    let changes_state = line.starts_with("POST ");
    if changes_state {
        // A web page's request: its origin, its fetch metadata, or a body a
        // form can send without a preflight.
        let ctype = field(fields, "content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let from_page = field(fields, "origin").is_some()
            || field(fields, "sec-fetch-site").is_some_and(|s| s != "none")
            || matches!(
                ctype.as_str(),
                "application/x-www-form-urlencoded" | "multipart/form-data" | "text/plain"
            );
        if from_page {
            return Some(Answer::text(
                403,
                "state changes are not taken from web pages (Origin, Sec-Fetch-Site or a form's content type)\n",
            ));
        }
    }
    if let Some(token) = &access.token {
        if changes_state || access.token_reads {
            let given = field(fields, "authorization")
                .and_then(|v| v.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map_or("", |(_, t)| t.trim());
            if !same_secret(given.as_bytes(), token.as_bytes()) {
                return Some(Answer {
                    allow: None,
                    ..Answer::text(
                        401,
                        "a valid admin token is required (Authorization: Bearer TOKEN)\n",
                    )
                });
            }
        }
    }
    None
}

/// Read one request head, parsed by the proxy's codec, within
/// [`READ_TIMEOUT`] in all: the head, its request line and its fields;
/// None if the peer left, or the answer to give.
fn read_head(conn: &mut TcpStream) -> Result<Option<(codec::RequestHead, String, Fields)>, Answer> {
    let peer = conn
        .peer_addr()
        .map_err(|_| Answer::text(400, "no peer\n"))?;
    let ctx = ForwardCtx {
        client: peer.ip(),
        proto: "http",
        limits: HeadLimits::DEFAULT,
        via: None,
        affinity_cookie: None,
        drop_field: None,
    };
    let deadline = Instant::now() + READ_TIMEOUT;
    let timeout = || Answer::text(408, "request header timeout\n");
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        // Parse once the head is all there (or the buffer is as large as
        // a head may be), not after every byte.
        let complete = buf.windows(4).any(|w| w == b"\r\n\r\n")
            || buf.windows(2).any(|w| w == b"\n\n")
            || buf.len() > HeadLimits::DEFAULT.bytes;
        if complete {
            let mut scratch = Vec::new();
            match codec::parse_request(&buf, &ctx, &mut scratch) {
                Ok(Some(head)) => {
                    let mut lines = buf[..head.head_len]
                        .split(|&b| b == b'\n')
                        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                        .filter(|l| !l.is_empty());
                    let line = String::from_utf8_lossy(lines.next().unwrap_or(b"")).into_owned();
                    let fields = lines
                        .filter_map(|l| {
                            let l = String::from_utf8_lossy(l);
                            let (n, v) = l.split_once(':')?;
                            Some((n.trim().to_ascii_lowercase(), v.trim().to_string()))
                        })
                        .collect();
                    return Ok(Some((head, line, fields)));
                }
                Ok(None) => {}
                Err(e) => return Err(Answer::text(e.status, format!("{}\n", e.reason))),
            }
        }
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(timeout)?;
        conn.set_read_timeout(Some(left)).map_err(|_| timeout())?;
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return Err(timeout()),
        }
    }
}

/// What `head` (whose request line is `line`) asks for.
fn route(admin: &Admin, head: &codec::RequestHead, line: &str) -> Answer {
    let mut parts = line.split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let get = head.method == codec::Method::Get || head.method == codec::Method::Head;
    match (path, get, method) {
        ("/", true, _) => Answer::new(200, "text/html; charset=utf-8", html(admin)),
        ("/status", true, _) => Answer::new(200, "application/json", status_json(admin)),
        ("/metrics", true, _) => Answer::new(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(admin),
        ),
        ("/connections", true, _) => {
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(MAX_LIMIT);
            let mut out = String::new();
            write_connections(&mut out, &connections(admin, limit, ConnOrder::LastUse).0);
            Answer::new(200, "application/json", out)
        }
        ("/reload", _, "POST") => match (admin.reload)() {
            Ok(what) => Answer::text(200, format!("{what}\n")),
            Err(why) => Answer::text(409, format!("{why}\n")),
        },
        ("/" | "/status" | "/metrics" | "/connections", false, _) => {
            Answer::not_allowed("GET, HEAD")
        }
        ("/reload", _, _) => Answer::not_allowed("POST"),
        _ => Answer::text(404, "not found\n"),
    }
}

fn write_answer(conn: &mut TcpStream, a: &Answer, head_only: bool) -> std::io::Result<()> {
    let reason = crate::codec::reason_phrase(a.status);
    let allow = a
        .allow
        .map(|m| format!("Allow: {m}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n{allow}Connection: close\r\n\r\n",
        a.status,
        a.ctype,
        a.body.len()
    );
    conn.write_all(head.as_bytes())?;
    if !head_only {
        conn.write_all(&a.body)?;
    }
    conn.flush()?;
    // Read what the peer may still send (a POST body) before closing, so
    // the answer is not lost to a reset.
    let _ = conn.shutdown(std::net::Shutdown::Write);
    let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
    let mut sink = [0u8; 4096];
    while matches!(conn.read(&mut sink), Ok(n) if n > 0) {}
    Ok(())
}

/// What the board holds: every worker's snapshot with its restart count,
/// the retired workers' counters, and the refused reloads.
struct Snapshot {
    workers: Vec<(WorkerSnapshot, u64)>,
    retired: WorkerSnapshot,
    reload_failures: u64,
    scale_ups: u64,
    scale_downs: u64,
    certs: Vec<crate::tls::CertFacts>,
}

impl Snapshot {
    /// Every set of counters, live and retired.
    fn all(&self) -> impl Iterator<Item = &WorkerSnapshot> {
        self.workers.iter().map(|(w, _)| w).chain([&self.retired])
    }
}

fn snapshots(admin: &Admin) -> Snapshot {
    let board = admin.board.lock().unwrap_or_else(|e| e.into_inner());
    let workers = board
        .workers
        .iter()
        .enumerate()
        .map(|(i, slot)| {
            let s = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
            (s, board.restarts.get(i).copied().unwrap_or(0))
        })
        .collect();
    Snapshot {
        workers,
        retired: board.retired.clone(),
        reload_failures: board.reload_failures,
        scale_ups: board.scale_ups,
        scale_downs: board.scale_downs,
        certs: board.certs.clone(),
    }
}

/// How upstreams are told apart when merged.
#[derive(Clone, Copy, PartialEq, Eq)]
enum MergeBy {
    /// Stable id: one entry per address an upstream had (`/status`).
    Id,
    /// Configured name: one series per upstream however often its name
    /// resolved to a new address (`/metrics`, where a label set must be
    /// unique).
    Name,
}

/// One upstream over all workers: counts added up, histograms merged, the
/// latest use, and "up" if any worker takes requests to it.
fn merged_upstreams<'a>(
    sets: impl Iterator<Item = &'a WorkerSnapshot>,
    by: MergeBy,
) -> Vec<UpstreamFigures> {
    let mut merged: BTreeMap<(String, u32), UpstreamFigures> = BTreeMap::new();
    for w in sets {
        for u in &w.upstreams {
            let key = match by {
                MergeBy::Id => (String::new(), u.id),
                // A named backend's upstreams are told apart from the
                // default's (and each other's) by the backend's name.
                MergeBy::Name if u.backend == "default" || u.backend.is_empty() => {
                    (u.name.clone(), 0)
                }
                MergeBy::Name => (format!("{}/{}", u.backend, u.name), 0),
            };
            let Some(m) = merged.get_mut(&key) else {
                let mut first = u.clone();
                if by == MergeBy::Name {
                    first.name = key.0.clone();
                }
                merged.insert(key, first);
                continue;
            };
            if by == MergeBy::Name && u.id > m.id {
                // The newest address names the series' current one.
                m.id = u.id;
                m.addr = u.addr.clone();
                m.weight = u.weight;
            }
            m.active += u.active;
            m.idle += u.idle;
            m.connecting += u.connecting;
            m.queued += u.queued;
            m.inflight += u.inflight;
            m.idle_lost += u.idle_lost;
            m.served += u.served;
            m.failures += u.failures;
            m.response_time.merge(&u.response_time);
            m.last_use_ms = m.last_use_ms.max(u.last_use_ms);
            m.warmth = match (m.warmth, u.warmth) {
                ("warm", _) | (_, "warm") => "warm",
                ("warming", _) | (_, "warming") => "warming",
                _ => "cold",
            };
            m.state = match (m.state, u.state) {
                ("up", _) | (_, "up") => "up",
                ("draining", _) | (_, "draining") => "draining",
                _ => "down",
            };
        }
    }
    let mut out: Vec<UpstreamFigures> = merged.into_values().collect();
    out.sort_by_key(|u| u.id);
    out
}

/// Ask every worker for at most `limit` of its connections in `order`;
/// the first `limit` of them all, and how many are open. A table built
/// less than [`TABLE_TTL`] ago for the same order and limit answers
/// instead (one builder at a time: others wait for its answer).
fn connections(admin: &Admin, limit: usize, order: ConnOrder) -> (Vec<ConnInfo>, usize) {
    let mut tables = admin.tables.lock().unwrap_or_else(|e| e.into_inner());
    let now = Instant::now();
    tables.retain(|t| now.duration_since(t.at) < TABLE_TTL);
    if let Some(t) = tables.iter().find(|t| t.order == order && t.limit == limit) {
        return t.built.clone();
    }
    let built = ask_workers(admin, limit, order);
    tables.push(Table {
        order,
        limit,
        at: Instant::now(),
        built: built.clone(),
    });
    built
}

/// [`connections`], asked of the workers now.
fn ask_workers(admin: &Admin, limit: usize, order: ConnOrder) -> (Vec<ConnInfo>, usize) {
    let mailboxes: Vec<Mailbox> = admin
        .mailboxes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
        .cloned()
        .collect();
    let until = Instant::now() + WORKER_TIMEOUT;
    let mut replies = Vec::new();
    for m in mailboxes {
        let (tx, rx) = mpsc::channel();
        let ask = Command::Connections {
            limit,
            order,
            until,
            reply: tx,
        };
        if m.send(ask).is_ok() {
            replies.push(rx);
        }
    }
    let mut all = Vec::new();
    let mut total = 0;
    for rx in replies {
        let left = until.saturating_duration_since(Instant::now());
        if let Ok((list, open)) = rx.recv_timeout(left) {
            all.extend(list);
            total += open;
        }
    }
    match order {
        ConnOrder::LastUse => all.sort_by_key(|c| c.last_use_ms),
        ConnOrder::Busiest => all.sort_by_key(|c| std::cmp::Reverse(c.busy_ms)),
    }
    all.truncate(limit);
    (all, total)
}

fn write_histogram_json(out: &mut String, h: &Histogram) {
    let _ = write!(
        out,
        "{{\"count\":{},\"sum_seconds\":{:.6},\"buckets\":[",
        h.count(),
        h.sum_us as f64 / 1e6
    );
    for (i, c) in h.counts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match BUCKETS.get(i) {
            Some(le) => {
                let _ = write!(out, "{{\"le\":{le},\"count\":{c}}}");
            }
            None => {
                let _ = write!(out, "{{\"le\":\"+Inf\",\"count\":{c}}}");
            }
        }
    }
    out.push_str("]}");
}

fn js(out: &mut String, s: &str) {
    let mut b = Vec::new();
    json_string(&mut b, s);
    out.push_str(&String::from_utf8_lossy(&b));
}

fn opt_u64(v: Option<u64>) -> String {
    v.map_or_else(|| "null".to_string(), |n| n.to_string())
}

fn write_connections(out: &mut String, conns: &[ConnInfo]) {
    out.push('[');
    for (i, c) in conns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"worker\":{},\"peer\":", c.worker);
        js(out, &c.peer);
        let _ = write!(
            out,
            ",\"state\":\"{}\",\"protocol\":\"{}\",\"requests\":{},\"connected_ms\":{},\"last_use_ms\":{},\"busy_ms\":{},\"upstream\":",
            c.state,
            c.protocol,
            c.requests,
            c.connected_ms,
            c.last_use_ms,
            opt_u64(c.busy_ms)
        );
        match &c.upstream {
            Some(u) => js(out, u),
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push(']');
}

fn status_json(admin: &Admin) -> String {
    let snap = snapshots(admin);
    let reload_failures = snap.reload_failures;
    let upstreams = merged_upstreams(snap.all(), MergeBy::Id);
    let (conns, total) = connections(admin, STATUS_CONNECTIONS, ConnOrder::LastUse);
    let mut out = String::with_capacity(4096);
    out.push_str("{\"workers\":[");
    let mut totals = crate::metrics::Figures::default();
    for w in snap.all() {
        totals.add(&w.figures);
    }
    for (i, (w, restarts)) in snap.workers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = &w.figures;
        let _ = write!(
            out,
            "{{\"index\":{i},\"state\":\"{}\",\"clients\":{},\"upstream_connections\":{},\"waiting\":{},\"requests\":{},\"responses\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"accepted\":{},\"completions\":{},\"enters\":{},\"submissions\":{},\"busy\":{:.3},\"restarts\":{restarts},\"published_ms\":{}}}",
            w.state,
            w.clients,
            w.upstream_conns,
            w.waiting,
            f.requests,
            f.responses[0],
            f.responses[1],
            f.responses[2],
            f.responses[3],
            f.responses[4],
            f.accepted,
            w.completions,
            w.enters,
            w.submissions,
            w.busy,
            w.at_ms
        );
    }
    out.push_str("],\"upstreams\":[");
    for (i, u) in upstreams.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":{},\"name\":", u.id);
        js(&mut out, &u.name);
        out.push_str(",\"backend\":");
        js(&mut out, &u.backend);
        let _ = write!(
            out,
            ",\"address\":\"{}\",\"state\":\"{}\",\"warmth\":\"{}\",\"weight\":{},\"active\":{},\"idle\":{},\"connecting\":{},\"queued\":{},\"inflight\":{},\"idle_closed\":{},\"requests\":{},\"failures\":{},\"last_use_ms\":{},\"response_time\":",
            u.addr,
            u.state,
            u.warmth,
            u.weight,
            u.active,
            u.idle,
            u.connecting,
            u.queued,
            u.inflight,
            u.idle_lost,
            u.served,
            u.failures,
            opt_u64(u.last_use_ms)
        );
        write_histogram_json(&mut out, &u.response_time);
        out.push('}');
    }
    let r = &totals.responses;
    let _ = write!(
        out,
        "],\"totals\":{{\"requests\":{},\"responses\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"aborted\":{},\"queue_full\":{},\"queue_timeouts\":{},\"reload_failures\":{reload_failures},\"scale_ups\":{},\"scale_downs\":{},\"request_duration\":",
        totals.requests,
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        totals.aborted,
        totals.queue_full,
        totals.queue_timeouts,
        snap.scale_ups,
        snap.scale_downs
    );
    write_histogram_json(&mut out, &totals.request_duration);
    out.push_str(",\"queue_wait\":");
    write_histogram_json(&mut out, &totals.queue_wait);
    out.push('}'); // the totals
    for (key, tallies) in [("routes", &totals.routes), ("backends", &totals.backends)] {
        let _ = write!(out, ",\"{key}\":[");
        for (i, (name, t)) in tallies.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"name\":");
            js(&mut out, name);
            let r = &t.responses;
            let _ = write!(
                out,
                ",\"requests\":{},\"responses\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"duration\":",
                t.requests, r[0], r[1], r[2], r[3], r[4]
            );
            write_histogram_json(&mut out, &t.duration);
        }
        out.push(']');
    }
    tls_json(&mut out, &totals.tls, &snap.certs);
    let _ = write!(out, ",\"connections_open\":{total},\"connections\":");
    write_connections(&mut out, &conns);
    out.push_str("}\n");
    out
}

/// The status page's `tls`: handshakes (by version), resumptions and
/// failures (by reason) on each side, and each certificate's names and
/// days to expiry.
fn tls_json(out: &mut String, t: &crate::metrics::TlsFigures, certs: &[crate::tls::CertFacts]) {
    let counts = |out: &mut String, map: &std::collections::BTreeMap<&'static str, u64>| {
        out.push('{');
        for (i, (k, n)) in map.iter().enumerate() {
            let _ = write!(out, "{}\"{k}\":{n}", if i > 0 { "," } else { "" });
        }
        out.push('}');
    };
    let _ = write!(
        out,
        ",\"tls\":{{\"handshakes\":{},\"resumed\":{},\"versions\":",
        t.handshakes, t.resumed
    );
    counts(out, &t.versions);
    out.push_str(",\"failures\":");
    counts(out, &t.failures);
    let _ = write!(
        out,
        ",\"upstream\":{{\"handshakes\":{},\"resumed\":{},\"failures\":",
        t.upstream_handshakes, t.upstream_resumed
    );
    counts(out, &t.upstream_failures);
    out.push_str("},\"certificates\":[");
    let now = (unix_ms() / 1000) as i64;
    for (i, c) in certs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"path\":");
        js(out, &c.path);
        out.push_str(",\"names\":[");
        for (j, n) in c.names.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            js(out, n);
        }
        let _ = write!(
            out,
            "],\"days_left\":{}}}",
            (c.not_after - now).div_euclid(86_400)
        );
    }
    out.push_str("]}");
}

/// A label value, escaped as the exposition format wants.
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let sep = if labels.is_empty() { "" } else { "," };
    let mut acc = 0;
    for (i, c) in h.counts.iter().enumerate() {
        acc += c;
        let le = BUCKETS.get(i).map_or("+Inf".to_string(), |b| b.to_string());
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{le}\"}} {acc}");
    }
    let braces = if labels.is_empty() {
        String::new()
    } else {
        format!("{{{labels}}}")
    };
    let _ = writeln!(out, "{name}_sum{braces} {:.6}", h.sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{braces} {acc}");
}

fn metrics_text(admin: &Admin) -> String {
    let snap = snapshots(admin);
    let upstreams = merged_upstreams(snap.all(), MergeBy::Name);
    let t = Totals::of(&snap);
    let mut out = String::with_capacity(8192);
    request_families(&mut out, &t.figures, &upstreams);
    routing_families(&mut out, &t.figures);
    tls_families(&mut out, &t.figures.tls, &snap.certs);
    h2_families(&mut out, &t.figures.h2);
    upstream_tls_families(&mut out, &t.figures.tls);
    upstream_families(&mut out, &upstreams);
    for (name, kind, help, v) in [
        (
            names::ACCEPTED,
            "counter",
            "Client connections accepted.",
            t.figures.accepted,
        ),
        (
            names::CLIENTS,
            "gauge",
            "Client connections open.",
            t.clients,
        ),
        (
            names::ACCEPT_ERRORS,
            "counter",
            "Accepts that failed (out of file descriptors, most likely); accepting pauses, it does not spin.",
            t.figures.accept_errors,
        ),
        (
            names::REFUSED,
            "counter",
            "Client connections closed at once because a worker was at --max-connections.",
            t.figures.refused,
        ),
        (
            names::PROXY_ERRORS,
            "counter",
            "Client connections closed because their PROXY protocol header was missing, malformed or late.",
            t.figures.proxy_errors,
        ),
        (
            names::PANIC_PLACEMENTS,
            "counter",
            "Requests placed while fewer upstreams than --panic-threshold were up (chosen from all of them).",
            t.figures.panic_placements,
        ),
        (
            names::HANDED_OVER,
            "counter",
            "Idle client connections a retiring worker handed to another worker.",
            t.figures.handed_over,
        ),
        (
            names::QUEUED,
            "gauge",
            "Exchanges waiting for an upstream connection.",
            t.waiting,
        ),
        (
            names::STRAY_CLOSES,
            "counter",
            "Upstream connections closed because bytes came nobody asked for.",
            t.figures.stray_closes,
        ),
        (
            names::UPSTREAM_OPENED,
            "counter",
            "Upstream connections opened.",
            t.figures.upstream_opened,
        ),
        (
            names::UPSTREAM_H2_STREAMS,
            "counter",
            "Streams opened on HTTP/2 connections to origins.",
            t.figures.upstream_h2_streams,
        ),
        (
            names::UPSTREAM_H2_REFUSED,
            "counter",
            "Streams HTTP/2 origins refused unprocessed (sent again).",
            t.figures.upstream_h2_refused,
        ),
        (
            names::RESENT,
            "counter",
            "Requests sent again because the one ahead of them was late.",
            t.figures.resent,
        ),
        (
            names::COMPLETIONS,
            "counter",
            "Ring completions reaped.",
            t.completions,
        ),
        (names::ENTERS, "counter", "io_uring_enter calls.", t.enters),
        (
            names::SENDS,
            "counter",
            "Sends submitted, to clients and to origins.",
            t.sends,
        ),
        (
            names::QUIET_FAILURES,
            "counter",
            "Closes and cancels that failed.",
            t.quiet_failures,
        ),
        (
            names::EBADF,
            "counter",
            "Ring operations other than a close that found their fd closed (a bug if not 0).",
            t.ebadf,
        ),
        (
            names::ABORTED,
            "counter",
            "Requests whose connection closed before any of their answer was written.",
            t.figures.aborted,
        ),
        (
            names::LOG_DROPPED,
            "counter",
            "Access log lines dropped because the logger fell behind.",
            t.figures.log_dropped,
        ),
        (
            names::RELOAD_FAILURES,
            "counter",
            "Reloads refused.",
            snap.reload_failures,
        ),
        (
            names::SCALE_UPS,
            "counter",
            "Workers added because every worker was busy.",
            snap.scale_ups,
        ),
        (
            names::SCALE_DOWNS,
            "counter",
            "Workers retired because all were quiet.figures.",
            snap.scale_downs,
        ),
        (
            names::WORKERS,
            "gauge",
            "Workers running (not starting, draining or stopped).",
            snap.workers.iter().filter(|(w, _)| w.state == "running").count() as u64,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        names::QUEUE_REJECTED,
        "counter",
        "Requests answered 503 by the waiting list, by reason.",
    );
    let f = &t.figures;
    for (reason, n) in [("full", f.queue_full), ("timeout", f.queue_timeouts)] {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {n}", names::QUEUE_REJECTED);
    }
    per_upstream(
        &mut out,
        (names::UPSTREAM_INFLIGHT, "gauge"),
        "Exchanges on an upstream's connections now.",
        &upstreams,
        |u| u.inflight as u64,
    );
    per_upstream(
        &mut out,
        (names::UPSTREAM_IDLE_LOST, "counter"),
        "Idle connections the upstream closed before their time.",
        &upstreams,
        |u| u.idle_lost,
    );
    worker_families(&mut out, &snap.workers);
    out
}

/// The workers' figures added up.
struct Totals {
    figures: crate::metrics::Figures,
    clients: u64,
    completions: u64,
    enters: u64,
    sends: u64,
    quiet_failures: u64,
    ebadf: u64,
    waiting: u64,
}

impl Totals {
    fn of(snap: &Snapshot) -> Totals {
        let mut t = Totals {
            figures: crate::metrics::Figures::default(),
            clients: 0,
            completions: 0,
            enters: 0,
            sends: 0,
            quiet_failures: 0,
            ebadf: 0,
            waiting: 0,
        };
        for w in snap.all() {
            t.figures.add(&w.figures);
            t.clients += w.clients as u64;
            t.completions += w.completions;
            t.enters += w.enters;
            t.sends += w.sends;
            t.quiet_failures += w.quiet_failures;
            t.ebadf += w.ebadf;
            t.waiting += w.waiting as u64;
        }
        t
    }
}

/// Requests, responses and the time they took.
fn request_families(out: &mut String, t: &crate::metrics::Figures, upstreams: &[UpstreamFigures]) {
    family(out, names::REQUESTS, "counter", "Requests answered.");
    let _ = writeln!(out, "{} {}", names::REQUESTS, t.requests);
    family(
        out,
        names::RESPONSES,
        "counter",
        "Responses sent to clients, by status class.",
    );
    for (i, n) in t.responses.iter().enumerate() {
        let _ = writeln!(out, "{}{{class=\"{}xx\"}} {n}", names::RESPONSES, i + 1);
    }
    family(
        out,
        names::REQUEST_DURATION,
        "histogram",
        "Time from a request head to the end of its response.",
    );
    histogram(out, names::REQUEST_DURATION, "", &t.request_duration);
    family(
        out,
        names::QUEUE_WAIT,
        "histogram",
        "Time an exchange waited for an upstream connection.",
    );
    histogram(out, names::QUEUE_WAIT, "", &t.queue_wait);
    family(
        out,
        names::UPSTREAM_RESPONSE,
        "histogram",
        "Time from a request on the wire to the first response byte.",
    );
    for u in upstreams {
        let l = format!("upstream=\"{}\"", label(&u.name));
        histogram(out, names::UPSTREAM_RESPONSE, &l, &u.response_time);
    }
}

/// HTTP/2 connections, streams, and the limits hit by kind (only once a
/// client spoke HTTP/2).
fn h2_families(out: &mut String, h: &crate::h2::session::H2Totals) {
    if h.connections == 0 {
        return;
    }
    family(
        out,
        names::H2_CONNECTIONS,
        "counter",
        "HTTP/2 connections begun.",
    );
    let _ = writeln!(out, "{} {}", names::H2_CONNECTIONS, h.connections);
    family(
        out,
        names::H2_STREAMS,
        "counter",
        "HTTP/2 streams that carried a request.",
    );
    let _ = writeln!(out, "{} {}", names::H2_STREAMS, h.streams);
    family(
        out,
        names::H2_LIMITS,
        "counter",
        "HTTP/2 limits hit (each closes the connection with GOAWAY, but refused_stream and header_list_too_large), by kind.",
    );
    for (kind, n) in h.limits.by_kind() {
        let _ = writeln!(out, "{}{{limit=\"{kind}\"}} {n}", names::H2_LIMITS);
    }
}

/// TLS handshakes by version, resumptions, failures by reason, and each
/// certificate's time left (only with TLS listeners).
fn tls_families(out: &mut String, t: &crate::metrics::TlsFigures, certs: &[crate::tls::CertFacts]) {
    if certs.is_empty() && t.handshakes == 0 {
        return;
    }
    family(
        out,
        names::TLS_HANDSHAKES,
        "counter",
        "TLS handshakes completed, by protocol version.",
    );
    for (version, n) in &t.versions {
        let _ = writeln!(
            out,
            "{}{{version=\"{version}\"}} {n}",
            names::TLS_HANDSHAKES
        );
    }
    family(
        out,
        names::TLS_RESUMED,
        "counter",
        "TLS handshakes that resumed a session.",
    );
    let _ = writeln!(out, "{} {}", names::TLS_RESUMED, t.resumed);
    family(
        out,
        names::TLS_FAILURES,
        "counter",
        "TLS connections that failed, by reason.",
    );
    for (reason, n) in &t.failures {
        let _ = writeln!(out, "{}{{reason=\"{reason}\"}} {n}", names::TLS_FAILURES);
    }
    family(
        out,
        names::TLS_CERT_EXPIRY,
        "gauge",
        "Seconds until a certificate expires.",
    );
    let now = (unix_ms() / 1000) as i64;
    for c in certs {
        let _ = writeln!(
            out,
            "{}{{certificate=\"{}\"}} {}",
            names::TLS_CERT_EXPIRY,
            label(&c.path),
            c.not_after - now
        );
    }
}

/// TLS to origins: handshakes, resumptions, failures by reason (once there
/// has been any).
fn upstream_tls_families(out: &mut String, t: &crate::metrics::TlsFigures) {
    if t.upstream_handshakes == 0 && t.upstream_failures.is_empty() {
        return;
    }
    family(
        out,
        names::UPSTREAM_TLS_HANDSHAKES,
        "counter",
        "TLS handshakes with origins completed.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        names::UPSTREAM_TLS_HANDSHAKES,
        t.upstream_handshakes
    );
    family(
        out,
        names::UPSTREAM_TLS_RESUMED,
        "counter",
        "TLS handshakes with origins that resumed a session.",
    );
    let _ = writeln!(
        out,
        "{} {}",
        names::UPSTREAM_TLS_RESUMED,
        t.upstream_resumed
    );
    family(
        out,
        names::UPSTREAM_TLS_FAILURES,
        "counter",
        "Connections to origins whose TLS failed, by reason.",
    );
    for (reason, n) in &t.upstream_failures {
        let _ = writeln!(
            out,
            "{}{{reason=\"{reason}\"}} {n}",
            names::UPSTREAM_TLS_FAILURES
        );
    }
}

/// Requests per route and per backend, by status class, and each
/// backend's request durations (only with routes configured).
fn routing_families(out: &mut String, t: &crate::metrics::Figures) {
    for (name, kind, tallies) in [
        (names::ROUTE_REQUESTS, "route", &t.routes),
        (names::BACKEND_REQUESTS, "backend", &t.backends),
    ] {
        if tallies.is_empty() {
            continue;
        }
        family(
            out,
            name,
            "counter",
            &format!("Requests by {kind} and status class."),
        );
        for (label_value, tally) in tallies {
            for (i, n) in tally.responses.iter().enumerate() {
                let _ = writeln!(
                    out,
                    "{name}{{{kind}=\"{}\",class=\"{}xx\"}} {n}",
                    label(label_value),
                    i + 1
                );
            }
        }
    }
    if !t.backends.is_empty() {
        family(
            out,
            names::BACKEND_DURATION,
            "histogram",
            "Time from a request head to the end of its response, by backend.",
        );
        for (name, tally) in &t.backends {
            let l = format!("backend=\"{}\"", label(name));
            histogram(out, names::BACKEND_DURATION, &l, &tally.duration);
        }
    }
}

/// Each upstream's exchanges, failures, state and connections.
fn upstream_families(out: &mut String, upstreams: &[UpstreamFigures]) {
    per_upstream(
        out,
        (names::UPSTREAM_REQUESTS, "counter"),
        "Exchanges an upstream completed.",
        upstreams,
        |u| u.served,
    );
    per_upstream(
        out,
        (names::UPSTREAM_FAILURES, "counter"),
        "Connects to an upstream that failed.",
        upstreams,
        |u| u.failures,
    );
    per_upstream(
        out,
        (names::UPSTREAM_UP, "gauge"),
        "Whether an upstream takes requests (1) or not (0).",
        upstreams,
        |u| u64::from(u.state == "up"),
    );
    family(
        out,
        names::UPSTREAM_CONNECTIONS,
        "gauge",
        "Upstream connections, by state.",
    );
    for u in upstreams {
        for (state, n) in [
            ("active", u.active),
            ("idle", u.idle),
            ("connecting", u.connecting),
        ] {
            let _ = writeln!(
                out,
                "{}{{upstream=\"{}\",state=\"{state}\"}} {n}",
                names::UPSTREAM_CONNECTIONS,
                label(&u.name)
            );
        }
    }
}

/// One family with a line per upstream: `value` of each.
fn per_upstream(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    upstreams: &[UpstreamFigures],
    value: impl Fn(&UpstreamFigures) -> u64,
) {
    family(out, name, kind, help);
    for u in upstreams {
        let _ = writeln!(
            out,
            "{name}{{upstream=\"{}\"}} {}",
            label(&u.name),
            value(u)
        );
    }
}

/// Each worker's busy fraction and restarts.
fn worker_families(out: &mut String, workers: &[(WorkerSnapshot, u64)]) {
    family(
        out,
        names::BUSY,
        "gauge",
        "Fraction of the last tick a worker spent outside its ring wait.",
    );
    for (i, (w, _)) in workers.iter().enumerate() {
        let _ = writeln!(out, "{}{{worker=\"{i}\"}} {:.3}", names::BUSY, w.busy);
    }
    family(out, names::RESTARTS, "counter", "Worker restarts.");
    for (i, (_, r)) in workers.iter().enumerate() {
        let _ = writeln!(out, "{}{{worker=\"{i}\"}} {r}", names::RESTARTS);
    }
}

/// Now, in milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Text for HTML.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn ms_ago(now_ms: u64, at: Option<u64>) -> String {
    match at {
        Some(t) => format!("{:.1} s ago", now_ms.saturating_sub(t) as f64 / 1000.0),
        None => "never".into(),
    }
}

fn quantile_ms(h: &Histogram, q: f64) -> String {
    match h.quantile(q) {
        Some(s) if s.is_finite() => format!("≤ {} ms", s * 1000.0),
        Some(_) => "> 10 s".into(),
        None => "–".into(),
    }
}

fn html(admin: &Admin) -> String {
    let snap = snapshots(admin);
    let workers = &snap.workers;
    let upstreams = merged_upstreams(snap.all(), MergeBy::Id);
    let (busiest, _) = connections(admin, BUSIEST_SHOWN, ConnOrder::Busiest);
    let now_ms = unix_ms();
    let mut o = String::with_capacity(8192);
    o.push_str(
        "<!doctype html><html><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"2\">\
         <title>ringmux status</title><style>\
         body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}\
         h1{font-size:20px}h2{font-size:16px;margin-top:28px}\
         table{border-collapse:collapse;min-width:60%}th,td{padding:4px 10px;border-bottom:1px solid #ddd;text-align:right}\
         th:first-child,td:first-child{text-align:left}th{background:#f4f4f4}\
         .up{color:#1a7f37}.down{color:#cf222e}.draining{color:#9a6700}small{color:#666}\
         </style></head><body><h1>ringmux</h1>",
    );
    let _ = write!(
        o,
        "<small>refreshes every 2 s · {} worker(s)</small>",
        workers.len()
    );
    o.push_str("<h2>Workers</h2><table><tr><th>worker</th><th>state</th><th>busy</th><th>clients</th><th>upstream conns</th><th>waiting</th><th>requests</th><th>2xx</th><th>4xx</th><th>5xx</th><th>restarts</th></tr>");
    for (i, (w, r)) in workers.iter().enumerate() {
        let f = &w.figures;
        let _ = write!(
            o,
            "<tr><td>{i}</td><td>{}</td><td>{:.0}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{r}</td></tr>",
            w.state,
            w.busy * 100.0,
            w.clients,
            w.upstream_conns,
            w.waiting,
            f.requests,
            f.responses[1],
            f.responses[3],
            f.responses[4]
        );
    }
    o.push_str("</table><h2>Upstreams</h2><table><tr><th>upstream</th><th>backend</th><th>address</th><th>state</th><th>warmth</th><th>weight</th><th>active</th><th>idle</th><th>queued</th><th>requests</th><th>failures</th><th>p50</th><th>p99</th><th>last use</th></tr>");
    for u in &upstreams {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.name),
            esc(&u.backend),
            esc(&u.addr),
            u.state,
            u.state,
            u.warmth,
            u.weight,
            u.active,
            u.idle,
            u.queued,
            u.served,
            u.failures,
            quantile_ms(&u.response_time, 0.5),
            quantile_ms(&u.response_time, 0.99),
            ms_ago(now_ms, u.last_use_ms)
        );
    }
    let mut totals = crate::metrics::Figures::default();
    for w in snap.all() {
        totals.add(&w.figures);
    }
    for (title, tallies) in [("Routes", &totals.routes), ("Backends", &totals.backends)] {
        if tallies.is_empty() {
            continue;
        }
        let _ = write!(o, "</table><h2>{title}</h2><table><tr><th>name</th><th>requests</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th><th>p50</th><th>p99</th></tr>");
        for (name, t) in tallies {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name),
                t.requests,
                t.responses[1],
                t.responses[2],
                t.responses[3],
                t.responses[4],
                quantile_ms(&t.duration, 0.5),
                quantile_ms(&t.duration, 0.99)
            );
        }
    }
    o.push_str("</table><h2>Busiest connections</h2><table><tr><th>client</th><th>worker</th><th>state</th><th>in progress</th><th>requests</th><th>upstream</th><th>connected</th></tr>");
    if busiest.is_empty() {
        o.push_str("<tr><td colspan=\"7\"><small>no exchange in progress</small></td></tr>");
    }
    for c in &busiest {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&c.peer),
            c.worker,
            c.state,
            c.busy_ms.unwrap_or(0),
            c.requests,
            esc(c.upstream.as_deref().unwrap_or("–")),
            ms_ago(now_ms, Some(c.connected_ms))
        );
    }
    o.push_str("</table></body></html>\n");
    o
}
