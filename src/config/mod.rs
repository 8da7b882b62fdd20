//! Command line and config file → validated [`Config`].
//!
//! Parsing happens in stages: clap turns argv into [`Args`]; a config file
//! (`--config`, TOML, see [`file`]) fills in every setting the command line
//! did not give; then [`Args::validate`] resolves names, checks ranges and
//! builds the [`Config`] the workers run on. Every error names the flag (or
//! the file's key and line) and the value that caused it and exits with
//! code 2 (clap's usage-error code), so a script can tell a typo from a
//! runtime failure. Nothing here touches the data path; DNS resolution
//! happens at start-up, on reload and every `--resolve-interval`, in the
//! supervisor.

mod args;
pub mod file;
mod listen;
mod routing;
mod upstream;
mod validate;

pub use args::{AcceptMode, AffinityMode, Args};
pub use listen::{FileListen, ListenSpec};
pub use routing::{backend_id, Backend, FileBackend, FileRoute, RoutingTables};
pub use upstream::{
    assign_ids, new_upstream_id, parse_duration, parse_upstream, re_resolve, UpstreamOptions,
    UPSTREAM_OPTIONS,
};

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::scaler::Scale;
use crate::spec::UpstreamSpec;

/// A validated configuration, shared read-only by all workers.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to accept clients on.
    pub listen: Vec<SocketAddr>,
    /// The upstream pool. Empty only while `demo` is set; `main` fills it
    /// with the demo origin's address before the workers start.
    pub upstreams: Vec<UpstreamSpec>,
    /// Worker threads at start, and the fewest there may be.
    pub workers: usize,
    /// The most worker threads there may be (`workers` unless elastic).
    pub max_workers: usize,

    /// When elastic workers grow and shrink.
    pub scale: Scale,
    /// Idle keep-alive connections kept per upstream per worker.
    pub pool_size: usize,
    /// Pipelined requests of one client in flight at once.
    pub pipeline_depth: usize,
    /// Upstream connect timeout.
    pub connect_timeout: Duration,
    /// Upstream response timeout.
    pub response_timeout: Duration,
    /// Total deadline of an exchange (None: no limit).
    pub request_timeout: Option<Duration>,
    /// Client header timeout (slowloris guard).
    pub client_header_timeout: Duration,
    /// Idle keep-alive client timeout.
    pub client_idle_timeout: Duration,
    /// Idle pooled upstream connection timeout.
    pub upstream_idle_timeout: Duration,
    /// Client connections per worker.
    pub max_connections: usize,
    /// Largest request body (0: no limit).
    pub max_body_size: u64,
    /// Largest request head, in bytes and fields.
    pub head_limits: crate::codec::HeadLimits,
    /// Per-client buffering bound.
    pub buffer_size: usize,
    /// What HTTP/2 client connections announce and hold to
    /// (`--h2-max-streams`, `--h2-stream-window`).
    pub h2_limits: crate::h2::conn::Limits,
    /// Path hash of `--debug-panic-path` (testing the supervisor).
    pub debug_panic_hash: Option<u64>,
    /// Start the built-in demo origin.
    pub demo: bool,
    /// Pin workers to cores.
    pub pin: bool,
    /// Listen where another process listens too (see the flag).
    pub reuse_port_shared: bool,
    /// How workers accept.
    pub accept: AcceptMode,
    /// Receive buffers per worker ring.
    pub ring_buffers: u16,
    /// Batched-wait limit per worker ring, in microseconds (0: off).
    pub batch_wait_us: u32,
    /// How long an idle worker polls before it sleeps, in microseconds.
    pub busy_poll_us: u32,
    /// Opening connections per upstream per worker (see the pool).
    pub max_connecting: usize,
    /// Below this percentage of upstreams up, every one is chosen from.
    pub panic_threshold: u8,
    /// Idle upstream connections per worker in all.
    pub max_idle: usize,
    /// The balancing policy and its knobs.
    pub policy: crate::spec::PolicyConfig,
    /// Session affinity, when on.
    pub affinity: Option<crate::affinity::Affinity>,
    /// Which idle connection is reused.
    pub idle_reuse: crate::spec::IdleReuse,
    /// How long a request may wait for an upstream connection.
    pub queue_timeout: Duration,
    /// Our name in `Via`, or None for no `Via`. Leaked once per distinct
    /// name: the codec's contexts are `Copy` and carry it by reference.
    pub via: Option<&'static str>,
    /// How long a drain may take.
    pub drain_timeout: Duration,
    /// How often upstream names are resolved again (None: never).
    pub resolve_interval: Option<Duration>,
    /// The config file, if one was given (SIGHUP reads it again).
    pub config_path: Option<PathBuf>,
    /// The admin listener's address.
    pub admin: Option<SocketAddr>,
    /// Who may use it (see `crate::admin`).
    pub admin_access: AdminAccess,
    /// Where the access log goes, if anywhere.
    pub access_log: Option<crate::access_log::Target>,
    /// How its lines look.
    pub access_log_format: crate::access_log::Format,
    /// The `url-hash` table for these upstreams, built as the
    /// configuration is read (so that no worker builds it on its data
    /// path; see `pool::maglev`), held while the configuration lives.
    pub hash_table: Option<std::sync::Arc<crate::pool::maglev::Table>>,
    /// The named backends (`[[backend]]`); the fields above are the
    /// default backend's.
    pub backends: Vec<Backend>,
    /// The routes (None: every request goes to the default backend).
    pub routes: Option<std::sync::Arc<crate::routes::RouteTable>>,
    /// `--send-proxy`: the default backend's connections start with a
    /// PROXY protocol header.
    pub send_proxy: Option<crate::spec::ProxyVersion>,
    /// `--accept-proxy`: every client connection starts with a PROXY
    /// protocol header, whose source address is the client's.
    pub accept_proxy: bool,
    /// `--dns-server`: where SRV records are asked for.
    pub dns_server: Option<SocketAddr>,
    /// For each of `listen`, its TLS server (None: plain HTTP).
    pub listen_tls: Vec<Option<std::sync::Arc<crate::tls::TlsServer>>>,
    /// For each of `listen`, whether it speaks HTTP/2 too (`h2`).
    pub listen_h2: Vec<bool>,
    /// `--tls-handshake-timeout`.
    pub tls_handshake_timeout: Duration,
    /// `--hsts`: the `max-age` of `Strict-Transport-Security` on answers
    /// over TLS (None: not sent).
    pub hsts: Option<u64>,
}

