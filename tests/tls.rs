//! TLS termination with real clients over loopback: curl (`--cacert`,
//! SNI through `--resolve`), `openssl s_client` (certificates by SNI,
//! resumption with `-sess_out`/`-sess_in`), Python's `ssl`; plain HTTP,
//! garbage and silence sent to the TLS port; a Host the certificate does
//! not cover (421); reloads of certificates (a bad pair keeps the old
//! one); `--check` on a certificate about to expire. Certificates are made
//! by the tests (`common::certs`).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::certs::{Leaf, TestCa};
use common::{origin, ConfigFile, Proc};

/// ringmux on one TLS port (`leaves`, the first the default) and a plain
/// one, in front of an origin; `extra` flags.
fn tls_proxy(o: &Proc, leaves: &[&Leaf], extra: &[&str]) -> Proc {
    tls_proxy_to(&o.addr().to_string(), "", leaves, extra)
}

/// The same in front of `upstream`, with `options` (`,strict_sni`) after
/// the listener's `tls`.
fn tls_proxy_to(upstream: &str, options: &str, leaves: &[&Leaf], extra: &[&str]) -> Proc {
    let mut listen = format!("127.0.0.1:0,tls{options}");
    for l in leaves {
        listen += &format!(",cert={},key={}", l.cert.display(), l.key.display());
    }
    let mut args = vec![
        "--listen",
        &listen,
        "--workers",
        "1",
        "--no-pin",
        "--upstream",
        upstream,
        "--admin",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    Proc::start(common::PROXY, &args, 1)
}

/// curl over TLS to `host` (resolved to `addr`), trusting `ca`: status,
/// headers and body.
fn curl(ca: &TestCa, addr: SocketAddr, host: &str, path: &str, extra: &[&str]) -> (String, String) {
    let out = Command::new("curl")
        .args(["-sS", "-i", "--max-time", "5", "--cacert"])
        .arg(ca.ca_file())
        .args(["--resolve", &format!("{host}:{}:127.0.0.1", addr.port())])
        .args(extra)
        .arg(format!("https://{host}:{}{path}", addr.port()))
        .output()
        .expect("curl runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Python running `script` with `args`: what it printed (stdout, stderr).
fn python(script: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("python3")
        .args(["-c", script])
        .args(args)
        .output()
        .expect("python3 runs");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `openssl s_client` to `addr` with `args`, sending `input`: what it
/// printed.
fn s_client(addr: SocketAddr, args: &[&str], input: &[u8]) -> String {
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    child.stdin.as_mut().unwrap().write_all(input).unwrap();
    // s_client reads stdin to its end, then closes.
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[test]
fn curl_gets_the_origin_over_tls_with_the_proxy_headers_and_hsts() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &["--hsts", "31536000"]);
    let (out, err) = curl(
        &ca,
        p.addr(),
        "site.test",
        "/head",
        &["-H", "X-Forwarded-Proto: http"],
    );
    std::thread::sleep(Duration::from_millis(300)); // (figures go out on the tick)
    assert!(out.starts_with("HTTP/1.1 200"), "{out}{err}");
    assert!(
        out.contains("Strict-Transport-Security: max-age=31536000\r\n"),
        "{out}"
    );
    // What the origin got (its /head body): the client's claim replaced.
    assert!(out.contains("X-Forwarded-Proto: https\r\n"), "{out}");
    assert!(!out.contains("X-Forwarded-Proto: http\r\n"), "{out}");
    assert!(
        out.contains("Forwarded: for=127.0.0.1;proto=https"),
        "{out}"
    );
    let handshakes = common::metric(
        p.admin_addr(),
        "ringmux_tls_handshakes_total{version=\"TLSv1.3\"}",
    );
    assert!(handshakes >= 1.0);
    // The status page says the same, and what the certificate covers.
    let mut admin = common::Client::connect(p.admin_addr());
    admin.send(format!("GET /status HTTP/1.1\r\nHost: {}\r\n\r\n", p.admin_addr()).as_bytes());
    let status = admin.response(false).body_str();
    let v: serde_json::Value =
        serde_json::from_str(&status).unwrap_or_else(|e| panic!("{e}: {status}"));
    let tls = &v["tls"];
    assert!(tls["versions"]["TLSv1.3"].as_u64() >= Some(1), "{tls}");
    assert_eq!(tls["certificates"][0]["names"][0], "site.test", "{tls}");
    let days = tls["certificates"][0]["days_left"].as_i64().unwrap();
    assert!((363..=365).contains(&days), "{tls}");
}

#[test]
fn the_certificate_follows_the_server_name_and_a_foreign_host_gets_421() {
    let ca = TestCa::new();
    let a = ca.leaf("a", &["a.test"]);
    let b = ca.leaf("b", &["*.b.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&a, &b], &[]);
    let subject = |sni: Option<&str>| {
        let mut args = vec!["-brief"];
        if let Some(n) = sni {
            args.extend_from_slice(&["-servername", n]);
        } else {
            args.push("-noservername");
        }
        let out = s_client(p.addr(), &args, b"");
        out.lines()
            .find(|l| l.contains("Peer certificate:"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(subject(Some("x.b.test")).contains("CN = *.b.test"));
    assert!(subject(Some("a.test")).contains("CN = a.test"));
    assert!(
        subject(None).contains("CN = a.test"),
        "the first is the default"
    );
    assert!(subject(Some("unknown.test")).contains("CN = a.test"));
    // Over a connection for a.test, a request for x.b.test is misdirected.
    let (out, _) = curl(&ca, p.addr(), "a.test", "/", &["-H", "Host: x.b.test"]);
    assert!(out.starts_with("HTTP/1.1 421"), "{out}");
    let (out, _) = curl(&ca, p.addr(), "x.b.test", "/", &["-H", "Host: y.b.test"]);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "the certificate covers it: {out}"
    );
}

#[test]
fn plain_http_garbage_and_silence_on_the_tls_port_close_and_are_counted() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &["--tls-handshake-timeout", "300"]);
    let read_all = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    };
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    let answer = read_all(s);
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        answer.contains("plain HTTP request sent to a TLS port"),
        "{answer}"
    );
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"\x16\x03\x01\x00\x05hello").unwrap();
    assert_eq!(read_all(s), "", "a broken handshake is closed");
    let s = TcpStream::connect(p.addr()).unwrap();
    assert_eq!(
        read_all(s),
        "",
        "silence is closed at the handshake timeout"
    );
    std::thread::sleep(Duration::from_millis(200));
    let metric = |reason: &str| {
        common::metric(
            p.admin_addr(),
            &format!("ringmux_tls_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(metric("plain_http"), 1.0);
    assert_eq!(metric("bad_record"), 1.0);
    assert_eq!(metric("handshake_timeout"), 1.0);
}

#[test]
fn sessions_resume_with_openssl_s_client() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &[]);
    let sess = ca.dir().join("session.pem");
    let sess = sess.to_str().unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    for version in ["-tls1_3", "-tls1_2"] {
        // (-ign_eof: wait for the answer after the request is sent.)
        let first = s_client(
            p.addr(),
            &[
                version,
                "-ign_eof",
                "-servername",
                "site.test",
                "-sess_out",
                sess,
            ],
            request,
        );
        assert!(first.contains("HTTP/1.1 200"), "{first}");
        let again = s_client(
            p.addr(),
            &[
                version,
                "-ign_eof",
                "-servername",
                "site.test",
                "-sess_in",
                sess,
            ],
            request,
        );
        assert!(again.contains("Reused, "), "{version}: {again}");
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(common::metric(p.admin_addr(), "ringmux_tls_resumed_total") >= 2.0);
}

#[test]
fn python_ssl_speaks_to_it() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &[]);
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port})), server_hostname='site.test')\n\
         s.sendall(b'GET / HTTP/1.1\\r\\nHost: site.test\\r\\nConnection: close\\r\\n\\r\\n')\n\
         data = b''\n\
         while True:\n    chunk = s.recv(65536)\n    if not chunk: break\n    data += chunk\n\
         print(s.version(), s.selected_alpn_protocol(), data.split(b'\\r\\n')[0].decode())\n",
        ca = ca.ca_file().display().to_string(),
        port = p.addr().port()
    );
    let (text, err) = python(&script, &[]);
    assert!(text.starts_with("TLSv1.3"), "{text}{err}");
    assert!(text.contains("HTTP/1.1 200 OK"), "{text}");
}

