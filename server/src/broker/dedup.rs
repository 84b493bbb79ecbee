//! A queue's window of recently seen deduplication ids (`x-dedup-id`,
//! Artemis' `_AMQ_DUPL_ID`): a SEND repeating one is confirmed like the
//! first and not enqueued again. Bounded by age and by count, and charged
//! to the broker's memory. For a durable queue each entry pins the
//! enqueue record that carried the id, so the window survives a restart
//! (recovery reads the ids back from those records).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use stomp_codec::ByteString;

use super::memory::{Charge, Memory};
use crate::store::{Completion, JournalPin};

#[derive(Debug)]
struct Seen {
    at_ms: u64,
    /// When the first SEND's message is as safe as it will be: a
    /// repeat's RECEIPT waits for the same.
    written: Completion,
    _pin: Option<JournalPin>,
    _charge: Charge,
}

/// What a SEND's id found.
#[derive(Debug, PartialEq, Eq)]
pub enum Claim {
    /// First sight: enqueue it, then record it as enqueued.
    New,
    /// Seen within the window: confirm once this completes, enqueue nothing.
    Duplicate(Completion),
}

/// The ids seen within a window of time and count.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    seen: HashMap<ByteString, Seen>,
    /// Oldest first, with when each was seen.
    order: VecDeque<(u64, ByteString)>,
    window_ms: u64,
    max_ids: usize,
    memory: Arc<Memory>,
}

impl DedupWindow {
    /// An empty window keeping ids for `window_ms`, at most `max_ids` of them.
    pub(crate) fn new(window_ms: u64, max_ids: usize, memory: Arc<Memory>) -> DedupWindow {
        DedupWindow {
            seen: HashMap::new(),
            order: VecDeque::new(),
            window_ms,
            max_ids,
            memory,
        }
    }

    /// Whether `id` was seen within the window at `now_ms`; a new id is
    /// claimed at once, so a second SEND of it racing the first is a duplicate.
    pub(crate) fn claim(&mut self, id: &ByteString, now_ms: u64) -> Claim {
        self.expire(now_ms);
        if let Some(seen) = self.seen.get(id) {
            return Claim::Duplicate(seen.written);
        }
        self.insert(id.clone(), now_ms, Completion::DONE, None);
        Claim::New
    }

    /// Fills in a claimed id once its message is enqueued.
    pub(crate) fn record(&mut self, id: &ByteString, written: Completion, pin: Option<JournalPin>) {
        if let Some(seen) = self.seen.get_mut(id) {
            seen.written = written;
            seen._pin = pin;
        }
    }

    /// Lets go of a claimed id whose message was refused, so a retry is
    /// not taken for a duplicate.
    pub(crate) fn release(&mut self, id: &ByteString) {
        self.seen.remove(id);
        // Its place in `order` goes when it reaches the front.
    }

    /// Puts back an id recovered from the journal.
    pub(crate) fn restore(&mut self, id: ByteString, at_ms: u64, pin: Option<JournalPin>) {
        self.insert(id, at_ms, Completion::DONE, pin);
    }

    fn insert(&mut self, id: ByteString, at_ms: u64, written: Completion, pin: Option<JournalPin>) {
        let charge = self.memory.charge(id.len() * 2 + 96);
        self.order.push_back((at_ms, id.clone()));
        self.seen.insert(
            id,
            Seen {
                at_ms,
                written,
                _pin: pin,
                _charge: charge,
            },
        );
        while self.order.len() > self.max_ids {
            self.pop();
        }
    }

    /// Forgets ids older than the window.
    pub(crate) fn expire(&mut self, now_ms: u64) {
        while let Some((at, _)) = self.order.front() {
            if at.saturating_add(self.window_ms) > now_ms {
                break;
            }
            self.pop();
        }
    }

    fn pop(&mut self) {
        // An id released and claimed again has a newer entry: that one stays.
        if let Some((at, id)) = self.order.pop_front()
            && self.seen.get(&id).is_some_and(|s| s.at_ms == at)
        {
            self.seen.remove(&id);
        }
    }

    /// Ids held.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_within_the_window_are_duplicates() {
        let mut w = DedupWindow::new(1000, 3, Memory::unlimited());
        let a = ByteString::from("a");
        assert_eq!(w.claim(&a, 0), Claim::New);
        assert!(matches!(w.claim(&a, 999), Claim::Duplicate(_)));
        assert_eq!(w.claim(&a, 1000), Claim::New);
    }

    #[test]
    fn the_oldest_go_past_the_count() {
        let mut w = DedupWindow::new(u64::MAX / 2, 2, Memory::unlimited());
        for id in ["a", "b", "c"] {
            assert_eq!(w.claim(&ByteString::from(id), 0), Claim::New);
        }
        assert_eq!(w.len(), 2);
        assert_eq!(w.claim(&ByteString::from("a"), 0), Claim::New);
    }

    #[test]
    fn a_released_claim_is_new_again() {
        let mut w = DedupWindow::new(1000, 10, Memory::unlimited());
        let a = ByteString::from("a");
        assert_eq!(w.claim(&a, 0), Claim::New);
        w.release(&a);
        assert_eq!(w.claim(&a, 1), Claim::New);
    }
}
