//! The config file (`--config PATH`, TOML): every setting of the command
//! line has a key, named like its flag with `_` for `-` (`--pool-size` is
//! `pool_size`; durations are milliseconds like the flags), and upstreams
//! are a list of tables:
//!
//! ```toml
//! listen = ["0.0.0.0:8080"]
//! workers = 4
//! connect_timeout = 3000
//!
//! [[upstream]]
//! addr = "10.0.0.5:8000"
//!
//! [[upstream]]
//! addr = "app.internal:8000"
//! weight = 2
//! max_conns = 512
//! ```
//!
//! The command line overrides the file, key by key (`--upstream` replaces
//! the whole list). Unknown keys are errors, and so is every value that
//! would be an error as a flag; either way the message names the key and
//! its line. Nothing here reads the file twice: [`load`] is given its text.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use toml::Spanned;

use super::{Args, Config, ConfigError, UpstreamOptions};

/// One value that is a single string or a list of them (`listen`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    pub(super) fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `listen`: one address, a list, or `[[listen]]` tables (TLS).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ListenValue {
    Plain(OneOrMany),
    Tables(Vec<super::FileListen>),
}

/// `workers = 4` or `workers = "1..4"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Workers {
    Count(u64),
    Range(String),
}

/// An `[[upstream]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileUpstream {
    pub(super) addr: String,
    weight: Option<u64>,
    max_conns: Option<u64>,
    max_queue: Option<u64>,
    fall: Option<u64>,
    rise: Option<u64>,
    health_check: Option<String>,
    interval: Option<FileDuration>,
    timeout: Option<FileDuration>,
    warmup_check: Option<String>,
    warm_conns: Option<u64>,
    slow_start: Option<FileDuration>,
}

impl FileUpstream {
    /// The options the table gives (durations checked here, the rest when
    /// they are built).
    pub(super) fn into_options(self) -> Result<UpstreamOptions, String> {
        Ok(UpstreamOptions {
            interval: duration("interval", self.interval)?,
            timeout: duration("timeout", self.timeout)?,
            slow_start: duration("slow_start", self.slow_start)?,
            addr: self.addr,
            weight: self.weight,
            max_conns: self.max_conns,
            max_queue: self.max_queue,
            fall: self.fall,
            rise: self.rise,
            warm_conns: self.warm_conns,
            health_check: self.health_check,
            warmup_check: self.warmup_check,
        })
    }
}

/// A duration key: milliseconds, or a string with a unit (`"10s"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum FileDuration {
    Millis(u64),
    Text(String),
}

/// The duration `d` of key `key`, if given.
pub(super) fn duration(key: &str, d: Option<FileDuration>) -> Result<Option<Duration>, String> {
    match d {
        None => Ok(None),
        Some(FileDuration::Millis(n)) => Ok(Some(Duration::from_millis(n))),
        Some(FileDuration::Text(t)) => super::parse_duration(&t).map(Some).ok_or_else(|| {
            format!("{key} must be a duration (milliseconds, or with ms, s or m), got '{t}'")
        }),
    }
}

