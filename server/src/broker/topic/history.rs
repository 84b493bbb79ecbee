//! A topic's stream kept in memory: the history a subscriber may ask for
//! (`x-history`, `x-since`, `x-history-before`), what durable subscriptions
//! have not settled yet, and their journal records.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use stomp_codec::ByteString;

use crate::broker::Message;
use crate::broker::durable_sub::DurableSub;
use crate::store::{Completion, TopicEntry};

use super::{Kept, MAX_STREAM, State, Subscriber, TopicDestination, selects};

/// What a SUBSCRIBE asks to be replayed before live messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The last `n` kept messages (`x-history: n`).
    Last(usize),
    /// Every kept message after `position` of `epoch` (`x-since`, `x-since-epoch`).
    Since {
        /// The broker run the position belongs to.
        epoch: String,
        /// The last position the client has.
        position: u64,
    },
    /// The last `n` kept messages before `position` of `epoch`
    /// (`x-history-before`, `x-since-epoch`, `x-history`): older history,
    /// a page at a time. The marker after them says `x-history-oldest`,
    /// the oldest position kept, so the client knows when to stop asking.
    Before {
        /// The broker run the position belongs to.
        epoch: String,
        /// The oldest position the client has.
        position: u64,
        /// How many at most.
        n: usize,
    },
}

impl TopicDestination {
    /// Puts back the stream recovered from the journal: it goes on from
    /// where it was, under the same epoch, so a client's `x-since` sees no
    /// gap, and durable subscriptions resume from their cursors (what they
    /// had been sent counts as delivered). `messages` are in position
    /// order, with their ages.
    pub(crate) fn restore(
        &self,
        next_position: u64,
        messages: Vec<(Arc<Message>, Duration)>,
        durables: Vec<(ByteString, u64)>,
    ) {
        let mut state = self.lock();
        let now = Instant::now();
        state.next_position = state.next_position.max(next_position);
        for (key, cursor) in durables {
            state.durables.insert(
                key,
                DurableSub::new(cursor, next_position.saturating_sub(1)),
            );
        }
        for (message, age) in messages {
            state.kept.push_back(Kept {
                at: now.checked_sub(age).unwrap_or(now),
                message,
            });
        }
        self.trim(&mut state, now);
    }

    /// Sends a subscriber the history it asked for, then the marker that
    /// says whether it connects to what the client had.
    pub(super) fn send_history(&self, state: &State, subscriber: &Subscriber, recovery: &Recovery) {
        let (replay, complete) = self.replay(state, recovery);
        for message in replay {
            if !selects(&subscriber.selector, &message) {
                continue;
            }
            let _ = subscriber
                .outbox
                .push_topic(subscriber.delivery(message, true));
        }
        let head = (state.next_position - 1).to_string();
        let oldest = self
            .history(state, Instant::now())
            .next()
            .and_then(|k| k.message.stream.as_ref())
            .map_or(state.next_position, |p| p.position)
            .to_string();
        let marker = self.control(
            &[
                ("x-recovery", if complete { "complete" } else { "gap" }),
                ("x-stream-epoch", &self.epoch),
                ("x-stream-position", &head),
                ("x-history-oldest", &oldest),
            ],
            Bytes::new(),
        );
        self.push_control(subscriber, marker);
    }

    /// The kept messages to replay, and whether they connect to what the
    /// client already has (no gap).
    pub(super) fn replay(&self, state: &State, recovery: &Recovery) -> (Vec<Arc<Message>>, bool) {
        let now = Instant::now();
        let window: Vec<&Kept> = self.history(state, now).collect();
        let all = || window.iter().map(|k| k.message.clone());
        match recovery {
            Recovery::Last(n) => {
                let skip = window.len().saturating_sub(*n);
                (all().skip(skip).collect(), true)
            }
            Recovery::Since { epoch, position } if *epoch == *self.epoch => {
                let head = state.next_position - 1;
                if *position == head {
                    return (Vec::new(), true);
                }
                // Beyond the head: the client has positions this stream
                // never gave out, so what it holds cannot be trusted.
                if *position > head {
                    return (all().collect(), false);
                }
                let oldest = window
                    .first()
                    .and_then(|k| k.message.stream.as_ref())
                    .map_or(state.next_position, |s| s.position);
                let replay = all()
                    .filter(|m| m.stream.as_ref().is_some_and(|s| s.position > *position))
                    .collect();
                (replay, oldest <= position + 1)
            }
            // Another broker run: positions do not compare. Everything kept is
            // new to the client, and what it missed in between is unknown.
            Recovery::Since { .. } => (all().collect(), false),
            Recovery::Before { epoch, position, n } => {
                // Another run's positions say nothing about this one's.
                if *epoch != *self.epoch {
                    return (Vec::new(), false);
                }
                let older: Vec<Arc<Message>> = all()
                    .filter(|m| m.stream.as_ref().is_some_and(|s| s.position < *position))
                    .collect();
                let skip = older.len().saturating_sub(*n);
                (older.into_iter().skip(skip).collect(), true)
            }
        }
    }

