//! A small, dependency-free HTTP/1.1 origin server for demos, tests and
//! benchmarks of `ringmux`.
//!
//! It uses std blocking sockets with one thread per accepted connection (plus
//! one accept thread), supports keep-alive and pipelining, and is cheap per
//! request: requests are read into a reusable buffer, parsed with `httparse`,
//! and the responses to every complete request found in one read are
//! coalesced into as few `write_all` calls as possible.
//!
//! Behaviour is chosen by the request path and query string:
//!
//! * any path: `200` with a body of `size` bytes of [`PATTERN`] repeated,
//!   `Content-Type: text/plain` and `X-Origin: <name>`;
//! * `/echo`: the body is the (de-chunked) request body, with
//!   `X-Echo-Method` and `X-Echo-Head-Len` headers;
//! * `/head`: the body is the raw request head exactly as received;
//! * `/ready`: `503` until `--ready-after` has passed since start, then as
//!   any path;
//! * `/stats`: the body is `connections=<N> requests=<M> max_inflight=<K>\n`
//!   (K: the most requests it was answering at once).
//!
//! Query parameters, in any order and on any path: `size=N`, `delay=MS`,
//! `status=NNN`, `chunked=1` and `close=1`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::Duration;

/// The byte pattern that generated bodies repeat (and truncate) so clients
/// can verify them: body byte `i` is `PATTERN[i % PATTERN.len()]`.
pub const PATTERN: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789\n";

/// Largest body size accepted for `size=` (1 GiB).
pub const MAX_SIZE: usize = 1 << 30;

/// Largest `delay=` accepted, in milliseconds (one hour).
pub const MAX_DELAY_MS: u64 = 3_600_000;

/// Largest request head accepted before answering `431`.
const MAX_HEAD: usize = 64 * 1024;
/// Largest request body that is buffered (for `/echo` and chunked bodies).
const MAX_BODY: usize = 256 << 20;
/// Maximum number of request headers.
const MAX_HEADERS: usize = 128;
/// Initial (and idle) size of the per-connection read buffer.
const READ_BUF: usize = 16 * 1024;
/// Bodies up to this size are copied next to the head and sent in one write.
const INLINE_BODY: usize = 64 * 1024;
/// Large bodies are written in slices of at most this many bytes.
const WRITE_CHUNK: usize = 1 << 20;
/// Chunk size used for `chunked=1` responses.
const RESP_CHUNK: usize = 16 * 1024;
/// Pending output is written once it grows past this size.
const FLUSH_AT: usize = 256 * 1024;
/// Longest chunk-size or trailer line accepted in a chunked request body.
const MAX_CHUNK_LINE: usize = 4096;

/// Configuration of an origin server.
#[derive(Debug, Clone)]
pub struct OriginConfig {
    /// Sent in the `X-Origin` header of every response.
    pub name: String,
    /// Body size when the request has no `size=` parameter.
    pub default_size: usize,
    /// Delay before answering when the request has no `delay=` parameter.
    pub default_delay_ms: u64,
    /// `/ready` answers 503 for this long after start, then 200 (a server
    /// that accepts at once but warms up first).
    pub ready_after_ms: u64,
    /// The body of `GET /` without `size=`, instead of the pattern (the
    /// `--demo` origin says what it is).
    pub greeting: Option<String>,
}

/// What the `--demo` origin answers at `/`: a newcomer's first `curl`
/// should say what answered.
pub const DEMO_GREETING: &str =
    "Hello from ringmux's built-in demo origin, reached through ringmux.\n\
Any path answers; try /?size=100000, /?delay=500, /?status=503, or POST a body to /echo.\n";

impl Default for OriginConfig {
    fn default() -> Self {
        OriginConfig {
            name: "origin".to_string(),
            default_size: 20,
            default_delay_ms: 0,
            ready_after_ms: 0,
            greeting: None,
        }
    }
}

/// Counters shared with the server threads (atomics).
#[derive(Debug, Default)]
pub struct OriginStats {
    /// Number of accepted connections.
    pub connections: AtomicU64,
    /// Number of complete requests parsed (malformed ones are not counted).
    pub requests: AtomicU64,
    /// Requests being answered now, and the most there ever were at once.
    pub inflight: AtomicU64,
    pub max_inflight: AtomicU64,
}

/// Counts a request as being answered while it lives.
struct Answering<'a>(&'a OriginStats);

impl<'a> Answering<'a> {
    fn new(stats: &'a OriginStats) -> Self {
        let now = stats.inflight.fetch_add(1, Ordering::Relaxed) + 1;
        stats.max_inflight.fetch_max(now, Ordering::Relaxed);
        Answering(stats)
    }
}

impl Drop for Answering<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running origin server. It runs until the process exits.
#[derive(Debug)]
pub struct Origin {
    /// The address actually bound (useful when port 0 was asked for).
    pub addr: SocketAddr,
    /// Live counters.
    pub stats: Arc<OriginStats>,
}

