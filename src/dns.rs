//! DNS SRV lookups for upstreams published as services (Kubernetes headless
//! services, Consul): `_http._tcp.api.service.consul` names its instances'
//! hosts, ports and weights. One query over UDP to the configured server
//! (`--dns-server`, else the first `nameserver` of `/etc/resolv.conf`),
//! the answer's addresses taken from its additional records, or resolved
//! like any name when it has none.
//!
//! Blocking, with a timeout: it runs where names are resolved today (the
//! configuration's validation and the supervisor's re-resolution), never
//! on a worker.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;
const CLASS_IN: u16 = 1;

/// How long one query waits for its answer.
const TIMEOUT: Duration = Duration::from_secs(2);

/// One instance a SRV record names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SrvRecord {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// Its host name (no final dot).
    pub target: String,
}

/// An answer's SRV records, and the addresses (host, address) of its
/// additional section.
pub type SrvAnswer = (Vec<SrvRecord>, Vec<(String, IpAddr)>);

/// The server to ask: `server` if given, else the system's first.
pub fn server(given: Option<SocketAddr>) -> Option<SocketAddr> {
    given.or_else(|| {
        let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
        text.lines().find_map(|l| {
            let ip: IpAddr = l.strip_prefix("nameserver")?.trim().parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
    })
}

/// One instance of a service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    /// `host:port` as the record names it.
    pub name: String,
    pub addr: SocketAddr,
    pub weight: u16,
}

/// The instances of service `name`, from the records of the lowest
/// priority; an error says what went wrong.
pub fn resolve_srv(server: SocketAddr, name: &str) -> Result<Vec<Instance>, String> {
    let (records, addresses) = query(server, name).map_err(|e| format!("SRV {name}: {e}"))?;
    let Some(best) = records.iter().map(|r| r.priority).min() else {
        return Err(format!("SRV {name}: no records"));
    };
    let mut out = Vec::new();
    let mut missing = Vec::new();
    // (A target of `.` says the service is not offered there.)
    for r in records
        .iter()
        .filter(|r| r.priority == best && !r.target.is_empty())
    {
        let known: Vec<IpAddr> = addresses
            .iter()
            .filter(|(host, _)| host.eq_ignore_ascii_case(&r.target))
            .map(|(_, ip)| *ip)
            .collect();
        let addr = match known.first() {
            Some(ip) => SocketAddr::new(*ip, r.port),
            None => match (r.target.as_str(), r.port)
                .to_socket_addrs()
                .ok()
                .and_then(|mut a| a.next())
            {
                Some(a) => a,
                None => {
                    // One instance that does not resolve is left out, not
                    // the service.
                    missing.push(r.target.clone());
                    continue;
                }
            },
        };
        if !out.iter().any(|i: &Instance| i.addr == addr) {
            out.push(Instance {
                name: format!("{}:{}", r.target, r.port),
                addr,
                weight: r.weight,
            });
        }
    }
    if out.is_empty() && !missing.is_empty() {
        return Err(format!(
            "SRV {name}: no target resolves ({})",
            missing.join(", ")
        ));
    }
    Ok(out)
}

/// Ask `server` for the SRV records of `name`: the records, and the
/// addresses (host, address) of the additional section.
pub fn query(server: SocketAddr, name: &str) -> io::Result<SrvAnswer> {
    let bind: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(server)?;
    let id = query_id();
    let question = encode_query(id, name, TYPE_SRV)?;
    socket.send(&question)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline
            .checked_duration_since(std::time::Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| io::Error::new(io::ErrorKind::TimedOut, "no answer"))?;
        socket.set_read_timeout(Some(left))?;
        let n = socket.recv(&mut buf)?;
        // An answer echoes the question: anything else is not ours.
        if buf[..n].get(12..question.len()) != Some(&question[12..]) {
            continue;
        }
        match parse_answer(&buf[..n], id) {
            Ok(Some(answer)) => return Ok(answer),
            Ok(None) => continue, // another query's answer: keep waiting
            Err(e) => return Err(io::Error::other(e)),
        }
    }
}

/// A random query id (the standard library's per-process random keys).
fn query_id() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(0xd115);
    (h.finish() & 0xffff) as u16
}

/// A query for `name` of type `qtype`, recursion desired.
pub fn encode_query(id: u16, name: &str, qtype: u16) -> io::Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + name.len());
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(io::Error::other(format!("'{name}' is not a DNS name")));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&CLASS_IN.to_be_bytes());
    Ok(out)
}

