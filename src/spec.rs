//! What the configuration says about upstreams and how one is chosen: the
//! plain data both [`crate::config`] (which builds it) and [`crate::pool`]
//! (which runs on it) need, and nothing else. A leaf: it imports no other
//! module of the crate.

use std::net::SocketAddr;
use std::time::Duration;

/// Default number of idle keep-alive connections kept per upstream per worker.
pub const DEFAULT_POOL_SIZE: usize = 64;
/// Default ceiling on connections per upstream per worker.
pub const DEFAULT_MAX_CONNS: usize = 1024;
/// Default number of a client's pipelined requests forwarded at once.
pub const DEFAULT_PIPELINE_DEPTH: usize = 16;

/// Default of `--max-connecting`: opening connections per upstream per
/// worker before the pool has seen any answer.
pub const DEFAULT_MAX_CONNECTING: usize = 4;

/// Default of `--panic-threshold`, in percent (see `pool`, "Never refuse without trying").
pub const DEFAULT_PANIC_THRESHOLD: u8 = 50;

/// Default of `--max-idle`: idle upstream connections one worker keeps in
/// all, across upstreams.
pub const DEFAULT_MAX_IDLE: usize = 1024;

/// Default of `hash_balance`: the URL hash's bounded load factor.
pub const DEFAULT_HASH_BALANCE: f64 = 1.25;

/// Identifies an upstream for as long as the process runs: a reload that
/// keeps an upstream's address keeps its id (and with it its connections,
/// counts and health in every worker).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct UpstreamId(pub u32);

/// A backend's stable id: the default backend (the top-level upstreams) is
/// 0; a named one keeps its id across reloads for as long as its name is
/// configured, so its pool, connections and counts stay with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct BackendId(pub u64);

impl BackendId {
    /// The backend of the top-level upstreams and flags.
    pub const DEFAULT: BackendId = BackendId(0);
}

impl std::fmt::Display for UpstreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "u{}", self.0)
    }
}

/// One origin server in the pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSpec {
    /// Stable id (see [`UpstreamId`]); given by `config::assign_ids`.
    pub id: UpstreamId,
    /// What the user wrote before the options, for messages and metrics.
    pub name: String,
    /// Resolved address (the first one DNS returned).
    pub addr: SocketAddr,
    /// Weighted round robin weight, at least 1.
    pub weight: u32,
    /// Ceiling on open connections to this upstream, per worker.
    pub max_conns: usize,
    /// Requests that may wait for it, per worker.
    pub max_queue: usize,
    /// Consecutive failures (of traffic, or of health checks) that mark it
    /// down.
    pub fall: u32,
    /// Consecutive passed health checks that bring it back.
    pub rise: u32,
    /// The active health check, if it has one.
    pub check: Option<HealthCheck>,
    /// Connections opened in the background while it warms up.
    pub warm_conns: usize,
    /// Its weight ramps from 10% to 100% over this once warm (0: at once).
    pub slow_start: Duration,
    /// A path that answers 2xx once it is ready for traffic (polled while
    /// it is cold).
    pub warmup_check: Option<String>,
    /// The DNS SRV service it is an instance of (`--upstream srv:NAME`):
    /// re-resolution replaces the service's instances together.
    pub srv: Option<std::sync::Arc<str>>,
    /// Its backend writes a PROXY protocol header first (`send_proxy`): so
    /// do its health and readiness checks (a LOCAL one).
    pub proxy: Option<ProxyVersion>,
    /// Its backend speaks TLS to it (`tls`): so do its health and
    /// readiness checks.
    pub tls: Option<crate::tls::upstream::TlsTarget>,
    /// What its backend speaks to it (`protocol`): HTTP/1.1, or HTTP/2 with
    /// many clients' exchanges on one connection (see `worker::mux`).
    pub protocol: UpstreamProtocol,
}

