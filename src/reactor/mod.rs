//! The io_uring driver: one ring per worker thread, and the only place in
//! ringmux with `unsafe` code.
//!
//! The reactor owns everything the kernel may touch while an operation is in
//! flight: send buffers, connect addresses, the tick timespec, the control
//! eventfd's counter and the provided-buffer ring. Callers hand a send
//! buffer over by value and get it back in the [`Event::Sent`] completion,
//! so a connection that is dropped mid-send can never free memory the
//! kernel still reads. Receive buffers reach callers as owned [`RecvBuf`]
//! tokens: the bytes are read through the token, it goes back with
//! [`Reactor::recycle`] (or inside a [`Seg::Ring`] that a send releases), and
//! safe code can neither read a buffer after giving it back nor give it
//! back twice. Callers never see an SQE; they call a method per operation
//! and read [`Event`]s.
//!
//! Short sends are the reactor's business: a send that completes short is
//! continued from where it stopped, and the caller hears of it once, when
//! every byte went out or the send failed.
//!
//! # Which completions reach the event loop
//! - Multishot recv: every data arrival (that is the point), and the final
//!   completion that ends the multishot (peer closed, error, ring dry).
//! - Multishot accept: one per connection.
//! - Sends post their completion: the buffer is reused once the kernel is
//!   done with it and a short send must be continued. Both facts are only
//!   known from the completion, so `IOSQE_CQE_SKIP_SUCCESS` would lose data.
//! - Segment sends (`sendmsg` over an iovec of owned byte buffers and
//!   provided receive buffers) post too, for the same reasons, and because
//!   the receive buffers they read from go back to the kernel only then.
//! - Connects post: the upstream connection becomes usable then.
//! - Closes, and cancels by `user_data`, are submitted with
//!   `IOSQE_CQE_SKIP_SUCCESS`: they own no memory and a success tells the
//!   loop nothing. Their failures surface and are counted.
//! - Shutdowns and cancels by fd post their completion: they name an fd,
//!   and the fd's close waits for every operation that names it (see
//!   [`fds`]: a shutdown runs on an io-wq worker, after anything submitted
//!   beside it).
//! - One multishot timeout ticks the timer wheel.
//! - A read of the worker's control eventfd completes when the control
//!   thread has a message for it.
//!
//! # Waiting in batches
//! Where the kernel has `IORING_FEAT_MIN_TIMEOUT` (6.12) a wait can ask for
//! [`BATCH_WANT`] completions and return with what it has once
//! `batch_wait_us` have passed; it does so only while the loop is busy (the
//! previous wait returned more than one completion). Off by default: it
//! paid while requests of many clients shared one upstream send, and since
//! each client has connections of its own the timer costs more than the
//! wake-ups it saves. Measured against nginx, 64 connections, small GETs:
//! 7.8 µs of CPU per request off, 8.4 µs at 20 µs; 2,000 connections: 11.6
//! against 12.9; 8-deep pipelines: 4.3 either way.
//!
//! This module must never block on anything but `io_uring_enter`.
#![allow(unsafe_code)]

mod buf_ring;
mod fds;

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, EnterFlags, IoUring};
use slab::Slab;
use socket2::SockAddr;

use buf_ring::BufRing;
use fds::FdTable;

/// How the ring was set up, for the start-up log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingMode {
    /// SINGLE_ISSUER + DEFER_TASKRUN: task work runs only when we wait.
    DeferTaskrun,
    /// COOP_TASKRUN: no IPI to interrupt us for task work.
    CoopTaskrun,
    /// No taskrun flags (old kernel).
    Plain,
}

/// Sizes of one worker's ring.
#[derive(Debug, Clone, Copy)]
pub struct RingConfig {
    /// Submission queue entries.
    pub entries: u32,
    /// Number of provided receive buffers (power of two).
    pub buffers: u16,
    /// Size of each receive buffer.
    pub buffer_size: u32,
    /// Period of the tick event, in milliseconds.
    pub tick_ms: u64,
    /// While busy, how long a wait may hold completions back to gather a
    /// batch (0: return at the first completion).
    pub batch_wait_us: u32,
    /// How long a wait polls the ring before it sleeps (0: sleep at once).
    pub busy_poll_us: u32,
}

/// A busy-polling round that takes longer than this (nearly all of it in
/// the kernel) ran task work (counted as work, not idle).
const IDLE_ROUND: Duration = Duration::from_micros(3);

/// Completions a batched wait asks for before its time is up.
pub const BATCH_WANT: usize = 32;

impl Default for RingConfig {
    fn default() -> Self {
        RingConfig {
            entries: 4096,
            buffers: 1024,
            buffer_size: 16 * 1024,
            tick_ms: 100,
            batch_wait_us: 0,
            busy_poll_us: 0,
        }
    }
}

/// A receive buffer the kernel filled and handed over: the bytes are read
/// through it ([`Reactor::buffer`]) and it goes back to the kernel with
/// [`Reactor::recycle`], or inside a [`Seg::Ring`]. Not `Clone`: one owner,
/// one return.
#[derive(Debug)]
pub struct RecvBuf {
    bid: u16,
    len: u32,
}

impl RecvBuf {
    /// A token for tests of code above the reactor: it names no real
    /// buffer (a reactor refuses it: see [`BufRing::recycle`]).
    #[cfg(test)]
    pub(crate) fn for_tests(len: usize) -> Self {
        RecvBuf {
            bid: u16::MAX,
            len: len as u32,
        }
    }
}

/// A completion, decoded.
#[derive(Debug)]
pub enum Event {
    /// Multishot accept on listener `listener` produced a socket, or failed.
    /// `rearm` is set when the multishot ended (it may be submitted again).
    Accepted {
        listener: usize,
        result: io::Result<OwnedFd>,
        rearm: bool,
    },
    /// Multishot recv for `user` completed. `result` is the byte count (0 is
    /// end of stream) or a negative errno; `buffer` holds the bytes and must
    /// be given back; `more` is false when the multishot has ended.
    Received {
        user: u64,
        result: i32,
        buffer: Option<RecvBuf>,
        more: bool,
    },
    /// A send (plain or of segments) for `user` is over: every byte went
    /// out, or it failed. `spare` is a byte buffer of the send, cleared, for
    /// reuse; `lent` is how many receive buffers it carried (now given back).
    Sent {
        user: u64,
        result: io::Result<()>,
        spare: Option<Vec<u8>>,
        lent: usize,
    },
    /// A connect for `user` completed.
    Connected { user: u64, result: io::Result<()> },
    /// The periodic tick fired.
    Tick,
    /// The control eventfd's read completed: `ok` if the control thread
    /// wrote to it (read it again with [`Reactor::read_control`] to hear of
    /// the next message), false if the read failed.
    Control { ok: bool },
    /// A close or cancel failed (successes are skipped in the kernel).
    QuietFailed,
}