impl Config {
    /// The pool's settings.
    pub fn pool_settings(&self) -> crate::spec::PoolSettings {
        crate::spec::PoolSettings {
            pool_size: self.pool_size,
            max_connecting: self.max_connecting,
            idle_reuse: self.idle_reuse,
            panic_threshold: self.panic_threshold,
            max_idle: self.max_idle,
        }
    }

    /// The settings a reload cannot change, if `new` changes any: they
    /// need a restart.
    pub fn restart_only_changes(&self, new: &Config) -> Vec<&'static str> {
        let mut changed = Vec::new();
        if self.listen != new.listen {
            changed.push("listen");
        }
        if self.workers != new.workers || self.max_workers != new.max_workers {
            changed.push("workers");
        }
        if self.accept != new.accept {
            changed.push("accept");
        }
        if self.ring_buffers != new.ring_buffers {
            changed.push("ring_buffers");
        }
        if self.batch_wait_us != new.batch_wait_us {
            changed.push("batch_wait");
        }
        if self.busy_poll_us != new.busy_poll_us {
            changed.push("busy_poll");
        }
        if self.pin != new.pin {
            changed.push("pin");
        }
        if self.reuse_port_shared != new.reuse_port_shared {
            changed.push("reuse_port_shared");
        }
        if self.admin != new.admin {
            changed.push("admin");
        }
        if self.access_log != new.access_log || self.access_log_format != new.access_log_format {
            changed.push("access_log");
        }
        changed
    }
}

