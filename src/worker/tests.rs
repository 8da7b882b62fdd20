//! The dispatch core without sockets: inputs in, actions out. These cover
//! the transitions that recursion used to hide: a client closing while its
//! exchange waits for a connection, an upstream failing while a waiter is
//! served, stale completions, stray bytes on idle connections, reloads and
//! drains.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;

use super::core::{Action, ClientId, ConnId, Core, Input, Recv, Target};
use crate::config::{Args, Config};
use crate::reactor::RecvBuf;

/// A real descriptor (of /dev/null) standing for a socket: the core only
/// names it, and it must be closable.
fn fake_fd() -> OwnedFd {
    std::fs::File::open("/dev/null").expect("/dev/null").into()
}

fn fake_socket(_: SocketAddr, _: usize) -> io::Result<OwnedFd> {
    Ok(fake_fd())
}

/// A configuration with `upstream` (and `extra` flags).
fn config_with(upstream: &str, extra: &[&str]) -> Config {
    let argv = ["ringmux", "--upstream", upstream]
        .into_iter()
        .chain(extra.iter().copied());
    Args::try_parse_from(argv).unwrap().validate().unwrap()
}

fn config(extra: &[&str]) -> Config {
    config_with("127.0.0.1:9001", extra)
}

/// A core, what it asked for so far, and what it sent (sends complete at
/// the end of each turn, as a fast peer would take them).
struct Rig {
    core: Core,
    now: Instant,
    actions: Vec<Action>,
    wire: HashMap<u64, Vec<u8>>,
    /// Fds the core closed (their descriptors stay open in `actions`, so
    /// no number is reused within a test): no action may name one again.
    gone: std::collections::HashSet<RawFd>,
}

/// The fd an action names, if it names one.
fn fd_of(a: &Action) -> Option<RawFd> {
    match a {
        Action::Recv { fd, .. }
        | Action::CancelRecv { fd, .. }
        | Action::Send { fd, .. }
        | Action::SendSegs { fd, .. }
        | Action::Connect { fd, .. }
        | Action::CancelAll { fd }
        | Action::Shutdown { fd } => Some(*fd),
        Action::Close { fd } | Action::HandOver { fd, .. } => Some(fd.as_raw_fd()),
        Action::Recycle(_) => None,
    }
}

impl Rig {
    fn new(extra: &[&str]) -> Rig {
        Rig::with_config(config(extra))
    }

    fn with_config(cfg: Config) -> Rig {
        let now = Instant::now();
        let mut core = Core::new(Arc::new(cfg), 1024, now, 0, fake_socket);
        core.begin_turn(now);
        Rig {
            core,
            now,
            actions: Vec::new(),
            wire: HashMap::new(),
            gone: Default::default(),
        }
    }

