//! `/queue/NAME`: FIFO, each message to exactly one consumer, round-robin
//! over the consumers that have prefetch credit left.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::memory::Memory;
use super::message::{AckMode, Delivery, Message};
use super::policy::{Overflow, QueuePolicy};
use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::outbox::Outbox;
use crate::store::{Completion, Journal, JournalPin, Lsn};

#[derive(Debug)]
struct Consumer {
    session: SessionId,
    subscription: SubscriptionId,
    ack: AckMode,
    outbox: Arc<Outbox>,
    /// Deliveries handed out and not yet settled (acked, nacked, or, for
    /// `auto`, written to the socket).
    in_flight: usize,
    prefetch: usize,
}

#[derive(Debug)]
struct Pending {
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct State {
    messages: VecDeque<Pending>,
    /// Accounted bytes of `messages`.
    bytes: u64,
    /// Durable messages waiting on disk, behind `messages`, oldest first:
    /// past the policy's memory window a queue keeps only where each
    /// record is (a few bytes), and reads bodies back as consumers near them.
    paged: VecDeque<JournalPin>,
    /// Record bytes of `paged`.
    paged_bytes: u64,
    /// How many of the first `paged` were recovered after a restart (they
    /// go out marked redelivered).
    paged_redelivered: usize,
    /// Every record in `paged` is on disk once this is synced.
    paged_lsn: Lsn,
    consumers: Vec<Consumer>,
    /// Index of the consumer that gets the next message.
    next: usize,
}

impl State {
    /// Messages waiting, in memory and on disk.
    fn count(&self) -> usize {
        self.messages.len() + self.paged.len()
    }

    /// Bytes waiting, in memory and on disk.
    fn total_bytes(&self) -> u64 {
        self.bytes + self.paged_bytes
    }

    fn push_back(&mut self, pending: Pending) {
        self.bytes += pending.message.charge.bytes() as u64;
        self.messages.push_back(pending);
    }

    fn push_front(&mut self, pending: Pending) {
        self.bytes += pending.message.charge.bytes() as u64;
        self.messages.push_front(pending);
    }

    fn pop_front(&mut self) -> Option<Pending> {
        let pending = self.messages.pop_front()?;
        self.bytes -= pending.message.charge.bytes() as u64;
        Some(pending)
    }

    /// Gives a consumer back credit for `count` settled deliveries. A
    /// consumer that has gone meanwhile has nothing to get back.
    fn return_credit(&mut self, session: SessionId, subscription: &SubscriptionId, count: usize) {
        if let Some(c) = self
            .consumers
            .iter_mut()
            .find(|c| c.session == session && &c.subscription == subscription)
        {
            c.in_flight = c.in_flight.saturating_sub(count);
        }
    }
}

/// One queue. Its lock is held only to move messages between the queue
/// and consumers' outboxes; it is never held across an await.
#[derive(Debug)]
pub struct QueueDestination {
    name: String,
    policy: QueuePolicy,
    state: Mutex<State>,
    /// Where settling a durable message is recorded.
    journal: Option<Arc<Journal>>,
    /// What messages read back from disk are charged to.
    memory: Arc<Memory>,
}

/// A consumer's place in a queue, as given to [`QueueDestination::subscribe`].
#[derive(Debug)]
pub struct ConsumerSpec {
    /// The subscribing session.
    pub session: SessionId,
    /// The client's id for the subscription.
    pub subscription: SubscriptionId,
    /// How it acknowledges.
    pub ack: AckMode,
    /// At most this many unsettled deliveries at once.
    pub prefetch: usize,
    /// Where its deliveries go.
    pub outbox: Arc<Outbox>,
}

impl QueueDestination {
    pub(crate) fn new(
        name: String,
        policy: QueuePolicy,
        journal: Option<Arc<Journal>>,
        memory: Arc<Memory>,
    ) -> Arc<QueueDestination> {
        Arc::new(QueueDestination {
            name,
            policy,
            state: Mutex::new(State::default()),
            journal,
            memory,
        })
    }

