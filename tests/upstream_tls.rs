//! TLS to origins with a real nginx terminating it on loopback: requests
//! and large responses over it (and over TLS on both sides, with curl),
//! the name sent (SNI), sessions resumed when the pool opens connections
//! again, a certificate that is not trusted (502, counted; `verify = off`
//! takes it, with a warning), a plain-HTTP origin behind a TLS backend, a
//! client certificate for an origin that asks for one, health checks over
//! TLS, and a `[[backend]]` with `tls` in the config file. Certificates
//! are made by the tests (`common::certs`).

mod common;

use std::process::Command;
use std::time::Duration;

use common::certs::{Leaf, TestCa};
use common::nginx::Nginx;
use common::{metric, origin, ConfigFile, Proc};

/// nginx serving TLS with `leaf` on `{addr}`: `/sni` answers the server
/// name it was asked for, `/conn` its connection's serial number and
/// whether the session was resumed (`r` or `.`), other paths files from
/// `{dir}/www`; `extra` goes into its `server` block.
fn tls_origin(leaf: &Leaf, extra: &str) -> Nginx {
    Nginx::start(&format!(
        "server {{\n  listen {{addr}} ssl;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  \
         ssl_session_cache shared:S:1m;\n  root {{dir}}/www;\n  {extra}\n  \
         location = /sni {{ return 200 \"sni=$ssl_server_name\"; }}\n  \
         location = /conn {{ return 200 \"conn=$connection reused=$ssl_session_reused\"; }}\n}}",
        leaf.cert.display(),
        leaf.key.display()
    ))
}

/// ringmux on a plain port in front of `upstream` with `--upstream-tls
/// tls`, and `extra` flags.
fn proxy_to(upstream: &str, tls: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "1",
        "--no-pin",
        "--upstream",
        upstream,
        "--upstream-tls",
        tls,
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Proc::start(common::PROXY, &args, 1)
}

fn ca_settings(ca: &TestCa, more: &str) -> String {
    format!("ca_file={}{more}", ca.ca_file().display())
}

#[test]
fn requests_and_large_responses_cross_tls_to_nginx_with_the_name_asked_for() {
    let ca = TestCa::new();
    let leaf = ca.leaf("origin", &["origin.test"]);
    let n = tls_origin(&leaf, "");
    let big = common::noise(3 << 20, 7);
    n.put("www/big.bin", &big);
    n.put("www/small.txt", b"small\n");
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&ca, ",sni=origin.test"),
        &[],
    );
    let mut c = common::Client::connect(p.addr());
    let r = c.get("/sni");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "sni=origin.test");
    for _ in 0..3 {
        let r = c.get("/big.bin");
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), big.len());
        assert_eq!(common::hash(&r.body), common::hash(&big));
        assert_eq!(c.get("/small.txt").body_str(), "small\n");
    }
    // Pipelined requests, answered in order over the pool.
    let mut burst = Vec::new();
    for i in 0..20 {
        let path = if i % 5 == 0 { "/big.bin" } else { "/small.txt" };
        burst.extend_from_slice(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
    }
    c.send(&burst);
    for i in 0..20 {
        let r = c.response(false);
        assert_eq!(r.status, 200);
        if i % 5 == 0 {
            assert_eq!(common::hash(&r.body), common::hash(&big), "response {i}");
        } else {
            assert_eq!(r.body_str(), "small\n", "response {i}");
        }
    }
    std::thread::sleep(Duration::from_millis(300)); // (figures go out on the tick)
    assert!(metric(p.admin_addr(), "ringmux_upstream_tls_handshakes_total") >= 1.0);
}

