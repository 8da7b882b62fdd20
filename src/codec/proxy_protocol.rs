//! The PROXY protocol (HAProxy's, versions 1 and 2): the header an L4
//! balancer puts before a connection's first byte to say whose connection
//! it is, read on `--accept-proxy` listeners and written toward origins
//! with `send_proxy`.
//!
//! - v1 is one text line: `PROXY TCP4 192.0.2.1 198.51.100.2 56324 443\r\n`
//!   (or `TCP6`, or `UNKNOWN ...` when the balancer cannot tell), at most
//!   107 bytes.
//! - v2 is binary: a 12-byte signature, a version/command byte (`0x21`
//!   PROXY, `0x20` LOCAL: the balancer's own connection, a health check), a
//!   family/transport byte (`0x11` TCP over IPv4, `0x21` over IPv6), a
//!   big-endian length, the addresses, then TLVs (read past, unused).
//!
//! Sans-I/O: bytes in, a header and its length out.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The v2 signature.
const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// A v1 line is at most this long, CRLF included.
const V1_MAX: usize = 107;

/// The most a v2 header may hold after its 16 fixed bytes: addresses and
/// TLVs (a balancer that sends more is not one we serve).
const V2_MAX_BODY: usize = 2048;

/// What a header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProxyHeader {
    /// The client's address and port (None: `UNKNOWN` or `LOCAL`: the
    /// connection's own peer stands).
    pub source: Option<SocketAddr>,
    /// The address the client connected to.
    pub destination: Option<SocketAddr>,
}

/// Read a header at the start of `buf`: `Ok(None)` if more bytes are
/// needed, else the header and how many bytes it took; an error says what
/// is wrong (the connection is to be closed).
pub fn parse(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    match first {
        b'P' => parse_v1(buf),
        b'\r' => parse_v2(buf),
        _ => Err("no PROXY protocol header"),
    }
}

fn parse_v1(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    let prefix = &buf[..buf.len().min(6)];
    if !b"PROXY ".starts_with(prefix) {
        return Err("no PROXY protocol header");
    }
    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
        return if buf.len() >= V1_MAX {
            Err("PROXY v1 line too long")
        } else {
            Ok(None)
        };
    };
    if end + 2 > V1_MAX {
        return Err("PROXY v1 line too long");
    }
    let line = std::str::from_utf8(&buf[6..end]).map_err(|_| "PROXY v1 line is not text")?;
    let mut parts = line.split(' ');
    let header = match parts.next() {
        Some("UNKNOWN") => ProxyHeader {
            source: None,
            destination: None,
        },
        Some(family @ ("TCP4" | "TCP6")) => {
            let (Some(src), Some(dst), Some(sport), Some(dport), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                return Err("PROXY v1 line: expected four fields");
            };
            let ip = |s: &str| -> Result<IpAddr, &'static str> {
                let ip: IpAddr = s.parse().map_err(|_| "PROXY v1 line: bad address")?;
                match (family, ip) {
                    ("TCP4", IpAddr::V4(_)) | ("TCP6", IpAddr::V6(_)) => Ok(ip),
                    _ => Err("PROXY v1 line: address of the wrong family"),
                }
            };
            let port = |s: &str| -> Result<u16, &'static str> {
                let digits = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
                if !digits || s.len() > 1 && s.starts_with('0') {
                    return Err("PROXY v1 line: bad port");
                }
                s.parse().map_err(|_| "PROXY v1 line: bad port")
            };
            ProxyHeader {
                source: Some(SocketAddr::new(ip(src)?, port(sport)?)),
                destination: Some(SocketAddr::new(ip(dst)?, port(dport)?)),
            }
        }
        _ => return Err("PROXY v1 line: unknown protocol family"),
    };
    Ok(Some((header, end + 2)))
}

fn parse_v2(buf: &[u8]) -> Result<Option<(ProxyHeader, usize)>, &'static str> {
    let seen = buf.len().min(SIGNATURE.len());
    if buf[..seen] != SIGNATURE[..seen] {
        return Err("no PROXY protocol header");
    }
    if buf.len() < 16 {
        return Ok(None);
    }
    let (ver_cmd, family) = (buf[12], buf[13]);
    if ver_cmd >> 4 != 2 {
        return Err("PROXY v2 header: unknown version");
    }
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    if len > V2_MAX_BODY {
        return Err("PROXY v2 header too long");
    }
    if buf.len() < 16 + len {
        return Ok(None);
    }
    let body = &buf[16..16 + len];
    let local = ProxyHeader {
        source: None,
        destination: None,
    };
    let header = match ver_cmd & 0x0f {
        // LOCAL: the balancer's own connection; the peer stands.
        0 => local,
        1 => match family {
            // TCP over IPv4 (UDP, 0x12, is not a connection we serve).
            0x11 => {
                let a = body
                    .get(..12)
                    .ok_or("PROXY v2 header: short IPv4 addresses")?;
                let ip = |o: usize| IpAddr::V4(Ipv4Addr::new(a[o], a[o + 1], a[o + 2], a[o + 3]));
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(8))),
                    destination: Some(SocketAddr::new(ip(4), port(10))),
                }
            }
            0x21 => {
                let a = body
                    .get(..36)
                    .ok_or("PROXY v2 header: short IPv6 addresses")?;
                let ip = |o: usize| {
                    let mut b = [0u8; 16];
                    b.copy_from_slice(&a[o..o + 16]);
                    IpAddr::V6(Ipv6Addr::from(b))
                };
                let port = |o: usize| u16::from_be_bytes([a[o], a[o + 1]]);
                ProxyHeader {
                    source: Some(SocketAddr::new(ip(0), port(32))),
                    destination: Some(SocketAddr::new(ip(16), port(34))),
                }
            }
            // UNSPEC, or a family we do not forward for (unix sockets).
            _ => local,
        },
        _ => return Err("PROXY v2 header: unknown command"),
    };
    Ok(Some((header, 16 + len)))
}

