//! The agent without sockets: ordering, framing, failures, bounds.

use super::*;
use crate::codec;
use crate::error::ProxyError;
use crate::session::{ClientSession, FailOutcome, UpstreamFate};

fn agent() -> ClientAgent {
    ClientAgent::new(
        ForwardCtx {
            client: [10, 0, 0, 1].into(),
            proto: "http",
            limits: codec::HeadLimits::DEFAULT,
            via: None,
            affinity_cookie: None,
            drop_field: None,
        },
        16,
    )
}

fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n")
}

fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn ready(a: &mut ClientAgent) -> Vec<ExchangeId> {
    std::iter::from_fn(|| a.next_ready()).collect()
}

/// The exchanges that may go upstream now, each handed out whole as
/// a placement on a connection would (an origin answers what it got).
fn dispatch(a: &mut ClientAgent) -> Vec<ExchangeId> {
    let ids = ready(a);
    for &id in &ids {
        a.hand_request(id, &mut Vec::new(), b"origin");
    }
    ids
}

fn take_out(a: &mut ClientAgent) -> String {
    String::from_utf8(std::mem::take(a.output())).unwrap()
}

fn bodies(out: &str) -> Vec<&str> {
    out.split("HTTP/1.1 ")
        .skip(1)
        .map(|r| r.split("\r\n\r\n").nth(1).unwrap())
        .collect()
}

#[test]
fn pipelined_safe_requests_are_all_ready_at_once() {
    let mut a = agent();
    a.on_client_data(format!("{}{}{}", get("/1"), get("/2"), get("/3")).as_bytes());
    assert_eq!(ready(&mut a), vec![0, 1, 2]);
    for id in 0..3 {
        assert!(a.peek_request(id).starts_with(b"GET /"));
    }
}

#[test]
fn responses_arriving_out_of_order_leave_in_request_order() {
    let mut a = agent();
    a.on_client_data(format!("{}{}{}", get("/1"), get("/2"), get("/3")).as_bytes());
    dispatch(&mut a);
    assert_eq!(a.on_response_data(2, &ok("three")).0, UpstreamFate::Reuse);
    assert_eq!(a.on_response_data(1, &ok("two")).0, UpstreamFate::Reuse);
    assert!(
        a.output().is_empty(),
        "nothing may overtake the first response"
    );
    assert_eq!(a.on_response_data(0, &ok("one")).0, UpstreamFate::Reuse);
    assert_eq!(bodies(&take_out(&mut a)), ["one", "two", "three"]);
    assert_eq!(a.pending(), 0);
    assert!(!a.wants_close());
}

#[test]
fn a_post_waits_for_earlier_requests_and_holds_back_later_ones() {
    let mut a = agent();
    let post = "POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
    a.on_client_data(format!("{}{post}{}", get("/1"), get("/3")).as_bytes());
    assert_eq!(
        ready(&mut a),
        vec![0],
        "only the GET before the POST starts"
    );
    a.on_response_data(0, &ok("one"));
    assert_eq!(
        ready(&mut a),
        vec![1],
        "the POST starts once the GET is answered"
    );
    assert!(a.peek_request(1).ends_with(b"\r\n\r\nabc"));
    assert!(a.request_done(1));
    a.on_response_data(1, &ok("two"));
    assert_eq!(
        ready(&mut a),
        vec![2],
        "the GET after the POST waits for it"
    );
    a.on_response_data(2, &ok("three"));
    assert_eq!(bodies(&take_out(&mut a)), ["one", "two", "three"]);
}

#[test]
fn pipeline_depth_bounds_requests_in_flight() {
    let mut a = ClientAgent::new(
        ForwardCtx {
            client: [10, 0, 0, 1].into(),
            proto: "http",
            limits: codec::HeadLimits::DEFAULT,
            via: None,
            affinity_cookie: None,
            drop_field: None,
        },
        2,
    );
    a.on_client_data(
        (1..=4)
            .map(|i| get(&format!("/{i}")))
            .collect::<String>()
            .as_bytes(),
    );
    assert_eq!(ready(&mut a), vec![0, 1]);
    assert!(!a.may_read_client(), "depth reached: stop reading");
    a.on_response_data(0, &ok("1"));
    assert_eq!(
        ready(&mut a),
        vec![2],
        "a slot freed, the next parsed request goes"
    );
}

