//! ringmux: an HTTP/1.1 reverse proxy for Linux on io_uring.
//!
//! # The layers, bottom up
//!
//! - [`reactor`]: one io_uring per worker thread. Multishot accept,
//!   multishot recv on a provided-buffer ring, sends, connects, closes and a
//!   periodic tick. It owns every buffer the kernel may touch while an
//!   operation is in flight and is the only module with `unsafe` code. It
//!   knows nothing of HTTP.
//! - [`codec`]: the sans-I/O HTTP/1.1 codec on httparse. Request and
//!   response heads are parsed, checked and rewritten for forwarding
//!   (hop-by-hop headers out, `X-Forwarded-For` and `Forwarded` in); bodies
//!   are framed by Content-Length, chunked (validated while streaming) or
//!   connection close. No I/O, no clock.
//! - [`agent`]: the multiplexing agent, one per client connection. It parses
//!   the client's requests, says which may go upstream now (safe pipelined
//!   requests in parallel, anything else in turn), and lays responses out in
//!   request order within bounded buffers. No I/O, no clock.
//! - [`pool`]: per worker, per upstream: connection counts, idle keep-alive
//!   connections (handed out one exchange at a time, never to two clients
//!   at once) and health, with a pluggable [`pool::policy::Policy`]
//!   (weighted round robin today), and per-route service times
//!   ([`pool::routes`]). No I/O; time is passed in.
//! - [`worker`]: the event loop of one thread. It feeds completions to the
//!   agent and the pool and carries out what they decide, through the
//!   reactor.
//! - [`stash`]: buffers recycled between one worker's connections.
//! - [`config`]: command line to validated [`config::Config`].
//! - [`origin`]: a small blocking origin server for `--demo`, the tests and
//!   the benchmarks; it is not on the proxy's data path.
//!
//! Calls go downward only: the worker calls the agent, the pool and the
//! reactor; the agent calls the codec; nothing calls the worker.
#![deny(unsafe_code)]

pub mod agent;
pub mod codec;
pub mod config;
pub mod control;
pub mod error;
pub mod origin;
pub mod pool;
pub mod reactor;
pub mod stash;
pub mod supervisor;
pub mod worker;
