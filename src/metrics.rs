//! What ringmux counts, in one place: metric names, the histogram buckets,
//! and the figures each worker keeps.
//!
//! A worker's figures are plain integers it owns and bumps on its own data
//! path (no atomics, nothing shared). On its 100 ms tick it copies them
//! into its [`Board`] slot, the only shared write, under a lock nobody else
//! holds for long; the admin side reads the slots and sums them only when
//! asked (`/status`, `/metrics`).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Metric names, as `/metrics` shows them.
pub mod names {
    /// Requests read from clients (counter).
    pub const REQUESTS: &str = "ringmux_requests_total";
    /// Responses sent to clients, by status class (counter).
    pub const RESPONSES: &str = "ringmux_responses_total";
    /// Time from a request head to the end of its response (histogram).
    pub const REQUEST_DURATION: &str = "ringmux_request_duration_seconds";
    /// Time from a request on the wire to the first response byte, per
    /// upstream (histogram).
    pub const UPSTREAM_RESPONSE: &str = "ringmux_upstream_response_seconds";
    /// Time an exchange waited for an upstream connection (histogram).
    pub const QUEUE_WAIT: &str = "ringmux_queue_wait_seconds";
    /// Client connections accepted (counter).
    pub const ACCEPTED: &str = "ringmux_connections_accepted_total";
    /// Client connections open (gauge).
    pub const CLIENTS: &str = "ringmux_client_connections";
    /// Upstream connections open, by state (gauge).
    pub const UPSTREAM_CONNECTIONS: &str = "ringmux_upstream_connections";
    /// Exchanges waiting for an upstream connection (gauge).
    pub const QUEUED: &str = "ringmux_queued_requests";
    /// Exchanges an upstream completed (counter).
    pub const UPSTREAM_REQUESTS: &str = "ringmux_upstream_requests_total";
    /// TLS handshakes completed, by protocol version (counter).
    pub const TLS_HANDSHAKES: &str = "ringmux_tls_handshakes_total";
    /// TLS handshakes that resumed a session (counter).
    pub const TLS_RESUMED: &str = "ringmux_tls_resumed_total";
    /// TLS connections that failed, by reason (counter).
    pub const TLS_FAILURES: &str = "ringmux_tls_failures_total";
    /// HTTP/2 connections begun (counter).
    pub const H2_CONNECTIONS: &str = "ringmux_h2_connections_total";
    /// HTTP/2 streams that carried a request (counter).
    pub const H2_STREAMS: &str = "ringmux_h2_streams_total";
    /// HTTP/2 limits hit, by kind (counter).
    pub const H2_LIMITS: &str = "ringmux_h2_limits_total";
    /// TLS handshakes with origins completed (counter).
    pub const UPSTREAM_TLS_HANDSHAKES: &str = "ringmux_upstream_tls_handshakes_total";
    /// TLS handshakes with origins that resumed a session (counter).
    pub const UPSTREAM_TLS_RESUMED: &str = "ringmux_upstream_tls_resumed_total";
    /// Connections to origins whose TLS failed, by reason (counter).
    pub const UPSTREAM_TLS_FAILURES: &str = "ringmux_upstream_tls_failures_total";
    /// Seconds until each certificate expires (gauge).
    pub const TLS_CERT_EXPIRY: &str = "ringmux_tls_certificate_expiry_seconds";
    /// Client connections closed for a bad or missing PROXY header (counter).
    pub const PROXY_ERRORS: &str = "ringmux_proxy_header_errors_total";
    /// Requests a route matched, by status class (counter).
    pub const ROUTE_REQUESTS: &str = "ringmux_route_requests_total";
    /// Requests a backend served, by status class (counter).
    pub const BACKEND_REQUESTS: &str = "ringmux_backend_requests_total";
    /// Request head to end of response, per backend (histogram).
    pub const BACKEND_DURATION: &str = "ringmux_backend_request_duration_seconds";
    /// Connects to an upstream that failed (counter).
    pub const UPSTREAM_FAILURES: &str = "ringmux_upstream_connect_failures_total";
    /// Whether an upstream is up (gauge, 1 or 0).
    pub const UPSTREAM_UP: &str = "ringmux_upstream_up";
    /// Upstream connections closed because bytes came nobody asked for.
    pub const STRAY_CLOSES: &str = "ringmux_upstream_stray_closes_total";
    /// Upstream connections opened (connects begun, warm-ups included).
    pub const UPSTREAM_OPENED: &str = "ringmux_upstream_connections_opened_total";
    /// Streams opened on HTTP/2 connections to origins.
    pub const UPSTREAM_H2_STREAMS: &str = "ringmux_upstream_h2_streams_total";
    /// Streams an HTTP/2 origin refused unprocessed (GOAWAY, REFUSED_STREAM).
    pub const UPSTREAM_H2_REFUSED: &str = "ringmux_upstream_h2_refused_total";
    /// Requests sent again because the one ahead of them was late.
    pub const RESENT: &str = "ringmux_resent_requests_total";
    /// Ring completions reaped (counter).
    pub const COMPLETIONS: &str = "ringmux_ring_completions_total";
    /// `io_uring_enter` calls (counter).
    pub const ENTERS: &str = "ringmux_ring_enters_total";
    /// Sends and sendmsgs submitted, to clients and origins (counter):
    /// sends per request is what HTTP/2 to origins is to lower.
    pub const SENDS: &str = "ringmux_ring_sends_total";
    /// Closes and cancels that failed (counter).
    pub const QUIET_FAILURES: &str = "ringmux_ring_quiet_failures_total";
    /// Ring operations other than a close that found their fd closed
    /// (counter; never expected: see `reactor::fds`).
    pub const EBADF: &str = "ringmux_ring_ebadf_total";
    /// Fraction of the last tick a worker spent outside its ring wait
    /// (gauge).
    pub const BUSY: &str = "ringmux_worker_busy_ratio";
    /// Worker restarts (counter).
    pub const RESTARTS: &str = "ringmux_worker_restarts_total";
    /// Access log lines dropped because the logger fell behind (counter).
    pub const LOG_DROPPED: &str = "ringmux_access_log_dropped_total";
    /// Reloads refused (counter).
    pub const RELOAD_FAILURES: &str = "ringmux_reload_failures_total";
    /// Requests whose connection closed before any answer (counter).
    pub const ABORTED: &str = "ringmux_requests_aborted_total";
    /// Requests answered 503 by the waiting list, by reason (counter).
    pub const QUEUE_REJECTED: &str = "ringmux_queue_rejected_total";
    /// Exchanges on an upstream's connections now (gauge).
    pub const UPSTREAM_INFLIGHT: &str = "ringmux_upstream_inflight";
    /// Workers added and retired by the scaler (counters).
    pub const SCALE_UPS: &str = "ringmux_worker_scale_ups_total";
    pub const SCALE_DOWNS: &str = "ringmux_worker_scale_downs_total";
    /// Client connections a retiring worker handed to another (counter).
    pub const HANDED_OVER: &str = "ringmux_client_handovers_total";
    /// Accepts that failed, e.g. out of file descriptors (counter).
    pub const ACCEPT_ERRORS: &str = "ringmux_accept_errors_total";
    /// Connections closed at once at `--max-connections` (counter).
    pub const REFUSED: &str = "ringmux_connections_refused_total";
    /// Requests placed while too few upstreams were up (counter).
    pub const PANIC_PLACEMENTS: &str = "ringmux_panic_placements_total";
    /// Workers serving now (gauge).
    pub const WORKERS: &str = "ringmux_workers";
    /// Idle connections an upstream closed before their time (counter).
    pub const UPSTREAM_IDLE_LOST: &str = "ringmux_upstream_idle_closed_total";
}