#[test]
fn a_response_split_at_every_byte_gives_the_same_output() {
    let resp = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: X-Hop\r\nX-Hop: 1\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    let whole = {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        dispatch(&mut a);
        assert_eq!(a.on_response_data(0, resp).0, UpstreamFate::Reuse);
        take_out(&mut a)
    };
    assert!(
        !whole.contains("X-Hop"),
        "hop-by-hop headers are dropped: {whole}"
    );
    for cut in 1..resp.len() {
        let mut a = agent();
        a.on_client_data(get("/").as_bytes());
        dispatch(&mut a);
        assert_eq!(
            a.on_response_data(0, &resp[..cut]).0,
            UpstreamFate::Busy,
            "cut {cut}"
        );
        assert_eq!(
            a.on_response_data(0, &resp[cut..]).0,
            UpstreamFate::Reuse,
            "cut {cut}"
        );
        assert_eq!(take_out(&mut a), whole, "cut {cut}");
    }
}

#[test]
fn requests_split_at_every_byte_parse_the_same() {
    let input = format!(
        "{}POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
        get("/x")
    );
    let bytes = input.as_bytes();
    for cut in 0..=bytes.len() {
        let mut a = agent();
        a.on_client_data(&bytes[..cut]);
        a.on_client_data(&bytes[cut..]);
        assert_eq!(a.pending(), 2, "cut {cut}");
        assert_eq!(ready(&mut a), vec![0], "cut {cut}");
        a.on_response_data(0, &ok("x"));
        assert_eq!(ready(&mut a), vec![1], "cut {cut}");
        assert!(a.peek_request(1).ends_with(b"abc"), "cut {cut}");
    }
}

#[test]
fn a_malformed_request_is_answered_in_order_then_closed() {
    let mut a = agent();
    a.on_client_data(format!("{}GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", get("/ok")).as_bytes());
    assert_eq!(ready(&mut a), vec![0]);
    assert!(
        a.output().is_empty(),
        "the 400 waits for the good request's answer"
    );
    a.on_response_data(0, &ok("fine"));
    let out = take_out(&mut a);
    let second = out.split("HTTP/1.1 ").nth(2).unwrap();
    assert!(second.starts_with("400 "), "{out}");
    assert!(second.contains("Connection: close"));
    assert!(a.wants_close());
    assert!(!a.may_read_client());
}

#[test]
fn a_get_whose_connection_failed_is_retried_once() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    assert_eq!(ready(&mut a), vec![0]);
    a.hand_request(0, &mut Vec::new(), b"up");
    assert_eq!(a.on_upstream_eof(0), FailOutcome::Retry);
    assert_eq!(ready(&mut a), vec![0], "queued again");
    assert!(a.placing(0).unwrap().retry);
    assert!(
        a.peek_request(0).starts_with(b"GET / "),
        "the head is replayed"
    );
    assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
    assert!(take_out(&mut a).starts_with("HTTP/1.1 502 "));
}

#[test]
fn a_post_whose_connection_failed_is_not_retried() {
    let mut a = agent();
    a.on_client_data(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\n\r\nx");
    ready(&mut a);
    a.hand_request(0, &mut Vec::new(), b"up");
    assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
    assert!(take_out(&mut a).starts_with("HTTP/1.1 502 "));
}

#[test]
fn no_upstream_is_a_503_and_the_connection_stays_open() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    ready(&mut a);
    assert_eq!(
        a.on_upstream_error(0, ProxyError::NoUpstream),
        FailOutcome::Answered
    );
    let out = take_out(&mut a);
    assert!(out.starts_with("HTTP/1.1 503 "), "{out}");
    assert!(out.ends_with("no upstream available\n"));
    assert!(!a.wants_close());
}

