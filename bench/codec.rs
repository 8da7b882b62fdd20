//! Micro-benchmark of the sans-I/O codec: `cargo bench --bench codec`.
//!
//! Times what the proxy does to every message: parse and rewrite a request
//! head (a small wrk-style GET and a browser-sized one), parse and rewrite a
//! response head, and validate a chunked body while it streams. No sockets,
//! no framework: each case runs for about half a second after a warm-up,
//! and the report gives nanoseconds per operation and, for bodies, MB/s.
//! The figures are for comparing one version of the codec with the next on
//! the same machine; `bench/run.sh` is the proxy-level comparison.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use ringmux::codec::{parse_request, parse_response, BodyDecoder, ForwardCtx, Method, ResponseCtx};
use ringmux::codec::{Framing, HeadLimits};

const SMALL_GET: &[u8] = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n\r\n";

const BROWSER_GET: &[u8] = b"GET /static/app/main.3f9a1c.js?v=20261123 HTTP/1.1\r\n\
Host: www.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: */*\r\n\
Accept-Language: en-GB,en;q=0.7,fr;q=0.3\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Referer: https://www.example.com/products/list?page=3&sort=price\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark; consent=1\r\n\
Connection: keep-alive\r\n\
Sec-Fetch-Dest: script\r\n\
Sec-Fetch-Mode: no-cors\r\n\
Sec-Fetch-Site: same-origin\r\n\
If-None-Match: \"5e1a-63f2b7c1\"\r\n\
X-Forwarded-For: 198.51.100.7\r\n\r\n";

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\n\
Server: origin\r\n\
Date: Mon, 23 Nov 2026 11:00:00 GMT\r\n\
Content-Type: application/javascript\r\n\
Content-Length: 20\r\n\
Cache-Control: public, max-age=31536000, immutable\r\n\
ETag: \"5e1a-63f2b7c1\"\r\n\
Connection: keep-alive\r\n\
Keep-Alive: timeout=5\r\n\r\n";

/// Run `op` repeatedly for about `for_` and return nanoseconds per call.
fn time<F: FnMut()>(mut op: F, for_: Duration) -> f64 {
    for _ in 0..1000 {
        op();
    }
    let mut n: u64 = 0;
    let mut batch: u64 = 1000;
    let start = Instant::now();
    loop {
        for _ in 0..batch {
            op();
        }
        n += batch;
        let spent = start.elapsed();
        if spent >= for_ {
            return spent.as_nanos() as f64 / n as f64;
        }
        batch = batch.saturating_mul(2).min(1 << 20);
    }
}

/// A chunked body of `total` data bytes in chunks of `chunk`.
fn chunked(total: usize, chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(total + total / chunk * 12 + 16);
    let mut left = total;
    while left > 0 {
        let n = left.min(chunk);
        out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
        out.extend(std::iter::repeat_n(b'x', n));
        out.extend_from_slice(b"\r\n");
        left -= n;
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

fn main() {
    // `cargo bench` passes `--bench`; a name filter may follow.
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with("--"));
    let run = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    let for_ = Duration::from_millis(500);
    let ctx = ForwardCtx {
        client: IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10)),
        proto: "http",
        limits: HeadLimits::DEFAULT,
        via: Some("ringmux"),
        affinity_cookie: None,
        drop_field: None,
    };
    let mut out = Vec::with_capacity(4096);

    println!("{:<34} {:>12} {:>12}", "case", "ns/op", "MB/s");
    for (name, head) in [
        ("request head, small GET", SMALL_GET),
        ("request head, browser GET", BROWSER_GET),
    ] {
        if !run(name) {
            continue;
        }
        let ns = time(
            || {
                out.clear();
                let h = parse_request(black_box(head), &ctx, &mut out);
                black_box(h.expect("valid").expect("complete"));
            },
            for_,
        );
        let mbs = head.len() as f64 / ns * 1e3;
        println!("{name:<34} {ns:>12.1} {mbs:>12.1}");
    }

    let rctx = ResponseCtx {
        request_method: Method::Get,
        client_minor_version: 1,
        client_keep_alive: true,
        upgrade: false,
        via: Some("ringmux"),
    };
    let name = "response head";
    if run(name) {
        let ns = time(
            || {
                out.clear();
                let h = parse_response(black_box(RESPONSE), &rctx, &mut out);
                black_box(h.expect("valid").expect("complete"));
            },
            for_,
        );
        let mbs = RESPONSE.len() as f64 / ns * 1e3;
        println!("{name:<34} {ns:>12.1} {mbs:>12.1}");
    }

    for (name, chunk) in [
        ("chunked body 1 MiB, 16 KiB chunks", 16 * 1024),
        ("chunked body 1 MiB, 256 B chunks", 256),
    ] {
        if !run(name) {
            continue;
        }
        let body = chunked(1 << 20, chunk);
        let ns = time(
            || {
                let mut d = BodyDecoder::new(Framing::Chunked);
                // Fed as the 16 KiB receive buffers would deliver it.
                for piece in black_box(&body).chunks(16 * 1024) {
                    let p = d.feed(piece, &mut |_| {}).expect("valid chunked");
                    black_box(p);
                }
                assert!(d.is_done());
            },
            for_,
        );
        let mbs = body.len() as f64 / ns * 1e3;
        println!("{name:<34} {ns:>12.1} {mbs:>12.1}");
    }
}
