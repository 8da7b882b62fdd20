//! ringmux: an HTTP/1.1 reverse proxy for Linux on io_uring.
//!
//! # The layers, bottom up
//!
//! Each module names what it may import; nothing imports from a layer
//! above its own (checked when this map was written: `grep crate::` per
//! module). `docs/architecture.md` follows one request through them.
//!
//! **Leaves** (import nothing of ringmux):
//! - `reactor`: one io_uring per worker thread. Multishot accept,
//!   multishot recvs (with or without a total limit) on a provided-buffer ring (buffers handed
//!   out as owned tokens), sends, connects, shutdowns, closes deferred
//!   until no operation names the fd, a periodic tick and the control
//!   eventfd. It owns every buffer the kernel may touch while an operation
//!   is in flight and is the only module with `unsafe` code. No HTTP.
//! - [`codec`]: the sans-I/O HTTP/1.1 codec on httparse. Heads are parsed,
//!   checked and rewritten for forwarding; bodies are framed by
//!   Content-Length, chunked (validated while streaming) or connection
//!   close. No I/O, no clock.
//! - [`spec`]: what an upstream is (id, address, weight, checks) and the
//!   policy and pool settings: the vocabulary `config` and `pool` share.
//! - `metrics`, `stash`, `scaler`, [`origin`]: counters and their
//!   text, buffers recycled within a worker, the sans-I/O decision to grow
//!   or shrink the workers, and the demo/test origin server (not on the
//!   proxy's data path).
//!
//! **Vocabulary** (leaves only):
//! - `error` (codec): what can go wrong with an exchange, its status and
//!   whether it may be retried.
//! - `access_log` (codec): an ended exchange's record and its line; the
//!   logger thread.
//! - [`affinity`] (codec): the signed session cookie.
//! - `session` (access_log, error): the seam between a worker's core and
//!   a client's protocol (`session::ClientSession`).
//!
//! **Protocol and policy** (the layers below):
//! - `agent` (codec, error, session, access_log, stash): the HTTP/1.1
//!   session, one per client connection: parses requests, says which may go
//!   upstream now, lays responses out in request order within bounded
//!   buffers. No I/O, no clock.
//! - [`pool`] (spec, codec, metrics): per worker, per upstream: connection
//!   counts, idle keep-alive connections, waiting lists, health, warm-up,
//!   reloads, the balancing policies and per-route service times. No I/O;
//!   time is passed in.
//!
//! **Configuration**:
//! - [`config`] (spec, codec, pool, affinity, access_log, scaler, agent):
//!   command line and config file to a validated, resolved
//!   [`config::Config`].
//!
//! **Running** (configuration and everything below):
//! - `control` (config, spec, metrics, reactor): the inbox through which
//!   the supervisor steers a running worker.
//! - `listeners` (config): the SO_REUSEPORT lanes workers accept on.
//! - `worker` (session, agent, pool, reactor, control, config, ...): one
//!   thread's event loop in two layers, the dispatch core (every connection
//!   table and decision; inputs in, actions out, no I/O) and the driver
//!   that turns ring completions into inputs and actions into ring
//!   operations.
//! - `health_check` (control, spec): one thread that checks upstreams.
//! - `admin` (config, control, metrics, access_log, codec): the admin
//!   listener on a thread of its own.
//!
//! **Top**: [`supervisor`] starts workers and sends them commands, handles
//! signals, re-resolves names and grows or shrinks the workers.
//!
//! Only what the binaries, benchmarks and integration tests use is public
//! (`config`, `supervisor`, `origin`, `spec`, `codec`, `pool`, `affinity`);
//! the rest is `pub(crate)`, so the compiler reports what nothing calls.
#![deny(unsafe_code)]

pub(crate) mod access_log;
pub(crate) mod admin;
pub mod affinity;
pub(crate) mod agent;
pub mod codec;
pub mod config;
pub(crate) mod control;
pub(crate) mod dns;
pub(crate) mod error;
pub mod h2;
pub(crate) mod health_check;
pub(crate) mod listeners;
pub(crate) mod metrics;
pub mod origin;
pub mod pool;
pub(crate) mod reactor;
pub mod routes;
pub(crate) mod scaler;
pub(crate) mod session;
pub mod spec;
pub(crate) mod stash;
pub mod supervisor;
pub mod tls;
pub(crate) mod worker;
