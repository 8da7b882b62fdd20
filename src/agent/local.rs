//! Answers ringmux writes itself: error pages with a one-line reason, and
//! the final recipient's answer to an OPTIONS or TRACE whose
//! `Max-Forwards` ran out.

use std::fmt::Write as _;

use crate::codec::date::HttpDate;
use crate::codec::{self, Method};
use crate::error::ProxyError;

/// A complete error response with a one-line body, dated `date`.
pub fn error_response(err: &ProxyError, keep_alive: bool, date: &HttpDate) -> Vec<u8> {
    let status = err.status();
    let mut body = err.to_string();
    body.retain(|c| c != '\r' && c != '\n');
    body.push('\n');
    let mut out = Vec::with_capacity(192 + body.len());
    let _ = write!(
        VecWriter(&mut out),
        "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nDate: ",
        codec::reason_phrase(status),
        body.len(),
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if status == 503 {
        // Capacity, not a fault: a client may come back shortly.
        out.extend_from_slice(b"Retry-After: 1\r\n");
    }
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// The response ringmux gives as the final recipient of an OPTIONS or
/// TRACE whose `Max-Forwards` was 0 (RFC 9110 §7.6.2); `raw_head` is the
/// request head as received (TRACE echoes it).
pub(super) fn final_answer(
    method: Method,
    raw_head: &[u8],
    keep_alive: bool,
    date: &HttpDate,
) -> Vec<u8> {
    let mut body = Vec::new();
    let mut out = Vec::with_capacity(160);
    out.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
    if method == Method::Trace {
        codec::request::trace_echo(raw_head, &mut body);
        out.extend_from_slice(b"Content-Type: message/http\r\n");
    } else {
        out.extend_from_slice(b"Allow: GET, HEAD, OPTIONS, POST, PUT, DELETE, PATCH, TRACE\r\n");
    }
    let _ = write!(
        VecWriter(&mut out),
        "Content-Length: {}\r\nDate: ",
        body.len()
    );
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&body);
    out
}

/// A redirect (`status` 301, 302, 303, 307 or 308) to `location`.
pub(super) fn redirect(status: u16, location: &[u8], keep_alive: bool, date: &HttpDate) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + location.len());
    let _ = write!(
        VecWriter(&mut out),
        "HTTP/1.1 {status} {}\r\nLocation: ",
        codec::reason_phrase(status)
    );
    out.extend_from_slice(location);
    out.extend_from_slice(b"\r\nContent-Length: 0\r\nDate: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// A fixed answer: `status` with `body` of `content_type` (the body left
/// out for a HEAD, its length still said).
pub(super) fn respond(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    keep_alive: bool,
    date: &HttpDate,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(160 + body.len());
    let _ = write!(
        VecWriter(&mut out),
        "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\n",
        codec::reason_phrase(status)
    );
    // (A 204 has no length, a 304 the length of what it stands for: both
    // have no body; the configuration gives them none.)
    if status != 204 && status != 304 {
        let _ = write!(VecWriter(&mut out), "Content-Length: {}\r\n", body.len());
    }
    out.extend_from_slice(b"Date: ");
    out.extend_from_slice(date);
    out.extend_from_slice(b"\r\n");
    if !keep_alive {
        out.extend_from_slice(b"Connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only && status != 204 && status != 304 {
        out.extend_from_slice(body);
    }
    out
}

/// `fmt::Write` into a byte vector (what `write!` needs to format numbers
/// straight into a response).
struct VecWriter<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for VecWriter<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}
