//! The access log: one line per request, written by a logger thread.
//!
//! Workers format lines into a buffer of their own as exchanges finish and
//! hand the buffer to the logger on their 100 ms tick (or when it passes
//! [`HAND_OVER_AT`]) through a bounded channel. A worker never waits for
//! the logger: when the channel is full the buffer's lines are dropped and
//! counted (`ringmux_access_log_dropped_total`). The logger appends to the
//! file, or to stdout for `-`, and reopens the file when asked (SIGUSR1,
//! for logrotate).
//!
//! Formats (`--access-log-format`):
//! - `common`: the Common Log Format, then the upstream's address, its
//!   first-byte time and the request's total time in seconds
//!   (`- - -` when ringmux answered itself):
//!   `10.0.0.1 - - [01/Dec/2026:18:05:00 +0000] "GET / HTTP/1.1" 200 20 10.0.0.5:8000 0.000412 0.000530`
//! - `combined`: the same with `"referer" "user-agent"` before the three
//!   upstream fields, as Apache's combined format has them.
//! - `json`: one object per line with the same fields, named.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::codec::date::{clf_time, rfc3339};

/// What the access log shows of a request (kept only while it is on).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestLine {
    /// `GET /path?q HTTP/1.1`, as received (at most 2 KiB of it).
    pub line: String,
    /// The `Referer` and `User-Agent` fields, if sent.
    pub referer: Option<String>,
    pub user_agent: Option<String>,
}

impl RequestLine {
    /// What the log keeps of a request head (`head` as received, valid or
    /// not: a refused request is logged too).
    pub fn from_head(head: &[u8]) -> Self {
        const MAX: usize = 2048;
        let text = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(MAX)]).into_owned();
        let mut lines = head
            .split(|&b| b == b'\n')
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .skip_while(|l| l.is_empty());
        let mut out = RequestLine {
            line: text(lines.next().unwrap_or(b"")),
            ..RequestLine::default()
        };
        for l in lines.take_while(|l| !l.is_empty()) {
            let Some(colon) = l.iter().position(|&b| b == b':') else {
                continue;
            };
            let (name, value) = (&l[..colon], l[colon + 1..].trim_ascii());
            if name.eq_ignore_ascii_case(b"referer") {
                out.referer = Some(text(value));
            } else if name.eq_ignore_ascii_case(b"user-agent") {
                out.user_agent = Some(text(value));
            }
        }
        out
    }
}

/// Which upstream an exchange went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamNote {
    /// Its stable id.
    pub id: u32,
    /// Its address then.
    pub addr: std::net::SocketAddr,
    /// Its first response byte's time after the request went out, in
    /// microseconds, when it was timed.
    pub ttfb_us: Option<u32>,
}

/// An exchange that ended: what one access-log line says of it.
#[derive(Debug, Clone)]
pub struct Finished {
    /// The status the client got.
    pub status: u16,
    /// Bytes of the answer.
    pub bytes: u64,
    /// When its head was read.
    pub started: Instant,
    /// When its answer was complete.
    pub done: Instant,
    /// The upstream it went to last, None if it never reached one.
    pub upstream: Option<UpstreamNote>,
    /// For the access log (when it is on).
    pub line: Option<Box<RequestLine>>,
    /// Cut short: the connection closed before its answer was complete.
    pub aborted: bool,
    /// The route it matched and the backend it went to (None: no routes
    /// are configured, or it matched none).
    pub route: Option<std::sync::Arc<str>>,
    pub backend: Option<std::sync::Arc<str>>,
    /// Over TLS: its version and the server name the client asked for.
    pub tls: Option<(&'static str, Option<std::sync::Arc<str>>)>,
}

/// The status logged for an exchange whose connection closed before any
/// of its answer was written (nginx's convention).
pub const CLOSED_BEFORE_ANSWER: u16 = 499;

/// A worker hands its buffer over early once it holds this many bytes.
pub const HAND_OVER_AT: usize = 64 * 1024;

/// Buffers the channel holds before workers start dropping lines.
const CHANNEL_DEPTH: usize = 256;

/// How lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Common Log Format plus upstream, upstream time, total time.
    Common,
    /// Apache's combined format plus the same three fields.
    Combined,
    /// One JSON object per line.
    Json,
}

