//! `[[backend]]` and `[[route]]` tables: named backends, each with its own
//! upstreams and balancing, and the routes that choose among them (see
//! `crate::routes`). The top-level upstreams, flags and keys are the backend
//! named `default`.
//!
//! ```toml
//! [[backend]]
//! name = "api"
//! balance = "least-conn"
//! [[backend.upstream]]
//! addr = "10.0.0.7:8000"
//!
//! [[route]]
//! host = "api.example.com"
//! path = "/v1"
//! backend = "api"
//! request_headers = { set = { "X-Env" = "prod" } }
//!
//! [[route]]
//! path = "/old"
//! redirect = { status = 301, path = "/new" }
//! ```
//!
//! The tables are read by the file's loader (with their lines) and
//! checked, resolved and built here, when the configuration is validated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::file::{duration, FileDuration, FileUpstream, OneOrMany};
use super::{err, ConfigError, UpstreamOptions};
use crate::routes::{Action, HeaderRules, HostPattern, PathPattern, Presence, Route, RouteTable};
use crate::spec::{
    BackendId, Balance, HashKey, IdleReuse, PolicyConfig, PoolSettings, ProxyVersion,
    UpstreamProtocol, UpstreamSpec,
};

/// A `[[backend]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBackend {
    name: String,
    upstream: Option<Vec<FileUpstream>>,
    balance: Option<String>,
    hash_key: Option<String>,
    hash_balance: Option<f64>,
    pool_size: Option<u64>,
    max_connecting: Option<u64>,
    idle_reuse: Option<String>,
    panic_threshold: Option<u64>,
    max_idle: Option<u64>,
    queue_timeout: Option<FileDuration>,
    send_proxy: Option<String>,
    tls: Option<toml::Value>,
    protocol: Option<String>,
}

/// A field or parameter condition: a value it must equal, or `true` for
/// present with any value.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Wanted {
    Value(String),
    Present(bool),
}

/// `request_headers` / `response_headers`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileHeaderRules {
    #[serde(default)]
    remove: Vec<String>,
    #[serde(default)]
    set: BTreeMap<String, String>,
    #[serde(default)]
    add: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRedirect {
    status: Option<u16>,
    scheme: Option<String>,
    host: Option<String>,
    path: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRespond {
    status: Option<u16>,
    body: Option<String>,
    content_type: Option<String>,
}

/// A `[[route]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileRoute {
    name: Option<String>,
    host: Option<OneOrMany>,
    path: Option<String>,
    path_exact: Option<String>,
    path_regex: Option<String>,
    method: Option<OneOrMany>,
    headers: Option<BTreeMap<String, Wanted>>,
    query: Option<BTreeMap<String, Wanted>>,
    sni: Option<OneOrMany>,
    backend: Option<String>,
    rewrite_prefix: Option<String>,
    strip_prefix: Option<bool>,
    redirect: Option<FileRedirect>,
    respond: Option<FileRespond>,
    request_headers: Option<FileHeaderRules>,
    response_headers: Option<FileHeaderRules>,
    response_timeout: Option<FileDuration>,
}

/// A backend as configured and checked: its upstreams resolved, its
/// balancing and pool settings its own (what it leaves out, the top-level
/// settings give).
#[derive(Debug, Clone)]
pub struct Backend {
    pub id: BackendId,
    pub name: Arc<str>,
    /// Where it was configured.
    pub origin: String,
    pub upstreams: Vec<UpstreamSpec>,
    pub policy: PolicyConfig,
    pub pool: PoolSettings,
    pub queue_timeout: Duration,
    /// A PROXY protocol header opens each connection to its upstreams.
    pub send_proxy: Option<ProxyVersion>,
    /// The `url-hash` table, when that is its policy (see
    /// `Config::with_hash_table`).
    pub hash_table: Option<Arc<crate::pool::maglev::Table>>,
}

/// The id of the backend named `name`: a hash of the name (0 is the
/// default backend's), so that a backend keeps it across reloads.
pub fn backend_id(name: &str) -> BackendId {
    if name == "default" {
        return BackendId::DEFAULT;
    }
    BackendId(crate::codec::path_hash(name.as_bytes()).max(1))
}