// The top byte of user_data says which kind of operation completed; the rest
// is the kind's own payload (a caller token or a slot in one of our tables).
const KIND_SHIFT: u32 = 56;
const PAYLOAD_MASK: u64 = (1 << KIND_SHIFT) - 1;
const K_ACCEPT: u64 = 1;
const K_RECV: u64 = 2;
const K_SEND: u64 = 3;
const K_CONNECT: u64 = 4;
const K_TICK: u64 = 5;
/// A close (success skipped).
const K_CLOSE: u64 = 6;
const K_SENDMSG: u64 = 7;
const K_CONTROL: u64 = 8;
/// A cancel by `user_data` (success skipped; "nothing to cancel" is a
/// race with the operation's own end, not a failure).
const K_CANCEL: u64 = 9;
/// A shutdown of the fd in the payload.
const K_SHUTDOWN: u64 = 10;
/// A cancel of everything on the fd in the payload.
const K_CANCEL_FD: u64 = 11;

/// Largest caller token: callers' recv/send/connect tokens must fit 56 bits.
pub const MAX_USER: u64 = PAYLOAD_MASK;

struct SendOp {
    user: u64,
    fd: RawFd,
    buf: Vec<u8>,
    start: usize,
    /// Receive buffers the segments this send continues carried.
    lent: usize,
    /// A cancel was asked for: a short completion is the end, never
    /// continued (the fd may be closed and reused by then).
    cancelled: bool,
}

/// Part of an outgoing byte stream: owned bytes, or a slice of a receive
/// buffer that is forwarded without being copied.
#[derive(Debug)]
pub enum Seg {
    /// Bytes the caller owns.
    Bytes(Vec<u8>),
    /// `len` bytes at `off` in receive buffer `buf`, which goes back to the
    /// kernel when the send carrying it is over.
    Ring { buf: RecvBuf, off: u32, len: u32 },
}

impl Seg {
    /// Bytes in the segment.
    pub fn len(&self) -> usize {
        match self {
            Seg::Bytes(b) => b.len(),
            Seg::Ring { len, .. } => *len as usize,
        }
    }
}

/// The most segments one send takes (well under IOV_MAX).
pub const MAX_SEGS: usize = 256;

/// A `sendmsg` in flight: the kernel reads `hdr`, `iov` and the memory the
/// iovecs point at until it completes. Boxed so none of it moves.
struct SegSendOp {
    user: u64,
    fd: RawFd,
    segs: Vec<Seg>,
    iov: Vec<libc::iovec>,
    hdr: libc::msghdr,
    /// See [`SendOp::cancelled`].
    cancelled: bool,
}

/// A multishot recv in the kernel.
struct RecvOp {
    user: u64,
    fd: RawFd,
    /// 0: a multishot; otherwise the most bytes it may take in all.
    limit: u32,
}

struct ConnectOp {
    user: u64,
    fd: RawFd,
    /// Boxed so its address stays put while the kernel reads it.
    addr: Box<SockAddr>,
}

/// One worker's io_uring and everything the kernel may touch through it.
pub struct Reactor {
    // Field order matters: the ring is dropped before the memory it uses.
    ring: IoUring,
    bufs: BufRing,
    sends: Slab<SendOp>,
    seg_sends: Slab<Box<SegSendOp>>,
    connects: Slab<ConnectOp>,
    /// Multishot recvs armed, until their final completion.
    recvs: Slab<RecvOp>,
    /// The kernel takes a total limit for a multishot recv (learnt false
    /// from its first EINVAL: single recvs of a buffer then).
    recv_limit: bool,
    /// What names each fd, and the closes waiting for it (see [`fds`]).
    fds: FdTable,
    /// Receive buffers the kernel may fill now (recycled, not yet handed
    /// out again). INVARIANT: `with_kernel <= buffers`.
    with_kernel: usize,
    /// Multishot recvs whose arming waits for a buffer to come back (the
    /// ring was dry: armed now, they would fail again at once), as
    /// `(fd, user)`.
    /// `(fd, user, once)`: `once` as for [`Reactor::recv_once`], 0 for a
    /// multishot.
    starved: Vec<(RawFd, u64, u32)>,
    /// Completions made up here rather than by the kernel (a starved recv
    /// cancelled before it was ever submitted), delivered with the next
    /// reap.
    synthetic: Vec<Event>,
    tick: Box<types::Timespec>,
    /// The eventfd counter a control read fills (boxed: the kernel writes it).
    control: Box<u64>,
    control_armed: bool,
    mode: RingMode,
    /// The batched wait's time limit, or 0 where it is off or unsupported.
    batch_wait_us: u32,
    /// Completions the last wait returned.
    last_batch: usize,
    /// How long a wait polls before it sleeps (zero: it does not).
    busy_poll: Duration,
    /// Multishot accepts in the kernel, and whether the tick is: with the
    /// slabs and the fd table above, everything that may still touch our
    /// memory or name an fd.
    armed_accepts: usize,
    tick_armed: bool,
    /// Operation counters, for tests and the bench report.
    pub stats: ReactorStats,
}

/// Counts of what went through the ring.
#[derive(Debug, Default, Clone, Copy)]
pub struct ReactorStats {
    /// `io_uring_enter` calls made to submit and wait.
    pub enters: u64,
    /// Completions reaped.
    pub completions: u64,
    /// Submission queue entries pushed.
    pub submissions: u64,
    /// Sends submitted (continuations of short sends included).
    pub sends: u64,
    /// Multishot recvs (re)armed.
    pub recv_arms: u64,
    /// Times a recv ended because the buffer ring was empty.
    pub ring_dry: u64,
    /// Closes and cancels that failed.
    pub quiet_failures: u64,
    /// Operations other than a close that found their fd closed (EBADF):
    /// a bug in the order of operations, never expected.
    pub ebadf: u64,
    /// `io_uring_enter` calls made while busy polling, and the time spent
    /// polling (idle time, though the thread is on the CPU: the busy
    /// fraction leaves it out).
    pub polls: u64,
    pub polled: Duration,
}

