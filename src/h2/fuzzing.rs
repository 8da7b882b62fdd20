//! Entry points shared by the cargo-fuzz targets `hpack`, `h2_conn` and
//! `h2_upstream` (`fuzz/fuzz_targets/`) and the corpus replay below (run
//! by `cargo test`): arbitrary bytes through the HPACK decoder, through a
//! whole server connection and through the client side toward an origin,
//! with invariants checked by `assert!`. Not part of the proxy's data
//! path.

use std::time::Instant;

use super::conn::{Connection, Handler, Limits, Refusal};
use super::frame::{self, PREFACE};
use super::hpack::{Decoder, Encoder, Fields};
use super::request::Head;

/// Decode `data` as header blocks (the first octet says where the first
/// block ends); whatever decodes must encode and decode again to the same
/// fields.
pub fn hpack(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let mut d = Decoder::new(4096);
    let mut fields = Fields::default();
    for block in [&rest[..cut], &rest[cut..]] {
        if d.decode(block, 16 * 1024, &mut fields).is_err() {
            return;
        }
        assert!(d.table_size() <= 4096);
        assert!(
            fields
                .iter()
                .map(|(n, v)| n.len() + v.len() + 32)
                .sum::<usize>()
                <= 16 * 1024
        );
        let mut e = Encoder::default();
        let mut again = Vec::new();
        e.begin(&mut again);
        for (n, v) in fields.iter() {
            e.field(&mut again, n, v, false);
        }
        let mut back = Fields::default();
        Decoder::new(4096)
            .decode(&again, usize::MAX, &mut back)
            .expect("our own block decodes");
        assert!(back.iter().eq(fields.iter()));
    }
}

/// Streams the connection handed on, to answer after each receive.
#[derive(Default)]
struct Answering {
    streams: Vec<u32>,
}

impl Handler for Answering {
    fn request(&mut self, stream: u32, _head: Head, _end_stream: bool) {
        self.streams.push(stream);
    }
    fn refused(&mut self, stream: u32, _why: Refusal) {
        self.streams.push(stream);
    }
    fn data(&mut self, _stream: u32, _data: &[u8], _end: bool) {}
    fn reset(&mut self, _stream: u32) {}
}

/// `data` after a client preface, in two pieces cut where its first octet
/// says; every request is answered; the output must be whole frames.
pub fn conn(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let now = Instant::now();
    let mut c = Connection::new(Limits::default());
    let mut h = Answering::default();
    let mut out = c.take_output();
    let _ = c.receive(PREFACE, now, &mut h);
    for piece in [&rest[..cut], &rest[cut..]] {
        let failed = c.receive(piece, now, &mut h).is_err();
        for stream in h.streams.drain(..) {
            c.send_headers(stream, 200, &[(b"content-type", b"text/plain")], false);
            let body = [b'x'; 70_000];
            let sent = c.send_data(stream, &body, true, now);
            assert!(sent <= body.len());
            c.consumed(stream, 100);
        }
        out.extend(c.take_output());
        if failed {
            assert!(c.is_done());
            break;
        }
    }
    // Whole frames, none larger than the client allows by default... or
    // than it raised it to.
    let mut at = 0;
    while at < out.len() {
        let head = out[at..].first_chunk().expect("a whole frame header");
        let h = frame::Header::parse(head);
        at += frame::HEADER_LEN + h.len as usize;
        assert!(h.len <= 0x00ff_ffff);
    }
    assert_eq!(at, out.len(), "the output ends with a whole frame");
}

/// What an origin's bytes made of the streams: each must be one we
/// opened, and nothing may follow a stream's end.
struct Streams {
    open: Vec<u32>,
    text: Vec<(u32, super::upstream::Http1Response, Vec<u8>)>,
}

impl Streams {
    fn of(&mut self, stream: u32) -> &mut (u32, super::upstream::Http1Response, Vec<u8>) {
        assert!(
            self.open.contains(&stream),
            "event for stream {stream}, not open"
        );
        let at = match self.text.iter().position(|t| t.0 == stream) {
            Some(at) => at,
            None => {
                self.text.push((stream, Default::default(), Vec::new()));
                self.text.len() - 1
            }
        };
        &mut self.text[at]
    }

    fn end(&mut self, stream: u32) {
        self.open.retain(|&s| s != stream);
    }
}

impl super::upstream::Events for Streams {
    fn response(&mut self, stream: u32, status: u16, fields: &Fields, end_stream: bool) {
        let t = self.of(stream);
        t.1.head(status, fields, end_stream, &mut t.2);
        if end_stream {
            self.end(stream);
        }
    }
    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        let t = self.of(stream);
        t.1.data(data, end, &mut t.2);
        if end {
            self.end(stream);
        }
    }
    fn trailers(&mut self, stream: u32, fields: &Fields) {
        let t = self.of(stream);
        t.1.trailers(fields, &mut t.2);
        self.end(stream);
    }
    fn reset(&mut self, stream: u32, _code: u32) {
        self.of(stream);
        self.end(stream);
    }
    fn refused(&mut self, stream: u32) {
        self.of(stream);
        self.end(stream);
    }
}

/// `data` as an origin's bytes, in two pieces cut where its first octet
/// says, to a connection with three streams open (two GETs, a POST whose
/// body goes as the windows allow); events only for open streams, nothing
/// after a stream's end, whole frames out.
pub fn upstream(data: &[u8]) {
    use super::upstream::{Limits as UpLimits, Upstream};
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let cut = usize::from(cut).min(rest.len());
    let now = Instant::now();
    let mut c = Upstream::new(UpLimits::default());
    let mut ev = Streams {
        open: Vec::new(),
        text: Vec::new(),
    };
    for head in [
        &b"GET / HTTP/1.1\r\nHost: o\r\n\r\n"[..],
        b"POST /up HTTP/1.1\r\nHost: o\r\nContent-Length: 70000\r\n\r\n",
        b"GET /b HTTP/1.1\r\nHost: o\r\nCookie: a=1\r\n\r\n",
    ] {
        let (stream, _) = c
            .open(head, "http", !head.starts_with(b"POST"))
            .expect("room");
        ev.open.push(stream);
    }
    let body = [b'p'; 70_000];
    let mut sent = 0;
    let mut out = c.take_output();
    for piece in [&rest[..cut], &rest[cut..]] {
        let failed = c.receive(piece, now, &mut ev).is_err();
        sent += c.send_data(3, &body[sent..], true);
        for s in ev.open.clone() {
            c.consumed(s, 1000);
        }
        out.extend(c.take_output());
        if failed {
            assert!(c.is_done() && ev.open.is_empty());
            break;
        }
    }
    assert!(sent <= body.len());
    let mut at = frame::PREFACE.len();
    while at < out.len() {
        let head = out[at..].first_chunk().expect("a whole frame header");
        let h = frame::Header::parse(head);
        at += frame::HEADER_LEN + h.len as usize;
    }
    assert_eq!(at, out.len(), "the output ends with a whole frame");
}

/// The committed seed corpus through the same checks, on every `cargo
/// test`.
#[cfg(test)]
mod corpus {
    use crate::codec::fuzzing::corpus::replay;

    #[test]
    fn hpack_corpus() {
        replay("hpack", super::hpack);
    }

    #[test]
    fn h2_conn_corpus() {
        replay("h2_conn", super::conn);
    }

    #[test]
    fn h2_upstream_corpus() {
        replay("h2_upstream", super::upstream);
    }
}