/// What the routing tables say, before they are checked.
#[derive(Debug, Clone, Default)]
pub struct RoutingTables {
    pub backends: Vec<(FileBackend, String)>,
    pub routes: Vec<(FileRoute, String)>,
    pub default_backend: Option<(String, String)>,
}

/// The defaults a backend takes from the top level.
pub(super) struct Defaults<'a> {
    pub policy: PolicyConfig,
    pub pool: PoolSettings,
    pub queue_timeout: Duration,
    pub response_timeout: Duration,
    /// The default backend has upstreams (or the demo origin).
    pub default_serves: bool,
    /// Where SRV records are asked for.
    pub dns: Option<std::net::SocketAddr>,
    pub tables: &'a RoutingTables,
}

/// A config error from a table at `origin`.
fn at(origin: &str, flag: &'static str, message: String) -> ConfigError {
    ConfigError {
        flag,
        message,
        origin: Some(origin.to_string()),
    }
}

/// The choice `text` of enum `E` (a flag's values), or what was expected.
fn choice<E: clap::ValueEnum>(key: &str, text: &str) -> Result<E, String> {
    E::from_str(text, false).map_err(|_| {
        let names: Vec<String> = E::value_variants()
            .iter()
            .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_string()))
            .collect();
        format!("{key} '{text}': expected one of {}", names.join(", "))
    })
}

impl FileBackend {
    fn build(self, origin: &str, d: &Defaults<'_>) -> Result<Backend, ConfigError> {
        let bad = |m: String| at(origin, "--config", format!("backend `{}`: {m}", self.name));
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !name_ok {
            return Err(bad("a name is letters, digits, - _ and . only".into()));
        }
        if self.name == "default" {
            return Err(bad(
                "`default` is the top-level upstreams and settings: name this one otherwise".into(),
            ));
        }
        let send_proxy = match &self.send_proxy {
            None => None,
            Some(v) => Some(choice::<ProxyVersion>("send_proxy", v).map_err(bad)?),
        };
        let mut upstreams = Vec::new();
        for u in self.upstream.clone().unwrap_or_default() {
            let addr = u.addr.clone();
            let specs = u
                .into_options()
                .and_then(|o: UpstreamOptions| o.build_all(d.dns))
                .map_err(|m| bad(format!("upstream '{addr}': {m}")))?;
            for spec in specs {
                if upstreams.iter().any(|v: &UpstreamSpec| v.addr == spec.addr) {
                    return Err(bad(format!("upstream '{addr}' is listed twice")));
                }
                upstreams.push(spec);
            }
        }
        if upstreams.is_empty() {
            return Err(bad("needs at least one [[backend.upstream]]".into()));
        }
        super::assign_ids(&mut upstreams, &[]);
        let mut policy = d.policy;
        if let Some(b) = &self.balance {
            policy.balance = choice::<Balance>("balance", b).map_err(bad)?;
        }
        if let Some(k) = &self.hash_key {
            policy.hash_key = choice::<HashKey>("hash_key", k).map_err(bad)?;
        }
        if let Some(h) = self.hash_balance {
            if !(h == 0.0 || (1.0..=100.0).contains(&h)) {
                return Err(bad(format!(
                    "hash_balance '{h}': 0 (off) or between 1 and 100"
                )));
            }
            policy.hash_balance = h;
        }
        let mut pool = d.pool;
        let count = |key: &str, v: Option<u64>, lo: u64, hi: u64| match v {
            Some(n) if !(lo..=hi).contains(&n) => {
                Err(bad(format!("{key} must be between {lo} and {hi}")))
            }
            other => Ok(other.map(|n| n as usize)),
        };
        if let Some(n) = count("pool_size", self.pool_size, 0, 1 << 20)? {
            pool.pool_size = n;
        }
        if let Some(n) = count("max_connecting", self.max_connecting, 1, 1 << 20)? {
            pool.max_connecting = n;
        }
        if let Some(n) = count("panic_threshold", self.panic_threshold, 0, 100)? {
            pool.panic_threshold = n as u8;
        }
        if let Some(n) = count("max_idle", self.max_idle, 0, 1 << 24)? {
            pool.max_idle = n;
        }
        if let Some(r) = &self.idle_reuse {
            pool.idle_reuse = choice::<IdleReuse>("idle_reuse", r).map_err(bad)?;
        }
        let queue_timeout = duration("queue_timeout", self.queue_timeout.clone())
            .map_err(bad)?
            .unwrap_or(d.queue_timeout);
        let protocol = match &self.protocol {
            None => UpstreamProtocol::Http1,
            Some(v) => choice::<UpstreamProtocol>("protocol", v).map_err(bad)?,
        };
        if protocol == UpstreamProtocol::H2 && send_proxy.is_some() {
            return Err(bad(
                "send_proxy cannot go with protocol = \"h2\": an HTTP/2 connection carries many clients' requests, and a PROXY header names one".into(),
            ));
        }
        for u in &mut upstreams {
            u.proxy = send_proxy;
            u.protocol = protocol;
        }
        if let Some(value) = &self.tls {
            let settings =
                crate::tls::upstream::UpstreamTlsSettings::from_toml(value).map_err(bad)?;
            if let Some(settings) = settings {
                let tls = crate::tls::upstream::UpstreamTls::build(settings)
                    .map_err(|m| bad(format!("tls: {m}")))?;
                crate::tls::upstream::attach(&tls, &mut upstreams).map_err(bad)?;
            }
        }
        Ok(Backend {
            id: backend_id(&self.name),
            name: self.name.as_str().into(),
            origin: origin.to_string(),
            upstreams,
            policy,
            pool,
            queue_timeout,
            send_proxy,
            hash_table: None,
        })
    }
}