/// The file's keys. All optional: the command line and the defaults fill
/// in the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Spanned<ListenValue>>,
    upstream: Option<Vec<Spanned<FileUpstream>>>,
    workers: Option<Spanned<Workers>>,
    scale_high: Option<Spanned<f64>>,
    scale_low: Option<Spanned<f64>>,
    scale_up_after: Option<Spanned<u64>>,
    scale_down_after: Option<Spanned<u64>>,
    pool_size: Option<Spanned<u64>>,
    pipeline_depth: Option<Spanned<u64>>,
    connect_timeout: Option<Spanned<u64>>,
    response_timeout: Option<Spanned<u64>>,
    request_timeout: Option<Spanned<u64>>,
    client_header_timeout: Option<Spanned<u64>>,
    client_idle_timeout: Option<Spanned<u64>>,
    upstream_idle_timeout: Option<Spanned<u64>>,
    max_connections: Option<Spanned<u64>>,
    max_head_size: Option<Spanned<u64>>,
    max_headers: Option<Spanned<u64>>,
    buffer_size: Option<Spanned<u64>>,
    h2_max_streams: Option<Spanned<u64>>,
    h2_stream_window: Option<Spanned<u64>>,
    max_body_size: Option<Spanned<u64>>,
    max_connecting: Option<Spanned<u64>>,
    panic_threshold: Option<Spanned<u64>>,
    max_idle: Option<Spanned<u64>>,
    via: Option<Spanned<String>>,
    batch_wait: Option<Spanned<u64>>,
    busy_poll: Option<Spanned<u64>>,
    pin: Option<Spanned<bool>>,
    reuse_port_shared: Option<Spanned<bool>>,
    drain_timeout: Option<Spanned<u64>>,
    resolve_interval: Option<Spanned<u64>>,
    ring_buffers: Option<Spanned<u64>>,
    accept: Option<Spanned<String>>,
    admin: Option<Spanned<String>>,
    admin_token_file: Option<Spanned<String>>,
    admin_token_reads: Option<Spanned<bool>>,
    admin_host: Option<Spanned<Vec<String>>>,
    access_log: Option<Spanned<String>>,
    access_log_format: Option<Spanned<String>>,
    balance: Option<Spanned<String>>,
    hash_key: Option<Spanned<String>>,
    hash_balance: Option<Spanned<f64>>,
    idle_reuse: Option<Spanned<String>>,
    queue_timeout: Option<Spanned<u64>>,
    affinity: Option<Spanned<FileAffinity>>,
    backend: Option<Vec<Spanned<super::FileBackend>>>,
    route: Option<Vec<Spanned<super::FileRoute>>>,
    default_backend: Option<Spanned<String>>,
    accept_proxy: Option<Spanned<bool>>,
    dns_server: Option<Spanned<String>>,
    tls_handshake_timeout: Option<Spanned<u64>>,
    tls_ticket_key_file: Option<Spanned<String>>,
    hsts: Option<Spanned<u64>>,
    upstream_tls: Option<Spanned<toml::Value>>,
    send_proxy: Option<Spanned<String>>,
    upstream_protocol: Option<Spanned<String>>,
}

/// The `[affinity]` table: its presence turns cookie affinity on.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileAffinity {
    cookie: Option<String>,
    key: Option<String>,
    key_file: Option<std::path::PathBuf>,
    max_age: Option<u64>,
    secure: Option<bool>,
    peer_header: Option<String>,
}

/// Where a value came from: a key and its line.
#[derive(Debug, Clone)]
struct Origin {
    key: &'static str,
    line: usize,
}

