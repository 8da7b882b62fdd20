//! The supervisor: binds the listeners, starts one pinned worker per core,
//! and steers them while they run.
//!
//! It owns the process-wide decisions and nothing of the data path:
//! - a worker that dies (a panic, a ring error) is started again on the
//!   same listening sockets and CPU, unless workers died more than
//!   [`MAX_RESTARTS`] times within [`RESTART_WINDOW`];
//! - signals (one thread, `signal-hook`, turns them into messages here):
//!   SIGHUP reloads, SIGTERM and SIGINT drain, a second one or SIGQUIT
//!   exits at once;
//! - reloads: the config file is read and validated again, upstream names
//!   are resolved again, settings that need a restart are refused, and
//!   each worker gets the new configuration through its control inbox;
//! - DNS: every `--resolve-interval` upstream names are resolved again and
//!   a changed address is applied like a reload.
//!
//! Every decision is one line on stderr.

mod elastic;

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::RawFd;
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use clap::ArgMatches;

use crate::access_log::{self, LogSender};
use crate::admin::{self, Admin};
use crate::config::{self, Args, Config};
use crate::control::{self, Command, Inbox, Mailbox};
use crate::health_check;
use crate::listeners::Lanes;
use crate::metrics::{Board, Slot as Published};
use crate::reactor::{self, RingMode};
use crate::scaler::Scaler;
use crate::spec::UpstreamSpec;
use crate::worker::{Links, Worker};

/// A worker that died within the last [`RESTART_WINDOW`] this many times is
/// not restarted again: something is wrong beyond one bad request.
pub const MAX_RESTARTS: usize = 10;
/// See [`MAX_RESTARTS`].
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);
/// How often the scaler looks at the workers' busy fractions.
const SCALE_EVERY: Duration = Duration::from_millis(250);
/// How long a retiring worker may take to finish what it has.
const RETIRE_WITHIN: Duration = Duration::from_secs(30);
/// Past the drain deadline, how long the supervisor waits for workers to
/// close what is left before it exits anyway.
const DRAIN_GRACE: Duration = Duration::from_secs(2);

/// What a started worker's ring is: its mode, and whether its waits
/// gather batches.
type Started = (RingMode, bool);
/// What a worker thread reports when it starts, or why it could not.
type Ready = std::io::Result<Started>;

/// What reaches the supervisor's loop.
enum Note {
    /// Worker `index` ended, and why.
    Exited { index: usize, reason: String },
    /// A signal arrived.
    Signal(i32),
    /// The admin's `POST /reload`: reload and reply with the outcome.
    Reload(mpsc::Sender<Result<String, String>>),
}

/// Tells the supervisor that worker `index` ended, however it ended (its
/// drop runs during a panic's unwinding too).
struct ExitNotice {
    index: usize,
    tx: mpsc::Sender<Note>,
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
        let _ = self.tx.send(Note::Exited {
            index: self.index,
            reason,
        });
    }
}

/// A running worker, as the supervisor knows it.
struct Slot {
    handle: Option<JoinHandle<()>>,
    mailbox: Option<Mailbox>,
    /// It returned after a drain, was retired, or never started: nothing to
    /// wait for.
    done: bool,
    /// It was told to retire (the pool shrinks): its exit is no failure.
    retiring: bool,
}

impl Slot {
    fn empty() -> Slot {
        Slot {
            handle: None,
            mailbox: None,
            done: true,
            retiring: false,
        }
    }

    /// Running, and not on its way out.
    fn serving(&self) -> bool {
        !self.done && !self.retiring
    }
}

