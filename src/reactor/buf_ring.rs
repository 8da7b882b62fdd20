//! The provided-buffer ring that every multishot recv of one worker draws from.
//!
//! The kernel picks a buffer when data arrives, fills it and names it in the
//! completion; until [`BufRing::recycle`] puts it back, the buffer is ours and
//! the kernel never touches it. Recycled buffers become visible to the kernel
//! only at [`BufRing::publish`], which the reactor calls once per loop turn,
//! so a burst of completions costs one release store, not one per buffer.
//!
//! Memory: `count × size` bytes of buffers plus `count × 16` bytes of ring.
//! Pages are touched only as buffers are first used, so an idle worker's RSS
//! does not carry the whole reservation.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// A registered ring of `count` receive buffers of `size` bytes each.
pub struct BufRing {
    /// Ring entries shared with the kernel; page aligned, `count` long.
    entries: NonNull<BufRingEntry>,
    entries_layout: Layout,
    /// Buffer memory: buffer `bid` is `size` bytes at `bid * size`.
    memory: NonNull<u8>,
    memory_layout: Layout,
    count: u16,
    size: u32,
    /// Our producer index. INVARIANT: the kernel sees it only after publish().
    tail: u16,
    group: u16,
    /// Never deallocate (see `leak`).
    leaked: bool,
}

impl BufRing {
    /// Allocate `count` buffers (a power of two, at most 32768) of `size`
    /// bytes and register them with `ring` as buffer group `group`.
    pub fn new(ring: &IoUring, group: u16, count: u16, size: u32) -> io::Result<Self> {
        assert!(count.is_power_of_two() && count <= 32768, "buffer count");
        let entries_layout =
            Layout::from_size_align(count as usize * std::mem::size_of::<BufRingEntry>(), 4096)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let memory_layout = Layout::from_size_align(count as usize * size as usize, 4096)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = NonNull::new(unsafe { alloc_zeroed(entries_layout) } as *mut BufRingEntry)
            .ok_or_else(|| io::Error::from(io::ErrorKind::OutOfMemory))?;
        // SAFETY: as above.
        let memory = match NonNull::new(unsafe { alloc_zeroed(memory_layout) }) {
            Some(m) => m,
            None => {
                // SAFETY: `entries` came from alloc_zeroed with this layout.
                unsafe { dealloc(entries.as_ptr() as *mut u8, entries_layout) };
                return Err(io::ErrorKind::OutOfMemory.into());
            }
        };
        let mut this = BufRing {
            entries,
            entries_layout,
            memory,
            memory_layout,
            count,
            size,
            tail: 0,
            group,
            leaked: false,
        };
        // SAFETY: the ring memory is page aligned, zeroed (tail 0) and lives
        // until Drop, which runs only after the IoUring that uses it is gone
        // (the Reactor declares the ring before the buffers).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries.as_ptr() as u64, count, group, 0)
        }
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("registering the provided-buffer ring failed (needs Linux 5.19+): {e}"),
            )
        })?;
        for bid in 0..count {
            this.recycle(bid);
        }
        this.publish();
        Ok(this)
    }

    /// Buffers in the ring.
    pub fn count(&self) -> usize {
        self.count as usize
    }

    /// Bytes in each buffer.
    pub fn buffer_size(&self) -> u32 {
        self.size
    }

    /// The buffer group id to name in recv SQEs.
    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `bid`, which a completion handed us.
    pub fn data(&self, bid: u16, len: usize) -> &[u8] {
        assert!(
            bid < self.count && len <= self.size as usize,
            "buffer out of range"
        );
        // SAFETY: bid < count and len <= size keep the slice inside `memory`;
        // the kernel handed this buffer to us in a completion and will not
        // write to it again until we recycle it, which needs `&mut self`.
        unsafe {
            std::slice::from_raw_parts(
                self.memory.as_ptr().add(bid as usize * self.size as usize),
                len,
            )
        }
    }

    /// Give buffer `bid` back to the kernel (visible after the next publish).
    ///
    /// Checked in every build: an id the ring did not hand out would make
    /// the kernel write outside the buffers (the SAFETY notes below rely
    /// on it). Only a completion makes a `RecvBuf`, so this never fires.
    pub fn recycle(&mut self, bid: u16) {
        assert!(bid < self.count, "recycling buffer {bid} of {}", self.count);
        let slot = (self.tail & (self.count - 1)) as usize;
        // SAFETY: slot < count, so the entry lies inside the ring allocation;
        // the kernel only reads entries between its head and our published
        // tail, and this slot is past the published tail.
        let entry = unsafe { &mut *self.entries.as_ptr().add(slot) };
        // SAFETY: bid < count keeps the address inside `memory`.
        let addr = unsafe { self.memory.as_ptr().add(bid as usize * self.size as usize) };
        entry.set_addr(addr as u64);
        entry.set_len(self.size);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    /// Make every recycled buffer visible to the kernel.
    pub fn publish(&mut self) {
        // SAFETY: `entries` is the first entry of a registered ring, so the
        // tail field overlays its reserved word; the kernel reads it with
        // acquire semantics, so a release store orders the entries before it.
        unsafe {
            let tail = BufRingEntry::tail(self.entries.as_ptr()) as *const AtomicU16;
            (*tail).store(self.tail, Ordering::Release);
        }
    }
}

impl BufRing {
    /// Never free the memory: the kernel may still use it (a ring torn
    /// down without draining). Costs the ring's memory, once.
    pub fn leak(&mut self) {
        self.leaked = true;
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: both pointers came from alloc_zeroed with these layouts, and
        // the ring that used them has been dropped (see `new`).
        unsafe {
            dealloc(self.entries.as_ptr() as *mut u8, self.entries_layout);
            dealloc(self.memory.as_ptr(), self.memory_layout);
        }
    }
}
