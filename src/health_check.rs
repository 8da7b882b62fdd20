//! Active health checks: one checker thread for the whole process (not one
//! per worker, so an origin sees one check per interval however many
//! workers there are), whose verdicts reach every worker through its
//! control inbox.
//!
//! Each upstream with `health_check=/path` gets `GET /path` every
//! `interval`, over a new connection, within `timeout` (connect, send and
//! the status line together). A 2xx or 3xx status passes. `fall` failed
//! checks in a row take the upstream down in every worker; `rise` passed
//! ones in a row bring it back. Upstreams start up: a proxy that comes up
//! next to a healthy pool serves at once. Checks run one after another on
//! this thread; each is bounded by its timeout, so the longest a verdict
//! can be late is the sum of the other upstreams' timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control::{Command, Mailbox};
use crate::spec::{HealthCheck, UpstreamId, UpstreamSpec};

/// What the supervisor tells the checker.
#[derive(Debug)]
pub enum Note {
    /// The upstream set changed (a reload): check these from now on.
    Targets(Vec<UpstreamSpec>),
    /// A worker was (re)started: send it every current verdict.
    Resend,
}

/// The supervisor's handle on the checker thread.
pub struct Checker {
    tx: mpsc::Sender<Note>,
    _thread: JoinHandle<()>,
}

impl Checker {
    /// Tell the checker something (a checker that is gone is ignored: it
    /// only stops with the process).
    pub fn tell(&self, note: Note) {
        let _ = self.tx.send(note);
    }
}

/// One checked upstream.
#[derive(Debug)]
struct Target {
    id: UpstreamId,
    name: String,
    addr: SocketAddr,
    check: HealthCheck,
    /// A PROXY protocol header (LOCAL) goes first.
    proxy: Option<crate::spec::ProxyVersion>,
    /// Checked over TLS, as traffic goes.
    tls: Option<crate::tls::upstream::TlsTarget>,
    /// In the protocol traffic speaks (an h2c-only origin answers nothing
    /// else).
    protocol: crate::spec::UpstreamProtocol,
    rise: u32,
    fall: u32,
    up: bool,
    /// Passes (while down) or failures (while up) in a row.
    streak: u32,
    next: Instant,
}

/// The verdicts as the workers last heard them, by upstream id.
type Verdicts = Vec<(UpstreamId, bool)>;

/// An upstream with a readiness check (`warmup_check`), polled every
/// [`READY_POLL`] until it passes, and again after a health check took the
/// upstream down.
#[derive(Debug)]
struct Readiness {
    id: UpstreamId,
    name: String,
    addr: SocketAddr,
    check: HealthCheck,
    /// A PROXY protocol header (LOCAL) goes first.
    proxy: Option<crate::spec::ProxyVersion>,
    /// Checked over TLS, as traffic goes.
    tls: Option<crate::tls::upstream::TlsTarget>,
    protocol: crate::spec::UpstreamProtocol,
    ready: bool,
    /// The workers were told it is not ready (after its first failed
    /// poll): an upstream that got its check by a reload while it served
    /// leaves rotation until the check passes.
    told_unready: bool,
    next: Instant,
}

/// How often a cold upstream's readiness path is polled.
pub const READY_POLL: Duration = Duration::from_millis(200);

/// Every readiness target for `specs`, keeping the verdicts of those in
/// `old`.
fn readiness_targets(specs: &[UpstreamSpec], old: &[Readiness], now: Instant) -> Vec<Readiness> {
    specs
        .iter()
        .filter_map(|s| {
            let path = s.warmup_check.as_ref()?;
            let kept = old.iter().find(|r| r.id == s.id);
            let timeout = s
                .check
                .as_ref()
                .map_or(crate::spec::DEFAULT_CHECK_TIMEOUT, |c| c.timeout);
            Some(Readiness {
                id: s.id,
                name: s.name.clone(),
                addr: s.addr,
                check: HealthCheck {
                    path: path.clone(),
                    interval: READY_POLL,
                    timeout,
                },
                proxy: s.proxy,
                tls: s.tls.clone(),
                protocol: s.protocol,
                ready: kept.is_some_and(|r| r.ready),
                told_unready: kept.is_some_and(|r| r.told_unready),
                next: kept.map_or(now, |r| r.next),
            })
        })
        .collect()
}