/// Start worker `index` on `cpu` (or unpinned) around its listening
/// sockets, given as (lane, socket) pairs.
#[allow(clippy::too_many_arguments)]
fn spawn_worker(
    index: usize,
    cfg: &Arc<Config>,
    fds: Vec<(usize, RawFd)>,
    cpu: Option<usize>,
    inbox: Inbox,
    slot: Published,
    log: Option<LogSender>,
    ready: &mpsc::Sender<Ready>,
    notes: &mpsc::Sender<Note>,
    warm: Vec<crate::spec::UpstreamId>,
) -> std::io::Result<JoinHandle<()>> {
    let (cfg, ready, notes) = (cfg.clone(), ready.clone(), notes.clone());
    std::thread::Builder::new()
        .name(format!("ringmux-w{index}"))
        .spawn(move || {
            // Sends on drop: when this closure returns, or unwinds.
            let mut notice = ExitNotice {
                index,
                tx: notes,
                reason: None,
            };
            if let Some(cpu) = cpu {
                // Pinning is an optimisation: carry on unpinned if refused.
                let _ = affinity::set_thread_affinity([cpu]);
            }
            // The ring is built here: a SINGLE_ISSUER ring belongs to the
            // thread that made it.
            let links = Links {
                index,
                inbox: Some(inbox),
                slot: Some(slot),
                log,
                warm,
            };
            let worker = match Worker::new(cfg, fds, links) {
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

/// A signal's name for messages.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGUSR1 => "SIGUSR1",
        _ => "a signal",
    }
}

/// How long the exit waits for the access log to be written.
const LOG_FLUSH_PATIENCE: Duration = Duration::from_secs(2);

/// The supervisor's state.
struct Supervisor {
    /// The command line as given (reloads apply the file under it again).
    args: Args,
    matches: ArgMatches,
    cfg: Arc<Config>,
    /// The listening sockets and who accepts on them.
    lanes: Lanes,
    cpus: Vec<usize>,
    /// One per worker there may be (`max_workers`), started or not.
    slots: Vec<Slot>,
    /// When the pool grows or shrinks.
    scaler: Scaler,
    /// When the scaler looks next.
    next_scale: Option<Instant>,
    ready_tx: mpsc::Sender<Ready>,
    ready_rx: mpsc::Receiver<Ready>,
    notes_tx: mpsc::Sender<Note>,
    /// Taken by [`Supervisor::supervise`].
    notes_rx: Option<mpsc::Receiver<Note>>,
    deaths: VecDeque<Instant>,
    /// Draining since a SIGTERM/SIGINT: until when.
    draining: Option<Instant>,
    /// When upstream names are resolved next.
    next_resolve: Option<Instant>,
    /// The demo origin's upstream, kept across reloads.
    demo: Option<crate::spec::UpstreamSpec>,
    /// Where workers publish their figures (read by the admin side).
    board: Arc<Mutex<Board>>,
    /// The workers' inboxes, as the admin side sees them.
    mailboxes: Arc<Mutex<Vec<Option<Mailbox>>>>,
    /// The access log's logger, when it is on.
    log: Option<LogSender>,
    /// The active health checker.
    checker: Option<health_check::Checker>,
    /// Who may use the admin port (a reload reads the token file again).
    admin_access: Arc<std::sync::RwLock<config::AdminAccess>>,
}

/// Start the workers, then supervise them until a drain is over.
pub fn run(args: Args, matches: ArgMatches, cfg: Config) -> ExitCode {
    match Supervisor::start(args, matches, cfg) {
        Ok(mut s) => s.supervise(),
        Err(e) => {
            eprintln!("ringmux: {e}");
            ExitCode::FAILURE
        }
    }
}

impl Supervisor {
    fn start(args: Args, matches: ArgMatches, cfg: Config) -> std::io::Result<Supervisor> {
        warn_fd_limit(&cfg);
        let lanes = Lanes::bind(&cfg)?;
        let bound = lanes.bound().to_vec();
        // Pin to the CPUs this process may use (so `taskset -c 1 ringmux`
        // stays on CPU 1), one worker per CPU; workers beyond the CPUs run
        // unpinned.
        let cpus = affinity::get_thread_affinity()
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| (0..affinity::get_core_num().max(1)).collect());
        let (ready_tx, ready_rx) = mpsc::channel::<Ready>();
        let (notes_tx, notes_rx) = mpsc::channel();
        let next_resolve = cfg.resolve_interval.map(|d| Instant::now() + d);
        let demo = cfg
            .upstreams
            .iter()
            .find(|u| u.name.starts_with("demo@"))
            .cloned();
        let log = match &cfg.access_log {
            Some(target) => Some(
                access_log::start(target.clone())
                    .map_err(|e| std::io::Error::new(e.kind(), format!("access log: {e}")))?
                    .0,
            ),
            None => None,
        };
        let board = Arc::new(Mutex::new(Board {
            workers: (0..cfg.max_workers)
                .map(|_| {
                    Arc::new(Mutex::new(crate::metrics::WorkerSnapshot {
                        state: "stopped",
                        ..Default::default()
                    }))
                })
                .collect(),
            restarts: vec![0; cfg.max_workers],
            reload_failures: 0,
            retired: Default::default(),
            scale_ups: 0,
            scale_downs: 0,
            certs: certs_of(&cfg),
        }));
        let scaler = Scaler::new(cfg.scale, cfg.workers, cfg.max_workers);
        let next_scale = scaler.elastic().then(|| Instant::now() + SCALE_EVERY);
        let mut s = Supervisor {
            args,
            matches,
            cfg: Arc::new(cfg),
            lanes,
            cpus,
            slots: Vec::new(),
            scaler,
            next_scale,
            ready_tx,
            ready_rx,
            notes_tx,
            notes_rx: Some(notes_rx),
            deaths: VecDeque::new(),
            draining: None,
            next_resolve,
            demo,
            board,
            mailboxes: Arc::new(Mutex::new(vec![None; 0])),
            log,
            checker: None,
            admin_access: Default::default(),
        };
        s.admin_access = Arc::new(std::sync::RwLock::new(s.cfg.admin_access.clone()));
        s.slots = (0..s.cfg.max_workers).map(|_| Slot::empty()).collect();
        let mut mode = None;
        for i in 0..s.cfg.workers {
            let (slot, m) = s
                .start_worker(i)
                .map_err(|e| std::io::Error::new(e.kind(), format!("worker start failed: {e}")))?;
            s.slots[i] = slot;
            mode = Some(m);
        }
        let targets: Vec<UpstreamSpec> = s.cfg.every_upstream().cloned().collect();
        s.checker = Some(health_check::start(&targets, Arc::clone(&s.mailboxes))?);
        // Signals, once the workers exist: from here on SIGTERM drains.
        start_signal_thread(s.notes_tx.clone())?;
        let admin_addr = match s.cfg.admin {
            Some(addr) => {
                let notes = Mutex::new(s.notes_tx.clone());
                let reload: admin::Reload = Arc::new(move || {
                    let (tx, rx) = mpsc::channel();
                    let sent = notes
                        .lock()
                        .map(|n| n.send(Note::Reload(tx)).is_ok())
                        .unwrap_or(false);
                    if !sent {
                        return Err("the supervisor is gone".into());
                    }
                    rx.recv_timeout(Duration::from_secs(30))
                        .unwrap_or_else(|_| Err("the reload took too long".into()))
                });
                let admin = Admin {
                    board: Arc::clone(&s.board),
                    mailboxes: Arc::clone(&s.mailboxes),
                    reload,
                    access: Arc::clone(&s.admin_access),
                    tables: Arc::default(),
                };
                if s.cfg.admin_access.token.is_none() && !addr.ip().is_loopback() {
                    eprintln!(
                        "ringmux: the admin port on {addr} has no token: whoever reaches it can reload; \
                         set --admin-token-file (see the README, Running in production)"
                    );
                }
                let (bound, _) = admin::start(addr, admin).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("cannot bind the admin address {addr}: {e}"),
                    )
                })?;
                Some(bound)
            }
            None => None,
        };
        let mut out = std::io::stdout().lock();
        for a in &bound {
            writeln!(out, "listening on {a}")?;
        }
        if let Some(a) = admin_addr {
            writeln!(out, "admin listening on {a}")?;
        }
        out.flush()?;
        drop(out);
        let (mode, batches) = mode.expect("at least one worker");
        let batching = match (s.cfg.batch_wait_us, batches) {
            (0, _) => "off".to_string(),
            (us, true) => format!("up to {us} us"),
            (_, false) => "off (the kernel lacks IORING_FEAT_MIN_TIMEOUT)".to_string(),
        };
        let workers = if s.scaler.elastic() {
            format!(
                "{} worker(s) (elastic, {} to {})",
                s.cfg.workers, s.cfg.workers, s.cfg.max_workers
            )
        } else {
            format!("{} worker(s)", s.cfg.workers)
        };
        let pinning = if !s.cfg.pin {
            "unpinned".to_string()
        } else if s.cfg.max_workers > s.cpus.len() {
            format!(
                "pinned to CPUs {:?}, workers beyond {} unpinned",
                s.cpus,
                s.cpus.len()
            )
        } else {
            format!(
                "pinned to CPUs {:?}",
                &s.cpus[..s.cfg.max_workers.min(s.cpus.len())]
            )
        };
        let polling = match s.cfg.busy_poll_us {
            0 => String::new(),
            us => format!(", busy poll {us} us"),
        };
        eprintln!(
            "ringmux: {workers}, {pinning}, ring mode {mode:?}, batched waits {batching}{polling}, {} upstream(s)",
            s.cfg.every_upstream().count()
        );
        Ok(s)
    }

    /// The CPU worker `i` is pinned to: the `i`-th the process may use,
    /// none when there are fewer (or `--no-pin`).
    fn cpu_of(&self, i: usize) -> Option<usize> {
        self.cfg.pin.then(|| self.cpus.get(i).copied()).flatten()
    }

    /// Start worker `i` for the first time (at start-up, or when the pool
    /// grows): on its own lane, taken back from whoever accepts on it now.
    ///
    /// The lane changes hands only once the worker says it is ready; if it
    /// cannot start, the lane stays where it was (a lane just made goes to
    /// a serving worker), so nobody's connections wait on a socket that no
    /// one accepts on. Returns the slot and what the worker's ring is.
    fn start_worker(&mut self, i: usize) -> std::io::Result<(Slot, Started)> {
        match self.try_start_worker(i) {
            Ok(ok) => Ok(ok),
            Err((e, Some(mut slot))) => {
                // Its thread runs, or ran: its end is reported like a
                // retirement (nothing to restart), and the slot is not free
                // until then.
                slot.retiring = true;
                self.slots[i] = slot;
                Err(e)
            }
            Err((e, None)) => Err(e),
        }
    }

    fn try_start_worker(
        &mut self,
        i: usize,
    ) -> Result<(Slot, Started), (std::io::Error, Option<Slot>)> {
        let lane = self.lanes.home_of(i).map_err(|e| (e, None))?;
        let previous = self.lanes.owner(lane).filter(|&o| o != i);
        let fds = self
            .lanes
            .fds(lane)
            .into_iter()
            .map(|fd| (lane, fd))
            .collect();
        let started = match self.spawn(i, fds) {
            Err(e) => Err((e, None)),
            Ok(slot) => match self.ready_rx.recv_timeout(Duration::from_secs(10)) {
                Ok(Ok(mode)) => Ok((slot, mode)),
                Ok(Err(e)) => Err((e, Some(slot))),
                Err(_) => Err((
                    std::io::Error::other("no word from it within 10 s"),
                    Some(slot),
                )),
            },
        };
        match started {
            Ok((slot, mode)) => {
                self.lanes.set_owner(lane, i);
                // The new worker accepts on the lane already; now the one
                // that carried it lets go: no moment with nobody accepting.
                if let Some(j) = previous {
                    if let Some(m) = &self.slots[j].mailbox {
                        let _ = m.send(Command::Release { lane });
                    }
                }
                Ok((slot, mode))
            }
            Err(e) => {
                if self.lanes.owner(lane).is_none() {
                    if let Some(heir) = (0..self.slots.len()).find(|&j| self.slots[j].serving()) {
                        if let Some(m) = &self.slots[heir].mailbox {
                            let _ = m.send(Command::Adopt {
                                lane,
                                fds: self.lanes.fds(lane),
                            });
                        }
                        self.lanes.set_owner(lane, heir);
                    }
                }
                Err(e)
            }
        }
    }

    /// Upstreams a running worker other than `i` has warm (as last
    /// published, at most a tick old): a new or restarted worker `i` starts
    /// with them warm.
    fn warm_elsewhere(&self, i: usize) -> Vec<crate::spec::UpstreamId> {
        let Ok(board) = self.board.lock() else {
            return Vec::new();
        };
        let mut warm = Vec::new();
        for (j, slot) in board.workers.iter().enumerate() {
            let Ok(w) = slot.lock() else { continue };
            if j == i || w.state != "running" {
                continue;
            }
            for u in w
                .upstreams
                .iter()
                .filter(|u| u.warmth == "warm" && u.state == "up")
            {
                let id = crate::spec::UpstreamId(u.id);
                if !warm.contains(&id) {
                    warm.push(id);
                }
            }
        }
        warm
    }

    /// Start worker `i` on `fds` ((lane, socket) pairs).
    fn spawn(&self, i: usize, fds: Vec<(usize, RawFd)>) -> std::io::Result<Slot> {
        let (mailbox, inbox) = control::inbox()?;
        let published = self
            .board
            .lock()
            .map(|b| Arc::clone(&b.workers[i]))
            .unwrap_or_default();
        if let Ok(mut w) = published.lock() {
            w.state = "starting";
        }
        let handle = spawn_worker(
            i,
            &self.cfg,
            fds,
            self.cpu_of(i),
            inbox,
            published,
            self.log.clone(),
            &self.ready_tx,
            &self.notes_tx,
            self.warm_elsewhere(i),
        )?;
        if let Ok(mut m) = self.mailboxes.lock() {
            if m.len() <= i {
                m.resize(i + 1, None);
            }
            m[i] = Some(mailbox.clone());
        }
        Ok(Slot {
            handle: Some(handle),
            mailbox: Some(mailbox),
            done: false,
            retiring: false,
        })
    }

    fn supervise(&mut self) -> ExitCode {
        let rx = self.notes_rx.take().expect("supervised once");
        loop {
            let wait = self
                .next_due()
                .map(|at| at.saturating_duration_since(Instant::now()));
            let note = match wait {
                Some(d) => match rx.recv_timeout(d) {
                    Ok(n) => Some(n),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => return ExitCode::FAILURE,
                },
                None => match rx.recv() {
                    Ok(n) => Some(n),
                    Err(_) => return ExitCode::FAILURE,
                },
            };
            let outcome = match note {
                Some(Note::Exited { index, reason }) => self.on_exit(index, reason),
                Some(Note::Signal(sig)) => self.on_signal(sig),
                Some(Note::Reload(reply)) => {
                    let _ = reply.send(self.reload("POST /reload"));
                    None
                }
                None => self.on_timer(),
            };
            if let Some(code) = outcome {
                // The workers' last lines reach the file before the process
                // ends.
                if let Some(log) = &self.log {
                    log.flush(LOG_FLUSH_PATIENCE);
                }
                return code;
            }
        }
    }

    /// The next moment something is due: a DNS round, the drain's end.
    fn next_due(&self) -> Option<Instant> {
        match self.draining {
            Some(deadline) => Some(deadline + DRAIN_GRACE),
            None => [self.next_resolve, self.next_scale]
                .into_iter()
                .flatten()
                .min(),
        }
    }

    fn on_timer(&mut self) -> Option<ExitCode> {
        let now = Instant::now();
        if let Some(deadline) = self.draining {
            if now >= deadline + DRAIN_GRACE {
                eprintln!("ringmux: drain deadline passed; exiting");
                return Some(ExitCode::SUCCESS);
            }
            return None;
        }
        if self.next_scale.is_some_and(|t| now >= t) {
            self.next_scale = Some(now + SCALE_EVERY);
            if let Some(code) = self.scale(now) {
                return Some(code);
            }
        }
        if self.next_resolve.is_some_and(|t| now >= t) {
            self.next_resolve = self.cfg.resolve_interval.map(|d| now + d);
            if let Some(new) = self.resolved_again() {
                let _ = self.apply(new, "DNS");
            }
        }
        None
    }

    /// The configuration with every upstream name resolved again (the
    /// default backend's and each named one's), if an address changed.
    fn resolved_again(&self) -> Option<Config> {
        let mut new = (*self.cfg).clone();
        let dns = self.cfg.dns_server;
        let mut changed = resolve_list(&mut new.upstreams, &self.cfg.upstreams, dns);
        for (b, old) in new.backends.iter_mut().zip(&self.cfg.backends) {
            changed |= resolve_list(&mut b.upstreams, &old.upstreams, dns);
        }
        changed.then(|| new.with_hash_table())
    }

    fn on_exit(&mut self, index: usize, mut reason: String) -> Option<ExitCode> {
        let slot = &mut self.slots[index];
        if let Some(Err(payload)) = slot.handle.take().map(JoinHandle::join) {
            if let Some(text) = panic_text(payload.as_ref()) {
                reason = format!("panicked: {text}");
            }
        }
        if let Ok(mut m) = self.mailboxes.lock() {
            if let Some(entry) = m.get_mut(index) {
                *entry = None;
            }
        }
        if slot.retiring {
            // The pool shrank: its lanes are with another worker already.
            slot.done = true;
            slot.retiring = false;
            slot.mailbox = None;
            eprintln!("ringmux: worker {index} retired ({reason})");
            // Its counters live on; the slot is free for a later worker.
            if let Ok(mut b) = self.board.lock() {
                let mut last = std::mem::take(
                    &mut *b.workers[index].lock().unwrap_or_else(|e| e.into_inner()),
                );
                b.retired.add_counters(&last);
                last = crate::metrics::WorkerSnapshot {
                    state: "stopped",
                    ..Default::default()
                };
                *b.workers[index].lock().unwrap_or_else(|e| e.into_inner()) = last;
            }
            if self.draining.is_some() && self.slots.iter().all(|s| s.done) {
                eprintln!("ringmux: drained; exiting");
                return Some(ExitCode::SUCCESS);
            }
            return None;
        }
        if self.draining.is_some() {
            slot.done = true;
            slot.mailbox = None;
            if self.slots.iter().all(|s| s.done) {
                eprintln!("ringmux: drained; exiting");
                return Some(ExitCode::SUCCESS);
            }
            return None;
        }
        let now = Instant::now();
        self.deaths
            .retain(|&t| now.duration_since(t) < RESTART_WINDOW);
        self.deaths.push_back(now);
        if self.deaths.len() > MAX_RESTARTS {
            eprintln!(
                "ringmux: worker {index} {reason}; workers died {} times within {} s, giving up",
                self.deaths.len(),
                RESTART_WINDOW.as_secs()
            );
            return Some(ExitCode::FAILURE);
        }
        eprintln!("ringmux: worker {index} {reason}; restarting it");
        if let Ok(mut b) = self.board.lock() {
            b.restarts[index] += 1;
            // Its counters live on in the board; the replacement starts
            // from zero in the same slot.
            let last =
                std::mem::take(&mut *b.workers[index].lock().unwrap_or_else(|e| e.into_inner()));
            b.retired.add_counters(&last);
        }
        // A moment's pause, so a worker that dies at once does not spin.
        std::thread::sleep(Duration::from_millis(50));
        let fds = self.lanes.owned_by(index);
        match self.spawn(index, fds) {
            Ok(slot) => self.slots[index] = slot,
            Err(e) => {
                eprintln!("ringmux: worker {index} could not restart: {e}");
                return Some(ExitCode::FAILURE);
            }
        }
        // A replacement that dies before it is ready reports through the
        // notes too; do not wait for it forever here.
        if let Ok(Err(e)) = self.ready_rx.recv_timeout(Duration::from_secs(5)) {
            eprintln!("ringmux: worker {index} could not restart: {e}");
        }
        // It starts with every upstream up: tell it what the checks say.
        if let Some(c) = &self.checker {
            c.tell(health_check::Note::Resend);
        }
        None
    }

    fn on_signal(&mut self, sig: i32) -> Option<ExitCode> {
        let name = signal_name(sig);
        match sig {
            libc::SIGHUP => {
                let _ = self.reload(name);
                None
            }
            libc::SIGTERM | libc::SIGINT if self.draining.is_none() => {
                let timeout = self.cfg.drain_timeout;
                eprintln!(
                    "ringmux: {name}: draining (finishing exchanges in flight, up to {} ms)",
                    timeout.as_millis()
                );
                self.drain(Instant::now() + timeout);
                None
            }
            libc::SIGTERM | libc::SIGINT => {
                eprintln!("ringmux: {name} again: exiting now");
                Some(ExitCode::SUCCESS)
            }
            libc::SIGQUIT => {
                eprintln!("ringmux: {name}: exiting now");
                Some(ExitCode::SUCCESS)
            }
            _ => {
                match &self.log {
                    Some(log) => {
                        // The logger says when it has (or has not).
                        log.reopen();
                    }
                    None => eprintln!("ringmux: {name}: no access log to reopen"),
                }
                None
            }
        }
    }

    /// Tell every worker to drain, then stop listening: new connections
    /// are refused.
    fn drain(&mut self, deadline: Instant) {
        self.draining = Some(deadline);
        for slot in &self.slots {
            if let Some(m) = &slot.mailbox {
                let _ = m.send(Command::Drain { deadline });
            }
        }
        // Shut, not closed: a worker that has not taken its drain command
        // yet may arm an accept on a number again, which must not have
        // become another socket by then.
        self.lanes.stop_listening();
    }

    /// Read the configuration again (SIGHUP, `POST /reload`): the file if
    /// there is one, the command line, DNS. Says what happened.
    fn reload(&mut self, why: &str) -> Result<String, String> {
        let loaded = match &self.args.config {
            Some(path) => config::file::read_and_load(self.args.clone(), &self.matches, path),
            None => self.args.validate(),
        };
        let mut new = match loaded {
            Ok(c) => c,
            Err(e) => return Err(self.refuse(why, &e.to_string())),
        };
        if let Some(demo) = &self.demo {
            if new.upstreams.is_empty() {
                new.upstreams.push(demo.clone());
                new = new.with_hash_table();
            }
        }
        config::assign_ids(&mut new.upstreams, &self.cfg.upstreams);
        for b in &mut new.backends {
            let before = self.cfg.backends.iter().find(|o| o.id == b.id);
            config::assign_ids(&mut b.upstreams, before.map_or(&[][..], |o| &o.upstreams));
        }
        let needs_restart = self.cfg.restart_only_changes(&new);
        if !needs_restart.is_empty() {
            let what = format!(
                "{} can only change with a restart",
                needs_restart.join(", ")
            );
            return Err(self.refuse(why, &what));
        }
        Ok(self.apply(new, why))
    }

    /// Say why a reload was refused, and count it.
    fn refuse(&mut self, why: &str, what: &str) -> String {
        let line = format!("reload refused, the running configuration stays: {what}");
        eprintln!("ringmux: {why}: {line}");
        if let Ok(mut b) = self.board.lock() {
            b.reload_failures += 1;
        }
        line
    }

    /// Send `new` to every worker and make it the current configuration.
    fn apply(&mut self, new: Config, why: &str) -> String {
        let old: Vec<&UpstreamSpec> = self.cfg.every_upstream().collect();
        let kept = new
            .every_upstream()
            .filter(|u| old.iter().any(|o| o.id == u.id))
            .count();
        let added = new.every_upstream().count() - kept;
        let removed = old
            .iter()
            .filter(|o| !new.every_upstream().any(|u| u.id == o.id))
            .count();
        self.next_resolve = new.resolve_interval.map(|d| Instant::now() + d);
        if new.scale != self.cfg.scale {
            self.scaler = Scaler::new(new.scale, new.workers, new.max_workers);
        }
        if let Ok(mut b) = self.board.lock() {
            b.certs = certs_of(&new);
        }
        for w in new.warnings() {
            eprintln!("ringmux: {why}: warning: {w}");
        }
        self.cfg = Arc::new(new);
        if let Ok(mut a) = self.admin_access.write() {
            *a = self.cfg.admin_access.clone();
        }
        for slot in &self.slots {
            if let Some(m) = &slot.mailbox {
                let _ = m.send(Command::Reload(Arc::clone(&self.cfg)));
            }
        }
        if let Some(c) = &self.checker {
            c.tell(health_check::Note::Targets(
                self.cfg.every_upstream().cloned().collect(),
            ));
        }
        let line = format!(
            "configuration reloaded ({} upstream(s): {kept} kept, {added} added, {removed} removed)",
            self.cfg.every_upstream().count()
        );
        eprintln!("ringmux: {why}: {line}");
        line
    }
}

