//! Warm-up and session affinity over real sockets: a session whose home is
//! cold is served by a warm peer at once, and goes home once the home is
//! ready, carrying the peer's name once; forged cookies are ignored; the
//! affinity cookie never reaches an origin.

mod common;

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Client, ConfigFile, Proc};
use ringmux::affinity::{upstream_key, Affinity};

const KEY: &str = "a test key of more than sixteen bytes";
const COOKIE: &str = "ringmux_session";

fn origin(name: &str, extra: &[&str]) -> Proc {
    let mut args = vec!["--listen", "127.0.0.1:0", "--name", name];
    args.extend_from_slice(extra);
    Proc::start(common::ORIGIN, &args, 1)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The config: affinity on (key in the file), and `upstreams` (already
/// formatted `[[upstream]]` tables).
fn config(upstreams: &str) -> String {
    format!("[affinity]\nkey = \"{KEY}\"\npeer_header = \"Ringmux-Session-Peer\"\n\n{upstreams}")
}

fn table(addr: std::net::SocketAddr, extra: &str) -> String {
    format!("[[upstream]]\naddr = \"{addr}\"\n{extra}")
}

/// One ringmux worker on the configuration in `file`, plus `extra` flags.
fn proxy(file: &ConfigFile, extra: &[&str]) -> Proc {
    let mut args = vec!["--listen", "127.0.0.1:0", "--workers", "1", "--no-pin"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--config", file.path()]);
    Proc::start(common::PROXY, &args, 1)
}

/// Rewrite `file` with `upstreams` (see [`config`]), SIGHUP, and wait for
/// the reload.
fn reload(p: &Proc, file: &ConfigFile, upstreams: &str) {
    file.write(&config(upstreams));
    p.signal("HUP");
    p.wait_stderr("configuration reloaded", 1, Duration::from_secs(10));
}

/// The affinity settings of [`config`], to make and read cookies as
/// another ringmux with the key would.
fn affinity() -> Affinity {
    Affinity::new(
        COOKIE,
        KEY.as_bytes().to_vec(),
        Duration::from_secs(3600),
        false,
        None,
    )
}

/// GET /head with the session cookie `cookie` (if any): (origin, the head
/// the origin received, the new cookie value the response set).
fn get(c: &mut Client, cookie: Option<&str>) -> (String, String, Option<String>) {
    let extra = cookie.map_or(String::new(), |v| {
        format!("Cookie: theme=dark; {COOKIE}={v}; lang=en\r\n")
    });
    c.send(format!("GET /head HTTP/1.1\r\nHost: app\r\n{extra}\r\n").as_bytes());
    let r = c.response(false);
    assert_eq!(r.status, 200, "{}", r.body_str());
    let set = r.header("set-cookie").map(|v| {
        let (pair, _) = v.split_once(';').unwrap();
        let (name, value) = pair.split_once('=').unwrap();
        assert_eq!(name, COOKIE);
        assert!(
            v.contains("HttpOnly") && v.contains("SameSite=Lax") && v.contains("Path=/"),
            "{v}"
        );
        value.to_string()
    });
    (r.header("x-origin").unwrap().to_string(), r.body_str(), set)
}

#[test]
fn a_cold_home_is_covered_by_a_warm_peer_then_the_session_goes_home_once() {
    let b = origin("b", &[]);
    let a = origin("a", &["--ready-after", "1500"]);
    let file = ConfigFile::new(&config(&table(b.addr(), "")));
    let p = proxy(&file, &[]);
    let mut c = Client::connect(p.addr());
    // B is warm; a new session gets a cookie naming it.
    let (from, head, set) = get(&mut c, None);
    assert_eq!(from, "b");
    assert!(!head.contains(COOKIE));
    let set = set.expect("a new session gets a cookie");
    assert!(set.starts_with(&format!(
        "v1.{:016x}.-.",
        upstream_key(&b.addr().to_string())
    )));
    // A joins (cold: its readiness path answers 503 for 1.5 s).
    reload(
        &p,
        &file,
        &format!(
            "{}{}",
            table(b.addr(), ""),
            table(a.addr(), "warmup_check = \"/ready\"\n")
        ),
    );
    // A session whose home is A (as another ringmux with the key would
    // have set it).
    let aff = affinity();
    let a_key = upstream_key(&a.addr().to_string());
    let mut cookie = aff.value(&aff.ticket(a_key, None, unix_now()));
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut from_b = 0;
    let mut seen: Vec<(String, bool, bool)> = Vec::new();
    loop {
        let (from, head, set) = get(&mut c, Some(&cookie));
        assert!(
            !head.contains(COOKIE),
            "the affinity cookie reached an origin: {head}"
        );
        assert!(
            head.contains("theme=dark; lang=en"),
            "the others' cookies go on: {head}"
        );
        let handed = head.contains(&format!("Ringmux-Session-Peer: {}", b.addr()));
        seen.push((from.clone(), handed, set.is_some()));
        if from == "b" {
            from_b += 1;
            if from_b == 1 {
                // Order, not timing: the peer answered before A was ready.
                assert!(!p.stderr_text().contains("is ready"), "{}", p.stderr_text());
                let set = set.as_deref().expect("the cookie records the peer");
                assert!(
                    set.starts_with(&format!(
                        "v1.{a_key:016x}.{:016x}.",
                        upstream_key(&b.addr().to_string())
                    )),
                    "{set}"
                );
            }
        }
        if let Some(v) = set {
            cookie = v;
        }
        if from == "a" {
            break;
        }
        assert!(Instant::now() < deadline, "never went home: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(from_b >= 1, "served by the peer first: {seen:?}");
    assert!(p.stderr_text().contains("is ready"), "{}", p.stderr_text());
    let (_, handed, rewritten) = seen.last().unwrap().clone();
    assert!(handed, "the hand-off names the peer: {seen:?}");
    assert!(rewritten, "and the cookie drops the peer");
    assert!(
        cookie.starts_with(&format!("v1.{a_key:016x}.-.")),
        "{cookie}"
    );
    // Home from now on, the hand-off said once.
    for _ in 0..5 {
        let (from, head, set) = get(&mut c, Some(&cookie));
        assert_eq!(from, "a");
        assert!(!head.contains("Ringmux-Session-Peer"), "{head}");
        assert!(set.is_none(), "nothing to rewrite");
    }
    // Two requests pipelined with a cookie that still records the peer:
    // the hand-off field goes home once per connection, not with each.
    let b_key = upstream_key(&b.addr().to_string());
    let old = aff.value(&aff.ticket(a_key, Some(b_key), unix_now()));
    let req = format!("GET /head HTTP/1.1\r\nHost: app\r\nCookie: {COOKIE}={old}\r\n\r\n");
    c.send(format!("{req}{req}").as_bytes());
    let heads: Vec<String> = (0..2).map(|_| c.response(false).body_str()).collect();
    let told = heads
        .iter()
        .filter(|h| h.contains("Ringmux-Session-Peer"))
        .count();
    assert_eq!(told, 1, "{heads:?}");
    // A forged cookie (A's, its MAC changed) is ignored: the policy decides,
    // and the session gets a fresh cookie.
    let mut forged = cookie.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == '0' { '1' } else { '0' });
    let (_, head, set) = get(&mut c, Some(&forged));
    assert!(!head.contains("Ringmux-Session-Peer"));
    let set = set.expect("a forged cookie is replaced");
    assert_ne!(set, forged);
    assert!(aff.read(set.as_bytes(), unix_now()).is_some());
}

#[test]
fn while_its_home_is_cold_a_session_stays_on_the_peer_its_cookie_records() {
    let b = origin("b", &[]);
    let c = origin("c", &[]);
    // A never becomes ready while this test runs.
    let a = origin("a", &["--ready-after", "600000"]);
    let both = format!("{}{}", table(b.addr(), ""), table(c.addr(), ""));
    let file = ConfigFile::new(&config(&both));
    let p = proxy(&file, &["--balance", "wrr"]);
    let mut client = Client::connect(p.addr());
    // Without a cookie, round robin alternates between the peers.
    let plain: Vec<String> = (0..4).map(|_| get(&mut client, None).0).collect();
    assert!(
        plain.iter().any(|o| o == "b") && plain.iter().any(|o| o == "c"),
        "{plain:?}"
    );
    reload(
        &p,
        &file,
        &format!("{both}{}", table(a.addr(), "warmup_check = \"/ready\"\n")),
    );
    let aff = affinity();
    let a_key = upstream_key(&a.addr().to_string());
    let mut cookie = aff.value(&aff.ticket(a_key, None, unix_now()));
    let mut served = Vec::new();
    for _ in 0..8 {
        // A client's own copy of the hand-off field never goes upstream.
        client.send(
            format!(
                "GET /head HTTP/1.1\r\nHost: app\r\nRingmux-Session-Peer: forged\r\n\
                 Cookie: {COOKIE}={cookie}\r\n\r\n"
            )
            .as_bytes(),
        );
        let r = client.response(false);
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert!(!r.body_str().contains("forged"), "{}", r.body_str());
        if let Some(v) = r.header("set-cookie") {
            let (pair, _) = v.split_once(';').unwrap();
            cookie = pair.split_once('=').unwrap().1.to_string();
        }
        served.push(r.header("x-origin").unwrap().to_string());
    }
    assert!(!served.iter().any(|o| o == "a"), "A is cold: {served:?}");
    assert!(
        served.iter().all(|o| *o == served[0]),
        "the session moved between peers: {served:?}"
    );
    let peer = if served[0] == "b" { b.addr() } else { c.addr() };
    assert!(
        cookie.starts_with(&format!(
            "v1.{a_key:016x}.{:016x}.",
            upstream_key(&peer.to_string())
        )),
        "the cookie names A and records {peer}: {cookie}"
    );
}

#[test]
fn a_readiness_check_added_to_a_serving_upstream_takes_it_out_until_it_passes() {
    let a = origin("a", &["--ready-after", "600000"]);
    let b = origin("b", &[]);
    let both = format!("{}{}", table(a.addr(), ""), table(b.addr(), ""));
    let file = ConfigFile::new(&config(&both));
    let p = proxy(&file, &["--balance", "wrr"]);
    let mut c = Client::connect(p.addr());
    let served: Vec<String> = (0..4).map(|_| get(&mut c, None).0).collect();
    assert!(served.iter().any(|o| o == "a"), "a serves: {served:?}");
    // A gets a readiness check its origin does not pass.
    reload(
        &p,
        &file,
        &format!(
            "{}{}",
            table(a.addr(), "warmup_check = \"/ready\"\n"),
            table(b.addr(), "")
        ),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut from_b = 0;
    while from_b < 10 {
        let (from, _, _) = get(&mut c, None);
        from_b = if from == "b" { from_b + 1 } else { 0 };
        assert!(Instant::now() < deadline, "a stayed in rotation");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_thousand_upstreams_open_connections_only_where_requests_go() {
    // One origin on every loopback address: 1,000 distinct upstreams. Every
    // cold upstream a request was kept away from used to get `warm_conns`
    // connections at once: 8,013 descriptors within 2 s.
    let o = common::Proc::start(common::ORIGIN, &["--listen", "0.0.0.0:0", "--name", "o"], 1);
    let port = o.addr().port();
    let upstreams: String = (0..1000)
        .map(|i| {
            format!(
                "[[upstream]]\naddr = \"127.0.{}.{}:{port}\"\n",
                i / 250,
                i % 250 + 1
            )
        })
        .collect();
    // At most 64 idle connections kept across upstreams (the default is
    // 1,024), at most eight upstreams warming at a time.
    let file = common::ConfigFile::new(&format!(
        "workers = 1\npin = false\nmax_idle = 64\n{upstreams}"
    ));
    let p = common::Proc::start(
        common::PROXY,
        &["--listen", "127.0.0.1:0", "--config", file.path()],
        1,
    );
    let addr = p.addr();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|_| {
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                for _ in 0..100 {
                    assert_eq!(c.get("/?size=10").status, 200);
                }
            })
        })
        .collect();
    let pid = p.pid();
    let watch = {
        let peak = std::sync::Arc::clone(&peak);
        thread::spawn(move || {
            for _ in 0..40 {
                peak.fetch_max(common::fd_count(pid), std::sync::atomic::Ordering::SeqCst);
                thread::sleep(Duration::from_millis(50));
            }
        })
    };
    for c in clients {
        c.join().expect("every request answered");
    }
    watch.join().unwrap();
    let peak = peak.load(std::sync::atomic::Ordering::SeqCst);
    assert!(peak < 200, "{peak} descriptors at the peak");
    // And it stops when told.
    let mut p = p;
    p.signal("TERM");
    assert!(
        p.wait_exit(Duration::from_secs(5)).is_some(),
        "SIGTERM is honoured"
    );
}
