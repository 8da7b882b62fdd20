//! The PROXY protocol both ways over real sockets: HAProxy in TCP mode in
//! front of ringmux (`send-proxy-v2` into `--accept-proxy`), v1 lines and
//! bad headers sent by hand, and ringmux's `send_proxy` into a real nginx
//! that listens with `proxy_protocol`. Clients bind to 127.0.0.2/3 so the
//! address carried is told apart from the connection's own.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::haproxy::Haproxy;
use common::nginx::Nginx;
use common::{origin, proxy_with, Client, ConfigFile, Proc};

/// A connection to `to` from `from` (a loopback address of its own).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    s.bind(&SocketAddr::from((from, 0)).into()).unwrap();
    s.connect(&to.into()).unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

/// Send `bytes` on `s` and read to the close: the whole answer.
fn exchange(mut s: TcpStream, bytes: &[u8]) -> String {
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

const GET_HEAD: &[u8] = b"GET /head HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";

#[test]
fn behind_haproxy_the_client_is_who_the_proxy_header_says() {
    let o = origin("o");
    let p = proxy_with(
        &[o.addr().to_string()],
        &["--accept-proxy", "--admin", "127.0.0.1:0"],
    );
    let h = Haproxy::start(&format!(
        "frontend f\n  mode tcp\n  bind {{addr}}\n  default_backend b\n\n\
         backend b\n  mode tcp\n  server r {} send-proxy-v2\n",
        p.addr()
    ));
    let answer = exchange(connect_from([127, 0, 0, 2], h.addr()), GET_HEAD);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The origin's `/head` body: what ringmux forwarded.
    assert!(
        answer.contains("X-Forwarded-For: 127.0.0.2\r\n"),
        "{answer}"
    );
    assert!(answer.contains("Forwarded: for=127.0.0.2;"), "{answer}");
}

#[test]
fn a_v1_line_is_read_and_a_missing_or_bad_header_closes_the_connection() {
    let o = origin("o");
    let p = proxy_with(
        &[o.addr().to_string()],
        &["--accept-proxy", "--admin", "127.0.0.1:0"],
    );
    let mut with_v1 = b"PROXY TCP4 192.0.2.7 192.0.2.1 40000 80\r\n".to_vec();
    with_v1.extend_from_slice(GET_HEAD);
    let answer = exchange(TcpStream::connect(p.addr()).unwrap(), &with_v1);
    assert!(
        answer.contains("X-Forwarded-For: 192.0.2.7\r\n"),
        "{answer}"
    );
    // The header in pieces, then requests on the same connection.
    let mut c = Client::connect(p.addr());
    c.send(b"PROXY TCP4 192.0.2.8 ");
    std::thread::sleep(Duration::from_millis(50));
    c.send(b"192.0.2.1 40001 80\r\nGET /head HTTP/1.1\r\nHost: h\r\n\r\n");
    assert!(c
        .response(false)
        .body_str()
        .contains("X-Forwarded-For: 192.0.2.8\r\n"));
    for bad in [GET_HEAD, b"PROXY TCP4 999.0.2.7 192.0.2.1 1 2\r\n"] {
        let answer = exchange(TcpStream::connect(p.addr()).unwrap(), bad);
        assert_eq!(answer, "", "nothing is answered or forwarded");
    }
    std::thread::sleep(Duration::from_millis(300));
    let errors = common::metric(p.admin_addr(), "ringmux_proxy_header_errors_total");
    assert_eq!(errors, 2.0);
}

/// ringmux with `send_proxy = version` in front of an nginx that listens
/// with `proxy_protocol` and answers with the address the header gave.
fn through_to_nginx(version: &str) {
    let nginx = Nginx::start(
        "server { listen {addr} proxy_protocol; \
         location / { return 200 \"$proxy_protocol_addr:$proxy_protocol_port\"; } }",
    );
    // Its health checks open with a LOCAL header too (nginx refuses a
    // connection without one).
    let file = ConfigFile::new(&format!(
        "send_proxy = \"{version}\"\n[[upstream]]\naddr = \"{}\"\nhealth_check = \"/\"\ninterval = 50\n",
        nginx.addr()
    ));
    let p = Proc::start(
        common::PROXY,
        &[
            "--listen",
            "127.0.0.1:0",
            "--workers",
            "1",
            "--no-pin",
            "--config",
            file.path(),
        ],
        1,
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(!p.stderr_text().contains("is down"), "{}", p.stderr_text());
    for _ in 0..3 {
        let s = connect_from([127, 0, 0, 3], p.addr());
        let port = s.local_addr().unwrap().port();
        let answer = exchange(s, b"GET / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{version}: {answer}");
        assert!(
            answer.ends_with(&format!("\r\n\r\n127.0.0.3:{port}")),
            "{version}: {answer}"
        );
    }
}

#[test]
fn send_proxy_v1_names_the_client_to_nginx() {
    through_to_nginx("v1");
}

#[test]
fn send_proxy_v2_names_the_client_to_nginx() {
    through_to_nginx("v2");
}