impl Reactor {
    /// Build the ring on the calling thread (a SINGLE_ISSUER ring must be
    /// used by the thread that made it), with the best taskrun mode the
    /// kernel offers.
    pub fn new(cfg: RingConfig) -> io::Result<Self> {
        let cq = cfg.entries * 4;
        let (ring, mode) = match IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_submit_all()
            .setup_cqsize(cq)
            .build(cfg.entries)
        {
            Ok(r) => (r, RingMode::DeferTaskrun),
            Err(_) => match IoUring::builder()
                .setup_coop_taskrun()
                .setup_submit_all()
                .setup_cqsize(cq)
                .build(cfg.entries)
            {
                Ok(r) => (r, RingMode::CoopTaskrun),
                Err(_) => (
                    IoUring::builder()
                        .setup_cqsize(cq)
                        .build(cfg.entries)
                        .map_err(|e| {
                            io::Error::new(
                                e.kind(),
                                format!("io_uring_setup failed (is io_uring enabled? kernel.io_uring_disabled): {e}"),
                            )
                        })?,
                    RingMode::Plain,
                ),
            },
        };
        let bufs = BufRing::new(&ring, 0, cfg.buffers, cfg.buffer_size)?;
        let batch_wait_us = if ring.params().is_feature_min_timeout() {
            cfg.batch_wait_us
        } else {
            0
        };
        let tick = Box::new(
            types::Timespec::new()
                .sec(cfg.tick_ms / 1000)
                .nsec(((cfg.tick_ms % 1000) * 1_000_000) as u32),
        );
        let mut this = Reactor {
            ring,
            bufs,
            sends: Slab::with_capacity(1024),
            seg_sends: Slab::with_capacity(256),
            connects: Slab::new(),
            recvs: Slab::with_capacity(1024),
            recv_limit: true,
            fds: FdTable::default(),
            with_kernel: cfg.buffers as usize,
            starved: Vec::new(),
            synthetic: Vec::new(),
            tick,
            control: Box::new(0),
            control_armed: false,
            mode,
            batch_wait_us,
            last_batch: 0,
            busy_poll: Duration::from_micros(u64::from(cfg.busy_poll_us)),
            armed_accepts: 0,
            tick_armed: true,
            stats: ReactorStats::default(),
        };
        let tick = opcode::Timeout::new(&*this.tick as *const types::Timespec)
            .count(0)
            .flags(types::TimeoutFlags::MULTISHOT)
            .build()
            .user_data(K_TICK << KIND_SHIFT);
        this.push(tick);
        Ok(this)
    }

    /// How the ring was set up.
    pub fn mode(&self) -> RingMode {
        self.mode
    }