/// A field name a header rule or condition may use.
fn field_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_!#$%&'*+.^`|~".contains(&b))
}

/// A value a header rule may write: visible text and spaces.
fn field_value(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b' ' || b == b'\t' || (b' '..=b'~').contains(&b))
}

fn rules(key: &str, r: Option<FileHeaderRules>) -> Result<HeaderRules, String> {
    let r = r.unwrap_or_default();
    for name in r.remove.iter().chain(r.set.keys()).chain(r.add.keys()) {
        if !field_name(name) {
            return Err(format!("{key}: '{name}' is not a field name"));
        }
        let lower = name.to_ascii_lowercase();
        let framing = [
            "content-length",
            "transfer-encoding",
            "connection",
            "host",
            "upgrade",
            "expect",
            "te",
            "trailer",
            "keep-alive",
            "proxy-connection",
        ];
        if framing.contains(&lower.as_str()) {
            return Err(format!(
                "{key}: '{name}' belongs to the proxy's framing and cannot be changed by a rule"
            ));
        }
    }
    for value in r.set.values().chain(r.add.values()) {
        if !field_value(value) {
            return Err(format!(
                "{key}: '{value}' is not a field value (no line breaks or controls)"
            ));
        }
    }
    let pairs =
        |m: BTreeMap<String, String>| m.into_iter().map(|(n, v)| (n.into(), v.into())).collect();
    Ok(HeaderRules {
        remove: r.remove.into_iter().map(Into::into).collect(),
        set: pairs(r.set),
        add: pairs(r.add),
    })
}

fn presences(m: Option<BTreeMap<String, Wanted>>, lower: bool) -> Result<Vec<Presence>, String> {
    let mut out = Vec::new();
    for (name, wanted) in m.unwrap_or_default() {
        let value = match wanted {
            Wanted::Value(v) => Some(v.into()),
            Wanted::Present(true) => None,
            Wanted::Present(false) => {
                return Err(format!(
                    "'{name}': a condition is a value or `true` (present)"
                ))
            }
        };
        let name = if lower {
            name.to_ascii_lowercase()
        } else {
            name
        };
        out.push(Presence {
            name: name.into(),
            value,
        });
    }
    Ok(out)
}