#[test]
fn tls_on_both_sides_with_curl() {
    let ca = TestCa::new();
    let site = ca.leaf("site", &["site.test"]);
    let origin_leaf = ca.leaf("origin", &["127.0.0.1"]);
    let n = tls_origin(&origin_leaf, "");
    n.put("www/hello.txt", b"hello over tls twice\n");
    let listen = format!(
        "127.0.0.1:0,tls,cert={},key={}",
        site.cert.display(),
        site.key.display()
    );
    // No sni: the upstream's address is the name checked (an IP SAN).
    let upstream = n.addr().to_string();
    let settings = ca_settings(&ca, "");
    let p = Proc::start(
        common::PROXY,
        &[
            "--listen",
            &listen,
            "--workers",
            "1",
            "--no-pin",
            "--upstream",
            &upstream,
            "--upstream-tls",
            &settings,
        ],
        1,
    );
    let tls_port = p.addr().port();
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca.ca_file())
        .args(["--resolve", &format!("site.test:{tls_port}:127.0.0.1")])
        .arg(format!("https://site.test:{tls_port}/hello.txt"))
        .arg(format!("https://site.test:{tls_port}/sni"))
        .output()
        .expect("curl runs");
    let body = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        body,
        "hello over tls twice\nsni=",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn sessions_with_the_origin_resume_when_the_pool_connects_again() {
    let ca = TestCa::new();
    let leaf = ca.leaf("origin", &["origin.test"]);
    // One request per connection: every request after the first needs a
    // new connection, and may resume.
    let n = tls_origin(&leaf, "keepalive_requests 1;");
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&ca, ",sni=origin.test"),
        &[],
    );
    let mut reused = 0;
    for _ in 0..6 {
        let r = common::get(p.addr(), "/conn");
        assert_eq!(r.status, 200, "{}", r.body_str());
        reused += usize::from(r.body_str().ends_with("reused=r"));
    }
    assert!(reused >= 4, "sessions resumed on {reused} of 6 connections");
    std::thread::sleep(Duration::from_millis(300));
    let resumed = metric(p.admin_addr(), "ringmux_upstream_tls_resumed_total");
    assert!(resumed >= 4.0, "{resumed}");
}

#[test]
fn an_untrusted_certificate_gets_502_and_is_counted_and_verify_off_takes_it() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let leaf = other.leaf("origin", &["origin.test"]);
    let n = tls_origin(&leaf, "");
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&ca, ",sni=origin.test"),
        &[],
    );
    let r = common::get(p.addr(), "/sni");
    assert_eq!(r.status, 502);
    assert!(
        r.body_str()
            .contains("upstream TLS failed: its certificate was not accepted"),
        "{}",
        r.body_str()
    );
    std::thread::sleep(Duration::from_millis(300));
    let failures = metric(
        p.admin_addr(),
        "ringmux_upstream_tls_failures_total{reason=\"bad_certificate\"}",
    );
    assert!(failures >= 1.0);
    drop(p);

    // The right CA, the wrong name.
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&other, ",sni=elsewhere.test"),
        &[],
    );
    assert_eq!(common::get(p.addr(), "/sni").status, 502);
    drop(p);

    let p = proxy_to(&n.addr().to_string(), "verify=off,sni=any.test", &[]);
    let r = common::get(p.addr(), "/sni");
    assert_eq!(r.status, 200);
    assert_eq!(r.body_str(), "sni=any.test");
    assert!(
        p.stderr_text().contains("TLS with verify off"),
        "{}",
        p.stderr_text()
    );
}

#[test]
fn a_plain_origin_behind_a_tls_backend_gets_502_not_a_hang() {
    let o = origin("plain");
    let p = proxy_to(&o.addr().to_string(), "verify=off", &[]);
    let r = common::get(p.addr(), "/");
    assert_eq!(r.status, 502);
    assert!(
        r.body_str().contains("does it speak TLS?"),
        "{}",
        r.body_str()
    );
}

#[test]
fn a_client_certificate_for_an_origin_that_asks_for_one() {
    let ca = TestCa::new();
    let leaf = ca.leaf("origin", &["origin.test"]);
    let client = ca.leaf("client", &["ringmux.test"]);
    let n = tls_origin(
        &leaf,
        &format!(
            "ssl_client_certificate {};\n  ssl_verify_client on;",
            ca.ca_file().display()
        ),
    );
    let with = ca_settings(
        &ca,
        &format!(
            ",sni=origin.test,client_cert={},client_key={}",
            client.cert.display(),
            client.key.display()
        ),
    );
    let p = proxy_to(&n.addr().to_string(), &with, &[]);
    assert_eq!(common::get(p.addr(), "/sni").body_str(), "sni=origin.test");
    drop(p);
    // Without one, nginx says no (its own 400).
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&ca, ",sni=origin.test"),
        &[],
    );
    let r = common::get(p.addr(), "/sni");
    assert_eq!(r.status, 400);
    assert!(r.body_str().contains("No required SSL certificate"));
}

