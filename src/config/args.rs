//! The command line ([`Args`], with clap): every setting's flag, default
//! and help text. The config file fills in what the command line did not
//! give ([`super::file`]); [`Args::validate`] turns the result into a
//! [`super::Config`].

use std::path::PathBuf;

use clap::Parser;

use super::upstream::UpstreamOptions;
use crate::spec::{DEFAULT_PIPELINE_DEPTH, DEFAULT_POOL_SIZE};

/// ringmux: an HTTP/1.1 reverse proxy on io_uring.
///
/// Each worker thread runs one io_uring reactor pinned to a core. Pipelined
/// requests with safe methods are fanned out over several keep-alive
/// upstream connections and answered in order.
#[derive(Debug, Clone, Parser)]
#[command(version, about, long_about = None)]
pub struct Args {
    /// Address to accept clients on (repeatable): ADDR for plain HTTP,
    /// ADDR,h2 for HTTP/2 by prior knowledge too, or
    /// ADDR,tls[,h2][,strict_sni],cert=PATH,key=PATH[,cert=PATH,key=PATH...]
    /// for TLS (certificates chosen by SNI; the first is the default; h2:
    /// ALPN offers HTTP/2).
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:8080")]
    pub listen: Vec<String>,

    /// The config file's `[[listen]]` tables, with where each is.
    #[arg(skip)]
    pub listen_tables: Option<Vec<(super::ListenSpec, String)>>,

    /// Session-ticket keys shared with other instances: one per line, 64
    /// hex digits; the first encrypts, all decrypt (read again on reload).
    #[arg(long = "tls-ticket-key-file", value_name = "PATH")]
    pub tls_ticket_key_file: Option<std::path::PathBuf>,

    /// How long a TLS handshake may take, in milliseconds.
    #[arg(
        long = "tls-handshake-timeout",
        value_name = "MS",
        default_value_t = 10_000
    )]
    pub tls_handshake_timeout_ms: u64,

    /// TLS to the default backend's upstreams: `on` (certificates checked
    /// against the system's CAs, each upstream's host as the name), or
    /// KEY=VALUE pairs separated by commas: sni=NAME, ca_file=PATH,
    /// client_cert=PATH, client_key=PATH, verify=off.
    #[arg(long = "upstream-tls", value_name = "SETTINGS")]
    pub upstream_tls: Option<String>,

    /// The config file's `upstream_tls`.
    #[arg(skip)]
    pub upstream_tls_file: Option<crate::tls::upstream::UpstreamTlsSettings>,

    /// Send `Strict-Transport-Security: max-age=SECS` on answers over TLS
    /// (0: not sent).
    #[arg(long = "hsts", value_name = "SECS", default_value_t = 0)]
    pub hsts: u64,

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

    /// HTTP/2 clients: streams one connection may have open at once
    /// (SETTINGS_MAX_CONCURRENT_STREAMS; more are refused).
    #[arg(long = "h2-max-streams", value_name = "N", default_value_t = 100)]
    pub h2_max_streams: u32,

    /// HTTP/2 clients: each stream's receive window, in bytes
    /// (SETTINGS_INITIAL_WINDOW_SIZE; 65535 to 2147483647). The connection's
    /// is four times as large: it bounds the request bodies one connection
    /// holds.
    #[arg(long = "h2-stream-window", value_name = "BYTES", default_value_t = 256 * 1024)]
    pub h2_stream_window: u32,

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

    /// The config file's `[[upstream]]` tables, each with where it is
    /// (`an [[upstream]] (line N of FILE)`), when the file has them and the
    /// command line gave no `--upstream`: they are used instead.
    #[arg(skip)]
    pub upstream_tables: Option<Vec<(UpstreamOptions, String)>>,

    /// The config file's `[[backend]]` and `[[route]]` tables and its
    /// `default_backend` (see `config::routing`).
    #[arg(skip)]
    pub routing: super::RoutingTables,

    /// Every client connection starts with a PROXY protocol header (v1 or
    /// v2, from an L4 balancer in front): its source address is then the
    /// client's everywhere. A connection without a valid one is closed.
    #[arg(long = "accept-proxy")]
    pub accept_proxy: bool,

    /// The DNS server asked for SRV records (`--upstream srv:NAME`), as
    /// IP:PORT; the first `nameserver` of /etc/resolv.conf when not given.
    #[arg(long = "dns-server", value_name = "ADDR")]
    pub dns_server: Option<String>,

    /// Start each connection to the default backend's upstreams with a
    /// PROXY protocol header naming the client (v1 or v2).
    #[arg(long = "send-proxy", value_name = "VERSION")]
    pub send_proxy: Option<crate::spec::ProxyVersion>,

    /// What ringmux speaks to the default backend's upstreams: http1, or
    /// h2 (HTTP/2 by prior knowledge in the clear, ALPN over TLS), which
    /// carries every client's requests on few connections.
    #[arg(
        long = "upstream-protocol",
        value_name = "PROTOCOL",
        default_value = "http1"
    )]
    pub upstream_protocol: crate::spec::UpstreamProtocol,
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
