//! Routes: which backend a request goes to, or which answer ringmux gives
//! itself, chosen from the request's host, path, method, fields and query;
//! with the path rewrite, header rules and timeout that go with the route.
//!
//! Routes are tried in order; the first whose every condition holds wins.
//! Looking one up does not grow with the number of routes that name hosts:
//! exact hosts are keys of a map, wildcards (`*.example.com`) keys of
//! another by their suffix, so a request looks at the routes for its own
//! host, its parent domains and the routes with no host condition, merged
//! back into their order.
//!
//! Built once per configuration (a reload builds a new table); consulted by
//! each client session as it reads a request head. No I/O, no clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::spec::BackendId;

/// A host condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// This host, case-insensitive (stored lowercase).
    Exact(Box<str>),
    /// Any host under this domain: `*.example.com` is stored as
    /// `.example.com` and matches `a.example.com` and `a.b.example.com`,
    /// not `example.com`.
    Suffix(Box<str>),
}

impl HostPattern {
    /// `example.com` or `*.example.com`.
    pub fn parse(text: &str) -> Result<HostPattern, String> {
        let lower = text.trim().to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b));
        let dotted = name.starts_with('.') || name.ends_with('.') || name.contains("..");
        if !valid || dotted || name.contains('*') || name.contains(':') && !name.starts_with('[') {
            return Err(format!(
                "'{text}': a host is a name (`api.example.com`) or a wildcard for the names under one (`*.example.com`)"
            ));
        }
        Ok(if wild {
            HostPattern::Suffix(format!(".{name}").into())
        } else {
            HostPattern::Exact(name.into())
        })
    }

    fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => **h == *host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(&**s),
        }
    }

    /// Every host this one matches, the other matches too.
    fn covers(&self, other: &HostPattern) -> bool {
        match (self, other) {
            (_, HostPattern::Exact(h)) => self.matches(h),
            (HostPattern::Suffix(s), HostPattern::Suffix(t)) => t.ends_with(&**s),
            (HostPattern::Exact(_), HostPattern::Suffix(_)) => false,
        }
    }
}

/// A path condition (the path is the target up to `?`, as received).
#[derive(Debug, Clone)]
pub enum PathPattern {
    /// This path exactly.
    Exact(Box<str>),
    /// This path and everything below it, on segment boundaries: `/api`
    /// matches `/api`, `/api/` and `/api/v1`, not `/apis`; `/api/` matches
    /// `/api/v1`, not `/api`.
    Prefix(Box<str>),
    /// A regular expression (the `regex` crate's syntax, unanchored unless
    /// it says `^`/`$`).
    Regex(regex::Regex),
}

impl PathPattern {
    fn matches(&self, path: &[u8]) -> bool {
        match self {
            PathPattern::Exact(p) => p.as_bytes() == path,
            PathPattern::Prefix(p) => prefix_matches(p, path),
            PathPattern::Regex(r) => std::str::from_utf8(path).is_ok_and(|p| r.is_match(p)),
        }
    }

    /// Every path this one matches, the other matches too (false where that
    /// cannot be told: regular expressions).
    fn covers(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (PathPattern::Regex(_), _) | (_, PathPattern::Regex(_)) => false,
            (_, PathPattern::Exact(p)) => self.matches(p.as_bytes()),
            // Every path under `q` starts with `q`, and `p` ends on a
            // boundary within `q` (or is `q`).
            (PathPattern::Prefix(p), PathPattern::Prefix(q)) => prefix_matches(p, q.as_bytes()),
            (PathPattern::Exact(_), PathPattern::Prefix(_)) => false,
        }
    }

    fn same(&self, other: &PathPattern) -> bool {
        match (self, other) {
            (PathPattern::Exact(a), PathPattern::Exact(b)) => a == b,
            (PathPattern::Prefix(a), PathPattern::Prefix(b)) => a == b,
            (PathPattern::Regex(a), PathPattern::Regex(b)) => a.as_str() == b.as_str(),
            _ => false,
        }
    }
}

