//! The messages a queue holds for its consumers: ten priority levels,
//! each FIFO and each with a part in memory and a part waiting on disk
//! (past the memory window), plus the delayed messages not yet due.
//! Pure bookkeeping: no locks, no consumers, no journal writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use super::super::message::Message;
use crate::store::{JournalPin, Lsn};
use crate::terms::MAX_PRIORITY;

const LEVELS: usize = MAX_PRIORITY as usize + 1;

/// A message waiting in a queue.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) message: Arc<Message>,
    /// Deliveries of it that failed (its `x-delivery-count`).
    pub(super) deliveries: u32,
    /// Delivered before, or recovered (whether it was cannot be known).
    pub(super) redelivered: bool,
}

impl Pending {
    pub(super) fn new(message: Arc<Message>) -> Pending {
        Pending {
            message,
            deliveries: 0,
            redelivered: false,
        }
    }
}

#[derive(Debug, Default)]
struct Level {
    messages: VecDeque<Pending>,
    /// Durable messages waiting on disk, behind `messages`, oldest first:
    /// a few bytes each, read back as consumers near them.
    paged: VecDeque<JournalPin>,
    /// How many of the first `paged` were recovered after a restart (they
    /// go out marked redelivered).
    recovered: usize,
}

/// Slots a level keeps allocated once it is empty.
const KEEP_CAPACITY: usize = 1024;

/// A queue's waiting messages.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    levels: [Level; LEVELS],
    /// Accounted bytes of the messages in memory (levels and delayed).
    pub(super) bytes: u64,
    /// Record bytes of the paged ones.
    pub(super) paged_bytes: u64,
    paged_count: usize,
    /// Every paged record is on disk once this is synced.
    pub(super) paged_lsn: Lsn,
    /// Failed-delivery counts of recovered paged messages that have one,
    /// by (segment, offset) of their record.
    paged_counts: HashMap<(u64, u64), u32>,
    /// Delayed messages by (due time, id).
    delayed: BTreeMap<(u64, u64), Pending>,
    /// Messages in memory with an expiry time, and the earliest such
    /// time (it may be stale-early: that only costs a needless scan).
    pub(super) expiring: usize,
    pub(super) earliest_expiry: u64,
}

impl Backlog {
    /// Messages waiting, in memory, on disk and delayed.
    pub(super) fn count(&self) -> usize {
        self.levels.iter().map(|l| l.messages.len()).sum::<usize>()
            + self.paged_count
            + self.delayed.len()
    }

    /// Bytes waiting, in memory and on disk.
    pub(super) fn total_bytes(&self) -> u64 {
        self.bytes + self.paged_bytes
    }

    /// Messages waiting on disk.
    pub(super) fn paged(&self) -> usize {
        self.paged_count
    }

    /// Whether `priority`'s level has messages on disk (a new message of
    /// that level must go there too, behind them).
    pub(super) fn level_is_paging(&self, priority: u8) -> bool {
        !self.levels[usize::from(priority)].paged.is_empty()
    }

    fn note_in(&mut self, pending: &Pending) {
        self.bytes += pending.message.charge.bytes() as u64;
        let e = pending.message.terms.expires_at_ms;
        if e != 0 {
            self.earliest_expiry = if self.expiring == 0 {
                e
            } else {
                self.earliest_expiry.min(e)
            };
            self.expiring += 1;
        }
    }

    fn note_out(&mut self, pending: &Pending) {
        self.bytes -= (pending.message.charge.bytes() as u64).min(self.bytes);
        if pending.message.terms.expires_at_ms != 0 {
            self.expiring = self.expiring.saturating_sub(1);
        }
    }

    /// Appends a message to its level's memory part.
    pub(super) fn push_back(&mut self, pending: Pending) {
        self.note_in(&pending);
        let level = usize::from(pending.message.terms.priority);
        self.levels[level].messages.push_back(pending);
    }

    /// Puts a message back at the head of its level.
    pub(super) fn push_front(&mut self, pending: Pending) {
        self.note_in(&pending);
        let level = usize::from(pending.message.terms.priority);
        self.levels[level].messages.push_front(pending);
    }

    /// Appends a paged-out message's record to its level.
    pub(super) fn push_paged(&mut self, priority: u8, pin: JournalPin, written_by: Lsn) {
        self.paged_bytes += pin.bytes();
        self.paged_count += 1;
        self.paged_lsn = self.paged_lsn.max(written_by);
        self.levels[usize::from(priority)].paged.push_back(pin);
    }

    /// Appends a recovered message that stays on disk; `returned` is its
    /// count of failed deliveries.
    pub(super) fn push_recovered_paged(&mut self, priority: u8, pin: JournalPin, returned: u32) {
        if returned > 0
            && let Some(r) = pin.record()
        {
            self.paged_counts.insert((r.segment, r.offset), returned);
        }
        let level = &mut self.levels[usize::from(priority)];
        level.recovered += 1;
        self.push_paged(priority, pin, 0);
    }

    /// Holds a delayed message until its time.
    pub(super) fn push_delayed(&mut self, pending: Pending) {
        self.note_in(&pending);
        let key = (
            pending.message.terms.deliver_at_ms,
            pending.message.id.number(),
        );
        self.delayed.insert(key, pending);
    }

    /// When the next delayed message is due.
    pub(super) fn next_due(&self) -> Option<u64> {
        self.delayed.first_key_value().map(|((t, _), _)| *t)
    }