/// Bind `addr` (port 0 allowed), spawn the accept thread, return at once.
pub fn spawn(addr: SocketAddr, cfg: OriginConfig) -> io::Result<Origin> {
    let listener = bind(addr)?;
    let addr = listener.local_addr()?;
    let stats = Arc::new(OriginStats::default());
    let ready_at = std::time::Instant::now() + Duration::from_millis(cfg.ready_after_ms);
    let shared = Arc::new(Shared {
        cfg: OriginConfig {
            default_size: cfg.default_size.min(MAX_SIZE),
            default_delay_ms: cfg.default_delay_ms.min(MAX_DELAY_MS),
            ready_after_ms: cfg.ready_after_ms,
            name: cfg.name,
            greeting: cfg.greeting,
        },
        stats: Arc::clone(&stats),
        ready_at,
    });
    thread::Builder::new()
        .name("origin-accept".to_string())
        .spawn(move || accept_loop(listener, shared))?;
    Ok(Origin { addr, stats })
}

/// A listener with a deep accept queue: a proxy opening hundreds of
/// upstream connections at once (2,000 clients arriving together) must not
/// overflow it, or dropped SYNs come back a second later and show up as
/// one-second latency spikes that are the origin's, not the proxy's. The
/// standard library's `TcpListener::bind` asks for 128.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(4096)?;
    Ok(s.into())
}

/// Returns the first `len` bytes of the body pattern (what `size=len` sends).
pub fn pattern(len: usize) -> Vec<u8> {
    PATTERN.iter().copied().cycle().take(len).collect()
}

struct Shared {
    cfg: OriginConfig,
    stats: Arc<OriginStats>,
    /// When `/ready` starts answering 200.
    ready_at: std::time::Instant,
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                shared.stats.connections.fetch_add(1, Ordering::Relaxed);
                let _ = stream.set_nodelay(true);
                let shared = Arc::clone(&shared);
                // If the thread cannot be spawned the stream is dropped (closed).
                let _ = thread::Builder::new()
                    .name("origin-conn".to_string())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        let _ = serve(stream, &shared);
                    });
            }
            // E.g. out of file descriptors: back off a little.
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// A pre-built pattern buffer one write-chunk long plus one pattern period,
/// so any body slice can be taken at the right phase without copying.
fn static_body() -> &'static [u8] {
    static BODY: OnceLock<Vec<u8>> = OnceLock::new();
    BODY.get_or_init(|| pattern(WRITE_CHUNK + PATTERN.len()))
}

/// `len` bytes of the body pattern starting at body offset `pos`.
fn pattern_slice(pos: usize, len: usize) -> &'static [u8] {
    debug_assert!(len <= WRITE_CHUNK);
    let phase = pos % PATTERN.len();
    &static_body()[phase..phase + len]
}

/// How the request's body is framed, once it is complete in the buffer.
enum ReqBody<'a> {
    /// A `Content-Length` body (possibly empty).
    Plain(&'a [u8]),
    /// A complete, validated chunked body (still encoded).
    Chunked(&'a [u8]),
}

struct Request<'a> {
    method: &'a str,
    path: &'a str,
    query: &'a str,
    http10: bool,
    close: bool,
    head: &'a [u8],
    body: ReqBody<'a>,
}

