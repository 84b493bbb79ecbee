//! The messages a queue holds for its consumers: ten priority levels,
//! each FIFO and each with a part in memory, a part packed in memory and a
//! part waiting on disk (both past the memory window), plus the delayed
//! messages not yet due. Pure bookkeeping: no locks, no consumers, no
//! journal writes.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use stomp_codec::ByteString;

use super::super::memory::{Charge, Memory};
use super::super::message::Message;
use super::cold::Cold;
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
    /// Non-durable messages past the window, packed, behind `messages`,
    /// oldest first; unpacked as consumers near them.
    packed: VecDeque<Cold>,
    /// Durable messages waiting on disk, behind `messages`, oldest first:
    /// a few bytes each, read back as consumers near them.
    paged: VecDeque<JournalPin>,
    /// How many of the first `paged` were recovered after a restart (they
    /// go out marked redelivered).
    recovered: usize,
}

/// Slots a level keeps allocated once it is empty.
const KEEP_CAPACITY: usize = 1024;

/// Where the next message of a level comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// Its memory part: take it.
    Memory,
    /// Its packed part: unpack some first.
    Packed,
    /// Its part on disk: read some back first.
    Disk,
}

/// A queue's waiting messages.
#[derive(Debug, Default)]
pub(super) struct Backlog {
    levels: [Level; LEVELS],
    /// Accounted bytes of the messages in memory (levels, packed and delayed).
    pub(super) bytes: u64,
    /// Of which packed.
    packed_bytes: u64,
    packed_count: usize,
    /// What the packed messages hold of the broker's memory, together.
    packed_charge: Option<Charge>,
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
            + self.packed_count
            + self.paged_count
            + self.delayed.len()
    }

    /// Accounted bytes of the messages in memory and not packed.
    pub(super) fn unpacked_bytes(&self) -> u64 {
        self.bytes - self.packed_bytes
    }

    /// Messages waiting packed.
    pub(super) fn packed(&self) -> usize {
        self.packed_count
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

    /// Whether `priority`'s level has packed messages (a new non-durable
    /// message of that level must be packed too, behind them).
    pub(super) fn level_is_packing(&self, priority: u8) -> bool {
        !self.levels[usize::from(priority)].packed.is_empty()
    }

    fn note_expiry(&mut self, e: u64) {
        if e != 0 {
            self.earliest_expiry = if self.expiring == 0 {
                e
            } else {
                self.earliest_expiry.min(e)
            };
            self.expiring += 1;
        }
    }

    fn charge_packed(&mut self, cold: &Cold, memory: Option<&Arc<Memory>>, taken: bool) {
        let bytes = cold.charged();
        if taken {
            self.bytes -= (bytes as u64).min(self.bytes);
            self.packed_bytes -= (bytes as u64).min(self.packed_bytes);
            self.packed_count -= 1;
            if cold.expires_at_ms() != 0 {
                self.expiring = self.expiring.saturating_sub(1);
            }
        } else {
            self.bytes += bytes as u64;
            self.packed_bytes += bytes as u64;
            self.packed_count += 1;
            self.note_expiry(cold.expires_at_ms());
        }
        let charge = match (&mut self.packed_charge, memory) {
            (Some(c), _) => c,
            (None, Some(m)) => self.packed_charge.insert(m.charge(0)),
            (None, None) => return,
        };
        let held = charge.bytes();
        charge.set(if taken {
            held.saturating_sub(bytes)
        } else {
            held + bytes
        });
    }

    /// Appends a packed message to level `priority`, charging it to `memory`.
    pub(super) fn push_packed(&mut self, priority: u8, cold: Cold, memory: &Arc<Memory>) {
        self.charge_packed(&cold, Some(memory), false);
        self.levels[usize::from(priority)].packed.push_back(cold);
    }

    /// Unpacks up to `most` (at least one) of a level's packed messages
    /// to the back of its memory part; returns how many.
    pub(super) fn unpack(
        &mut self,
        level: usize,
        most: usize,
        queue: &ByteString,
        memory: &Arc<Memory>,
    ) -> usize {
        let mut n = 0;
        while n < most.max(1) {
            let Some(cold) = self.levels[level].packed.pop_front() else {
                break;
            };
            self.charge_packed(&cold, None, true);
            let pending = Pending::new(Arc::new(cold.unpack(queue, memory)));
            self.push_back(pending);
            n += 1;
        }
        let packed = &mut self.levels[level].packed;
        if packed.is_empty() && packed.capacity() > KEEP_CAPACITY {
            *packed = VecDeque::new();
        }
        n
    }

    /// Takes the packed message `id` out, unpacked.
    pub(super) fn take_packed(
        &mut self,
        id: u64,
        queue: &ByteString,
        memory: &Arc<Memory>,
    ) -> Option<Pending> {
        let (level, i) = self.levels.iter().enumerate().find_map(|(l, level)| {
            level
                .packed
                .iter()
                .position(|c| c.id() == id)
                .map(|i| (l, i))
        })?;
        let cold = self.levels[level].packed.remove(i)?;
        self.charge_packed(&cold, None, true);
        Some(Pending::new(Arc::new(cold.unpack(queue, memory))))
    }

    /// The highest level with packed messages.
    pub(super) fn highest_packed_level(&self) -> Option<usize> {
        (0..LEVELS)
            .rev()
            .find(|i| !self.levels[*i].packed.is_empty())
    }

    /// The lowest level with packed messages.
    pub(super) fn lowest_packed_level(&self) -> Option<usize> {
        (0..LEVELS).find(|i| !self.levels[*i].packed.is_empty())
    }

    fn note_in(&mut self, pending: &Pending) {
        self.bytes += pending.message.charge.bytes() as u64;
        self.note_expiry(pending.message.terms.expires_at_ms);
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

    /// The highest level with anything to deliver now, and where its
    /// next message is (a memory part empties before its packed part is
    /// unpacked, and that before its paged part is read).
    pub(super) fn next_level(&self) -> Option<(usize, Source)> {
        (0..LEVELS).rev().find_map(|i| {
            let l = &self.levels[i];
            if !l.messages.is_empty() {
                Some((i, Source::Memory))
            } else if !l.packed.is_empty() {
                Some((i, Source::Packed))
            } else if !l.paged.is_empty() {
                Some((i, Source::Disk))
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
        // As for the memory part: 24 MB of slots for a million paged
        // messages stayed allocated after they were delivered.
        let paged = &mut self.levels[level].paged;
        if paged.is_empty() && paged.capacity() > KEEP_CAPACITY {
            *paged = VecDeque::new();
        }
        out
    }

    /// Takes out every message in memory (levels, packed and delayed) that
    /// has expired at `now_ms`, and works out the earliest expiry left.
    pub(super) fn take_expired(
        &mut self,
        now_ms: u64,
        queue: &ByteString,
        memory: &Arc<Memory>,
    ) -> Vec<Pending> {
        let mut gone = Vec::new();
        let mut earliest = u64::MAX;
        let mut keep = |p: &Pending, gone_now: bool| {
            let e = p.message.terms.expires_at_ms;
            if !gone_now && e != 0 {
                earliest = earliest.min(e);
            }
        };
        let mut unpacked = Vec::new();
        let mut packed_earliest = u64::MAX;
        for level in &mut self.levels {
            if level
                .packed
                .iter()
                .any(|c| c.expires_at_ms() != 0 && c.expires_at_ms() <= now_ms)
            {
                let mut kept = VecDeque::with_capacity(level.packed.len());
                for c in level.packed.drain(..) {
                    let e = c.expires_at_ms();
                    if e != 0 && e <= now_ms {
                        unpacked.push(c);
                    } else {
                        kept.push_back(c);
                    }
                }
                level.packed = kept;
            }
            for c in &level.packed {
                if c.expires_at_ms() != 0 {
                    packed_earliest = packed_earliest.min(c.expires_at_ms());
                }
            }
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
        for c in unpacked {
            self.charge_packed(&c, None, true);
            gone.push(Pending::new(Arc::new(c.unpack(queue, memory))));
        }
        let earliest = earliest.min(packed_earliest);
        self.earliest_expiry = if earliest == u64::MAX { 0 } else { earliest };
        gone
    }

    /// Up to `n` messages in memory (packed ones unpacked as copies),
    /// highest level first, in arrival order.
    pub(super) fn peek(&self, n: usize, queue: &ByteString) -> Vec<Arc<Message>> {
        (0..LEVELS)
            .rev()
            .flat_map(|i| {
                let l = &self.levels[i];
                l.messages
                    .iter()
                    .map(|p| p.message.clone())
                    .chain(l.packed.iter().map(|c| Arc::new(c.copy(queue))))
            })
            .take(n)
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