/// `prefix` matches `path` on a segment boundary.
fn prefix_matches(prefix: &str, path: &[u8]) -> bool {
    path.starts_with(prefix.as_bytes())
        && (prefix.ends_with('/') || path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// A field or query parameter that must be present, or equal to a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// The name (a field's lowercase; a query parameter's as written).
    pub name: Box<str>,
    /// The value it must have (None: any).
    pub value: Option<Box<str>>,
}

/// What a route does with a request it matches.
#[derive(Debug, Clone)]
pub enum Action {
    /// Send it to a backend; with `rewrite`, the part of the path the
    /// route's prefix matched is replaced by it first.
    Forward {
        backend: BackendId,
        /// The backend's name, for the log and the figures.
        backend_name: Arc<str>,
        rewrite: Option<Box<str>>,
    },
    /// Answer with a redirect (301, 302, 307 or 308) to the request's own
    /// URL with what is given here replaced (the query is kept).
    Redirect {
        status: u16,
        scheme: Option<Box<str>>,
        host: Option<Box<str>>,
        path: Option<Box<str>>,
    },
    /// Answer `status` with `body` (of `content_type`) without an origin.
    Respond {
        status: u16,
        content_type: Box<str>,
        body: Box<[u8]>,
    },
}

/// Fields to remove, set (replacing any of that name) and add, in that
/// order, on a request or a response head.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderRules {
    pub remove: Vec<Box<str>>,
    pub set: Vec<(Box<str>, Box<str>)>,
    pub add: Vec<(Box<str>, Box<str>)>,
}

impl HeaderRules {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    /// Apply the rules to the head that starts at `head[from..]` (start
    /// line, fields, blank line; nothing after it).
    pub fn apply(&self, head: &mut Vec<u8>, from: usize) {
        if self.is_empty() {
            return;
        }
        let gone = |name: &[u8]| {
            self.remove
                .iter()
                .chain(self.set.iter().map(|(n, _)| n))
                .any(|r| r.as_bytes().eq_ignore_ascii_case(name))
        };
        // Keep the start line; copy the fields that stay.
        let start_line = find_crlf(&head[from..]).map_or(head.len(), |i| from + i + 2);
        let mut kept = Vec::with_capacity(head.len() - from + 64);
        let mut at = start_line;
        while let Some(end) = find_crlf(&head[at..]).map(|i| at + i) {
            if end == at {
                break; // the blank line
            }
            let line = &head[at..end];
            let name = line.split(|&b| b == b':').next().unwrap_or(line);
            if !gone(name) {
                kept.extend_from_slice(&head[at..end + 2]);
            }
            at = end + 2;
        }
        for (name, value) in self.set.iter().chain(&self.add) {
            kept.extend_from_slice(name.as_bytes());
            kept.extend_from_slice(b": ");
            kept.extend_from_slice(value.as_bytes());
            kept.extend_from_slice(b"\r\n");
        }
        kept.extend_from_slice(b"\r\n");
        head.truncate(start_line);
        head.extend_from_slice(&kept);
    }
}

fn find_crlf(b: &[u8]) -> Option<usize> {
    b.windows(2).position(|w| w == b"\r\n")
}

/// One `[[route]]`.
#[derive(Debug)]
pub struct Route {
    /// What status pages, metrics and the access log call it.
    pub name: Arc<str>,
    /// Where it was configured (for messages).
    pub origin: String,
    /// Any of these hosts (none: any host).
    pub hosts: Vec<HostPattern>,
    pub path: Option<PathPattern>,
    /// Any of these methods (none: any).
    pub methods: Vec<Box<str>>,
    /// Every one of these fields.
    pub fields: Vec<Presence>,
    /// Every one of these query parameters.
    pub query: Vec<Presence>,
    /// Over TLS, any of these server names (none: any, or no TLS).
    pub sni: Vec<HostPattern>,
    pub action: Action,
    pub request_headers: HeaderRules,
    pub response_headers: HeaderRules,
    /// The first byte of the response is due this long after the request
    /// went out (instead of `--response-timeout`).
    pub response_timeout: Option<Duration>,
}

