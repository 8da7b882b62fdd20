//! Which ring operations name each fd number, and the closes that wait for
//! them.
//!
//! # Why a close waits
//! An operation names an fd *number*, and the kernel looks the number up
//! when it issues the operation, which is not always when it is submitted:
//! a `SHUTDOWN` is always handed to an io-wq worker and looks its fd up
//! there, after anything submitted beside it. Had its socket's `CLOSE` run
//! first, the number may already be a newly accepted client's, or a new
//! upstream connection's, and the FIN goes to that stranger (seen: 3-30 of
//! 300 back-to-back tunnels, and plain requests beside them, closed without
//! an answer). The same holds for anything we submit ourselves later (a
//! short send continued, a recv armed once a buffer comes back).
//!
//! So the order is enforced here, for every kind of operation at once,
//! rather than by reasoning about which of them the kernel might defer:
//! every operation that names an fd is counted from its submission to its
//! final completion, and the fd's `CLOSE` is submitted only when the count
//! is zero. Until then the number stays ours and cannot be handed to
//! anyone else, so nothing in flight can reach a stranger. (Hard links
//! would order one chain, not operations submitted in different turns;
//! registered files would need a generation per slot for the same
//! guarantee.) The price is a completion for the operations that used to
//! be skipped on success (shutdowns and cancels by fd, both rare) and a
//! close that may leave a turn later.

use std::os::fd::RawFd;

/// What the ring holds that names one fd number.
#[derive(Debug, Default, Clone, Copy)]
struct FdState {
    /// Operations submitted that name this number and have not posted
    /// their final completion.
    ops: u32,
    /// Its close was asked for: submitted once `ops` is zero.
    closing: bool,
    /// The slot of the multishot recv armed on it, if any.
    recv: Option<u32>,
}

/// Per fd number (a small dense integer, so a vector), what names it.
#[derive(Debug, Default)]
pub(super) struct FdTable {
    slots: Vec<FdState>,
    /// Operations counted here in all (for the quiescence check).
    total: usize,
}

impl FdTable {
    fn slot(&mut self, fd: RawFd) -> &mut FdState {
        let i = usize::try_from(fd).expect("fds are not negative");
        if i >= self.slots.len() {
            self.slots.resize(i + 1, FdState::default());
        }
        &mut self.slots[i]
    }

    /// An operation naming `fd` was submitted.
    pub fn started(&mut self, fd: RawFd) {
        let s = self.slot(fd);
        debug_assert!(!s.closing, "an operation on fd {fd} after its close");
        s.ops += 1;
        self.total += 1;
    }

    /// An operation naming `fd` posted its final completion. True if the
    /// fd's close was waiting for it: submit the close now.
    pub fn finished(&mut self, fd: RawFd) -> bool {
        let s = self.slot(fd);
        debug_assert!(s.ops > 0, "more completions than operations on fd {fd}");
        s.ops = s.ops.saturating_sub(1);
        let close = s.ops == 0 && s.closing;
        if close {
            *s = FdState::default();
        }
        self.total = self.total.saturating_sub(1);
        close
    }

    /// The caller closes `fd`. True if nothing names it any more: submit
    /// the close now; otherwise it waits for [`FdTable::finished`].
    pub fn close(&mut self, fd: RawFd) -> bool {
        let s = self.slot(fd);
        if s.ops == 0 {
            *s = FdState::default();
            true
        } else {
            s.closing = true;
            false
        }
    }

    /// The caller gives `fd` away (to another thread): true if nothing
    /// names it (its state is forgotten then), false otherwise.
    pub fn release(&mut self, fd: RawFd) -> bool {
        let s = self.slot(fd);
        if s.ops == 0 && !s.closing {
            *s = FdState::default();
            true
        } else {
            false
        }
    }

    /// The multishot recv armed on `fd` is in slot `slot`.
    pub fn set_recv(&mut self, fd: RawFd, slot: u32) {
        self.slot(fd).recv = Some(slot);
    }

    /// The slot of the multishot recv armed on `fd`, if any.
    pub fn recv(&mut self, fd: RawFd) -> Option<u32> {
        self.slot(fd).recv
    }

    /// The recv in `slot` on `fd` ended.
    pub fn recv_ended(&mut self, fd: RawFd, slot: u32) {
        let s = self.slot(fd);
        if s.recv == Some(slot) {
            s.recv = None;
        }
    }

    /// Operations counted and not finished.
    pub fn in_flight(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_close_waits_for_every_operation_on_its_fd() {
        let mut t = FdTable::default();
        t.started(7);
        t.started(7);
        assert!(!t.close(7), "two operations still name it");
        assert!(!t.finished(7));
        assert!(t.finished(7), "the last one lets the close go");
        assert_eq!(t.in_flight(), 0);
        // The number is fresh again (a new socket may get it).
        t.started(7);
        assert!(!t.finished(7), "no close asked for this one");
    }

    #[test]
    fn a_close_with_nothing_in_flight_goes_at_once() {
        let mut t = FdTable::default();
        assert!(t.close(3));
        t.started(3);
        assert!(!t.release(3), "an operation names it");
        assert!(!t.finished(3));
        assert!(t.release(3));
    }
}
