//! The `ringmux` binary: parse the command line, bind the listeners, start
//! one pinned worker per core and wait on them.

use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;

use ringmux::config::{AcceptMode, Args, Config, UpstreamSpec, DEFAULT_MAX_CONNS};
use ringmux::origin::{self, OriginConfig};
use ringmux::worker::Worker;

fn main() -> ExitCode {
    let args = Args::parse(); // clap prints usage errors and exits with 2
    let mut cfg = match args.validate() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ringmux: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        println!("{cfg:#?}");
        println!("configuration ok");
        return ExitCode::SUCCESS;
    }
    if cfg.demo && cfg.upstreams.is_empty() {
        match origin::spawn(([127, 0, 0, 1], 0).into(), OriginConfig::default()) {
            Ok(o) => {
                eprintln!("ringmux: demo origin on {}", o.addr);
                cfg.upstreams.push(UpstreamSpec {
                    name: format!("demo@{}", o.addr),
                    addr: o.addr,
                    weight: 1,
                    max_conns: DEFAULT_MAX_CONNS,
                });
            }
            Err(e) => {
                eprintln!("ringmux: cannot start the demo origin: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    match run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringmux: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Bind one SO_REUSEPORT listener per worker per address. The kernel then
/// spreads new connections over the workers by hash; a shared listener with
/// multishot accept in every ring was measured to give all connections to
/// one ring.
fn bind_listeners(cfg: &Config) -> std::io::Result<(Vec<Vec<RawFd>>, Vec<SocketAddr>)> {
    let mut per_worker: Vec<Vec<RawFd>> = vec![Vec::new(); cfg.workers];
    let mut bound = Vec::new();
    let listeners_per_addr = match cfg.accept {
        AcceptMode::Reuseport => cfg.workers,
        AcceptMode::Shared => 1,
    };
    for &want in &cfg.listen {
        let mut addr = want;
        let mut fds_here = Vec::with_capacity(listeners_per_addr);
        for _ in 0..listeners_per_addr {
            let s = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM.cloexec(),
                Some(socket2::Protocol::TCP),
            )?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_tcp_nodelay(true)?; // inherited by accepted sockets
            s.bind(&addr.into())
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot bind {addr}: {e}")))?;
            s.listen(4096)?;
            // Port 0: the first bind picks the port, the others share it.
            addr = s
                .local_addr()?
                .as_socket()
                .expect("inet listener has an inet address");
            fds_here.push(s.into_raw_fd());
        }
        for (i, fds) in per_worker.iter_mut().enumerate() {
            fds.push(fds_here[i % fds_here.len()]);
        }
        bound.push(addr);
    }
    Ok((per_worker, bound))
}

fn run(cfg: Config) -> std::io::Result<()> {
    let (per_worker, bound) = bind_listeners(&cfg)?;
    let cfg = Arc::new(cfg);
    // Pin to the CPUs this process may use (so `taskset -c 1 ringmux` stays
    // on CPU 1), one worker per CPU, wrapping around when there are more
    // workers than CPUs.
    let cpus = affinity::get_thread_affinity()
        .ok()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| (0..affinity::get_core_num().max(1)).collect());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let mut handles = Vec::with_capacity(cfg.workers);
    for (i, fds) in per_worker.into_iter().enumerate() {
        let cfg = cfg.clone();
        let ready = ready_tx.clone();
        let cpu = cpus[i % cpus.len()];
        let h = std::thread::Builder::new()
            .name(format!("ringmux-w{i}"))
            .spawn(move || {
                if cfg.pin {
                    // Pinning is an optimisation: carry on unpinned if refused.
                    let _ = affinity::set_thread_affinity([cpu]);
                }
                // The ring is built here: a SINGLE_ISSUER ring belongs to the
                // thread that made it.
                let worker = match Worker::new(cfg, fds) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return Ok(());
                    }
                };
                let _ = ready.send(Ok(worker.ring_mode()));
                worker.run()
            })?;
        handles.push(h);
    }
    drop(ready_tx);
    let mut mode = None;
    for r in ready_rx.iter().take(cfg.workers) {
        mode = Some(
            r.map_err(|e| std::io::Error::new(e.kind(), format!("worker start failed: {e}")))?,
        );
    }
    let mut out = std::io::stdout().lock();
    for a in &bound {
        writeln!(out, "listening on {a}")?;
    }
    out.flush()?;
    drop(out);
    let (mode, batches) = mode.expect("at least one worker");
    let batching = match (cfg.batch_wait_us, batches) {
        (0, _) => "off".to_string(),
        (us, true) => format!("up to {us} us"),
        (_, false) => "off (the kernel lacks IORING_FEAT_MIN_TIMEOUT)".to_string(),
    };
    eprintln!(
        "ringmux: {} worker(s), ring mode {mode:?}, batched waits {batching}, {} upstream(s)",
        cfg.workers,
        cfg.upstreams.len()
    );
    for h in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(std::io::Error::new(e.kind(), format!("worker failed: {e}"))),
            Err(_) => return Err(std::io::Error::other("a worker panicked")),
        }
    }
    Ok(())
}