    /// Every send asked for completes: its bytes go on the wire.
    fn complete_sends(&mut self) {
        let sends: Vec<(u64, Vec<u8>)> = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Send { token, buf, .. } => Some((*token, buf.clone())),
                _ => None,
            })
            .collect();
        self.actions.retain(|a| !matches!(a, Action::Send { .. }));
        for (token, bytes) in sends {
            self.wire
                .entry(token)
                .or_default()
                .extend_from_slice(&bytes);
            let input = match Target::of(token) {
                Target::Client(client) => Input::ClientSent {
                    client,
                    result: Ok(()),
                    spare: None,
                    lent: 0,
                },
                Target::Upstream(conn) => Input::UpstreamSent {
                    conn,
                    result: Ok(()),
                    spare: None,
                },
            };
            self.core.handle(input);
            self.collect();
        }
    }

    /// Take what the core asked for, checking that no action names an fd
    /// after its close (the reactor orders what is in flight before a
    /// close; what the core emits after one would reach whoever gets the
    /// number next).
    fn collect(&mut self) {
        for a in self.core.take_actions() {
            if let Some(fd) = fd_of(&a) {
                assert!(!self.gone.contains(&fd), "{a:?} after the close of fd {fd}");
                if matches!(a, Action::Close { .. } | Action::HandOver { .. }) {
                    self.gone.insert(fd);
                }
            }
            self.actions.push(a);
        }
        self.core.check_counts();
    }

    fn handle(&mut self, input: Input<'_>) {
        self.core.handle(input);
        self.collect();
    }

    /// End this turn and begin the next, `after` later.
    fn next_turn(&mut self, after: Duration) {
        self.core.end_turn();
        self.collect();
        self.complete_sends();
        self.now += after;
        self.core.begin_turn(self.now);
        self.core.begin_idle_pass();
        self.core.end_idle_pass();
        self.collect();
    }

    /// Accept a client; returns its handle (from the recv it arms).
    fn accept(&mut self) -> ClientId {
        let owned = fake_fd();
        let fd = owned.as_raw_fd();
        self.handle(Input::Accepted {
            fd: owned,
            peer: ([10, 0, 0, 1], 4000).into(),
            listen: 0,
        });
        self.actions
            .iter()
            .rev()
            .find_map(|a| match a {
                Action::Recv { fd: f, token, .. } if *f == fd => match Target::of(*token) {
                    Target::Client(c) => Some(c),
                    Target::Upstream(_) => None,
                },
                _ => None,
            })
            .expect("a recv armed for the new client")
    }

    fn client_sends(&mut self, client: ClientId, bytes: &[u8]) {
        self.handle(Input::ClientRecv {
            client,
            recv: Recv {
                result: bytes.len() as i32,
                more: true,
                data: bytes,
                buf: Some(RecvBuf::for_tests(bytes.len())),
            },
        });
    }

    fn client_resets(&mut self, client: ClientId) {
        self.handle(Input::ClientRecv {
            client,
            recv: Recv {
                result: -libc::ECONNRESET,
                more: false,
                data: &[],
                buf: None,
            },
        });
    }

    fn upstream_sends(&mut self, conn: ConnId, bytes: &[u8]) {
        self.handle(Input::UpstreamRecv {
            conn,
            recv: Recv {
                result: bytes.len() as i32,
                more: true,
                data: bytes,
                buf: Some(RecvBuf::for_tests(bytes.len())),
            },
        });
    }

    /// The connects asked for since the last call, as handles.
    fn connects(&mut self) -> Vec<(ConnId, RawFd)> {
        let got = self
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { fd, token, .. } => match Target::of(*token) {
                    Target::Upstream(u) => Some((u, *fd)),
                    Target::Client(_) => None,
                },
                _ => None,
            })
            .collect();
        self.actions
            .retain(|a| !matches!(a, Action::Connect { .. }));
        got
    }

    /// Bytes sent to `target` since the last call (and forget them).
    fn sent_to(&mut self, target: Target) -> Vec<u8> {
        self.wire.remove(&target.token()).unwrap_or_default()
    }

    fn closed(&self, fd: RawFd) -> bool {
        self.actions
            .iter()
            .any(|a| matches!(a, Action::Close { fd: f } if f.as_raw_fd() == fd))
    }
}

const GET: &[u8] = b"GET /a HTTP/1.1\r\nHost: t\r\n\r\n";
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

