//! One worker thread: its reactor, its client and upstream connections, its
//! share of the upstream pool, and the loop that ties them together.
//!
//! The worker is two layers. The [`core`] holds every connection table and
//! makes every decision, and does no I/O: it takes [`core::Input`]s and
//! queues [`core::Action`]s. This module is the driver: it waits on the
//! ring, turns each completion into an input, and carries the actions out
//! through the [`Reactor`]. It also takes the supervisor's commands
//! (reload, drain) from the control eventfd, between two turns.
//!
//! # One client per upstream connection
//! An upstream connection carries the exchanges of one client connection at
//! a time; idle connections go back to the pool and serve other clients one
//! exchange after another. Bytes that arrive beyond what the current
//! response's framing allows, or while no exchange waits on the connection,
//! close it and reach nobody.
//!
//! A client's own pipelined requests fan out, one upstream connection each.
//! Only where their route is known to answer fast (see
//! [`crate::pool::routes`]) may several of them placed in the same turn
//! follow one another on one connection, written in one send: GET or
//! OPTIONS without a body, `Expect` or `Upgrade`, never HEAD, never a
//! retry. If the request at the front of such a connection gets no answer
//! within the route's late bound, the ones behind it are taken back and
//! sent again on connections of their own, and the late connection is
//! closed once the front response is complete, so whatever it would have
//! said for the others reaches nobody.
//!
//! # Turns
//! One turn handles every completion the ring has ready. Sends are not
//! started while the turn runs: connections with bytes to write are marked
//! dirty and flushed together when it ends, so that everything a turn
//! produced for one socket leaves in one send.
//!
//! Completions for idle upstream connections are handled first in a turn
//! (an origin closing one, or bytes an origin wrote after a response's
//! end), with nothing placed until they are all done, and a connection
//! released in a turn is not reused before the next one (nor for the pool's
//! quarantine): stray bytes already on their way close the connection
//! instead of being read as another client's response.
//!
//! Nothing here is shared with other workers; the cross-thread state is the
//! read-only [`Config`] and the control inbox.
//!
//! # Stale completions
//! A connection's slot may be reused while a completion for its previous
//! owner is still on its way (a send that completes after a close). Every
//! token carries the slot's generation ([`handles`]), and a completion
//! whose generation does not match finds nothing (its receive buffer is
//! recycled; a send buffer is owned by the reactor, so nothing dangles).

mod backends;
mod client;
pub(crate) mod core;
mod handles;
mod mux;
mod placement;
mod sessions;
mod timers;
mod tls;
mod upconn;
mod upstream;

#[cfg(test)]
mod tests;

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::{self, LogSender};
use crate::config::Config;
use crate::control::{Command, Inbox};
use crate::metrics::{Slot, WorkerSnapshot};
use crate::reactor::{self, Event, Reactor, RingConfig};
use core::{Action, Core, Input, Recv, Target};

/// How long a worker going away waits for the kernel to finish with its
/// ring before it closes its sockets.
const QUIESCE_FOR: Duration = Duration::from_secs(2);

/// What a worker is connected to besides its sockets.
#[derive(Default)]
pub struct Links {
    /// Its index among the workers (for the status page).
    pub index: usize,
    /// Where the supervisor's commands arrive.
    pub inbox: Option<Inbox>,
    /// Where it publishes its figures on the tick.
    pub slot: Option<Slot>,
    /// The access log, when it is on.
    pub log: Option<LogSender>,
    /// Upstreams another running worker has warm as this one starts: warm
    /// here from the start (see `pool::Pool::seed_warm`).
    pub warm: Vec<crate::spec::UpstreamId>,
}

/// A listening socket a worker accepts on, and the lane it belongs to (see
/// `crate::listeners`).
#[derive(Debug, Clone, Copy)]
struct Listener {
    fd: RawFd,
    lane: usize,
    /// Which of the configuration's listen addresses it is.
    addr: usize,
    /// Its accept is armed (or to be re-armed); false once released.
    active: bool,
}

