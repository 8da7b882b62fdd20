//! The listening sockets, in lanes, and which worker accepts on each.
//!
//! With `--accept reuseport` (the default) a lane is one SO_REUSEPORT
//! socket per listen address; the kernel spreads new connections over the
//! lanes by a hash of the connection's addresses. Worker `i` starts on lane
//! `i`. A reuseport socket that is closed drops the connections queued on
//! it (unless `net.ipv4.tcp_migrate_req` is on, which it is not by
//! default), so lanes are never closed while the proxy runs: when a worker
//! retires, another worker takes its lanes over first (both accept on them
//! for a moment, so there is no instant with nobody accepting), and the
//! retiring one then cancels its accepts. When the pool grows again, lane
//! `i` goes back to the new worker `i`. So there are never more lanes than
//! the most workers there ever were, and a worker carries more than one
//! lane only while the pool is below its peak.
//!
//! SO_REUSEPORT would also let ringmux join another process's group on
//! the same address without a word (an nginx with `reuseport`, a second
//! ringmux), and the kernel would split that process's clients with us.
//! So before the lanes are bound each address is probed with a plain bind
//! (no SO_REUSEPORT), which fails if anything listens there; only
//! `--reuse-port-shared` skips the probe, for a deliberate hand-over.
//!
//! With `--accept shared` there is one lane, one socket per address, and
//! every worker accepts on it with multishot accept (measured uneven: see
//! the README).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use crate::config::{AcceptMode, Config};

/// Every lane and its owner.
pub struct Lanes {
    mode: AcceptMode,
    /// The addresses, as bound (port 0 resolved).
    bound: Vec<SocketAddr>,
    /// Per lane, one socket per address (open while the process runs:
    /// workers name them by number).
    lanes: Vec<Vec<OwnedFd>>,
    /// Per lane, the worker accepting on it (None: nobody yet).
    owner: Vec<Option<usize>>,
}

/// Whether something listens on `addr` already: a bind without
/// SO_REUSEPORT (with SO_REUSEADDR, so that connections in TIME_WAIT do
/// not count) fails then. Port 0 asks for a free port: nothing to check.
fn taken(addr: SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    let Ok(s) = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM.cloexec(),
        Some(socket2::Protocol::TCP),
    ) else {
        return false;
    };
    let _ = s.set_reuse_address(true);
    matches!(s.bind(&addr.into()), Err(e) if e.kind() == std::io::ErrorKind::AddrInUse)
}

fn bind_one(addr: SocketAddr) -> std::io::Result<(OwnedFd, SocketAddr)> {
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
    let bound = s
        .local_addr()?
        .as_socket()
        .expect("inet listener has an inet address");
    Ok((s.into(), bound))
}

impl Lanes {
    /// Bind the lanes the first `cfg.workers` workers need.
    pub fn bind(cfg: &Config) -> std::io::Result<Lanes> {
        let mut lanes = Lanes {
            mode: cfg.accept,
            bound: Vec::new(),
            lanes: Vec::new(),
            owner: Vec::new(),
        };
        if !cfg.reuse_port_shared {
            if let Some(addr) = cfg.listen.iter().copied().find(|&a| taken(a)) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    format!(
                        "cannot listen on {addr}: another process listens there already \
                         (--reuse-port-shared shares it with that process on purpose)"
                    ),
                ));
            }
        }
        // The first lane binds the addresses (port 0 picks one); the
        // others share what it got.
        let mut first = Vec::with_capacity(cfg.listen.len());
        for &want in &cfg.listen {
            let (fd, addr) = bind_one(want)?;
            first.push(fd);
            lanes.bound.push(addr);
        }
        lanes.lanes.push(first);
        lanes.owner.push(None);
        if cfg.accept == AcceptMode::Reuseport {
            for _ in 1..cfg.workers {
                lanes.add()?;
            }
        }
        Ok(lanes)
    }

    fn add(&mut self) -> std::io::Result<()> {
        let mut fds = Vec::with_capacity(self.bound.len());
        for &addr in &self.bound {
            // (Half a lane would take connections nobody accepts: the
            // sockets bound so far close as `fds` drops.)
            let (fd, _) = bind_one(addr)?;
            fds.push(fd);
        }
        self.lanes.push(fds);
        self.owner.push(None);
        Ok(())
    }

    /// The addresses the proxy listens on.
    pub fn bound(&self) -> &[SocketAddr] {
        &self.bound
    }

    /// The lane worker `i` starts on (made if it does not exist yet): its
    /// own, or the shared one.
    pub fn home_of(&mut self, worker: usize) -> std::io::Result<usize> {
        if self.mode == AcceptMode::Shared {
            return Ok(0);
        }
        while self.lanes.len() <= worker {
            self.add()?;
        }
        Ok(worker)
    }

    /// The sockets of `lane`, by number (they stay open while the
    /// process runs).
    pub fn fds(&self, lane: usize) -> Vec<RawFd> {
        self.lanes[lane].iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Who accepts on `lane` now.
    pub fn owner(&self, lane: usize) -> Option<usize> {
        self.owner[lane]
    }

    /// `worker` accepts on `lane` from now on.
    pub fn set_owner(&mut self, lane: usize, worker: usize) {
        if self.mode == AcceptMode::Reuseport {
            self.owner[lane] = Some(worker);
        }
    }

    /// The lanes `worker` accepts on, with their sockets (for starting it
    /// again after a crash): (lane, socket) pairs.
    pub fn owned_by(&self, worker: usize) -> Vec<(usize, RawFd)> {
        if self.mode == AcceptMode::Shared {
            return self.fds(0).into_iter().map(|fd| (0, fd)).collect();
        }
        (0..self.lanes.len())
            .filter(|&l| self.owner[l] == Some(worker))
            .flat_map(|l| self.fds(l).into_iter().map(move |fd| (l, fd)))
            .collect()
    }

    /// The lanes `worker` owns, by number (reuseport only: a shared lane
    /// belongs to everyone).
    pub fn lanes_of(&self, worker: usize) -> Vec<usize> {
        if self.mode == AcceptMode::Shared {
            return Vec::new();
        }
        (0..self.lanes.len())
            .filter(|&l| self.owner[l] == Some(worker))
            .collect()
    }

    /// Stop listening on every socket without closing any: new
    /// connections are refused and the accepts armed on them end. The
    /// numbers stay allocated (closed when the process exits), so an accept
    /// a worker arms late finds this dead socket, never a stranger's (see
    /// `reactor::fds`).
    pub fn stop_listening(&self) {
        for fd in self.lanes.iter().flatten() {
            let _ = socket2::SockRef::from(fd).shutdown(std::net::Shutdown::Both);
        }
    }
}
