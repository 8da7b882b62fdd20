//! [`Args::validate`]: the command line (with the config file's values
//! filled in) checked section by section into a [`Config`]. Every error
//! names its flag; the file's loader adds the key and line.

use std::net::SocketAddr;
use std::time::Duration;

use super::upstream::{assign_ids, resolve};
use super::{err, AdminAccess, AffinityMode, Args, Config, ConfigError, MAX_WORKERS};
use crate::scaler::Scale;
use crate::spec::UpstreamSpec;

/// Ten years: an affinity cookie's longest life (keeps expiry arithmetic
/// far from overflow).
const MAX_AFFINITY_AGE_S: u64 = 10 * 365 * 24 * 3600;

/// Fields that framing, hop-by-hop handling or the proxy itself own: never
/// a name for the session hand-off field.
const RESERVED_FIELDS: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "proxy-connection",
    "cookie",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-real-ip",
    "via",
    "expect",
    "max-forwards",
    "http2-settings",
];

/// A field name: letters, digits and `-`.
fn field_name(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

impl Args {
    /// `--affinity` and its settings, checked (the key read from its file).
    fn affinity_settings(&self) -> Result<Option<crate::affinity::Affinity>, ConfigError> {
        if self.affinity == AffinityMode::None {
            return Ok(None);
        }
        let cookie = &self.affinity_cookie;
        let cookie_ok = !cookie.is_empty()
            && cookie
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !cookie_ok {
            return Err(err(
                "--affinity-cookie",
                format!("'{cookie}': letters, digits, - _ and . only"),
            ));
        }
        let key = match (&self.affinity_key, &self.affinity_key_file) {
            (Some(k), _) => k.as_bytes().to_vec(),
            // Only the line end an editor adds is not part of the key.
            (None, Some(path)) => std::fs::read(path)
                .map(|mut k| {
                    if k.ends_with(b"\n") {
                        k.pop();
                        if k.ends_with(b"\r") {
                            k.pop();
                        }
                    }
                    k
                })
                .map_err(|e| {
                    err(
                        "--affinity-key-file",
                        format!("cannot read {}: {e}", path.display()),
                    )
                })?,
            (None, None) => {
                return Err(err(
                    "--affinity",
                    "'cookie' needs a key: --affinity-key-file, or key in [affinity]",
                ))
            }
        };
        if key.len() < 16 {
            return Err(err(
                "--affinity-key-file",
                format!("the key has {} bytes; 16 at least", key.len()),
            ));
        }
        if !(1..=MAX_AFFINITY_AGE_S).contains(&self.affinity_max_age_s) {
            return Err(err(
                "--affinity-max-age",
                format!(
                    "'{}': 1..{MAX_AFFINITY_AGE_S} seconds (ten years)",
                    self.affinity_max_age_s
                ),
            ));
        }
        let peer_header = match &self.session_peer_header {
            Some(h) if !field_name(h) => {
                return Err(err(
                    "--session-peer-header",
                    format!("'{h}': a field name of letters, digits and -"),
                ))
            }
            Some(h) if RESERVED_FIELDS.iter().any(|r| r.eq_ignore_ascii_case(h)) => {
                return Err(err(
                    "--session-peer-header",
                    format!("'{h}': a field the proxy or HTTP framing owns; pick another name"),
                ))
            }
            Some(h) => Some(leak_name(h)),
            None => None,
        };
        Ok(Some(crate::affinity::Affinity::new(
            leak_name(cookie),
            key,
            Duration::from_secs(self.affinity_max_age_s),
            self.affinity_secure,
            peer_header,
        )))
    }

    /// Resolve and check everything, one section after the other; the
    /// result is ready to run.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let (workers, max_workers) = self.workers()?;
        let (listen, listen_tls, listen_h2) = self.listen_addrs()?;
        let dns_server = match &self.dns_server {
            Some(a) => Some(resolve(a).map_err(|m| err("--dns-server", format!("'{a}': {m}")))?),
            None => None,
        };
        let mut upstreams = self.upstream_specs(dns_server)?;
        for u in &mut upstreams {
            u.proxy = self.send_proxy;
            u.protocol = self.upstream_protocol;
        }
        if self.send_proxy.is_some() && self.upstream_protocol == crate::spec::UpstreamProtocol::H2
        {
            return Err(err(
                "--send-proxy",
                "cannot go with --upstream-protocol h2: an HTTP/2 connection carries many clients' requests, and a PROXY header names one",
            ));
        }
        if let Some(tls) = self.upstream_tls()? {
            if upstreams.is_empty() {
                return Err(err(
                    "--upstream-tls",
                    "needs upstreams (the demo origin speaks plain HTTP)",
                ));
            }
            crate::tls::upstream::attach(&tls, &mut upstreams)
                .map_err(|m| err("--upstream-tls", m))?;
        }
        let scale = self.scale()?;
        self.check_limits()?;
        self.check_timeouts()?;
        let via = self.via_name()?;
        let policy = self.policy()?;
        let affinity = self.affinity_settings()?;
        self.check_ring()?;
        let admin = match &self.admin {
            Some(a) => Some(resolve(a).map_err(|m| err("--admin", format!("'{a}': {m}")))?),
            None => None,
        };
        let ms = Duration::from_millis;
        let queue_timeout = ms(self.queue_timeout_ms.unwrap_or(self.connect_timeout_ms));
        let (backends, routes) = super::routing::build(super::routing::Defaults {
            policy,
            pool: crate::spec::PoolSettings {
                pool_size: self.pool_size,
                max_connecting: self.max_connecting,
                idle_reuse: self.idle_reuse,
                panic_threshold: self.panic_threshold,
                max_idle: self.max_idle,
            },
            queue_timeout,
            response_timeout: ms(self.response_timeout_ms),
            default_serves: !upstreams.is_empty() || self.demo,
            dns: dns_server,
            tables: &self.routing,
        })?;
        Ok(Config {
            listen,
            upstreams,
            workers,
            max_workers,
            scale,
            pool_size: self.pool_size,
            pipeline_depth: self.pipeline_depth,
            connect_timeout: ms(self.connect_timeout_ms),
            response_timeout: ms(self.response_timeout_ms),
            request_timeout: (self.request_timeout_ms > 0).then(|| ms(self.request_timeout_ms)),
            client_header_timeout: ms(self.client_header_timeout_ms),
            client_idle_timeout: ms(self.client_idle_timeout_ms),
            upstream_idle_timeout: ms(self.upstream_idle_timeout_ms),
            max_connections: self.max_connections,
            max_body_size: self.max_body_size,
            head_limits: crate::codec::HeadLimits {
                bytes: self.max_head_size,
                fields: self.max_headers,
            },
            buffer_size: self.buffer_size,
            h2_limits: crate::h2::conn::Limits {
                max_streams: self.h2_max_streams,
                stream_window: self.h2_stream_window,
                conn_window: self.h2_stream_window.saturating_mul(4).min(0x7fff_ffff),
                ..crate::h2::conn::Limits::default()
            },
            debug_panic_hash: self
                .debug_panic_path
                .as_deref()
                .map(|p| crate::codec::path_hash(p.as_bytes())),
            demo: self.demo,
            pin: !self.no_pin,
            reuse_port_shared: self.reuse_port_shared,
            accept: self.accept,
            ring_buffers: self.ring_buffers,
            batch_wait_us: self.batch_wait_us,
            busy_poll_us: self.busy_poll_us,
            max_connecting: self.max_connecting,
            panic_threshold: self.panic_threshold,
            max_idle: self.max_idle,
            affinity,
            policy,
            idle_reuse: self.idle_reuse,
            queue_timeout,
            via,
            drain_timeout: ms(self.drain_timeout_ms),
            resolve_interval: (self.resolve_interval_ms > 0).then(|| ms(self.resolve_interval_ms)),
            config_path: self.config.clone(),
            admin,
            admin_access: self.admin_access()?,
            access_log: self
                .access_log
                .as_deref()
                .map(crate::access_log::Target::parse),
            access_log_format: self.access_log_format,
            hash_table: None,
            backends,
            routes,
            send_proxy: self.send_proxy,
            accept_proxy: self.accept_proxy,
            dns_server,
            listen_tls,
            listen_h2,
            tls_handshake_timeout: ms(self.tls_handshake_timeout_ms),
            hsts: (self.hsts > 0).then_some(self.hsts),
        }
        .with_hash_table())
    }

    /// `--upstream-tls` (or the file's `upstream_tls`), built.
    fn upstream_tls(
        &self,
    ) -> Result<Option<std::sync::Arc<crate::tls::upstream::UpstreamTls>>, ConfigError> {
        use crate::tls::upstream::{UpstreamTls, UpstreamTlsSettings};
        let fail = |m: String| err("--upstream-tls", m);
        let settings = match &self.upstream_tls {
            Some(text) => {
                Some(UpstreamTlsSettings::parse(text).map_err(|m| fail(format!("'{text}': {m}")))?)
            }
            None => self.upstream_tls_file.clone(),
        };
        settings
            .map(|s| UpstreamTls::build(s).map_err(fail))
            .transpose()
    }

    /// `--workers`: (fewest, most); the usable CPUs when not given.
    fn workers(&self) -> Result<(usize, usize), ConfigError> {
        match &self.workers {
            Some(text) => parse_workers(text),
            None => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                Ok((n, n))
            }
        }
    }

    /// `--listen`, resolved.
    /// The listen addresses and, for TLS ones, their servers (their
    /// certificates read and checked now).
    #[allow(clippy::type_complexity)]
    fn listen_addrs(
        &self,
    ) -> Result<
        (
            Vec<SocketAddr>,
            Vec<Option<std::sync::Arc<crate::tls::TlsServer>>>,
            Vec<bool>,
        ),
        ConfigError,
    > {
        let specs: Vec<(super::ListenSpec, Option<String>)> = match &self.listen_tables {
            Some(tables) => tables
                .iter()
                .map(|(s, o)| (s.clone(), Some(o.clone())))
                .collect(),
            None => self
                .listen
                .iter()
                .map(|l| {
                    super::ListenSpec::parse(l)
                        .map(|s| (s, None))
                        .map_err(|m| err("--listen", format!("'{l}': {m}")))
                })
                .collect::<Result<_, _>>()?,
        };
        let tickets: Option<std::sync::Arc<dyn rustls::server::ProducesTickets>> =
            match &self.tls_ticket_key_file {
                Some(path) => Some(std::sync::Arc::new(
                    crate::tls::tickets::FileTicketer::read(path)
                        .map_err(|m| err("--tls-ticket-key-file", m))?,
                )),
                None => None,
            };
        let mut addrs = Vec::new();
        let mut servers = Vec::new();
        let mut h2 = Vec::new();
        for (spec, origin) in specs {
            let fail = |m: String| ConfigError {
                flag: "--listen",
                message: format!("'{}': {m}", spec.addr),
                origin: origin.clone(),
            };
            addrs.push(resolve(&spec.addr).map_err(fail)?);
            servers.push(match &spec.tls {
                Some(tls) => Some(std::sync::Arc::new(
                    crate::tls::TlsServer::build(tls, tickets.clone(), spec.h2).map_err(fail)?,
                )),
                None => None,
            });
            h2.push(spec.h2);
        }
        Ok((addrs, servers, h2))
    }

    /// The upstreams (the command line's, or the file's tables), checked,
    /// resolved once each, with their ids.
    fn upstream_specs(&self, dns: Option<SocketAddr>) -> Result<Vec<UpstreamSpec>, ConfigError> {
        let mut upstreams = Vec::new();
        match &self.upstream_tables {
            Some(tables) => {
                for (options, origin) in tables {
                    let specs = options.build_all(dns).map_err(|m| ConfigError {
                        flag: "--upstream",
                        message: format!("'{}': {m}", options.addr),
                        origin: Some(origin.clone()),
                    })?;
                    upstreams.extend(specs);
                }
            }
            None => {
                for u in &self.upstream {
                    let specs = super::UpstreamOptions::parse(u)
                        .and_then(|o| o.build_all(dns))
                        .map_err(|m| err("--upstream", format!("'{u}': {m}")))?;
                    upstreams.extend(specs);
                }
            }
        }
        for (i, u) in upstreams.iter().enumerate() {
            if upstreams[..i].iter().any(|v| v.addr == u.addr) {
                return Err(err(
                    "--upstream",
                    format!("'{}': {} is listed twice", u.name, u.addr),
                ));
            }
        }
        assign_ids(&mut upstreams, &[]);
        if upstreams.is_empty() && !self.demo && self.routing.backends.is_empty() {
            return Err(err(
                "--upstream",
                "at least one upstream is required (or pass --demo)",
            ));
        }
        Ok(upstreams)
    }

    /// `--scale-*`: when elastic workers grow and shrink.
    fn scale(&self) -> Result<Scale, ConfigError> {
        if !(0.0..=1.0).contains(&self.scale_low)
            || !(0.0..=1.0).contains(&self.scale_high)
            || self.scale_low >= self.scale_high
        {
            return Err(err(
                "--scale-high",
                format!(
                    "'{}' and --scale-low '{}': fractions with low below high",
                    self.scale_high, self.scale_low
                ),
            ));
        }
        Ok(Scale {
            high: self.scale_high,
            low: self.scale_low,
            up_after: Duration::from_millis(self.scale_up_after_ms),
            down_after: Duration::from_millis(self.scale_down_after_ms),
        })
    }

    /// Sizes and counts: pipeline depth, connections, heads, buffers, the
    /// pool's bounds.
    fn check_limits(&self) -> Result<(), ConfigError> {
        if self.pipeline_depth == 0 {
            return Err(err("--pipeline-depth", "'0': must be at least 1"));
        }
        if !(1..=10_000).contains(&self.h2_max_streams) {
            return Err(err(
                "--h2-max-streams",
                format!("'{}': must be between 1 and 10000", self.h2_max_streams),
            ));
        }
        if !(65_535..=0x7fff_ffff).contains(&self.h2_stream_window) {
            return Err(err(
                "--h2-stream-window",
                format!(
                    "'{}': must be between 65535 and 2147483647",
                    self.h2_stream_window
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(err("--max-connections", "'0': must be at least 1"));
        }
        if !(1024..=crate::codec::HEAD_BYTES_CEILING).contains(&self.max_head_size) {
            return Err(err(
                "--max-head-size",
                format!(
                    "'{}': must be between 1024 and {}",
                    self.max_head_size,
                    crate::codec::HEAD_BYTES_CEILING
                ),
            ));
        }
        if !(1..=crate::codec::FIELDS_CEILING).contains(&self.max_headers) {
            return Err(err(
                "--max-headers",
                format!(
                    "'{}': must be between 1 and {}",
                    self.max_headers,
                    crate::codec::FIELDS_CEILING
                ),
            ));
        }
        if !(16 * 1024..=64 << 20).contains(&self.buffer_size) {
            return Err(err(
                "--buffer-size",
                format!("'{}': must be between 16384 and 67108864", self.buffer_size),
            ));
        }
        if self.max_connecting == 0 {
            return Err(err("--max-connecting", "'0': must be at least 1"));
        }
        if self.panic_threshold > 100 {
            return Err(err(
                "--panic-threshold",
                format!("'{}': must be between 0 and 100", self.panic_threshold),
            ));
        }
        Ok(())
    }

    /// Timeouts that must not be zero.
    fn check_timeouts(&self) -> Result<(), ConfigError> {
        for (flag, v) in [
            ("--connect-timeout", self.connect_timeout_ms),
            ("--response-timeout", self.response_timeout_ms),
            ("--client-header-timeout", self.client_header_timeout_ms),
            ("--client-idle-timeout", self.client_idle_timeout_ms),
            ("--upstream-idle-timeout", self.upstream_idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(err(flag, "'0': must be at least 1 ms"));
            }
        }
        if self.queue_timeout_ms == Some(0) {
            return Err(err("--queue-timeout", "'0': must be at least 1 ms"));
        }
        Ok(())
    }

    /// `--via`: the name, or None for `off`.
    fn via_name(&self) -> Result<Option<&'static str>, ConfigError> {
        match self.via.as_str() {
            "off" => Ok(None),
            name if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'*+^`|".contains(&b)) =>
            {
                Ok(Some(leak_name(name)))
            }
            name => Err(err(
                "--via",
                format!("'{name}': a name of letters, digits and -._~ (or off)"),
            )),
        }
    }

    /// `--balance` and its knobs.
    fn policy(&self) -> Result<crate::spec::PolicyConfig, ConfigError> {
        if !(self.hash_balance == 0.0 || (1.0..=100.0).contains(&self.hash_balance)) {
            return Err(err(
                "--hash-balance",
                format!("'{}': 0 (off) or between 1 and 100", self.hash_balance),
            ));
        }
        Ok(crate::spec::PolicyConfig {
            balance: self.balance,
            hash_key: self.hash_key,
            hash_balance: self.hash_balance,
        })
    }

    /// The ring's settings: buffers, batched waits, busy polling.
    fn check_ring(&self) -> Result<(), ConfigError> {
        if !self.ring_buffers.is_power_of_two() || self.ring_buffers > 32768 {
            return Err(err(
                "--ring-buffers",
                format!(
                    "'{}': must be a power of two up to 32768",
                    self.ring_buffers
                ),
            ));
        }
        if self.batch_wait_us > 10_000 {
            return Err(err(
                "--batch-wait",
                format!("'{}': at most 10000 (10 ms)", self.batch_wait_us),
            ));
        }
        if self.busy_poll_us > 1_000 {
            return Err(err(
                "--busy-poll",
                format!("'{}': at most 1000 (1 ms)", self.busy_poll_us),
            ));
        }
        Ok(())
    }
}

impl Args {
    /// The admin port's token and allowed names.
    fn admin_access(&self) -> Result<AdminAccess, ConfigError> {
        let token = match &self.admin_token_file {
            Some(path) => {
                let shown = path.display();
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err("--admin-token-file", format!("cannot read {shown}: {e}")))?;
                let token = text.lines().next().unwrap_or("").trim().to_string();
                if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(err(
                        "--admin-token-file",
                        format!("{shown}: the token (its first line) must be 16 or more printable characters"),
                    ));
                }
                Some(token)
            }
            None => None,
        };
        if self.admin_token_reads && token.is_none() {
            return Err(err(
                "--admin-token-reads",
                "needs a token: set --admin-token-file too",
            ));
        }
        for name in &self.admin_host {
            let ok = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
            if !ok {
                return Err(err("--admin-host", format!("'{name}': not a host name")));
            }
        }
        Ok(AdminAccess {
            token,
            token_reads: self.admin_token_reads,
            hosts: self
                .admin_host
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        })
    }
}

/// `N` or `MIN..MAX`: (fewest, most).
fn parse_workers(text: &str) -> Result<(usize, usize), ConfigError> {
    let bad = |m: &str| err("--workers", format!("'{text}': {m}"));
    let number = |s: &str| -> Result<usize, ConfigError> {
        s.trim()
            .parse::<usize>()
            .map_err(|_| bad("expected a number or MIN..MAX"))
    };
    let (min, max) = match text.split_once("..") {
        Some((lo, hi)) => (number(lo)?, number(hi)?),
        None => {
            let n = number(text)?;
            (n, n)
        }
    };
    if min == 0 {
        return Err(bad("must be at least 1"));
    }
    if max > MAX_WORKERS {
        return Err(bad(&format!("at most {MAX_WORKERS}")));
    }
    if min > max {
        return Err(bad("MIN must not be above MAX"));
    }
    Ok((min, max))
}

/// A `Via` name as `&'static str`, leaked once per distinct name (reloads
/// that keep the name leak nothing).
fn leak_name(name: &str) -> &'static str {
    use std::sync::Mutex;
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.iter().find(|n| **n == name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_string().into_boxed_str());
    names.push(leaked);
    leaked
}