impl FileRoute {
    fn build(
        self,
        index: usize,
        origin: &str,
        backends: &[Backend],
        default_serves: bool,
    ) -> Result<Route, ConfigError> {
        let name = self
            .name
            .clone()
            .unwrap_or_else(|| format!("route{}", index + 1));
        let bad = |m: String| at(origin, "--config", format!("route `{name}`: {m}"));
        let name_ok = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if name.is_empty() || !name_ok {
            // (It is written into log lines and metric labels.)
            return Err(bad("a name is letters, digits, - _ and . only".into()));
        }
        let mut hosts = Vec::new();
        for h in self.host.map(OneOrMany::into_vec).unwrap_or_default() {
            hosts.push(HostPattern::parse(&h).map_err(bad)?);
        }
        let mut sni = Vec::new();
        for h in self.sni.map(OneOrMany::into_vec).unwrap_or_default() {
            sni.push(HostPattern::parse(&h).map_err(bad)?);
        }
        let path = match (self.path, self.path_exact, self.path_regex) {
            (None, None, None) => None,
            (Some(p), None, None) => Some(PathPattern::Prefix(
                path_text("path", &p).map_err(bad)?.into(),
            )),
            (None, Some(p), None) => Some(PathPattern::Exact(
                path_text("path_exact", &p).map_err(bad)?.into(),
            )),
            (None, None, Some(r)) => {
                Some(PathPattern::Regex(regex::Regex::new(&r).map_err(|e| {
                    let mut m = e.to_string();
                    m = m.lines().last().unwrap_or("").trim().to_string();
                    bad(format!("path_regex '{r}' does not compile: {m}"))
                })?))
            }
            _ => {
                return Err(bad(
                    "one of path, path_exact and path_regex, not several".into()
                ))
            }
        };
        let methods: Vec<Box<str>> = self
            .method
            .map(OneOrMany::into_vec)
            .unwrap_or_default()
            .into_iter()
            .map(|m| m.to_ascii_uppercase().into())
            .collect();
        if let Some(m) = methods.iter().find(|m| !field_name(m)) {
            return Err(bad(format!("method '{m}' is not a method name")));
        }
        let fields = presences(self.headers, true).map_err(bad)?;
        if let Some(f) = fields.iter().find(|f| !field_name(&f.name)) {
            return Err(bad(format!("headers: '{}' is not a field name", f.name)));
        }
        let query = presences(self.query, false).map_err(bad)?;
        let actions = [
            self.backend.is_some(),
            self.redirect.is_some(),
            self.respond.is_some(),
        ];
        let action = match (self.backend, self.redirect, self.respond) {
            (Some(b), None, None) => {
                let (backend, backend_name) = if b == "default" {
                    if !default_serves {
                        return Err(bad(
                            "backend `default` has no upstreams (none at the top level)".into(),
                        ));
                    }
                    (BackendId::DEFAULT, Arc::from("default"))
                } else {
                    backends
                        .iter()
                        .find(|x| *x.name == *b)
                        .map(|x| (x.id, x.name.clone()))
                        .ok_or_else(|| {
                            let known: Vec<&str> = backends.iter().map(|x| &*x.name).collect();
                            bad(format!(
                                "backend `{b}` is not configured (backends: {})",
                                if known.is_empty() {
                                    "none".to_string()
                                } else {
                                    known.join(", ")
                                }
                            ))
                        })?
                };
                let rewrite = match (self.rewrite_prefix, self.strip_prefix) {
                    (Some(_), Some(true)) => {
                        return Err(bad("rewrite_prefix or strip_prefix, not both".into()))
                    }
                    (Some(r), _) => Some(r),
                    (None, Some(true)) => Some(String::new()),
                    (None, _) => None,
                };
                if rewrite.is_some() && !matches!(path, Some(PathPattern::Prefix(_))) {
                    return Err(bad(
                        "rewrite_prefix and strip_prefix need a `path` prefix".into()
                    ));
                }
                if let Some(r) = &rewrite {
                    if !r.is_empty() {
                        path_text("rewrite_prefix", r).map_err(bad)?;
                    }
                }
                Action::Forward {
                    backend,
                    backend_name,
                    rewrite: rewrite.map(Into::into),
                }
            }
            (None, Some(r), None) => {
                let status = r.status.unwrap_or(302);
                if ![301, 302, 303, 307, 308].contains(&status) {
                    return Err(bad(format!(
                        "redirect status {status}: one of 301, 302, 303, 307, 308"
                    )));
                }
                if let Some(s) = &r.scheme {
                    if s != "http" && s != "https" {
                        return Err(bad(format!("redirect scheme '{s}': http or https")));
                    }
                }
                if let Some(h) = &r.host {
                    HostPattern::parse(h)
                        .ok()
                        .filter(|p| matches!(p, HostPattern::Exact(_)))
                        .ok_or_else(|| bad(format!("redirect host '{h}' is not a host name")))?;
                }
                if let Some(p) = &r.path {
                    path_text("redirect path", p).map_err(bad)?;
                }
                Action::Redirect {
                    status,
                    scheme: r.scheme.map(Into::into),
                    host: r.host.map(Into::into),
                    path: r.path.map(Into::into),
                }
            }
            (None, None, Some(r)) => {
                let status = r.status.unwrap_or(200);
                if !(200..=599).contains(&status) {
                    return Err(bad(format!("respond status {status}: between 200 and 599")));
                }
                if matches!(status, 204 | 304) && r.body.as_ref().is_some_and(|b| !b.is_empty()) {
                    return Err(bad(format!("respond status {status} has no body")));
                }
                let content_type = r.content_type.unwrap_or_else(|| "text/plain".into());
                if !field_value(&content_type) {
                    return Err(bad(format!(
                        "content_type '{content_type}' is not a field value"
                    )));
                }
                Action::Respond {
                    status,
                    content_type: content_type.into(),
                    body: r.body.unwrap_or_default().into_bytes().into(),
                }
            }
            _ if actions.iter().all(|a| !a) => {
                return Err(bad("needs an action: backend, redirect or respond".into()))
            }
            _ => return Err(bad("one action only: backend, redirect or respond".into())),
        };
        let request_headers = rules("request_headers", self.request_headers).map_err(bad)?;
        let response_headers = rules("response_headers", self.response_headers).map_err(bad)?;
        let response_timeout = duration("response_timeout", self.response_timeout).map_err(bad)?;
        if response_timeout.is_some_and(|t| t.is_zero() || t > Duration::from_secs(86_400)) {
            return Err(bad("response_timeout must be between 1 ms and a day".into()));
        }
        Ok(Route {
            name: name.as_str().into(),
            origin: origin.to_string(),
            hosts,
            path,
            methods,
            fields,
            query,
            sni,
            action,
            request_headers,
            response_headers,
            response_timeout,
        })
    }
}