#[test]
fn certificates_are_read_again_on_reload_and_a_bad_pair_keeps_the_old_one() {
    let ca = TestCa::new();
    let first = ca.leaf("first", &["site.test"]);
    let o = origin("o");
    let file = ConfigFile::new(&format!(
        "[[listen]]\naddr = \"127.0.0.1:0\"\ntls = true\n[[listen.cert]]\ncert = \"{}\"\nkey = \"{}\"\n\n\
         [[upstream]]\naddr = \"{}\"\n",
        first.cert.display(),
        first.key.display(),
        o.addr()
    ));
    let p = Proc::start(
        common::PROXY,
        &["--workers", "1", "--no-pin", "--config", file.path()],
        1,
    );
    let serial = || {
        s_client(p.addr(), &["-servername", "site.test"], b"")
            .lines()
            .find(|l| l.contains("subject=") || l.contains("s:"))
            .unwrap_or_default()
            .to_string()
    };
    assert!(serial().contains("site.test"));
    // The same file names, a new certificate (other names) in them.
    let second = ca.leaf("second", &["site.test", "other.test"]);
    std::fs::copy(&second.cert, &first.cert).unwrap();
    std::fs::copy(&second.key, &first.key).unwrap();
    p.signal("HUP");
    p.wait_stderr("configuration reloaded", 1, Duration::from_secs(10));
    let (out, _) = curl(&ca, p.addr(), "other.test", "/", &[]);
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "the new certificate covers other.test: {out}"
    );
    // A key that is not the certificate's: refused, the running one stays.
    std::fs::copy(&ca.leaf("third", &["x.test"]).key, &first.key).unwrap();
    p.signal("HUP");
    p.wait_stderr("reload refused", 1, Duration::from_secs(10));
    let (out, _) = curl(&ca, p.addr(), "other.test", "/", &[]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[test]
fn check_warns_of_a_certificate_about_to_expire_and_of_an_expired_one() {
    let ca = TestCa::new();
    let soon = ca.leaf_valid("soon", &["soon.test"], -10, 3);
    let old = ca.leaf_valid("old", &["old.test"], -100, -5);
    for (leaf, want) in [
        (&soon, "soon.test) expires in"),
        (&old, "old.test) expired"),
    ] {
        let listen = format!(
            "127.0.0.1:0,tls,cert={},key={}",
            leaf.cert.display(),
            leaf.key.display()
        );
        let (status, _, err) = common::run_to_exit(
            common::PROXY,
            &["--listen", &listen, "--upstream", "127.0.0.1:9", "--check"],
        );
        assert_eq!(status.code(), Some(0), "{err}");
        assert!(err.contains(want), "{err}");
    }
    // A key that does not match: exit 2, naming the files.
    let listen = format!(
        "127.0.0.1:0,tls,cert={},key={}",
        soon.cert.display(),
        old.key.display()
    );
    let (status, _, err) = common::run_to_exit(
        common::PROXY,
        &["--listen", &listen, "--upstream", "127.0.0.1:9", "--check"],
    );
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(
        err.contains("--listen") && err.contains("soon.pem"),
        "{err}"
    );
}

#[test]
fn two_instances_with_one_ticket_key_file_resume_each_others_sessions() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let keys = ca.dir().join("tickets.keys");
    std::fs::write(&keys, format!("{}\n", "ab".repeat(32))).unwrap();
    let keys = keys.to_str().unwrap().to_string();
    let o = origin("o");
    let a = tls_proxy(&o, &[&leaf], &["--tls-ticket-key-file", &keys]);
    let b = tls_proxy(&o, &[&leaf], &["--tls-ticket-key-file", &keys]);
    let lonely = tls_proxy(&o, &[&leaf], &[]);
    let sess = ca.dir().join("shared-session.pem");
    let sess = sess.to_str().unwrap();
    let request = b"GET / HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n";
    for version in ["-tls1_3", "-tls1_2"] {
        let args =
            |mode: &'static str| vec![version, "-ign_eof", "-servername", "site.test", mode, sess];
        let first = s_client(a.addr(), &args("-sess_out"), request);
        assert!(first.contains("HTTP/1.1 200"), "{first}");
        let on_b = s_client(b.addr(), &args("-sess_in"), request);
        assert!(on_b.contains("Reused, "), "{version}: {on_b}");
        let elsewhere = s_client(lonely.addr(), &args("-sess_in"), request);
        assert!(
            elsewhere.contains("New, "),
            "{version}: another key: {elsewhere}"
        );
    }
}

