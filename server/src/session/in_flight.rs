//! The deliveries a session awaits an ACK for, by ack id, in delivery
//! order.
//!
//! Ack ids only grow and clients mostly acknowledge oldest first, so this
//! is a deque sorted by id rather than a `BTreeMap`: an insert is a push at
//! the back, the usual ACK a pop at the front, and any other a binary
//! search and a tombstone. (A B-tree shifts the entries of a node on every
//! removal from its front; with a delivery of ~140 bytes per entry that
//! was 1,400 instructions of memmove per ACK, callgrind on
//! `bench queue --ack client-individual`.) Tombstones are swept once they
//! outnumber the live entries twice over, so memory stays within a small
//! multiple of what is in flight, which prefetch bounds.

use std::collections::VecDeque;

/// Entries by ack id. See the module documentation.
#[derive(Debug)]
pub(super) struct InFlight<T> {
    slots: VecDeque<(u64, Option<T>)>,
    live: usize,
}

impl<T> Default for InFlight<T> {
    fn default() -> Self {
        InFlight {
            slots: VecDeque::new(),
            live: 0,
        }
    }
}

/// Capacity kept once empty: what an idle connection may hold on to.
const KEEP_EMPTY: usize = 16;

impl<T> InFlight<T> {
    fn position(&self, id: u64) -> Result<usize, usize> {
        self.slots.binary_search_by_key(&id, |(n, _)| *n)
    }

    /// Adds `value` as `id`; an id already present is replaced.
    pub(super) fn insert(&mut self, id: u64, value: T) {
        match self.slots.back() {
            Some((last, _)) if *last >= id => match self.position(id) {
                Ok(i) => {
                    if self.slots[i].1.replace(value).is_none() {
                        self.live += 1;
                    }
                }
                Err(i) => {
                    self.slots.insert(i, (id, Some(value)));
                    self.live += 1;
                }
            },
            _ => {
                self.slots.push_back((id, Some(value)));
                self.live += 1;
            }
        }
    }

    /// The entry `id`, if present.
    pub(super) fn get(&self, id: u64) -> Option<&T> {
        let i = self.position(id).ok()?;
        self.slots[i].1.as_ref()
    }

    /// Whether `id` is present.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.get(id).is_some()
    }

    /// Takes the entry `id` out.
    pub(super) fn remove(&mut self, id: u64) -> Option<T> {
        let value = match self.slots.front_mut() {
            // The usual case: the oldest is acknowledged.
            Some((first, slot)) if *first == id => slot.take(),
            _ => {
                let i = self.position(id).ok()?;
                self.slots[i].1.take()
            }
        }?;
        self.live -= 1;
        while self.slots.front().is_some_and(|(_, s)| s.is_none()) {
            self.slots.pop_front();
        }
        if self.slots.len() > 2 * self.live + 64 {
            self.slots.retain(|(_, s)| s.is_some());
        }
        if self.slots.is_empty() && self.slots.capacity() > KEEP_EMPTY {
            self.slots = VecDeque::new();
        }
        Some(value)
    }

    /// The entries, oldest first.
    pub(super) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots
            .iter()
            .filter_map(|(n, s)| s.as_ref().map(|v| (*n, v)))
    }

    /// How many entries there are.
    pub(super) fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledged_in_any_order_keeps_the_rest_in_order() {
        let mut m = InFlight::default();
        for id in 1..=10u64 {
            m.insert(id, id * 10);
        }
        assert_eq!(m.remove(1), Some(10));
        assert_eq!(m.remove(5), Some(50));
        assert_eq!(m.remove(5), None);
        assert_eq!(m.remove(99), None);
        assert!(!m.contains(5) && m.contains(6));
        assert_eq!(m.get(7), Some(&70));
        assert_eq!(m.len(), 8);
        let ids: Vec<u64> = m.iter().map(|(n, _)| n).collect();
        assert_eq!(ids, [2, 3, 4, 6, 7, 8, 9, 10]);
        // Out of order and again: still sorted, replaced in place.
        m.insert(5, 55);
        m.insert(7, 77);
        let all: Vec<(u64, u64)> = m.iter().map(|(n, v)| (n, *v)).collect();
        assert_eq!(all[3], (5, 55));
        assert_eq!(all[5], (7, 77));
        assert_eq!(m.len(), 9);
        for id in 1..=10 {
            m.remove(id);
        }
        assert_eq!(m.len(), 0);
        assert_eq!(m.iter().count(), 0);
    }

    #[test]
    fn an_old_unacknowledged_entry_does_not_let_tombstones_grow() {
        let mut m = InFlight::default();
        m.insert(0, ());
        for id in 1..100_000u64 {
            m.insert(id, ());
            m.remove(id);
        }
        assert_eq!(m.len(), 1);
        assert!(m.slots.len() <= 2 * m.len() + 65, "{}", m.slots.len());
        assert!(m.contains(0));
        m.remove(0);
        assert_eq!(m.slots.capacity(), 0);
    }
}