enum Parse<'a> {
    /// More bytes are needed; optionally, how many in total from the start.
    Partial(Option<usize>),
    /// The request is malformed: answer with this status and close.
    Bad(u16, &'static str),
    /// The head is complete but a `Content-Length` body that will be ignored
    /// is not all here yet: drop `body_len` bytes after the head.
    Discard { head_len: usize, body_len: usize },
    /// A complete request and the number of bytes it occupies.
    Done(Request<'a>, usize),
}

fn eq_ignore_case(a: &[u8], b: &str) -> bool {
    a.eq_ignore_ascii_case(b.as_bytes())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &v[start..end]
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    if v.is_empty() || v.len() > 18 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
}

/// Parses one request from the start of `buf`. With `skip_body`, the body
/// has already been discarded and the request is taken as having none.
fn parse(buf: &[u8], skip_body: bool) -> Parse<'_> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Parse::Bad(431, "request head too large");
        }
        Ok(httparse::Status::Partial) => return Parse::Partial(None),
        Err(httparse::Error::TooManyHeaders) => return Parse::Bad(431, "too many headers"),
        Err(_) => return Parse::Bad(400, "malformed request"),
    };
    let (Some(method), Some(target), Some(version)) = (req.method, req.path, req.version) else {
        return Parse::Bad(400, "malformed request");
    };
    let http10 = version == 0;

    let mut content_length: Option<u64> = None;
    let mut te_seen = false;
    let mut te_chunked = false;
    let mut conn_close = false;
    let mut conn_keep_alive = false;
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if eq_ignore_case(name, "content-length") {
            let Some(n) = parse_decimal(trim(h.value)) else {
                return Parse::Bad(400, "bad content-length");
            };
            if content_length.is_some_and(|m| m != n) {
                return Parse::Bad(400, "conflicting content-length");
            }
            content_length = Some(n);
        } else if eq_ignore_case(name, "transfer-encoding") {
            te_seen = true;
            // Only the last coding of the last header decides the framing.
            if let Some(last) = h
                .value
                .split(|&b| b == b',')
                .map(trim)
                .rfind(|t| !t.is_empty())
            {
                te_chunked = eq_ignore_case(last, "chunked");
            }
        } else if eq_ignore_case(name, "connection") {
            for token in h.value.split(|&b| b == b',').map(trim) {
                if eq_ignore_case(token, "close") {
                    conn_close = true;
                } else if eq_ignore_case(token, "keep-alive") {
                    conn_keep_alive = true;
                }
            }
        }
    }
    if te_seen && (!te_chunked || content_length.is_some()) {
        return Parse::Bad(400, "unsupported transfer-encoding framing");
    }
    let close = conn_close || (http10 && !conn_keep_alive);

    // Accept absolute-form targets by dropping the scheme and authority.
    let mut origin_form = target;
    for scheme in ["http://", "https://"] {
        if origin_form.len() > scheme.len()
            && origin_form.as_bytes()[..scheme.len()].eq_ignore_ascii_case(scheme.as_bytes())
        {
            let rest = &origin_form[scheme.len()..];
            origin_form = rest.find(['/', '?']).map_or("/", |i| &rest[i..]);
        }
    }
    let (path, query) = origin_form.split_once('?').unwrap_or((origin_form, ""));

    let rest = &buf[head_len..];
    let (body, consumed) = if skip_body {
        (ReqBody::Plain(&[][..]), head_len)
    } else if te_chunked {
        match chunked_body(rest, None) {
            Ok(Some(n)) => (ReqBody::Chunked(&rest[..n]), head_len + n),
            Ok(None) if rest.len() > MAX_BODY => return Parse::Bad(413, "request body too large"),
            Ok(None) => return Parse::Partial(None),
            Err(()) => return Parse::Bad(400, "malformed chunked body"),
        }
    } else {
        let len = content_length.unwrap_or(0);
        if len <= rest.len() as u64 {
            let len = len as usize;
            (ReqBody::Plain(&rest[..len]), head_len + len)
        } else if path != "/echo" {
            let Ok(body_len) = usize::try_from(len) else {
                return Parse::Bad(413, "request body too large");
            };
            return Parse::Discard { head_len, body_len };
        } else if len > MAX_BODY as u64 {
            return Parse::Bad(413, "request body too large");
        } else {
            return Parse::Partial(Some(head_len + len as usize));
        }
    };
    let request = Request {
        method,
        path,
        query,
        http10,
        close,
        head: &buf[..head_len],
        body,
    };
    Parse::Done(request, consumed)
}

/// Finds the CRLF ending the line at the start of `buf`, strictly: a bare CR
/// or LF is an error. Returns the index of the CR, or `None` if incomplete.
fn line_end(buf: &[u8]) -> Result<Option<usize>, ()> {
    match buf.iter().position(|&b| b == b'\n' || b == b'\r') {
        None if buf.len() > MAX_CHUNK_LINE => Err(()),
        None => Ok(None),
        Some(i) if i > MAX_CHUNK_LINE || buf[i] == b'\n' => Err(()),
        Some(i) => match buf.get(i + 1) {
            None => Ok(None),
            Some(b'\n') => Ok(Some(i)),
            Some(_) => Err(()),
        },
    }
}

/// Validates (and, with `out`, decodes) a chunked body at the start of
/// `buf`. Returns `Ok(Some(n))` when the whole body, trailers included, is
/// the first `n` bytes, `Ok(None)` if more bytes are needed, and `Err(())`
/// if it is malformed.
fn chunked_body(buf: &[u8], mut out: Option<&mut Vec<u8>>) -> Result<Option<usize>, ()> {
    let mut pos = 0;
    loop {
        let Some(end) = line_end(&buf[pos..])? else {
            return Ok(None);
        };
        let line = &buf[pos..pos + end];
        let digits = match line.iter().position(|&b| b == b';') {
            Some(i) => &line[..i],
            None => line,
        };
        if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_hexdigit) {
            return Err(());
        }
        let size = digits.iter().fold(0usize, |n, &d| {
            n * 16 + (d as char).to_digit(16).unwrap_or(0) as usize
        });
        if size > MAX_BODY {
            return Err(());
        }
        pos += end + 2;
        if size == 0 {
            // Trailer section: header lines up to an empty line.
            loop {
                let Some(end) = line_end(&buf[pos..])? else {
                    return Ok(None);
                };
                if end == 0 {
                    return Ok(Some(pos + 2));
                }
                if !buf[pos..pos + end].contains(&b':') {
                    return Err(());
                }
                pos += end + 2;
            }
        }
        if buf.len() - pos < size + 2 {
            return Ok(None);
        }
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(());
        }
        if let Some(out) = out.as_deref_mut() {
            out.extend_from_slice(&buf[pos..pos + size]);
        }
        pos += size + 2;
    }
}