/// Upper bounds of the histogram buckets, in seconds (`+Inf` is implied).
pub const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus-style histogram: counts per bucket (not cumulative) and
/// the sum of what was observed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Histogram {
    /// `counts[i]`: observations in bucket `i` (the last one is `+Inf`).
    pub counts: [u64; BUCKETS.len() + 1],
    /// Sum of the observations, in microseconds.
    pub sum_us: u64,
}

impl Histogram {
    /// Count one observation.
    pub fn observe(&mut self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum_us += d.as_micros().min(u128::from(u64::MAX)) as u64;
    }

    /// Add `other`'s observations to these.
    pub fn merge(&mut self, other: &Histogram) {
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        self.sum_us += other.sum_us;
    }

    /// Observations in all.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound below which `q` (0..1) of the observations fall,
    /// in seconds (None when empty; `+Inf` as `f64::INFINITY`).
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let want = (q * n as f64).ceil().max(1.0) as u64;
        let mut acc = 0;
        for (i, c) in self.counts.iter().enumerate() {
            acc += c;
            if acc >= want {
                return Some(BUCKETS.get(i).copied().unwrap_or(f64::INFINITY));
            }
        }
        Some(f64::INFINITY)
    }
}

/// One worker's counters (owned by its core; see the module doc).
#[derive(Debug, Clone, Default)]
pub struct Figures {
    /// Requests read.
    pub requests: u64,
    /// Responses sent, by status class: `[1xx, 2xx, 3xx, 4xx, 5xx]`.
    pub responses: [u64; 5],
    /// Request head to end of response.
    pub request_duration: Histogram,
    /// Time spent waiting for an upstream connection.
    pub queue_wait: Histogram,
    /// Client connections accepted.
    pub accepted: u64,
    /// Upstream connections closed for stray bytes.
    pub stray_closes: u64,
    /// Upstream connections opened.
    pub upstream_opened: u64,
    /// Streams opened to HTTP/2 origins, and refused by them unprocessed.
    pub upstream_h2_streams: u64,
    pub upstream_h2_refused: u64,
    /// Requests resent after a late front.
    pub resent: u64,
    /// Access log lines dropped.
    pub log_dropped: u64,
    /// Requests whose connection closed before any of their answer was
    /// written (logged as 499).
    pub aborted: u64,
    /// Requests answered 503 because their upstream's queue was full.
    pub queue_full: u64,
    /// Requests answered 503 after waiting `--queue-timeout`.
    pub queue_timeouts: u64,
    /// Idle client connections a retiring worker handed to another, and
    /// those this worker took over.
    pub handed_over: u64,
    pub taken_over: u64,
    /// Requests placed while too few upstreams were up (every one was
    /// chosen from: see `--panic-threshold`).
    pub panic_placements: u64,
    /// Accepts that failed (out of file descriptors, most likely), and
    /// connections closed at once because the worker was at
    /// `--max-connections`.
    pub accept_errors: u64,
    pub refused: u64,
    /// Client connections closed because their PROXY protocol header was
    /// missing, malformed or late.
    pub proxy_errors: u64,
    /// TLS handshakes and failures.
    pub tls: TlsFigures,
    /// HTTP/2 connections, streams and the limits they hit.
    pub h2: crate::h2::session::H2Totals,
    /// Per route and per backend, by name (only with routes configured).
    pub routes: BTreeMap<Arc<str>, Tally>,
    pub backends: BTreeMap<Arc<str>, Tally>,
}