/// The line (from 1) of byte offset `at` in `text`.
pub(super) fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The configuration from `args` (as the command line gave them, with
/// `matches` saying which were given there) and the file `path` whose
/// contents are `text`: the file fills in what the command line did not
/// set, section by section, then everything is validated.
pub fn load(
    args: Args,
    matches: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let mut file: FileConfig = toml::from_str(text).map_err(|e| {
        let at = e.span().map(|s: Range<usize>| line_of(text, s.start));
        let mut message = e.message().to_string();
        message.retain(|c| c != '\n');
        ConfigError {
            flag: "--config",
            message,
            origin: Some(match at {
                Some(line) => format!("line {line} of {shown}"),
                None => shown.clone(),
            }),
        }
    })?;
    let mut f = Filler {
        args,
        matches,
        text,
        shown,
        origins: Vec::new(),
    };
    f.limits(&mut file)?;
    f.timeouts(&mut file)?;
    f.workers(&mut file)?;
    f.ring(&mut file)?;
    f.choices(&mut file)?;
    f.admin_and_log(&mut file)?;
    f.affinity(&mut file);
    f.listen(&mut file)?;
    f.upstreams(&mut file)?;
    f.routing(&mut file)?;
    let Filler {
        args,
        origins,
        shown,
        ..
    } = f;
    args.validate().map_err(|mut e| {
        if e.origin.is_none() {
            if let Some((_, o)) = origins.iter().find(|(flag, _)| *flag == e.flag) {
                e.origin = Some(format!("key `{}` (line {} of {shown})", o.key, o.line));
            }
        }
        e
    })
}

/// Fills [`Args`] from the file, key by key, where the command line left
/// a setting alone, and remembers where each came from.
struct Filler<'a> {
    args: Args,
    matches: &'a ArgMatches,
    text: &'a str,
    shown: String,
    /// flag -> where the file set it, for error messages.
    origins: Vec<(&'static str, Origin)>,
}

/// A whole number from the file as the flag's type, or what is wrong.
fn num<T: TryFrom<u64>>(n: u64) -> Result<T, String> {
    T::try_from(n).map_err(|_| format!("'{n}': too large"))
}

impl Filler<'_> {
    /// Whether the command line gave the setting (clap's id: the field).
    fn on_cli(&self, id: &str) -> bool {
        self.matches.value_source(id) == Some(ValueSource::CommandLine)
    }

    fn origin(&self, key: &str, span: &Range<usize>) -> String {
        format!(
            "key `{key}` (line {} of {})",
            line_of(self.text, span.start),
            self.shown
        )
    }

    /// Apply the file's `value` for `key` (flag `flag`, clap id `id`) with
    /// `set`, unless the command line gave the setting.
    fn take<T>(
        &mut self,
        value: Option<Spanned<T>>,
        id: &str,
        key: &'static str,
        flag: &'static str,
        set: impl FnOnce(&mut Args, T) -> Result<(), String>,
    ) -> Result<(), ConfigError> {
        let Some(v) = value else {
            return Ok(());
        };
        if self.on_cli(id) {
            return Ok(());
        }
        let span = v.span();
        set(&mut self.args, v.into_inner()).map_err(|message| ConfigError {
            flag,
            message,
            origin: Some(self.origin(key, &span)),
        })?;
        self.origins.push((
            flag,
            Origin {
                key,
                line: line_of(self.text, span.start),
            },
        ));
        Ok(())
    }

    /// A key whose value is one of the names of the flag's enum `E`.
    fn choice<E: clap::ValueEnum>(
        &mut self,
        value: Option<Spanned<String>>,
        id: &str,
        key: &'static str,
        flag: &'static str,
        expected: &'static str,
        set: impl FnOnce(&mut Args, E),
    ) -> Result<(), ConfigError> {
        self.take(value, id, key, flag, |a, v| {
            let e = E::from_str(&v, false).map_err(|_| format!("'{v}': expected {expected}"))?;
            set(a, e);
            Ok(())
        })
    }

    /// Sizes and counts.
    fn limits(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.count(
            f.pool_size.take(),
            ("pool_size", "pool_size", "--pool-size"),
            |a| &mut a.pool_size,
        )?;
        self.count(
            f.pipeline_depth.take(),
            ("pipeline_depth", "pipeline_depth", "--pipeline-depth"),
            |a| &mut a.pipeline_depth,
        )?;
        self.count(
            f.max_connections.take(),
            ("max_connections", "max_connections", "--max-connections"),
            |a| &mut a.max_connections,
        )?;
        self.count(
            f.max_head_size.take(),
            ("max_head_size", "max_head_size", "--max-head-size"),
            |a| &mut a.max_head_size,
        )?;
        self.count(
            f.max_headers.take(),
            ("max_headers", "max_headers", "--max-headers"),
            |a| &mut a.max_headers,
        )?;
        self.count(
            f.buffer_size.take(),
            ("buffer_size", "buffer_size", "--buffer-size"),
            |a| &mut a.buffer_size,
        )?;
        self.count(
            f.h2_max_streams.take(),
            ("h2_max_streams", "h2_max_streams", "--h2-max-streams"),
            |a| &mut a.h2_max_streams,
        )?;
        self.count(
            f.h2_stream_window.take(),
            ("h2_stream_window", "h2_stream_window", "--h2-stream-window"),
            |a| &mut a.h2_stream_window,
        )?;
        self.take(
            f.max_body_size.take(),
            "max_body_size",
            "max_body_size",
            "--max-body-size",
            |a, n| {
                a.max_body_size = n;
                Ok(())
            },
        )?;
        self.count(
            f.max_connecting.take(),
            ("max_connecting", "max_connecting", "--max-connecting"),
            |a| &mut a.max_connecting,
        )?;
        self.count(
            f.panic_threshold.take(),
            ("panic_threshold", "panic_threshold", "--panic-threshold"),
            |a| &mut a.panic_threshold,
        )?;
        self.count(
            f.max_idle.take(),
            ("max_idle", "max_idle", "--max-idle"),
            |a| &mut a.max_idle,
        )?;
        self.take(
            f.hash_balance.take(),
            "hash_balance",
            "hash_balance",
            "--hash-balance",
            |a, v| {
                a.hash_balance = v;
                Ok(())
            },
        )
    }

    /// A number of milliseconds for the field `field` picks.
    fn millis(
        &mut self,
        value: Option<Spanned<u64>>,
        id: &str,
        key: &'static str,
        flag: &'static str,
        field: fn(&mut Args) -> &mut u64,
    ) -> Result<(), ConfigError> {
        self.take(value, id, key, flag, |a, n| {
            *field(a) = n;
            Ok(())
        })
    }

    /// A whole number for the field `field` picks, in the field's type.
    fn count<T: TryFrom<u64>>(
        &mut self,
        value: Option<Spanned<u64>>,
        (id, key, flag): (&str, &'static str, &'static str),
        field: fn(&mut Args) -> &mut T,
    ) -> Result<(), ConfigError> {
        self.take(value, id, key, flag, |a, n| {
            *field(a) = num(n)?;
            Ok(())
        })
    }

    /// Timeouts and intervals (milliseconds, like their flags).
    fn timeouts(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.millis(
            f.connect_timeout.take(),
            "connect_timeout_ms",
            "connect_timeout",
            "--connect-timeout",
            |a| &mut a.connect_timeout_ms,
        )?;
        self.millis(
            f.response_timeout.take(),
            "response_timeout_ms",
            "response_timeout",
            "--response-timeout",
            |a| &mut a.response_timeout_ms,
        )?;
        self.millis(
            f.request_timeout.take(),
            "request_timeout_ms",
            "request_timeout",
            "--request-timeout",
            |a| &mut a.request_timeout_ms,
        )?;
        self.millis(
            f.client_header_timeout.take(),
            "client_header_timeout_ms",
            "client_header_timeout",
            "--client-header-timeout",
            |a| &mut a.client_header_timeout_ms,
        )?;
        self.millis(
            f.client_idle_timeout.take(),
            "client_idle_timeout_ms",
            "client_idle_timeout",
            "--client-idle-timeout",
            |a| &mut a.client_idle_timeout_ms,
        )?;
        self.millis(
            f.upstream_idle_timeout.take(),
            "upstream_idle_timeout_ms",
            "upstream_idle_timeout",
            "--upstream-idle-timeout",
            |a| &mut a.upstream_idle_timeout_ms,
        )?;
        self.millis(
            f.drain_timeout.take(),
            "drain_timeout_ms",
            "drain_timeout",
            "--drain-timeout",
            |a| &mut a.drain_timeout_ms,
        )?;
        self.millis(
            f.resolve_interval.take(),
            "resolve_interval_ms",
            "resolve_interval",
            "--resolve-interval",
            |a| &mut a.resolve_interval_ms,
        )?;
        self.take(
            f.queue_timeout.take(),
            "queue_timeout_ms",
            "queue_timeout",
            "--queue-timeout",
            |a, n| {
                a.queue_timeout_ms = Some(n);
                Ok(())
            },
        )
    }

    /// Workers and their scaling.
    fn workers(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.take(
            f.workers.take(),
            "workers",
            "workers",
            "--workers",
            |a, w| {
                a.workers = Some(match w {
                    Workers::Count(n) => n.to_string(),
                    Workers::Range(r) => r,
                });
                Ok(())
            },
        )?;
        self.take(
            f.scale_high.take(),
            "scale_high",
            "scale_high",
            "--scale-high",
            |a, v| {
                a.scale_high = v;
                Ok(())
            },
        )?;
        self.take(
            f.scale_low.take(),
            "scale_low",
            "scale_low",
            "--scale-low",
            |a, v| {
                a.scale_low = v;
                Ok(())
            },
        )?;
        self.take(
            f.scale_up_after.take(),
            "scale_up_after_ms",
            "scale_up_after",
            "--scale-up-after",
            |a, n| {
                a.scale_up_after_ms = n;
                Ok(())
            },
        )?;
        self.take(
            f.scale_down_after.take(),
            "scale_down_after_ms",
            "scale_down_after",
            "--scale-down-after",
            |a, n| {
                a.scale_down_after_ms = n;
                Ok(())
            },
        )?;
        Ok(())
    }

    /// Where the workers run and how their rings are set up.
    fn ring(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.take(f.pin.take(), "no_pin", "pin", "--no-pin", |a, pin| {
            a.no_pin = !pin;
            Ok(())
        })?;
        self.take(
            f.reuse_port_shared.take(),
            "reuse_port_shared",
            "reuse_port_shared",
            "--reuse-port-shared",
            |a, v| {
                a.reuse_port_shared = v;
                Ok(())
            },
        )?;
        self.take(f.accept.take(), "accept", "accept", "--accept", |a, v| {
            a.accept = match v.as_str() {
                "reuseport" => super::AcceptMode::Reuseport,
                "shared" => super::AcceptMode::Shared,
                other => return Err(format!("'{other}': expected reuseport or shared")),
            };
            Ok(())
        })?;
        self.count(
            f.ring_buffers.take(),
            ("ring_buffers", "ring_buffers", "--ring-buffers"),
            |a| &mut a.ring_buffers,
        )?;
        self.count(
            f.batch_wait.take(),
            ("batch_wait_us", "batch_wait", "--batch-wait"),
            |a| &mut a.batch_wait_us,
        )?;
        self.take(
            f.busy_poll.take(),
            "busy_poll_us",
            "busy_poll",
            "--busy-poll",
            |a, n| {
                a.busy_poll_us = num(n)?;
                Ok(())
            },
        )
    }

    /// Settings that are one of a few names, and `via`.
    fn choices(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.choice(
            f.balance.take(),
            "balance",
            "balance",
            "--balance",
            "wrr, least-conn, url-hash or random2",
            |a, v| a.balance = v,
        )?;
        self.choice(
            f.hash_key.take(),
            "hash_key",
            "hash_key",
            "--hash-key",
            "path or path+query",
            |a, v| a.hash_key = v,
        )?;
        self.choice(
            f.idle_reuse.take(),
            "idle_reuse",
            "idle_reuse",
            "--idle-reuse",
            "lifo or fifo",
            |a, v| a.idle_reuse = v,
        )?;
        self.choice(
            f.send_proxy.take(),
            "send_proxy",
            "send_proxy",
            "--send-proxy",
            "v1 or v2",
            |a, v| a.send_proxy = Some(v),
        )?;
        self.choice(
            f.upstream_protocol.take(),
            "upstream_protocol",
            "upstream_protocol",
            "--upstream-protocol",
            "http1 or h2",
            |a, v| a.upstream_protocol = v,
        )?;
        self.take(
            f.accept_proxy.take(),
            "accept_proxy",
            "accept_proxy",
            "--accept-proxy",
            |a, v| {
                a.accept_proxy = v;
                Ok(())
            },
        )?;
        self.take(
            f.dns_server.take(),
            "dns_server",
            "dns_server",
            "--dns-server",
            |a, v| {
                a.dns_server = Some(v);
                Ok(())
            },
        )?;
        self.take(
            f.tls_handshake_timeout.take(),
            "tls_handshake_timeout_ms",
            "tls_handshake_timeout",
            "--tls-handshake-timeout",
            |a, v| {
                a.tls_handshake_timeout_ms = v;
                Ok(())
            },
        )?;
        self.take(f.hsts.take(), "hsts", "hsts", "--hsts", |a, v| {
            a.hsts = v;
            Ok(())
        })?;
        self.take(
            f.tls_ticket_key_file.take(),
            "tls_ticket_key_file",
            "tls_ticket_key_file",
            "--tls-ticket-key-file",
            |a, v| {
                a.tls_ticket_key_file = Some(v.into());
                Ok(())
            },
        )?;
        self.take(
            f.upstream_tls.take(),
            "upstream_tls",
            "upstream_tls",
            "--upstream-tls",
            |a, v| {
                a.upstream_tls_file = crate::tls::upstream::UpstreamTlsSettings::from_toml(&v)?;
                Ok(())
            },
        )?;
        self.take(f.via.take(), "via", "via", "--via", |a, v| {
            a.via = v;
            Ok(())
        })
    }

    /// The admin port and the access log.
    fn admin_and_log(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        self.take(f.admin.take(), "admin", "admin", "--admin", |a, v| {
            a.admin = Some(v);
            Ok(())
        })?;
        self.take(
            f.admin_token_file.take(),
            "admin_token_file",
            "admin_token_file",
            "--admin-token-file",
            |a, v| {
                a.admin_token_file = Some(PathBuf::from(v));
                Ok(())
            },
        )?;
        self.take(
            f.admin_token_reads.take(),
            "admin_token_reads",
            "admin_token_reads",
            "--admin-token-reads",
            |a, v| {
                a.admin_token_reads = v;
                Ok(())
            },
        )?;
        self.take(
            f.admin_host.take(),
            "admin_host",
            "admin_host",
            "--admin-host",
            |a, v| {
                a.admin_host = v;
                Ok(())
            },
        )?;
        self.take(
            f.access_log.take(),
            "access_log",
            "access_log",
            "--access-log",
            |a, v| {
                a.access_log = Some(v);
                Ok(())
            },
        )?;
        self.choice(
            f.access_log_format.take(),
            "access_log_format",
            "access_log_format",
            "--access-log-format",
            "common, combined or json",
            |a, v| a.access_log_format = v,
        )
    }

    /// The `[affinity]` table: its presence turns cookie affinity on; each
    /// of its keys fills in what the command line did not give.
    fn affinity(&mut self, f: &mut FileConfig) {
        let Some(v) = f.affinity.take() else {
            return;
        };
        let span = v.span();
        let t = v.into_inner();
        if !self.on_cli("affinity") {
            self.args.affinity = super::AffinityMode::Cookie;
        }
        if let (Some(c), false) = (t.cookie, self.on_cli("affinity_cookie")) {
            self.args.affinity_cookie = c;
        }
        // A key file named on the command line wins over a key in the file.
        if t.key.is_some() && !self.on_cli("affinity_key_file") {
            self.args.affinity_key = t.key;
        }
        if let (Some(k), false) = (t.key_file, self.on_cli("affinity_key_file")) {
            self.args.affinity_key_file = Some(k);
        }
        if let (Some(m), false) = (t.max_age, self.on_cli("affinity_max_age_s")) {
            self.args.affinity_max_age_s = m;
        }
        if let (Some(s), false) = (t.secure, self.on_cli("affinity_secure")) {
            self.args.affinity_secure = s;
        }
        if let (Some(h), false) = (t.peer_header, self.on_cli("session_peer_header")) {
            self.args.session_peer_header = Some(h);
        }
        let line = line_of(self.text, span.start);
        for flag in [
            "--affinity",
            "--affinity-cookie",
            "--affinity-key-file",
            "--affinity-max-age",
            "--session-peer-header",
        ] {
            self.origins.push((
                flag,
                Origin {
                    key: "affinity",
                    line,
                },
            ));
        }
    }

    /// `listen`: one address, a list, or `[[listen]]` tables.
    fn listen(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        let Some(value) = f.listen.take() else {
            return Ok(());
        };
        let origin = self.origin("listen", &value.span());
        self.take(Some(value), "listen", "listen", "--listen", |a, v| {
            match v {
                ListenValue::Plain(v) => a.listen = v.into_vec(),
                ListenValue::Tables(tables) => {
                    let specs = tables
                        .into_iter()
                        .map(|t| t.into_spec().map(|s| (s, origin.clone())))
                        .collect::<Result<Vec<_>, _>>()?;
                    a.listen = specs.iter().map(|(s, _)| s.addr.clone()).collect();
                    a.listen_tables = Some(specs);
                }
            }
            Ok(())
        })
    }

    /// The `[[upstream]]` tables, as options the validation builds (and
    /// resolves) once each: unless the command line gave `--upstream`.
    fn upstreams(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        let Some(list) = f.upstream.take() else {
            return Ok(());
        };
        if self.on_cli("upstream") {
            return Ok(());
        }
        let mut tables = Vec::with_capacity(list.len());
        for u in list {
            let origin = format!(
                "an [[upstream]] (line {} of {})",
                line_of(self.text, u.span().start),
                self.shown
            );
            let u = u.into_inner();
            let addr = u.addr.clone();
            let options = u.into_options().map_err(|message| ConfigError {
                flag: "--upstream",
                message: format!("'{addr}': {message}"),
                origin: Some(origin.clone()),
            })?;
            tables.push((options, origin));
        }
        self.args.upstream_tables = Some(tables);
        Ok(())
    }
}

