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

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::access_log::json_string;
use crate::codec::{self, ForwardCtx, HeadLimits};
use crate::control::{Command, Mailbox};
use crate::metrics::{names, Board, ConnInfo, Histogram, UpstreamFigures, WorkerSnapshot, BUCKETS};

/// How long a client of the admin port may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker may take to list its connections.
const WORKER_TIMEOUT: Duration = Duration::from_secs(1);
/// Admin connections served at once; more get a 503.
const MAX_OPEN: usize = 8;
const BUSY: &[u8] =
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
/// The most connections one answer lists.
const MAX_LIMIT: usize = 100_000;

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
            for mut conn in listener.incoming().flatten() {
                if open.fetch_add(1, Ordering::AcqRel) >= MAX_OPEN {
                    open.fetch_sub(1, Ordering::AcqRel);
                    let _ = conn.write_all(BUSY);
                    continue;
                }
                let (admin, held) = (admin.clone(), Arc::clone(&open));
                let spawned = std::thread::Builder::new()
                    .name("ringmux-admin-conn".into())
                    .spawn(move || {
                        let _ = serve(conn, &admin);
                        held.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    // The closure (and its decrement) never ran.
                    open.fetch_sub(1, Ordering::AcqRel);
                }
            }
        })?;
    Ok((bound, handle))
}

fn serve(mut conn: TcpStream, admin: &Admin) -> std::io::Result<()> {
    conn.set_read_timeout(Some(READ_TIMEOUT))?;
    conn.set_write_timeout(Some(READ_TIMEOUT))?;
    let peer = conn.peer_addr()?;
    let ctx = ForwardCtx {
        client: peer.ip(),
        proto: "http",
        limits: HeadLimits::DEFAULT,
        via: None,
    };
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let (head, head_len) = loop {
        let mut scratch = Vec::new();
        match codec::parse_request(&buf, &ctx, &mut scratch) {
            Ok(Some(head)) => break (head, head.head_len),
            Ok(None) => {}
            Err(e) => return respond(&mut conn, e.status, "text/plain", e.reason.as_bytes()),
        }
        match conn.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => return respond(&mut conn, 408, "text/plain", b"request header timeout"),
        }
    };
    let line = buf[..head_len]
        .split(|&b| b == b'\r')
        .find(|l| !l.is_empty() && l != b"\n")
        .unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    let mut parts = line.trim_start_matches('\n').split(' ');
    let method = parts.next().unwrap_or("");
    let target = parts.next().unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let get = head.method == codec::Method::Get || head.method == codec::Method::Head;
    match (path, get, method) {
        ("/", true, _) => respond(
            &mut conn,
            200,
            "text/html; charset=utf-8",
            html(admin).as_bytes(),
        ),
        ("/status", true, _) => respond(
            &mut conn,
            200,
            "application/json",
            status_json(admin).as_bytes(),
        ),
        ("/metrics", true, _) => respond(
            &mut conn,
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            metrics_text(admin).as_bytes(),
        ),
        ("/connections", true, _) => {
            let limit = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("limit="))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(100)
                .min(MAX_LIMIT);
            let mut out = String::new();
            write_connections(&mut out, &connections(admin, limit));
            respond(&mut conn, 200, "application/json", out.as_bytes())
        }
        ("/reload", _, "POST") => match (admin.reload)() {
            Ok(what) => respond(&mut conn, 200, "text/plain", format!("{what}\n").as_bytes()),
            Err(why) => respond(&mut conn, 409, "text/plain", format!("{why}\n").as_bytes()),
        },
        ("/" | "/status" | "/metrics" | "/connections", false, _) => {
            respond_allow(&mut conn, "GET, HEAD")
        }
        ("/reload", _, _) => respond_allow(&mut conn, "POST"),
        _ => respond(&mut conn, 404, "text/plain", b"not found\n"),
    }
}

fn respond(conn: &mut TcpStream, status: u16, ctype: &str, body: &[u8]) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        _ if status >= 500 => "Error",
        _ => "Bad Request",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