/// What TLS listeners did.
#[derive(Debug, Clone, Default)]
pub struct TlsFigures {
    /// Handshakes completed, and of those resumed (a ticket or the cache).
    pub handshakes: u64,
    pub resumed: u64,
    /// Handshakes by protocol version.
    pub versions: BTreeMap<&'static str, u64>,
    /// Connections whose TLS failed, by reason.
    pub failures: BTreeMap<&'static str, u64>,
    /// Handshakes completed with origins, and of those resumed.
    pub upstream_handshakes: u64,
    pub upstream_resumed: u64,
    /// Connections to origins whose TLS failed, by reason.
    pub upstream_failures: BTreeMap<&'static str, u64>,
}

/// The requests of one route or one backend.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub requests: u64,
    /// By status class, as [`Figures::responses`].
    pub responses: [u64; 5],
    /// Request head to end of response.
    pub duration: Histogram,
}

impl Tally {
    /// Count one request answered `status` after `took`.
    pub fn count(&mut self, status: u16, took: Duration) {
        self.requests += 1;
        self.responses[(status / 100).clamp(1, 5) as usize - 1] += 1;
        self.duration.observe(took);
    }

    fn add(&mut self, other: &Tally) {
        self.requests += other.requests;
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        self.duration.merge(&other.duration);
    }
}