#[test]
fn a_renegotiation_and_a_record_cut_short_close_and_are_counted() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &[]);
    // s_client renegotiates on a line `R` (TLS 1.2; 1.3 has none), read
    // apart from the request before it.
    let mut child = Command::new("openssl")
        .args([
            "s_client",
            "-tls1_2",
            "-servername",
            "site.test",
            "-connect",
        ])
        .arg(p.addr().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"GET / HTTP/1.1\r\nHost: site.test\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    stdin.write_all(b"R\n").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("HTTP/1.1 200"), "{text}");
    assert!(text.contains("RENEGOTIATING"), "{text}");
    // A ClientHello record that says 256 bytes and brings 20.
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"\x16\x03\x01\x01\x00").unwrap();
    // (A ClientHello of 252 bytes begins; 16 of them come.)
    s.write_all(&[1, 0, 0, 252]).unwrap();
    s.write_all(&[1u8; 16]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    drop(s);
    std::thread::sleep(Duration::from_millis(300));
    let metric = |reason: &str| {
        common::metric(
            p.admin_addr(),
            &format!("ringmux_tls_failures_total{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(metric("renegotiation"), 1.0);
    assert_eq!(metric("truncated"), 1.0);
}

/// Python's TLS over a socket it drives itself (a memory BIO), so that the
/// first bytes on the wire can be a PROXY header with the ClientHello in
/// the same segment, as balancers send them.
const PROXY_THEN_TLS: &str = r#"
import socket, ssl, sys
ca, port = sys.argv[1], int(sys.argv[2])
ctx = ssl.create_default_context(cafile=ca)
inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
tls = ctx.wrap_bio(inc, out, server_hostname='site.test')
s = socket.create_connection(('127.0.0.1', port), timeout=5)
try:
    tls.do_handshake()
except ssl.SSLWantReadError:
    pass
s.sendall(b'PROXY TCP4 192.0.2.7 127.0.0.1 5555 443\r\n' + out.read())
def pump():
    if out.pending:
        s.sendall(out.read())
    d = s.recv(65536)
    if not d:
        raise SystemExit('closed')
    inc.write(d)
while True:
    try:
        tls.do_handshake()
        break
    except ssl.SSLWantReadError:
        pump()
tls.write(b'GET /head HTTP/1.1\r\nHost: site.test\r\nConnection: close\r\n\r\n')
s.sendall(out.read())
data = b''
while True:
    try:
        chunk = tls.read(65536)
        if not chunk:
            break
        data += chunk
    except ssl.SSLWantReadError:
        try:
            pump()
        except SystemExit:
            break
    except ssl.SSLZeroReturnError:
        break
print(data.decode(errors='replace'))
"#;

#[test]
fn a_proxy_header_and_the_client_hello_in_one_segment() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &["--accept-proxy"]);
    let ca_file = ca.ca_file().display().to_string();
    let (text, err) = python(PROXY_THEN_TLS, &[&ca_file, &p.addr().port().to_string()]);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}{err}");
    // The origin saw the address the header carried.
    assert!(text.contains("X-Forwarded-For: 192.0.2.7\r\n"), "{text}");
}

