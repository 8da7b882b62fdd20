//! Upstreams as the user writes them (an `--upstream HOST:PORT,KEY=VALUE`,
//! or an `[[upstream]]` table), checked and resolved into [`UpstreamSpec`]s,
//! and their stable ids.
//!
//! Both forms become the same [`UpstreamOptions`] first, so the checks are
//! written once, and the name is resolved once, when the options are
//! [built](UpstreamOptions::build).

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::{err, ConfigError};
use crate::spec::{HealthCheck, UpstreamId, UpstreamSpec};
use crate::spec::{DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT};

/// The options an `--upstream` takes after `HOST:PORT`.
pub const UPSTREAM_OPTIONS: &str = "weight, max_conns, max_queue, fall, rise, health_check, \
     interval, timeout, warmup_check, warm_conns, slow_start";

/// An upstream as written, before its values are checked and its name
/// resolved. Options left out take their defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UpstreamOptions {
    /// `HOST:PORT` (a literal address, or a name DNS resolves).
    pub addr: String,
    pub weight: Option<u64>,
    pub max_conns: Option<u64>,
    pub max_queue: Option<u64>,
    pub fall: Option<u64>,
    pub rise: Option<u64>,
    pub warm_conns: Option<u64>,
    pub health_check: Option<String>,
    pub warmup_check: Option<String>,
    pub interval: Option<Duration>,
    pub timeout: Option<Duration>,
    pub slow_start: Option<Duration>,
}

impl UpstreamOptions {
    /// `HOST:PORT[,KEY=VALUE]...` (see [`UPSTREAM_OPTIONS`]): the syntax
    /// only; [`UpstreamOptions::build`] checks the values.
    pub fn parse(spec: &str) -> Result<UpstreamOptions, String> {
        let mut parts = spec.split(',');
        let mut o = UpstreamOptions {
            addr: parts.next().unwrap_or_default().trim().to_string(),
            ..UpstreamOptions::default()
        };
        for opt in parts {
            let (key, value) = opt
                .split_once('=')
                .ok_or_else(|| format!("option '{opt}' is not KEY=VALUE"))?;
            let (key, value) = (key.trim(), value.trim());
            let number = || {
                value
                    .parse::<u64>()
                    .map_err(|_| format!("{key} must be a whole number, got '{value}'"))
            };
            let duration = || {
                parse_duration(value).ok_or_else(|| {
                    format!(
                        "{key} must be a duration (milliseconds, or with ms, s or m), got '{value}'"
                    )
                })
            };
            match key {
                "weight" => o.weight = Some(number()?),
                "max_conns" => o.max_conns = Some(number()?),
                "max_queue" => o.max_queue = Some(number()?),
                "fall" => o.fall = Some(number()?),
                "rise" => o.rise = Some(number()?),
                "warm_conns" => o.warm_conns = Some(number()?),
                "health_check" => o.health_check = Some(value.to_string()),
                "warmup_check" => o.warmup_check = Some(value.to_string()),
                "interval" => o.interval = Some(duration()?),
                "timeout" => o.timeout = Some(duration()?),
                "slow_start" => o.slow_start = Some(duration()?),
                other => {
                    return Err(format!(
                        "unknown option '{other}' (expected one of {UPSTREAM_OPTIONS})"
                    ))
                }
            }
        }
        Ok(o)
    }