    /// Whether messages wait on disk: new ones must too, behind them, to
    /// keep the queue's order (even `persistent:false` ones).
    pub fn is_paging(&self) -> bool {
        self.journal.is_some() && !self.lock().paged.is_empty()
    }

    /// Puts recovered messages that stay on disk behind those restored in
    /// memory; they go out marked redelivered.
    pub fn restore_paged(&self, pins: Vec<JournalPin>, written_by: Lsn) {
        let mut state = self.lock();
        for pin in pins {
            state.paged_bytes += pin.bytes();
            state.paged.push_back(pin);
            state.paged_redelivered += 1;
        }
        state.paged_lsn = state.paged_lsn.max(written_by);
        self.dispatch(&mut state);
    }

    /// Reads the oldest paged messages back into memory, about half the
    /// memory window's worth (at least one). A record that cannot be read
    /// (its write failed, so its publisher was told) is dropped and logged.
    fn page_in(&self, state: &mut State) {
        let Some(journal) = &self.journal else {
            return;
        };
        let budget = (self.policy.memory_window_bytes / 2).max(1);
        let mut pins = Vec::new();
        let mut taken = 0;
        while let Some(pin) = state.paged.front() {
            if !pins.is_empty() && taken + pin.bytes() > budget {
                break;
            }
            taken += pin.bytes();
            if let Some(pin) = state.paged.pop_front() {
                pins.push(pin);
            }
        }
        state.paged_bytes -= taken.min(state.paged_bytes);
        let refs: Vec<_> = pins.iter().filter_map(JournalPin::record).collect();
        let mut read = journal.read(&refs, state.paged_lsn).into_iter();
        for pin in pins {
            let redelivered = state.paged_redelivered > 0;
            state.paged_redelivered = state.paged_redelivered.saturating_sub(1);
            let stored = match read.next() {
                Some(Ok(stored)) => stored,
                Some(Err(e)) => {
                    tracing::error!(destination = %self.name, error = %e, "journal: a paged-out message could not be read back and is lost");
                    continue;
                }
                None => continue,
            };
            state.push_back(Pending {
                message: Arc::new(Message::stored(
                    self.name.as_str().into(),
                    stored,
                    &self.memory,
                    pin,
                )),
                redelivered,
            });
        }
    }

    /// Whether messages sent here are stored in the journal by default.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some() && self.policy.durable
    }

