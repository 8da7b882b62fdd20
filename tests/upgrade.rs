//! Upgrade (WebSocket-style) through the proxy: an accepted upgrade turns
//! the client and upstream connections into a byte tunnel through the same
//! io_uring path; a refused one leaves the connection serving requests.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::Duration;

/// An origin that answers an upgrade request to `/ws` with 101 and then
/// echoes every byte back, upper-cased; `/plain` gets a normal response.
fn upgrade_origin() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    if s.read(&mut b).unwrap_or(0) == 0 {
                        return;
                    }
                    head.push(b[0]);
                }
                let head = String::from_utf8_lossy(&head).to_lowercase();
                if !head.starts_with("get /ws ") {
                    let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nplain");
                    return;
                }
                assert!(head.contains("\r\nupgrade: websocket\r\n"), "{head}");
                assert!(head.contains("\r\nconnection: upgrade\r\n"), "{head}");
                let _ = s.write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
                );
                let mut buf = [0u8; 65536];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            buf[..n].make_ascii_uppercase();
                            if s.write_all(&buf[..n]).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    addr
}

const UPGRADE: &[u8] =
    b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";

#[test]
fn an_accepted_upgrade_becomes_a_two_way_tunnel() {
    let origin = upgrade_origin();
    // A short request deadline must not cut a tunnel.
    let p = common::proxy_with(&[origin.to_string()], &["--request-timeout", "300"]);
    let mut s = TcpStream::connect(p.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed during the 101");
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert!(head.contains("Upgrade: websocket"), "{head}");
    // Several round trips, one after the request deadline has passed, and a
    // large message that needs backpressure both ways.
    for (i, msg) in [b"hello".to_vec(), b"again".to_vec(), vec![b'q'; 3 << 20]]
        .into_iter()
        .enumerate()
    {
        if i == 1 {
            thread::sleep(Duration::from_millis(600));
        }
        let mut writer = s.try_clone().unwrap();
        let len = msg.len();
        let w = thread::spawn(move || writer.write_all(&msg).unwrap());
        let mut got = vec![0u8; len];
        s.read_exact(&mut got).unwrap();
        w.join().unwrap();
        assert!(got.iter().all(|c| c.is_ascii_uppercase()), "round trip {i}");
    }
    // Closing our end ends the tunnel; the proxy closes too.
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
}

#[test]
fn a_refused_upgrade_leaves_a_normal_connection() {
    let origin = upgrade_origin();
    let p = common::proxy(&[origin.to_string()]);
    let mut c = common::Client::connect(p.addr());
    c.send(b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n");
    let r = c.response(false);
    assert_eq!((r.status, r.body.as_slice()), (200, &b"plain"[..]));
}

/// Upgrade through the proxy at `addr`; returns the tunnel's socket.
fn open_tunnel(addr: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(UPGRADE).unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed during the 101");
        head.push(b[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101 "));
    s
}

#[test]
fn a_client_half_close_reaches_the_origin_and_ends_the_tunnel() {
    // The origin echoes until it reads EOF, then closes. Our FIN must reach
    // it at once (Node's `ws`, which does not ping, kept such connections
    // until the request deadline), and its answer and close come back.
    let origin = upgrade_origin();
    let p = common::proxy(&[origin.to_string()]);
    let baseline = common::fd_count(p.pid());
    let mut s = open_tunnel(p.addr());
    let fds_open = common::fd_count(p.pid());
    s.write_all(b"last words").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = common::read_to_close(&mut s, Duration::from_secs(5));
    assert_eq!(got, b"LAST WORDS", "the echo, then the close");
    assert!(fds_open > baseline);
    assert_eq!(
        common::fds_settle(p.pid(), baseline, Duration::from_secs(5)),
        baseline,
        "no fd outlives the tunnel"
    );
}

#[test]
fn an_origin_half_close_reaches_the_client_which_may_still_send() {
    // This origin says goodbye and shuts its write side first, then reads
    // what the client still has to say until the client's EOF.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let origin = l.local_addr().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if s.read(&mut b).unwrap_or(0) == 0 {
                return;
            }
            head.push(b[0]);
        }
        s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nbye")
            .unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        let res = s.read_to_end(&mut rest).map(|_| rest);
        let _ = tx.send(res.map_err(|e| e.to_string()));
    });
    let p = common::proxy(&[origin.to_string()]);
    let baseline = common::fd_count(p.pid());
    let mut s = open_tunnel(p.addr());
    let mut got = [0u8; 3];
    s.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"bye");
    let mut b = [0u8; 1];
    assert_eq!(s.read(&mut b).unwrap(), 0, "the origin's FIN came through");
    s.write_all(b"still here").unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let heard = rx.recv_timeout(common::TIMEOUT).expect("origin finished");
    assert_eq!(heard.as_deref(), Ok(&b"still here"[..]));
    assert_eq!(
        common::fds_settle(p.pid(), baseline, Duration::from_secs(5)),
        baseline,
        "both sides done: both connections closed"
    );
}

