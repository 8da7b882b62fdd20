//! An upstream connection and the transitions of its life: connecting,
//! carrying one client's exchanges (the front one reading its response),
//! idle in the pool, closing. The core changes a connection only through
//! these methods.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::time::{Duration, Instant};

use super::client::{RecvCtl, KEEP_SPARE};
use super::core::ClientId;
use crate::pool::routes::RouteKey;
use crate::session::ExchangeId;
use crate::spec::UpstreamId;
use crate::tls::transport::ClientStream;

/// Request bytes queued on an upstream connection before the client is
/// paused.
pub(super) const UPSTREAM_OUT_LIMIT: usize = 256 * 1024;

/// Requests of one client that may follow one another on one upstream
/// connection.
const MAX_SHARED: usize = 16;

/// How long an idle connection is kept to an origin that announced
/// `Keep-Alive: timeout=secs`: a second less (half of it for a timeout of
/// a second or two), so that a request is never sent just as the origin
/// closes (a POST crossing that close cannot be sent again: 502). The
/// worker's tick checks idle deadlines every 100 ms.
fn idle_limit(secs: u32) -> Duration {
    let ms = u64::from(secs) * 1000;
    Duration::from_millis(ms.saturating_sub(1000).max(ms / 2))
}

/// One of the client's exchanges on an upstream connection.
#[derive(Debug, Clone, Copy)]
pub(super) struct Job {
    pub exchange: ExchangeId,
    pub route: RouteKey,
    /// How long its response's first byte may take once its request is
    /// out (its route's, or `--response-timeout`).
    pub timeout: Duration,
    /// Bytes of its request were written to the connection's output: the
    /// origin may answer it, so it keeps its place in line.
    pub handed: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UpState {
    /// Connect in flight.
    Connecting,
    /// Connected, carrying the exchanges in `jobs`.
    Open,
    /// In the idle pool.
    Idle,
}

/// A connection to an origin.
pub(crate) struct UpstreamConn {
    pub(super) fd: OwnedFd,
    /// Its backend's pool (see `backends.rs`).
    pub(super) pool: usize,
    pub(super) upstream: UpstreamId,
    pub(super) state: UpState,
    /// The one client whose exchanges this connection carries; None while
    /// idle. INVARIANT: `jobs` is empty when this is None.
    pub(super) client: Option<ClientId>,
    /// That client's exchanges here, in the order their requests were
    /// written; the front one is reading its response.
    pub(super) jobs: VecDeque<Job>,
    pub(super) recv: RecvCtl,
    /// Request bytes waiting to be sent.
    pub(super) out: Vec<u8>,
    pub(super) sending: usize,
    spare: Vec<u8>,
    /// The front exchange got the connection from the idle pool (or after
    /// another exchange): what follows a failure may be tried again.
    pub(super) reused: bool,
    /// The front exchange has received a response byte.
    pub(super) responded: bool,
    /// The origin has answered on this connection at least once.
    pub(super) proven: bool,
    /// The exchanges behind the front were sent elsewhere because the
    /// front was late: the connection closes after the front's response.
    pub(super) late: bool,
    /// Our write side is shut (a tunnel whose client half-closed).
    pub(super) shut_wr: bool,
    /// How long the origin said it keeps an idle connection (`Keep-Alive:
    /// timeout=N`), less a margin: the pool lets go of it before then.
    pub(super) idle_limit: Option<Duration>,
    /// A send failed (the origin closed or reset): nothing more is
    /// written, and the connection is read to its end, since an origin
    /// that answers early and closes may have answered already.
    pub(super) write_failed: bool,
    /// Since when the front exchange's request has been on the wire at the
    /// front (None: not written yet).
    front_since: Option<Instant>,
    /// Connect deadline, or the front exchange's first-byte deadline, or
    /// the end of its time in the idle pool.
    pub(super) deadline: Option<Instant>,
    /// Queued for a flush at the end of the turn.
    pub(super) dirty: bool,
    /// It began with a client's PROXY protocol header: that client's only.
    pub(super) proxied: bool,
    /// Its TLS, when its backend speaks TLS to the origin: `out` is
    /// plaintext, encrypted as it is sent; what comes is decrypted before
    /// it is split among the exchanges.
    pub(super) tls: Option<Box<ClientStream>>,
    /// Bytes at the start of `out` that go out before the TLS, in the
    /// clear (a PROXY protocol header).
    pub(super) clear_prefix: usize,
    /// Its HTTP/2 side, when its backend speaks HTTP/2: then it carries
    /// many clients' exchanges (see `mux.rs`), and `client` and `jobs`
    /// stay empty.
    pub(super) mux: Option<Box<super::mux::Mux>>,
    /// The TLS its upstream was configured with when it opened (a reload
    /// that changes it retires the connection after its exchanges).
    pub(super) opened_with: Option<crate::tls::upstream::TlsTarget>,
}

impl UpstreamConn {
    /// A connection whose connect is about to go out, for `client`'s
    /// `jobs` (none: a warm-up connection), due by `deadline`.
    pub(super) fn connecting(
        fd: OwnedFd,
        pool: usize,
        upstream: UpstreamId,
        client: Option<ClientId>,
        jobs: VecDeque<Job>,
        deadline: Instant,
    ) -> Self {
        UpstreamConn {
            fd,
            pool,
            upstream,
            state: UpState::Connecting,
            client,
            jobs,
            recv: RecvCtl::default(),
            out: Vec::new(),
            sending: 0,
            spare: Vec::new(),
            reused: false,
            responded: false,
            proven: false,
            late: false,
            shut_wr: false,
            idle_limit: None,
            write_failed: false,
            front_since: None,
            deadline: Some(deadline),
            dirty: false,
            proxied: false,
            tls: None,
            clear_prefix: 0,
            mux: None,
            opened_with: None,
        }
    }

