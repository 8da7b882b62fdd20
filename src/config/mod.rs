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

pub mod file;

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::scaler::Scale;
use crate::spec::{HealthCheck, UpstreamId, UpstreamSpec};
use crate::spec::{
    DEFAULT_CHECK_INTERVAL, DEFAULT_CHECK_TIMEOUT, DEFAULT_PIPELINE_DEPTH, DEFAULT_POOL_SIZE,
};

/// ringmux: an HTTP/1.1 reverse proxy on io_uring.
///
/// Each worker thread runs one io_uring reactor pinned to a core. Pipelined
/// requests with safe methods are fanned out over several keep-alive
/// upstream connections and answered in order.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Address to accept clients on (repeatable).
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: Vec<String>,

    /// Origin server: HOST:PORT[,weight=N][,max_conns=N][,max_queue=N]
    /// [,health_check=/PATH][,interval=MS][,timeout=MS][,rise=N][,fall=N]
    /// (repeatable; a HOST that is a name is resolved through DNS).
    #[arg(long = "upstream", value_name = "SPEC")]
    pub upstream: Vec<String>,

    /// Worker threads, each with its own io_uring, pinned to a core: a
    /// number, or MIN..MAX to grow and shrink with load [default: number of
    /// cores].
    #[arg(long = "workers", value_name = "N|MIN..MAX")]
    pub workers: Option<String>,

    /// Elastic workers: add one when every worker has been busier than
    /// this fraction of the time for --scale-up-after.
    #[arg(long = "scale-high", value_name = "FRACTION", default_value_t = 0.75)]
    pub scale_high: f64,

    /// Elastic workers: retire one when the busiest has been below this
    /// fraction for --scale-down-after.
    #[arg(long = "scale-low", value_name = "FRACTION", default_value_t = 0.25)]
    pub scale_low: f64,

    /// Elastic workers: how long every worker must stay busy before one is
    /// added, in milliseconds.
    #[arg(long = "scale-up-after", value_name = "MS", default_value_t = 2000)]
    pub scale_up_after_ms: u64,

    /// Elastic workers: how long the busiest must stay quiet before one is
    /// retired, in milliseconds.
    #[arg(long = "scale-down-after", value_name = "MS", default_value_t = 30_000)]
    pub scale_down_after_ms: u64,

    /// Idle keep-alive connections kept per upstream per worker.
    #[arg(long = "pool-size", value_name = "N", default_value_t = DEFAULT_POOL_SIZE)]
    pub pool_size: usize,

    /// Pipelined requests of one client forwarded at once (safe methods only).
    #[arg(long = "pipeline-depth", value_name = "N", default_value_t = DEFAULT_PIPELINE_DEPTH)]
    pub pipeline_depth: usize,

    /// Upstream connect timeout in milliseconds.
    #[arg(long = "connect-timeout", value_name = "MS", default_value_t = 3000)]
    pub connect_timeout_ms: u64,

    /// Upstream response timeout in milliseconds (time to the first byte of
    /// the response head, once the request is sent).
    #[arg(long = "response-timeout", value_name = "MS", default_value_t = 60_000)]
    pub response_timeout_ms: u64,

    /// Total time an exchange may take, from its request head to the end
    /// of its response, in milliseconds (0: no limit); then 504, or a close
    /// if the response had started.
    #[arg(long = "request-timeout", value_name = "MS", default_value_t = 300_000)]
    pub request_timeout_ms: u64,

    /// Time a client has to send a complete request head, from its first
    /// byte (or from accept), in milliseconds; then 408 and close.
    #[arg(
        long = "client-header-timeout",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub client_header_timeout_ms: u64,

    /// Time an idle keep-alive client connection is kept, in milliseconds.
    #[arg(
        long = "client-idle-timeout",
        value_name = "MS",
        default_value_t = 60_000
    )]
    pub client_idle_timeout_ms: u64,

    /// Time an idle pooled upstream connection is kept, in milliseconds.
    #[arg(
        long = "upstream-idle-timeout",
        value_name = "MS",
        default_value_t = 30_000
    )]
    pub upstream_idle_timeout_ms: u64,

    /// Client connections per worker; connections beyond are closed at once.
    #[arg(long = "max-connections", value_name = "N", default_value_t = 50_000)]
    pub max_connections: usize,

    /// Largest request head (request line and header fields), in bytes;
    /// larger ones get 431.
    #[arg(long = "max-head-size", value_name = "BYTES", default_value_t = crate::codec::MAX_HEAD_BYTES)]
    pub max_head_size: usize,

    /// Most header fields in a request; more get 431.
    #[arg(long = "max-headers", value_name = "N", default_value_t = crate::codec::MAX_HEADERS)]
    pub max_headers: usize,

    /// Per client, the most bytes buffered of its output, of each response
    /// waiting for its turn, and of its request body, before the socket
    /// feeding them is paused.
    #[arg(long = "buffer-size", value_name = "BYTES", default_value_t = crate::agent::DEFAULT_BUFFER)]
    pub buffer_size: usize,

    /// Largest request body accepted, in bytes (0: no limit); larger ones
    /// get 413.
    #[arg(long = "max-body-size", value_name = "BYTES", default_value_t = 1 << 30)]
    pub max_body_size: u64,

    /// Start a built-in demo origin on loopback and proxy to it (used when
    /// no --upstream is given).
    #[arg(long = "demo")]
    pub demo: bool,

    /// Validate the command line (and the config file), print the resolved
    /// configuration and exit.
    #[arg(long = "check")]
    pub check: bool,

    /// Read settings from this TOML file; the command line overrides it.
    /// SIGHUP reads it again (a reload).
    #[arg(long = "config", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// On SIGTERM or SIGINT, how long in-flight exchanges may take to
    /// finish before what is left is closed, in milliseconds.
    #[arg(long = "drain-timeout", value_name = "MS", default_value_t = 30_000)]
    pub drain_timeout_ms: u64,

    /// How often upstream names are resolved again through DNS, in
    /// milliseconds (0: only at start-up and on reload).
    #[arg(long = "resolve-interval", value_name = "MS", default_value_t = 30_000)]
    pub resolve_interval_ms: u64,

    /// Serve the status page, JSON status, Prometheus metrics and the
    /// connection table on this address (off by default; keep it private).
    #[arg(long = "admin", value_name = "ADDR")]
    pub admin: Option<String>,

    /// A file holding the admin port's token (its first line; 16 bytes or
    /// more): required as `Authorization: Bearer TOKEN` for everything
    /// that changes state (`POST /reload`), and for reads too with
    /// `--admin-token-reads`.
    #[arg(long = "admin-token-file", value_name = "PATH")]
    pub admin_token_file: Option<PathBuf>,

    /// Require the admin token for reads too (status, metrics, the
    /// connection table).
    #[arg(long = "admin-token-reads")]
    pub admin_token_reads: bool,

    /// A name the admin port may be reached by (its `Host`), besides IP
    /// addresses and `localhost` (repeatable): any other name is refused,
    /// so that a web page cannot reach it through DNS rebinding.
    #[arg(long = "admin-host", value_name = "NAME")]
    pub admin_host: Vec<String>,

    /// Write one line per request to this file, or `-` for stdout (off by
    /// default); SIGUSR1 reopens the file.
    #[arg(long = "access-log", value_name = "PATH|-")]
    pub access_log: Option<String>,

    /// Access log line format.
    #[arg(
        long = "access-log-format",
        value_name = "FORMAT",
        default_value = "combined"
    )]
    pub access_log_format: crate::access_log::Format,

    /// Do not pin worker threads to cores.
    #[arg(long = "no-pin")]
    pub no_pin: bool,

    /// Listen even where another process already listens (its SO_REUSEPORT
    /// group is then shared, and the kernel splits new connections between
    /// the two): for a deliberate hand-over from an old process to a new
    /// one. Without it, ringmux refuses to start there.
    #[arg(long = "reuse-port-shared")]
    pub reuse_port_shared: bool,

    /// Connections per upstream per worker that may be opening at once (from
    /// the connect to the first answer, for at most 5 ms each), so that an
    /// origin's accept queue never receives more than that at one time.
    #[arg(long = "max-connecting", value_name = "N", default_value_t = crate::spec::DEFAULT_MAX_CONNECTING)]
    pub max_connecting: usize,

    /// When fewer than this percentage of the upstreams are up, health is
    /// ignored and every upstream is chosen from (Envoy's panic
    /// threshold): better a try on one that may be down than a 503 for
    /// everyone. 0 turns it off (a single upstream is still never refused
    /// for failures of traffic alone).
    #[arg(long = "panic-threshold", value_name = "PERCENT", default_value_t = crate::spec::DEFAULT_PANIC_THRESHOLD)]
    pub panic_threshold: u8,

    /// Idle keep-alive upstream connections one worker keeps in all,
    /// across upstreams (nginx's `keepalive N`); past it the one idle the
    /// longest is closed. `--pool-size` bounds them per upstream.
    #[arg(long = "max-idle", value_name = "N", default_value_t = crate::spec::DEFAULT_MAX_IDLE)]
    pub max_idle: usize,

    /// How the upstream is chosen: smooth weighted round robin, fewest
    /// in-flight exchanges per weight, a consistent hash of the URL, or the
    /// less loaded of two random ones.
    #[arg(long = "balance", value_name = "POLICY", default_value = "wrr")]
    pub balance: crate::spec::Balance,

    /// What url-hash hashes: the path, or the path and its query.
    #[arg(long = "hash-key", value_name = "KEY", default_value = "path")]
    pub hash_key: crate::spec::HashKey,

    /// url-hash bounded load: an upstream carrying more than this times
    /// its share of the exchanges in flight takes no more (0: no bound).
    #[arg(long = "hash-balance", value_name = "C", default_value_t = crate::spec::DEFAULT_HASH_BALANCE)]
    pub hash_balance: f64,

    /// Which idle upstream connection a request takes: the most recently
    /// used (lifo) or the one idle the longest (fifo).
    #[arg(long = "idle-reuse", value_name = "ORDER", default_value = "lifo")]
    pub idle_reuse: crate::spec::IdleReuse,

    /// How long a request may wait for an upstream connection, in
    /// milliseconds (then 503) [default: the connect timeout].
    #[arg(long = "queue-timeout", value_name = "MS")]
    pub queue_timeout_ms: Option<u64>,

    /// Session affinity: `cookie` keeps each client session on one upstream
    /// with a signed cookie (see --affinity-key-file).
    #[arg(long = "affinity", value_name = "MODE", default_value = "none")]
    pub affinity: AffinityMode,

    /// The affinity cookie's name.
    #[arg(
        long = "affinity-cookie",
        value_name = "NAME",
        default_value = "ringmux_session"
    )]
    pub affinity_cookie: String,

    /// A file holding the affinity cookie's signing key (16 bytes or
    /// more; every ringmux that shares it honours the others' cookies).
    #[arg(long = "affinity-key-file", value_name = "PATH")]
    pub affinity_key_file: Option<PathBuf>,

    /// The key itself (config file only: a flag would show it in `ps`).
    #[arg(skip)]
    pub affinity_key: Option<String>,

    /// How long an affinity cookie lives, in seconds.
    #[arg(
        long = "affinity-max-age",
        value_name = "SECS",
        default_value_t = 86_400
    )]
    pub affinity_max_age_s: u64,

    /// Mark the affinity cookie `Secure` (the site is served over TLS in
    /// front of ringmux).
    #[arg(long = "affinity-secure")]
    pub affinity_secure: bool,

    /// At the hand-off back to a session's home, the request header that
    /// names the peer that served it meanwhile (off by default).
    #[arg(long = "session-peer-header", value_name = "NAME")]
    pub session_peer_header: Option<String>,

    /// Name in the Via field added to requests and responses
    /// (`Via: 1.1 NAME`), or `off` (the default) to add none: nginx, for
    /// one, does not compress an answer to a request that carries `Via`.
    #[arg(long = "via", value_name = "NAME|off", default_value = "off")]
    pub via: String,

    /// While a worker is busy, how long it may hold completions back to
    /// handle them in one batch, in microseconds; 0 (the default) handles
    /// each at once. Needs Linux 6.12; ignored before.
    #[arg(long = "batch-wait", value_name = "US", default_value_t = 0)]
    pub batch_wait_us: u32,

    /// When a worker runs out of work, how long it keeps polling its ring
    /// before it sleeps, in microseconds; 0 (the default) sleeps at once.
    /// Trades idle CPU for latency: the next completion is taken without a
    /// wake-up.
    #[arg(long = "busy-poll", value_name = "US", default_value_t = 0)]
    pub busy_poll_us: u32,

    /// Receive buffers in each worker's provided-buffer ring (a power of
    /// two; each is 16 KiB). Small values are for tests of the ring running
    /// dry.
    #[arg(
        long = "ring-buffers",
        value_name = "N",
        default_value_t = 1024,
        hide = true
    )]
    pub ring_buffers: u16,

    /// Testing only: a request for exactly this path makes its worker
    /// panic, to exercise the supervisor's restart.
    #[arg(long = "debug-panic-path", value_name = "PATH", hide = true)]
    pub debug_panic_path: Option<String>,

    /// How workers accept: one SO_REUSEPORT listener each (default), or one
    /// listener shared by every ring (kept for measuring the difference).
    #[arg(
        long = "accept",
        value_name = "MODE",
        default_value = "reuseport",
        hide = true
    )]
    pub accept: AcceptMode,
}