impl Figures {
    /// Add `other`'s counts to these.
    pub fn add(&mut self, other: &Figures) {
        self.requests += other.requests;
        for (a, b) in self.responses.iter_mut().zip(other.responses) {
            *a += b;
        }
        self.request_duration.merge(&other.request_duration);
        self.queue_wait.merge(&other.queue_wait);
        self.accepted += other.accepted;
        self.stray_closes += other.stray_closes;
        self.upstream_opened += other.upstream_opened;
        self.upstream_h2_streams += other.upstream_h2_streams;
        self.upstream_h2_refused += other.upstream_h2_refused;
        self.resent += other.resent;
        self.log_dropped += other.log_dropped;
        self.aborted += other.aborted;
        self.queue_full += other.queue_full;
        self.queue_timeouts += other.queue_timeouts;
        self.handed_over += other.handed_over;
        self.taken_over += other.taken_over;
        self.panic_placements += other.panic_placements;
        self.accept_errors += other.accept_errors;
        self.refused += other.refused;
        self.proxy_errors += other.proxy_errors;
        self.h2.add(&other.h2);
        self.tls.handshakes += other.tls.handshakes;
        self.tls.resumed += other.tls.resumed;
        self.tls.upstream_handshakes += other.tls.upstream_handshakes;
        self.tls.upstream_resumed += other.tls.upstream_resumed;
        for (mine, theirs) in [
            (&mut self.tls.versions, &other.tls.versions),
            (&mut self.tls.failures, &other.tls.failures),
            (
                &mut self.tls.upstream_failures,
                &other.tls.upstream_failures,
            ),
        ] {
            for (k, n) in theirs {
                *mine.entry(k).or_default() += n;
            }
        }
        for (mine, theirs) in [
            (&mut self.routes, &other.routes),
            (&mut self.backends, &other.backends),
        ] {
            for (name, t) in theirs {
                mine.entry(name.clone()).or_default().add(t);
            }
        }
    }

    /// Count a response with status `status`.
    pub fn response(&mut self, status: u16) {
        let class = (status / 100).clamp(1, 5) as usize - 1;
        self.responses[class] += 1;
    }
}

/// One upstream as one worker sees it.
#[derive(Debug, Clone, Default)]
pub struct UpstreamFigures {
    /// Stable id.
    pub id: u32,
    /// The backend it belongs to.
    pub backend: String,
    /// As configured (`host:port`).
    pub name: String,
    /// Resolved address.
    pub addr: String,
    /// `up`, `down` or `draining` (removed by a reload, connections left).
    pub state: &'static str,
    /// `cold`, `warming` or `warm` (see `pool::warmth`).
    pub warmth: &'static str,
    /// Configured weight.
    pub weight: u32,
    /// Connections carrying an exchange, idle, opening.
    pub active: usize,
    pub idle: usize,
    pub connecting: usize,
    /// Exchanges waiting for a connection.
    pub queued: usize,
    /// Exchanges on its connections now.
    pub inflight: usize,
    /// Idle connections the origin closed before their time.
    pub idle_lost: u64,
    /// Exchanges completed.
    pub served: u64,
    /// Connects that failed.
    pub failures: u64,
    /// Request on the wire to first response byte.
    pub response_time: Histogram,
    /// When it last completed an exchange, in ms since the Unix epoch.
    pub last_use_ms: Option<u64>,
}

/// One client connection, as `/connections` lists it.
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The worker it belongs to.
    pub worker: usize,
    /// The client's address.
    pub peer: String,
    /// `reading` (a head), `waiting` (for an upstream or its answer),
    /// `sending`, `idle` or `tunnel`.
    pub state: &'static str,
    /// `http/1.1` or `h2`.
    pub protocol: &'static str,
    /// Requests read on it.
    pub requests: u64,
    /// Accepted at, last used at (ms since the Unix epoch).
    pub connected_ms: u64,
    pub last_use_ms: u64,
    /// How long the oldest exchange in progress has taken so far, in ms.
    pub busy_ms: Option<u64>,
    /// The upstream its exchange in progress is on.
    pub upstream: Option<String>,
}

/// Which client connections a listing starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnOrder {
    /// Least recently used first.
    LastUse,
    /// Busy the longest first (connections not busy are left out).
    Busiest,
}