/// Writes all pending output.
fn flush(stream: &mut TcpStream, out: &mut Vec<u8>) -> io::Result<()> {
    if !out.is_empty() {
        stream.write_all(out)?;
        out.clear();
    }
    Ok(())
}

/// Closes gracefully: stop sending, then drain what the peer still sends
/// (briefly) so unread input does not turn the close into a reset that
/// could destroy the last response.
fn linger_close(stream: &mut TcpStream) {
    let _ = stream.shutdown(Shutdown::Write);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    let mut total = 0usize;
    while let Ok(n) = stream.read(&mut sink) {
        total += n;
        if n == 0 || total > (1 << 20) {
            break;
        }
    }
}

/// Serves one connection until it closes or fails.
fn serve(mut stream: TcpStream, shared: &Shared) -> io::Result<()> {
    let mut buf = vec![0u8; READ_BUF];
    let (mut start, mut filled) = (0usize, 0usize);
    let mut out: Vec<u8> = Vec::with_capacity(READ_BUF);
    let mut scratch: Vec<u8> = Vec::new();
    let mut skip_body = false;
    loop {
        // Answer every complete request in the buffer, in order.
        let mut need = None;
        while start < filled {
            match parse(&buf[start..filled], skip_body) {
                Parse::Partial(hint) => {
                    need = hint;
                    break;
                }
                Parse::Bad(status, msg) => {
                    write_error(&mut out, &shared.cfg.name, status, msg);
                    flush(&mut stream, &mut out)?;
                    linger_close(&mut stream);
                    return Ok(());
                }
                Parse::Discard { head_len, body_len } => {
                    flush(&mut stream, &mut out)?;
                    // Keep the head, drop the body as it arrives, keep what follows.
                    let have = filled - start - head_len;
                    let mut left = body_len - have;
                    filled = start + head_len;
                    if buf.len() - filled < READ_BUF {
                        buf.resize(filled + READ_BUF, 0);
                    }
                    while left > 0 {
                        let n = match stream.read(&mut buf[filled..]) {
                            Ok(0) => return Ok(()),
                            Ok(n) => n,
                            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                            Err(e) => return Err(e),
                        };
                        if n <= left {
                            left -= n;
                        } else {
                            buf.copy_within(filled + left..filled + n, filled);
                            filled += n - left;
                            left = 0;
                        }
                    }
                    skip_body = true;
                }
                Parse::Done(req, consumed) => {
                    skip_body = false;
                    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let close = respond(&mut stream, &mut out, &mut scratch, &req, shared)?;
                    start += consumed;
                    if close {
                        flush(&mut stream, &mut out)?;
                        linger_close(&mut stream);
                        return Ok(());
                    }
                }
            }
        }
        flush(&mut stream, &mut out)?;

        // Make room for the next read.
        if start == filled {
            start = 0;
            filled = 0;
            if buf.len() > 4 * READ_BUF {
                buf.truncate(READ_BUF);
                buf.shrink_to_fit();
            }
            if scratch.capacity() > 4 * READ_BUF {
                scratch = Vec::new();
            }
        } else if start > 0 {
            buf.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
        }
        let want = need.unwrap_or(0);
        if want > buf.len() {
            buf.resize(want, 0);
        } else if filled == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }

        match stream.read(&mut buf[filled..]) {
            Ok(0) => return Ok(()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Per-request options from the query string.
struct Options {
    size: usize,
    delay_ms: u64,
    status: u16,
    chunked: bool,
    close: bool,
}

fn parse_flag(v: &str) -> Option<bool> {
    match v {
        "" | "1" | "true" | "yes" => Some(true),
        "0" | "false" | "no" => Some(false),
        _ => None,
    }
}

fn parse_options(query: &str, cfg: &OriginConfig) -> Result<Options, &'static str> {
    let mut o = Options {
        size: cfg.default_size,
        delay_ms: cfg.default_delay_ms,
        status: 200,
        chunked: false,
        close: false,
    };
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "size" => {
                o.size = value
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n <= MAX_SIZE)
                    .ok_or("bad size= (0 to 1073741824)")?;
            }
            "delay" => {
                o.delay_ms = value
                    .parse::<u64>()
                    .ok()
                    .filter(|&n| n <= MAX_DELAY_MS)
                    .ok_or("bad delay= (milliseconds, at most one hour)")?;
            }
            "status" => {
                o.status = value
                    .parse::<u16>()
                    .ok()
                    .filter(|n| (200..=599).contains(n))
                    .ok_or("bad status= (200 to 599)")?;
            }
            "chunked" => o.chunked = parse_flag(value).ok_or("bad chunked= (0 or 1)")?,
            "close" => o.close = parse_flag(value).ok_or("bad close= (0 or 1)")?,
            _ => {}
        }
    }
    Ok(o)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        302 => "Found",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