    /// Receive buffers in the ring.
    pub fn buffer_count(&self) -> usize {
        self.bufs.count()
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every pointer an entry carries points into memory this
            // Reactor keeps alive until the entry completes: owned send
            // buffers, boxed sendmsg headers with their iovecs, receive
            // buffers owned by those headers' segments, boxed addresses
            // (released only on their completion), the boxed tick timespec,
            // the boxed control counter and the buffer ring (released after
            // the ring itself is dropped).
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                self.stats.submissions += 1;
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                if e.raw_os_error() != Some(libc::EINTR) && e.raw_os_error() != Some(libc::EBUSY) {
                    panic!("io_uring submit failed: {e}");
                }
            }
        }
    }

    /// Arm multishot accept on a listening socket.
    pub fn accept_multi(&mut self, listener: usize, fd: RawFd) {
        let e = opcode::AcceptMulti::new(types::Fd(fd))
            .flags(libc::SOCK_CLOEXEC)
            .build()
            .user_data((K_ACCEPT << KIND_SHIFT) | listener as u64);
        self.armed_accepts += 1;
        self.push(e);
    }

    /// Multishot accepts armed and not yet ended.
    pub fn accepts_armed(&self) -> usize {
        self.armed_accepts
    }

    /// Cancel the multishot accept of `listener` (its final completion
    /// still arrives, with an error and `rearm`).
    pub fn cancel_accept(&mut self, listener: usize) {
        let e = opcode::AsyncCancel::new((K_ACCEPT << KIND_SHIFT) | listener as u64)
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(K_CANCEL << KIND_SHIFT);
        self.push(e);
    }

    /// Arm multishot recv on `fd`, drawing from the provided-buffer ring.
    /// If the ring has no buffer to give, the recv is armed only once one
    /// comes back: armed now it would end at once with `-ENOBUFS`, again and
    /// again.
    pub fn recv_multi(&mut self, fd: RawFd, user: u64) {
        debug_assert!(user <= MAX_USER);
        if self.with_kernel == 0 {
            self.starved.push((fd, user, 0));
            return;
        }
        self.submit_recv(fd, user);
    }

    fn submit_recv(&mut self, fd: RawFd, user: u64) {
        self.submit_recv_limited(fd, user, 0);
    }

    /// Arm a recv on `fd` drawing from the provided-buffer ring: a
    /// multishot (`limit` 0), or one that takes at most `limit` bytes in all.
    /// A plain multishot takes everything the socket holds whenever it runs,
    /// which a reader that must stay within a budget cannot have.
    fn submit_recv_limited(&mut self, fd: RawFd, user: u64, limit: u32) {
        self.stats.recv_arms += 1;
        let slot = self.recvs.insert(RecvOp { user, fd, limit }) as u32;
        self.fds.started(fd);
        self.fds.set_recv(fd, slot);
        self.submit_recv_sqe(slot);
    }

    /// The SQE for the recv in `slot`. A limited one is a multishot with
    /// the kernel's total limit (`optlen`: one completion per buffer, as
    /// many buffers as arrived in a wait, ending without MORE once the
    /// limit is reached: the last buffer may go past it by less than a
    /// buffer), or, on a kernel without it, a single recv of at most one
    /// buffer: one buffer per turn, which cost a 1 MiB response twice the
    /// CPU of a multishot.
    fn submit_recv_sqe(&mut self, slot: u32) {
        let RecvOp { fd, limit, .. } = self.recvs[slot as usize];
        let ud = (K_RECV << KIND_SHIFT) | u64::from(slot);
        let group = self.bufs.group();
        let e = if limit == 0 {
            opcode::RecvMulti::new(types::Fd(fd), group).build()
        } else if self.recv_limit {
            with_total_limit(opcode::RecvMulti::new(types::Fd(fd), group).build(), limit)
        } else {
            let once = limit.min(self.bufs.buffer_size());
            opcode::Recv::new(types::Fd(fd), std::ptr::null_mut(), once)
                .buf_group(group)
                .build()
                .flags(squeue::Flags::BUFFER_SELECT)
        };
        self.push(e.user_data(ud));
    }

    /// Arm a recv on `fd` that takes at most `max` bytes in all (see
    /// [`Reactor::submit_recv_limited`]); it ends without MORE at the limit.
    /// With no buffer to give, it waits like a multishot would.
    pub fn recv_once(&mut self, fd: RawFd, user: u64, max: u32) {
        debug_assert!(user <= MAX_USER && max > 0);
        if self.with_kernel == 0 {
            self.starved.push((fd, user, max));
            return;
        }
        self.submit_recv_limited(fd, user, max);
    }

    /// Cancel the multishot recv armed on `fd` with `user` (its final
    /// completion still arrives, with -ECANCELED).
    pub fn cancel_recv(&mut self, fd: RawFd, user: u64) {
        if let Some(i) = self.starved.iter().position(|&(_, u, _)| u == user) {
            self.starved.swap_remove(i);
            self.synthetic.push(Event::Received {
                user,
                result: -libc::ECANCELED,
                buffer: None,
                more: false,
            });
            return;
        }
        // None: its final completion was reaped already (and is on its way
        // to the caller).
        let Some(slot) = self.fds.recv(fd) else {
            return;
        };
        let e = opcode::AsyncCancel::new((K_RECV << KIND_SHIFT) | u64::from(slot))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(K_CANCEL << KIND_SHIFT);
        self.push(e);
    }

    /// Send `buf` on `fd`: all of it (a short send is continued) or an
    /// error, reported once in [`Event::Sent`], which gives the buffer back.
    /// MSG_WAITALL makes the kernel keep going on a stream socket rather
    /// than complete short in the first place.
    pub fn send(&mut self, fd: RawFd, buf: Vec<u8>, user: u64) {
        debug_assert!(!buf.is_empty());
        self.fds.started(fd);
        let slot = self.sends.insert(SendOp {
            user,
            fd,
            buf,
            start: 0,
            lent: 0,
            cancelled: false,
        });
        self.submit_send(slot);
    }

    fn submit_send(&mut self, slot: usize) {
        self.stats.sends += 1;
        let op = &self.sends[slot];
        let len = (op.buf.len() - op.start) as u32;
        // The Vec's heap block does not move when the slab grows.
        let ptr = op.buf[op.start..].as_ptr();
        let e = opcode::Send::new(types::Fd(op.fd), ptr, len)
            .flags(libc::MSG_WAITALL | libc::MSG_NOSIGNAL)
            .build()
            .user_data((K_SEND << KIND_SHIFT) | slot as u64);
        self.push(e);
    }

    /// Connect `fd` to `addr`.
    pub fn connect(&mut self, fd: RawFd, addr: SocketAddr, user: u64) {
        self.fds.started(fd);
        let slot = self.connects.insert(ConnectOp {
            user,
            fd,
            addr: Box::new(SockAddr::from(addr)),
        });
        let a = &self.connects[slot].addr;
        let e = opcode::Connect::new(types::Fd(fd), a.as_ptr() as *const libc::sockaddr, a.len())
            .build()
            .user_data((K_CONNECT << KIND_SHIFT) | slot as u64);
        self.push(e);
    }

    /// Cancel every operation in flight on `fd` (a send to a peer that
    /// stopped reading would otherwise keep the socket, and any receive
    /// buffers it sends from, until the peer goes away; a connect would
    /// keep it until the connect times out). The cancel names the fd: a
    /// close asked for after it waits for it (see [`fds`]).
    pub fn cancel_fd(&mut self, fd: RawFd) {
        // A send cut short by this cancel ends here: the fd is closed right
        // after, and may belong to another connection by the time a
        // continuation would go out.
        for (_, op) in self.sends.iter_mut().filter(|(_, op)| op.fd == fd) {
            op.cancelled = true;
        }
        for (_, op) in self.seg_sends.iter_mut().filter(|(_, op)| op.fd == fd) {
            op.cancelled = true;
        }
        while let Some(i) = self.starved.iter().position(|&(f, _, _)| f == fd) {
            let (_, user, _) = self.starved.swap_remove(i);
            self.synthetic.push(Event::Received {
                user,
                result: -libc::ECANCELED,
                buffer: None,
                more: false,
            });
        }
        self.fds.started(fd);
        let e = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data((K_CANCEL_FD << KIND_SHIFT) | fd as u64);
        self.push(e);
    }

    /// Shut the write side of socket `fd` (a FIN to the peer, which may
    /// still send). It posts its completion: a close of `fd` waits for it
    /// (the kernel runs it on an io-wq worker, after what was submitted
    /// beside it).
    pub fn shutdown_write(&mut self, fd: RawFd) {
        self.fds.started(fd);
        let e = opcode::Shutdown::new(types::Fd(fd), libc::SHUT_WR)
            .build()
            .user_data((K_SHUTDOWN << KIND_SHIFT) | fd as u64);
        self.push(e);
    }

    /// Close `fd` through the ring, once no operation in flight names it
    /// (see [`fds`]): at once if none does, else when the last one posts
    /// its final completion. Cancel what would not end by itself first.
    /// The caller submits nothing on `fd` after this.
    pub fn close(&mut self, fd: OwnedFd) {
        let fd = fd.into_raw_fd();
        // A recv waiting for a buffer is not in the kernel: it never will be.
        while let Some(i) = self.starved.iter().position(|&(f, _, _)| f == fd) {
            let (_, user, _) = self.starved.swap_remove(i);
            self.synthetic.push(Event::Received {
                user,
                result: -libc::ECANCELED,
                buffer: None,
                more: false,
            });
        }
        if self.fds.close(fd) {
            self.submit_close(fd);
        }
    }

    fn submit_close(&mut self, fd: RawFd) {
        let e = opcode::Close::new(types::Fd(fd))
            .build()
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(K_CLOSE << KIND_SHIFT);
        self.push(e);
    }

    /// Whether `fd` may leave this ring (to another worker's): no
    /// operation names it any more. If so, the ring forgets it; the caller
    /// passes the [`OwnedFd`] on and names it here no more.
    pub fn release_fd(&mut self, fd: &OwnedFd) -> bool {
        self.fds.release(fd.as_raw_fd())
    }

    /// Read the control eventfd `fd` once: [`Event::Control`] comes when the
    /// control thread has written to it. One read at a time.
    pub fn read_control(&mut self, fd: RawFd) {
        if self.control_armed {
            return;
        }
        self.control_armed = true;
        let e = opcode::Read::new(types::Fd(fd), &mut *self.control as *mut u64 as *mut u8, 8)
            .build()
            .user_data(K_CONTROL << KIND_SHIFT);
        self.push(e);
    }

    /// The bytes a [`Event::Received`] delivered in `buf`.
    pub fn buffer(&self, buf: &RecvBuf) -> &[u8] {
        self.bufs.data(buf.bid, buf.len as usize)
    }

    /// Give a receive buffer back to the kernel (visible at the next wait).
    pub fn recycle(&mut self, buf: RecvBuf) {
        self.bufs.recycle(buf.bid);
        self.with_kernel += 1;
    }

    /// The bytes of a segment.
    pub fn seg_bytes<'a>(&'a self, seg: &'a Seg) -> &'a [u8] {
        match seg {
            Seg::Bytes(b) => b,
            Seg::Ring { buf, off, len } => {
                &self.bufs.data(buf.bid, (*off + *len) as usize)[*off as usize..]
            }
        }
    }

    /// Send `segs` on `fd` in order with one `sendmsg` (at most
    /// [`MAX_SEGS`]; none empty): all of them or an error, reported once in
    /// [`Event::Sent`]; their receive buffers go back to the kernel then.
    pub fn send_segs(&mut self, fd: RawFd, segs: Vec<Seg>, user: u64) {
        assert!(!segs.is_empty() && segs.len() <= MAX_SEGS);
        self.stats.sends += 1;
        self.fds.started(fd);
        let iov: Vec<libc::iovec> = segs
            .iter()
            .map(|seg| {
                let b = self.seg_bytes(seg);
                libc::iovec {
                    iov_base: b.as_ptr() as *mut libc::c_void,
                    iov_len: b.len(),
                }
            })
            .collect();
        // SAFETY: msghdr is a plain C struct for which all-zero is a valid
        // value (no name, no control data, no flags).
        let mut hdr: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut op = Box::new(SegSendOp {
            user,
            fd,
            segs,
            iov,
            hdr,
            cancelled: false,
        });
        hdr.msg_iov = op.iov.as_mut_ptr();
        hdr.msg_iovlen = op.iov.len();
        op.hdr = hdr;
        let hdr_ptr: *const libc::msghdr = &op.hdr;
        let slot = self.seg_sends.insert(op);
        let e = opcode::SendMsg::new(types::Fd(fd), hdr_ptr)
            .flags((libc::MSG_WAITALL | libc::MSG_NOSIGNAL) as u32)
            .build()
            .user_data((K_SENDMSG << KIND_SHIFT) | slot as u64);
        self.push(e);
    }

    /// Give back the receive buffers of `segs`; returns how many there
    /// were and the largest byte buffer, cleared, for reuse.
    fn release_segs(&mut self, segs: Vec<Seg>) -> (usize, Option<Vec<u8>>) {
        let mut lent = 0;
        let mut spare: Option<Vec<u8>> = None;
        for seg in segs {
            match seg {
                Seg::Ring { buf, .. } => {
                    lent += 1;
                    self.recycle(buf);
                }
                Seg::Bytes(mut b) => {
                    if spare.as_ref().is_none_or(|s| s.capacity() < b.capacity()) {
                        b.clear();
                        spare = Some(b);
                    }
                }
            }
        }
        (lent, spare)
    }

    /// Whether waits gather batches (configured and supported).
    pub fn batches(&self) -> bool {
        self.batch_wait_us > 0
    }

    /// Submit everything queued, wait for at least one completion (while
    /// busy, for a batch: see the module doc) or until `limit` has passed,
    /// and append all available completions to `events` (none if the
    /// limit ran out first).
    pub fn wait(&mut self, events: &mut Vec<Event>, limit: Option<Duration>) -> io::Result<()> {
        self.bufs.publish();
        if self.with_kernel > 0 && !self.starved.is_empty() {
            // Buffers came back since these recvs ran dry: as many recvs go
            // back in as there are buffers for (the others would fail
            // again at once), the longest waiting first.
            let n = self.with_kernel.min(self.starved.len());
            for (fd, user, once) in self.starved.drain(..n).collect::<Vec<_>>() {
                self.submit_recv_limited(fd, user, once);
            }
        }
        let limit = match (limit, self.synthetic.is_empty()) {
            // Made-up completions are ready now: do not sleep.
            (_, false) => Some(Duration::ZERO),
            (l, true) => l,
        };
        let batch = self.batch_wait_us > 0 && self.last_batch > 1;
        // Polling would return at the first completion: not while a batched
        // wait is to gather several.
        let mut limit = limit;
        if !self.busy_poll.is_zero() && !batch && limit.is_none_or(|l| !l.is_zero()) {
            let start = Instant::now();
            if self.poll(limit)? {
                self.reap(events);
                return Ok(());
            }
            // The deadline stays where it was.
            limit = limit.map(|l| l.saturating_sub(start.elapsed()));
        }
        let limit = limit.map(|d| {
            types::Timespec::new()
                .sec(d.as_secs())
                .nsec(d.subsec_nanos())
        });
        loop {
            self.stats.enters += 1;
            let entered = match (batch, &limit) {
                (false, None) => self.ring.submit_and_wait(1),
                (batch, limit) => {
                    let mut args = types::SubmitArgs::new();
                    if batch {
                        args = args.min_wait_usec(self.batch_wait_us);
                    }
                    if let Some(ts) = limit {
                        args = args.timespec(ts);
                    }
                    let want = if batch { BATCH_WANT } else { 1 };
                    self.ring.submitter().submit_with_args(want, &args)
                }
            };
            match entered {
                Ok(_) => break,
                // The batch's time, or the caller's limit, ran out with
                // fewer completions than asked for (maybe none).
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => break,
                // A signal landed (SIGHUP, a debugger): not a failure.
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {
                    if !self.ring.completion().is_empty() {
                        break;
                    }
                }
                // The completion queue overflowed: reap, then submit again.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => break,
                Err(e) => return Err(e),
            }
        }
        self.reap(events);
        Ok(())
    }

    /// Busy polling (`--busy-poll`): submit what is queued, then run the
    /// ring's pending work without sleeping until a completion is there,
    /// the polling time is over, or `limit` is. True if a completion is
    /// there (the caller reaps instead of sleeping). A completion taken this
    /// way needs no wake-up: on a loopback or a VM, the waker's
    /// inter-processor interrupt and the sleeper's return cost tens of
    /// microseconds (c=1: 7,200 req/s sleeping, 20,000 polling 20 µs).
    fn poll(&mut self, limit: Option<Duration>) -> io::Result<bool> {
        let start = Instant::now();
        let cpu_start = thread_cpu_time();
        let until = start + limit.map_or(self.busy_poll, |l| l.min(self.busy_poll));
        let mut to_submit = self.ring.submission().len() as u32;
        let (mut at, mut idle) = (start, Duration::ZERO);
        let found = loop {
            self.stats.enters += 1;
            self.stats.polls += 1;
            // SAFETY: no signal mask is passed (`None`); `enter` with
            // GETEVENTS and `min_complete` 0 submits `to_submit` entries
            // already in the queue (all initialised by `push`, the tail
            // published when its queue handle dropped) and runs the ring's
            // deferred task work, without waiting.
            let entered = unsafe {
                self.ring.submitter().enter::<libc::sigset_t>(
                    to_submit,
                    0,
                    EnterFlags::GETEVENTS.bits(),
                    None,
                )
            };
            let submitted = to_submit > 0;
            let now = Instant::now();
            match entered {
                Ok(_) => to_submit = 0,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) => {}
                Err(e) => return Err(e),
            }
            if !self.ring.completion().is_empty() {
                break true;
            }
            // A round that submitted nothing, posted nothing and came back
            // at once was idle. (Task work can run without posting: a long
            // send continuing. Such a round takes longer and counts as work.)
            if !submitted && now - at < IDLE_ROUND {
                idle += now - at;
            }
            at = now;
            if now >= until {
                break false;
            }
            std::hint::spin_loop();
        };
        // Wall time can include time the thread was preempted: never more
        // idle than the CPU time the poll took.
        self.stats.polled += idle.min(thread_cpu_time().saturating_sub(cpu_start));
        Ok(found)
    }

    /// Operations the kernel may still be working on (and memory of ours it
    /// may still touch).
    fn in_flight(&self) -> usize {
        // Every send, segment send, connect and recv names its fd, so the
        // fd table counts it (with shutdowns and cancels by fd).
        debug_assert!(
            self.sends.len() + self.seg_sends.len() + self.connects.len() + self.recvs.len()
                <= self.fds.in_flight()
        );
        self.fds.in_flight()
            + self.armed_accepts
            + usize::from(self.tick_armed)
            + usize::from(self.control_armed)
    }

    /// Cancel everything in flight and wait (up to `limit`) for the kernel
    /// to finish with it, so that the ring and the buffers can be freed
    /// safely; true when nothing is left in flight. Used when a worker
    /// goes away while the process carries on (a restart, a drain).
    pub fn quiesce(&mut self, limit: Duration) -> bool {
        self.starved.clear();
        self.synthetic.clear();
        if self.in_flight() == 0 {
            self.finish_closes();
            return true;
        }
        for (_, op) in self.sends.iter_mut() {
            op.cancelled = true;
        }
        for (_, op) in self.seg_sends.iter_mut() {
            op.cancelled = true;
        }
        let deadline = std::time::Instant::now() + limit;
        let step = types::Timespec::new().nsec(20_000_000);
        let mut events = Vec::new();
        while self.in_flight() > 0 && std::time::Instant::now() < deadline {
            // One cancel does not reach everything: with a thousand idle
            // connections each reached about a hundred of their recvs, and
            // the tick's timeout last (quiescing gave up after 2 s). Ask
            // again each round until nothing is left.
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any())
                .build()
                .flags(squeue::Flags::SKIP_SUCCESS)
                .user_data(K_CANCEL << KIND_SHIFT);
            self.push(cancel);
            let args = types::SubmitArgs::new().timespec(&step);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                    ) => {}
                Err(_) => return false,
            }
            events.clear();
            self.reap(&mut events);
            for ev in events.drain(..) {
                match ev {
                    // Connections accepted while the worker was going away:
                    // nobody will serve them.
                    Event::Accepted { result: Ok(fd), .. } => self.close(fd),
                    Event::Received {
                        buffer: Some(b), ..
                    } => self.recycle(b),
                    _ => {}
                }
            }
        }
        self.finish_closes();
        self.in_flight() == 0
    }

    /// The ring is going away: the closes its last completions let go are
    /// submitted. Closes still waiting for an operation (the kernel did not
    /// finish within the limit) stay undone: an operation still queued
    /// could name the number once it is someone else's, so those fds leak
    /// with the memory (see `Drop`).
    fn finish_closes(&mut self) {
        let _ = self.ring.submit();
    }

    /// Decode every completion in the queue into `events`.
    fn reap(&mut self, events: &mut Vec<Event>) {
        let before = events.len();
        events.append(&mut self.synthetic);
        // Short sends continue here, after the completion queue is read.
        let mut resend: Vec<usize> = Vec::new();
        // Limited recvs to submit again as single recvs (see `recv_limit`).
        let mut rearm: Vec<u32> = Vec::new();
        let mut seg_rest: Vec<(u64, RawFd, Vec<u8>, usize)> = Vec::new();
        // Segments of segment sends that ended, in the order of their events
        // (whose `lent` is filled in below), and of short ones continued.
        let mut done_segs: Vec<Vec<Seg>> = Vec::new();
        let mut short_segs: Vec<Vec<Seg>> = Vec::new();
        // Fds whose last operation ended with their close waiting.
        let mut to_close: Vec<RawFd> = Vec::new();
        {
            let sends = &mut self.sends;
            let seg_sends = &mut self.seg_sends;
            let connects = &mut self.connects;
            let recvs = &mut self.recvs;
            let recv_limit = &mut self.recv_limit;
            let fds = &mut self.fds;
            let stats = &mut self.stats;
            let armed_accepts = &mut self.armed_accepts;
            let tick_armed = &mut self.tick_armed;
            let control_armed = &mut self.control_armed;
            let with_kernel = &mut self.with_kernel;
            let bufs = &self.bufs;
            for cqe in self.ring.completion() {
                stats.completions += 1;
                let ud = cqe.user_data();
                let payload = ud & PAYLOAD_MASK;
                let res = cqe.result();
                let flags = cqe.flags();
                let kind = ud >> KIND_SHIFT;
                if res == -libc::EBADF && kind != K_CLOSE {
                    stats.ebadf += 1;
                }
                let ev = match kind {
                    K_RECV => {
                        if res == -libc::ENOBUFS {
                            stats.ring_dry += 1;
                        }
                        let slot = payload as usize;
                        let user = recvs[slot].user;
                        if res == -libc::EINVAL && recvs[slot].limit > 0 && *recv_limit {
                            // A kernel without a multishot's total limit
                            // refused the SQE: single recvs from now on,
                            // this one first (the fd's count still holds).
                            *recv_limit = false;
                            rearm.push(slot as u32);
                            continue;
                        }
                        if !cqueue::more(flags) {
                            let op = recvs.remove(slot);
                            fds.recv_ended(op.fd, slot as u32);
                            if fds.finished(op.fd) {
                                to_close.push(op.fd);
                            }
                        }
                        let buffer = cqueue::buffer_select(flags).map(|bid| {
                            *with_kernel -= 1;
                            RecvBuf {
                                bid,
                                len: res.max(0) as u32,
                            }
                        });
                        Event::Received {
                            user,
                            result: res,
                            buffer,
                            more: cqueue::more(flags),
                        }
                    }
                    K_SEND => {
                        let slot = payload as usize;
                        let op = &mut sends[slot];
                        match to_result(res) {
                            Ok(n)
                                if n > 0
                                    && op.cancelled
                                    && op.start + (n as usize) < op.buf.len() =>
                            {
                                let mut op = sends.remove(slot);
                                if fds.finished(op.fd) {
                                    to_close.push(op.fd);
                                }
                                op.buf.clear();
                                Event::Sent {
                                    user: op.user,
                                    result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                                    spare: Some(op.buf),
                                    lent: op.lent,
                                }
                            }
                            Ok(n) if n > 0 && op.start + (n as usize) < op.buf.len() => {
                                // Short (interrupted while the peer was not
                                // reading): go on from where it stopped.
                                op.start += n as usize;
                                resend.push(slot);
                                continue;
                            }
                            result => {
                                let mut op = sends.remove(slot);
                                if fds.finished(op.fd) {
                                    to_close.push(op.fd);
                                }
                                op.buf.clear();
                                Event::Sent {
                                    user: op.user,
                                    result: result.map(|_| ()),
                                    spare: Some(op.buf),
                                    lent: op.lent,
                                }
                            }
                        }
                    }
                    K_SENDMSG => {
                        let op = seg_sends.remove(payload as usize);
                        let total: usize = op.segs.iter().map(Seg::len).sum();
                        match to_result(res) {
                            Ok(n) if n > 0 && op.cancelled && (n as usize) < total => {
                                if fds.finished(op.fd) {
                                    to_close.push(op.fd);
                                }
                                done_segs.push(op.segs);
                                Event::Sent {
                                    user: op.user,
                                    result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                                    spare: None,
                                    lent: usize::MAX, // filled in below
                                }
                            }
                            Ok(n) if n > 0 && (n as usize) < total => {
                                // Short: copy what is left and send it the
                                // plain way; the receive buffers go back now.
                                let mut rest = Vec::with_capacity(total - n as usize);
                                let mut skip = n as usize;
                                for seg in &op.segs {
                                    let b: &[u8] = match seg {
                                        Seg::Bytes(b) => b,
                                        Seg::Ring { buf, off, len } => &bufs
                                            .data(buf.bid, (*off + *len) as usize)
                                            [*off as usize..],
                                    };
                                    let k = skip.min(b.len());
                                    rest.extend_from_slice(&b[k..]);
                                    skip -= k;
                                }
                                let lent = op
                                    .segs
                                    .iter()
                                    .filter(|s| matches!(s, Seg::Ring { .. }))
                                    .count();
                                seg_rest.push((op.user, op.fd, rest, lent));
                                short_segs.push(op.segs);
                                continue;
                            }
                            result => {
                                if fds.finished(op.fd) {
                                    to_close.push(op.fd);
                                }
                                done_segs.push(op.segs);
                                Event::Sent {
                                    user: op.user,
                                    result: result.map(|_| ()),
                                    spare: None,
                                    lent: usize::MAX, // filled in below
                                }
                            }
                        }
                    }
                    K_ACCEPT => {
                        if !cqueue::more(flags) {
                            *armed_accepts = armed_accepts.saturating_sub(1);
                        }
                        Event::Accepted {
                            listener: payload as usize,
                            // SAFETY: the kernel made this fd for us in
                            // this accept; nothing else owns it.
                            result: to_result(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                            rearm: !cqueue::more(flags),
                        }
                    }
                    K_CONNECT => {
                        let op = connects.remove(payload as usize);
                        if fds.finished(op.fd) {
                            to_close.push(op.fd);
                        }
                        Event::Connected {
                            user: op.user,
                            result: to_result(res).map(|_| ()),
                        }
                    }
                    K_TICK => {
                        if !cqueue::more(flags) {
                            *tick_armed = false;
                        }
                        Event::Tick
                    }
                    K_CONTROL => {
                        *control_armed = false;
                        Event::Control { ok: res == 8 }
                    }
                    K_SHUTDOWN | K_CANCEL_FD => {
                        // Their outcome changes nothing for the caller (a
                        // shutdown that failed: the close follows anyway).
                        let fd = payload as RawFd;
                        if fds.finished(fd) {
                            to_close.push(fd);
                        }
                        continue;
                    }
                    K_CANCEL if res == -libc::ENOENT || res == -libc::EALREADY => {
                        // The operation was ending by itself.
                        continue;
                    }
                    _ => {
                        stats.quiet_failures += 1;
                        Event::QuietFailed
                    }
                };
                events.push(ev);
            }
        }
        // Segment sends that ended: their buffers go back, in the order the
        // events were pushed (`lent` was left for here).
        let mut done_segs = done_segs.into_iter();
        for ev in events[before..].iter_mut() {
            if let Event::Sent { lent, spare, .. } = ev {
                if *lent == usize::MAX {
                    let segs = done_segs.next().expect("one release per segment send");
                    let (n, s) = self.release_segs(segs);
                    *lent = n;
                    *spare = s;
                }
            }
        }
        for segs in short_segs {
            self.release_segs(segs);
        }
        for slot in resend {
            self.submit_send(slot);
        }
        for slot in rearm {
            self.submit_recv_sqe(slot);
        }
        for fd in to_close {
            self.submit_close(fd);
        }
        for (user, fd, rest, lent) in seg_rest {
            let slot = self.sends.insert(SendOp {
                user,
                fd,
                buf: rest,
                start: 0,
                lent,
                cancelled: false,
            });
            self.submit_send(slot);
        }
        self.last_batch = events.len() - before;
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        // The ring's teardown in the kernel runs after close returns: an
        // armed recv could still write into a provided buffer we freed.
        // Cancel and drain first; if that does not finish, leak the
        // buffers rather than free memory the kernel may touch.
        if !self.quiesce(Duration::from_secs(2)) {
            self.bufs.leak();
            std::mem::forget(std::mem::take(&mut self.sends));
            std::mem::forget(std::mem::take(&mut self.seg_sends));
            std::mem::forget(std::mem::take(&mut self.connects));
            std::mem::forget(std::mem::replace(&mut self.control, Box::new(0)));
        }
    }
}