#[test]
fn an_error_after_the_response_started_cuts_the_client() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    ready(&mut a);
    a.on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    a.on_upstream_eof(0);
    assert!(take_out(&mut a).ends_with("abc"));
    assert!(a.wants_close());
}

#[test]
fn a_response_held_for_its_turn_is_bounded() {
    let mut a = agent();
    a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
    ready(&mut a);
    let big = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
        10 * DEFAULT_BUFFER
    );
    a.on_response_data(1, big.as_bytes());
    assert!((a.upstream_room(1, 0) > 0));
    a.on_response_data(1, &vec![b'x'; DEFAULT_BUFFER]);
    assert!(
        a.upstream_room(1, 0) == 0,
        "held bytes past the limit pause that upstream"
    );
    a.on_response_data(0, &ok("1"));
    assert!(
        a.output().len() > DEFAULT_BUFFER,
        "held bytes move out when their turn comes"
    );
    assert!(
        a.upstream_room(1, 0) == 0,
        "now the client output bounds it"
    );
    take_out(&mut a);
    assert!((a.upstream_room(1, 0) > 0));
}

#[test]
fn close_delimited_response_ends_on_eof_and_closes_the_client() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    ready(&mut a);
    assert_eq!(
        a.on_response_data(0, b"HTTP/1.1 200 OK\r\n\r\nhello").0,
        UpstreamFate::Busy
    );
    assert_eq!(a.on_upstream_eof(0), FailOutcome::Answered);
    let out = take_out(&mut a);
    assert!(out.ends_with("\r\n\r\nhello"), "{out}");
    assert!(out.contains("Connection: close"));
    assert!(a.wants_close());
}

#[test]
fn back_to_back_responses_are_split_by_consumed_bytes() {
    let mut a = agent();
    a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
    dispatch(&mut a);
    let (one, two) = (ok("one"), ok("two"));
    let both = [one.clone(), two].concat();
    assert_eq!(
        a.on_response_data(0, &both),
        (UpstreamFate::Reuse, one.len())
    );
    assert_eq!(
        a.on_response_data(1, &both[one.len()..]),
        (UpstreamFate::Reuse, both.len() - one.len())
    );
    assert_eq!(bodies(&take_out(&mut a)), ["one", "two"]);
    // Split inside the second head too: the partial head is carried.
    let mut a = agent();
    a.on_client_data(format!("{}{}", get("/1"), get("/2")).as_bytes());
    dispatch(&mut a);
    let cut = one.len() + 5;
    assert_eq!(
        a.on_response_data(0, &both[..cut]),
        (UpstreamFate::Reuse, one.len())
    );
    assert_eq!(
        a.on_response_data(1, &both[one.len()..cut]),
        (UpstreamFate::Busy, 5)
    );
    assert_eq!(
        a.on_response_data(1, &both[cut..]),
        (UpstreamFate::Reuse, both.len() - cut)
    );
    assert_eq!(bodies(&take_out(&mut a)), ["one", "two"]);
}