/// One worker: a reactor and the core it drives.
pub struct Worker {
    reactor: Reactor,
    core: Core,
    /// Indexed as the ring's accepts are: entries are never removed.
    listeners: Vec<Listener>,
    /// Accepts are re-armed while true (false once draining).
    accepting: bool,
    index: usize,
    inbox: Option<Inbox>,
    slot: Option<Slot>,
    log: Option<LogSender>,
    /// The thread's CPU time and the time at the last publication (the
    /// busy fraction is the one over the other, see
    /// `reactor::thread_cpu_time`).
    cpu_at_publish: Duration,
    /// The reactor's busy-polling time at the last publication (polling is
    /// idle time, left out of the busy fraction).
    polled_at_publish: Duration,
    last_publish: Instant,
    /// Completions of this turn not handled yet (kept here, not on the
    /// stack, so that a worker dying mid-turn can close the connections
    /// they accepted).
    pending: VecDeque<Event>,
    /// An EBADF was logged (once per worker).
    ebadf_logged: bool,
    /// Retiring: the worker its idle client connections go to.
    heir: Option<crate::control::Mailbox>,
    /// Accepts that failed for want of a descriptor (or memory), by
    /// listener, and the client count then: they are armed again on the
    /// tick or as soon as a client connection ends, never at once (the
    /// connection stays queued and the accept would fail again, in a
    /// loop). See [`Worker::on_accept_error`].
    accepts_paused: Vec<usize>,
    clients_at_pause: usize,
    /// Failed accepts in the current episode (logged at its start and end).
    accept_failures: u64,
}

/// Seconds since the Unix epoch, for the `Date` of our own responses.
pub(crate) fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A TCP socket for an upstream at `addr` (the ring does the connect).
/// (Its receive buffer is the kernel's to size: a response is read no
/// faster than the client takes it anyway, see `apply_upstream_recv`, and
/// setting it small cost 10% of CPU on 1 MiB responses.)
fn open_socket(addr: SocketAddr, _buffer: usize) -> io::Result<OwnedFd> {
    let sock = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    )?;
    sock.set_tcp_nodelay(true)?;
    Ok(sock.into())
}

impl Worker {
    /// Build a worker on the calling thread (its ring must be used by the
    /// thread that created it) around already-bound listening sockets,
    /// taking commands from `inbox`.
    /// `listeners` are (lane, socket) pairs.
    pub fn new(cfg: Arc<Config>, listeners: Vec<(usize, RawFd)>, links: Links) -> io::Result<Self> {
        // A lane's sockets come in the order of the listen addresses.
        let mut seen: Vec<usize> = Vec::new();
        let listeners = listeners
            .into_iter()
            .map(|(lane, fd)| {
                let addr = seen.iter().filter(|&&l| l == lane).count();
                seen.push(lane);
                Listener {
                    fd,
                    lane,
                    addr,
                    active: true,
                }
            })
            .collect();
        let reactor = Reactor::new(RingConfig {
            buffers: cfg.ring_buffers,
            batch_wait_us: cfg.batch_wait_us,
            busy_poll_us: cfg.busy_poll_us,
            ..RingConfig::default()
        })?;
        let log_format = cfg.access_log_format;
        let mut core = Core::new(
            cfg,
            reactor.buffer_count(),
            Instant::now(),
            unix_secs(),
            open_socket,
        );
        if links.log.is_some() {
            core.enable_access_log(log_format);
        }
        core.seed_warm(&links.warm);
        let mut worker = Worker {
            reactor,
            core,
            listeners,
            accepting: true,
            index: links.index,
            inbox: links.inbox,
            slot: links.slot,
            log: links.log,
            cpu_at_publish: reactor::thread_cpu_time(),
            polled_at_publish: Duration::ZERO,
            last_publish: Instant::now(),
            pending: VecDeque::with_capacity(1024),
            ebadf_logged: false,
            heir: None,
            accepts_paused: Vec::new(),
            clients_at_pause: 0,
            accept_failures: 0,
        };
        worker.publish();
        Ok(worker)
    }

    /// How the ring was set up, and whether its waits gather batches.
    pub fn ring_mode(&self) -> (reactor::RingMode, bool) {
        (self.reactor.mode(), self.reactor.batches())
    }

    /// Run the event loop until a drain is over (`Ok`) or an unrecoverable
    /// ring error.
    pub fn run(mut self) -> io::Result<()> {
        for (i, l) in self.listeners.iter().enumerate() {
            self.reactor.accept_multi(i, l.fd);
        }
        if let Some(inbox) = &self.inbox {
            self.reactor.read_control(inbox.fd());
        }
        let mut events = Vec::with_capacity(1024);
        loop {
            let wake = self.core.next_wake(Instant::now());
            self.reactor.wait(&mut events, wake)?;
            let woke = Instant::now();
            self.pending.extend(events.drain(..));
            self.core.begin_turn(woke);
            self.idle_first();
            while let Some(ev) = self.pending.pop_front() {
                self.dispatch(ev);
            }
            self.core.end_turn();
            self.execute();
            if !self.accepts_paused.is_empty() && self.core.client_count() < self.clients_at_pause {
                // A connection ended: its descriptor is (or is about to be)
                // free for the next one.
                self.resume_accepts();
            }
            if self
                .core
                .log
                .as_ref()
                .is_some_and(|l| l.buf.len() >= access_log::HAND_OVER_AT)
            {
                self.hand_over_log();
            }
            // (A retiring worker first sees its accepts' last completions:
            // what they accepted meanwhile is served, not reset.)
            if self.core.drained() && self.reactor.accepts_armed() == 0 {
                self.publish();
                self.publish_state("stopped");
                return Ok(());
            }
        }
    }