fn write_error(out: &mut Vec<u8>, name: &str, status: u16, msg: &str) {
    let _ = write!(
        out,
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Origin: {name}\r\nConnection: close\r\n\r\n{msg}\n",
        reason(status),
        msg.len() + 1,
    );
}

enum Body<'a> {
    Pattern(usize),
    Bytes(&'a [u8]),
}

impl Body<'_> {
    fn len(&self) -> usize {
        match self {
            Body::Pattern(n) => *n,
            Body::Bytes(b) => b.len(),
        }
    }

    /// `len` bytes starting at body offset `pos` (`len <= WRITE_CHUNK`).
    fn slice(&self, pos: usize, len: usize) -> &[u8] {
        match self {
            Body::Pattern(_) => pattern_slice(pos, len),
            Body::Bytes(b) => &b[pos..pos + len],
        }
    }
}

/// Builds (and, for large bodies, writes) the response to `req`. Returns
/// whether the connection must be closed afterwards.
fn respond(
    stream: &mut TcpStream,
    out: &mut Vec<u8>,
    scratch: &mut Vec<u8>,
    req: &Request<'_>,
    shared: &Shared,
) -> io::Result<bool> {
    let name = shared.cfg.name.as_str();
    let _answering = Answering::new(&shared.stats);
    let opts = match parse_options(req.query, &shared.cfg) {
        Ok(o) => o,
        Err(msg) => {
            write_error(out, name, 400, msg);
            return Ok(true);
        }
    };
    if opts.delay_ms > 0 {
        // Earlier pipelined responses should not wait for this one.
        flush(stream, out)?;
        thread::sleep(Duration::from_millis(opts.delay_ms));
    }
    if req.path == "/ready" && std::time::Instant::now() < shared.ready_at {
        write_error(out, name, 503, "not ready");
        return Ok(true);
    }
    let close = req.close || opts.close;
    let chunked = opts.chunked && !req.http10;
    let no_body = req.method == "HEAD" || opts.status == 204 || opts.status == 304;

    let mut echo = false;
    let body = match req.path {
        "/echo" => {
            echo = true;
            match req.body {
                ReqBody::Plain(b) => Body::Bytes(b),
                ReqBody::Chunked(raw) => {
                    scratch.clear();
                    if chunked_body(raw, Some(scratch)).is_err() {
                        // Already validated by the parser; unreachable in practice.
                        write_error(out, name, 400, "malformed chunked body");
                        return Ok(true);
                    }
                    Body::Bytes(scratch)
                }
            }
        }
        "/head" => Body::Bytes(req.head),
        "/stats" => {
            scratch.clear();
            let _ = writeln!(
                scratch,
                "connections={} requests={} max_inflight={}",
                shared.stats.connections.load(Ordering::Relaxed),
                shared.stats.requests.load(Ordering::Relaxed),
                shared.stats.max_inflight.load(Ordering::Relaxed),
            );
            Body::Bytes(scratch)
        }
        "/" if !req.query.contains("size=") && shared.cfg.greeting.is_some() => Body::Bytes(
            shared
                .cfg
                .greeting
                .as_deref()
                .unwrap_or_default()
                .as_bytes(),
        ),
        _ => Body::Pattern(opts.size),
    };
    let len = body.len();

    let _ = write!(
        out,
        "HTTP/1.1 {} {}\r\nContent-Type: text/plain\r\nX-Origin: {name}\r\n",
        opts.status,
        reason(opts.status)
    );
    if echo {
        let _ = write!(
            out,
            "X-Echo-Method: {}\r\nX-Echo-Head-Len: {}\r\n",
            req.method,
            req.head.len()
        );
    }
    if opts.status == 204 {
        // A 204 carries neither Content-Length nor Transfer-Encoding.
    } else if chunked && opts.status != 304 {
        out.extend_from_slice(b"Transfer-Encoding: chunked\r\n");
    } else {
        let _ = write!(out, "Content-Length: {len}\r\n");
    }
    if close {
        out.extend_from_slice(b"Connection: close\r\n");
    } else if req.http10 {
        out.extend_from_slice(b"Connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");

    if no_body {
        return Ok(close);
    }
    if chunked {
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(RESP_CHUNK);
            let _ = write!(out, "{n:x}\r\n");
            out.extend_from_slice(body.slice(pos, n));
            out.extend_from_slice(b"\r\n");
            pos += n;
            if out.len() >= FLUSH_AT {
                flush(stream, out)?;
            }
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else if len <= INLINE_BODY {
        out.extend_from_slice(body.slice(0, len));
    } else {
        // Head (plus any earlier pipelined responses) first, then the body.
        flush(stream, out)?;
        let mut pos = 0;
        while pos < len {
            let n = (len - pos).min(WRITE_CHUNK);
            stream.write_all(body.slice(pos, n))?;
            pos += n;
        }
    }
    if out.len() >= FLUSH_AT {
        flush(stream, out)?;
    }
    Ok(close)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn start() -> Origin {
        let cfg = OriginConfig {
            name: "test-origin".to_string(),
            ..OriginConfig::default()
        };
        spawn("127.0.0.1:0".parse().unwrap(), cfg).unwrap()
    }

    #[derive(Debug)]
    struct Resp {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    }

    impl Resp {
        fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        fn new(o: &Origin) -> Client {
            let stream = TcpStream::connect(o.addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Client {
                stream,
                buf: Vec::new(),
            }
        }

        fn send(&mut self, data: &[u8]) {
            self.stream.write_all(data).unwrap();
        }

        fn fill(&mut self) -> usize {
            let mut tmp = [0u8; 65536];
            let n = self.stream.read(&mut tmp).unwrap();
            self.buf.extend_from_slice(&tmp[..n]);
            n
        }

        /// Reads one response; `head_only` for responses to HEAD.
        fn response(&mut self, head_only: bool) -> Resp {
            loop {
                let mut hs = [httparse::EMPTY_HEADER; 64];
                let mut r = httparse::Response::new(&mut hs);
                if let httparse::Status::Complete(head_len) = r.parse(&self.buf).unwrap() {
                    let status = r.code.unwrap();
                    let headers: Vec<(String, String)> = r
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_string(),
                                String::from_utf8(h.value.to_vec()).unwrap(),
                            )
                        })
                        .collect();
                    let mut resp = Resp {
                        status,
                        headers,
                        body: Vec::new(),
                    };
                    let te = resp.header("transfer-encoding").map(str::to_string);
                    let cl = resp
                        .header("content-length")
                        .map(|v| v.parse::<usize>().unwrap());
                    let total = if head_only || status == 204 || status == 304 {
                        head_len
                    } else if te.as_deref() == Some("chunked") {
                        loop {
                            let mut body = Vec::new();
                            match chunked_body(&self.buf[head_len..], Some(&mut body)).unwrap() {
                                Some(n) => {
                                    resp.body = body;
                                    break head_len + n;
                                }
                                None => assert!(self.fill() > 0, "eof in chunked body"),
                            }
                        }
                    } else {
                        let cl = cl.expect("content-length");
                        while self.buf.len() < head_len + cl {
                            assert!(self.fill() > 0, "eof in body");
                        }
                        resp.body = self.buf[head_len..head_len + cl].to_vec();
                        head_len + cl
                    };
                    self.buf.drain(..total);
                    return resp;
                }
                assert!(self.fill() > 0, "eof before response head");
            }
        }

        fn get(&mut self, target: &str) -> Resp {
            self.send(format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
            self.response(false)
        }

        fn assert_closed(&mut self) {
            assert!(self.buf.is_empty());
            assert_eq!(self.fill(), 0, "expected the server to close");
        }
    }

    #[test]
    fn default_get() {
        let o = start();
        let mut c = Client::new(&o);
        let r = c.get("/");
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcdefghijklmnopqrst");
        assert_eq!(r.header("content-type"), Some("text/plain"));
        assert_eq!(r.header("content-length"), Some("20"));
        assert_eq!(r.header("x-origin"), Some("test-origin"));
        assert_eq!(r.header("connection"), None);
        // Keep-alive: a second request on the same connection.
        let r = c.get("/anything/else");
        assert_eq!(r.body, pattern(20));
        assert_eq!(o.stats.connections.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn sizes() {
        let o = start();
        let mut c = Client::new(&o);
        for size in [
            0,
            1,
            37,
            5000,
            INLINE_BODY,
            INLINE_BODY + 1,
            3 * WRITE_CHUNK + 11,
        ] {
            let r = c.get(&format!("/x?a=b&size={size}"));
            assert_eq!(r.status, 200);
            assert_eq!(r.header("content-length"), Some(size.to_string().as_str()));
            assert!(r.body == pattern(size), "size {size}");
        }
        let r = c.get("/?size=nope");
        assert_eq!(r.status, 400);
        c.assert_closed();
    }

    #[test]
    fn head_request() {
        let o = start();
        let mut c = Client::new(&o);
        c.send(b"HEAD /?size=1234 HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = c.response(true);
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some("1234"));
        // No body was sent: the next response follows directly.
        let r = c.get("/?size=3");
        assert_eq!(r.body, b"abc");
    }

    #[test]
    fn status_codes() {
        let o = start();
        let mut c = Client::new(&o);
        let r = c.get("/?status=204&size=100");
        assert_eq!(r.status, 204);
        assert_eq!(r.header("content-length"), None);
        assert_eq!(r.header("x-origin"), Some("test-origin"));
        let r = c.get("/?status=304");
        assert_eq!(r.status, 304);
        assert_eq!(r.header("content-length"), Some("20"));
        let r = c.get("/?status=404&size=5");
        assert_eq!(r.status, 404);
        assert_eq!(r.body, b"abcde");
        let r = c.get("/?status=503");
        assert_eq!(r.status, 503);
        assert_eq!(r.body, pattern(20));
    }

    #[test]
    fn chunked_response() {
        let o = start();
        let mut c = Client::new(&o);
        for size in [0, 10, RESP_CHUNK, 100_000, 2 * WRITE_CHUNK] {
            let r = c.get(&format!("/?chunked=1&size={size}"));
            assert_eq!(r.header("transfer-encoding"), Some("chunked"));
            assert_eq!(r.header("content-length"), None);
            assert!(r.body == pattern(size), "size {size}");
        }
        // Raw framing: chunks of at most 16 KiB.
        c.send(b"GET /?chunked=1&size=20000 HTTP/1.1\r\n\r\n");
        while !c.buf.ends_with(b"0\r\n\r\n") {
            c.fill();
        }
        let text = String::from_utf8(c.buf.clone()).unwrap();
        assert!(text.contains("\r\n\r\n4000\r\nabc"));
        assert!(text.contains("\r\ne20\r\n"));
        // HTTP/1.0 never gets chunked.
        let mut c = Client::new(&o);
        c.send(b"GET /?chunked=1 HTTP/1.0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.header("content-length"), Some("20"));
        assert_eq!(r.header("connection"), Some("close"));
        c.assert_closed();
    }

    #[test]
    fn pipelined() {
        let o = start();
        let mut c = Client::new(&o);
        c.send(
            b"GET /?size=1 HTTP/1.1\r\nHost: a\r\n\r\n\
              POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz\
              GET /?size=3&chunked=1 HTTP/1.1\r\nHost: c\r\n\r\n",
        );
        assert_eq!(c.response(false).body, b"a");
        assert_eq!(c.response(false).body, b"xyz");
        assert_eq!(c.response(false).body, b"abc");
        assert_eq!(o.stats.requests.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn echo_content_length() {
        let o = start();
        let mut c = Client::new(&o);
        let head = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n";
        c.send(head.as_bytes());
        c.send(b"hello");
        thread::sleep(Duration::from_millis(20));
        c.send(b" world");
        let r = c.response(false);
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"hello world");
        assert_eq!(r.header("x-echo-method"), Some("POST"));
        assert_eq!(
            r.header("x-echo-head-len"),
            Some(head.len().to_string().as_str())
        );
        // A large body, bigger than the initial buffer.
        let big = pattern(3 << 20);
        c.send(
            format!(
                "PUT /echo HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                big.len()
            )
            .as_bytes(),
        );
        c.send(&big);
        let r = c.response(false);
        assert_eq!(r.header("x-echo-method"), Some("PUT"));
        assert!(r.body == big);
        // GET without body.
        let r = c.get("/echo");
        assert_eq!(r.body, b"");
        assert_eq!(r.header("x-echo-method"), Some("GET"));
    }

    #[test]
    fn echo_chunked() {
        let o = start();
        let mut c = Client::new(&o);
        c.send(b"POST /echo?chunked=1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel");
        thread::sleep(Duration::from_millis(20));
        c.send(b"lo\r\n6;ext=1\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.body, b"hello world");
        assert_eq!(r.header("transfer-encoding"), Some("chunked"));
        // Many chunks, sent in one go, followed by a pipelined request.
        let mut req = b"POST /echo HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec();
        let data = pattern(100_000);
        for piece in data.chunks(7777) {
            req.extend_from_slice(format!("{:X}\r\n", piece.len()).as_bytes());
            req.extend_from_slice(piece);
            req.extend_from_slice(b"\r\n");
        }
        req.extend_from_slice(b"0\r\n\r\nGET /?size=2 HTTP/1.1\r\n\r\n");
        c.send(&req);
        let r = c.response(false);
        assert!(r.body == data);
        assert_eq!(r.header("content-length"), Some("100000"));
        assert_eq!(c.response(false).body, b"ab");
        // Malformed chunk framing: 400 and close.
        c.send(b"POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcd\r\n0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.status, 400);
        assert_eq!(r.header("connection"), Some("close"));
        c.assert_closed();
    }

    #[test]
    fn head_path_returns_raw_head() {
        let o = start();
        let mut c = Client::new(&o);
        let head = "GET /head?x=1 HTTP/1.1\r\nHost: example\r\nX-Forwarded-For: 10.0.0.1\r\nweird-Case:  v \r\n\r\n";
        c.send(head.as_bytes());
        let r = c.response(false);
        assert_eq!(r.body, head.as_bytes());
        // With a request body: only the head is returned, the body is skipped.
        let head = "POST /head HTTP/1.1\r\nContent-Length: 4\r\n\r\n";
        c.send(format!("{head}body").as_bytes());
        assert_eq!(c.response(false).body, head.as_bytes());
    }

    #[test]
    fn stats_counts() {
        let o = start();
        let mut c = Client::new(&o);
        c.get("/");
        c.get("/?size=1");
        let mut d = Client::new(&o);
        let r = d.get("/stats");
        assert_eq!(r.body, b"connections=2 requests=3 max_inflight=1\n");
        assert_eq!(o.stats.requests.load(Ordering::Relaxed), 3);
        assert_eq!(o.stats.connections.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn delay() {
        let o = start();
        let mut c = Client::new(&o);
        let t = Instant::now();
        let r = c.get("/?delay=150");
        assert!(t.elapsed() >= Duration::from_millis(150));
        assert_eq!(r.status, 200);
        let cfg = OriginConfig {
            default_delay_ms: 100,
            ..OriginConfig::default()
        };
        let slow = spawn("127.0.0.1:0".parse().unwrap(), cfg).unwrap();
        let mut c = Client::new(&slow);
        let t = Instant::now();
        c.get("/");
        assert!(t.elapsed() >= Duration::from_millis(100));
        let t = Instant::now();
        c.get("/?delay=0");
        assert!(t.elapsed() < Duration::from_millis(100));
    }

    #[test]
    fn close_param_and_header() {
        let o = start();
        let mut c = Client::new(&o);
        let r = c.get("/?close=1");
        assert_eq!(r.header("connection"), Some("close"));
        assert_eq!(r.body, pattern(20));
        c.assert_closed();

        let mut c = Client::new(&o);
        c.send(b"GET / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert_eq!(c.response(false).header("connection"), Some("close"));
        c.assert_closed();

        // HTTP/1.0 with keep-alive stays open.
        let mut c = Client::new(&o);
        c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
        assert_eq!(c.response(false).header("connection"), Some("keep-alive"));
        c.send(b"GET /?size=1 HTTP/1.0\r\n\r\n");
        let r = c.response(false);
        assert_eq!(r.body, b"a");
        assert_eq!(r.header("connection"), Some("close"));
        c.assert_closed();
    }

    #[test]
    fn malformed_requests() {
        let o = start();
        for bad in [
            &b"GARBAGE\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
        ] {
            let mut c = Client::new(&o);
            c.send(bad);
            let r = c.response(false);
            assert_eq!(r.status, 400, "{}", String::from_utf8_lossy(bad));
            assert_eq!(r.header("connection"), Some("close"));
            c.assert_closed();
        }
        assert_eq!(o.stats.requests.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn ignored_bodies_are_discarded() {
        let o = start();
        let mut c = Client::new(&o);
        let n = 5 << 20;
        c.send(format!("POST /upload?size=4 HTTP/1.1\r\nContent-Length: {n}\r\n\r\n").as_bytes());
        let body = pattern(n);
        c.send(&body[..n - 10]);
        thread::sleep(Duration::from_millis(20));
        let mut tail = body[n - 10..].to_vec();
        tail.extend_from_slice(b"GET /?size=2 HTTP/1.1\r\n\r\n");
        c.send(&tail);
        assert_eq!(c.response(false).body, b"abcd");
        assert_eq!(c.response(false).body, b"ab");
    }

    #[test]
    fn absolute_form_target() {
        let o = start();
        let mut c = Client::new(&o);
        assert_eq!(c.get("http://example.com/?size=3").body, b"abc");
        let r = c.get("http://example.com/stats");
        assert!(r.body.starts_with(b"connections=1 requests=2"));
    }

    #[test]
    fn chunked_decoder() {
        let mut out = Vec::new();
        assert_eq!(
            chunked_body(b"3\r\nabc\r\n0\r\n\r\nrest", Some(&mut out)),
            Ok(Some(13))
        );
        assert_eq!(out, b"abc");
        assert_eq!(chunked_body(b"3\r\nabc\r\n0\r\n", None), Ok(None));
        assert_eq!(chunked_body(b"3\r\nab", None), Ok(None));
        assert_eq!(chunked_body(b"3", None), Ok(None));
        assert_eq!(chunked_body(b"3\r", None), Ok(None));
        let ext = b"a;x=y\r\n0123456789\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(chunked_body(ext, None), Ok(Some(ext.len())));
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"3\nabc\r\n",
            b"3\r\nabcd\r\n",
            b"-1\r\n",
            b" 3\r\nabc\r\n",
            b"0\r\nno-colon\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\n\n",
        ] {
            assert_eq!(
                chunked_body(bad, None),
                Err(()),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