#[test]
fn health_checks_go_over_tls_and_a_backend_table_takes_tls() {
    let ca = TestCa::new();
    let leaf = ca.leaf("origin", &["origin.test"]);
    let good = tls_origin(&leaf, "location = /health { return 200 ok; }");
    let other = TestCa::new();
    let stranger = other.leaf("stranger", &["origin.test"]);
    let bad = tls_origin(&stranger, "location = /health { return 200 ok; }");
    let cfg = ConfigFile::new(&format!(
        "listen = \"127.0.0.1:0\"\nworkers = 1\nadmin = \"127.0.0.1:0\"\n\
         [[backend]]\nname = \"secure\"\n\
         tls = {{ sni = \"origin.test\", ca_file = \"{}\" }}\n\
         [[backend.upstream]]\naddr = \"{}\"\nhealth_check = \"/health\"\ninterval = 100\nfall = 1\n\
         [[backend.upstream]]\naddr = \"{}\"\nhealth_check = \"/health\"\ninterval = 100\nfall = 1\n\
         [[route]]\npath = \"/\"\nbackend = \"secure\"\n",
        ca.ca_file().display(),
        good.addr(),
        bad.addr()
    ));
    let p = Proc::start(common::PROXY, &["--config", cfg.path(), "--no-pin"], 1);
    // The stranger's checks fail over TLS: it leaves rotation, and every
    // request goes to the good one.
    std::thread::sleep(Duration::from_millis(600));
    for _ in 0..10 {
        let r = common::get(p.addr(), "/sni");
        assert_eq!(r.status, 200, "{}", r.body_str());
        assert_eq!(r.body_str(), "sni=origin.test");
    }
    let up = |addr: std::net::SocketAddr| {
        metric(
            p.admin_addr(),
            &format!("ringmux_upstream_up{{upstream=\"secure/{addr}\"}}"),
        )
    };
    assert_eq!(up(good.addr()), 1.0);
    assert_eq!(up(bad.addr()), 0.0);
}

#[test]
fn bad_upstream_tls_settings_name_themselves_and_exit_2() {
    for (args, says) in [
        (vec!["--upstream-tls", "cafile=/x"], "unknown key `cafile`"),
        (
            vec!["--upstream-tls", "ca_file=/nonexistent/ca.pem"],
            "/nonexistent/ca.pem",
        ),
        (
            vec!["--upstream-tls", "client_cert=/c.pem"],
            "client_cert and client_key go together",
        ),
    ] {
        let mut all = vec!["--upstream", "127.0.0.1:9", "--check"];
        all.extend(args);
        let (status, _, err) = common::run_to_exit(common::PROXY, &all);
        assert_eq!(status.code(), Some(2), "{err}");
        assert!(err.contains("--upstream-tls"), "{err}");
        assert!(err.contains(says), "{err}");
    }
    let cfg = ConfigFile::new(
        "[[backend]]\nname = \"b\"\ntls = { verify = \"no\" }\n\
         [[backend.upstream]]\naddr = \"127.0.0.1:9\"\n",
    );
    let (status, _, err) = common::run_to_exit(common::PROXY, &["--config", cfg.path(), "--check"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("tls.verify"), "{err}");
    assert!(
        err.contains("line 1 of"),
        "the backend's line is named: {err}"
    );
}

#[test]
fn http2_to_a_tls_origin_is_chosen_by_alpn() {
    let ca = TestCa::new();
    let leaf = ca.leaf("origin", &["origin.test"]);
    let n = Nginx::start(&format!(
        "server {{\n  listen {{addr}} ssl http2;\n  ssl_certificate {};\n  ssl_certificate_key {};\n  \
         root {{dir}}/www;\n  \
         location = /proto {{ return 200 \"$server_protocol $ssl_server_name\"; }}\n}}",
        leaf.cert.display(),
        leaf.key.display()
    ));
    let big = common::noise(1 << 20, 3);
    n.put("www/big.bin", &big);
    let p = proxy_to(
        &n.addr().to_string(),
        &ca_settings(&ca, ",sni=origin.test"),
        &["--upstream-protocol", "h2"],
    );
    let handles: Vec<_> = (0..8)
        .map(|_| {
            let addr = p.addr();
            std::thread::spawn(move || common::Client::connect(addr).get("/proto").body_str())
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), "HTTP/2.0 origin.test");
    }
    let r = common::Client::connect(p.addr()).get("/big.bin");
    assert_eq!(common::hash(&r.body), common::hash(&big));
    std::thread::sleep(Duration::from_millis(300)); // (figures go out on the tick)
    assert!(metric(p.admin_addr(), "ringmux_upstream_h2_streams_total") >= 9.0);
    assert!(metric(p.admin_addr(), "ringmux_upstream_connections_opened_total") <= 2.0);
}