/// Start the checker over `specs`, telling `mailboxes` its verdicts. With
/// no health check configured it sleeps until a reload brings one.
pub fn start(
    specs: &[UpstreamSpec],
    mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
) -> std::io::Result<Checker> {
    let (tx, rx) = mpsc::channel();
    let mut targets = Vec::new();
    retarget(&mut targets, specs, Instant::now());
    let readies = readiness_targets(specs, &[], Instant::now());
    let thread = std::thread::Builder::new()
        .name("ringmux-health".into())
        .spawn(move || {
            let mut state = State {
                targets,
                readies,
                mailboxes,
            };
            state.run(rx)
        })?;
    Ok(Checker {
        tx,
        _thread: thread,
    })
}

/// Keep the state of targets that stay, add new ones (up), drop the rest.
fn retarget(targets: &mut Vec<Target>, specs: &[UpstreamSpec], now: Instant) {
    let old = std::mem::take(targets);
    for s in specs {
        let Some(check) = &s.check else { continue };
        let kept = old.iter().find(|t| t.id == s.id);
        targets.push(Target {
            id: s.id,
            name: s.name.clone(),
            addr: s.addr,
            check: check.clone(),
            proxy: s.proxy,
            tls: s.tls.clone(),
            protocol: s.protocol,
            rise: s.rise,
            fall: s.fall,
            up: kept.is_none_or(|t| t.up),
            streak: kept.map_or(0, |t| t.streak),
            next: kept.map_or(now, |t| t.next.min(now + check.interval)),
        });
    }
}

/// What the checker thread keeps.
struct State {
    targets: Vec<Target>,
    readies: Vec<Readiness>,
    mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
}

impl State {
    fn next_due(&self) -> Option<Instant> {
        let health = self.targets.iter().map(|t| t.next);
        let ready = self.readies.iter().filter(|r| !r.ready).map(|r| r.next);
        health.chain(ready).min()
    }

    fn run(&mut self, rx: mpsc::Receiver<Note>) {
        loop {
            let now = Instant::now();
            // Sleep until a check is due or a note comes; notes waiting are
            // read either way (probes that overrun their interval must not
            // starve reloads and restarts).
            let first = match self.next_due() {
                Some(at) if at <= now => rx
                    .try_recv()
                    .map_err(|e| e == mpsc::TryRecvError::Disconnected),
                Some(at) => rx
                    .recv_timeout(at - now)
                    .map_err(|e| e == mpsc::RecvTimeoutError::Disconnected),
                None => rx.recv().map_err(|_| true),
            };
            let mut notes: Vec<Note> = Vec::new();
            match first {
                Ok(n) => notes.push(n),
                Err(true) => return,
                Err(false) => {}
            }
            notes.extend(rx.try_iter());
            for note in notes {
                self.handle(note);
            }
            self.health_round(&rx);
            self.readiness_round(&rx);
        }
    }