/// What reaches the logger.
pub enum LogMsg {
    /// Lines to append (each ends with a newline).
    Lines { bytes: Vec<u8> },
    /// Look at the reopen flag (a SIGUSR1 came).
    Wake,
    /// Everything sent before this is written: say so on `done`.
    Flush { done: mpsc::Sender<()> },
}

/// The workers' side of the logger: hand lines over without waiting.
#[derive(Clone)]
pub struct LogSender {
    tx: SyncSender<LogMsg>,
    /// Set by SIGUSR1; the logger reopens its file before it next writes.
    reopen: Arc<AtomicBool>,
}

impl LogSender {
    /// Hand `bytes` (`count` lines) to the logger; false (and nothing
    /// sent) if it is behind or gone.
    pub fn try_send(&self, bytes: Vec<u8>) -> bool {
        match self.tx.try_send(LogMsg::Lines { bytes }) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Like [`LogSender::try_send`], but trying again for up to `patience`
    /// while the logger is behind (a worker's last lines, as it exits).
    pub fn send_patiently(&self, bytes: Vec<u8>, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let mut msg = LogMsg::Lines { bytes };
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => return true,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
    }

    /// Ask the logger to reopen its file. Never blocks: a logger stuck on
    /// a full disk finds the flag when it gets going again.
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        let _ = self.tx.try_send(LogMsg::Wake);
    }

    /// Wait (at most `patience`) until everything handed over so far is
    /// written: at exit, so the last lines are not lost.
    pub fn flush(&self, patience: Duration) -> bool {
        let deadline = Instant::now() + patience;
        let (done, written) = mpsc::channel();
        let mut msg = LogMsg::Flush { done };
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Disconnected(_)) => return false,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    msg = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(TrySendError::Full(_)) => return false,
            }
        }
        written
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Standard output (`-`).
    Stdout,
    /// A file, appended to.
    File(PathBuf),
}

impl Target {
    /// `-` or a path.
    pub fn parse(s: &str) -> Target {
        if s == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(s))
        }
    }
}

enum Out {
    Stdout(io::Stdout),
    File(File),
}

impl Out {
    fn open(target: &Target) -> io::Result<Out> {
        match target {
            Target::Stdout => Ok(Out::Stdout(io::stdout())),
            Target::File(p) => OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .map(Out::File),
        }
    }

    fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Out::Stdout(s) => {
                let mut s = s.lock();
                s.write_all(b)?;
                s.flush()
            }
            Out::File(f) => f.write_all(b),
        }
    }
}

/// Start the logger thread writing to `target` (opened now, so that a bad
/// path is an error at start-up).
pub fn start(target: Target) -> io::Result<(LogSender, JoinHandle<()>)> {
    let mut out = Out::open(&target)?;
    let (tx, rx): (SyncSender<LogMsg>, Receiver<LogMsg>) = mpsc::sync_channel(CHANNEL_DEPTH);
    let reopen = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&reopen);
    let handle = std::thread::Builder::new()
        .name("ringmux-log".into())
        .spawn(move || {
            // Write errors are reported once until writing works again.
            let mut failing = false;
            for msg in rx {
                if flag.swap(false, Ordering::AcqRel) {
                    match Out::open(&target) {
                        Ok(o) => {
                            out = o;
                            eprintln!("ringmux: access log reopened");
                        }
                        Err(e) => eprintln!("ringmux: access log reopen failed: {e}"),
                    }
                }
                match msg {
                    LogMsg::Lines { bytes } => match out.write_all(&bytes) {
                        Ok(()) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            eprintln!("ringmux: access log write failed: {e}");
                        }
                        Err(_) => {}
                    },
                    LogMsg::Wake => {}
                    LogMsg::Flush { done } => {
                        let _ = done.send(());
                    }
                }
            }
        })?;
    Ok((LogSender { tx, reopen }, handle))
}