/// A path as configured: starts with `/`, visible text only.
fn path_text<'p>(key: &str, p: &'p str) -> Result<&'p str, String> {
    if p.starts_with('/')
        && p.bytes()
            .all(|b| b.is_ascii_graphic() && b != b'?' && b != b'#')
    {
        Ok(p)
    } else {
        Err(format!(
            "{key} '{p}' must start with / and hold no spaces, controls, ? or #"
        ))
    }
}

/// The named backends and the route table the tables describe (None: no
/// routes, everything goes to the default backend).
pub(super) fn build(
    d: Defaults<'_>,
) -> Result<(Vec<Backend>, Option<Arc<RouteTable>>), ConfigError> {
    let mut backends: Vec<Backend> = Vec::new();
    for (b, origin) in &d.tables.backends {
        let backend = b.clone().build(origin, &d)?;
        if let Some(other) = backends
            .iter()
            .find(|x| x.name == backend.name || x.id == backend.id)
        {
            return Err(at(
                origin,
                "--config",
                format!(
                    "backend `{}` is configured twice (also {})",
                    backend.name, other.origin
                ),
            ));
        }
        backends.push(backend);
    }
    let fallback = match &d.tables.default_backend {
        Some((name, origin)) if name == "default" => {
            if !d.default_serves {
                return Err(at(
                    origin,
                    "--config",
                    "default_backend `default` has no upstreams".into(),
                ));
            }
            Some((BackendId::DEFAULT, Arc::from("default")))
        }
        Some((name, origin)) => Some(
            backends
                .iter()
                .find(|b| *b.name == **name)
                .map(|b| (b.id, b.name.clone()))
                .ok_or_else(|| {
                    at(
                        origin,
                        "--config",
                        format!("default_backend `{name}` is not configured"),
                    )
                })?,
        ),
        None => d
            .default_serves
            .then(|| (BackendId::DEFAULT, Arc::from("default"))),
    };
    if d.tables.routes.is_empty() {
        if let Some((name, origin)) = &d.tables.default_backend {
            if name != "default" {
                return Err(at(
                    origin,
                    "--config",
                    "default_backend needs [[route]] tables (without routes every request goes to the top-level upstreams)".into(),
                ));
            }
        }
        return Ok((backends, None));
    }
    let mut routes = Vec::new();
    for (i, (r, origin)) in d.tables.routes.iter().enumerate() {
        let route = r.clone().build(i, origin, &backends, d.default_serves)?;
        if routes.iter().any(|x: &Route| x.name == route.name) {
            return Err(at(
                origin,
                "--config",
                format!("route name `{}` is used twice", route.name),
            ));
        }
        routes.push(route);
    }
    let _ = d.response_timeout;
    let table = RouteTable::new(routes, fallback).map_err(|m| err("--config", m))?;
    Ok((backends, Some(Arc::new(table))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Args, Config};
    use clap::{CommandFactory, FromArgMatches};
    use std::path::Path;

    fn load(text: &str) -> Result<Config, ConfigError> {
        let matches = Args::command().try_get_matches_from(["ringmux"]).unwrap();
        let args = Args::from_arg_matches(&matches).unwrap();
        crate::config::file::load(args, &matches, Path::new("r.toml"), text)
    }

    const TWO: &str = r#"
[[upstream]]
addr = "127.0.0.1:7000"

[[backend]]
name = "api"
balance = "least-conn"
[[backend.upstream]]
addr = "127.0.0.1:7001"
weight = 3

[[route]]
name = "api"
host = ["api.example.com", "*.api.example.com"]
path = "/v1"
backend = "api"
strip_prefix = true
request_headers = { set = { "X-Env" = "prod" }, remove = ["X-Debug"] }

[[route]]
path_exact = "/old"
redirect = { status = 301, path = "/new" }

[[route]]
path = "/ping"
respond = { body = "pong\n" }
"#;

    #[test]
    fn backends_and_routes_are_built_with_their_settings() {
        let cfg = load(TWO).unwrap();
        assert_eq!(cfg.backends.len(), 1);
        let api = &cfg.backends[0];
        assert_eq!((&*api.name, api.upstreams[0].weight), ("api", 3));
        assert_eq!(api.policy.balance, Balance::LeastConn);
        assert_eq!(api.id, backend_id("api"));
        let routes = cfg.routes.as_ref().unwrap();
        assert_eq!(routes.routes().len(), 3);
        assert_eq!(&*routes.routes()[1].name, "route2");
        // Unmatched requests go to the top-level upstreams.
        assert_eq!(
            routes.fallback.as_ref().map(|f| f.0),
            Some(BackendId::DEFAULT)
        );
        assert_eq!(cfg.backend_list().len(), 2);
        assert_eq!(cfg.every_upstream().count(), 2);
    }

    #[test]
    fn mistakes_name_their_table_and_line() {
        let cases: &[(&str, &str)] = &[
            (
                "[[backend]]\nname = \"a\"\n[[backend.upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nbackend = \"b\"\n",
                "backend `b` is not configured",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\npath_regex = \"(\"\nbackend = \"default\"\n",
                "does not compile",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nbackend = \"default\"\n[[route]]\npath = \"/x\"\nbackend = \"default\"\n",
                "can never match",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\npath = \"/x\"\n",
                "needs an action",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nbackend = \"default\"\nrespond = {}\n",
                "one action only",
            ),
            (
                "[[backend]]\nname = \"a\"\n[[backend.upstream]]\naddr = \"127.0.0.1:1\"\n[[backend]]\nname = \"a\"\n[[backend.upstream]]\naddr = \"127.0.0.1:2\"\n",
                "configured twice",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nbackend = \"default\"\nrequest_headers = { set = { \"Content-Length\" = \"1\" } }\n",
                "framing",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nname = \"a b\"\nbackend = \"default\"\n",
                "a name is",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\npath = \"/x\"\nrespond = { status = 204, body = \"x\" }\n",
                "has no body",
            ),
            (
                "[[upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nhost = \"a.example:80\"\nbackend = \"default\"\n",
                "is a name",
            ),
        ];
        for (text, want) in cases {
            let e = load(text).expect_err(want);
            let shown = e.to_string();
            assert!(shown.contains(want), "{shown}");
            assert!(
                shown.contains("line ") && shown.contains("r.toml"),
                "{shown}"
            );
        }
    }

    #[test]
    fn without_top_level_upstreams_unmatched_requests_get_404() {
        let cfg = load(
            "[[backend]]\nname = \"a\"\n[[backend.upstream]]\naddr = \"127.0.0.1:1\"\n[[route]]\nhost = \"a.example\"\nbackend = \"a\"\n",
        )
        .unwrap();
        assert!(cfg.upstreams.is_empty());
        assert!(cfg.routes.unwrap().fallback.is_none());
    }
}