    /// Handle the turn's completions for idle upstream connections before
    /// the others (see the module doc), then serve waiters, which may take
    /// connections released in earlier turns.
    fn idle_first(&mut self) {
        self.core.begin_idle_pass();
        let core = &self.core;
        let idle = |ev: &Event| matches!(ev, Event::Received { user, .. } if core.is_idle_upstream(*user).is_some());
        if self.pending.iter().any(idle) {
            for _ in 0..self.pending.len() {
                let Some(ev) = self.pending.pop_front() else {
                    break;
                };
                let is_idle = matches!(&ev, Event::Received { user, .. }
                    if self.core.is_idle_upstream(*user).is_some());
                if is_idle {
                    self.dispatch(ev);
                } else {
                    self.pending.push_back(ev);
                }
            }
        }
        self.core.end_idle_pass();
        self.execute();
    }

    /// Turn one completion into the core's input.
    fn dispatch(&mut self, ev: Event) {
        match ev {
            Event::Accepted {
                listener,
                result,
                rearm,
            } => {
                let short = match result {
                    Ok(fd) => {
                        if self.accept_failures > 0 {
                            eprintln!(
                                "ringmux: worker {}: accepting again ({} accept(s) failed meanwhile)",
                                self.index, self.accept_failures
                            );
                            self.accept_failures = 0;
                        }
                        let listen = self.listeners[listener].addr;
                        match reactor::peer_addr(&fd) {
                            Ok(peer) => self.core.handle(Input::Accepted { fd, peer, listen }),
                            Err(_) => self.reactor.close(fd),
                        }
                        false
                    }
                    Err(e) => self.on_accept_error(&e),
                };
                let l = self.listeners[listener];
                if rearm && self.accepting && l.active {
                    if short {
                        if !self.accepts_paused.contains(&listener) {
                            self.accepts_paused.push(listener);
                        }
                        self.clients_at_pause = self.core.client_count();
                    } else {
                        self.reactor.accept_multi(listener, l.fd);
                    }
                }
            }
            Event::Received {
                user,
                result,
                buffer,
                more,
            } => {
                let data = match &buffer {
                    Some(b) if result > 0 => self.reactor.buffer(b),
                    _ => &[],
                };
                let recv = Recv {
                    result,
                    more,
                    data,
                    buf: buffer,
                };
                let input = match Target::of(user) {
                    Target::Client(client) => Input::ClientRecv { client, recv },
                    Target::Upstream(conn) => Input::UpstreamRecv { conn, recv },
                };
                self.core.handle(input);
            }
            Event::Sent {
                user,
                result,
                spare,
                lent,
            } => {
                let input = match Target::of(user) {
                    Target::Client(client) => Input::ClientSent {
                        client,
                        result,
                        spare,
                        lent,
                    },
                    Target::Upstream(conn) => Input::UpstreamSent {
                        conn,
                        result,
                        spare,
                    },
                };
                self.core.handle(input);
            }
            Event::Connected { user, result } => {
                if let Target::Upstream(conn) = Target::of(user) {
                    self.core.handle(Input::Connected { conn, result });
                }
            }
            Event::Tick => {
                self.resume_accepts();
                self.core.handle(Input::Tick);
                for line in self.core.take_notices() {
                    eprintln!("ringmux: worker {}: {line}", self.index);
                }
                self.hand_over_log();
                self.publish();
            }
            Event::Control { ok: true } => self.on_control(),
            Event::Control { ok: false } => {
                // Not read again: a failing read would fail again at once.
                eprintln!("ringmux: a worker's control read failed; it takes no more commands");
            }
            // Counted by the reactor; nothing to undo.
            Event::QuietFailed => {}
        }
        self.execute();
    }