/// A configuration error: which flag (or file key and line), and what is
/// wrong with its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The flag as the user typed it, e.g. `--upstream`.
    pub flag: &'static str,
    /// One line saying what is wrong.
    pub message: String,
    /// Where the value came from when it was the config file's:
    /// `` key `pool_size` (line 4 of ringmux.toml) ``.
    pub origin: Option<String>,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.origin {
            // The file itself is malformed: where, and what.
            Some(origin) if self.flag == "--config" => write!(f, "{origin}: {}", self.message),
            Some(origin) => write!(f, "invalid value for {origin}: {}", self.message),
            None => write!(f, "invalid value for {}: {}", self.flag, self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

fn err(flag: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        flag,
        message: message.into(),
        origin: None,
    }
}

impl Config {
    /// Build (or find) the `url-hash` table for the upstreams, if that is
    /// the policy (again after the upstreams change: DNS, the demo origin).
    pub fn with_hash_table(mut self) -> Config {
        let table = |policy: &crate::spec::PolicyConfig, upstreams: &[UpstreamSpec]| {
            (policy.balance == crate::spec::Balance::UrlHash).then(|| {
                let members: Vec<(String, u32)> = upstreams
                    .iter()
                    .map(|u| (u.name.clone(), u.weight))
                    .collect();
                crate::pool::url_hash::prepare(&members)
            })
        };
        self.hash_table = table(&self.policy, &self.upstreams);
        for b in &mut self.backends {
            b.hash_table = table(&b.policy, &b.upstreams);
        }
        self
    }

    /// Every upstream of every backend, the default's first.
    pub fn every_upstream(&self) -> impl Iterator<Item = &UpstreamSpec> {
        self.upstreams
            .iter()
            .chain(self.backends.iter().flat_map(|b| &b.upstreams))
    }

    /// The backends as the workers lay out their pools: the default first
    /// (built from the top-level settings), then the named ones.
    /// What a user should hear at start-up, on `--check` and on reload:
    /// certificates that expire soon, origins whose certificates are not
    /// checked.
    pub fn warnings(&self) -> Vec<String> {
        let mut all = crate::tls::expiry_warnings(self.listen_tls.iter().flatten().map(|t| &**t));
        for b in self.backend_list() {
            let unchecked = b
                .upstreams
                .iter()
                .any(|u| u.tls.as_ref().is_some_and(|t| !t.tls.settings.verify));
            if unchecked {
                all.push(format!(
                    "backend `{}`: TLS with verify off: the origins' certificates are not checked",
                    b.name
                ));
            }
        }
        all
    }

    pub fn backend_list(&self) -> Vec<Backend> {
        let mut all = Vec::with_capacity(1 + self.backends.len());
        all.push(Backend {
            id: crate::spec::BackendId::DEFAULT,
            name: "default".into(),
            origin: "the top-level upstreams".into(),
            upstreams: self.upstreams.clone(),
            policy: self.policy,
            pool: self.pool_settings(),
            queue_timeout: self.queue_timeout,
            send_proxy: self.send_proxy,
            hash_table: self.hash_table.clone(),
        });
        all.extend(self.backends.iter().cloned());
        all
    }
}

/// Who may use the admin port (see `crate::admin`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminAccess {
    /// The token, when one is required.
    pub token: Option<String>,
    /// The token is required for reads too.
    pub token_reads: bool,
    /// Names the port may be reached by besides IP addresses and
    /// `localhost` (lower case).
    pub hosts: Vec<String>,
}