    /// The history window: the kept messages the policy's count and age
    /// allow (more may be retained for durable subscriptions).
    pub(super) fn history<'a>(
        &self,
        state: &'a State,
        now: Instant,
    ) -> impl Iterator<Item = &'a Kept> + 'a {
        let skip = state.kept.len().saturating_sub(self.policy.history);
        let max_age = self.policy.max_age();
        state
            .kept
            .iter()
            .skip(skip)
            .filter(move |k| max_age.is_none_or(|age| now.duration_since(k.at) <= age))
    }

    /// Drops retained messages nothing needs: beyond the history's count
    /// and age, and already settled by every durable subscription. Past
    /// [`MAX_STREAM`] the oldest go regardless, moving lagging cursors on.
    pub(super) fn trim(&self, state: &mut State, now: Instant) {
        let needed_from = state
            .durables
            .values()
            .map(|d| d.cursor + 1)
            .min()
            .unwrap_or(u64::MAX);
        let position = |k: &Kept| k.message.stream.as_ref().map_or(0, |s| s.position);
        let max_age = self.policy.max_age();
        while let Some(front) = state.kept.front() {
            let beyond_history = state.kept.len() > self.policy.history
                || max_age.is_some_and(|age| now.duration_since(front.at) > age);
            if beyond_history && position(front) < needed_from {
                state.kept.pop_front();
            } else {
                break;
            }
        }
        while state.kept.len() > MAX_STREAM {
            let Some(gone) = state.kept.pop_front() else {
                break;
            };
            let p = position(&gone);
            for d in state.durables.values_mut() {
                let skipped = d.skip_to(p);
                if skipped > 0 {
                    tracing::warn!(
                        topic = %self.name,
                        skipped,
                        "a durable subscription fell more than {MAX_STREAM} messages behind: the oldest were dropped"
                    );
                }
            }
        }
    }

    /// Drops the kept history (an operator's purge): every kept message
    /// no durable subscription still needs. With a journal the purge is
    /// recorded, so a restart does not bring them back; the completion is
    /// done when that record is on disk. Returns how many went.
    pub fn purge_history(&self) -> (usize, Completion) {
        let mut state = self.lock();
        let needed_from = state
            .durables
            .values()
            .map(|d| d.cursor + 1)
            .min()
            .unwrap_or(state.next_position);
        let position = |k: &Kept| k.message.stream.as_ref().map_or(0, |s| s.position);
        let before = state.kept.len();
        state.kept.retain(|k| position(k) >= needed_from);
        let purged = before - state.kept.len();
        let completion = match &self.journal {
            Some(journal) if purged > 0 => {
                journal.purge_topic(&self.name, &self.epoch, needed_from)
            }
            _ => Completion::DONE,
        };
        (purged, completion)
    }

    /// Writes the journal records of kept messages held in journal segment
    /// `segment` again at the journal's end (see `QueueDestination::compact`).
    pub fn compact(&self, segment: u64) -> crate::broker::Compacted {
        let mut done = crate::broker::Compacted::default();
        let Some(journal) = &self.journal else {
            return done;
        };
        let mut state = self.lock();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        for kept in state.kept.iter_mut() {
            let age = kept.at.elapsed().as_millis() as u64;
            let Some(m) = Arc::get_mut(&mut kept.message) else {
                continue;
            };
            let (Some(pin), Some(stream)) = (&m.journal, &m.stream) else {
                continue;
            };
            if pin.segment() != segment {
                continue;
            }
            let (written, pin) = journal.re_append_topic(&TopicEntry {
                topic: &self.name,
                epoch: &stream.epoch,
                position: stream.position,
                id: m.id.number(),
                at_ms: now_ms.saturating_sub(age),
                headers: &m.headers,
                body: &m.body,
            });
            done.add(m.journal.replace(pin), written);
        }
        done
    }
}