    /// Carry out what the core asked for, in order.
    fn execute(&mut self) {
        for a in self.core.take_actions() {
            match a {
                Action::Recv { fd, token, once: 0 } => self.reactor.recv_multi(fd, token),
                Action::Recv { fd, token, once } => self.reactor.recv_once(fd, token, once),
                Action::CancelRecv { fd, token } => self.reactor.cancel_recv(fd, token),
                Action::Send { fd, token, buf } => self.reactor.send(fd, buf, token),
                Action::SendSegs { fd, token, segs } => self.reactor.send_segs(fd, segs, token),
                Action::Connect { fd, token, addr } => self.reactor.connect(fd, addr, token),
                Action::CancelAll { fd } => self.reactor.cancel_fd(fd),
                Action::Shutdown { fd } => self.reactor.shutdown_write(fd),
                Action::Close { fd } => self.reactor.close(fd),
                Action::Recycle(buf) => self.reactor.recycle(buf),
                Action::HandOver {
                    fd,
                    peer,
                    connected_at,
                    requests,
                } => match (self.reactor.release_fd(&fd), &self.heir) {
                    (true, Some(heir)) => {
                        // If the heir is gone, the command (and the fd in
                        // it) is dropped: the connection closes.
                        let _ = heir.send(Command::TakeClient {
                            fd,
                            peer,
                            connected_at,
                            requests,
                        });
                    }
                    // An operation still names it (cannot happen: the core
                    // hands over only connections none does), or nobody
                    // to give it to: it closes through the ring.
                    _ => self.reactor.close(fd),
                },
            }
        }
    }

    /// The control eventfd fired: take every waiting command.
    fn on_control(&mut self) {
        let Some(inbox) = &self.inbox else {
            return;
        };
        let fd = inbox.fd();
        let mut commands = Vec::new();
        while let Some(cmd) = inbox.try_recv() {
            commands.push(cmd);
        }
        self.reactor.read_control(fd);
        for cmd in commands {
            match cmd {
                Command::Reload(cfg) => {
                    self.core.reconfigure(cfg);
                    self.publish();
                }
                Command::Drain { deadline } => {
                    // Stop accepting (the supervisor closes the listening
                    // sockets), then let the core finish.
                    self.stop_accepting();
                    self.core.begin_drain(deadline);
                    self.publish_state("draining");
                }
                Command::Retire { deadline, heir } => {
                    // The lanes went to another worker, which accepts on
                    // them already: what is queued there is served by it,
                    // what this ring accepted meanwhile goes there too (or
                    // is served here, without an heir).
                    self.stop_accepting();
                    self.core.begin_retire(deadline, heir.is_some());
                    self.heir = heir;
                    self.publish_state("draining");
                }
                Command::TakeClient {
                    fd,
                    peer,
                    connected_at,
                    requests,
                } => self.core.take_client(fd, peer, connected_at, requests),
                Command::Adopt { lane, fds } => {
                    if self.accepting {
                        for (addr, fd) in fds.into_iter().enumerate() {
                            let i = self.listeners.len();
                            self.listeners.push(Listener {
                                fd,
                                lane,
                                addr,
                                active: true,
                            });
                            self.reactor.accept_multi(i, fd);
                        }
                    }
                }
                Command::Shed { every } => self.core.shed(every),
                Command::Release { lane } => {
                    for i in 0..self.listeners.len() {
                        let l = &mut self.listeners[i];
                        if l.lane == lane && l.active {
                            l.active = false;
                            self.reactor.cancel_accept(i);
                        }
                    }
                }
                Command::Health { upstream, up } => self.core.health(upstream, up),
                Command::Ready { upstream, ready } => self.core.ready(upstream, ready),
                Command::Connections {
                    limit,
                    order,
                    until,
                    reply,
                } => {
                    if Instant::now() < until {
                        let _ = reply.send(self.core.connections(self.index, limit, order));
                    }
                }
            }
            self.execute();
        }
    }
}

impl Worker {
    /// An accept failed with `e`. Out of descriptors (EMFILE, ENFILE) or
    /// memory, the connection stays queued and an accept armed again at
    /// once fails again at once: that spun both workers at 1.9 cores while
    /// every connection was idle. Such an accept waits (true); the episode
    /// is said once, and every failure counted.
    fn on_accept_error(&mut self, e: &io::Error) -> bool {
        self.core.figures.accept_errors += 1;
        let short = matches!(
            e.raw_os_error(),
            Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
        );
        if short {
            if self.accept_failures == 0 {
                eprintln!(
                    "ringmux: worker {}: accept failed ({e}); accepting pauses until a connection ends \
                     (at most 100 ms); raise the descriptor limit (ulimit -n) or lower --max-connections",
                    self.index
                );
            }
            self.accept_failures += 1;
        }
        short
    }

    /// Arm the accepts paused for want of a descriptor again.
    fn resume_accepts(&mut self) {
        for listener in std::mem::take(&mut self.accepts_paused) {
            let l = self.listeners[listener];
            if self.accepting && l.active {
                self.reactor.accept_multi(listener, l.fd);
            }
        }
    }