    /// Puts messages recovered from the journal in place, ahead of any
    /// new ones, marked redelivered: whether an earlier delivery reached a
    /// consumer before the restart cannot be known.
    pub fn restore(&self, messages: Vec<Arc<Message>>) {
        let mut state = self.lock();
        for message in messages {
            state.push_back(Pending {
                message,
                redelivered: true,
            });
        }
        self.dispatch(&mut state);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's destination name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The limits that apply to this queue.
    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// Whether `count` more messages of `bytes` in all would be accepted now.
    pub fn has_room(&self, count: usize, bytes: u64) -> bool {
        // The common queue has no limits: no lock taken on the SEND path.
        if self.policy.overflow == Overflow::DropHead || self.policy.is_unlimited() {
            return true;
        }
        let state = self.lock();
        self.policy
            .fits(state.count(), state.total_bytes(), count, bytes)
    }

    /// Appends a message and hands out what the consumers can take. A
    /// full queue refuses it (`reject-publish`) or drops its oldest waiting
    /// messages (`drop-head`); returns how many were dropped.
    /// `written_by` is the completion of its journal record, if any.
    pub fn enqueue(
        &self,
        message: Arc<Message>,
        written_by: Completion,
    ) -> Result<usize, QueueFull> {
        let mut state = self.lock();
        let size = message.charge.bytes() as u64;
        let mut dropped = 0;
        if !self.policy.is_unlimited()
            && !self
                .policy
                .fits(state.count(), state.total_bytes(), 1, size)
        {
            match self.policy.overflow {
                Overflow::RejectPublish => return Err(self.full()),
                Overflow::DropHead => {
                    let mut settled = Vec::new();
                    while state.count() > 0
                        && !self
                            .policy
                            .fits(state.count(), state.total_bytes(), 1, size)
                    {
                        if state.messages.is_empty() {
                            self.page_in(&mut state);
                        }
                        if let Some(gone) = state.pop_front()
                            && gone.message.is_durable()
                        {
                            settled.push(gone.message.id.number());
                        }
                        dropped += 1;
                    }
                    if let Some(journal) = &self.journal {
                        // Dropped for good: a restart must not bring them back.
                        let _ = journal.settle(&self.name, &settled);
                    }
                }
            }
        }
        let window = self.policy.memory_window_bytes;
        let page = window > 0
            && message.journal.as_ref().is_some_and(JournalPin::readable)
            && (!state.paged.is_empty() || state.bytes + size > window);
        let message = if page {
            match Arc::try_unwrap(message) {
                Ok(mut m) => {
                    if let Some(pin) = m.journal.take() {
                        // The body and headers go; the record says where they are.
                        state.paged_bytes += pin.bytes();
                        state.paged.push_back(pin);
                        state.paged_lsn = state.paged_lsn.max(written_by.lsn().unwrap_or(0));
                        self.dispatch(&mut state);
                        return Ok(dropped);
                    }
                    Arc::new(m)
                }
                Err(shared) => shared,
            }
        } else {
            message
        };
        state.push_back(Pending {
            message,
            redelivered: false,
        });
        self.dispatch(&mut state);
        Ok(dropped)
    }

    /// The refusal of a SEND to this queue when it is full.
    pub fn full(&self) -> QueueFull {
        QueueFull {
            destination: self.name.clone(),
            max_length: self.policy.max_length,
            max_length_bytes: self.policy.max_length_bytes,
        }
    }

    /// Bytes of the messages waiting for a consumer, in memory and on disk.
    pub fn depth_bytes(&self) -> u64 {
        self.lock().total_bytes()
    }

    /// Messages waiting on disk, not in memory.
    pub fn paged(&self) -> usize {
        self.lock().paged.len()
    }

    /// Adds a consumer and gives it what is waiting.
    pub fn subscribe(&self, spec: ConsumerSpec) {
        let mut state = self.lock();
        state.consumers.push(Consumer {
            session: spec.session,
            subscription: spec.subscription,
            ack: spec.ack,
            outbox: spec.outbox,
            in_flight: 0,
            prefetch: spec.prefetch.max(1),
        });
        self.dispatch(&mut state);
    }

    /// Removes a consumer. Its unsettled messages come back through [`requeue`](Self::requeue).
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        let mut state = self.lock();
        state
            .consumers
            .retain(|c| !(c.session == session && &c.subscription == subscription));
        if state.next >= state.consumers.len() {
            state.next = 0;
        }
        self.dispatch(&mut state);
    }

