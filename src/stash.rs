//! A stash of things to reuse (buffers, queues), shared by one worker's
//! connections.
//!
//! An idle keep-alive connection holds no heap memory: when it goes idle it
//! gives its buffers back here, and the next request, on any connection,
//! takes them. Under load that turns an allocation and a free per buffer
//! per request (measured: malloc, realloc and free took about a third of
//! the proxy's user time for small requests) into a push and a pop; with
//! many idle connections the stash holds at most its bound, not a buffer
//! per connection. Single-threaded: one stash per worker, never shared
//! between threads.

use std::cell::RefCell;

/// At most `max` things kept for reuse.
pub struct Stash<T> {
    free: RefCell<Vec<T>>,
    max: usize,
}

impl<T> Stash<T> {
    /// An empty stash that keeps at most `max` things.
    pub fn new(max: usize) -> Self {
        Stash {
            free: RefCell::new(Vec::new()),
            max,
        }
    }

    /// Something given back earlier, if any.
    pub fn take(&self) -> Option<T> {
        self.free.borrow_mut().pop()
    }

    /// Keep `t` for reuse (or drop it if the stash is full). The caller
    /// empties it first.
    pub fn give(&self, t: T) {
        let mut free = self.free.borrow_mut();
        if free.len() < self.max {
            free.push(t);
        }
    }

    /// How many things are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.free.borrow().len()
    }

    /// Whether nothing is kept.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.free.borrow().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_its_bound_and_gives_back_the_last_first() {
        let s = Stash::new(2);
        assert!(s.take().is_none());
        s.give(1);
        s.give(2);
        s.give(3);
        assert_eq!(s.len(), 2);
        assert_eq!(s.take(), Some(2));
        assert_eq!(s.take(), Some(1));
        assert!(s.is_empty());
    }
}