/// What a route is matched against: parts of the head as forwarded.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a [u8],
    /// The `Host` value (or an absolute-form target's authority).
    pub host: Option<&'a [u8]>,
    /// The origin-form target, query included.
    pub target: &'a [u8],
    /// The whole head, for field conditions.
    pub head: &'a [u8],
    /// The TLS server name (lowercase), over TLS.
    pub sni: Option<&'a str>,
}

impl Request<'_> {
    fn path(&self) -> &[u8] {
        let end = self
            .target
            .iter()
            .position(|&b| b == b'?')
            .unwrap_or(self.target.len());
        &self.target[..end]
    }

    fn query(&self) -> &[u8] {
        match self.target.iter().position(|&b| b == b'?') {
            Some(q) => &self.target[q + 1..],
            None => b"",
        }
    }

    /// Whether the head has field `p` (with its value, if given).
    fn has_field(&self, p: &Presence) -> bool {
        self.head.split(|&b| b == b'\n').skip(1).any(|line| {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                return false;
            };
            line[..colon].eq_ignore_ascii_case(p.name.as_bytes())
                && p.value
                    .as_ref()
                    .is_none_or(|v| line[colon + 1..].trim_ascii() == v.as_bytes())
        })
    }

    /// Whether the query has parameter `p` (with its value, if given).
    fn has_param(&self, p: &Presence) -> bool {
        self.query().split(|&b| b == b'&').any(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(eq) => (&pair[..eq], Some(&pair[eq + 1..])),
                None => (pair, None),
            };
            name == p.name.as_bytes()
                && p.value.as_ref().is_none_or(|v| value == Some(v.as_bytes()))
        })
    }
}

impl Route {
    /// Whether every condition but the host holds for `req` (whose path is
    /// `path`, normalised).
    fn matches_rest(&self, req: &Request<'_>, path: &[u8]) -> bool {
        self.path.as_ref().is_none_or(|p| p.matches(path))
            && (self.methods.is_empty() || self.methods.iter().any(|m| m.as_bytes() == req.method))
            && self.fields.iter().all(|f| req.has_field(f))
            && self.query.iter().all(|q| req.has_param(q))
            && (self.sni.is_empty()
                || req
                    .sni
                    .is_some_and(|name| self.sni.iter().any(|p| p.matches(name))))
    }

    /// Every request this route matches, `other` matches too: `other`
    /// after it can never be chosen.
    fn covers(&self, other: &Route) -> bool {
        let hosts = self.hosts.is_empty()
            || !other.hosts.is_empty()
                && other
                    .hosts
                    .iter()
                    .all(|h| self.hosts.iter().any(|s| s.covers(h)));
        let path = match (&self.path, &other.path) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(p), Some(q)) => p.covers(q) || p.same(q),
        };
        let methods = self.methods.is_empty()
            || !other.methods.is_empty() && other.methods.iter().all(|m| self.methods.contains(m));
        let fields = self.fields.iter().all(|f| other.fields.contains(f))
            && (self.sni.is_empty() || self.sni == other.sni);
        let query = self.query.iter().all(|q| other.query.contains(q));
        hosts && path && methods && fields && query
    }

    /// The path as forwarded, with the matched prefix replaced by the
    /// route's rewrite (None: the path stays).
    pub fn rewritten_target(&self, target: &[u8]) -> Option<Vec<u8>> {
        let Action::Forward {
            rewrite: Some(to), ..
        } = &self.action
        else {
            return None;
        };
        let Some(PathPattern::Prefix(prefix)) = &self.path else {
            return None;
        };
        let mut rest = target.get(prefix.len()..)?;
        if to.ends_with('/') && rest.starts_with(b"/") {
            rest = &rest[1..];
        }
        let mut out = Vec::with_capacity(to.len() + rest.len() + 1);
        out.extend_from_slice(to.as_bytes());
        if !rest.is_empty()
            && !rest.starts_with(b"/")
            && !rest.starts_with(b"?")
            && !to.ends_with('/')
        {
            out.push(b'/');
        }
        out.extend_from_slice(rest);
        if out.first() != Some(&b'/') {
            out.insert(0, b'/');
        }
        Some(out)
    }
}