    /// Takes the delayed messages due at `now_ms`, earliest first.
    pub(super) fn take_due(&mut self, now_ms: u64) -> Vec<Pending> {
        let mut due = Vec::new();
        while let Some(entry) = self.delayed.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let pending = entry.remove();
            self.note_out(&pending);
            due.push(pending);
        }
        due
    }

    /// The highest level with anything to deliver now, and whether its
    /// memory part is empty (so its paged part must be read first).
    pub(super) fn next_level(&self) -> Option<(usize, bool)> {
        (0..LEVELS).rev().find_map(|i| {
            let l = &self.levels[i];
            if !l.messages.is_empty() {
                Some((i, false))
            } else if !l.paged.is_empty() {
                Some((i, true))
            } else {
                None
            }
        })
    }

    /// The highest level with messages on disk.
    pub(super) fn highest_paged_level(&self) -> Option<usize> {
        (0..LEVELS)
            .rev()
            .find(|i| !self.levels[*i].paged.is_empty())
    }

    /// Takes the head of a level's memory part.
    pub(super) fn pop_front(&mut self, level: usize) -> Option<Pending> {
        let messages = &mut self.levels[level].messages;
        let pending = messages.pop_front()?;
        // A drained backlog lets go of the room it grew to (16 MB for a
        // million messages), so memory comes back once a burst is over.
        if messages.is_empty() && messages.capacity() > KEEP_CAPACITY {
            *messages = VecDeque::new();
        }
        self.note_out(&pending);
        Some(pending)
    }

    /// Takes the head of the lowest level with messages in memory.
    pub(super) fn pop_lowest(&mut self) -> Option<Pending> {
        let level = (0..LEVELS).find(|i| !self.levels[*i].messages.is_empty())?;
        self.pop_front(level)
    }

    /// Takes the first message in memory (highest level first, then
    /// arrival order) that `wanted` picks, looking at most at `limit`.
    pub(super) fn take_first(
        &mut self,
        limit: usize,
        mut wanted: impl FnMut(&Pending) -> bool,
    ) -> Option<Pending> {
        let mut looked = 0;
        for level in (0..LEVELS).rev() {
            let messages = &self.levels[level].messages;
            let mut found = None;
            for (i, p) in messages.iter().enumerate() {
                if looked == limit {
                    return None;
                }
                looked += 1;
                if wanted(p) {
                    found = Some(i);
                    break;
                }
            }
            if let Some(i) = found {
                let pending = self.levels[level].messages.remove(i)?;
                self.note_out(&pending);
                return Some(pending);
            }
        }
        None
    }

    /// The lowest level with messages on disk.
    pub(super) fn lowest_paged_level(&self) -> Option<usize> {
        (0..LEVELS).find(|i| !self.levels[*i].paged.is_empty())
    }

    /// Takes up to `budget` record bytes (at least one record) from the
    /// head of a level's paged part: the pins, with whether each was
    /// recovered and its failed-delivery count.
    pub(super) fn take_paged(&mut self, level: usize, budget: u64) -> Vec<(JournalPin, bool, u32)> {
        let mut out = Vec::new();
        let mut taken = 0;
        while let Some(pin) = self.levels[level].paged.front() {
            if !out.is_empty() && taken + pin.bytes() > budget {
                break;
            }
            taken += pin.bytes();
            let Some(pin) = self.levels[level].paged.pop_front() else {
                break;
            };
            let l = &mut self.levels[level];
            let recovered = l.recovered > 0;
            l.recovered = l.recovered.saturating_sub(1);
            let count = match (recovered, pin.record()) {
                (true, Some(r)) => self.paged_counts.remove(&(r.segment, r.offset)),
                _ => None,
            };
            out.push((pin, recovered, count.unwrap_or(0)));
        }
        self.paged_bytes -= taken.min(self.paged_bytes);
        self.paged_count -= out.len();
        out
    }

    /// Takes out every message in memory (levels and delayed) that has
    /// expired at `now_ms`, and works out the earliest expiry left.
    pub(super) fn take_expired(&mut self, now_ms: u64) -> Vec<Pending> {
        let mut gone = Vec::new();
        let mut earliest = u64::MAX;
        let mut keep = |p: &Pending, gone_now: bool| {
            let e = p.message.terms.expires_at_ms;
            if !gone_now && e != 0 {
                earliest = earliest.min(e);
            }
        };
        for level in &mut self.levels {
            let mut kept = VecDeque::with_capacity(level.messages.len());
            for p in level.messages.drain(..) {
                let expired = p.message.terms.expired(now_ms);
                keep(&p, expired);
                if expired {
                    gone.push(p);
                } else {
                    kept.push_back(p);
                }
            }
            level.messages = kept;
        }
        let due: Vec<(u64, u64)> = self
            .delayed
            .iter()
            .filter(|(_, p)| {
                let expired = p.message.terms.expired(now_ms);
                keep(p, expired);
                expired
            })
            .map(|(k, _)| *k)
            .collect();
        for key in due {
            if let Some(p) = self.delayed.remove(&key) {
                gone.push(p);
            }
        }
        for p in &gone {
            self.note_out(p);
        }
        self.earliest_expiry = if earliest == u64::MAX { 0 } else { earliest };
        gone
    }

    /// Up to `n` messages in memory, highest level first, in arrival order.
    pub(super) fn peek(&self, n: usize) -> Vec<Arc<Message>> {
        (0..LEVELS)
            .rev()
            .flat_map(|i| self.levels[i].messages.iter())
            .take(n)
            .map(|p| p.message.clone())
            .collect()
    }

    /// The messages in memory, for compaction.
    pub(super) fn iter_mut(&mut self) -> impl Iterator<Item = &mut Pending> {
        self.levels
            .iter_mut()
            .flat_map(|l| l.messages.iter_mut())
            .chain(self.delayed.values_mut())
    }
}