impl Filler<'_> {
    /// The `[[backend]]` and `[[route]]` tables and `default_backend`, each
    /// with where it is, for the validation to build (see
    /// `config::routing`).
    fn routing(&mut self, f: &mut FileConfig) -> Result<(), ConfigError> {
        let at = |kind: &str, start: usize| {
            format!(
                "a [[{kind}]] (line {} of {})",
                line_of(self.text, start),
                self.shown
            )
        };
        for b in f.backend.take().unwrap_or_default() {
            let origin = at("backend", b.span().start);
            self.args.routing.backends.push((b.into_inner(), origin));
        }
        for r in f.route.take().unwrap_or_default() {
            let origin = at("route", r.span().start);
            self.args.routing.routes.push((r.into_inner(), origin));
        }
        if let Some(d) = f.default_backend.take() {
            let origin = self.origin("default_backend", &d.span());
            self.args.routing.default_backend = Some((d.into_inner(), origin));
        }
        Ok(())
    }
}

/// Read `path` and [`load`] it.
pub fn read_and_load(args: Args, matches: &ArgMatches, path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        flag: "--config",
        message: format!("cannot read {}: {e}", path.display()),
        origin: None,
    })?;
    load(args, matches, path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    fn load_with(cli: &[&str], text: &str) -> Result<Config, ConfigError> {
        let argv = std::iter::once("ringmux").chain(cli.iter().copied());
        let matches = Args::command().try_get_matches_from(argv).unwrap();
        let args = Args::from_arg_matches(&matches).unwrap();
        load(args, &matches, Path::new("test.toml"), text)
    }

    #[test]
    fn every_key_reaches_the_config() {
        let cfg = load_with(
            &[],
            r#"
listen = "127.0.0.1:0"
workers = 3
pool_size = 7
pipeline_depth = 4
connect_timeout = 1500
response_timeout = 2500
request_timeout = 0
client_header_timeout = 900
client_idle_timeout = 800
upstream_idle_timeout = 700
max_connections = 99
max_head_size = 4096
max_headers = 50
buffer_size = 65536
max_body_size = 1000
max_connecting = 2
panic_threshold = 30
via = "edge"
batch_wait = 0
busy_poll = 0
pin = false
drain_timeout = 5000
resolve_interval = 0
ring_buffers = 256
accept = "reuseport"

[[upstream]]
addr = "127.0.0.1:9001"
weight = 3

[[upstream]]
addr = "127.0.0.1:9002"
max_conns = 5
"#,
        )
        .unwrap();
        assert_eq!(cfg.workers, 3);
        assert_eq!(cfg.pool_size, 7);
        assert_eq!(cfg.pipeline_depth, 4);
        assert_eq!(cfg.connect_timeout.as_millis(), 1500);
        assert_eq!(cfg.request_timeout, None);
        assert_eq!(cfg.client_idle_timeout.as_millis(), 800);
        assert_eq!(cfg.head_limits.bytes, 4096);
        assert_eq!(cfg.max_connecting, 2);
        assert_eq!(cfg.panic_threshold, 30);
        assert_eq!(cfg.via, Some("edge"));
        assert!(!cfg.pin);
        assert_eq!(cfg.drain_timeout.as_millis(), 5000);
        assert_eq!(cfg.resolve_interval, None);
        assert_eq!(cfg.ring_buffers, 256);
        assert_eq!(cfg.upstreams.len(), 2);
        assert_eq!(
            (cfg.upstreams[0].weight, cfg.upstreams[1].max_conns),
            (3, 5)
        );
        assert_ne!(cfg.upstreams[0].id, cfg.upstreams[1].id);
    }

    #[test]
    fn the_command_line_wins_key_by_key() {
        let cfg = load_with(
            &["--pool-size", "9", "--upstream", "127.0.0.1:7000"],
            "pool_size = 1\npipeline_depth = 2\n[[upstream]]\naddr = \"127.0.0.1:9001\"\n",
        )
        .unwrap();
        assert_eq!(cfg.pool_size, 9);
        assert_eq!(cfg.pipeline_depth, 2, "not on the command line: the file's");
        assert_eq!(cfg.upstreams.len(), 1);
        assert_eq!(cfg.upstreams[0].addr.port(), 7000);
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let e = load_with(
            &[],
            "[[upstream]]\naddr = \"127.0.0.1:9001\"\n\npipeline_depth = 0\n",
        );
        // `pipeline_depth` after a table belongs to the table: unknown key.
        let e = e.unwrap_err().to_string();
        assert!(e.contains("line 4") && e.contains("pipeline_depth"), "{e}");
        let e = load_with(
            &[],
            "pipeline_depth = 0\n[[upstream]]\naddr = \"127.0.0.1:1\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("key `pipeline_depth` (line 1 of test.toml)") && e.contains("at least 1"),
            "{e}"
        );
        let e = load_with(
            &[],
            "pool_size = 1\n\n[[upstream]]\naddr = \"127.0.0.1:1\"\nweight = 0\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && e.contains("weight"), "{e}");
        let e = load_with(&[], "pool_sise = 1\n").unwrap_err().to_string();
        assert!(e.contains("line 1") && e.contains("pool_sise"), "{e}");
        let e = load_with(&[], "workers = \"two\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }
}