/// Routes, indexed by host.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
    exact: HashMap<Box<str>, Vec<u32>>,
    suffix: HashMap<Box<str>, Vec<u32>>,
    any_host: Vec<u32>,
    /// Where a request no route matched goes, and that backend's name
    /// (None: answered 404).
    pub fallback: Option<(BackendId, Arc<str>)>,
}

/// The most parent domains a host is looked up under (its last levels:
/// `*.example.com` is found for a name of any depth under it).
const MAX_LEVELS: usize = 16;

impl RouteTable {
    /// The table for `routes` (in order) and `fallback`; an error names a
    /// route that can never match (an earlier one takes all it would).
    pub fn new(
        routes: Vec<Route>,
        fallback: Option<(BackendId, Arc<str>)>,
    ) -> Result<RouteTable, String> {
        let mut t = RouteTable {
            fallback,
            ..RouteTable::default()
        };
        for (i, r) in routes.into_iter().enumerate() {
            // Only the routes that can match one of its hosts can take all
            // it would match: those are compared (a table of 10,000 host
            // routes is checked in linear time).
            if let Some(earlier) = t
                .rivals(&r)
                .into_iter()
                .map(|e| &t.routes[e as usize])
                .find(|e| e.covers(&r))
            {
                return Err(format!(
                    "route `{}` ({}) can never match: route `{}` ({}) before it matches every request it would",
                    r.name, r.origin, earlier.name, earlier.origin
                ));
            }
            let i = i as u32;
            if r.hosts.is_empty() {
                t.any_host.push(i);
            }
            for h in &r.hosts {
                let (map, key) = match h {
                    HostPattern::Exact(k) => (&mut t.exact, k),
                    HostPattern::Suffix(k) => (&mut t.suffix, k),
                };
                let list = map.entry(key.clone()).or_default();
                if list.last() != Some(&i) {
                    list.push(i);
                }
            }
            t.routes.push(Arc::new(r));
        }
        Ok(t)
    }