#[test]
fn a_fin_sent_before_the_switch_still_reaches_the_origin() {
    // The client sends its upgrade, early bytes and its FIN at once, before
    // the 101 comes back: the origin must still see the bytes and the FIN
    // (it echoes until EOF, then closes), and the client gets all of it.
    let origin = upgrade_origin();
    let p = common::proxy(&[origin.to_string()]);
    let baseline = common::fd_count(p.pid());
    let mut s = TcpStream::connect(p.addr()).unwrap();
    let mut all = UPGRADE.to_vec();
    all.extend_from_slice(b"early");
    s.write_all(&all).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let got = common::read_to_close(&mut s, Duration::from_secs(5));
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 101 "), "{text}");
    assert!(text.ends_with("\r\n\r\nEARLY"), "{text}");
    assert_eq!(
        common::fds_settle(p.pid(), baseline, Duration::from_secs(5)),
        baseline
    );
}

/// Upgrade through the proxy at `addr` and read the 101, or say what went
/// wrong instead.
fn try_tunnel(addr: SocketAddr) -> Result<TcpStream, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(UPGRADE).map_err(|e| format!("write: {e}"))?;
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            Ok(_) => return Err(format!("closed after {:?}", String::from_utf8_lossy(&head))),
            Err(e) => return Err(format!("{e} after {:?}", String::from_utf8_lossy(&head))),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101 ") {
        return Err(format!("not a 101: {:?}", String::from_utf8_lossy(&head)));
    }
    Ok(s)
}

/// A plain GET on a fresh connection, or what went wrong instead.
fn try_plain(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(common::TIMEOUT)).unwrap();
    s.write_all(b"GET /plain HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    if got.ends_with(b"\r\n\r\nplain") {
        Ok(())
    } else {
        Err(format!("got {:?}", String::from_utf8_lossy(&got)))
    }
}

#[test]
fn closing_tunnels_back_to_back_never_ends_a_strangers_connection() {
    // Each tunnel's end shuts both sockets' write sides and closes them. An
    // fd number is reused at once: a shutdown that ran after its socket's
    // close (the two were submitted unlinked) sent its FIN to whoever got
    // the number next, a fresh client or a fresh upstream connection, which
    // then closed without an answer.
    let origin = upgrade_origin();
    let p = common::proxy_with(&[origin.to_string()], &["--admin", "127.0.0.1:0"]);
    let addr = p.addr();
    let churn: Vec<_> = (0..2)
        .map(|_| {
            thread::spawn(move || {
                let mut failed = Vec::new();
                for _ in 0..150 {
                    match try_tunnel(addr) {
                        // The client closes right after the 101.
                        Ok(s) => drop(s),
                        Err(e) => failed.push(format!("tunnel: {e}")),
                    }
                }
                failed
            })
        })
        .collect();
    let beside = thread::spawn(move || {
        let mut failed = Vec::new();
        for _ in 0..300 {
            if let Err(e) = try_plain(addr) {
                failed.push(format!("plain GET: {e}"));
            }
        }
        failed
    });
    let mut failed = beside.join().unwrap();
    for t in churn {
        failed.extend(t.join().unwrap());
    }
    assert!(
        failed.is_empty(),
        "{} of 600 requests unanswered, first: {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    // The figures are published on the tick.
    thread::sleep(Duration::from_millis(250));
    let admin = p.admin_addr();
    assert_eq!(
        common::metric(admin, "ringmux_ring_quiet_failures_total"),
        0.0,
        "no close or cancel failed"
    );
    assert_eq!(
        common::metric(admin, "ringmux_ring_ebadf_total"),
        0.0,
        "no operation found its fd closed"
    );
}
