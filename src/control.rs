//! The control plane: how the supervisor talks to running workers.
//!
//! Each worker has an inbox: a channel of [`Command`]s and an eventfd that
//! its ring reads. The supervisor puts a command in the channel and writes
//! the eventfd; the worker's ring completes the read, and the worker takes
//! the commands between two turns, at a safe point. The data path takes no
//! lock and polls nothing: the channel is only looked at when the eventfd
//! says there is something in it.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use crate::config::Config;
use crate::metrics::{ConnInfo, ConnOrder};
use crate::reactor;

/// What the supervisor (or a retiring worker) may ask of a worker.
#[derive(Debug)]
pub enum Command {
    /// Switch to this configuration (a reload): see `Core::reconfigure`.
    Reload(Arc<Config>),
    /// Stop taking connections, finish what is in flight and return from
    /// `Worker::run` once no client connection is left, or at `deadline`.
    Drain { deadline: Instant },
    /// Reply with at most `limit` client connections in `order`, and how
    /// many are open (the admin's `/connections`). Skipped if it arrives
    /// after `until` (the asker gave up).
    Connections {
        limit: usize,
        order: ConnOrder,
        until: Instant,
        reply: mpsc::Sender<(Vec<ConnInfo>, usize)>,
    },
    /// Retire (the supervisor shrinks the workers): stop accepting, serve
    /// what was accepted, finish what is in flight, then return from
    /// `Worker::run` (see `Core::begin_retire`). Client connections with
    /// nothing in progress go to `heir` (see [`Command::TakeClient`]).
    Retire {
        deadline: Instant,
        heir: Option<Mailbox>,
    },
    /// Serve this client connection from now on: a retiring worker hands
    /// over a keep-alive connection with nothing in progress (no request
    /// byte read that was not answered, nothing unsent). What the client
    /// sends meanwhile waits in the socket.
    TakeClient {
        fd: OwnedFd,
        peer: std::net::SocketAddr,
        /// When it was first accepted, and requests served on it so far.
        connected_at: std::time::SystemTime,
        requests: u64,
    },
    /// Accept on these listening sockets too, which make up `lane` (see
    /// `crate::listeners`).
    Adopt {
        lane: usize,
        fds: Vec<std::os::fd::RawFd>,
    },
    /// Stop accepting on `lane`'s sockets (another worker took them).
    Release { lane: usize },
    /// A worker was added: answer the next request on one in `every` of
    /// the client connections with `Connection: close`, so that those
    /// clients connect again and the kernel spreads them over all workers
    /// (kept connections stay where they were accepted).
    Shed { every: usize },
    /// The checker's readiness verdict on an upstream (`warmup_check`).
    Ready {
        upstream: crate::spec::UpstreamId,
        ready: bool,
    },
    /// The health checker's verdict on an upstream.
    Health {
        upstream: crate::spec::UpstreamId,
        up: bool,
    },
}

/// The supervisor's end of a worker's inbox.
#[derive(Clone)]
pub struct Mailbox {
    tx: mpsc::Sender<Command>,
    wake: Arc<OwnedFd>,
}

impl std::fmt::Debug for Mailbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mailbox(eventfd {})", self.wake.as_raw_fd())
    }
}

impl Mailbox {
    /// Deliver `cmd` and wake the worker's ring.
    pub fn send(&self, cmd: Command) -> io::Result<()> {
        self.tx
            .send(cmd)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "worker gone"))?;
        reactor::eventfd_signal(self.wake.as_fd())
    }
}

/// The worker's end.
pub struct Inbox {
    rx: mpsc::Receiver<Command>,
    wake: Arc<OwnedFd>,
}

impl Inbox {
    /// The eventfd the worker's ring reads.
    pub fn fd(&self) -> RawFd {
        self.wake.as_raw_fd()
    }

    /// The next command, if one is waiting.
    pub fn try_recv(&self) -> Option<Command> {
        self.rx.try_recv().ok()
    }
}

/// A new inbox and the mailbox that feeds it.
pub fn inbox() -> io::Result<(Mailbox, Inbox)> {
    let wake = Arc::new(reactor::eventfd()?);
    let (tx, rx) = mpsc::channel();
    Ok((
        Mailbox {
            tx,
            wake: Arc::clone(&wake),
        },
        Inbox { rx, wake },
    ))
}