    fn health_round(&mut self, rx: &mpsc::Receiver<Note>) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.targets.len() {
            if self.targets[i].next > now {
                i += 1;
                continue;
            }
            let t = &mut self.targets[i];
            let result = probe(
                t.addr,
                &t.name,
                &t.check,
                t.proxy,
                t.tls.as_ref(),
                t.protocol,
            );
            t.next = Instant::now() + t.check.interval;
            if let Some(up) = judge(t, &result) {
                match &result {
                    Ok(status) => eprintln!(
                        "ringmux: upstream {} is up (health check: {status})",
                        t.name
                    ),
                    Err(why) => {
                        eprintln!("ringmux: upstream {} is down (health check: {why})", t.name)
                    }
                }
                let id = t.id;
                self.tell(&[Command::Health { upstream: id, up }]);
                if !up {
                    // Back from down, it must prove itself ready again.
                    if let Some(r) = self.readies.iter_mut().find(|r| r.id == id && r.ready) {
                        r.ready = false;
                        r.told_unready = true;
                        r.next = Instant::now();
                        self.tell(&[Command::Ready {
                            upstream: id,
                            ready: false,
                        }]);
                    }
                }
            }
            // Notes that came during the probe.
            let pending: Vec<Note> = rx.try_iter().collect();
            for note in pending {
                self.handle(note);
            }
            i += 1;
        }
    }

    fn readiness_round(&mut self, rx: &mpsc::Receiver<Note>) {
        let now = Instant::now();
        let mut i = 0;
        while i < self.readies.len() {
            let r = &mut self.readies[i];
            if r.ready || r.next > now {
                i += 1;
                continue;
            }
            let result = probe(
                r.addr,
                &r.name,
                &r.check,
                r.proxy,
                r.tls.as_ref(),
                r.protocol,
            );
            r.next = Instant::now() + r.check.interval;
            if result.is_err() && !r.told_unready {
                r.told_unready = true;
                let id = r.id;
                self.tell(&[Command::Ready {
                    upstream: id,
                    ready: false,
                }]);
            } else if let Ok(status) = result {
                r.ready = true;
                r.told_unready = false;
                eprintln!(
                    "ringmux: upstream {} is ready (warm-up check: {status})",
                    r.name
                );
                let id = r.id;
                self.tell(&[Command::Ready {
                    upstream: id,
                    ready: true,
                }]);
            }
            let pending: Vec<Note> = rx.try_iter().collect();
            for note in pending {
                self.handle(note);
            }
            i += 1;
        }
    }

    fn handle(&mut self, note: Note) {
        let mut cmds: Vec<Command> = Vec::new();
        match note {
            Note::Targets(specs) => {
                let before = verdicts(&self.targets);
                retarget(&mut self.targets, &specs, Instant::now());
                self.readies = readiness_targets(&specs, &self.readies, Instant::now());
                let mut news = verdicts(&self.targets);
                // An upstream whose check was taken away is no longer held
                // down by it.
                for (id, up) in before {
                    if !up && !news.iter().any(|v| v.0 == id) {
                        news.push((id, true));
                    }
                }
                cmds.extend(
                    news.into_iter()
                        .map(|(upstream, up)| Command::Health { upstream, up }),
                );
            }
            Note::Resend => cmds.extend(
                verdicts(&self.targets)
                    .into_iter()
                    .map(|(upstream, up)| Command::Health { upstream, up }),
            ),
        }
        // Every upstream whose readiness check passed (the others are cold
        // in every worker until it does).
        cmds.extend(
            self.readies
                .iter()
                .filter(|r| r.ready)
                .map(|r| Command::Ready {
                    upstream: r.id,
                    ready: true,
                }),
        );
        self.tell(&cmds);
    }

    fn tell(&self, cmds: &[Command]) {
        let Ok(boxes) = self.mailboxes.lock() else {
            return;
        };
        for mailbox in boxes.iter().flatten() {
            for cmd in cmds {
                // Only verdicts go out from here (commands in general own
                // things, such as a connection's fd, and are not copied).
                let copy = match *cmd {
                    Command::Health { upstream, up } => Command::Health { upstream, up },
                    Command::Ready { upstream, ready } => Command::Ready { upstream, ready },
                    _ => continue,
                };
                let _ = mailbox.send(copy);
            }
        }
    }
}

/// Count one check's result; Some(up) when the verdict changes.
fn judge(t: &mut Target, result: &Result<u16, String>) -> Option<bool> {
    let passed = result.is_ok();
    if passed == t.up {
        t.streak = 0;
        return None;
    }
    t.streak += 1;
    let needed = if t.up { t.fall } else { t.rise };
    if t.streak < needed.max(1) {
        return None;
    }
    t.up = passed;
    t.streak = 0;
    Some(passed)
}

fn verdicts(targets: &[Target]) -> Verdicts {
    targets.iter().map(|t| (t.id, t.up)).collect()
}