    pub(super) fn is_idle(&self) -> bool {
        self.state == UpState::Idle
    }

    /// Open and with room for more request bytes.
    pub(super) fn may_take_request(&self) -> bool {
        self.state == UpState::Open && self.out.len() < UPSTREAM_OUT_LIMIT && !self.write_failed
    }

    /// The connect succeeded at `now`; the first response byte is due
    /// within the front exchange's timeout.
    pub(super) fn opened(&mut self, now: Instant) {
        self.state = UpState::Open;
        self.deadline = self.jobs.front().map(|j| now + j.timeout);
    }

    /// Taken from the idle pool at `now` for `client`'s `job`.
    pub(super) fn assign(&mut self, client: ClientId, job: Job, now: Instant) {
        let deadline = now + job.timeout;
        self.state = UpState::Open;
        self.client = Some(client);
        self.jobs.push_back(job);
        self.reused = true;
        self.responded = false;
        self.front_since = None;
        self.deadline = Some(deadline);
    }

    /// Whether another of `client`'s shareable requests may follow the
    /// ones on it: nothing answered yet, not late, not full.
    pub(super) fn may_follow(&self, client: ClientId) -> bool {
        self.client == Some(client)
            && matches!(self.state, UpState::Connecting | UpState::Open)
            && !self.late
            && !self.write_failed
            && !self.responded
            && self.jobs.len() < MAX_SHARED
            && self.out.len() < UPSTREAM_OUT_LIMIT
    }

    /// `job` follows the ones on it; how many are on it now.
    pub(super) fn follow(&mut self, job: Job) -> usize {
        self.jobs.push_back(job);
        self.jobs.len()
    }

    /// Back in the idle pool until `until`: read (to notice the origin
    /// closing), carrying nobody's exchange.
    pub(super) fn go_idle(&mut self, until: Instant) {
        self.state = UpState::Idle;
        self.client = None;
        self.reused = false;
        self.responded = false;
        self.front_since = None;
        self.deadline = Some(until);
        self.recv.paused = false;
    }

    /// Every exchange on it (the connection is going).
    pub(super) fn take_jobs(&mut self) -> VecDeque<Job> {
        std::mem::take(&mut self.jobs)
    }

    /// The front exchange's first response byte came at `now`: the front
    /// job and how long the byte took from its request's being on the wire
    /// (None: this is not the first byte, or it was not timed).
    pub(super) fn first_byte(&mut self, now: Instant) -> Option<(Job, Duration)> {
        if self.responded {
            return None;
        }
        self.responded = true;
        self.deadline = None;
        let since = self.front_since?;
        let front = *self.jobs.front()?;
        Some((front, now.saturating_duration_since(since)))
    }

    /// The origin answered: true the first time on this connection.
    pub(super) fn prove(&mut self) -> bool {
        !std::mem::replace(&mut self.proven, true)
    }

