//! The client side against our own server side, in memory, and the
//! HTTP/1.1 forms both ways. (Against nginx: `tests/h2_upstream.rs`.)

use std::time::Instant;

use super::*;
use crate::h2::conn::{Connection, Handler, Limits as ServerLimits, Refusal};
use crate::h2::request::Head;

/// What the client side was told, in order.
#[derive(Default)]
struct Seen(Vec<String>);

impl Events for Seen {
    fn response(&mut self, stream: u32, status: u16, fields: &Fields, end_stream: bool) {
        let names: Vec<String> = fields
            .iter()
            .map(|(n, v)| {
                format!(
                    "{}={}",
                    String::from_utf8_lossy(n),
                    String::from_utf8_lossy(v)
                )
            })
            .collect();
        self.0.push(format!(
            "response {stream} {status} end={end_stream} {}",
            names.join(",")
        ));
    }
    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        self.0
            .push(format!("data {stream} {} end={end}", data.len()));
    }
    fn trailers(&mut self, stream: u32, fields: &Fields) {
        self.0.push(format!("trailers {stream} {}", fields.len()));
    }
    fn reset(&mut self, stream: u32, code: u32) {
        self.0.push(format!("reset {stream} {code}"));
    }
    fn refused(&mut self, stream: u32) {
        self.0.push(format!("refused {stream}"));
    }
}

/// What the server side was asked.
#[derive(Default)]
struct Asked(Vec<String>);

impl Handler for Asked {
    fn request(&mut self, stream: u32, head: Head, end_stream: bool) {
        let text = String::from_utf8_lossy(&head.bytes).into_owned();
        self.0
            .push(format!("request {stream} end={end_stream} {text}"));
    }
    fn refused(&mut self, stream: u32, why: Refusal) {
        self.0.push(format!("refused {stream} {why:?}"));
    }
    fn data(&mut self, stream: u32, data: &[u8], end: bool) {
        self.0
            .push(format!("data {stream} {} end={end}", data.len()));
    }
    fn reset(&mut self, stream: u32) {
        self.0.push(format!("reset {stream}"));
    }
}

/// Bytes both ways until neither side has any.
fn exchange(c: &mut Upstream, s: &mut Connection, seen: &mut Seen, asked: &mut Asked) {
    let now = Instant::now();
    for _ in 0..20 {
        let (a, b) = (c.take_output(), s.take_output());
        if a.is_empty() && b.is_empty() {
            return;
        }
        s.receive(&a, now, asked).unwrap();
        c.receive(&b, now, seen).unwrap();
    }
    panic!("no end to the exchange");
}

fn pair() -> (Upstream, Connection, Seen, Asked) {
    let mut c = Upstream::new(Limits::default());
    let mut s = Connection::new(ServerLimits::default());
    let (mut seen, mut asked) = (Seen::default(), Asked::default());
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    (c, s, seen, asked)
}

#[test]
fn requests_become_streams_and_the_answers_come_back() {
    let (mut c, mut s, mut seen, mut asked) = pair();
    let get = b"GET /a?b HTTP/1.1\r\nHost: o.test\r\nConnection: keep-alive, x-hop\r\nX-Hop: 1\r\nAccept: */*\r\nTE: gzip\r\n\r\n";
    let (one, body) = c.open(get, "http", true).unwrap();
    assert_eq!((one, body), (1, RequestBody::None));
    let post = b"POST /up HTTP/1.1\r\nHost: o.test\r\nContent-Length: 5\r\n\r\n";
    let (three, body) = c.open(post, "http", false).unwrap();
    assert_eq!((three, body), (3, RequestBody::Length(5)));
    assert_eq!(c.send_data(3, b"hello", true), 5);
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    assert_eq!(
        asked.0,
        [
            "request 1 end=true GET /a?b HTTP/1.1\r\nhost: o.test\r\naccept: */*\r\n\r\n",
            "request 3 end=false POST /up HTTP/1.1\r\nhost: o.test\r\ncontent-length: 5\r\n\r\n",
            "data 3 5 end=true",
        ]
    );
    // Answered out of order; one with trailers.
    s.send_headers(3, 201, &[(b"content-length", b"2")], false);
    s.send_data(3, b"ok", true, Instant::now());
    s.send_headers(1, 200, &[(b"content-type", b"text/plain")], false);
    s.send_data(1, b"abc", false, Instant::now());
    s.send_trailers(1, &[(b"grpc-status", b"0")]);
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    assert_eq!(
        seen.0,
        [
            "response 3 201 end=false :status=201,content-length=2",
            "data 3 2 end=true",
            "response 1 200 end=false :status=200,content-type=text/plain",
            "data 1 3 end=false",
            "trailers 1 1",
        ]
    );
    assert_eq!(c.open_streams(), 0);
}