/// Append a v1 line for a connection from `source` to `destination`.
pub fn write_v1(out: &mut Vec<u8>, source: SocketAddr, destination: SocketAddr) {
    use std::io::Write;
    let (src, dst) = (source.ip().to_canonical(), destination.ip().to_canonical());
    let _ = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => write!(
            out,
            "PROXY TCP4 {s} {d} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        (IpAddr::V6(s), IpAddr::V6(d)) => write!(
            out,
            "PROXY TCP6 {s} {d} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        // Mixed families: say so rather than mislabel one.
        _ => write!(out, "PROXY UNKNOWN\r\n"),
    };
}

/// Append a v2 header with the LOCAL command: the proxy's own connection
/// (a health check), no client's address.
pub fn write_v2_local(out: &mut Vec<u8>) {
    out.extend_from_slice(&SIGNATURE);
    out.extend_from_slice(&[0x20, 0x00, 0, 0]);
}

/// Append a v2 header (PROXY command, TCP) for a connection from `source`
/// to `destination`.
pub fn write_v2(out: &mut Vec<u8>, source: SocketAddr, destination: SocketAddr) {
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21);
    match (source.ip().to_canonical(), destination.ip().to_canonical()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            out.extend_from_slice(&[0x11, 0, 12]);
            out.extend_from_slice(&s.octets());
            out.extend_from_slice(&d.octets());
        }
        (s, d) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(a) => a.to_ipv6_mapped(),
                IpAddr::V6(a) => a,
            };
            out.extend_from_slice(&[0x21, 0, 36]);
            out.extend_from_slice(&v6(s).octets());
            out.extend_from_slice(&v6(d).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// Parsed whole, and `Ok(None)` at every shorter prefix.
    fn parse_whole(bytes: &[u8]) -> (ProxyHeader, usize) {
        for i in 0..bytes.len() {
            assert_eq!(parse(&bytes[..i]), Ok(None), "prefix {i}");
        }
        parse(bytes).unwrap().unwrap()
    }

    #[test]
    fn v1_lines_as_the_specification_writes_them() {
        let line = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET /";
        let (h, used) = parse_whole(&line[..47]);
        assert_eq!(used, 47);
        assert_eq!(h.source, Some(addr("192.168.0.1:56324")));
        assert_eq!(h.destination, Some(addr("192.168.0.11:443")));
        assert_eq!(
            parse(line).unwrap().unwrap().1,
            47,
            "what follows is the client's"
        );
        let (h, _) = parse_whole(b"PROXY TCP6 2001:db8::1 2001:db8::2 1 2\r\n");
        assert_eq!(h.source, Some(addr("[2001:db8::1]:1")));
        let (h, _) = parse_whole(b"PROXY UNKNOWN\r\n");
        assert_eq!(h.source, None);
        for bad in [
            &b"GET / HTTP/1.1\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 ::1 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 70000 1\r\n",
            b"PROXY TCP9 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXYTCP4",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert!(parse(&[b'P'; 200]).is_err(), "bounded");
    }

    #[test]
    fn v2_headers_both_families_local_and_tlvs() {
        let mut v4 = Vec::new();
        write_v2(&mut v4, addr("10.1.2.3:4000"), addr("10.9.9.9:443"));
        let (h, used) = parse_whole(&v4);
        assert_eq!((h.source, used), (Some(addr("10.1.2.3:4000")), 28));
        let mut v6 = Vec::new();
        write_v2(&mut v6, addr("[2001:db8::7]:5"), addr("[2001:db8::8]:6"));
        assert_eq!(parse_whole(&v6).0.source, Some(addr("[2001:db8::7]:5")));
        // TLVs after the addresses are counted in the length, skipped.
        let mut tlv = v4.clone();
        tlv[15] += 5;
        tlv.extend_from_slice(&[0x04, 0, 2, b'h', b'i']);
        assert_eq!(parse_whole(&tlv).1, 33);
        // LOCAL: no address.
        let mut local = SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(parse_whole(&local).0.source, None);
        let mut bad = v4.clone();
        bad[12] = 0x31;
        assert!(parse(&bad).is_err(), "version 3");
        bad[12] = 0x2f;
        assert!(parse(&bad).is_err(), "command 15");
    }

    #[test]
    fn what_is_written_reads_back() {
        let (s, d) = (addr("127.0.0.2:1234"), addr("127.0.0.1:80"));
        let mut v1 = Vec::new();
        write_v1(&mut v1, s, d);
        assert_eq!(v1, b"PROXY TCP4 127.0.0.2 127.0.0.1 1234 80\r\n");
        assert_eq!(parse(&v1).unwrap().unwrap().0.source, Some(s));
        let mut v2 = Vec::new();
        write_v2(&mut v2, s, d);
        assert_eq!(parse(&v2).unwrap().unwrap().0.destination, Some(d));
    }
}