/// `--affinity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AffinityMode {
    /// The policy alone decides.
    None,
    /// A signed cookie names the session's upstream.
    Cookie,
}

/// How worker threads get their client connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AcceptMode {
    /// One SO_REUSEPORT listener per worker; the kernel spreads connections.
    Reuseport,
    /// One listener, multishot accept armed in every worker's ring.
    Shared,
}

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

    /// Resolve and check everything; the result is ready to run.
    pub fn validate(&self) -> Result<Config, ConfigError> {
        let (workers, max_workers) = match &self.workers {
            Some(text) => parse_workers(text)?,
            None => {
                let n = std::thread::available_parallelism().map_or(1, |n| n.get());
                (n, n)
            }
        };
        let mut listen = Vec::with_capacity(self.listen.len());
        for l in &self.listen {
            listen.push(resolve(l).map_err(|m| err("--listen", format!("'{l}': {m}")))?);
        }
        let mut upstreams = Vec::with_capacity(self.upstream.len());
        for u in &self.upstream {
            upstreams.push(parse_upstream(u)?);
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
        if upstreams.is_empty() && !self.demo {
            return Err(err(
                "--upstream",
                "at least one upstream is required (or pass --demo)",
            ));
        }
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
        if self.pipeline_depth == 0 {
            return Err(err("--pipeline-depth", "'0': must be at least 1"));
        }
        if !self.ring_buffers.is_power_of_two() || self.ring_buffers > 32768 {
            return Err(err(
                "--ring-buffers",
                format!(
                    "'{}': must be a power of two up to 32768",
                    self.ring_buffers
                ),
            ));
        }
        if self.connect_timeout_ms == 0 {
            return Err(err("--connect-timeout", "'0': must be at least 1 ms"));
        }
        for (flag, v) in [
            ("--response-timeout", self.response_timeout_ms),
            ("--client-header-timeout", self.client_header_timeout_ms),
            ("--client-idle-timeout", self.client_idle_timeout_ms),
            ("--upstream-idle-timeout", self.upstream_idle_timeout_ms),
        ] {
            if v == 0 {
                return Err(err(flag, "'0': must be at least 1 ms"));
            }
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
        let admin = match &self.admin {
            Some(a) => Some(resolve(a).map_err(|m| err("--admin", format!("'{a}': {m}")))?),
            None => None,
        };
        if self.max_connecting == 0 {
            return Err(err("--max-connecting", "'0': must be at least 1"));
        }
        if self.panic_threshold > 100 {
            return Err(err(
                "--panic-threshold",
                format!("'{}': must be between 0 and 100", self.panic_threshold),
            ));
        }
        let via = match self.via.as_str() {
            "off" => None,
            name if !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-._~!$&'*+^`|".contains(&b)) =>
            {
                Some(leak_name(name))
            }
            name => {
                return Err(err(
                    "--via",
                    format!("'{name}': a name of letters, digits and -._~ (or off)"),
                ))
            }
        };
        if !(self.hash_balance == 0.0 || (1.0..=100.0).contains(&self.hash_balance)) {
            return Err(err(
                "--hash-balance",
                format!("'{}': 0 (off) or between 1 and 100", self.hash_balance),
            ));
        }
        if self.queue_timeout_ms == Some(0) {
            return Err(err("--queue-timeout", "'0': must be at least 1 ms"));
        }
        let affinity = self.affinity_settings()?;
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
        Ok(Config {
            listen,
            upstreams,
            workers,
            max_workers,
            scale: Scale {
                high: self.scale_high,
                low: self.scale_low,
                up_after: Duration::from_millis(self.scale_up_after_ms),
                down_after: Duration::from_millis(self.scale_down_after_ms),
            },
            pool_size: self.pool_size,
            pipeline_depth: self.pipeline_depth,
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            response_timeout: Duration::from_millis(self.response_timeout_ms),
            request_timeout: (self.request_timeout_ms > 0)
                .then(|| Duration::from_millis(self.request_timeout_ms)),
            client_header_timeout: Duration::from_millis(self.client_header_timeout_ms),
            client_idle_timeout: Duration::from_millis(self.client_idle_timeout_ms),
            upstream_idle_timeout: Duration::from_millis(self.upstream_idle_timeout_ms),
            max_connections: self.max_connections,
            max_body_size: self.max_body_size,
            head_limits: crate::codec::HeadLimits {
                bytes: self.max_head_size,
                fields: self.max_headers,
            },
            buffer_size: self.buffer_size,
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
            policy: crate::spec::PolicyConfig {
                balance: self.balance,
                hash_key: self.hash_key,
                hash_balance: self.hash_balance,
            },
            idle_reuse: self.idle_reuse,
            queue_timeout: Duration::from_millis(
                self.queue_timeout_ms.unwrap_or(self.connect_timeout_ms),
            ),
            via,
            drain_timeout: Duration::from_millis(self.drain_timeout_ms),
            resolve_interval: (self.resolve_interval_ms > 0)
                .then(|| Duration::from_millis(self.resolve_interval_ms)),
            config_path: self.config.clone(),
            admin,
            admin_access: self.admin_access()?,
            access_log: self
                .access_log
                .as_deref()
                .map(crate::access_log::Target::parse),
            access_log_format: self.access_log_format,
            hash_table: None,
        }
        .with_hash_table())
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

impl Config {
    /// Build (or find) the `url-hash` table for the upstreams, if that is
    /// the policy (again after the upstreams change: DNS, the demo origin).
    pub fn with_hash_table(mut self) -> Config {
        if self.policy.balance == crate::spec::Balance::UrlHash {
            let members: Vec<(String, u32)> = self
                .upstreams
                .iter()
                .map(|u| (u.name.clone(), u.weight))
                .collect();
            self.hash_table = Some(crate::pool::url_hash::prepare(&members));
        }
        self
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

/// Resolve every upstream given by name again; true if an address changed
/// (those specs now carry the new address and need new ids, see
/// [`assign_ids`]). Names that do not resolve keep their address.
pub fn re_resolve(specs: &mut [UpstreamSpec]) -> bool {
    let mut changed = false;
    for u in specs.iter_mut() {
        if u.name.parse::<SocketAddr>().is_ok() || u.name.starts_with("demo@") {
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

/// Resolve `HOST:PORT` (a literal address or a DNS name) to its first address.
fn resolve(s: &str) -> Result<SocketAddr, String> {
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    let Some((host, _port)) = s.rsplit_once(':') else {
        return Err("expected HOST:PORT".into());
    };
    if host.contains(':') && !host.starts_with('[') {
        // `::1:8000` would resolve as [::1]:8000, but `::1:80:8000`? An
        // IPv6 address is written in brackets, always.
        return Err(format!(
            "an IPv6 address needs brackets around it: [{host}]:{_port}"
        ));
    }
    match s.to_socket_addrs() {
        Ok(mut it) => it
            .next()
            .ok_or_else(|| "name resolved to no address".into()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}

/// Parse `HOST:PORT[,KEY=VALUE]...` (see [`UPSTREAM_OPTIONS`]).
pub fn parse_upstream(spec: &str) -> Result<UpstreamSpec, ConfigError> {
    let mut parts = spec.split(',');
    let hostport = parts.next().unwrap_or_default().trim();
    let addr = resolve(hostport).map_err(|m| err("--upstream", format!("'{spec}': {m}")))?;
    let mut u = UpstreamSpec::plain(hostport.to_string(), addr);
    let bad = |m: String| err("--upstream", format!("'{spec}': {m}"));
    let (mut path, mut interval, mut timeout) = (None, None, None);
    for opt in parts {
        let (key, value) = opt
            .split_once('=')
            .ok_or_else(|| bad(format!("option '{opt}' is not KEY=VALUE")))?;
        let (key, value) = (key.trim(), value.trim());
        if key == "health_check" || key == "warmup_check" {
            let ok =
                value.starts_with('/') && value.bytes().all(|b| b.is_ascii_graphic() && b != b',');
            if !ok {
                return Err(bad(format!(
                    "{key} must be a path starting with /, got '{value}'"
                )));
            }
            if key == "health_check" {
                path = Some(value.to_string());
            } else {
                u.warmup_check = Some(value.to_string());
            }
            continue;
        }
        if matches!(key, "interval" | "timeout" | "slow_start") {
            let d = parse_duration(value).ok_or_else(|| {
                bad(format!(
                    "{key} must be a duration (milliseconds, or with ms, s or m), got '{value}'"
                ))
            })?;
            let ms = d.as_millis() as u64;
            let (lo, hi) = match key {
                "interval" => (10, 3_600_000),
                "timeout" => (1, 600_000),
                _ => (0, 3_600_000),
            };
            if !(lo..=hi).contains(&ms) {
                return Err(bad(format!("{key} must be between {lo} and {hi} ms")));
            }
            match key {
                "interval" => interval = Some(d),
                "timeout" => timeout = Some(d),
                _ => u.slow_start = d,
            }
            continue;
        }
        let n: u64 = value
            .parse()
            .map_err(|_| bad(format!("{key} must be a whole number, got '{value}'")))?;
        let range = |lo: u64, hi: u64| -> Result<u64, ConfigError> {
            if (lo..=hi).contains(&n) {
                Ok(n)
            } else {
                Err(bad(format!("{key} must be between {lo} and {hi}")))
            }
        };
        match key {
            "weight" => u.weight = range(1, 1000)? as u32,
            "max_conns" => u.max_conns = range(1, 1 << 20)? as usize,
            "max_queue" => u.max_queue = range(0, 1 << 20)? as usize,
            "fall" => u.fall = range(1, 100)? as u32,
            "rise" => u.rise = range(1, 100)? as u32,
            "warm_conns" => u.warm_conns = range(1, 64)? as usize,
            other => {
                return Err(bad(format!(
                    "unknown option '{other}' (expected one of {UPSTREAM_OPTIONS})"
                )))
            }
        }
    }
    match path {
        Some(path) => {
            let interval = interval.unwrap_or(DEFAULT_CHECK_INTERVAL);
            let timeout = timeout.unwrap_or(DEFAULT_CHECK_TIMEOUT.min(interval));
            u.check = Some(HealthCheck {
                path,
                interval,
                timeout,
            });
        }
        None if interval.is_some() || timeout.is_some() => {
            return Err(bad("interval and timeout need a health_check path".into()));
        }
        None => {}
    }
    Ok(u)
}

/// The options an `--upstream` takes after `HOST:PORT`.
pub const UPSTREAM_OPTIONS: &str = "weight, max_conns, max_queue, fall, rise, health_check, \
     interval, timeout, warmup_check, warm_conns, slow_start";

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

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(!re_resolve(&mut specs), "nothing changed");
        // As if DNS had said something else before: the name is looked up
        // again and its new address taken; the literal is never touched.
        specs[0].addr = "192.0.2.1:9000".parse().unwrap();
        specs[1].addr = "192.0.2.2:9000".parse().unwrap();
        assert!(re_resolve(&mut specs));
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