#[test]
fn goaway_and_refused_streams_may_go_elsewhere() {
    let (mut c, mut s, mut seen, mut asked) = pair();
    let get = b"GET / HTTP/1.1\r\nHost: o.test\r\n\r\n";
    c.open(get, "http", true).unwrap();
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    // The server drains: stream 1 finishes; stream 3, sent after, was
    // not processed.
    s.go_away();
    c.open(get, "http", true).unwrap();
    let a = c.take_output();
    let b = s.take_output();
    s.receive(&a, Instant::now(), &mut asked).unwrap();
    c.receive(&b, Instant::now(), &mut seen).unwrap();
    assert_eq!(seen.0, ["refused 3"]);
    assert!(!c.may_open());
    assert_eq!(c.open(get, "http", true), Err(OpenError::NoRoom));
    s.send_headers(1, 200, &[], true);
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    assert_eq!(
        seen.0.last().unwrap(),
        "response 1 200 end=true :status=200"
    );
    assert!(c.is_done());
}

#[test]
fn the_origins_limit_and_windows_are_obeyed() {
    let limits = ServerLimits {
        max_streams: 2,
        stream_window: 65_535,
        ..ServerLimits::default()
    };
    let mut c = Upstream::new(Limits::default());
    let mut s = Connection::new(limits);
    let (mut seen, mut asked) = (Seen::default(), Asked::default());
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    let post = b"POST / HTTP/1.1\r\nHost: o.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    assert_eq!(c.open(post, "http", false).unwrap().1, RequestBody::Chunked);
    c.open(post, "http", false).unwrap();
    assert!(!c.may_open(), "two open, two allowed");
    // A stream window of 65,535: no more goes until the server takes it.
    let body = vec![b'x'; 100_000];
    assert_eq!(c.send_data(1, &body, true), 65_535);
    assert_eq!(c.send_data(1, &body[65_535..], true), 0);
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    s.consumed(1, 65_535);
    exchange(&mut c, &mut s, &mut seen, &mut asked);
    assert_eq!(c.send_data(1, &body[65_535..], true), 100_000 - 65_535);
}

#[test]
fn an_origin_that_breaks_the_rules_ends_the_connection() {
    let (mut c, _s, mut seen, _asked) = pair();
    c.open(b"GET / HTTP/1.1\r\nHost: o\r\n\r\n", "http", true)
        .unwrap();
    c.take_output();
    // HEADERS on a stream we never opened (push is off).
    let mut bad = Vec::new();
    frame::write_headers(&mut bad, 2, &[0x88], true, 16_384);
    assert_eq!(
        c.receive(&bad, Instant::now(), &mut seen),
        Err(ErrorCode::Protocol)
    );
    assert_eq!(seen.0, ["reset 1 1"]);
    assert!(c.is_done());
}

#[test]
fn responses_are_written_as_http1_for_the_agents() {
    let mut fields = Fields::default();
    let mut d = Decoder::new(4096);
    let mut block = Vec::new();
    let mut e = Encoder::default();
    e.field(&mut block, b":status", b"200", false);
    e.field(&mut block, b"content-type", b"text/plain", false);
    d.decode(&block, 65_536, &mut fields).unwrap();
    let mut out = Vec::new();
    let mut r = Http1Response::default();
    r.head(200, &fields, false, &mut out);
    r.data(b"abc", false, &mut out);
    let mut trailers = Fields::default();
    let mut block = Vec::new();
    e.field(&mut block, b"grpc-status", b"0", false);
    d.decode(&block, 65_536, &mut trailers).unwrap();
    r.trailers(&trailers, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n\
         3\r\nabc\r\n0\r\ngrpc-status: 0\r\n\r\n"
    );
    let mut out = Vec::new();
    Http1Response::default().head(204, &fields, true, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "HTTP/1.1 204 No Content\r\ncontent-type: text/plain\r\n\r\n"
    );
}