    /// The front exchange's response is complete and it leaves; the next
    /// one's first byte is due within its timeout (`more`: some of its
    /// bytes came already).
    pub(super) fn next_front(&mut self, now: Instant, more: bool) {
        self.jobs.pop_front();
        let deadline = now + self.jobs.front().map_or(Duration::ZERO, |j| j.timeout);
        // The next exchange's request is on the wire already, unless some
        // of it still waits to be sent.
        self.front_since = self.out.is_empty().then_some(now);
        self.reused = true;
        self.responded = more;
        self.deadline = Some(deadline);
    }

    /// The response's `Keep-Alive: timeout=secs`.
    pub(super) fn origin_keeps_idle(&mut self, secs: u32) {
        self.idle_limit = Some(idle_limit(secs));
    }

    /// When the front exchange is late, if it can be (followers behind it,
    /// on the wire, no answer yet), and its route.
    pub(super) fn late_from(&self) -> Option<(Instant, RouteKey)> {
        let front = self.jobs.front()?;
        if self.state != UpState::Open || self.jobs.len() < 2 || self.late || self.responded {
            return None;
        }
        Some((self.front_since?, front.route))
    }

    /// The front is late: the exchanges behind it leave (they go elsewhere)
    /// and the connection closes after the front's response.
    pub(super) fn take_followers(&mut self) -> VecDeque<Job> {
        self.late = true;
        self.jobs.drain(1..).collect()
    }

    /// A send failed at `now` while the connection is still read: nothing
    /// more is written, and an answer or the end is awaited for the front
    /// exchange's timeout.
    pub(super) fn fail_write(&mut self, now: Instant) {
        self.write_failed = true;
        self.out.clear();
        self.deadline = Some(now + self.jobs.front().map_or(Duration::ZERO, |j| j.timeout));
    }

    /// Something is to be sent: request bytes, or TLS records (the
    /// handshake's, a close_notify).
    pub(super) fn has_output(&self) -> bool {
        !self.out.is_empty()
            || self.tls.as_ref().is_some_and(|t| t.wants_write())
            || self.mux.as_ref().is_some_and(|m| m.h2.has_output())
    }

    /// The queued request bytes (encrypted, over TLS), to send now (None:
    /// nothing to send, or a send is in flight).
    pub(super) fn take_output(&mut self, now: Instant) -> Option<Vec<u8>> {
        if self.sending > 0 || !self.has_output() || self.state == UpState::Connecting {
            return None;
        }
        if !self.out.is_empty()
            && self.front_since.is_none()
            && !self.responded
            && !self.jobs.is_empty()
        {
            // The front exchange's request goes on the wire now (over TLS,
            // into the session: it waits there for the handshake, which
            // the response's deadline includes).
            self.front_since = Some(now);
        }
        let buf = match &mut self.tls {
            None => std::mem::replace(&mut self.out, std::mem::take(&mut self.spare)),
            Some(tls) => {
                let mut wire = std::mem::take(&mut self.spare);
                wire.clear();
                let clear = std::mem::take(&mut self.clear_prefix);
                wire.extend_from_slice(&self.out[..clear]);
                let sealed = if tls.is_handshaking() {
                    // Nothing is encrypted before the handshake's end: the
                    // request waits in `out`, where its size bounds what the
                    // client may add (`may_take_request`).
                    self.out.drain(..clear);
                    tls.write_records(&mut wire)
                } else {
                    let sealed = tls.send(&self.out[clear..], &mut wire);
                    self.out.clear();
                    sealed
                };
                if sealed.is_err() {
                    // (rustls refused the bytes: the session is over.) The
                    // records before go out; nothing more is written.
                    self.fail_write(now);
                }
                wire
            }
        };
        if buf.is_empty() {
            self.spare = buf;
            return None;
        }
        self.sending = buf.len();
        Some(buf)
    }

    /// The send in flight is over at `now`; `spare` is its buffer back.
    /// Until the first response byte, the response is due within the front
    /// exchange's timeout from the last request byte the origin took (a
    /// long upload that keeps moving is not cut off, one the origin
    /// stopped reading is).
    pub(super) fn sent(&mut self, spare: Option<Vec<u8>>, now: Instant) {
        self.sending = 0;
        if let (false, UpState::Open, Some(front)) = (self.responded, self.state, self.jobs.front())
        {
            self.deadline = Some(now + front.timeout);
        }
        if let Some(buf) = spare {
            if buf.capacity() <= KEEP_SPARE && buf.capacity() > self.spare.capacity() {
                self.spare = buf;
            }
        }
    }
}