fn respond_allow(conn: &mut TcpStream, allow: &str) -> std::io::Result<()> {
    let body = b"method not allowed\n";
    let head = format!(
        "HTTP/1.1 405 Method Not Allowed\r\nAllow: {allow}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)
}

/// Every worker's snapshot, with its restart count.
fn snapshots(admin: &Admin) -> (Vec<(WorkerSnapshot, u64)>, u64) {
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
    (workers, board.reload_failures)
}

/// One upstream over all workers: counts added up, histograms merged, the
/// latest use, and "up" if any worker takes requests to it.
fn merged_upstreams(workers: &[(WorkerSnapshot, u64)]) -> Vec<UpstreamFigures> {
    let mut by_id: BTreeMap<u32, UpstreamFigures> = BTreeMap::new();
    for (w, _) in workers {
        for u in &w.upstreams {
            let Some(m) = by_id.get_mut(&u.id) else {
                by_id.insert(u.id, u.clone());
                continue;
            };
            m.active += u.active;
            m.idle += u.idle;
            m.connecting += u.connecting;
            m.queued += u.queued;
            m.served += u.served;
            m.failures += u.failures;
            m.response_time.merge(&u.response_time);
            m.last_use_ms = m.last_use_ms.max(u.last_use_ms);
            m.state = match (m.state, u.state) {
                ("up", _) | (_, "up") => "up",
                ("draining", _) | (_, "draining") => "draining",
                _ => "down",
            };
        }
    }
    by_id.into_values().collect()
}

/// Ask every worker for its connections; least recently used first.
fn connections(admin: &Admin, limit: usize) -> Vec<ConnInfo> {
    let mailboxes: Vec<Mailbox> = admin
        .mailboxes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .flatten()
        .cloned()
        .collect();
    let mut replies = Vec::new();
    for m in mailboxes {
        let (tx, rx) = mpsc::channel();
        if m.send(Command::Connections { limit, reply: tx }).is_ok() {
            replies.push(rx);
        }
    }
    let mut all: Vec<ConnInfo> = replies
        .into_iter()
        .filter_map(|rx| rx.recv_timeout(WORKER_TIMEOUT).ok())
        .flatten()
        .collect();
    all.sort_by_key(|c| c.last_use_ms);
    all.truncate(limit);
    all
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
            ",\"state\":\"{}\",\"requests\":{},\"connected_ms\":{},\"last_use_ms\":{},\"busy_ms\":{},\"upstream\":",
            c.state,
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
    let (workers, reload_failures) = snapshots(admin);
    let upstreams = merged_upstreams(&workers);
    let conns = connections(admin, MAX_LIMIT);
    let mut out = String::with_capacity(4096);
    out.push_str("{\"workers\":[");
    let mut totals = crate::metrics::Figures::default();
    for (i, (w, restarts)) in workers.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let f = &w.figures;
        let _ = write!(
            out,
            "{{\"index\":{i},\"state\":\"{}\",\"clients\":{},\"upstream_connections\":{},\"waiting\":{},\"requests\":{},\"responses\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"accepted\":{},\"completions\":{},\"submissions\":{},\"sends\":{},\"busy\":{:.3},\"restarts\":{restarts},\"published_ms\":{}}}",
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
            w.sends,
            w.busy,
            w.at_ms
        );
        totals.requests += f.requests;
        for (t, r) in totals.responses.iter_mut().zip(f.responses) {
            *t += r;
        }
        totals.request_duration.merge(&f.request_duration);
        totals.queue_wait.merge(&f.queue_wait);
    }
    out.push_str("],\"upstreams\":[");
    for (i, u) in upstreams.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{{\"id\":{},\"name\":", u.id);
        js(&mut out, &u.name);
        let _ = write!(
            out,
            ",\"address\":\"{}\",\"state\":\"{}\",\"weight\":{},\"active\":{},\"idle\":{},\"connecting\":{},\"queued\":{},\"requests\":{},\"failures\":{},\"last_use_ms\":{},\"response_time\":",
            u.addr,
            u.state,
            u.weight,
            u.active,
            u.idle,
            u.connecting,
            u.queued,
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
        "],\"totals\":{{\"requests\":{},\"responses\":{{\"1xx\":{},\"2xx\":{},\"3xx\":{},\"4xx\":{},\"5xx\":{}}},\"reload_failures\":{reload_failures},\"request_duration\":",
        totals.requests, r[0], r[1], r[2], r[3], r[4]
    );
    write_histogram_json(&mut out, &totals.request_duration);
    out.push_str(",\"queue_wait\":");
    write_histogram_json(&mut out, &totals.queue_wait);
    out.push_str("},\"connections\":");
    write_connections(&mut out, &conns);
    out.push_str("}\n");
    out
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
    let (workers, reload_failures) = snapshots(admin);
    let upstreams = merged_upstreams(&workers);
    let mut t = crate::metrics::Figures::default();
    let (mut clients, mut completions, mut enters, mut quiet, mut waiting) = (0, 0, 0, 0, 0);
    for (w, _) in &workers {
        let f = &w.figures;
        t.requests += f.requests;
        for (a, b) in t.responses.iter_mut().zip(f.responses) {
            *a += b;
        }
        t.request_duration.merge(&f.request_duration);
        t.queue_wait.merge(&f.queue_wait);
        t.accepted += f.accepted;
        t.stray_closes += f.stray_closes;
        t.resent += f.resent;
        t.log_dropped += f.log_dropped;
        clients += w.clients;
        completions += w.completions;
        enters += w.enters;
        quiet += w.quiet_failures;
        waiting += w.waiting;
    }
    let mut out = String::with_capacity(8192);
    family(&mut out, names::REQUESTS, "counter", "Requests answered.");
    let _ = writeln!(out, "{} {}", names::REQUESTS, t.requests);
    family(
        &mut out,
        names::RESPONSES,
        "counter",
        "Responses sent to clients, by status class.",
    );
    for (i, n) in t.responses.iter().enumerate() {
        let _ = writeln!(out, "{}{{class=\"{}xx\"}} {n}", names::RESPONSES, i + 1);
    }
    family(
        &mut out,
        names::REQUEST_DURATION,
        "histogram",
        "Time from a request head to the end of its response.",
    );
    histogram(&mut out, names::REQUEST_DURATION, "", &t.request_duration);
    family(
        &mut out,
        names::QUEUE_WAIT,
        "histogram",
        "Time an exchange waited for an upstream connection.",
    );
    histogram(&mut out, names::QUEUE_WAIT, "", &t.queue_wait);
    family(
        &mut out,
        names::UPSTREAM_RESPONSE,
        "histogram",
        "Time from a request on the wire to the first response byte.",
    );
    for u in &upstreams {
        let l = format!("upstream=\"{}\"", label(&u.name));
        histogram(&mut out, names::UPSTREAM_RESPONSE, &l, &u.response_time);
    }
    family(
        &mut out,
        names::UPSTREAM_REQUESTS,
        "counter",
        "Exchanges an upstream completed.",
    );
    for u in &upstreams {
        let _ = writeln!(
            out,
            "{}{{upstream=\"{}\"}} {}",
            names::UPSTREAM_REQUESTS,
            label(&u.name),
            u.served
        );
    }
    family(
        &mut out,
        names::UPSTREAM_FAILURES,
        "counter",
        "Connects to an upstream that failed.",
    );
    for u in &upstreams {
        let _ = writeln!(
            out,
            "{}{{upstream=\"{}\"}} {}",
            names::UPSTREAM_FAILURES,
            label(&u.name),
            u.failures
        );
    }
    family(
        &mut out,
        names::UPSTREAM_UP,
        "gauge",
        "Whether an upstream takes requests (1) or not (0).",
    );
    for u in &upstreams {
        let _ = writeln!(
            out,
            "{}{{upstream=\"{}\"}} {}",
            names::UPSTREAM_UP,
            label(&u.name),
            u8::from(u.state == "up")
        );
    }
    family(
        &mut out,
        names::UPSTREAM_CONNECTIONS,
        "gauge",
        "Upstream connections, by state.",
    );
    for u in &upstreams {
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
    for (name, kind, help, v) in [
        (
            names::ACCEPTED,
            "counter",
            "Client connections accepted.",
            t.accepted,
        ),
        (
            names::CLIENTS,
            "gauge",
            "Client connections open.",
            clients as u64,
        ),
        (
            names::QUEUED,
            "gauge",
            "Exchanges waiting for an upstream connection.",
            waiting as u64,
        ),
        (
            names::STRAY_CLOSES,
            "counter",
            "Upstream connections closed because bytes came nobody asked for.",
            t.stray_closes,
        ),
        (
            names::RESENT,
            "counter",
            "Requests sent again because the one ahead of them was late.",
            t.resent,
        ),
        (
            names::COMPLETIONS,
            "counter",
            "Ring completions reaped.",
            completions,
        ),
        (names::ENTERS, "counter", "io_uring_enter calls.", enters),
        (
            names::QUIET_FAILURES,
            "counter",
            "Closes, cancels and shutdowns that failed.",
            quiet,
        ),
        (
            names::LOG_DROPPED,
            "counter",
            "Access log lines dropped because the logger fell behind.",
            t.log_dropped,
        ),
        (
            names::RELOAD_FAILURES,
            "counter",
            "Reloads refused.",
            reload_failures,
        ),
    ] {
        family(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {v}");
    }
    family(
        &mut out,
        names::BUSY,
        "gauge",
        "Fraction of the last tick a worker spent outside its ring wait.",
    );
    for (i, (w, _)) in workers.iter().enumerate() {
        let _ = writeln!(out, "{}{{worker=\"{i}\"}} {:.3}", names::BUSY, w.busy);
    }
    family(&mut out, names::RESTARTS, "counter", "Worker restarts.");
    for (i, (_, r)) in workers.iter().enumerate() {
        let _ = writeln!(out, "{}{{worker=\"{i}\"}} {r}", names::RESTARTS);
    }
    out
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
    let (workers, _) = snapshots(admin);
    let upstreams = merged_upstreams(&workers);
    let mut busiest = connections(admin, MAX_LIMIT);
    busiest.retain(|c| c.busy_ms.is_some());
    busiest.sort_by_key(|c| std::cmp::Reverse(c.busy_ms));
    busiest.truncate(20);
    let now_ms = crate::worker::unix_secs() * 1000;
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
    o.push_str("</table><h2>Upstreams</h2><table><tr><th>upstream</th><th>address</th><th>state</th><th>weight</th><th>active</th><th>idle</th><th>queued</th><th>requests</th><th>failures</th><th>p50</th><th>p99</th><th>last use</th></tr>");
    for u in &upstreams {
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&u.name),
            esc(&u.addr),
            u.state,
            u.state,
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