/// What a worker publishes on its tick.
#[derive(Debug, Clone, Default)]
pub struct WorkerSnapshot {
    /// `starting`, `running` or `draining` (and `stopped` once gone).
    pub state: &'static str,
    /// Client connections open.
    pub clients: usize,
    /// Upstream connections open.
    pub upstream_conns: usize,
    /// Exchanges waiting for an upstream connection.
    pub waiting: usize,
    /// Counters.
    pub figures: Figures,
    /// Ring completions reaped, `io_uring_enter` calls, submission entries
    /// pushed, sends submitted, failed closes/cancels.
    pub completions: u64,
    pub enters: u64,
    pub submissions: u64,
    pub sends: u64,
    pub quiet_failures: u64,
    /// Operations other than a close that failed with EBADF.
    pub ebadf: u64,
    /// Fraction of the last tick spent outside the ring wait.
    pub busy: f64,
    /// Per upstream.
    pub upstreams: Vec<UpstreamFigures>,
    /// When this was published, in ms since the Unix epoch.
    pub at_ms: u64,
}

impl WorkerSnapshot {
    /// Add the counters of `other` (a worker that is gone) to these:
    /// counts and histograms, not gauges (its connections are gone too).
    pub fn add_counters(&mut self, other: &WorkerSnapshot) {
        self.figures.add(&other.figures);
        self.completions += other.completions;
        self.enters += other.enters;
        self.submissions += other.submissions;
        self.sends += other.sends;
        self.quiet_failures += other.quiet_failures;
        self.ebadf += other.ebadf;
        for u in &other.upstreams {
            let mine = match self.upstreams.iter_mut().find(|m| m.id == u.id) {
                Some(m) => m,
                None => {
                    self.upstreams.push(UpstreamFigures {
                        id: u.id,
                        name: u.name.clone(),
                        backend: u.backend.clone(),
                        addr: u.addr.clone(),
                        state: u.state,
                        weight: u.weight,
                        ..UpstreamFigures::default()
                    });
                    self.upstreams.last_mut().expect("just pushed")
                }
            };
            mine.served += u.served;
            mine.failures += u.failures;
            mine.idle_lost += u.idle_lost;
            mine.response_time.merge(&u.response_time);
            mine.last_use_ms = mine.last_use_ms.max(u.last_use_ms);
        }
    }
}

/// Where workers publish and the admin side reads: one slot per worker.
pub type Slot = Arc<Mutex<WorkerSnapshot>>;

/// Every worker's slot, in worker order, and the process-wide counters the
/// supervisor keeps.
#[derive(Debug, Default)]
pub struct Board {
    /// One per worker.
    pub workers: Vec<Slot>,
    /// Restarts per worker.
    pub restarts: Vec<u64>,
    /// Reloads refused.
    pub reload_failures: u64,
    /// The counters of workers that died and were replaced, so that no
    /// counter ever goes down.
    pub retired: WorkerSnapshot,
    /// Workers added and retired by the scaler.
    pub scale_ups: u64,
    pub scale_downs: u64,
    /// The TLS listeners' certificates as the configuration has them now.
    pub certs: Vec<crate::tls::CertFacts>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(1));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.counts[0], 1, "0.3 ms <= 0.5 ms");
        assert_eq!(h.counts[1], 1, "1 ms <= 1 ms");
        assert_eq!(h.counts[6], 1, "30 ms <= 50 ms");
        assert_eq!(h.counts[BUCKETS.len()], 1, "+Inf");
        assert_eq!(h.count(), 4);
        assert_eq!(h.sum_us, 300 + 1_000 + 30_000 + 60_000_000);
        assert_eq!(h.quantile(0.5), Some(0.001));
        assert_eq!(h.quantile(1.0), Some(f64::INFINITY));
        let mut m = Histogram::default();
        m.merge(&h);
        m.merge(&h);
        assert_eq!(m.count(), 8);
    }

    #[test]
    fn status_classes() {
        let mut f = Figures::default();
        for s in [100, 200, 204, 302, 404, 503, 599] {
            f.response(s);
        }
        assert_eq!(f.responses, [1, 2, 1, 1, 2]);
    }
}