    /// Settles deliveries of one consumer that were acked or, for auto
    /// mode, written out: the consumer gets its credit back, more messages
    /// may flow, and the durable ones are recorded as done.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> crate::store::Completion {
        let completion = match &self.journal {
            Some(journal) if tags.iter().any(|t| t.durable) => {
                let ids: Vec<u64> = tags
                    .iter()
                    .filter(|t| t.durable)
                    .map(|t| t.message)
                    .collect();
                journal.settle(&self.name, &ids)
            }
            _ => crate::store::Completion::DONE,
        };
        let mut state = self.lock();
        state.return_credit(session, subscription, tags.len());
        self.dispatch(&mut state);
        completion
    }

    /// Puts unacknowledged messages back at the head of the queue, in their
    /// original order, marked redelivered, and returns the consumer's credit.
    pub fn requeue(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        messages: Vec<Arc<Message>>,
    ) {
        let mut state = self.lock();
        let count = messages.len();
        for message in messages.into_iter().rev() {
            state.push_front(Pending {
                message,
                redelivered: true,
            });
        }
        state.return_credit(session, subscription, count);
        self.dispatch(&mut state);
    }

    /// Puts back deliveries that never reached their session (it closed
    /// with them still in its outbox). They were never seen, so they are
    /// not marked redelivered.
    pub fn return_undelivered(&self, deliveries: Vec<Delivery>) {
        let mut state = self.lock();
        for d in deliveries.into_iter().rev() {
            state.push_front(Pending {
                message: d.message,
                redelivered: d.redelivered,
            });
        }
        self.dispatch(&mut state);
    }

    /// Writes the journal records of waiting messages held in journal
    /// segment `segment` again at the journal's end, so that segment can be
    /// deleted. A message someone else also holds (being delivered) is
    /// left; it is settled or back here soon. Returns how many moved.
    pub fn compact(&self, segment: u64) -> Compacted {
        let mut done = Compacted::default();
        let Some(journal) = &self.journal else {
            return done;
        };
        let mut state = self.lock();
        for pending in state.messages.iter_mut() {
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
                let (written, pin) =
                    journal.re_enqueue(&self.name, m.id.number(), &m.headers, &m.body);
                done.add(m.journal.replace(pin), written);
            }
        }
        done
    }

    /// No messages and no consumers: nothing would be lost by forgetting it.
    pub fn is_idle(&self) -> bool {
        let state = self.lock();
        state.count() == 0 && state.consumers.is_empty()
    }

    /// Messages waiting for a consumer, in memory and on disk.
    pub fn depth(&self) -> usize {
        self.lock().count()
    }

    /// Hands messages to consumers round-robin while any has credit.
    /// Called with the lock held.
    fn dispatch(&self, state: &mut State) {
        if !state.paged.is_empty()
            && !state.consumers.is_empty()
            && state.bytes < self.policy.memory_window_bytes / 2
        {
            // Read ahead before memory runs dry, so consumers keep going.
            self.page_in(state);
        }
        while !state.messages.is_empty() && !state.consumers.is_empty() {
            let n = state.consumers.len();
            let Some(offset) = (0..n).find(|i| {
                let c = &state.consumers[(state.next + i) % n];
                c.in_flight < c.prefetch
            }) else {
                return;
            };
            let index = (state.next + offset) % n;
            let Some(pending) = state.pop_front() else {
                return;
            };
            let consumer = &mut state.consumers[index];
            let tag = DeliveryTag {
                destination: pending.message.destination.clone(),
                message: pending.message.id.number(),
                durable: pending.message.is_durable(),
            };
            let delivery = Delivery {
                subscription: consumer.subscription.clone(),
                message: pending.message,
                redelivered: pending.redelivered,
                ack: consumer.ack,
                tag: Some(tag),
                history: false,
                control: false,
            };
            match consumer.outbox.push_queue(delivery) {
                Ok(()) => {
                    consumer.in_flight += 1;
                    state.next = (index + 1) % n;
                }
                Err(back) => {
                    // The session is closing and will unsubscribe; stop
                    // offering it messages until then.
                    consumer.in_flight = consumer.prefetch;
                    state.push_front(Pending {
                        message: back.message,
                        redelivered: back.redelivered,
                    });
                }
            }
        }
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

/// A SEND refused because its queue is at a limit of its policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "queue {destination} is full (max_length {max_length}, max_length_bytes {max_length_bytes}; 0 means no limit)"
)]
pub struct QueueFull {
    /// The queue.
    pub destination: String,
    /// Its message limit.
    pub max_length: usize,
    /// Its byte limit.
    pub max_length_bytes: u64,
}
