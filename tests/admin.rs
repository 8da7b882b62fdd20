//! The admin listener and the access log, over real sockets: `/metrics`
//! parses strictly and counts what was sent, `/status` lists every open
//! connection with its fields, every request gets one access log line with
//! its status and bytes, and the admin port is as strict as the proxy's.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use common::Client;

/// GET `path` on the admin port; (status, body).
fn admin_get(admin: SocketAddr, path: &str) -> (u16, String) {
    admin_req(
        admin,
        &format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"),
    )
}

fn admin_req(admin: SocketAddr, raw: &str) -> (u16, String) {
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(raw.as_bytes()).unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// One sample of the text format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A strict reader of the Prometheus text exposition format 0.0.4: every
/// line is a HELP, a TYPE (before its samples, once per family) or a
/// sample of a declared family; names and labels are well formed;
/// histograms have increasing `le`, non-decreasing cumulative counts,
/// `+Inf` equal to `_count`, and a `_sum`.
fn parse_metrics(text: &str) -> Vec<Sample> {
    fn valid_name(n: &str) -> bool {
        let mut c = n.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Vec::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "bad name in {line:?}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut p = rest.split(' ');
            let (name, kind) = (p.next().unwrap(), p.next().unwrap());
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{line:?}"
            );
            assert!(
                types.insert(name.into(), kind.into()).is_none(),
                "TYPE twice: {name}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line:?}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => {
                let l = l.strip_suffix('}').unwrap_or_else(|| panic!("{line:?}"));
                let mut m = BTreeMap::new();
                for pair in l.split(',') {
                    let (k, v) = pair.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
                    assert!(valid_name(k), "bad label {k:?}");
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or_else(|| panic!("unquoted label in {line:?}"));
                    m.insert(k.to_string(), v.to_string());
                }
                (n.to_string(), m)
            }
            None => (series.to_string(), BTreeMap::new()),
        };
        assert!(valid_name(&name), "bad name in {line:?}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            .unwrap_or(&name)
            .to_string();
        assert!(
            types.contains_key(&family),
            "sample before its TYPE: {line:?}"
        );
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    // Histograms: per label set, increasing le, cumulative, +Inf == count.
    for (family, kind) in &types {
        if kind != "histogram" {
            continue;
        }
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for s in samples
            .iter()
            .filter(|s| s.name == format!("{family}_bucket"))
        {
            let mut l = s.labels.clone();
            let le = l.remove("le").expect("bucket without le");
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            series
                .entry(format!("{l:?}"))
                .or_default()
                .push((le, s.value));
        }
        for (labels, buckets) in series {
            assert!(
                buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                "{family} {labels}"
            );
            assert_eq!(
                buckets.last().unwrap().0,
                f64::INFINITY,
                "{family}: no +Inf"
            );
            let count = samples
                .iter()
                .find(|s| {
                    s.name == format!("{family}_count") && format!("{:?}", s.labels) == labels
                })
                .unwrap_or_else(|| panic!("{family} {labels}: no _count"));
            assert_eq!(
                count.value,
                buckets.last().unwrap().1,
                "{family}: +Inf != count"
            );
            assert!(
                samples.iter().any(|s| s.name == format!("{family}_sum")),
                "{family}: no _sum"
            );
        }
    }
    samples
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .find(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .unwrap_or_else(|| panic!("no {name} {labels:?}"))
        .value
}

/// Poll `/metrics` until `ready` holds (figures are published on the tick).
fn metrics_when(admin: SocketAddr, ready: impl Fn(&[Sample]) -> bool) -> Vec<Sample> {
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let (status, body) = admin_get(admin, "/metrics");
        assert_eq!(status, 200);
        let samples = parse_metrics(&body);
        if ready(&samples) {
            return samples;
        }
        assert!(
            Instant::now() < deadline,
            "metrics never got there:\n{body}"
        );
        thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn metrics_parse_and_count_what_was_sent_by_status_class() {
    let o = common::origin("o");
    let upstream = o.addr().to_string();
    let p = common::Proc::start(
        common::PROXY,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "2",
            "--no-pin",
            "--upstream",
            &upstream,
            "--admin",
            "127.0.0.1:0",
        ],
        1,
    );
    let admin = p.admin_addr();
    let mut c = Client::connect(p.addr());
    for _ in 0..10 {
        assert_eq!(c.get("/?size=3").status, 200);
    }
    for _ in 0..3 {
        assert_eq!(c.get("/?status=404").status, 404);
    }
    for _ in 0..2 {
        let mut bad = Client::connect(p.addr());
        bad.send(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(bad.response(false).status, 400);
    }
    let m = metrics_when(admin, |m| {
        m.iter()
            .any(|s| s.name == "ringmux_requests_total" && s.value >= 15.0)
    });
    assert_eq!(value(&m, "ringmux_requests_total", &[]), 15.0);
    assert_eq!(
        value(&m, "ringmux_responses_total", &[("class", "2xx")]),
        10.0
    );
    assert_eq!(
        value(&m, "ringmux_responses_total", &[("class", "4xx")]),
        5.0
    );
    assert_eq!(
        value(&m, "ringmux_responses_total", &[("class", "5xx")]),
        0.0
    );
    assert_eq!(
        value(&m, "ringmux_request_duration_seconds_count", &[]),
        15.0
    );
    assert_eq!(
        value(
            &m,
            "ringmux_upstream_requests_total",
            &[("upstream", &upstream)]
        ),
        13.0
    );
    assert_eq!(
        value(
            &m,
            "ringmux_upstream_response_seconds_count",
            &[("upstream", &upstream)]
        ),
        13.0
    );
    assert_eq!(
        value(&m, "ringmux_upstream_up", &[("upstream", &upstream)]),
        1.0
    );
    assert!(value(&m, "ringmux_ring_completions_total", &[]) > 0.0);
    // Each of the 13 requests was sent to the origin and answered to its
    // client: a send each way at least.
    assert!(value(&m, "ringmux_ring_sends_total", &[]) >= 26.0);
    assert_eq!(
        value(&m, "ringmux_worker_restarts_total", &[("worker", "1")]),
        0.0
    );
}

#[test]
fn status_lists_every_open_connection_with_its_fields() {
    let o = common::origin("o");
    let p = common::proxy_with(&[o.addr().to_string()], &["--admin", "127.0.0.1:0"]);
    let admin = p.admin_addr();
    let mut clients: Vec<Client> = (0..5).map(|_| Client::connect(p.addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in 0..=i {
            assert_eq!(c.get("/").status, 200);
        }
    }
    let (status, body) = admin_get(admin, "/status");
    assert_eq!(status, 200);
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let conns = v["connections"].as_array().expect("connections");
    assert_eq!(conns.len(), 5, "{body}");
    let mut served: Vec<u64> = conns
        .iter()
        .map(|c| c["requests"].as_u64().unwrap())
        .collect();
    served.sort_unstable();
    assert_eq!(served, vec![1, 2, 3, 4, 5]);
    for c in conns {
        for field in [
            "worker",
            "peer",
            "state",
            "requests",
            "connected_ms",
            "last_use_ms",
            "busy_ms",
            "upstream",
        ] {
            assert!(c.get(field).is_some(), "{field} missing in {c}");
        }
        assert_eq!(c["state"], "idle");
        assert!(c["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let last_use: Vec<u64> = conns
        .iter()
        .map(|c| c["last_use_ms"].as_u64().unwrap())
        .collect();
    assert!(
        last_use.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {last_use:?}"
    );
    let w = &v["workers"][0];
    for field in [
        "state",
        "clients",
        "requests",
        "completions",
        "submissions",
        "busy",
        "restarts",
    ] {
        assert!(w.get(field).is_some(), "{field} missing in {w}");
    }
    let u = &v["upstreams"][0];
    for field in [
        "address",
        "state",
        "weight",
        "active",
        "idle",
        "queued",
        "requests",
        "failures",
        "response_time",
        "last_use_ms",
    ] {
        assert!(u.get(field).is_some(), "{field} missing in {u}");
    }
    let (status, body) = admin_get(admin, "/connections?limit=2");
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (status, page) = admin_get(admin, "/");
    assert_eq!(status, 200);
    assert!(
        page.contains("<meta http-equiv=\"refresh\"") && page.contains("Upstreams"),
        "{page}"
    );
    assert!(
        !page.contains("<script src") && !page.contains("<link"),
        "no external assets"
    );
}

#[test]
fn the_admin_port_is_as_strict_as_the_proxy_and_routes_the_rest() {
    let o = common::origin("o");
    let p = common::proxy_with(&[o.addr().to_string()], &["--admin", "127.0.0.1:0"]);
    let admin = p.admin_addr();
    let smuggle = "GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(admin_req(admin, smuggle).0, 400);
    let mut c = Client::connect(p.addr());
    c.send(smuggle.as_bytes());
    assert_eq!(
        c.response(false).status,
        400,
        "the same answer as the proxy's"
    );
    assert_eq!(admin_get(admin, "/nope").0, 404);
    assert_eq!(
        admin_req(
            admin,
            "POST /status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n"
        )
        .0,
        405
    );
    assert_eq!(admin_get(admin, "/reload").0, 405);
    let (status, body) = admin_req(
        admin,
        "POST /reload HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("reloaded"), "{body}");
}

#[test]
fn one_access_log_line_per_request_with_status_and_bytes() {
    let o = common::origin("o");
    let dir = std::env::temp_dir().join(format!("ringmux-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let p = common::proxy_with(
        &[o.addr().to_string()],
        &[
            "--access-log",
            path.to_str().unwrap(),
            "--access-log-format",
            "json",
        ],
    );
    let mut c = Client::connect(p.addr());
    let mut sent = Vec::new();
    for size in [0usize, 7, 300, 70_000] {
        let r = c.get(&format!("/?size={size}"));
        sent.push((200u16, size));
        assert_eq!(r.status, 200);
    }
    assert_eq!(c.get("/?status=503").status, 503);
    sent.push((503, 0));
    let mut bad = Client::connect(p.addr());
    bad.send(b"GET / HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n");
    assert_eq!(bad.response(false).status, 505);
    // Lines reach the file on the tick.
    let deadline = Instant::now() + common::TIMEOUT;
    let lines = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        if lines.len() >= 6 || Instant::now() > deadline {
            break lines;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(lines.len(), 6, "{lines:?}");
    for (line, (status, size)) in lines.iter().zip(&sent) {
        assert_eq!(line["status"], *status, "{line}");
        assert!(
            line["request"].as_str().unwrap().starts_with("GET /?"),
            "{line}"
        );
        assert_eq!(line["upstream"], o.addr().to_string());
        assert!(line["upstream_time"].as_f64().unwrap() >= 0.0);
        assert!(line["total_time"].as_f64().unwrap() >= line["upstream_time"].as_f64().unwrap());
        // The body, plus a head of some size.
        let bytes = line["bytes"].as_u64().unwrap() as usize;
        assert!(
            bytes > *size && bytes < size + 400,
            "{bytes} for {size}: {line}"
        );
    }
    let refused = &lines[5];
    assert_eq!(refused["status"], 505);
    assert_eq!(refused["request"], "GET / HTTP/9.9");
    assert!(refused["upstream"].is_null());
    // SIGUSR1 reopens the file (after logrotate moved it away).
    let moved = dir.join("access.log.1");
    std::fs::rename(&path, &moved).unwrap();
    p.signal("USR1");
    p.wait_stderr("access log reopened", 1, Duration::from_secs(5));
    assert_eq!(c.get("/?size=1").status, 200);
    let deadline = Instant::now() + common::TIMEOUT;
    while std::fs::read_to_string(&path).map_or(0, |t| t.lines().count()) < 1 {
        assert!(Instant::now() < deadline, "no line in the reopened file");
        thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn counters_survive_a_worker_restart_and_cut_short_exchanges_are_counted() {
    let o = common::origin("o");
    let dir = std::env::temp_dir().join(format!("ringmux-log2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("access.log");
    let p = common::proxy_with(
        &[o.addr().to_string()],
        &[
            "--admin",
            "127.0.0.1:0",
            "--debug-panic-path",
            "/__die",
            "--access-log",
            path.to_str().unwrap(),
            "--access-log-format",
            "json",
        ],
    );
    let admin = p.admin_addr();
    let mut c = Client::connect(p.addr());
    for _ in 0..7 {
        assert_eq!(c.get("/").status, 200);
    }
    // A client that gives up (a reset) while its request is at the origin.
    let mut gone = Client::connect(p.addr());
    gone.send(b"GET /?delay=3000 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    thread::sleep(Duration::from_millis(200));
    socket2::SockRef::from(&gone.stream)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
    drop(gone);
    let m = metrics_when(admin, |m| {
        m.iter()
            .any(|s| s.name == "ringmux_requests_aborted_total" && s.value >= 1.0)
    });
    assert_eq!(value(&m, "ringmux_requests_total", &[]), 8.0);
    assert_eq!(
        value(&m, "ringmux_responses_total", &[("class", "2xx")]),
        7.0
    );
    // The worker dies and is replaced: no counter goes down.
    let mut die = Client::connect(p.addr());
    die.send(b"GET /__die HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    p.wait_stderr("restarting it", 1, Duration::from_secs(10));
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("/").status, 200);
    let m = metrics_when(admin, |m| {
        m.iter()
            .any(|s| s.name == "ringmux_responses_total" && s.value >= 8.0)
    });
    assert!(value(&m, "ringmux_requests_total", &[]) >= 9.0);
    assert_eq!(
        value(&m, "ringmux_responses_total", &[("class", "2xx")]),
        8.0
    );
    assert_eq!(value(&m, "ringmux_requests_aborted_total", &[]), 1.0);
    assert_eq!(
        value(&m, "ringmux_worker_restarts_total", &[("worker", "0")]),
        1.0
    );
    // The cut-short exchange has its line: 499, and the upstream it was on.
    let deadline = Instant::now() + common::TIMEOUT;
    loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("\"status\":499")) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["request"], "GET /?delay=3000 HTTP/1.1");
            assert_eq!(v["upstream"], o.addr().to_string());
            break;
        }
        assert!(Instant::now() < deadline, "no 499 line in:\n{text}");
        thread::sleep(Duration::from_millis(50));
    }
    // HEAD on the admin port: the head, no body.
    let mut s = TcpStream::connect(admin).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(b"HEAD /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\n"), "no body after a HEAD: {text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A proxy with its admin port and `extra` flags; the admin address.
fn with_admin(extra: &[&str]) -> (common::Proc, SocketAddr, common::Proc) {
    let o = common::origin("o");
    let mut args = vec!["--admin", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let p = common::proxy_with(&[o.addr().to_string()], &args);
    let admin = p.admin_addr();
    (p, admin, o)
}

#[test]
fn no_state_change_from_a_web_page_and_no_foreign_host_name() {
    let (_p, admin, _o) = with_admin(&["--admin-host", "ops.internal"]);
    let post = |extra: &str| {
        admin_req(
            admin,
            &format!("POST /reload HTTP/1.1\r\nHost: {admin}\r\n{extra}Content-Length: 0\r\n\r\n"),
        )
        .0
    };
    // A cross-site form post, a fetch from a page, a foreign Origin.
    assert_eq!(
        post("Content-Type: application/x-www-form-urlencoded\r\n"),
        403
    );
    assert_eq!(post("Content-Type: text/plain\r\n"), 403);
    assert_eq!(post("Origin: http://evil.example\r\n"), 403);
    assert_eq!(post("Sec-Fetch-Site: cross-site\r\n"), 403);
    // A script's POST is taken.
    assert_eq!(post(""), 200);
    // DNS rebinding: the attacker's name in Host, for reads too.
    let get = |host: &str| {
        admin_req(
            admin,
            &format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\n\r\n"),
        )
        .0
    };
    assert_eq!(get("evil.example"), 421);
    assert_eq!(get(&format!("evil.example:{}", admin.port())), 421);
    assert_eq!(get("localhost"), 200);
    assert_eq!(get(&format!("OPS.internal:{}", admin.port())), 200);
    assert_eq!(get(&admin.to_string()), 200);
}

#[test]
fn a_token_guards_state_changes_and_reads_when_asked() {
    let dir = common::ConfigFile::new("");
    let token_path = std::path::Path::new(dir.path()).with_file_name("admin.token");
    std::fs::write(&token_path, "s3cret-token-of-some-length\n").unwrap();
    let token = token_path.to_str().unwrap();
    let (_p, admin, _o) = with_admin(&["--admin-token-file", token]);
    let req = |method: &str, path: &str, auth: &str| {
        admin_req(
            admin,
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Content-Length: 0\r\n\r\n"
            ),
        )
        .0
    };
    assert_eq!(req("POST", "/reload", ""), 401);
    assert_eq!(
        req(
            "POST",
            "/reload",
            "Authorization: Bearer wrong-token-of-some-length\r\n"
        ),
        401
    );
    assert_eq!(
        req(
            "POST",
            "/reload",
            "Authorization: Bearer s3cret-token-of-some-length\r\n"
        ),
        200
    );
    assert_eq!(
        req("GET", "/metrics", ""),
        200,
        "reads are open unless asked"
    );
    let (_p, admin2, _o2) = with_admin(&["--admin-token-file", token, "--admin-token-reads"]);
    let get = |auth: &str| {
        admin_req(
            admin2,
            &format!("GET /connections HTTP/1.1\r\nHost: {admin2}\r\n{auth}\r\n"),
        )
        .0
    };
    assert_eq!(get(""), 401);
    assert_eq!(
        get("Authorization: Bearer s3cret-token-of-some-length\r\n"),
        200
    );
    // A short token is refused at start, naming the flag.
    std::fs::write(&token_path, "short\n").unwrap();
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &[
            "--upstream",
            "127.0.0.1:1",
            "--admin",
            "127.0.0.1:0",
            "--admin-token-file",
            token,
        ],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("--admin-token-file"), "{err}");
}

#[test]
fn idle_connections_from_one_place_cannot_lock_the_scrapes_out() {
    // Eight idle connections used to fill the admin port for 5 s, renewable
    // by reconnecting. From one address only a few are served at once, and
    // a head must come within 2 s.
    let (_p, admin, _o) = with_admin(&[]);
    let idle: Vec<TcpStream> = (0..8)
        .map(|_| {
            let s =
                socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
            s.bind(&SocketAddr::from(([127, 0, 0, 2], 0)).into())
                .unwrap();
            s.connect(&admin.into()).unwrap();
            s.into()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(100));
    for _ in 0..3 {
        let (status, _) = admin_req(
            admin,
            &format!("GET /metrics HTTP/1.1\r\nHost: {admin}\r\n\r\n"),
        );
        assert_eq!(status, 200, "a scrape from elsewhere is served");
    }
    drop(idle);
}