/// One check: the status, or why it failed.
fn probe(
    addr: SocketAddr,
    name: &str,
    check: &HealthCheck,
    proxy: Option<crate::spec::ProxyVersion>,
    tls: Option<&crate::tls::upstream::TlsTarget>,
    protocol: crate::spec::UpstreamProtocol,
) -> Result<u16, String> {
    let deadline = Instant::now() + check.timeout;
    let mut s = TcpStream::connect_timeout(&addr, left(deadline, check)?)
        .map_err(|e| format!("connect: {e}"))?;
    let mut preface = Vec::new();
    match proxy {
        None => {}
        // The proxy's own connection, not a client's.
        Some(crate::spec::ProxyVersion::V1) => preface.extend_from_slice(b"PROXY UNKNOWN\r\n"),
        Some(crate::spec::ProxyVersion::V2) => {
            crate::codec::proxy_protocol::write_v2_local(&mut preface)
        }
    }
    if !preface.is_empty() {
        s.set_write_timeout(Some(left(deadline, check)?))
            .map_err(|e| e.to_string())?;
        s.write_all(&preface).map_err(|e| format!("send: {e}"))?;
    }
    let host = name.strip_prefix("demo@").unwrap_or(name);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringmux-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    let h2 = protocol == crate::spec::UpstreamProtocol::H2;
    let status = match tls {
        None if h2 => exchange_h2(&mut s, request.as_bytes(), "http", deadline, check)?,
        None => status_of(&exchange(&mut s, request.as_bytes(), deadline, check)?)
            .ok_or("not an HTTP response")?,
        Some(t) => {
            let config = if h2 { &t.tls.config_h2 } else { &t.tls.config };
            let conn = rustls::ClientConnection::new(config.clone(), t.name.clone())
                .map_err(|e| format!("tls: {e}"))?;
            let mut stream = rustls::StreamOwned::new(conn, s);
            if h2 {
                exchange_h2(&mut stream, request.as_bytes(), "https", deadline, check)?
            } else {
                status_of(&exchange(&mut stream, request.as_bytes(), deadline, check)?)
                    .ok_or("not an HTTP response")?
            }
        }
    };
    if (200..400).contains(&status) {
        Ok(status)
    } else {
        Err(format!("status {status}"))
    }
}

/// What is left of the check's time, or the failure of running out.
fn left(deadline: Instant, check: &HealthCheck) -> Result<Duration, String> {
    deadline
        .checked_duration_since(Instant::now())
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("no answer within {} ms", check.timeout.as_millis()))
}

/// A stream over a socket whose timeouts bound its reads and writes.
trait OverSocket: Read + Write {
    fn socket(&self) -> &TcpStream;
}

impl OverSocket for TcpStream {
    fn socket(&self) -> &TcpStream {
        self
    }
}

impl OverSocket for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn socket(&self) -> &TcpStream {
        &self.sock
    }
}

/// Send `request` on `s` and read until the status line (or 4 KiB).
fn exchange(
    s: &mut impl OverSocket,
    request: &[u8],
    deadline: Instant,
    check: &HealthCheck,
) -> Result<Vec<u8>, String> {
    s.socket()
        .set_write_timeout(Some(left(deadline, check)?))
        .map_err(|e| e.to_string())?;
    // (Over TLS, the handshake happens here, bounded by the timeouts.)
    s.socket()
        .set_read_timeout(Some(left(deadline, check)?))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    s.flush().map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') {
        let n = read_some(s, &mut chunk, deadline, check, "a status line")?;
        head.extend_from_slice(&chunk[..n]);
        if head.len() > 4096 {
            break;
        }
    }
    Ok(head)
}

/// Read what `s` has into `buf` within the check's time; `what` names
/// what a close before any byte cut short.
fn read_some(
    s: &mut impl OverSocket,
    buf: &mut [u8],
    deadline: Instant,
    check: &HealthCheck,
    what: &str,
) -> Result<usize, String> {
    s.socket()
        .set_read_timeout(Some(left(deadline, check)?))
        .map_err(|e| e.to_string())?;
    match s.read(buf) {
        Ok(0) => Err(format!("closed before {what}")),
        Ok(n) => Ok(n),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            Err(format!("no answer within {} ms", check.timeout.as_millis()))
        }
        Err(e) => Err(format!("read: {e}")),
    }
}

