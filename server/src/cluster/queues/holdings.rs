//! What a node holds of a queue in Redis: the entries it read and which
//! of its local messages are in them, so settling messages tells Redis
//! exactly which entries are done and which are only partly done.

use std::collections::HashMap;

use crate::cluster::link::Settled;

/// An entry this node holds: how many of its messages are not settled
/// yet, and whether some of its settled ones were written down.
#[derive(Debug, Clone, Copy)]
pub(super) struct Held {
    pub(super) open: u32,
    pub(super) written: bool,
}

/// Hashes numbers this node makes itself (message numbers, and entry
/// numbers from a queue's counter in Redis; never a client's choice) with
/// one multiply. SipHash's guard against chosen keys buys nothing here and
/// cost more than the rest of settling a message.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct NumberHasher(u64);

impl std::hash::Hasher for NumberHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.write_u64(u64::from(*b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Odd, so low bits stay distinct for consecutive numbers (the
        // table's index) while the high bits (its tags) get mixed.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) type NumberMap<V> = HashMap<u64, V, std::hash::BuildHasherDefault<NumberHasher>>;

/// The entries a node holds and which of its local messages are in them.
#[derive(Debug, Default)]
pub(super) struct Holdings {
    /// Local message number → (entry, index in the entry).
    pub(super) messages: NumberMap<(u64, u32)>,
    /// Entry → what is left of it here.
    pub(super) entries: NumberMap<Held>,
}

impl Holdings {
    /// Takes `numbers` out as settled; returns what Redis is to be told.
    pub(super) fn settle(&mut self, numbers: impl Iterator<Item = u64>) -> Settled {
        let mut settled = Settled::default();
        for n in numbers {
            let Some((entry, index)) = self.messages.remove(&n) else {
                continue;
            };
            settled.count += 1;
            let Some(held) = self.entries.get_mut(&entry) else {
                continue;
            };
            held.open = held.open.saturating_sub(1);
            if held.open == 0 {
                if held.written {
                    settled.cleared.push(entry);
                }
                self.entries.remove(&entry);
                settled.whole.push(entry);
            } else {
                held.written = true;
                settled.members.push((entry, index));
            }
        }
        settled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_whole_once_its_last_member_settles_and_written_down_before() {
        let mut h = Holdings::default();
        h.entries.insert(
            7,
            Held {
                open: 3,
                written: false,
            },
        );
        h.entries.insert(
            9,
            Held {
                open: 1,
                written: false,
            },
        );
        for (number, at) in [(1, (7, 0)), (2, (7, 1)), (3, (7, 2)), (4, (9, 0))] {
            h.messages.insert(number, at);
        }
        let s = h.settle([2, 4, 99].into_iter());
        assert_eq!(s.count, 2);
        assert_eq!(s.whole, vec![9]);
        assert!(s.cleared.is_empty());
        assert_eq!(s.members, vec![(7, 1)]);
        let s = h.settle([1, 3].into_iter());
        assert_eq!(s.count, 2);
        assert_eq!(s.members, vec![(7, 0)]);
        assert_eq!(s.whole, vec![7]);
        assert_eq!(s.cleared, vec![7], "its members were written down");
        assert!(h.entries.is_empty() && h.messages.is_empty());
        assert_eq!(h.settle([1].into_iter()).count, 0, "settled once only");
    }
}
