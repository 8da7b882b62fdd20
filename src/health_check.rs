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
use std::time::Instant;

use crate::config::{HealthCheck, UpstreamId, UpstreamSpec};
use crate::control::{Command, Mailbox};

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
    rise: u32,
    fall: u32,
    up: bool,
    /// Passes (while down) or failures (while up) in a row.
    streak: u32,
    next: Instant,
}

/// The verdicts as the workers last heard them, by upstream id.
type Verdicts = Vec<(UpstreamId, bool)>;

/// Start the checker over `specs`, telling `mailboxes` its verdicts. With
/// no health check configured it sleeps until a reload brings one.
pub fn start(
    specs: &[UpstreamSpec],
    mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
) -> std::io::Result<Checker> {
    let (tx, rx) = mpsc::channel();
    let mut targets = Vec::new();
    retarget(&mut targets, specs, Instant::now());
    let thread = std::thread::Builder::new()
        .name("ringmux-health".into())
        .spawn(move || run(targets, rx, mailboxes))?;
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
            rise: s.rise,
            fall: s.fall,
            up: kept.is_none_or(|t| t.up),
            streak: kept.map_or(0, |t| t.streak),
            next: kept.map_or(now, |t| t.next.min(now + check.interval)),
        });
    }
}

fn run(
    mut targets: Vec<Target>,
    rx: mpsc::Receiver<Note>,
    mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
) {
    loop {
        let now = Instant::now();
        let due = targets.iter().map(|t| t.next).min();
        // Sleep until a check is due or a note comes; notes waiting are
        // read either way (probes that overrun their interval must not
        // starve reloads and restarts).
        let first = match due {
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
            handle(note, &mut targets, &mailboxes);
        }
        let now = Instant::now();
        for i in 0..targets.len() {
            if targets[i].next > now {
                continue;
            }
            let t = &mut targets[i];
            let result = probe(t.addr, &t.name, &t.check);
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
                tell(&mailboxes, &[(t.id, up)]);
            }
            // Notes that came during the probe.
            let pending: Vec<Note> = rx.try_iter().collect();
            for note in pending {
                handle(note, &mut targets, &mailboxes);
            }
            if i >= targets.len() {
                break;
            }
        }
    }
}

fn handle(note: Note, targets: &mut Vec<Target>, mailboxes: &Mutex<Vec<Option<Mailbox>>>) {
    match note {
        Note::Targets(specs) => {
            let before = verdicts(targets);
            retarget(targets, &specs, Instant::now());
            let mut news = verdicts(targets);
            // An upstream whose check was taken away is no longer held
            // down by it.
            for (id, up) in before {
                if !up && !news.iter().any(|v| v.0 == id) {
                    news.push((id, true));
                }
            }
            tell(mailboxes, &news);
        }
        Note::Resend => tell(mailboxes, &verdicts(targets)),
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

fn tell(mailboxes: &Mutex<Vec<Option<Mailbox>>>, verdicts: &[(UpstreamId, bool)]) {
    let Ok(boxes) = mailboxes.lock() else {
        return;
    };
    for mailbox in boxes.iter().flatten() {
        for &(upstream, up) in verdicts {
            let _ = mailbox.send(Command::Health { upstream, up });
        }
    }
}

/// One check: the status, or why it failed.
fn probe(addr: SocketAddr, name: &str, check: &HealthCheck) -> Result<u16, String> {
    let deadline = Instant::now() + check.timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| format!("no answer within {} ms", check.timeout.as_millis()))
    };
    let mut s = TcpStream::connect_timeout(&addr, left()?).map_err(|e| format!("connect: {e}"))?;
    s.set_write_timeout(Some(left()?))
        .map_err(|e| e.to_string())?;
    let host = name.strip_prefix("demo@").unwrap_or(name);
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: ringmux-health-check\r\nConnection: close\r\n\r\n",
        check.path
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("send: {e}"))?;
    let mut head = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    while !head.contains(&b'\n') {
        s.set_read_timeout(Some(left()?))
            .map_err(|e| e.to_string())?;
        match s.read(&mut chunk) {
            Ok(0) => return Err("closed before a status line".into()),
            Ok(n) => head.extend_from_slice(&chunk[..n]),
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return Err(format!("no answer within {} ms", check.timeout.as_millis()))
            }
            Err(e) => return Err(format!("read: {e}")),
        }
        if head.len() > 4096 {
            break;
        }
    }
    let status = status_of(&head).ok_or("not an HTTP response")?;
    if (200..400).contains(&status) {
        Ok(status)
    } else {
        Err(format!("status {status}"))
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
    use std::time::Duration;

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
        let err = probe(addr, "u", &t.check).unwrap_err();
        assert!(err.starts_with("connect"), "{err}");
    }
}