    /// Cancel every accept; none is armed again.
    fn stop_accepting(&mut self) {
        self.accepting = false;
        for i in 0..self.listeners.len() {
            if self.listeners[i].active {
                self.listeners[i].active = false;
                self.reactor.cancel_accept(i);
            }
        }
    }

    /// Copy the figures into the slot the admin side reads (the tick).
    fn publish(&mut self) {
        let now = Instant::now();
        let window = now.saturating_duration_since(self.last_publish);
        let cpu = reactor::thread_cpu_time();
        let polled = self.reactor.stats.polled;
        let used = cpu
            .saturating_sub(self.cpu_at_publish)
            .saturating_sub(polled.saturating_sub(self.polled_at_publish));
        self.polled_at_publish = polled;
        // A window far shorter than a tick (the first publication, one
        // after a reload) says nothing about load.
        let busy = if window < Duration::from_millis(20) {
            0.0
        } else {
            (used.as_secs_f64() / window.as_secs_f64()).min(1.0)
        };
        self.cpu_at_publish = cpu;
        self.last_publish = now;
        let stats = self.reactor.stats;
        if stats.ebadf > 0 && !self.ebadf_logged {
            // Once: every later one is counted.
            self.ebadf_logged = true;
            eprintln!(
                "ringmux: worker {}: a ring operation found its fd closed (EBADF); this is a bug, please report it",
                self.index
            );
        }
        let Some(slot) = &self.slot else {
            return;
        };
        let snapshot = WorkerSnapshot {
            state: if self.core.draining.is_some() {
                "draining"
            } else {
                "running"
            },
            clients: self.core.client_count(),
            upstream_conns: self.core.upstream_count(),
            waiting: self.core.waiting(),
            figures: self.core.figures_now(),
            completions: stats.completions,
            enters: stats.enters,
            submissions: stats.submissions,
            sends: stats.sends,
            quiet_failures: stats.quiet_failures,
            ebadf: stats.ebadf,
            busy,
            upstreams: self.core.upstream_figures(),
            at_ms: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        if let Ok(mut s) = slot.lock() {
            *s = snapshot;
        }
    }

    fn publish_state(&self, state: &'static str) {
        if let Some(slot) = &self.slot {
            if let Ok(mut s) = slot.lock() {
                s.state = state;
                if state == "stopped" {
                    s.busy = 0.0;
                    s.clients = 0;
                }
            }
        }
    }

    /// Give the lines written since the last tick to the logger (or drop
    /// and count them if it is behind: a worker never waits for it).
    fn hand_over_log(&mut self) {
        self.hand_over_log_within(Duration::ZERO);
    }

    /// [`Worker::hand_over_log`], waiting up to `patience` for a logger
    /// that is behind (only as the worker goes away).
    fn hand_over_log_within(&mut self, patience: Duration) {
        let (Some(log), Some(sender)) = (&mut self.core.log, &self.log) else {
            return;
        };
        if log.buf.is_empty() {
            return;
        }
        let bytes = std::mem::replace(&mut log.buf, Vec::with_capacity(access_log::HAND_OVER_AT));
        let count = bytes.iter().filter(|&&b| b == b'\n').count();
        let sent = if patience.is_zero() {
            sender.try_send(bytes)
        } else {
            sender.send_patiently(bytes, patience)
        };
        if !sent {
            self.core.figures.log_dropped += count as u64;
        }
    }
}

/// How long a worker that goes away waits for a logger that is behind.
const LAST_LINES_PATIENCE: Duration = Duration::from_secs(1);

impl Drop for Worker {
    /// A worker that goes away while the process carries on (a panic, a
    /// ring error, a drain; the supervisor may start another) gives its
    /// connections back: the ring is quiesced, then every client and
    /// upstream socket is closed. The listening sockets stay open for a
    /// replacement.
    fn drop(&mut self) {
        // Its last lines and figures (a drain, or a panic the supervisor
        // recovers from) are not lost.
        self.hand_over_log_within(LAST_LINES_PATIENCE);
        self.publish();
        self.publish_state("stopped");
        if !self.reactor.quiesce(QUIESCE_FOR) {
            // The kernel still holds operations: closing their sockets is
            // safe (each holds its own reference), freeing their memory is
            // not (the reactor leaks it when it drops).
            eprintln!(
                "ringmux: a worker's ring did not quiesce within {} s",
                QUIESCE_FOR.as_secs()
            );
        }
        // Connections accepted in the turn that did not finish, and every
        // client and upstream socket of the core, close as they drop (the
        // ring holds no operation on them any more).
        self.pending.clear();
    }
}