#[test]
fn a_client_gone_during_the_handshake_is_closed_at_once_and_counted_once() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &["--tls-handshake-timeout", "5000"]);
    // Connect and close (a TCP health check); half a ClientHello, then FIN.
    drop(TcpStream::connect(p.addr()).unwrap());
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.write_all(b"\x16\x03\x01\x02\x00\x01\x00").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut rest = Vec::new();
    let started = std::time::Instant::now();
    let _ = s.read_to_end(&mut rest);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "closed after {:?}",
        started.elapsed()
    );
    std::thread::sleep(Duration::from_millis(300));
    let metric = |name: &str| common::metric(p.admin_addr(), name);
    assert_eq!(
        metric("ringmux_tls_failures_total{reason=\"truncated\"}"),
        1.0
    );
    assert_eq!(metric("ringmux_client_connections"), 0.0);
    let mut c = common::Client::connect(p.admin_addr());
    c.send(format!("GET /metrics HTTP/1.1\r\nHost: {}\r\n\r\n", p.admin_addr()).as_bytes());
    let all = c.response(false).body_str();
    assert!(!all.contains("handshake_timeout"), "{all}");
}

#[test]
fn a_handshake_with_nothing_in_common_gets_an_alert_that_says_so() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let p = tls_proxy(&o, &[&leaf], &[]);
    // TLS 1.2 with a CBC suite only: ringmux offers AEADs only.
    let out = s_client(
        p.addr(),
        &[
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA",
            "-servername",
            "site.test",
        ],
        b"",
    );
    assert!(out.contains("alert handshake failure"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        common::metric(
            p.admin_addr(),
            "ringmux_tls_failures_total{reason=\"incompatible\"}"
        ),
        1.0
    );
}