#[test]
fn an_accepted_upgrade_turns_the_exchange_into_a_tunnel() {
    let mut a = agent();
    let req = "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n";
    a.on_client_data(format!("{req}early").as_bytes());
    assert_eq!(ready(&mut a), vec![0]);
    let fwd = String::from_utf8_lossy(a.peek_request(0)).to_string();
    assert!(
        fwd.contains("\r\nConnection: upgrade\r\nUpgrade: websocket\r\n"),
        "{fwd}"
    );
    a.hand_request(0, &mut Vec::new(), b"up");
    let sw = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nhello";
    assert_eq!(a.on_response_data(0, sw), (UpstreamFate::Busy, sw.len()));
    assert!(a.is_tunnel());
    let out = take_out(&mut a);
    assert!(out.starts_with("HTTP/1.1 101 "), "{out}");
    assert!(out.ends_with("\r\n\r\nhello"), "{out}");
    // Bytes the client sent early, and later, go through untouched.
    assert_eq!(a.peek_request(0), b"early");
    a.hand_request(0, &mut Vec::new(), b"up");
    a.on_client_data(b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(
        a.peek_request(0),
        b"GET / HTTP/1.1\r\n\r\n",
        "no parsing in a tunnel"
    );
    assert_eq!(
        a.on_response_data(0, b"\x81\x05frame"),
        (UpstreamFate::Busy, 7)
    );
    assert_eq!(std::mem::take(a.output()), b"\x81\x05frame");
    // The origin's FIN is a half-close: the client may go on sending.
    a.on_upstream_eof(0);
    let ends = a.tunnel().expect("still a tunnel");
    assert!(ends.upstream_done && !ends.client_done);
    assert!(!a.wants_close());
    a.on_client_data(b"more");
    assert_eq!(a.pending_request(0), b"GET / HTTP/1.1\r\n\r\nmore".len());
    a.on_client_eof();
    let ends = a.tunnel().expect("still a tunnel");
    assert!(
        ends.upstream_done && ends.client_done,
        "the driver closes both"
    );
}

#[test]
fn a_tunnel_keeps_no_bytes_it_has_handed_on() {
    let mut a = agent();
    a.on_client_data(
        b"GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    );
    assert_eq!(ready(&mut a), vec![0]);
    a.hand_request(0, &mut Vec::new(), b"up");
    let sw =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n";
    a.on_response_data(0, sw);
    for _ in 0..100 {
        a.on_client_data(&[b'x'; 1000]);
        let mut out = Vec::new();
        assert_eq!(a.hand_request(0, &mut out, b"up"), 1000);
    }
    let kept = a.exchange(0).map(|e| e.request.bytes.len());
    assert_eq!(kept, Some(0), "a long session must not grow the request");
}

#[test]
fn a_refused_upgrade_goes_back_to_requests() {
    let mut a = agent();
    a.on_client_data(
        format!(
            "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n{}",
            get("/next")
        )
        .as_bytes(),
    );
    assert_eq!(
        ready(&mut a),
        vec![0],
        "nothing after an upgrade request is parsed yet"
    );
    assert_eq!(a.pending(), 1);
    a.on_response_data(0, &ok("no"));
    assert!(!a.is_tunnel());
    assert_eq!(
        ready(&mut a),
        vec![1],
        "the next request is read after the refusal"
    );
}

#[test]
fn client_eof_on_an_idle_connection_closes_it() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    ready(&mut a);
    a.on_response_data(0, &ok("x"));
    assert!(!a.wants_close());
    a.on_client_eof();
    assert!(a.wants_close());
}

#[test]
fn client_eof_with_requests_pending_closes_after_the_answers() {
    let mut a = agent();
    a.on_client_data(get("/").as_bytes());
    ready(&mut a);
    a.on_client_eof();
    assert!(!a.wants_close(), "the pending answer is still owed");
    a.on_response_data(0, &ok("x"));
    assert!(a.wants_close());
    assert!(take_out(&mut a).ends_with("x"));
}

#[test]
fn head_response_has_no_body_even_with_content_length() {
    let mut a = agent();
    a.on_client_data(b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n");
    dispatch(&mut a);
    let fate = a
        .on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n")
        .0;
    assert_eq!(fate, UpstreamFate::Reuse);
}

#[test]
fn a_length_body_at_the_front_may_bypass_the_output() {
    let mut a = agent();
    a.on_client_data(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n");
    dispatch(&mut a);
    assert_eq!(a.verbatim_body(0), 0, "no head yet");
    let (fate, used) = a.on_response_data(0, b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n0123");
    assert_eq!((fate, used), (UpstreamFate::Busy, 43));
    assert_eq!(a.verbatim_body(0), 6);
    assert_eq!(a.verbatim_body(1), 0, "not at the front");
    // The second response arrives first and is held.
    assert_eq!(a.on_response_data(1, &ok("second")).0, UpstreamFate::Reuse);
    let head = take_out(&mut a);
    assert!(head.ends_with("\r\n\r\n0123"), "{head:?}");
    assert_eq!(a.take_verbatim(0, 4), UpstreamFate::Busy);
    assert_eq!(a.verbatim_body(0), 2);
    assert!(
        take_out(&mut a).is_empty(),
        "the bypassed bytes are not copied"
    );
    assert_eq!(a.take_verbatim(0, 2), UpstreamFate::Reuse);
    // Completing the first releases the held second response.
    assert!(take_out(&mut a).ends_with("second"));
    assert_eq!(a.verbatim_body(1), 0, "already complete");
}

#[test]
fn a_chunked_or_dechunked_body_never_bypasses_the_output() {
    let mut a = agent();
    a.on_client_data(b"GET /a HTTP/1.1\r\nHost: a\r\n\r\n");
    ready(&mut a);
    a.on_response_data(
        0,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    );
    assert_eq!(a.verbatim_body(0), 0);
    assert_eq!(a.take_verbatim(0, 1), UpstreamFate::Close);
}

#[test]
fn informational_responses_pass_through_before_the_final_one() {
    let mut a = agent();
    a.on_client_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    dispatch(&mut a);
    assert_eq!(
        a.on_response_data(0, b"HTTP/1.1 100 Continue\r\n\r\n").0,
        UpstreamFate::Busy
    );
    assert!(take_out(&mut a).starts_with("HTTP/1.1 100 Continue"));
    a.on_client_data(b"hi");
    assert!(a.request_done(0));
    a.hand_request(0, &mut Vec::new(), b"origin");
    assert_eq!(a.on_response_data(0, &ok("done")).0, UpstreamFate::Reuse);
}

#[test]
fn an_early_answer_drops_the_rest_of_the_body_and_the_connection_goes_on() {
    let mut a = agent();
    a.on_client_data(b"POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc");
    dispatch(&mut a);
    // The origin answers before the rest of the body: its connection
    // cannot be reused, the client's can.
    assert_eq!(a.on_response_data(0, &ok("early")).0, UpstreamFate::Close);
    let out = take_out(&mut a);
    assert!(!out.contains("Connection: close"), "{out}");
    assert!(!a.wants_close() && a.is_discarding());
    // The rest of the body, split anywhere, then the next request.
    for b in b"defghij".chunks(3) {
        a.on_client_data(b);
    }
    assert!(!a.is_discarding());
    a.on_client_data(get("/next").as_bytes());
    assert_eq!(ready(&mut a), vec![1]);
    assert!(a.peek_request(1).starts_with(b"GET /next "));
    assert!(!a.lingers());
}

#[test]
fn an_early_answer_to_an_unsent_expected_body_ends_the_connection_lingering() {
    let mut a = agent();
    a.on_client_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 9\r\n\r\n",
    );
    dispatch(&mut a);
    // No 100, no body byte: the client may never send the body, and
    // its next request cannot be told from it.
    a.on_response_data(0, &ok("no"));
    let out = take_out(&mut a);
    assert!(out.contains("Connection: close"), "{out}");
    assert!(a.wants_close() && a.lingers());
}

#[test]
fn a_dropped_body_over_the_limit_ends_the_connection_lingering() {
    let mut a = agent().with_max_body(8);
    a.on_client_data(
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n",
    );
    dispatch(&mut a);
    a.on_response_data(0, &ok("early"));
    assert!(a.is_discarding());
    a.on_client_data(b"8\r\nabcdefgh\r\n");
    assert!(!a.is_discarding() && a.wants_close() && a.lingers());
    // The client's own end needs no lingering.
    a.on_client_eof();
    assert!(!a.lingers());
}

#[test]
fn the_affinity_cookie_goes_on_the_final_head_after_a_100() {
    let mut a = agent();
    a.on_client_data(
        b"POST /u HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n",
    );
    let id = dispatch(&mut a)[0];
    a.set_cookie(id, Some(b"Set-Cookie: rmx=1\r\n".to_vec()));
    a.on_response_data(id, b"HTTP/1.1 100 Continue\r\n\r\n");
    a.on_client_data(b"hi");
    a.on_response_data(id, &ok("done"));
    let out = take_out(&mut a);
    let (interim, last) = out.split_once("\r\n\r\n").unwrap();
    assert!(!interim.contains("Set-Cookie"), "{out}");
    assert!(last.contains("Set-Cookie: rmx=1\r\n"), "{out}");
}
