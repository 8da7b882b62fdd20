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

use clap::parser::ValueSource;
use clap::ArgMatches;
use serde::Deserialize;
use toml::Spanned;

use super::{parse_upstream, Args, Config, ConfigError};

/// One value that is a single string or a list of them (`listen`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

/// `workers = 4` or `workers = "1..4"`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Workers {
    Count(u64),
    Range(String),
}

/// An `[[upstream]]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileUpstream {
    addr: String,
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

/// A duration key: milliseconds, or a string with a unit (`"10s"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum FileDuration {
    Millis(u64),
    Text(String),
}

impl std::fmt::Display for FileDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileDuration::Millis(n) => write!(f, "{n}"),
            FileDuration::Text(t) => f.write_str(t),
        }
    }
}

/// The file's keys. All optional: the command line and the defaults fill
/// in the rest.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<Spanned<OneOrMany>>,
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
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// The configuration from `args` (as the command line gave them, with
/// `matches` saying which were given there) and the file `path` whose
/// contents are `text`: the file fills in what the command line did not
/// set, then everything is validated.
pub fn load(
    mut args: Args,
    matches: &ArgMatches,
    path: &Path,
    text: &str,
) -> Result<Config, ConfigError> {
    let shown = path.display().to_string();
    let file: FileConfig = toml::from_str(text).map_err(|e| {
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
    let on_cli = |id: &str| matches.value_source(id) == Some(ValueSource::CommandLine);
    // flag -> where the file set it, for error messages.
    let mut origins: Vec<(&'static str, Origin)> = Vec::new();
    let mut note = |flag: &'static str, key: &'static str, span: Range<usize>| {
        origins.push((
            flag,
            Origin {
                key,
                line: line_of(text, span.start),
            },
        ));
    };

    macro_rules! number {
        ($field:ident, $key:literal, $flag:literal, $arg:ident, $ty:ty) => {
            if let Some(v) = file.$field {
                if !on_cli(stringify!($arg)) {
                    let span = v.span();
                    let n = *v.get_ref();
                    args.$arg = <$ty>::try_from(n).map_err(|_| ConfigError {
                        flag: $flag,
                        message: format!("'{n}': too large"),
                        origin: Some(format!(
                            "key `{}` (line {} of {shown})",
                            $key,
                            line_of(text, span.start)
                        )),
                    })?;
                    note($flag, $key, span);
                }
            }
        };
    }
    number!(pool_size, "pool_size", "--pool-size", pool_size, usize);
    number!(
        pipeline_depth,
        "pipeline_depth",
        "--pipeline-depth",
        pipeline_depth,
        usize
    );
    number!(
        connect_timeout,
        "connect_timeout",
        "--connect-timeout",
        connect_timeout_ms,
        u64
    );
    number!(
        response_timeout,
        "response_timeout",
        "--response-timeout",
        response_timeout_ms,
        u64
    );
    number!(
        request_timeout,
        "request_timeout",
        "--request-timeout",
        request_timeout_ms,
        u64
    );
    number!(
        client_header_timeout,
        "client_header_timeout",
        "--client-header-timeout",
        client_header_timeout_ms,
        u64
    );
    number!(
        client_idle_timeout,
        "client_idle_timeout",
        "--client-idle-timeout",
        client_idle_timeout_ms,
        u64
    );
    number!(
        upstream_idle_timeout,
        "upstream_idle_timeout",
        "--upstream-idle-timeout",
        upstream_idle_timeout_ms,
        u64
    );
    number!(
        max_connections,
        "max_connections",
        "--max-connections",
        max_connections,
        usize
    );
    number!(
        max_head_size,
        "max_head_size",
        "--max-head-size",
        max_head_size,
        usize
    );
    number!(
        max_headers,
        "max_headers",
        "--max-headers",
        max_headers,
        usize
    );
    number!(
        buffer_size,
        "buffer_size",
        "--buffer-size",
        buffer_size,
        usize
    );
    number!(
        max_body_size,
        "max_body_size",
        "--max-body-size",
        max_body_size,
        u64
    );
    number!(
        max_connecting,
        "max_connecting",
        "--max-connecting",
        max_connecting,
        usize
    );
    number!(
        panic_threshold,
        "panic_threshold",
        "--panic-threshold",
        panic_threshold,
        u8
    );
    number!(max_idle, "max_idle", "--max-idle", max_idle, usize);
    number!(batch_wait, "batch_wait", "--batch-wait", batch_wait_us, u32);
    number!(busy_poll, "busy_poll", "--busy-poll", busy_poll_us, u32);
    number!(
        drain_timeout,
        "drain_timeout",
        "--drain-timeout",
        drain_timeout_ms,
        u64
    );
    number!(
        resolve_interval,
        "resolve_interval",
        "--resolve-interval",
        resolve_interval_ms,
        u64
    );
    number!(
        ring_buffers,
        "ring_buffers",
        "--ring-buffers",
        ring_buffers,
        u16
    );
    if let Some(v) = file.workers {
        if !on_cli("workers") {
            let span = v.span();
            args.workers = Some(match v.into_inner() {
                Workers::Count(n) => n.to_string(),
                Workers::Range(r) => r,
            });
            note("--workers", "workers", span);
        }
    }
    if let Some(v) = file.via {
        if !on_cli("via") {
            let span = v.span();
            args.via = v.into_inner();
            note("--via", "via", span);
        }
    }
    if let Some(v) = file.pin {
        if !on_cli("no_pin") {
            let span = v.span();
            args.no_pin = !*v.get_ref();
            note("--no-pin", "pin", span);
        }
    }
    if let Some(v) = file.reuse_port_shared {
        if !on_cli("reuse_port_shared") {
            let span = v.span();
            args.reuse_port_shared = *v.get_ref();
            note("--reuse-port-shared", "reuse_port_shared", span);
        }
    }
    if let Some(v) = file.accept {
        if !on_cli("accept") {
            let span = v.span();
            let line = line_of(text, span.start);
            args.accept = match v.get_ref().as_str() {
                "reuseport" => super::AcceptMode::Reuseport,
                "shared" => super::AcceptMode::Shared,
                other => {
                    return Err(ConfigError {
                        flag: "--accept",
                        message: format!("'{other}': expected reuseport or shared"),
                        origin: Some(format!("key `accept` (line {line} of {shown})")),
                    })
                }
            };
            note("--accept", "accept", span);
        }
    }
    macro_rules! text {
        ($field:ident, $key:literal, $flag:literal) => {
            if let Some(v) = file.$field {
                if !on_cli(stringify!($field)) {
                    let span = v.span();
                    args.$field = Some(v.into_inner());
                    note($flag, $key, span);
                }
            }
        };
    }
    text!(admin, "admin", "--admin");
    if let Some(v) = file.admin_token_file {
        if !on_cli("admin_token_file") {
            let span = v.span();
            args.admin_token_file = Some(PathBuf::from(v.into_inner()));
            note("--admin-token-file", "admin_token_file", span);
        }
    }
    if let Some(v) = file.admin_token_reads {
        if !on_cli("admin_token_reads") {
            let span = v.span();
            args.admin_token_reads = *v.get_ref();
            note("--admin-token-reads", "admin_token_reads", span);
        }
    }
    if let Some(v) = file.admin_host {
        if !on_cli("admin_host") {
            let span = v.span();
            args.admin_host = v.into_inner();
            note("--admin-host", "admin_host", span);
        }
    }
    text!(access_log, "access_log", "--access-log");
    // A key whose value is one of a flag's names.
    macro_rules! choice {
        ($field:ident, $key:literal, $flag:literal, $ty:ty, $expected:literal) => {
            if let Some(v) = file.$field {
                if !on_cli(stringify!($field)) {
                    let span = v.span();
                    let line = line_of(text, span.start);
                    args.$field =
                        <$ty as clap::ValueEnum>::from_str(v.get_ref(), false).map_err(|_| {
                            ConfigError {
                                flag: $flag,
                                message: format!("'{}': expected {}", v.get_ref(), $expected),
                                origin: Some(format!("key `{}` (line {line} of {shown})", $key)),
                            }
                        })?;
                    note($flag, $key, span);
                }
            }
        };
    }
    choice!(
        access_log_format,
        "access_log_format",
        "--access-log-format",
        crate::access_log::Format,
        "common, combined or json"
    );
    choice!(
        balance,
        "balance",
        "--balance",
        crate::spec::Balance,
        "wrr, least-conn, url-hash or random2"
    );
    choice!(
        hash_key,
        "hash_key",
        "--hash-key",
        crate::spec::HashKey,
        "path or path+query"
    );
    choice!(
        idle_reuse,
        "idle_reuse",
        "--idle-reuse",
        crate::spec::IdleReuse,
        "lifo or fifo"
    );
    if let Some(v) = file.hash_balance {
        if !on_cli("hash_balance") {
            let span = v.span();
            args.hash_balance = *v.get_ref();
            note("--hash-balance", "hash_balance", span);
        }
    }
    for (field, key, flag, target) in [
        (
            file.scale_high,
            "scale_high",
            "--scale-high",
            &mut args.scale_high,
        ),
        (
            file.scale_low,
            "scale_low",
            "--scale-low",
            &mut args.scale_low,
        ),
    ] {
        if let Some(v) = field {
            if !on_cli(key) {
                let span = v.span();
                *target = *v.get_ref();
                note(flag, key, span);
            }
        }
    }
    number!(
        scale_up_after,
        "scale_up_after",
        "--scale-up-after",
        scale_up_after_ms,
        u64
    );
    number!(
        scale_down_after,
        "scale_down_after",
        "--scale-down-after",
        scale_down_after_ms,
        u64
    );
    if let Some(v) = file.affinity {
        let span = v.span();
        let a = v.into_inner();
        if !on_cli("affinity") {
            args.affinity = super::AffinityMode::Cookie;
        }
        if let (Some(c), false) = (a.cookie, on_cli("affinity_cookie")) {
            args.affinity_cookie = c;
        }
        // A key file named on the command line wins over a key in the file.
        if a.key.is_some() && !on_cli("affinity_key_file") {
            args.affinity_key = a.key;
        }
        if let (Some(k), false) = (a.key_file, on_cli("affinity_key_file")) {
            args.affinity_key_file = Some(k);
        }
        if let (Some(m), false) = (a.max_age, on_cli("affinity_max_age_s")) {
            args.affinity_max_age_s = m;
        }
        if let (Some(s), false) = (a.secure, on_cli("affinity_secure")) {
            args.affinity_secure = s;
        }
        if let (Some(h), false) = (a.peer_header, on_cli("session_peer_header")) {
            args.session_peer_header = Some(h);
        }
        for flag in [
            "--affinity",
            "--affinity-cookie",
            "--affinity-key-file",
            "--affinity-max-age",
            "--session-peer-header",
        ] {
            note(flag, "affinity", span.clone());
        }
    }
    if let Some(v) = file.queue_timeout {
        if !on_cli("queue_timeout_ms") {
            let span = v.span();
            args.queue_timeout_ms = Some(*v.get_ref());
            note("--queue-timeout", "queue_timeout", span);
        }
    }
    if let Some(v) = file.listen {
        if !on_cli("listen") {
            let span = v.span();
            args.listen = v.into_inner().into_vec();
            note("--listen", "listen", span);
        }
    }
    if let Some(list) = file.upstream {
        if !on_cli("upstream") {
            args.upstream.clear();
            for u in list {
                let line = line_of(text, u.span().start);
                let u = u.into_inner();
                let mut spec = u.addr.clone();
                if let Some(w) = u.weight {
                    spec.push_str(&format!(",weight={w}"));
                }
                let numbers = [
                    ("max_conns", u.max_conns),
                    ("max_queue", u.max_queue),
                    ("fall", u.fall),
                    ("rise", u.rise),
                    ("warm_conns", u.warm_conns),
                ];
                for (key, value) in numbers {
                    if let Some(n) = value {
                        spec.push_str(&format!(",{key}={n}"));
                    }
                }
                let durations = [
                    ("interval", &u.interval),
                    ("timeout", &u.timeout),
                    ("slow_start", &u.slow_start),
                ];
                for (key, value) in durations {
                    if let Some(d) = value {
                        spec.push_str(&format!(",{key}={d}"));
                    }
                }
                let paths = [
                    ("health_check", &u.health_check),
                    ("warmup_check", &u.warmup_check),
                ];
                for (key, value) in paths {
                    if let Some(path) = value {
                        spec.push_str(&format!(",{key}={path}"));
                    }
                }
                // Checked one by one here, so an error names its table.
                parse_upstream(&spec).map_err(|mut e| {
                    e.origin = Some(format!("an [[upstream]] (line {line} of {shown})"));
                    e
                })?;
                args.upstream.push(spec);
            }
        }
    }
    args.validate().map_err(|mut e| {
        if let Some((_, o)) = origins.iter().find(|(flag, _)| *flag == e.flag) {
            e.origin = Some(format!("key `{}` (line {} of {shown})", o.key, o.line));
        }
        e
    })
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