    /// The routes already in the table that may match a request `r` would:
    /// those with no host, or a host of `r`'s, or a wildcard above one.
    fn rivals(&self, r: &Route) -> Vec<u32> {
        if r.hosts.is_empty() {
            return (0..self.routes.len() as u32).collect();
        }
        let mut out = self.any_host.clone();
        for h in &r.hosts {
            let name = match h {
                HostPattern::Exact(n) => {
                    out.extend(self.exact.get(n).into_iter().flatten());
                    &**n
                }
                HostPattern::Suffix(s) => {
                    out.extend(self.suffix.get(s).into_iter().flatten());
                    &s[1..]
                }
            };
            for (at, _) in name.rmatch_indices('.') {
                out.extend(self.suffix.get(&name[at..]).into_iter().flatten());
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The routes, in order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The first route that matches `req`, if any.
    pub fn select(&self, req: &Request<'_>) -> Option<&Arc<Route>> {
        let mut lower = [0u8; 256];
        let host = req.host.and_then(|h| normal_host(h, &mut lower));
        // The lists of routes that may match, each in route order.
        let mut lists: [&[u32]; MAX_LEVELS + 2] = [&[]; MAX_LEVELS + 2];
        let mut n = 0;
        lists[n] = &self.any_host;
        n += 1;
        if let Some(host) = host {
            if let Some(l) = self.exact.get(host) {
                lists[n] = l;
                n += 1;
            }
            if !self.suffix.is_empty() {
                // The last levels first: a deep name still meets the
                // wildcards of its domain.
                for (at, _) in host.rmatch_indices('.').take(MAX_LEVELS) {
                    if let Some(l) = self.suffix.get(&host[at..]) {
                        lists[n] = l;
                        n += 1;
                    }
                }
            }
        }
        // Paths are compared as the origin will read them: `//`, `.` and
        // `..` segments resolved and unreserved characters decoded, so that
        // `/%61dmin` or `/x/../admin` cannot pass a route for `/admin`.
        let path = normal_path(req.path());
        // Merge the lists back into route order; the first that matches wins.
        let mut heads = [0usize; MAX_LEVELS + 2];
        loop {
            let mut best: Option<(u32, usize)> = None;
            for (k, list) in lists[..n].iter().enumerate() {
                if let Some(&i) = list.get(heads[k]) {
                    if best.is_none_or(|(b, _)| i < b) {
                        best = Some((i, k));
                    }
                }
            }
            let (i, k) = best?;
            heads[k] += 1;
            let route = &self.routes[i as usize];
            if route.matches_rest(req, &path) {
                return Some(route);
            }
        }
    }
}

/// `path` with percent-escapes of unreserved characters decoded, empty and
/// `.` segments dropped and `..` segments resolved (borrowed when it has
/// none of those).
fn normal_path(path: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    let plain = !path.contains(&b'%') && !path.windows(2).any(|w| w == b"//" || w == b"/.");
    if plain {
        return std::borrow::Cow::Borrowed(path);
    }
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut decoded = Vec::with_capacity(path.len());
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            if let (Some(h), Some(l)) = (hex(path[i + 1]), hex(path[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    decoded.push(c);
                    i += 3;
                    continue;
                }
            }
        }
        decoded.push(path[i]);
        i += 1;
    }
    let mut segments: Vec<&[u8]> = Vec::new();
    for seg in decoded.split(|&b| b == b'/') {
        match seg {
            b"" | b"." => {}
            b".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    let mut out = Vec::with_capacity(decoded.len());
    for s in &segments {
        out.push(b'/');
        out.extend_from_slice(s);
    }
    if out.is_empty() || decoded.ends_with(b"/") {
        out.push(b'/');
    }
    std::borrow::Cow::Owned(out)
}

/// `host` lowercased into `buf`, without its port or a final dot; None if
/// it does not fit or is not text.
pub(crate) fn normal_host<'b>(host: &[u8], buf: &'b mut [u8; 256]) -> Option<&'b str> {
    let host = if host.first() == Some(&b'[') {
        // [v6]:port
        let end = host.iter().position(|&b| b == b']')?;
        &host[..=end]
    } else {
        match host.iter().rposition(|&b| b == b':') {
            Some(colon) => &host[..colon],
            None => host,
        }
    };
    let host = host.strip_suffix(b".").unwrap_or(host);
    let out = buf.get_mut(..host.len())?;
    for (o, &b) in out.iter_mut().zip(host) {
        *o = b.to_ascii_lowercase();
    }
    std::str::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str) -> Route {
        Route {
            name: name.into(),
            origin: format!("test {name}"),
            hosts: Vec::new(),
            path: None,
            methods: Vec::new(),
            fields: Vec::new(),
            query: Vec::new(),
            sni: Vec::new(),
            action: Action::Forward {
                backend: BackendId(0),
                backend_name: "default".into(),
                rewrite: None,
            },
            request_headers: HeaderRules::default(),
            response_headers: HeaderRules::default(),
            response_timeout: None,
        }
    }

    fn hosts(r: Route, h: &[&str]) -> Route {
        Route {
            hosts: h.iter().map(|h| HostPattern::parse(h).unwrap()).collect(),
            ..r
        }
    }

    fn prefix(r: Route, p: &str) -> Route {
        Route {
            path: Some(PathPattern::Prefix(p.into())),
            ..r
        }
    }

    fn pick<'t>(t: &'t RouteTable, host: &str, target: &str, head: &str) -> Option<&'t str> {
        let req = Request {
            method: b"GET",
            host: Some(host.as_bytes()),
            target: target.as_bytes(),
            head: head.as_bytes(),
            sni: None,
        };
        t.select(&req).map(|r| &*r.name)
    }

    #[test]
    fn hosts_match_exactly_or_under_a_wildcard_ignoring_case_port_and_final_dot() {
        let t = RouteTable::new(
            vec![
                hosts(route("api"), &["api.example.com"]),
                hosts(route("wild"), &["*.example.com"]),
                hosts(route("bare"), &["example.com"]),
            ],
            None,
        )
        .unwrap();
        assert_eq!(pick(&t, "API.Example.com:8080", "/", ""), Some("api"));
        assert_eq!(pick(&t, "api.example.com.", "/", ""), Some("api"));
        assert_eq!(pick(&t, "a.b.example.com", "/", ""), Some("wild"));
        assert_eq!(pick(&t, "example.com", "/", ""), Some("bare"));
        assert_eq!(pick(&t, "other.org", "/", ""), None);
        assert_eq!(pick(&t, "badexample.com", "/", ""), None);
    }

    #[test]
    fn routes_are_tried_in_order_across_host_lists() {
        let t = RouteTable::new(
            vec![
                prefix(route("health"), "/health"),
                prefix(hosts(route("api"), &["api.example.com"]), "/v1"),
                hosts(route("wild"), &["*.example.com"]),
                route("rest"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(pick(&t, "api.example.com", "/health", ""), Some("health"));
        assert_eq!(pick(&t, "api.example.com", "/v1/x", ""), Some("api"));
        assert_eq!(pick(&t, "api.example.com", "/v2", ""), Some("wild"));
        assert_eq!(pick(&t, "elsewhere", "/v1", ""), Some("rest"));
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = PathPattern::Prefix("/api".into());
        for (path, m) in [
            ("/api", true),
            ("/api/", true),
            ("/api/v1", true),
            ("/apis", false),
        ] {
            assert_eq!(p.matches(path.as_bytes()), m, "{path}");
        }
        let p = PathPattern::Prefix("/api/".into());
        assert!(p.matches(b"/api/v1") && !p.matches(b"/api"));
        let r = PathPattern::Regex(regex::Regex::new("^/v[0-9]+/").unwrap());
        assert!(r.matches(b"/v2/x") && !r.matches(b"/vx/"));
    }

    #[test]
    fn paths_are_matched_as_the_origin_reads_them_and_deep_hosts_meet_their_wildcard() {
        let t = RouteTable::new(
            vec![
                prefix(route("admin"), "/admin"),
                hosts(route("wild"), &["*.example.com"]),
            ],
            None,
        )
        .unwrap();
        for path in [
            "/admin",
            "/%61dmin/x",
            "//admin",
            "/x/../admin",
            "/./admin/",
        ] {
            assert_eq!(pick(&t, "other", path, ""), Some("admin"), "{path}");
        }
        // `.` is unreserved: `%2e%2e` is `..`, and resolved like it.
        assert_eq!(pick(&t, "other", "/x/%2e%2e/admin", ""), Some("admin"));
        assert_eq!(
            pick(&t, "other", "/%2Fadmin", ""),
            None,
            "%2F stays a byte of a segment"
        );
        let deep = format!("{}example.com", "a.".repeat(20));
        assert_eq!(pick(&t, &deep, "/", ""), Some("wild"));
        for bad in ["example.com:80", "example.com.", ".example.com", "a..b"] {
            assert!(HostPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn methods_fields_and_query_parameters() {
        let mut canary = route("canary");
        canary.fields = vec![Presence {
            name: "x-canary".into(),
            value: Some("1".into()),
        }];
        let mut v2 = route("v2");
        v2.query = vec![Presence {
            name: "v".into(),
            value: Some("2".into()),
        }];
        let mut post = route("post");
        post.methods = vec!["POST".into()];
        let t = RouteTable::new(vec![canary, v2, post, route("rest")], None).unwrap();
        let head = "GET / HTTP/1.1\r\nHost: a\r\nX-Canary: 1\r\n\r\n";
        assert_eq!(pick(&t, "a", "/", head), Some("canary"));
        assert_eq!(pick(&t, "a", "/?a=1&v=2", ""), Some("v2"));
        assert_eq!(pick(&t, "a", "/?v=3", ""), Some("rest"));
        assert_eq!(pick(&t, "a", "/", ""), Some("rest"), "GET is not POST");
    }

    #[test]
    fn a_route_an_earlier_one_always_takes_is_refused() {
        let refused = |routes: Vec<Route>| RouteTable::new(routes, None).unwrap_err();
        let e = refused(vec![route("all"), prefix(route("api"), "/api")]);
        assert!(e.contains("`api`") && e.contains("`all`"), "{e}");
        refused(vec![
            prefix(route("a"), "/api"),
            prefix(route("b"), "/api/v1"),
        ]);
        refused(vec![
            hosts(route("wild"), &["*.example.com"]),
            hosts(route("one"), &["a.example.com"]),
        ]);
        refused(vec![prefix(route("a"), "/x"), prefix(route("dup"), "/x")]);
        // Narrower first is fine; so is a wider one after.
        RouteTable::new(
            vec![
                prefix(route("v1"), "/api/v1"),
                prefix(route("api"), "/api"),
                hosts(route("one"), &["a.example.com"]),
                hosts(route("wild"), &["*.example.com"]),
                route("rest"),
            ],
            None,
        )
        .unwrap();
    }

    #[test]
    fn ten_thousand_host_routes_are_checked_and_looked_up_by_host() {
        let mut routes: Vec<Route> = (0..10_000)
            .map(|i| hosts(route(&format!("r{i}")), &[&format!("h{i}.example.com")]))
            .collect();
        routes.push(hosts(route("late"), &["h77.example.com"]));
        let e = RouteTable::new(routes, None).unwrap_err();
        assert!(e.contains("`late`") && e.contains("`r77`"), "{e}");
        let routes = (0..10_000)
            .map(|i| hosts(route(&format!("r{i}")), &[&format!("h{i}.example.com")]))
            .collect();
        let t = RouteTable::new(routes, None).unwrap();
        assert_eq!(pick(&t, "h9999.example.com", "/", ""), Some("r9999"));
    }

    #[test]
    fn header_rules_remove_set_and_add() {
        let rules = HeaderRules {
            remove: vec!["x-drop".into()],
            set: vec![("X-Env".into(), "prod".into())],
            add: vec![("X-Added".into(), "1".into())],
        };
        let mut head = b"pre:GET / HTTP/1.1\r\nHost: a\r\nX-Drop: 1\r\nx-env: dev\r\n\r\n".to_vec();
        rules.apply(&mut head, 4);
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "pre:GET / HTTP/1.1\r\nHost: a\r\nX-Env: prod\r\nX-Added: 1\r\n\r\n"
        );
    }

    #[test]
    fn a_prefix_is_rewritten_or_stripped() {
        let mut r = prefix(route("api"), "/api");
        let with = |r: &mut Route, to: &str| {
            r.action = Action::Forward {
                backend: BackendId(1),
                backend_name: "b".into(),
                rewrite: Some(to.into()),
            }
        };
        with(&mut r, "/v2");
        assert_eq!(r.rewritten_target(b"/api/x?q=1").unwrap(), b"/v2/x?q=1");
        with(&mut r, "");
        assert_eq!(r.rewritten_target(b"/api/x").unwrap(), b"/x");
        assert_eq!(r.rewritten_target(b"/api").unwrap(), b"/");
        assert_eq!(r.rewritten_target(b"/api?q").unwrap(), b"/?q");
        with(&mut r, "/");
        assert_eq!(r.rewritten_target(b"/api/x").unwrap(), b"/x");
        assert_eq!(r.rewritten_target(b"/api").unwrap(), b"/");
    }
}