/// An origin that switches protocols, says "bye" and shuts its write side.
fn upgrade_origin_saying_bye() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        s.write_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye",
        )
        .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    });
    addr
}

#[test]
fn a_tunnel_the_origin_ends_ends_with_close_notify_to_a_tls_client() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let origin = upgrade_origin_saying_bye();
    let p = tls_proxy_to(&origin.to_string(), "", &[&leaf], &[]);
    // With ragged EOFs not suppressed, a FIN without close_notify raises.
    let script = format!(
        "import socket, ssl\n\
         ctx = ssl.create_default_context(cafile={ca:?})\n\
         s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', {port}), timeout=5), server_hostname='site.test', suppress_ragged_eofs=False)\n\
         s.sendall(b'GET /ws HTTP/1.1\\r\\nHost: site.test\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n\\r\\n')\n\
         data, end = b'', 'none'\n\
         try:\n    while True:\n        c = s.recv(65536)\n        if not c:\n            end = 'close_notify'\n            break\n        data += c\n\
         except ssl.SSLEOFError:\n    end = 'fin without close_notify'\n\
         print(data.split(b'\\r\\n')[0].decode(), data.endswith(b'bye'), end)\n",
        ca = ca.ca_file().display().to_string(),
        port = p.addr().port()
    );
    let (text, err) = python(&script, &[]);
    assert_eq!(
        text.trim(),
        "HTTP/1.1 101 Switching Protocols True close_notify",
        "{err}"
    );
}

#[test]
fn strict_sni_refuses_names_no_certificate_covers() {
    let ca = TestCa::new();
    let leaf = ca.leaf("site", &["site.test"]);
    let o = origin("o");
    let upstream = o.addr().to_string();
    let p = tls_proxy_to(&upstream, ",strict_sni", &[&leaf], &[]);
    let (out, err) = curl(&ca, p.addr(), "site.test", "/", &[]);
    assert!(out.starts_with("HTTP/1.1 200"), "{out}{err}");
    let refused = s_client(p.addr(), &["-servername", "other.test"], b"");
    assert!(refused.contains("alert"), "{refused}");
    let none = s_client(p.addr(), &["-noservername"], b"");
    assert!(none.contains("alert"), "{none}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        common::metric(
            p.admin_addr(),
            "ringmux_tls_failures_total{reason=\"unknown_sni\"}"
        ),
        2.0
    );
    // The flag names itself when misused.
    let bad = common::run_to_exit(
        common::PROXY,
        &[
            "--listen",
            "127.0.0.1:0,tls,strict",
            "--upstream",
            &upstream,
        ],
    );
    assert_eq!(bad.0.code(), Some(2), "{}", bad.2);
    assert!(bad.2.contains("strict_sni"), "{}", bad.2);
}