/// `e`, a multishot recv, with a total limit of `limit` bytes: the SQE's
/// `optlen` field, which the io-uring crate sets only for socket options.
fn with_total_limit(e: squeue::Entry, limit: u32) -> squeue::Entry {
    /// Where `optlen` is in the kernel's 64-byte `io_uring_sqe` (the union
    /// it shares with `file_index` and `splice_fd_in`, unused by a recv).
    const OPTLEN: usize = 44;
    // SAFETY: `squeue::Entry` is `#[repr(C)]` around the kernel's
    // `io_uring_sqe` (`transmute` checks it is 64 bytes), made of integers
    // and unions of integers only: every 64 bytes are a valid value.
    let mut raw: [u8; 64] = unsafe { std::mem::transmute(e) };
    raw[OPTLEN..OPTLEN + 4].copy_from_slice(&limit.to_ne_bytes());
    // SAFETY: as above.
    unsafe { std::mem::transmute(raw) }
}

/// Raise this process's soft limit on open files to its hard limit (a
/// proxy holds two sockets per client it serves) and return the limit in
/// force then.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit from a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        }
    }
    Ok(lim.rlim_cur)
}

fn to_result(res: i32) -> io::Result<i32> {
    if res < 0 {
        Err(io::Error::from_raw_os_error(-res))
    } else {
        Ok(res)
    }
}