    /// Check every value and resolve the name (once): the spec, or what
    /// is wrong.
    pub fn build(&self) -> Result<UpstreamSpec, String> {
        let addr = resolve(&self.addr)?;
        let mut u = UpstreamSpec::plain(self.addr.clone(), addr);
        let range = |key: &str, value: Option<u64>, lo: u64, hi: u64| match value {
            Some(n) if !(lo..=hi).contains(&n) => {
                Err(format!("{key} must be between {lo} and {hi}"))
            }
            other => Ok(other),
        };
        if let Some(n) = range("weight", self.weight, 1, 1000)? {
            u.weight = n as u32;
        }
        if let Some(n) = range("max_conns", self.max_conns, 1, 1 << 20)? {
            u.max_conns = n as usize;
        }
        if let Some(n) = range("max_queue", self.max_queue, 0, 1 << 20)? {
            u.max_queue = n as usize;
        }
        if let Some(n) = range("fall", self.fall, 1, 100)? {
            u.fall = n as u32;
        }
        if let Some(n) = range("rise", self.rise, 1, 100)? {
            u.rise = n as u32;
        }
        if let Some(n) = range("warm_conns", self.warm_conns, 1, 64)? {
            u.warm_conns = n as usize;
        }
        let ms = |d: Option<Duration>| d.map(|d| d.as_millis() as u64);
        range("interval", ms(self.interval), 10, 3_600_000).map_err(|e| e + " ms")?;
        range("timeout", ms(self.timeout), 1, 600_000).map_err(|e| e + " ms")?;
        range("slow_start", ms(self.slow_start), 0, 3_600_000).map_err(|e| e + " ms")?;
        u.slow_start = self.slow_start.unwrap_or_default();
        for (key, path) in [
            ("health_check", &self.health_check),
            ("warmup_check", &self.warmup_check),
        ] {
            if let Some(p) = path {
                let ok = p.starts_with('/') && p.bytes().all(|b| b.is_ascii_graphic() && b != b',');
                if !ok {
                    return Err(format!("{key} must be a path starting with /, got '{p}'"));
                }
            }
        }
        u.warmup_check = self.warmup_check.clone();
        match &self.health_check {
            Some(path) => {
                let interval = self.interval.unwrap_or(DEFAULT_CHECK_INTERVAL);
                let timeout = self.timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT.min(interval));
                u.check = Some(HealthCheck {
                    path: path.clone(),
                    interval,
                    timeout,
                });
            }
            None if self.interval.is_some() || self.timeout.is_some() => {
                return Err("interval and timeout need a health_check path".into());
            }
            None => {}
        }
        Ok(u)
    }
}

impl UpstreamOptions {
    /// The specs these options stand for: one, or for `srv:NAME` one per
    /// instance the DNS SRV records of `NAME` name (asked of `dns`, else the
    /// system's server), weighted as the records say (0 counts as 1).
    pub fn build_all(&self, dns: Option<SocketAddr>) -> Result<Vec<UpstreamSpec>, String> {
        let Some(service) = self.addr.strip_prefix("srv:") else {
            return self.build().map(|u| vec![u]);
        };
        let server = crate::dns::server(dns)
            .ok_or("no DNS server: give --dns-server (none in /etc/resolv.conf)")?;
        let instances = crate::dns::resolve_srv(server, service)?;
        if instances.is_empty() {
            return Err(format!("SRV {service}: no instances"));
        }
        if self.weight.is_some() {
            return Err("an SRV service's weights come from its records: no weight option".into());
        }
        let srv: std::sync::Arc<str> = service.into();
        instances
            .into_iter()
            .map(|i| {
                let mut o = self.clone();
                o.addr = i.addr.to_string();
                o.weight = Some(u64::from(i.weight.clamp(1, 1000)));
                let mut u = o.build()?;
                u.name = i.name;
                u.srv = Some(srv.clone());
                Ok(u)
            })
            .collect()
    }
}

/// Parse `HOST:PORT[,KEY=VALUE]...` (see [`UPSTREAM_OPTIONS`]) into a
/// resolved spec: what an `--upstream` flag is.
pub fn parse_upstream(spec: &str) -> Result<UpstreamSpec, ConfigError> {
    UpstreamOptions::parse(spec)
        .and_then(|o| o.build())
        .map_err(|m| err("--upstream", format!("'{spec}': {m}")))
}