/// Every TLS listener's certificates.
fn certs_of(cfg: &Config) -> Vec<crate::tls::CertFacts> {
    cfg.listen_tls
        .iter()
        .flatten()
        .flat_map(|t| t.certs.iter().cloned())
        .collect()
}

/// Resolve the names among `specs` again; true if an address changed (then
/// `specs` have their ids from `before`, by address). Two names now
/// resolving to one address would be one upstream counted twice: the first
/// is kept.
fn resolve_list(
    specs: &mut Vec<UpstreamSpec>,
    before: &[UpstreamSpec],
    dns: Option<std::net::SocketAddr>,
) -> bool {
    if !config::re_resolve(specs, dns) {
        return false;
    }
    let mut seen = Vec::new();
    specs.retain(|u| {
        if seen.contains(&u.addr) {
            eprintln!(
                "ringmux: DNS: {} now resolves to {}, like an upstream before it; left out",
                u.name, u.addr
            );
            false
        } else {
            seen.push(u.addr);
            true
        }
    });
    config::assign_ids(specs, before);
    true
}

/// Raise the descriptor limit to its hard limit, and say so if even that
/// cannot hold `--max-connections` client connections per worker with an
/// upstream connection each: past it, accepts fail and connections wait in
/// the accept queue (each worker pauses its accepts; see `Worker`).
fn warn_fd_limit(cfg: &Config) {
    let Ok(limit) = reactor::raise_fd_limit() else {
        return;
    };
    let per_worker = cfg.max_connections as u64 * 2;
    let need = per_worker * cfg.max_workers as u64 + 64;
    if limit < need {
        eprintln!(
            "ringmux: the descriptor limit ({limit}) cannot hold --max-connections {} per worker for {} \
             worker(s) (about {need} with an upstream connection each); connections beyond it wait in \
             the accept queue: raise it (ulimit -n) or lower --max-connections",
            cfg.max_connections, cfg.max_workers
        );
    }
}

/// One thread turns the signals the supervisor handles into notes. The
/// handlers only write to a pipe; a worker thread a signal happens to
/// interrupt retries its `io_uring_enter` (EINTR).
fn start_signal_thread(notes: mpsc::Sender<Note>) -> std::io::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
    let mut signals =
        signal_hook::iterator::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGQUIT, SIGUSR1])?;
    std::thread::Builder::new()
        .name("ringmux-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if notes.send(Note::Signal(sig)).is_err() {
                    return;
                }
            }
        })?;
    Ok(())
}