/// The HTTP/1.1 `request` as a stream on a new HTTP/2 connection over
/// `s`: the status of its answer.
fn exchange_h2(
    s: &mut impl OverSocket,
    request: &[u8],
    scheme: &str,
    deadline: Instant,
    check: &HealthCheck,
) -> Result<u16, String> {
    use crate::h2::upstream::{Events, Limits, Upstream};
    /// The one answer's status, or why there is none.
    #[derive(Default)]
    struct Answer(Option<Result<u16, String>>);
    impl Events for Answer {
        fn response(&mut self, _: u32, status: u16, _: &crate::h2::hpack::Fields, _: bool) {
            self.0.get_or_insert(Ok(status));
        }
        fn data(&mut self, _: u32, _: &[u8], _: bool) {}
        fn trailers(&mut self, _: u32, _: &crate::h2::hpack::Fields) {}
        fn reset(&mut self, _: u32, code: u32) {
            self.0
                .get_or_insert(Err(format!("stream reset (HTTP/2 error {code})")));
        }
        fn refused(&mut self, _: u32) {
            self.0.get_or_insert(Err("refused (GOAWAY)".into()));
        }
    }
    let mut up = Upstream::new(Limits::default());
    up.open(request, scheme, true)
        .map_err(|e| format!("request: {e:?}"))?;
    let mut answer = Answer::default();
    let mut chunk = [0u8; 4096];
    loop {
        s.socket()
            .set_write_timeout(Some(left(deadline, check)?))
            .map_err(|e| e.to_string())?;
        // (Over TLS the first write runs the handshake, which reads.)
        s.socket()
            .set_read_timeout(Some(left(deadline, check)?))
            .map_err(|e| e.to_string())?;
        let out = up.take_output();
        if !out.is_empty() {
            s.write_all(&out).map_err(|e| format!("send: {e}"))?;
            s.flush().map_err(|e| format!("send: {e}"))?;
        }
        if let Some(result) = answer.0.take() {
            let status = result?;
            return if (200..400).contains(&status) {
                Ok(status)
            } else {
                Err(format!("status {status}"))
            };
        }
        let n = read_some(s, &mut chunk, deadline, check, "an answer")?;
        up.receive(&chunk[..n], Instant::now(), &mut answer)
            .map_err(|code| format!("HTTP/2 connection error {code:?}"))?;
    }
}

/// The status code of `HTTP/1.x NNN ...`.
fn status_of(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(rise: u32, fall: u32) -> Target {
        Target {
            id: UpstreamId(1),
            name: "u".into(),
            addr: ([127, 0, 0, 1], 1).into(),
            check: HealthCheck {
                path: "/".into(),
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(50),
            },
            proxy: None,
            tls: None,
            protocol: Default::default(),
            rise,
            fall,
            up: true,
            streak: 0,
            next: Instant::now(),
        }
    }

    #[test]
    fn fall_failures_take_it_down_and_rise_passes_bring_it_back() {
        let mut t = target(2, 3);
        let fail = Err("x".to_string());
        assert_eq!(judge(&mut t, &fail), None);
        assert_eq!(judge(&mut t, &Ok(200)), None, "a pass breaks the streak");
        assert_eq!(judge(&mut t, &fail), None);
        assert_eq!(judge(&mut t, &fail), None);
        assert_eq!(judge(&mut t, &fail), Some(false));
        assert_eq!(judge(&mut t, &fail), None, "already down");
        assert_eq!(judge(&mut t, &Ok(204)), None);
        assert_eq!(judge(&mut t, &Ok(204)), Some(true));
    }

    #[test]
    fn status_lines() {
        assert_eq!(status_of(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(status_of(b"HTTP/1.0 503 Busy\r\n"), Some(503));
        assert_eq!(status_of(b"HTTP/1.1 20"), None);
        assert_eq!(status_of(b"SSH-2.0-OpenSSH\r\n"), None);
    }

    #[test]
    fn a_probe_against_nothing_fails_with_a_reason() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = dead.local_addr().unwrap();
        drop(dead);
        let t = target(1, 1);
        let err = probe(addr, "u", &t.check, None, None, Default::default()).unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
    }
}