/// Append one line for `f`, a request from `client`.
pub fn write_line(buf: &mut Vec<u8>, format: Format, client: IpAddr, f: &Finished, unix_secs: u64) {
    let total = f.done.saturating_duration_since(f.started).as_secs_f64();
    let (line, referer, agent) = match &f.line {
        Some(l) => (
            l.line.as_str(),
            l.referer.as_deref(),
            l.user_agent.as_deref(),
        ),
        None => ("-", None, None),
    };
    // Writing to a Vec cannot fail.
    match format {
        Format::Common | Format::Combined => {
            let _ = write!(buf, "{} - - [", client.to_canonical());
            buf.extend_from_slice(&clf_time(unix_secs));
            buf.extend_from_slice(b"] \"");
            escape_quoted(buf, line);
            let _ = write!(buf, "\" {} {}", f.status, f.bytes);
            if format == Format::Combined {
                buf.extend_from_slice(b" \"");
                escape_quoted(buf, referer.unwrap_or("-"));
                buf.extend_from_slice(b"\" \"");
                escape_quoted(buf, agent.unwrap_or("-"));
                buf.push(b'"');
            }
            match f.upstream {
                Some(u) => {
                    let _ = write!(buf, " {}", u.addr);
                    match u.ttfb_us {
                        Some(t) => {
                            let _ = write!(buf, " {:.6}", f64::from(t) / 1e6);
                        }
                        None => buf.extend_from_slice(b" -"),
                    }
                }
                None => buf.extend_from_slice(b" - -"),
            }
            let _ = write!(buf, " {total:.6}");
            // With routes configured: which route and backend, named.
            if f.route.is_some() || f.backend.is_some() {
                buf.extend_from_slice(b" route=");
                buf.extend_from_slice(f.route.as_deref().unwrap_or("-").as_bytes());
                buf.extend_from_slice(b" backend=");
                buf.extend_from_slice(f.backend.as_deref().unwrap_or("-").as_bytes());
            }
            // Over TLS: its version and server name (client-chosen text,
            // escaped like the request line).
            if let Some((version, sni)) = &f.tls {
                let _ = write!(buf, " tls={version} sni=\"");
                escape_quoted(buf, sni.as_deref().unwrap_or("-"));
                buf.push(b'"');
            }
            buf.push(b'\n');
        }
        Format::Json => {
            buf.extend_from_slice(b"{\"time\":\"");
            buf.extend_from_slice(&rfc3339(unix_secs));
            let _ = write!(
                buf,
                "\",\"client\":\"{}\",\"request\":",
                client.to_canonical()
            );
            json_string(buf, line);
            let _ = write!(buf, ",\"status\":{},\"bytes\":{}", f.status, f.bytes);
            buf.extend_from_slice(b",\"referer\":");
            json_opt(buf, referer);
            buf.extend_from_slice(b",\"user_agent\":");
            json_opt(buf, agent);
            match f.upstream {
                Some(u) => {
                    let _ = write!(buf, ",\"upstream\":\"{}\",\"upstream_time\":", u.addr);
                    match u.ttfb_us {
                        Some(t) => {
                            let _ = write!(buf, "{:.6}", f64::from(t) / 1e6);
                        }
                        None => buf.extend_from_slice(b"null"),
                    }
                }
                None => buf.extend_from_slice(b",\"upstream\":null,\"upstream_time\":null"),
            }
            let _ = write!(buf, ",\"total_time\":{total:.6}");
            if f.route.is_some() || f.backend.is_some() {
                buf.extend_from_slice(b",\"route\":");
                json_opt(buf, f.route.as_deref());
                buf.extend_from_slice(b",\"backend\":");
                json_opt(buf, f.backend.as_deref());
            }
            if let Some((version, sni)) = &f.tls {
                let _ = write!(buf, ",\"tls_version\":\"{version}\",\"sni\":");
                json_opt(buf, sni.as_deref());
            }
            buf.extend_from_slice(b"}\n");
        }
    }
}

