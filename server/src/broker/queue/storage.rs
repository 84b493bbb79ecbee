//! Where a queue's waiting messages live: in memory, packed past the memory
//! window, or paged out to the journal and read back as consumers near them;
//! and their journal records moved on by compaction.

use std::sync::Arc;

use crate::broker::Message;
use crate::store::{Completion, JournalPin, Lsn};

use super::backlog::Pending;
use super::cold::Cold;
use super::{QueueDestination, State, UNPACK_BATCH};

impl QueueDestination {
    /// Puts messages recovered from the journal in place, ahead of any
    /// new ones, marked redelivered (whether an earlier delivery reached a
    /// consumer before the restart cannot be known), each with its count
    /// of failed deliveries.
    pub fn restore(&self, messages: Vec<(Arc<Message>, u32)>) {
        let now = self.env.clock.now_ms();
        let mut state = self.lock();
        for (message, deliveries) in messages {
            let pending = Pending {
                message,
                deliveries,
                redelivered: true,
            };
            if pending.message.terms.held_back(now) {
                state.backlog.push_delayed(pending);
            } else {
                state.backlog.push_back(pending);
            }
        }
        self.schedule(&mut state, now);
        self.dispatch(&mut state);
    }

    /// Puts recovered messages that stay on disk behind those restored in
    /// memory: their pins, priorities and failed-delivery counts.
    pub fn restore_paged(&self, pins: Vec<(JournalPin, u8, u32)>, written_by: Lsn) {
        let mut state = self.lock();
        for (pin, priority, returned) in pins {
            state.backlog.push_recovered_paged(priority, pin, returned);
        }
        state.backlog.paged_lsn = state.backlog.paged_lsn.max(written_by);
        self.dispatch(&mut state);
    }

    /// Past the memory window (or behind messages already there), pages
    /// a new (or newly due) durable message out to disk and packs a
    /// non-durable one: returns the message when it stays as it is.
    pub(super) fn place(
        &self,
        state: &mut State,
        pending: Pending,
        written_by: Lsn,
    ) -> Option<Pending> {
        let window = self.policy.memory_window_bytes;
        let message = &pending.message;
        let size = message.charge.bytes() as u64;
        let priority = message.terms.priority;
        if window == 0 || pending.deliveries > 0 || pending.redelivered {
            return Some(pending);
        }
        let past_window = state.backlog.bytes + size > window;
        let page = message.journal.as_ref().is_some_and(JournalPin::readable)
            && (past_window || state.backlog.level_is_paging(priority));
        let pack = message.journal.is_none()
            && message.stream.is_none()
            && (past_window || state.backlog.level_is_packing(priority));
        if !page && !pack {
            return Some(pending);
        }
        match Arc::try_unwrap(pending.message) {
            Ok(mut m) => match m.journal.take() {
                // The body and headers go; the record says where they are.
                Some(pin) => {
                    state.backlog.push_paged(priority, pin, written_by);
                    None
                }
                None => {
                    let cold = Cold::pack(&m, &self.name);
                    state.backlog.push_packed(priority, cold, &self.env.memory);
                    None
                }
            },
            Err(shared) => Some(Pending::new(shared)),
        }
    }

    /// Reads the oldest paged messages of a level back into memory, about
    /// half the memory window's worth (at least one). A record that cannot
    /// be read (its write failed, so its publisher was told) is dropped
    /// and logged.
    pub(super) fn page_in(&self, state: &mut State, level: usize) {
        let Some(journal) = &self.env.journal else {
            return;
        };
        let budget = (self.policy.memory_window_bytes / 2).max(1);
        let pins = state.backlog.take_paged(level, budget);
        let refs: Vec<_> = pins.iter().filter_map(|(p, _, _)| p.record()).collect();
        let mut read = journal.read(&refs, state.backlog.paged_lsn).into_iter();
        for (pin, recovered, deliveries) in pins {
            let stored = match read.next() {
                Some(Ok(stored)) => stored,
                Some(Err(e)) => {
                    tracing::error!(destination = %self.name, error = %e, "journal: a paged-out message could not be read back and is lost");
                    continue;
                }
                None => continue,
            };
            let message = Message::stored(
                self.name.clone(),
                stored,
                &self.env.memory,
                pin,
                self.policy.message_ttl_ms,
            );
            state.backlog.push_back(Pending {
                message: Arc::new(message),
                deliveries,
                redelivered: recovered,
            });
        }
    }

    /// The oldest message of the lowest priority: what a full queue lets go.
    pub(super) fn pop_lowest(&self, state: &mut State) -> Option<Pending> {
        if let Some(p) = state.backlog.pop_lowest() {
            return Some(p);
        }
        if let Some(level) = state.backlog.lowest_packed_level() {
            let memory = &self.env.memory;
            state
                .backlog
                .unpack(level, UNPACK_BATCH, &self.name, memory);
            return state.backlog.pop_lowest();
        }
        let level = state.backlog.lowest_paged_level()?;
        self.page_in(state, level);
        state.backlog.pop_lowest()
    }

    /// Writes the journal records of waiting messages held in journal
    /// segment `segment` again at the journal's end, so that segment can be
    /// deleted. A message someone else also holds (being delivered) is
    /// left; it is settled or back here soon. Returns how many moved.
    pub fn compact(&self, segment: u64) -> Compacted {
        let mut done = Compacted::default();
        let Some(journal) = &self.env.journal else {
            return done;
        };
        let mut state = self.lock();
        for pending in state.backlog.iter_mut() {
            if pending
                .message
                .journal
                .as_ref()
                .is_none_or(|pin| pin.segment() != segment)
            {
                continue;
            }
            if let Some(m) = Arc::get_mut(&mut pending.message) {
                // Under the queue's lock: no ACK of it can be written in between.
                let (written, pin) = journal.re_enqueue(
                    &self.name,
                    m.id.number(),
                    m.terms.at_ms,
                    &m.headers,
                    &m.body,
                );
                done.add(m.journal.replace(pin), written);
            }
        }
        done
    }
}

/// What a compaction moved: the old records' pins, to be let go only once
/// the new records are on disk (until then the old segment must stay).
#[derive(Debug, Default)]
pub struct Compacted {
    /// Pins of the old records.
    pub old: Vec<JournalPin>,
    /// When the new records are on disk.
    pub written: Completion,
}

impl Compacted {
    pub(crate) fn add(&mut self, old: Option<JournalPin>, written: Completion) {
        self.old.extend(old);
        self.written = self.written.and(written);
    }

    /// Folds another compaction's result into this one.
    pub fn merge(&mut self, other: Compacted) {
        self.old.extend(other.old);
        self.written = self.written.and(other.written);
    }
}
