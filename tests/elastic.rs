//! Elastic workers over real sockets: `--workers 1..3` grows under load
//! and shrinks back when it stops, and not one request of the load fails
//! meanwhile (no connect error, no reset, no truncated response), also
//! while a worker retires under traffic.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{Client, Proc};

use common::metric;

/// An elastic ringmux (`extra`: workers and scaling flags) in front of
/// `origin`, unpinned, with its admin port.
fn elastic(origin: &Proc, extra: &[&str]) -> Proc {
    let upstream = origin.addr().to_string();
    let mut args = vec!["--listen", "127.0.0.1:0", "--no-pin"];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--admin", "127.0.0.1:0", "--upstream", &upstream]);
    Proc::start(common::PROXY, &args, 1)
}

/// Wait (at most `limit`) until `ready` holds.
fn wait_for(limit: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !ready() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        thread::sleep(Duration::from_millis(50));
    }
}

/// A client loop: fresh connections of up to 20 requests each (fewer when
/// the proxy says `Connection: close`), every answer checked, until `stop`;
/// `pause` between requests.
fn load(addr: SocketAddr, stop: Arc<AtomicBool>, done: Arc<AtomicUsize>, pause: Duration) {
    while !stop.load(Ordering::SeqCst) {
        let mut c = Client::connect(addr);
        for i in 0..20 {
            let r = c.get(&format!("/?size={}", 100 + i));
            assert_eq!(r.status, 200, "{}", r.body_str());
            assert_eq!(r.body.len(), 100 + i, "truncated");
            done.fetch_add(1, Ordering::SeqCst);
            if r.header("connection") == Some("close") {
                break;
            }
            if !pause.is_zero() {
                thread::sleep(pause);
            }
        }
    }
}

#[test]
fn workers_grow_under_load_and_retire_when_it_stops_losing_nothing() {
    let o = common::origin("o");
    let p = elastic(
        &o,
        &[
            "--workers",
            "1..3",
            "--scale-high",
            "0.15",
            "--scale-low",
            "0.08",
            "--scale-up-after",
            "200",
            "--scale-down-after",
            "600",
        ],
    );
    let (addr, admin) = (p.addr(), p.admin_addr());
    assert_eq!(metric(admin, "ringmux_workers"), 1.0);
    let done = Arc::new(AtomicUsize::new(0));
    // Heavy: eight loops back to back.
    let stop_heavy = Arc::new(AtomicBool::new(false));
    let heavy: Vec<_> = (0..8)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop_heavy), Arc::clone(&done));
            thread::spawn(move || load(addr, stop, done, Duration::ZERO))
        })
        .collect();
    // Light loops that keep going while workers retire: each worker holds
    // some of their connections, idle between requests most of the time.
    let stop_light = Arc::new(AtomicBool::new(false));
    let light: Vec<_> = (0..6)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop_light), Arc::clone(&done));
            thread::spawn(move || load(addr, stop, done, Duration::from_millis(20)))
        })
        .collect();
    wait_for(Duration::from_secs(20), "a scale-up", || {
        metric(admin, "ringmux_worker_scale_ups_total") >= 1.0
    });
    thread::sleep(Duration::from_millis(500));
    stop_heavy.store(true, Ordering::SeqCst);
    for t in heavy {
        t.join().expect("a request failed while workers grew");
    }
    // The light load goes on while the pool comes back to one.
    wait_for(
        Duration::from_secs(30),
        "the pool back to one worker",
        || {
            metric(admin, "ringmux_workers") == 1.0
                && metric(admin, "ringmux_worker_scale_downs_total") >= 1.0
        },
    );
    thread::sleep(Duration::from_millis(300));
    stop_light.store(true, Ordering::SeqCst);
    for t in light {
        t.join().expect("a request failed while workers retired");
    }
    let err = p.stderr_text();
    assert!(err.contains("retired (returned)"), "{err}");
    assert!(
        !err.contains("panicked") && !err.contains("restarting"),
        "{err}"
    );
    assert!(done.load(Ordering::SeqCst) > 500);
}