/// The most workers there may be.
pub const MAX_WORKERS: usize = 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn args(v: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("ringmux").chain(v.iter().copied())).unwrap()
    }

    #[test]
    fn affinity_settings_are_checked() {
        let dir = std::env::temp_dir().join(format!("ringmux-key-{}", std::process::id()));
        std::fs::write(&dir, b"0123456789abcdef \n").unwrap();
        let key = dir.to_str().unwrap();
        let base = [
            "--upstream",
            "127.0.0.1:9",
            "--affinity",
            "cookie",
            "--affinity-key-file",
            key,
        ];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            args(&v).validate()
        };
        // The trailing space is part of the key; only the line end is not.
        let a = with(&[]).unwrap().affinity.unwrap();
        let b = {
            std::fs::write(&dir, b"0123456789abcdef ").unwrap();
            with(&[]).unwrap().affinity.unwrap()
        };
        assert_eq!(a, b);
        let e = with(&["--affinity-max-age", "0"]).unwrap_err();
        assert_eq!(e.flag, "--affinity-max-age");
        let e = with(&["--affinity-max-age", "18446744073709551615"]).unwrap_err();
        assert_eq!(e.flag, "--affinity-max-age", "{e}");
        assert!(
            with(&["--affinity-max-age", "315360000"]).is_ok(),
            "ten years"
        );
        for name in ["Host", "cookie", "Transfer-Encoding", "Forwarded"] {
            let e = with(&["--session-peer-header", name]).unwrap_err();
            assert_eq!(e.flag, "--session-peer-header", "{name}");
        }
        assert!(with(&["--session-peer-header", "Ringmux-Session-Peer"]).is_ok());
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn busy_poll_is_bounded() {
        let base = ["--upstream", "127.0.0.1:9", "--busy-poll"];
        let with = |v: &str| {
            let mut a = base.to_vec();
            a.push(v);
            args(&a).validate()
        };
        assert_eq!(with("20").unwrap().busy_poll_us, 20);
        assert_eq!(with("1001").unwrap_err().flag, "--busy-poll");
    }

    #[test]
    fn upstream_options_parse() {
        let u = parse_upstream("127.0.0.1:9000,weight=3,max_conns=7").unwrap();
        assert_eq!(u.addr, "127.0.0.1:9000".parse().unwrap());
        assert_eq!((u.weight, u.max_conns), (3, 7));
        assert_eq!(parse_upstream("127.0.0.1:9000").unwrap().weight, 1);
    }

    #[test]
    fn names_are_resolved_again_and_literals_left_alone() {
        let mut specs = vec![
            parse_upstream("localhost:9000").unwrap(),
            parse_upstream("127.0.0.9:9000").unwrap(),
        ];
        let resolved = specs[0].addr;
        assert!(!re_resolve(&mut specs, None), "nothing changed");
        // As if DNS had said something else before: the name is looked up
        // again and its new address taken; the literal is never touched.
        specs[0].addr = "192.0.2.1:9000".parse().unwrap();
        specs[1].addr = "192.0.2.2:9000".parse().unwrap();
        assert!(re_resolve(&mut specs, None));
        assert_eq!(specs[0].addr, resolved);
        assert_eq!(specs[1].addr, "192.0.2.2:9000".parse().unwrap());
        // A changed address is a new upstream; the same address keeps its
        // id, and no id is ever given twice.
        assign_ids(&mut specs, &[]);
        let before = specs.clone();
        let mut after = vec![before[1].clone(), parse_upstream("127.0.0.8:1").unwrap()];
        assign_ids(&mut after, &before);
        assert_eq!(after[0].id, before[1].id);
        assert!(before.iter().all(|b| b.id != after[1].id));
        let mut again = vec![before[0].clone()];
        again[0].addr = "192.0.2.3:9000".parse().unwrap();
        assign_ids(&mut again, &after);
        assert!(
            before.iter().chain(&after).all(|b| b.id != again[0].id),
            "a removed upstream's id is not reused"
        );
    }

    #[test]
    fn an_upstream_listed_twice_is_refused() {
        let e = args(&[
            "--upstream",
            "127.0.0.1:9",
            "--upstream",
            "127.0.0.1:9,weight=2",
        ])
        .validate()
        .unwrap_err();
        assert_eq!(e.flag, "--upstream");
        assert!(e.message.contains("listed twice"), "{}", e.message);
    }

    #[test]
    fn upstream_names_resolve_through_dns() {
        let u = parse_upstream("localhost:9000").unwrap();
        assert!(u.addr.ip().is_loopback());
        assert_eq!(u.name, "localhost:9000");
    }

    #[test]
    fn bad_upstreams_name_the_flag() {
        for bad in [
            "127.0.0.1:9000,weight=0",
            "127.0.0.1:9000,weight=x",
            "127.0.0.1:9000,max_conns=0",
            "127.0.0.1:9000,colour=blue",
            "127.0.0.1:9000,weight",
            "no-port",
            "999.1.1.1:80",
        ] {
            let e = parse_upstream(bad).unwrap_err();
            assert_eq!(e.flag, "--upstream", "{bad}");
            assert!(e.to_string().contains("--upstream"), "{bad}: {e}");
        }
    }

    #[test]
    fn an_ipv6_upstream_without_brackets_is_refused_and_says_how() {
        let e = parse_upstream("::1:8000").unwrap_err();
        assert_eq!(e.flag, "--upstream");
        assert!(e.message.contains("[::1]:8000"), "{}", e.message);
        let u = parse_upstream("[::1]:8000").unwrap();
        assert_eq!(u.addr, "[::1]:8000".parse().unwrap());
        let e = args(&["--upstream", "[::1]:8000", "--listen", "::1:0"])
            .validate()
            .unwrap_err();
        assert_eq!(e.flag, "--listen");
    }

    #[test]
    fn an_upstream_is_required_unless_demo() {
        assert_eq!(args(&[]).validate().unwrap_err().flag, "--upstream");
        assert!(args(&["--demo"]).validate().unwrap().upstreams.is_empty());
    }

    #[test]
    fn zero_workers_is_refused() {
        let e = args(&["--demo", "--workers", "0"]).validate().unwrap_err();
        assert_eq!(e.flag, "--workers");
    }

    #[test]
    fn bad_listen_address_is_refused() {
        let e = args(&["--demo", "--listen", "nonsense"])
            .validate()
            .unwrap_err();
        assert_eq!(e.flag, "--listen");
    }
}
