//! The `ringmux` binary: parse the command line, bind the listeners, start
//! one pinned worker per core, and supervise them: a worker that dies is
//! started again.

use std::collections::VecDeque;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, RawFd};
use std::process::ExitCode;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::Parser;

use ringmux::config::{AcceptMode, Args, Config, UpstreamSpec, DEFAULT_MAX_CONNS};
use ringmux::origin::{self, OriginConfig};
use ringmux::reactor::RingMode;
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
                    id: ringmux::config::UpstreamId(1),
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

/// A worker that died within the last [`RESTART_WINDOW`] this many times is
/// not restarted again: something is wrong beyond one bad request.
const MAX_RESTARTS: usize = 10;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// What a worker thread reports when it starts, or why it could not.
type Ready = std::io::Result<(RingMode, bool)>;

/// Tells the supervisor that worker `index` ended, however it ended (its
/// drop runs during a panic's unwinding too).
struct ExitNotice {
    index: usize,
    tx: mpsc::Sender<(usize, String)>,
    reason: Option<String>,
}

impl Drop for ExitNotice {
    fn drop(&mut self) {
        let reason = self.reason.take().unwrap_or_else(|| {
            if std::thread::panicking() {
                "panicked".to_string()
            } else {
                "returned".to_string()
            }
        });
        let _ = self.tx.send((self.index, reason));
    }
}

/// Start worker `index` on `cpu` around its listening sockets.
fn spawn_worker(
    index: usize,
    cfg: &Arc<Config>,
    fds: Vec<RawFd>,
    cpu: usize,
    ready: &mpsc::Sender<Ready>,
    exits: &mpsc::Sender<(usize, String)>,
) -> std::io::Result<JoinHandle<()>> {
    let (cfg, ready, exits) = (cfg.clone(), ready.clone(), exits.clone());
    std::thread::Builder::new()
        .name(format!("ringmux-w{index}"))
        .spawn(move || {
            // Sends on drop: when this closure returns, or unwinds.
            let mut notice = ExitNotice {
                index,
                tx: exits,
                reason: None,
            };
            if cfg.pin {
                // Pinning is an optimisation: carry on unpinned if refused.
                let _ = affinity::set_thread_affinity([cpu]);
            }
            // The ring is built here: a SINGLE_ISSUER ring belongs to the
            // thread that made it.
            let worker = match Worker::new(cfg, fds, None) {
                Ok(w) => w,
                Err(e) => {
                    notice.reason = Some(format!("could not start: {e}"));
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(worker.ring_mode()));
            if let Err(e) = worker.run() {
                notice.reason = Some(format!("ring error: {e}"));
            }
        })
}

/// The message a panic carried, if it was text.
fn panic_text(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
}

/// Start the workers, then supervise them: a worker that dies (a panic, a
/// ring error) has its connections closed (see `Worker`'s drop) and is
/// started again on the same listening sockets and CPU, unless workers
/// died more than [`MAX_RESTARTS`] times in [`RESTART_WINDOW`].
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
    let cpu_of = |i: usize| cpus[i % cpus.len()];
    let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
    let (exit_tx, exit_rx) = mpsc::channel();
    let mut handles = Vec::with_capacity(cfg.workers);
    for (i, fds) in per_worker.iter().enumerate() {
        handles.push(Some(spawn_worker(
            i,
            &cfg,
            fds.clone(),
            cpu_of(i),
            &ready_tx,
            &exit_tx,
        )?));
    }
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

    let mut deaths: VecDeque<Instant> = VecDeque::new();
    for (i, mut reason) in exit_rx.iter() {
        if let Some(Err(payload)) = handles[i].take().map(JoinHandle::join) {
            if let Some(text) = panic_text(payload.as_ref()) {
                reason = format!("panicked: {text}");
            }
        }
        let now = Instant::now();
        deaths.retain(|&t| now.duration_since(t) < RESTART_WINDOW);
        deaths.push_back(now);
        if deaths.len() > MAX_RESTARTS {
            return Err(std::io::Error::other(format!(
                "worker {i} {reason}; workers died {} times within {} s, giving up",
                deaths.len(),
                RESTART_WINDOW.as_secs()
            )));
        }
        eprintln!("ringmux: worker {i} {reason}; restarting it");
        // A moment's pause, so a worker that dies at once does not spin.
        std::thread::sleep(Duration::from_millis(50));
        handles[i] = Some(spawn_worker(
            i,
            &cfg,
            per_worker[i].clone(),
            cpu_of(i),
            &ready_tx,
            &exit_tx,
        )?);
        // A replacement that dies before it is ready reports through
        // `exit_rx` too; do not wait for it forever here.
        if let Ok(Err(e)) = ready_rx.recv_timeout(Duration::from_secs(5)) {
            eprintln!("ringmux: worker {i} could not restart: {e}");
        }
    }
    Ok(())
}