/// Busy polling is idle time: a worker that polls its ring between light
/// requests (`--busy-poll 1000`, so nearly all of its CPU time is polling)
/// shows a low busy fraction, and the pool does not grow for it.
#[test]
fn busy_polling_does_not_count_as_busy() {
    let o = common::origin("o");
    let p = elastic(
        &o,
        &[
            "--workers",
            "1..2",
            "--busy-poll",
            "1000",
            "--scale-high",
            "0.9",
            "--scale-up-after",
            "300",
        ],
    );
    let (addr, admin) = (p.addr(), p.admin_addr());
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let light = {
        let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
        thread::spawn(move || load(addr, stop, done, Duration::from_micros(300)))
    };
    thread::sleep(Duration::from_millis(1500));
    let busy = metric(admin, "ringmux_worker_busy_ratio{worker=\"0\"}");
    let ups = metric(admin, "ringmux_worker_scale_ups_total");
    stop.store(true, Ordering::SeqCst);
    light.join().expect("a request failed");
    assert!(done.load(Ordering::SeqCst) > 100, "the load ran");
    assert!(busy < 0.5, "busy {busy} while mostly polling");
    assert_eq!(ups, 0.0, "the pool grew for polling");
}

/// A GET on `c`, or what went wrong instead (a closed connection is what
/// a client that thinks between requests must never meet).
fn try_get(c: &mut Client, target: &str) -> Result<(), String> {
    c.send(format!("GET {target} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes());
    let mut head_end = None;
    while head_end.is_none() {
        match c.try_fill() {
            Ok(0) => return Err("closed without an answer".into()),
            Ok(_) => head_end = common::find(&c.buf, b"\r\n\r\n"),
            Err(e) => return Err(format!("{e} without an answer")),
        }
    }
    let r = c.response(false);
    if r.status == 200 {
        Ok(())
    } else {
        Err(format!("status {}", r.status))
    }
}

#[test]
fn a_shrinking_pool_hands_idle_connections_over_and_loses_no_request() {
    let o = common::origin("o");
    let p = elastic(
        &o,
        &[
            "--workers",
            "1..2",
            "--scale-high",
            "0.15",
            "--scale-low",
            "0.08",
            "--scale-up-after",
            "200",
            "--scale-down-after",
            "600",
        ],
    );
    let (addr, admin) = (p.addr(), p.admin_addr());
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let heavy: Vec<_> = (0..8)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || load(addr, stop, done, Duration::ZERO))
        })
        .collect();
    wait_for(Duration::from_secs(20), "a scale-up", || {
        metric(admin, "ringmux_workers") == 2.0
    });
    stop.store(true, Ordering::SeqCst);
    for t in heavy {
        t.join().expect("a request failed while workers grew");
    }
    // Keep-alive clients spread over both workers, served once, then
    // thinking for longer than a retiring worker used to keep them.
    let mut clients: Vec<Client> = (0..24).map(|_| Client::connect(addr)).collect();
    for c in &mut clients {
        try_get(c, "/first").expect("served");
    }
    wait_for(
        Duration::from_secs(30),
        "the pool back to one worker",
        || metric(admin, "ringmux_workers") == 1.0,
    );
    thread::sleep(Duration::from_millis(1500));
    let failed: Vec<String> = clients
        .iter_mut()
        .enumerate()
        .filter_map(|(i, c)| {
            try_get(c, "/after")
                .err()
                .map(|e| format!("client {i}: {e}"))
        })
        .collect();
    assert!(failed.is_empty(), "{failed:?}\n{}", p.stderr_text());
    assert!(
        metric(admin, "ringmux_client_handovers_total") >= 1.0,
        "the retiring worker held some of them"
    );
}
