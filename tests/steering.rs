//! Steering a running proxy, over real sockets and the built binary: a
//! config file, SIGHUP reloads (under load, swapping origins, refusing a
//! bad file), SIGTERM's graceful drain and its deadline, and `--check`.

mod common;

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::scripted::{ok, After, Gate, Scripted};
use common::{upstreams, Client, ConfigFile, Proc};

/// An origin that names itself in every body.
fn named_origin(name: &'static str) -> Scripted {
    Scripted::start(move |_, s| {
        let _ = s.write_all(&ok(name));
        After::KeepOpen
    })
}

fn proxy_with_file(file: &ConfigFile, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--config",
        file.path(),
    ];
    args.extend_from_slice(extra);
    Proc::start(common::PROXY, &args, 1)
}

#[test]
fn twenty_reloads_under_load_lose_nothing() {
    let a = named_origin("a");
    let b = named_origin("b");
    let file = ConfigFile::new(&upstreams(&[a.addr]));
    let p = proxy_with_file(&file, &[]);
    let addr = p.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicUsize::new(0));
    let load: Vec<_> = (0..32)
        .map(|_| {
            let (stop, done) = (Arc::clone(&stop), Arc::clone(&done));
            thread::spawn(move || {
                let mut c = Client::connect(addr);
                while !stop.load(Ordering::SeqCst) {
                    let r = c.get("/x");
                    assert_eq!(r.status, 200, "{}", r.body_str());
                    assert!(
                        r.body_str() == "a" || r.body_str() == "b",
                        "{}",
                        r.body_str()
                    );
                    done.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for i in 0..20 {
        // Alternate between one upstream and two, reweighted.
        let text = if i % 2 == 0 {
            format!(
                "pool_size = {}\n{}[[upstream]]\naddr = \"{}\"\nweight = 3\n",
                8 + i,
                upstreams(&[a.addr]),
                b.addr
            )
        } else {
            upstreams(&[a.addr])
        };
        file.write(&text);
        p.signal("HUP");
        p.wait_stderr("configuration reloaded", i + 1, Duration::from_secs(10));
        thread::sleep(Duration::from_millis(20));
    }
    stop.store(true, Ordering::SeqCst);
    for t in load {
        t.join()
            .expect("a request failed or a connection was reset during reloads");
    }
    assert!(done.load(Ordering::SeqCst) > 100);
    assert!(!p.stderr_text().contains("refused"), "{}", p.stderr_text());
}

#[test]
fn a_reload_that_swaps_origins_sends_new_requests_only_to_the_new_one() {
    let a = named_origin("a");
    let b = named_origin("b");
    let file = ConfigFile::new(&upstreams(&[a.addr]));
    let p = proxy_with_file(&file, &[]);
    let mut c = Client::connect(p.addr());
    for _ in 0..5 {
        assert_eq!(c.get("/").body_str(), "a");
    }
    let others: Vec<Client> = (0..4)
        .map(|_| {
            let mut c = Client::connect(p.addr());
            assert_eq!(c.get("/").body_str(), "a");
            c
        })
        .collect();
    assert!(a.open.load(Ordering::SeqCst) > 0);
    file.write(&upstreams(&[b.addr]));
    p.signal("HUP");
    p.wait_stderr("1 added, 1 removed", 1, Duration::from_secs(10));
    for _ in 0..20 {
        assert_eq!(c.get("/").body_str(), "b", "after the reload");
    }
    // A's idle connections were closed at the reload.
    let deadline = Instant::now() + Duration::from_secs(5);
    while a.open.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(a.open.load(Ordering::SeqCst), 0, "A's connections closed");
    drop(others);
}

#[test]
fn an_invalid_file_on_reload_keeps_the_running_configuration() {
    let a = named_origin("a");
    let file = ConfigFile::new(&upstreams(&[a.addr]));
    let p = proxy_with_file(&file, &[]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("/").body_str(), "a");
    file.write(&format!(
        "pool_size = 3\npipeline_depth = 0\n{}",
        upstreams(&[a.addr])
    ));
    p.signal("HUP");
    p.wait_stderr("reload refused", 1, Duration::from_secs(10));
    let err = p.stderr_text();
    assert!(
        err.contains("key `pipeline_depth` (line 2 of") && err.contains("at least 1"),
        "{err}"
    );
    file.write("[[upstream]]\naddr = \"127.0.0.1:1\"\nlisten = 3\n");
    p.signal("HUP");
    p.wait_stderr("reload refused", 2, Duration::from_secs(10));
    // A setting that needs a restart is refused too.
    file.write(&format!("ring_buffers = 256\n{}", upstreams(&[a.addr])));
    p.signal("HUP");
    p.wait_stderr("can only change with a restart", 1, Duration::from_secs(10));
    for _ in 0..5 {
        assert_eq!(c.get("/").body_str(), "a", "still served");
    }
}

#[test]
fn sighup_without_a_config_file_keeps_running() {
    let a = named_origin("a");
    let mut p = common::proxy(&[a.addr.to_string()]);
    let mut c = Client::connect(p.addr());
    assert_eq!(c.get("/").body_str(), "a");
    p.signal("HUP");
    p.wait_stderr("SIGHUP", 1, Duration::from_secs(10));
    assert!(
        p.wait_exit(Duration::from_millis(200)).is_none(),
        "it kept running"
    );
    assert_eq!(c.get("/").body_str(), "a");
}

#[test]
fn sigterm_finishes_the_request_in_flight_refuses_new_ones_and_exits_0() {
    let gate = Gate::default();
    let g = gate.clone();
    let origin = Scripted::start(move |req, s| {
        if req.target == "/slow" {
            g.pass();
        }
        let _ = s.write_all(&ok("done"));
        After::KeepOpen
    });
    let mut p = common::proxy(&[origin.addr.to_string()]);
    let addr = p.addr();
    // An idle keep-alive connection, and one with a request in flight.
    let mut idle = Client::connect(addr);
    assert_eq!(idle.get("/").status, 200);
    let mut busy = Client::connect(addr);
    busy.send(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(gate.wait_for_waiting(1));
    p.signal("TERM");
    p.wait_stderr("draining", 1, Duration::from_secs(5));
    // The idle one is closed at once; new connections are refused.
    idle.expect_closed();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => break,
            _ if Instant::now() > deadline => panic!("new connections are still taken"),
            _ => thread::sleep(Duration::from_millis(10)),
        }
    }
    assert!(
        p.wait_exit(Duration::from_millis(100)).is_none(),
        "waits for the slow one"
    );
    gate.open();
    let r = busy.response(false);
    assert_eq!((r.status, r.body_str().as_str()), (200, "done"));
    assert_eq!(r.header("connection"), Some("close"));
    busy.expect_closed();
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exited after the drain");
    assert_eq!(status.code(), Some(0), "{}", p.stderr_text());
}

#[test]
fn the_drain_timeout_is_honoured() {
    let gate = Gate::default();
    let g = gate.clone();
    let origin = Scripted::start(move |_, s| {
        g.pass();
        let _ = s.write_all(&ok("late"));
        After::KeepOpen
    });
    let mut p = common::proxy_with(&[origin.addr.to_string()], &["--drain-timeout", "300"]);
    let mut busy = Client::connect(p.addr());
    busy.send(b"GET /never HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(gate.wait_for_waiting(1));
    let t0 = Instant::now();
    p.signal("TERM");
    let status = p
        .wait_exit(Duration::from_secs(10))
        .expect("exited at the deadline");
    assert_eq!(status.code(), Some(0));
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "not before the deadline"
    );
    // The request left over was cut: the connection is closed.
    let got = common::read_to_close(&mut busy.stream, Duration::from_secs(5));
    assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
    gate.open();
}

#[test]
fn a_second_sigterm_or_a_sigquit_exits_at_once() {
    let gate = Gate::default();
    let g = gate.clone();
    let origin = Scripted::start(move |_, s| {
        g.pass();
        let _ = s.write_all(&ok("late"));
        After::KeepOpen
    });
    for second in ["TERM", "QUIT"] {
        let mut p = common::proxy(&[origin.addr.to_string()]);
        let mut busy = Client::connect(p.addr());
        busy.send(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n");
        thread::sleep(Duration::from_millis(50));
        if second == "TERM" {
            p.signal("TERM");
            p.wait_stderr("draining", 1, Duration::from_secs(5));
        }
        p.signal(second);
        let status = p.wait_exit(Duration::from_secs(5)).expect("exited at once");
        assert_eq!(status.code(), Some(0));
        assert!(
            p.stderr_text().contains("exiting now"),
            "{}",
            p.stderr_text()
        );
    }
    gate.open();
}

#[test]
fn check_validates_the_file_and_names_the_key_and_line() {
    let good = ConfigFile::new("pool_size = 5\n[[upstream]]\naddr = \"127.0.0.1:9\"\nweight = 2\n");
    let (status, out, err) =
        common::run_to_exit(common::PROXY, &["--check", "--config", good.path()]);
    assert_eq!(status.code(), Some(0), "{err}");
    assert!(
        out.contains("pool_size: 5") && out.contains("configuration ok"),
        "{out}"
    );
    let bad = ConfigFile::new("pool_size = 5\n[[upstream]]\naddr = \"127.0.0.1:9\"\nweight = 0\n");
    let (status, _, err) = common::run_to_exit(common::PROXY, &["--check", "--config", bad.path()]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("line 2") && err.contains("weight"), "{err}");
    let typo = ConfigFile::new("\npool_sise = 5\n");
    let (status, _, err) =
        common::run_to_exit(common::PROXY, &["--check", "--config", typo.path()]);
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("line 2") && err.contains("pool_sise"), "{err}");
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &["--check", "--config", "/nonexistent/ringmux.toml"],
    );
    assert_eq!(status.code(), Some(2));
    assert!(err.contains("cannot read"), "{err}");
}

#[test]
fn a_port_another_process_listens_on_is_not_shared_silently() {
    // A plain listener and a SO_REUSEPORT one (as nginx's `reuseport`, or
    // another ringmux, would leave): joining the group would take part of
    // that process's clients without a word.
    for reuseport in [false, true] {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        s.set_reuse_address(true).unwrap();
        if reuseport {
            s.set_reuse_port(true).unwrap();
        }
        s.bind(&std::net::SocketAddr::from(([127, 0, 0, 1], 0)).into())
            .unwrap();
        s.listen(16).unwrap();
        let addr = s.local_addr().unwrap().as_socket().unwrap().to_string();
        let origin = common::origin("o");
        let up = origin.addr().to_string();
        let (status, _, err) = common::run_to_exit(
            common::PROXY,
            &[
                "--listen",
                &addr,
                "--upstream",
                &up,
                "--workers",
                "1",
                "--no-pin",
            ],
        );
        assert_ne!(status.code(), Some(0), "reuseport {reuseport}");
        assert!(
            err.contains("another process listens there") && err.contains(&addr),
            "reuseport {reuseport}: {err}"
        );
        if reuseport {
            // On purpose, it may.
            let p = common::Proc::start(
                common::PROXY,
                &[
                    "--listen",
                    &addr,
                    "--upstream",
                    &up,
                    "--workers",
                    "1",
                    "--no-pin",
                    "--reuse-port-shared",
                ],
                1,
            );
            drop(p);
        }
    }
}
