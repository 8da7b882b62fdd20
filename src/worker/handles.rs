//! Typed handles with a generation for the worker's connection tables.
//!
//! A slot freed by one connection is soon taken by another, while a
//! completion for the first may still be on its way (a send that finishes
//! after a close). Every [`Handle`] carries its slot's generation, and a
//! lookup with a stale one finds nothing: the late completion is dropped
//! instead of being applied to a stranger. The type parameter keeps client
//! and upstream handles apart at compile time.

use std::fmt;
use std::marker::PhantomData;

use slab::Slab;

/// Generations fit in 23 bits, so that a handle and a side bit fit in the
/// 56 bits of `user_data` the reactor leaves to its callers.
const GEN_MASK: u32 = 0x7f_ffff;

/// The slot and generation of an entry of a [`Table<T>`].
pub struct Handle<T> {
    slot: u32,
    gen: u32,
    _of: PhantomData<fn() -> T>,
}

impl<T> Handle<T> {
    /// The handle as 55 bits: generation above the slot.
    pub fn to_bits(self) -> u64 {
        (u64::from(self.gen) << 32) | u64::from(self.slot)
    }

    /// A handle from [`Handle::to_bits`] (bits above 55 are ignored).
    pub fn from_bits(bits: u64) -> Self {
        Handle {
            slot: bits as u32,
            gen: ((bits >> 32) as u32) & GEN_MASK,
            _of: PhantomData,
        }
    }

    /// The slot.
    #[cfg(test)]
    pub fn slot(self) -> usize {
        self.slot as usize
    }
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Handle<T> {}

impl<T> PartialEq for Handle<T> {
    fn eq(&self, other: &Self) -> bool {
        self.slot == other.slot && self.gen == other.gen
    }
}

impl<T> Eq for Handle<T> {}

impl<T> std::hash::Hash for Handle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.to_bits().hash(state);
    }
}

impl<T> fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.slot, self.gen)
    }
}

struct Entry<T> {
    gen: u32,
    value: T,
}

/// A slab whose entries are reached through generation-checked handles.
pub struct Table<T> {
    slots: Slab<Entry<T>>,
    next_gen: u32,
}

impl<T> Table<T> {
    /// An empty table with room for `capacity` entries before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        Table {
            slots: Slab::with_capacity(capacity),
            next_gen: 0,
        }
    }

    /// Store `value`; its handle is new (no earlier handle matches it).
    pub fn insert(&mut self, value: T) -> Handle<T> {
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        let gen = self.next_gen;
        let slot = self.slots.insert(Entry { gen, value });
        Handle {
            slot: slot as u32,
            gen,
            _of: PhantomData,
        }
    }

    /// The entry `h` names, if it is still there.
    pub fn get(&self, h: Handle<T>) -> Option<&T> {
        self.slots
            .get(h.slot as usize)
            .filter(|e| e.gen == h.gen)
            .map(|e| &e.value)
    }

    /// The entry `h` names, if it is still there.
    pub fn get_mut(&mut self, h: Handle<T>) -> Option<&mut T> {
        self.slots
            .get_mut(h.slot as usize)
            .filter(|e| e.gen == h.gen)
            .map(|e| &mut e.value)
    }

    /// Whether `h` still names an entry.
    pub fn contains(&self, h: Handle<T>) -> bool {
        self.get(h).is_some()
    }

    /// Take the entry `h` names out of the table.
    pub fn remove(&mut self, h: Handle<T>) -> Option<T> {
        if !self.contains(h) {
            return None;
        }
        Some(self.slots.remove(h.slot as usize).value)
    }

    /// Entries in the table.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Every entry with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (Handle<T>, &T)> {
        self.slots.iter().map(|(slot, e)| {
            (
                Handle {
                    slot: slot as u32,
                    gen: e.gen,
                    _of: PhantomData,
                },
                &e.value,
            )
        })
    }

    /// Every entry with its handle, mutably.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Handle<T>, &mut T)> {
        self.slots.iter_mut().map(|(slot, e)| {
            (
                Handle {
                    slot: slot as u32,
                    gen: e.gen,
                    _of: PhantomData,
                },
                &mut e.value,
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_handle_finds_nothing_after_its_slot_is_reused() {
        let mut t: Table<&str> = Table::with_capacity(1);
        let a = t.insert("a");
        assert_eq!(t.remove(a), Some("a"));
        let b = t.insert("b");
        assert_eq!(a.slot(), b.slot(), "the slot is reused");
        assert_eq!(t.get(a), None);
        assert_eq!(t.remove(a), None, "removing with a stale handle is a no-op");
        assert_eq!(t.get(b), Some(&"b"));
    }

    #[test]
    fn handles_survive_a_trip_through_bits() {
        let mut t: Table<u8> = Table::with_capacity(4);
        for i in 0..4 {
            let h = t.insert(i);
            let back = Handle::<u8>::from_bits(h.to_bits() | (1 << 55));
            assert_eq!(back, h);
            assert_eq!(t.get(back), Some(&i));
        }
        assert_eq!(t.iter().count(), 4);
    }
}