/// Inside a quoted log field: `"` and `\` escaped, control bytes as `\xNN`
/// (so a request can never forge a line).
fn escape_quoted(buf: &mut Vec<u8>, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => {
                buf.push(b'\\');
                buf.push(b);
            }
            0..=0x1f | 0x7f => {
                let _ = write!(buf, "\\x{b:02x}");
            }
            _ => buf.push(b),
        }
    }
}

fn json_opt(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => json_string(buf, s),
        None => buf.extend_from_slice(b"null"),
    }
}

/// A JSON string (RFC 8259 escapes).
pub fn json_string(buf: &mut Vec<u8>, s: &str) {
    buf.push(b'"');
    for c in s.chars() {
        match c {
            '"' => buf.extend_from_slice(b"\\\""),
            '\\' => buf.extend_from_slice(b"\\\\"),
            '\n' => buf.extend_from_slice(b"\\n"),
            '\r' => buf.extend_from_slice(b"\\r"),
            '\t' => buf.extend_from_slice(b"\\t"),
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(buf, "\\u{:04x}", c as u32);
            }
            c => {
                let mut tmp = [0u8; 4];
                buf.extend_from_slice(c.encode_utf8(&mut tmp).as_bytes());
            }
        }
    }
    buf.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    fn finished(status: u16, line: Option<RequestLine>) -> Finished {
        let t = Instant::now();
        Finished {
            status,
            bytes: 20,
            started: t,
            done: t + Duration::from_micros(530),
            upstream: None,
            line: line.map(Box::new),
            aborted: false,
            route: None,
            backend: None,
            tls: None,
        }
    }

    #[test]
    fn formats() {
        let line = RequestLine {
            line: "GET /a?b HTTP/1.1".into(),
            referer: Some("http://x/\"q\"".into()),
            user_agent: Some("curl/8".into()),
        };
        let mut f = finished(200, Some(line));
        let plain = f.clone();
        f.upstream = Some(UpstreamNote {
            id: 1,
            addr: "10.0.0.5:8000".parse().unwrap(),
            ttfb_us: Some(412),
        });
        let client: IpAddr = "10.0.0.1".parse().unwrap();
        let mut b = Vec::new();
        write_line(&mut b, Format::Common, client, &f, 784_111_777);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "10.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a?b HTTP/1.1\" 200 20 10.0.0.5:8000 0.000412 0.000530\n"
        );
        let mut b = Vec::new();
        write_line(&mut b, Format::Combined, client, &plain, 784_111_777);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "10.0.0.1 - - [06/Nov/1994:08:49:37 +0000] \"GET /a?b HTTP/1.1\" 200 20 \"http://x/\\\"q\\\"\" \"curl/8\" - - 0.000530\n"
        );
        let mut b = Vec::new();
        write_line(&mut b, Format::Json, client, &f, 784_111_777);
        assert_eq!(
            String::from_utf8(b).unwrap(),
            "{\"time\":\"1994-11-06T08:49:37Z\",\"client\":\"10.0.0.1\",\"request\":\"GET /a?b HTTP/1.1\",\"status\":200,\"bytes\":20,\"referer\":\"http://x/\\\"q\\\"\",\"user_agent\":\"curl/8\",\"upstream\":\"10.0.0.5:8000\",\"upstream_time\":0.000412,\"total_time\":0.000530}\n"
        );
    }

    #[test]
    fn a_request_cannot_forge_a_line() {
        let line = RequestLine {
            line: "GET /\u{1b}[31m\n HTTP/1.1".into(),
            ..RequestLine::default()
        };
        let mut b = Vec::new();
        write_line(
            &mut b,
            Format::Common,
            "10.0.0.1".parse().unwrap(),
            &finished(400, Some(line)),
            0,
        );
        let s = String::from_utf8(b).unwrap();
        assert_eq!(s.matches('\n').count(), 1, "{s}");
        assert!(s.contains("\\x1b[31m\\x0a"), "{s}");
    }
}