/// A new upstream id, never handed out before in this process: an id that
/// came back after its upstream was removed could be taken for that
/// upstream by a worker that still drains its connections.
pub fn new_upstream_id() -> UpstreamId {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(1);
    UpstreamId(NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Give each upstream its stable id: the id it had in `before` (the running
/// configuration) if an upstream there has the same address, a new one
/// otherwise. Two entries with the same address share it.
pub fn assign_ids(upstreams: &mut [UpstreamSpec], before: &[UpstreamSpec]) {
    for i in 0..upstreams.len() {
        let addr = upstreams[i].addr;
        let known = before
            .iter()
            .chain(&upstreams[..i])
            .find(|u| u.addr == addr && u.id != UpstreamId::default())
            .map(|u| u.id);
        upstreams[i].id = known.unwrap_or_else(new_upstream_id);
    }
}

/// Resolve every upstream given by name again, and every SRV service's
/// instances (asked of `dns`); true if an address or an instance changed
/// (those specs now carry the new address and need new ids, see
/// [`assign_ids`]). Names that do not resolve keep their address; a
/// service that does not answer (or names no instance) keeps its
/// instances.
pub fn re_resolve(specs: &mut Vec<UpstreamSpec>, dns: Option<SocketAddr>) -> bool {
    let mut changed = false;
    let mut services: Vec<std::sync::Arc<str>> = Vec::new();
    for u in specs.iter() {
        if let Some(s) = &u.srv {
            if !services.contains(s) {
                services.push(s.clone());
            }
        }
    }
    for service in services {
        changed |= re_resolve_service(specs, &service, dns);
    }
    for u in specs.iter_mut() {
        if u.srv.is_some() || u.name.parse::<SocketAddr>().is_ok() || u.name.starts_with("demo@") {
            continue;
        }
        if let Ok(addr) = resolve(&u.name) {
            if addr != u.addr {
                u.addr = addr;
                changed = true;
            }
        }
    }
    changed
}

/// Ask for `service`'s instances again and put them where its instances
/// are in `specs` (each like the first of them, with the instance's name,
/// address and weight); true if they changed.
fn re_resolve_service(
    specs: &mut Vec<UpstreamSpec>,
    service: &str,
    dns: Option<SocketAddr>,
) -> bool {
    let Some(at) = specs.iter().position(|u| u.srv.as_deref() == Some(service)) else {
        return false;
    };
    let template = specs[at].clone();
    let Some(server) = crate::dns::server(dns) else {
        return false;
    };
    let instances = match crate::dns::resolve_srv(server, service) {
        Ok(i) if !i.is_empty() => i,
        _ => return false,
    };
    let old: Vec<(SocketAddr, u32)> = specs
        .iter()
        .filter(|u| u.srv.as_deref() == Some(service))
        .map(|u| (u.addr, u.weight))
        .collect();
    let new: Vec<UpstreamSpec> = instances
        .into_iter()
        .map(|i| {
            let mut u = UpstreamSpec {
                name: i.name,
                addr: i.addr,
                weight: u32::from(i.weight.clamp(1, 1000)),
                id: UpstreamId::default(),
                ..template.clone()
            };
            if let Some(t) = &mut u.tls {
                // (Each instance is asked for by its own name.)
                if let Ok(name) = t.tls.name_for(&u.name) {
                    t.name = name;
                }
            }
            u
        })
        .collect();
    let same = old.len() == new.len() && new.iter().all(|n| old.contains(&(n.addr, n.weight)));
    if same {
        return false;
    }
    specs.retain(|u| u.srv.as_deref() != Some(service));
    let at = at.min(specs.len());
    specs.splice(at..at, new);
    true
}

/// Resolve `HOST:PORT` (a literal address or a DNS name) to its first address.
pub(super) fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err("expected HOST:PORT".into());
    };
    if host.contains(':') && !host.starts_with('[') {
        // `::1:8000` would resolve as [::1]:8000, but `::1:80:8000`? An
        // IPv6 address is written in brackets, always.
        return Err(format!(
            "an IPv6 address needs brackets around it: [{host}]:{port}"
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| "name resolved to no address".into()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}

/// `250`, `250ms`, `10s` or `2m`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit {
        "" | "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}