/// The peer address of a connected socket (multishot accept does not
/// report it). One getpeername per accepted connection.
pub fn peer_addr(fd: &impl std::os::fd::AsFd) -> io::Result<SocketAddr> {
    let sock = socket2::SockRef::from(fd);
    sock.peer_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an inet socket"))
}

/// A close-on-exec eventfd (the control plane wakes a worker's ring by
/// writing to it). Blocking, so that the ring's read waits for a write
/// rather than failing with EAGAIN.
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd takes no pointers; a negative result is an error.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// CPU time the calling thread has used, user and kernel: what a worker's
/// busy fraction is made of. (Time outside the ring's wait is not: with
/// DEFER_TASKRUN the kernel does a socket's work inside `io_uring_enter`,
/// and a saturated worker measured 0.09 that way.)
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec into a live local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Add one to eventfd `fd`'s counter, waking whoever reads it.
pub fn eventfd_signal(fd: std::os::fd::BorrowedFd<'_>) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a live local to an fd the borrow keeps
    // open for the call.
    let n = unsafe { libc::write(fd.as_raw_fd(), &one as *const u64 as *const libc::c_void, 8) };
    if n == 8 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    fn small_ring() -> Reactor {
        Reactor::new(RingConfig {
            entries: 64,
            buffers: 16,
            buffer_size: 4096,
            ..RingConfig::default()
        })
        .expect("a ring")
    }

    /// Let the ring run for a moment, taking whatever completes.
    fn run_for(r: &mut Reactor, rounds: usize) {
        let mut events = Vec::new();
        for _ in 0..rounds {
            r.wait(&mut events, Some(Duration::from_millis(2))).unwrap();
            for ev in events.drain(..) {
                if let Event::Received {
                    buffer: Some(b), ..
                } = ev
                {
                    r.recycle(b);
                }
            }
        }
    }

    #[test]
    fn a_shutdown_submitted_beside_its_close_never_reaches_the_next_owner_of_the_number() {
        let mut r = small_ring();
        for round in 0..200 {
            let (a, mut b) = UnixStream::pair().unwrap();
            let a = OwnedFd::from(a);
            r.shutdown_write(a.as_raw_fd());
            r.close(a);
            // Submitted; then a new socket is made at once, as an accept
            // would make one. Had the close run before the shutdown, it
            // would likely get `fd`'s number and the shutdown's FIN.
            let mut events = Vec::new();
            r.wait(&mut events, Some(Duration::ZERO)).unwrap();
            let (c, mut d) = UnixStream::pair().unwrap();
            run_for(&mut r, 3);
            let mut byte = [0u8; 1];
            b.set_nonblocking(false).unwrap();
            b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            assert_eq!(
                b.read(&mut byte).unwrap(),
                0,
                "round {round}: the FIN reached its own peer"
            );
            d.set_nonblocking(true).unwrap();
            let err = d.read(&mut byte).expect_err("no FIN for the stranger");
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock, "round {round}");
            drop(c);
        }
        assert_eq!(r.stats.quiet_failures, 0);
        assert_eq!(r.stats.ebadf, 0);
    }

    /// Everything a limited recv on a socket holding 20 KiB takes before it
    /// ends: (bytes, completions).
    fn limited_recv_takes(r: &mut Reactor, limit: u32) -> (usize, usize) {
        let (a, mut b) = UnixStream::pair().unwrap();
        std::io::Write::write_all(&mut b, &[7u8; 20 * 1024]).unwrap();
        let a = OwnedFd::from(a);
        r.recv_once(a.as_raw_fd(), 9, limit);
        let (mut bytes, mut completions) = (0, 0);
        let mut events = Vec::new();
        'wait: for _ in 0..100 {
            r.wait(&mut events, Some(Duration::from_millis(2))).unwrap();
            for ev in events.drain(..) {
                if let Event::Received {
                    result,
                    buffer,
                    more,
                    ..
                } = ev
                {
                    if let Some(b) = buffer {
                        r.recycle(b);
                    }
                    assert!(result > 0, "{result}");
                    bytes += result as usize;
                    completions += 1;
                    if !more {
                        break 'wait;
                    }
                }
            }
        }
        r.close(a);
        run_for(r, 2);
        (bytes, completions)
    }

    #[test]
    fn a_limited_recv_ends_once_its_limit_is_reached() {
        // 4 KiB buffers: the kernel counts whole buffers against the limit
        // and ends the multishot once it is reached, so the last buffer may
        // go past it (by less than a buffer).
        let mut r = small_ring();
        assert_eq!(limited_recv_takes(&mut r, 10_000), (3 * 4096, 3));
        assert!(r.recv_limit, "this kernel takes a multishot's total limit");
        assert_eq!(limited_recv_takes(&mut r, 8192), (8192, 2));
        // Without the kernel's limit: one single recv of a buffer at most.
        r.recv_limit = false;
        assert_eq!(limited_recv_takes(&mut r, 10_000), (4096, 1));
        assert_eq!(limited_recv_takes(&mut r, 100), (100, 1));
    }

    #[test]
    fn a_close_waits_for_the_recv_armed_on_its_fd() {
        let mut r = small_ring();
        let (a, mut b) = UnixStream::pair().unwrap();
        let a = OwnedFd::from(a);
        let fd = a.as_raw_fd();
        r.recv_multi(fd, 7);
        run_for(&mut r, 1);
        r.cancel_recv(fd, 7);
        r.close(a);
        // Not closed until the recv's final completion came back.
        assert_eq!(r.fds.in_flight(), 1);
        let mut events = Vec::new();
        for _ in 0..50 {
            r.wait(&mut events, Some(Duration::from_millis(2))).unwrap();
            if events.iter().any(|e| {
                matches!(
                    e,
                    Event::Received {
                        user: 7,
                        more: false,
                        ..
                    }
                )
            }) {
                break;
            }
        }
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Event::Received { user: 7, result, more: false, .. } if *result == -libc::ECANCELED)),
            "{events:?}"
        );
        run_for(&mut r, 2);
        assert_eq!(r.fds.in_flight(), 0);
        // Then the ring closed it: its peer reads the end.
        let mut byte = [0u8; 1];
        b.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        assert_eq!(b.read(&mut byte).unwrap(), 0, "fd {fd} is closed");
    }
}