#[test]
fn requests_ringmux_would_never_write_are_refused() {
    let mut e = Encoder::default();
    let mut block = Vec::new();
    for bad in [
        &b"GET / HTTP/1.1\r\n\r\n"[..],
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\n",
    ] {
        assert_eq!(
            encode_request(bad, "http", &mut e, &mut block),
            Err(OpenError::BadHead),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

/// A response head block of `fields` (lower-case or not, as given).
fn block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut e = Encoder::default();
    let mut b = Vec::new();
    for (n, v) in fields {
        e.field(&mut b, n, v, false);
    }
    b
}

/// An Upstream past its preface with one GET (stream 1) open, and the
/// origin's SETTINGS read.
fn one_get(head_request: bool) -> (Upstream, Seen) {
    let mut c = Upstream::new(Limits::default());
    let mut seen = Seen::default();
    let method = if head_request { "HEAD" } else { "GET" };
    c.open(
        format!("{method} / HTTP/1.1\r\nHost: o\r\n\r\n").as_bytes(),
        "http",
        true,
    )
    .unwrap();
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[]);
    c.receive(&settings, Instant::now(), &mut seen).unwrap();
    c.take_output();
    (c, seen)
}

#[test]
fn fields_an_http1_head_could_not_hold_are_a_stream_error() {
    for bad in [
        &[
            (&b":status"[..], &b"200"[..]),
            (b"x-a", b"1\r\ncontent-length: 0"),
        ][..],
        &[(b":status", b"200"), (b"X-Upper", b"1")],
        &[(b":status", b"200"), (b"x-a", b"nul\0")],
        &[(b":status", b"200"), (b"connection", b"close")],
        &[
            (b":status", b"200"),
            (b"content-length", b"1"),
            (b"content-length", b"2"),
        ],
    ] {
        let (mut c, mut seen) = one_get(false);
        let mut f = Vec::new();
        frame::write_headers(&mut f, 1, &block(bad), false, 16_384);
        c.receive(&f, Instant::now(), &mut seen).unwrap();
        assert_eq!(seen.0, ["reset 1 1"], "{bad:?}");
    }
}

#[test]
fn the_body_must_be_what_content_length_says() {
    let now = Instant::now();
    let head = block(&[(b":status", b"200"), (b"content-length", b"10")]);
    // Short: 4 octets, then the end.
    let (mut c, mut seen) = one_get(false);
    let mut f = Vec::new();
    frame::write_headers(&mut f, 1, &head, false, 16_384);
    frame::write_data_header(&mut f, 1, 4, true);
    f.extend_from_slice(b"abcd");
    c.receive(&f, now, &mut seen).unwrap();
    assert_eq!(seen.0[1..], ["reset 1 1"]);
    // Long: 12 octets.
    let (mut c, mut seen) = one_get(false);
    let mut f = Vec::new();
    frame::write_headers(&mut f, 1, &head, false, 16_384);
    frame::write_data_header(&mut f, 1, 12, false);
    f.extend_from_slice(b"abcdefghijkl");
    c.receive(&f, now, &mut seen).unwrap();
    assert_eq!(seen.0[1..], ["reset 1 1"]);
    // None at all, the head ending the stream.
    let (mut c, mut seen) = one_get(false);
    let mut f = Vec::new();
    frame::write_headers(&mut f, 1, &head, true, 16_384);
    c.receive(&f, now, &mut seen).unwrap();
    assert_eq!(seen.0, ["reset 1 1"]);
    // A HEAD's answer says a length and has no body: fine.
    let (mut c, mut seen) = one_get(true);
    let mut f = Vec::new();
    frame::write_headers(&mut f, 1, &head, true, 16_384);
    c.receive(&f, now, &mut seen).unwrap();
    assert_eq!(seen.0.len(), 1);
    assert!(seen.0[0].starts_with("response 1 200 end=true"));
}

#[test]
fn a_stream_the_origin_answered_is_never_refused() {
    // RST_STREAM REFUSED_STREAM, or a GOAWAY below it, after a head (final
    // or interim): the origin processed the request; it must not go again.
    for interim in [false, true] {
        let status: &[u8] = if interim { b"100" } else { b"200" };
        for goaway in [false, true] {
            let (mut c, mut seen) = one_get(false);
            let mut f = Vec::new();
            frame::write_headers(&mut f, 1, &block(&[(b":status", status)]), false, 16_384);
            if goaway {
                frame::write_goaway(&mut f, 0, ErrorCode::NoError);
            } else {
                frame::write_rst(&mut f, 1, ErrorCode::RefusedStream);
            }
            c.receive(&f, Instant::now(), &mut seen).unwrap();
            assert!(
                seen.0.iter().all(|e| !e.starts_with("refused")),
                "interim {interim} goaway {goaway}: {:?}",
                seen.0
            );
            assert!(seen.0.iter().any(|e| e == "reset 1 7"), "{:?}", seen.0);
        }
    }
    // Before any head it is refused: it may go again.
    let (mut c, mut seen) = one_get(false);
    let mut f = Vec::new();
    frame::write_rst(&mut f, 1, ErrorCode::RefusedStream);
    c.receive(&f, Instant::now(), &mut seen).unwrap();
    assert_eq!(seen.0, ["refused 1"]);
}

#[test]
fn a_table_size_update_survives_a_refused_head() {
    let mut c = Upstream::new(Limits::default());
    let mut seen = Seen::default();
    let mut settings = Vec::new();
    frame::write_settings(&mut settings, &[(setting::HEADER_TABLE_SIZE, 0)]);
    c.receive(&settings, Instant::now(), &mut seen).unwrap();
    c.take_output();
    let upgrade = b"GET / HTTP/1.1\r\nHost: o\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
    assert_eq!(c.open(upgrade, "http", true), Err(OpenError::BadHead));
    c.open(b"GET / HTTP/1.1\r\nHost: o\r\n\r\n", "http", true)
        .unwrap();
    let out = c.take_output();
    let Ok(Some((Frame::Headers { block, .. }, _))) = frame::read(&out, 1 << 20) else {
        panic!("HEADERS first: {out:02x?}")
    };
    assert_eq!(block[0], 0x20, "the block starts with the size update to 0");
}
