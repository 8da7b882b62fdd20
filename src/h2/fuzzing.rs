//! Entry points shared by the cargo-fuzz targets `hpack` and `h2_conn`
//! (`fuzz/fuzz_targets/`) and the corpus replay below (run by `cargo
//! test`): arbitrary bytes through the HPACK decoder and through a whole
//! server connection, with invariants checked by `assert!`. Not part of the
//! proxy's data path.

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
}
