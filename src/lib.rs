//! ringmux: an HTTP/1.1 reverse proxy for Linux on io_uring.
//!
//! # The layers, bottom up
//!
//! - [`reactor`]: one io_uring per worker thread. Multishot accept,
//!   multishot recv on a provided-buffer ring (buffers handed out as owned
//!   tokens), sends (continued when short), connects, closes, a periodic
//!   tick and the control eventfd. It owns every buffer the kernel may
//!   touch while an operation is in flight and is the only module with
//!   `unsafe` code. It knows nothing of HTTP.
//! - [`codec`]: the sans-I/O HTTP/1.1 codec on httparse. Request and
//!   response heads are parsed, checked and rewritten for forwarding
//!   (hop-by-hop headers out, `X-Forwarded-For`, `Forwarded` and `Via` in);
//!   bodies are framed by Content-Length, chunked (validated while
//!   streaming) or connection close. No I/O, no clock.
//! - [`agent`]: the multiplexing agent, one per client connection. It parses
//!   the client's requests, says which may go upstream now (safe pipelined
//!   requests in parallel, anything else in turn), and lays responses out in
//!   request order within bounded buffers. No I/O, no clock.
//! - [`pool`]: per worker, per upstream (by stable id): connection counts,
//!   idle keep-alive connections (handed out one exchange at a time, never
//!   to two clients at once), the waiting lists, health
//!   ([`pool::health`]), warm-up ([`pool::warmth`]), reloads
//!   ([`pool::Pool::apply`]), the balancing policies behind
//!   [`pool::policy::Policy`] (wrr, least-conn, url-hash, random2), and
//!   per-route service times ([`pool::routes`]). No I/O; time is passed in.
//! - [`affinity`]: the signed session cookie (no I/O).
//! - [`worker`]: one thread's event loop, in two layers: the dispatch core
//!   (`worker::core` with its client, upstream, placement and timer files:
//!   every connection table and decision, inputs in, actions out, no I/O)
//!   and the driver (`worker/mod.rs`), which turns ring completions into
//!   inputs and actions into ring operations.
//! - [`stash`]: buffers recycled between one worker's connections.
//! - [`control`]: the inbox through which the supervisor steers a running
//!   worker (reload, drain, retire, lanes, health verdicts): a channel and
//!   an eventfd its ring reads.
//! - [`supervisor`]: worker threads and their restarts, signals (SIGHUP
//!   reload, SIGTERM/SIGINT drain, SIGUSR1 log reopen), DNS re-resolution,
//!   and elastic workers (`supervisor::elastic`, deciding with
//!   [`scaler`] and moving [`listeners`] lanes).
//! - [`health_check`]: one thread that checks upstreams (health and
//!   readiness) for the whole process.
//! - [`metrics`], [`admin`], [`access_log`]: figures published on the
//!   tick, the admin listener on a thread of its own, the logger thread.
//! - [`config`]: command line and config file ([`config::file`]) to a
//!   validated [`config::Config`].
//! - [`origin`]: a small blocking origin server for `--demo`, the tests and
//!   the benchmarks; it is not on the proxy's data path.
//!
//! Calls go downward only: the supervisor starts workers and sends them
//! commands; the worker's driver calls its core and the reactor; the core
//! calls the agent and the pool; the agent calls the codec; nothing calls
//! upward.
#![deny(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod affinity;
pub mod agent;
pub mod codec;
pub mod config;
pub mod control;
pub mod error;
pub mod health_check;
pub mod listeners;
pub mod metrics;
pub mod origin;
pub mod pool;
pub mod reactor;
pub mod scaler;
pub mod session;
pub mod spec;
pub mod stash;
pub mod supervisor;
pub mod worker;