#[test]
fn a_request_goes_upstream_and_its_answer_comes_back() {
    let mut r = Rig::new(&[]);
    let client = r.accept();
    r.client_sends(client, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!("one connect")
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    let up = r.sent_to(Target::Upstream(conn));
    assert!(
        up.starts_with(b"GET /a HTTP/1.1\r\n"),
        "{:?}",
        String::from_utf8_lossy(&up)
    );
    r.upstream_sends(conn, OK);
    r.next_turn(Duration::ZERO);
    let down = r.sent_to(Target::Client(client));
    assert!(down.starts_with(b"HTTP/1.1 200 OK\r\n") && down.ends_with(b"ok"));
    assert_eq!(
        r.core.pools[0].upstreams()[0].idle.len(),
        1,
        "back to the pool"
    );
}

#[test]
fn a_client_closing_while_its_exchange_connects_cancels_the_connect() {
    let mut r = Rig::new(&[]);
    let client = r.accept();
    r.client_sends(client, GET);
    let [(conn, fd)] = r.connects()[..] else {
        panic!("one connect")
    };
    r.client_resets(client);
    assert!(
        r.actions
            .iter()
            .any(|a| matches!(a, Action::CancelAll { fd: f } if *f == fd)),
        "the connect in flight is cancelled"
    );
    assert!(r.closed(fd));
    let u = &r.core.pools[0].upstreams()[0];
    assert_eq!((u.connecting, u.active), (0, 0), "counts settled");
    // Its completion comes anyway, late: it finds nothing.
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    assert!(r.connects().is_empty());
}

#[test]
fn an_upstream_failing_while_its_waiter_is_served() {
    // One connection at most: the second client waits for the first's.
    // One failure takes the upstream down (fall=1). The other upstream is
    // down by the checker's word, and health is followed whatever the
    // count (--panic-threshold 0).
    let mut r = Rig::with_config(config_with(
        "127.0.0.1:9001,max_conns=1,fall=1",
        &["--upstream", "127.0.0.1:9002", "--panic-threshold", "0"],
    ));
    let other = r.core.pools[0].upstreams()[1].spec.id;
    r.core.health(other, false);
    let one = r.accept();
    let two = r.accept();
    r.client_sends(one, GET);
    r.client_sends(two, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!("one connect, one waiter")
    };
    assert_eq!(r.core.pools[0].upstreams()[0].waiting.len(), 1);
    // The connect fails: the upstream is down for a second, so the first
    // exchange's retry and the waiter (served as the failure frees room)
    // are both answered 503 at once; nobody hangs, nothing leaks.
    r.handle(Input::Connected {
        conn,
        result: Err(io::ErrorKind::ConnectionRefused.into()),
    });
    r.next_turn(Duration::ZERO);
    for c in [one, two] {
        let got = String::from_utf8(r.sent_to(Target::Client(c))).unwrap();
        assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
    }
    let u = &r.core.pools[0].upstreams()[0];
    assert_eq!(
        (u.waiting.len(), u.connecting, u.active, u.inflight),
        (0, 0, 0, 0)
    );
    assert!(r.connects().is_empty());
    // A second later the upstream is tried again.
    r.next_turn(Duration::from_secs(1));
    r.client_sends(one, GET);
    assert_eq!(r.connects().len(), 1);
}

#[test]
fn stray_bytes_on_an_idle_connection_close_it() {
    let mut r = Rig::new(&[]);
    let client = r.accept();
    r.client_sends(client, GET);
    let [(conn, fd)] = r.connects()[..] else {
        panic!()
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    // The answer, then more bytes than its framing allows: closed.
    r.upstream_sends(conn, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokSTRAY");
    assert!(r.closed(fd), "bytes past the framing close the connection");
    r.next_turn(Duration::ZERO);
    assert_eq!(r.core.figures.stray_closes, 1);
    let down = r.sent_to(Target::Client(client));
    assert!(down.ends_with(b"ok"), "the client gets its own answer only");
    assert!(r.core.pools[0].upstreams()[0].idle.is_empty());
}

#[test]
fn a_connection_released_in_a_turn_waits_for_the_next_one_and_its_quarantine() {
    let mut r = Rig::new(&[]);
    let one = r.accept();
    r.client_sends(one, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!()
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    // Another client in the same turn gets a connection of its own.
    let two = r.accept();
    r.client_sends(two, GET);
    assert_eq!(r.connects().len(), 1, "not the one just released");
    // A turn later and past the quarantine, the idle one is reused.
    r.next_turn(crate::pool::QUARANTINE);
    let three = r.accept();
    r.client_sends(three, GET);
    assert!(r.connects().is_empty(), "reused");
    r.next_turn(Duration::ZERO);
    assert!(!r.sent_to(Target::Upstream(conn)).is_empty());
}

#[test]
fn a_stale_completion_finds_nothing() {
    let mut r = Rig::new(&[]);
    let old = r.accept();
    r.client_resets(old);
    let new = r.accept();
    assert_ne!(old, new);
    // A send completion for the closed connection changes nothing.
    r.handle(Input::ClientSent {
        client: old,
        result: Err(io::ErrorKind::BrokenPipe.into()),
        spare: None,
        lent: 0,
    });
    r.client_sends(new, GET);
    assert_eq!(r.connects().len(), 1, "the new client is served");
}

#[test]
fn a_drain_closes_idle_clients_and_answers_busy_ones_with_close() {
    let mut r = Rig::new(&[]);
    let idle = r.accept();
    let busy = r.accept();
    r.client_sends(busy, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!()
    };
    r.core.begin_drain(r.now + Duration::from_secs(30));
    r.collect();
    assert_eq!(r.core.client_fds_for_tests(), 1, "the idle one closed");
    let _ = idle;
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    r.next_turn(Duration::ZERO);
    let down = String::from_utf8(r.sent_to(Target::Client(busy))).unwrap();
    assert!(down.contains("\r\nConnection: close\r\n"), "{down}");
    // Once the answer is out (the send completed), the connection closes
    // and the drain is over.
    r.next_turn(Duration::ZERO);
    assert!(r.core.drained());
}

#[test]
fn a_reload_closes_idle_connections_of_a_removed_upstream() {
    let mut r = Rig::new(&[]);
    let client = r.accept();
    r.client_sends(client, GET);
    let [(conn, fd)] = r.connects()[..] else {
        panic!()
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    assert!(!r.closed(fd));
    let mut cfg = config_with("127.0.0.1:9002", &[]);
    cfg.upstreams[0].id = crate::spec::UpstreamId(7);
    r.core.reconfigure(Arc::new(cfg));
    r.collect();
    assert!(
        r.closed(fd),
        "the removed upstream's idle connection closes"
    );
    r.next_turn(crate::pool::QUARANTINE);
    r.client_sends(client, GET);
    let [(_, _)] = r.connects()[..] else {
        panic!("the next request opens a connection to the new upstream")
    };
}

#[test]
fn a_waiter_past_its_queue_timeout_is_answered_at_the_turn_it_falls_due() {
    let mut r = Rig::with_config(config_with(
        "127.0.0.1:9001,max_conns=1",
        &["--queue-timeout", "30"],
    ));
    let one = r.accept();
    let two = r.accept();
    r.client_sends(one, GET);
    r.client_sends(two, GET);
    assert_eq!(r.connects().len(), 1);
    assert_eq!(r.core.pools[0].waiting(), 1);
    // The wait is bounded by the timeout, and the turn it ends answers it
    // (not the next tick: the loop must not spin until then).
    let wake = r.core.next_wake(r.now).expect("a bound");
    assert!(wake <= Duration::from_millis(30), "{wake:?}");
    r.next_turn(Duration::from_millis(30));
    r.core.end_turn();
    r.collect();
    r.complete_sends();
    let got = String::from_utf8(r.sent_to(Target::Client(two))).unwrap();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
    assert!(got.contains("timed out waiting"), "{got}");
    assert_eq!(r.core.pools[0].waiting(), 0);
    assert_eq!(r.core.next_wake(r.now), None, "nothing left to wake for");
}

/// Accept a client with its fd (the one its recv was armed on: the fd
/// counter is shared with tests running beside this one).
fn accept_with_fd(r: &mut Rig) -> (ClientId, RawFd) {
    let client = r.accept();
    let fd = r
        .actions
        .iter()
        .rev()
        .find_map(|a| match a {
            Action::Recv { fd, token, .. } if *token == Target::Client(client).token() => Some(*fd),
            _ => None,
        })
        .expect("its recv");
    (client, fd)
}

#[test]
fn a_retiring_worker_serves_what_it_accepted_and_closes_at_request_boundaries() {
    let mut r = Rig::new(&[]);
    // An idle keep-alive client, served once already.
    let (idle, idle_fd) = accept_with_fd(&mut r);
    r.client_sends(idle, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!("one connect")
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    r.next_turn(Duration::ZERO);
    assert!(String::from_utf8(r.sent_to(Target::Client(idle)))
        .unwrap()
        .ends_with("ok"));
    let now = r.now;
    r.core.begin_retire(now + Duration::from_secs(30), false);
    r.collect();
    assert!(
        !r.closed(idle_fd),
        "an idle connection is not closed at once"
    );
    // A connection the ring accepted before its accepts were cancelled is
    // served: its answer says close, then it closes.
    let (late, late_fd) = accept_with_fd(&mut r);
    assert!(!r.closed(late_fd), "accepted, not refused");
    r.client_sends(late, GET);
    r.next_turn(Duration::from_millis(1));
    let conns = r.connects();
    let up = conns.first().map(|c| c.0).unwrap_or(conn);
    if !conns.is_empty() {
        r.handle(Input::Connected {
            conn: up,
            result: Ok(()),
        });
        r.next_turn(Duration::ZERO);
    }
    r.upstream_sends(up, OK);
    r.next_turn(Duration::ZERO);
    let got = String::from_utf8(r.sent_to(Target::Client(late))).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200 ") && got.contains("Connection: close"),
        "{got}"
    );
    assert!(r.closed(late_fd), "closed after its answer");
    // The idle one is closed once its grace is over, and the worker is
    // then done.
    assert!(!r.core.drained());
    r.next_turn(super::core::RETIRE_IDLE_GRACE);
    r.core.on_tick_at(1);
    r.collect();
    assert!(r.closed(idle_fd));
    assert!(r.core.drained());
}

#[test]
fn a_tunnel_that_ends_shuts_each_socket_before_its_close_and_names_neither_after() {
    let mut r = Rig::new(&[]);
    let (client, client_fd) = accept_with_fd(&mut r);
    r.client_sends(
        client,
        b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    let [(conn, up_fd)] = r.connects()[..] else {
        panic!("one connect")
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(
        conn,
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    );
    r.next_turn(Duration::ZERO);
    // The client leaves at once; the origin follows.
    r.handle(Input::ClientRecv {
        client,
        recv: Recv {
            result: 0,
            more: false,
            data: &[],
            buf: None,
        },
    });
    r.next_turn(Duration::ZERO);
    r.handle(Input::UpstreamRecv {
        conn,
        recv: Recv {
            result: 0,
            more: false,
            data: &[],
            buf: None,
        },
    });
    r.next_turn(Duration::ZERO);
    let pos = |want: &dyn Fn(&Action) -> bool| r.actions.iter().position(want);
    for fd in [client_fd, up_fd] {
        let shut = pos(&|a| matches!(a, Action::Shutdown { fd: f } if *f == fd))
            .unwrap_or_else(|| panic!("fd {fd} shut"));
        let close = pos(&|a| matches!(a, Action::Close { fd: f } if f.as_raw_fd() == fd))
            .unwrap_or_else(|| panic!("fd {fd} closed"));
        assert!(shut < close, "fd {fd}: shutdown before the close");
    }
    // (`collect` checked that nothing named either fd after its close.)
    assert_eq!(r.core.client_count(), 0);
    assert_eq!(r.core.upstream_count(), 0);
}

/// The recv of `client` ends (its cancel landed), carrying `data`.
fn recv_ends(r: &mut Rig, client: ClientId, data: &[u8]) {
    let result = if data.is_empty() {
        -libc::ECANCELED
    } else {
        data.len() as i32
    };
    r.handle(Input::ClientRecv {
        client,
        recv: Recv {
            result,
            more: false,
            data,
            buf: (!data.is_empty()).then(|| RecvBuf::for_tests(data.len())),
        },
    });
}

fn handed_over(r: &Rig, fd: RawFd) -> bool {
    r.actions
        .iter()
        .any(|a| matches!(a, Action::HandOver { fd: f, .. } if f.as_raw_fd() == fd))
}

#[test]
fn a_retiring_worker_hands_idle_connections_over_and_busy_ones_once_answered() {
    let mut r = Rig::new(&[]);
    let (idle, idle_fd) = accept_with_fd(&mut r);
    let (busy, busy_fd) = accept_with_fd(&mut r);
    r.client_sends(busy, GET);
    let [(conn, _)] = r.connects()[..] else {
        panic!("one connect")
    };
    let now = r.now;
    r.core.begin_retire(now + Duration::from_secs(30), true);
    r.collect();
    // The idle one's recv is cancelled; it goes once that is certain.
    assert!(r
        .actions
        .iter()
        .any(|a| matches!(a, Action::CancelRecv { fd, .. } if *fd == idle_fd)));
    assert!(!handed_over(&r, idle_fd));
    recv_ends(&mut r, idle, &[]);
    assert!(handed_over(&r, idle_fd), "handed over, not closed");
    assert!(!r.closed(idle_fd));
    // The busy one is answered without `Connection: close`, then goes.
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    r.next_turn(Duration::ZERO);
    let got = String::from_utf8(r.sent_to(Target::Client(busy))).unwrap();
    assert!(
        got.starts_with("HTTP/1.1 200 ") && !got.contains("Connection: close"),
        "{got}"
    );
    r.next_turn(Duration::ZERO);
    recv_ends(&mut r, busy, &[]);
    assert!(handed_over(&r, busy_fd));
    assert!(!r.closed(busy_fd));
    assert!(r.core.drained(), "nothing left: the worker may go");
}

#[test]
fn a_request_that_races_the_hand_over_is_served_here_first() {
    let mut r = Rig::new(&[]);
    let (client, fd) = accept_with_fd(&mut r);
    let now = r.now;
    r.core.begin_retire(now + Duration::from_secs(30), true);
    r.collect();
    // The request arrived before the cancel landed: it is this worker's.
    recv_ends(&mut r, client, GET);
    assert!(!handed_over(&r, fd));
    let [(conn, _)] = r.connects()[..] else {
        panic!("the request goes upstream")
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    r.next_turn(Duration::ZERO);
    r.upstream_sends(conn, OK);
    r.next_turn(Duration::ZERO);
    let got = String::from_utf8(r.sent_to(Target::Client(client))).unwrap();
    assert!(got.starts_with("HTTP/1.1 200 "), "{got}");
    r.next_turn(Duration::ZERO);
    // Its recv was armed again for the request; cancelled again now.
    recv_ends(&mut r, client, &[]);
    assert!(handed_over(&r, fd));
}

#[test]
fn a_reused_connection_trades_its_idle_multishot_for_bounded_single_recvs() {
    let mut r = Rig::new(&[]);
    let client = r.accept();
    r.client_sends(client, GET);
    let [(conn, fd)] = r.connects()[..] else {
        panic!("one connect")
    };
    r.handle(Input::Connected {
        conn,
        result: Ok(()),
    });
    let once_of = |r: &Rig| {
        r.actions.iter().rev().find_map(|a| match a {
            Action::Recv { fd: f, once, .. } if *f == fd => Some(*once),
            _ => None,
        })
    };
    assert!(
        once_of(&r).is_some_and(|o| o > 0),
        "a response is read within its room"
    );
    r.next_turn(Duration::ZERO);
    r.handle(Input::UpstreamRecv {
        conn,
        recv: Recv {
            result: OK.len() as i32,
            more: false,
            data: OK,
            buf: Some(RecvBuf::for_tests(OK.len())),
        },
    });
    assert_eq!(once_of(&r), Some(0), "idle: a multishot, to notice a close");
    r.next_turn(crate::pool::QUARANTINE);
    // (Closed and handed-over fds stay with the Rig: their numbers must
    // not be reused while the test runs.)
    r.actions
        .retain(|a| matches!(a, Action::Close { .. } | Action::HandOver { .. }));
    // Reused: the multishot is cancelled, then a limited recv armed.
    r.client_sends(client, GET);
    assert!(r.connects().is_empty(), "reused");
    assert!(r
        .actions
        .iter()
        .any(|a| matches!(a, Action::CancelRecv { fd: f, .. } if *f == fd)));
    assert_eq!(once_of(&r), None, "nothing armed until the multishot ended");
    r.handle(Input::UpstreamRecv {
        conn,
        recv: Recv {
            result: -libc::ECANCELED,
            more: false,
            data: &[],
            buf: None,
        },
    });
    assert!(once_of(&r).is_some_and(|o| o > 0));
}

/// HTTP/2 to the origin (`--upstream-protocol h2`), without sockets: the
/// origin's frames are written here.
mod multiplexed {
    use super::*;
    use crate::h2::frame::{self, ErrorCode, Frame};

    fn rig() -> Rig {
        Rig::new(&["--upstream-protocol", "h2"])
    }

    /// The origin's SETTINGS (none changed).
    fn settings() -> Vec<u8> {
        let mut out = Vec::new();
        frame::write_settings(&mut out, &[]);
        out
    }

    /// The origin's answer on `stream`: 200 with `body`.
    fn answer(stream: u32, body: &[u8]) -> Vec<u8> {
        let mut block = Vec::new();
        let mut e = crate::h2::hpack::Encoder::default();
        e.field(&mut block, b":status", b"200", false);
        e.field(
            &mut block,
            b"content-length",
            body.len().to_string().as_bytes(),
            false,
        );
        let mut out = Vec::new();
        frame::write_headers(&mut out, stream, &block, false, 16_384);
        frame::write_data(&mut out, stream, body, body.len(), true, 16_384);
        out
    }

    /// The frames in `wire` after our preface: (kind, stream, flags).
    fn frames(wire: &[u8]) -> Vec<(&'static str, u32)> {
        let mut at = wire.strip_prefix(frame::PREFACE).unwrap_or(wire);
        let mut out = Vec::new();
        while let Ok(Some((f, n))) = frame::read(at, 1 << 20) {
            out.push(match f {
                Frame::Headers { stream, .. } => ("headers", stream),
                Frame::Data { stream, .. } => ("data", stream),
                Frame::RstStream { stream, .. } => ("rst", stream),
                Frame::Settings { .. } => ("settings", 0),
                Frame::WindowUpdate { stream, .. } => ("window", stream),
                Frame::Ping { .. } => ("ping", 0),
                _ => ("other", 0),
            });
            at = &at[n..];
        }
        out
    }

    /// Two clients with a GET each on one new connection, open.
    fn two_on_one(r: &mut Rig) -> (ClientId, ClientId, ConnId) {
        let (a, b) = (r.accept(), r.accept());
        r.client_sends(a, GET);
        r.client_sends(b, GET);
        let [(conn, _)] = r.connects()[..] else {
            panic!("one connect for both")
        };
        r.handle(Input::Connected {
            conn,
            result: Ok(()),
        });
        r.next_turn(Duration::ZERO);
        (a, b, conn)
    }

    #[test]
    fn two_clients_share_a_connection_and_get_their_own_answers_in_any_order() {
        let mut r = rig();
        let (a, b, conn) = two_on_one(&mut r);
        let up = r.sent_to(Target::Upstream(conn));
        let heads: Vec<_> = frames(&up)
            .into_iter()
            .filter(|f| f.0 == "headers")
            .collect();
        assert_eq!(heads, [("headers", 1), ("headers", 3)]);
        // Stream 3 (b's) first.
        let mut bytes = settings();
        bytes.extend(answer(3, b"bb"));
        bytes.extend(answer(1, b"aa"));
        r.upstream_sends(conn, &bytes);
        r.next_turn(Duration::ZERO);
        let (to_a, to_b) = (r.sent_to(Target::Client(a)), r.sent_to(Target::Client(b)));
        assert!(to_a.starts_with(b"HTTP/1.1 200 OK\r\n") && to_a.ends_with(b"aa"));
        assert!(to_b.starts_with(b"HTTP/1.1 200 OK\r\n") && to_b.ends_with(b"bb"));
        assert_eq!(r.core.pools[0].upstreams()[0].idle.len(), 1, "idle again");
    }

    #[test]
    fn a_client_gone_resets_its_stream_alone() {
        let mut r = rig();
        let (a, b, conn) = two_on_one(&mut r);
        r.sent_to(Target::Upstream(conn));
        r.client_resets(a);
        r.next_turn(Duration::ZERO);
        assert_eq!(frames(&r.sent_to(Target::Upstream(conn))), [("rst", 1)]);
        let mut bytes = settings();
        bytes.extend(answer(1, b"aa"));
        bytes.extend(answer(3, b"bb"));
        r.upstream_sends(conn, &bytes);
        r.next_turn(Duration::ZERO);
        assert!(r.sent_to(Target::Client(b)).ends_with(b"bb"));
        assert_eq!(r.core.upstream_count(), 1, "the connection stays");
    }

    #[test]
    fn goaway_sends_the_stream_above_it_to_a_new_connection() {
        let mut r = rig();
        let (a, b, conn) = two_on_one(&mut r);
        let mut bytes = settings();
        frame::write_goaway(&mut bytes, 1, ErrorCode::NoError);
        r.upstream_sends(conn, &bytes);
        r.next_turn(Duration::ZERO);
        let [(again, _)] = r.connects()[..] else {
            panic!("b's request goes on a new connection")
        };
        r.handle(Input::Connected {
            conn: again,
            result: Ok(()),
        });
        r.next_turn(Duration::ZERO);
        assert_eq!(
            frames(&r.sent_to(Target::Upstream(again))),
            [("settings", 0), ("window", 0), ("headers", 1)]
        );
        r.upstream_sends(conn, &answer(1, b"aa"));
        r.upstream_sends(again, &settings());
        r.upstream_sends(again, &answer(1, b"bb"));
        r.next_turn(Duration::ZERO);
        assert!(r.sent_to(Target::Client(a)).ends_with(b"aa"));
        assert!(r.sent_to(Target::Client(b)).ends_with(b"bb"));
    }
}