/// What a backend speaks to its upstreams (`protocol`, `--upstream-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum UpstreamProtocol {
    /// HTTP/1.1: one client's exchanges on a connection at a time.
    #[default]
    Http1,
    /// HTTP/2 (h2c by prior knowledge in the clear, ALPN `h2` over TLS):
    /// every client's exchanges on few connections, one stream each.
    H2,
}

/// An upstream's active health check: `GET path` every `interval`, each
/// given `timeout`; a 2xx or 3xx answer passes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    pub path: String,
    pub interval: Duration,
    pub timeout: Duration,
}

/// Default of an upstream's `max_queue`.
pub const DEFAULT_MAX_QUEUE: usize = 1024;
/// Default of an upstream's `fall`.
pub const DEFAULT_FALL: u32 = 3;
/// Default of an upstream's `rise`.
pub const DEFAULT_RISE: u32 = 2;
/// Default of an upstream's `warm_conns`.
pub const DEFAULT_WARM_CONNS: usize = 4;
/// Default health check interval and timeout.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(1);

impl UpstreamSpec {
    /// A spec for `addr` with every option at its default (tests, the
    /// demo origin).
    pub fn plain(name: String, addr: SocketAddr) -> Self {
        UpstreamSpec {
            id: UpstreamId::default(),
            name,
            addr,
            weight: 1,
            max_conns: DEFAULT_MAX_CONNS,
            max_queue: DEFAULT_MAX_QUEUE,
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
            check: None,
            warm_conns: DEFAULT_WARM_CONNS,
            slow_start: Duration::ZERO,
            warmup_check: None,
            srv: None,
            proxy: None,
            tls: None,
            protocol: UpstreamProtocol::Http1,
        }
    }

    /// The authority to send as `Host` when a request has none: the name
    /// the upstream was given by, without a default port.
    pub fn host(&self) -> &str {
        let default = if self.tls.is_some() { ":443" } else { ":80" };
        self.name.strip_suffix(default).unwrap_or(&self.name)
    }
}

/// `--idle-reuse`: which idle connection a request takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum IdleReuse {
    /// The most recently used (see the module doc).
    #[default]
    Lifo,
    /// The one idle the longest.
    Fifo,
}

/// The pool's settings a reload may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    /// Idle connections kept per upstream for the idle timeout.
    pub pool_size: usize,
    /// Connections per upstream that may be opening at once.
    pub max_connecting: usize,
    /// Which idle connection is reused.
    pub idle_reuse: IdleReuse,
    /// Below this percentage of upstreams up, every one is chosen from.
    pub panic_threshold: u8,
    /// Idle connections kept in all, across upstreams.
    pub max_idle: usize,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            pool_size: DEFAULT_POOL_SIZE,
            max_connecting: DEFAULT_MAX_CONNECTING,
            idle_reuse: IdleReuse::Lifo,
            panic_threshold: DEFAULT_PANIC_THRESHOLD,
            max_idle: DEFAULT_MAX_IDLE,
        }
    }
}

/// `--balance`: which policy picks the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Balance {
    /// Smooth weighted round robin.
    #[default]
    Wrr,
    /// Fewest in-flight exchanges per unit of weight.
    LeastConn,
    /// Consistent hash of the request path, with bounded load.
    UrlHash,
    /// Two random upstreams, the less loaded per weight wins.
    Random2,
}

/// `--hash-key`: what URL-hash balancing hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum HashKey {
    /// The path without its query.
    #[default]
    Path,
    /// The path and its query.
    #[value(name = "path+query")]
    PathQuery,
}

/// How the policy is configured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PolicyConfig {
    pub balance: Balance,
    pub hash_key: HashKey,
    /// URL-hash bounded load factor (`c`); 0 turns the bound off.
    pub hash_balance: f64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            balance: Balance::Wrr,
            hash_key: HashKey::Path,
            hash_balance: DEFAULT_HASH_BALANCE,
        }
    }
}

/// The PROXY protocol version written at the start of each connection to a
/// backend's upstreams (`send_proxy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProxyVersion {
    /// The text form: `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary form.
    V2,
}