/// The SRV records and additional addresses of a response to query `id`
/// (None: a response to another query).
pub fn parse_answer(msg: &[u8], id: u16) -> Result<Option<SrvAnswer>, String> {
    if msg.len() < 12 {
        return Err("short response".into());
    }
    if u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return Ok(None);
    }
    match msg[3] & 0x0f {
        0 => {}
        3 => return Err("no such name".into()),
        rcode => return Err(format!("server answered with error {rcode}")),
    }
    if msg[2] & 0x02 != 0 {
        return Err("answer truncated (too many records for UDP)".into());
    }
    let count = |at: usize| usize::from(u16::from_be_bytes([msg[at], msg[at + 1]]));
    let (qd, an, ns, ar) = (count(4), count(6), count(8), count(10));
    let mut at = 12;
    for _ in 0..qd {
        at = read_name(msg, at)?.1 + 4;
    }
    let mut records = Vec::new();
    let mut addresses = Vec::new();
    for i in 0..an + ns + ar {
        let (owner, next) = read_name(msg, at)?;
        let fixed = msg.get(next..next + 10).ok_or("record cut short")?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let len = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let data_at = next + 10;
        let data = msg
            .get(data_at..data_at + len)
            .ok_or("record data cut short")?;
        match rtype {
            TYPE_SRV if i < an => {
                if data.len() < 7 {
                    return Err("SRV record too short".into());
                }
                let word = |o: usize| u16::from_be_bytes([data[o], data[o + 1]]);
                records.push(SrvRecord {
                    priority: word(0),
                    weight: word(2),
                    port: word(4),
                    target: read_name(msg, data_at + 6)?.0,
                });
            }
            TYPE_A if len == 4 => {
                let ip = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
                addresses.push((owner, IpAddr::V4(ip)));
            }
            TYPE_AAAA if len == 16 => {
                let mut b = [0u8; 16];
                b.copy_from_slice(data);
                addresses.push((owner, IpAddr::V6(Ipv6Addr::from(b))));
            }
            _ => {}
        }
        at = data_at + len;
    }
    Ok(Some((records, addresses)))
}

/// The name at `at` in `msg` (following compression pointers) and where
/// the bytes after it start.
fn read_name(msg: &[u8], mut at: usize) -> Result<(String, usize), String> {
    let mut name = String::new();
    let mut end = None;
    for _ in 0..128 {
        let len = *msg.get(at).ok_or("name cut short")?;
        match len {
            0 => {
                return Ok((name, end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                let low = *msg.get(at + 1).ok_or("pointer cut short")?;
                end.get_or_insert(at + 2);
                at = (usize::from(l & 0x3f) << 8) | usize::from(low);
            }
            l if l < 64 => {
                let label = msg
                    .get(at + 1..at + 1 + usize::from(l))
                    .ok_or("label cut short")?;
                if !name.is_empty() {
                    name.push('.');
                }
                name.push_str(&String::from_utf8_lossy(label));
                at += 1 + usize::from(l);
            }
            _ => return Err("bad label".into()),
        }
    }
    Err("name loops".into())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A response to `query` naming `targets` (host, port, weight, address)
    /// in SRV records with their A records beside them (the answer a test
    /// DNS server gives).
    pub(crate) fn srv_response(query: &[u8], targets: &[(&str, u16, u16, Ipv4Addr)]) -> Vec<u8> {
        // The question ends after its name and 4 bytes.
        let qend = read_name(query, 12).unwrap().1 + 4;
        let mut out = query[..qend].to_vec();
        out[2] = 0x81;
        out[3] = 0x80;
        out[6..8].copy_from_slice(&(targets.len() as u16).to_be_bytes());
        out[10..12].copy_from_slice(&(targets.len() as u16).to_be_bytes());
        let name_of = |host: &str| {
            let mut n = Vec::new();
            for l in host.split('.') {
                n.push(l.len() as u8);
                n.extend_from_slice(l.as_bytes());
            }
            n.push(0);
            n
        };
        for (host, port, weight, _) in targets {
            out.extend_from_slice(&[0xc0, 12]); // the question's name
            out.extend_from_slice(&[0, 33, 0, 1, 0, 0, 0, 30]);
            let target = name_of(host);
            out.extend_from_slice(&((6 + target.len()) as u16).to_be_bytes());
            out.extend_from_slice(&[0, 10]);
            out.extend_from_slice(&weight.to_be_bytes());
            out.extend_from_slice(&port.to_be_bytes());
            out.extend_from_slice(&target);
        }
        for (host, _, _, ip) in targets {
            out.extend_from_slice(&name_of(host));
            out.extend_from_slice(&[0, 1, 0, 1, 0, 0, 0, 30, 0, 4]);
            out.extend_from_slice(&ip.octets());
        }
        out
    }

    #[test]
    fn a_query_and_its_answer() {
        let q = encode_query(0x1234, "_http._tcp.api.test", TYPE_SRV).unwrap();
        assert_eq!(&q[..2], &[0x12, 0x34]);
        assert_eq!(read_name(&q, 12).unwrap().0, "_http._tcp.api.test");
        let a = srv_response(
            &q,
            &[
                ("a.api.test", 8001, 1, Ipv4Addr::new(10, 0, 0, 1)),
                ("b.api.test", 8002, 3, Ipv4Addr::new(10, 0, 0, 2)),
            ],
        );
        let (records, addresses) = parse_answer(&a, 0x1234).unwrap().unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            (
                records[1].target.as_str(),
                records[1].port,
                records[1].weight
            ),
            ("b.api.test", 8002, 3)
        );
        assert_eq!(
            addresses[0],
            ("a.api.test".to_string(), IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(parse_answer(&a, 0x4321).unwrap(), None, "another query's");
        let mut nx = a.clone();
        nx[3] = 0x83;
        assert!(parse_answer(&nx, 0x1234)
            .unwrap_err()
            .contains("no such name"));
        assert!(
            parse_answer(&a[..a.len() - 3], 0x1234).is_err(),
            "cut short"
        );
    }

    #[test]
    fn names_with_pointers_that_loop_are_refused() {
        let mut msg = vec![0u8; 12];
        msg.extend_from_slice(&[0xc0, 12]);
        assert!(read_name(&msg, 12).is_err());
    }
}
