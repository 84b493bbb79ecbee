//! `/queue/NAME`: each message to exactly one consumer, round-robin over
//! the consumers that have prefetch credit left; higher priorities first,
//! FIFO within one; delayed messages held back until due; expired ones
//! never delivered; messages that keep failing set aside (dead-lettered).

mod backlog;
mod cold;

use std::sync::{Arc, Mutex};

use stomp_codec::ByteString;

use super::clock::Clock;
use super::dead_letter::{DeadLetter, DeadLetters, DeathReason};
use super::dedup::{Claim, DedupWindow};
use super::memory::Memory;
use super::message::{AckMode, Delivery, Message};
use super::policy::{Overflow, QueuePolicy};
use super::timers::Timers;
use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::outbox::Outbox;
use crate::store::{Completion, Journal, JournalPin, Lsn};
use backlog::{Backlog, Pending, Source};
use cold::Cold;

/// Packed messages unpacked at a time as consumers near them: enough to
/// keep them busy between two unpackings, few enough that one unpacking
/// (about 0.2 µs a message) holds the queue's lock only briefly.
const UNPACK_BATCH: usize = 256;

/// Shortest time between two scans of a queue for expired messages: each
/// scan walks the messages in memory, so many distinct expiry times must
/// not cost a walk each.
const EXPIRY_SCAN_MS: u64 = 100;

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
    /// Its ack deadline, ms (0: none).
    ack_timeout_ms: u32,
    /// Only messages this selects.
    selector: Option<Arc<super::Selector>>,
}

impl Consumer {
    fn can_take(&self, message: &Message) -> bool {
        self.in_flight < self.prefetch
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&message.headers))
    }
}

/// Messages looked at per dispatch for consumers with selectors: a queue
/// whose head nobody's selector takes is not blocked, but the walk past
/// such messages is bounded.
const SELECTOR_SCAN: usize = 4096;

#[derive(Debug, Default)]
struct State {
    backlog: Backlog,
    consumers: Vec<Consumer>,
    /// Index of the consumer that gets the next message.
    next: usize,
    /// The wake-up asked of the broker's timers (0: none).
    wake_at: u64,
    /// When expired messages were last looked for.
    last_scan_ms: u64,
    /// What passed through, for `/metrics`.
    counts: Counted,
}

/// A queue's running counts, kept under its lock.
#[derive(Debug, Default, Clone, Copy)]
struct Counted {
    published: u64,
    delivered: u64,
    acknowledged: u64,
    redelivered: u64,
}

impl State {
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

/// What a queue shares with the rest of the broker.
#[derive(Debug, Clone)]
pub struct QueueEnv {
    /// Where durable messages are kept, if anywhere.
    pub journal: Option<Arc<Journal>>,
    /// What messages read back from disk are charged to.
    pub memory: Arc<Memory>,
    /// Now, for delays and expiry.
    pub clock: Arc<Clock>,
    /// Where a queue asks to be woken for its next delay or expiry.
    pub timers: Arc<Timers>,
    /// Where messages it gives up on go.
    pub dead_letters: Arc<DeadLetters>,
    /// In cluster mode, the link to Redis: the queue's messages live there
    /// (`None` for private queues, which stay on their node).
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// One queue. Its lock is held only to move messages between the queue
/// and consumers' outboxes; it is never held across an await, and no
/// other queue's lock is taken under it.
#[derive(Debug)]
pub struct QueueDestination {
    name: ByteString,
    policy: QueuePolicy,
    /// Where its dead letters go (`None`: dropped and counted).
    dead_letter: Option<ByteString>,
    state: Mutex<State>,
    /// Deduplication ids seen; created with the first one.
    dedup: Mutex<Option<DedupWindow>>,
    env: QueueEnv,
    /// Messages given up on, by reason (rare: counted without the lock).
    dead_counts: [std::sync::atomic::AtomicU64; 4],
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
    /// Its own ack deadline (`x-ack-timeout`), ms; 0 takes the queue policy's.
    pub ack_timeout_ms: u32,
    /// Only messages this selects (`selector`).
    pub selector: Option<Arc<super::Selector>>,
}

impl QueueDestination {
    pub(crate) fn new(name: String, policy: QueuePolicy, env: QueueEnv) -> Arc<QueueDestination> {
        let dead_letter = policy.dead_letter_target(&name);
        Arc::new(QueueDestination {
            name: ByteString::from(name),
            policy,
            dead_letter,
            state: Mutex::new(State::default()),
            dedup: Mutex::new(None),
            dead_counts: Default::default(),
            env,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The queue's destination name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its name, shared.
    pub fn name_shared(&self) -> &ByteString {
        &self.name
    }

    /// Whether a message enqueued now would go straight to a consumer:
    /// nothing waits and one (without a selector) has credit left.
    pub fn would_deliver_at_once(&self) -> bool {
        let state = self.lock();
        state.backlog.count() == 0
            && state
                .consumers
                .iter()
                .any(|c| c.selector.is_none() && c.in_flight < c.prefetch)
    }

    /// The limits that apply to this queue.
    pub fn policy(&self) -> &QueuePolicy {
        &self.policy
    }

    /// Where its dead letters go.
    pub fn dead_letter_target(&self) -> Option<&str> {
        self.dead_letter.as_deref()
    }

    /// Whether messages sent here are stored in the journal by default.
    pub fn is_durable(&self) -> bool {
        self.env.journal.is_some() && self.policy.durable
    }

    /// Whether messages wait on disk: new ones must too, behind them, to
    /// keep the queue's order (even `persistent:false` ones).
    pub fn is_paging(&self) -> bool {
        self.env.journal.is_some() && self.lock().backlog.paged() > 0
    }

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

    /// Reads the oldest paged messages of a level back into memory, about
    /// half the memory window's worth (at least one). A record that cannot
    /// be read (its write failed, so its publisher was told) is dropped
    /// and logged.
    fn page_in(&self, state: &mut State, level: usize) {
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

    /// Whether `count` more messages of `bytes` in all would be accepted now.
    pub fn has_room(&self, count: usize, bytes: u64) -> bool {
        // The common queue has no limits: no lock taken on the SEND path.
        if self.policy.overflow != Overflow::RejectPublish || self.policy.is_unlimited() {
            return true;
        }
        let state = self.lock();
        self.policy.fits(
            state.backlog.count(),
            state.backlog.total_bytes(),
            count,
            bytes,
        )
    }

    /// Whether a SEND with deduplication id `id` is new (enqueue it, then
    /// [`record_dedup`](Self::record_dedup)), or a repeat within the
    /// policy's window (confirm it when the first is safe, enqueue nothing).
    pub fn claim_dedup(&self, id: &ByteString) -> Claim {
        let now = self.env.clock.now_ms();
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        dedup
            .get_or_insert_with(|| self.new_dedup_window())
            .claim(id, now)
    }

    fn new_dedup_window(&self) -> DedupWindow {
        DedupWindow::new(
            self.policy.dedup_window_secs.saturating_mul(1000),
            self.policy.dedup_window_ids,
            self.env.memory.clone(),
        )
    }

    /// Completes a claim: the message is enqueued, safe once `written`.
    pub fn record_dedup(&self, id: &ByteString, written: Completion, pin: Option<JournalPin>) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = dedup.as_mut() {
            window.record(id, written, pin);
        }
    }

    /// Gives up a claim whose message was refused.
    pub fn release_dedup(&self, id: &ByteString) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = dedup.as_mut() {
            window.release(id);
        }
    }

    /// Puts back a deduplication id recovered from the journal, if it is
    /// still within the window.
    pub fn restore_dedup(&self, id: ByteString, at_ms: u64, pin: Option<JournalPin>) {
        let now = self.env.clock.now_ms();
        let window_ms = self.policy.dedup_window_secs.saturating_mul(1000);
        if at_ms.saturating_add(window_ms) <= now {
            return;
        }
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        dedup
            .get_or_insert_with(|| self.new_dedup_window())
            .restore(id, at_ms, pin);
    }

    /// Deduplication ids held.
    pub fn dedup_len(&self) -> usize {
        self.dedup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, DedupWindow::len)
    }

    /// Appends a message and hands out what the consumers can take. A
    /// full queue refuses it (`reject-publish`) or makes room by dropping
    /// (`drop-head`) or dead-lettering (`dead-letter`) its oldest messages
    /// of the lowest priority; returns how many went. `written_by` is the
    /// completion of its journal record, if any.
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
                .fits(state.backlog.count(), state.backlog.total_bytes(), 1, size)
        {
            if self.policy.overflow == Overflow::RejectPublish {
                return Err(self.full());
            }
            let mut settled = Vec::new();
            while state.backlog.count() > 0
                && !self
                    .policy
                    .fits(state.backlog.count(), state.backlog.total_bytes(), 1, size)
            {
                let Some(gone) = self.pop_lowest(&mut state) else {
                    break;
                };
                dropped += 1;
                if self.policy.overflow == Overflow::DeadLetter {
                    self.dead(gone, DeathReason::Overflow);
                } else if gone.message.is_durable() {
                    settled.push(gone.message.id.number());
                }
            }
            if let Some(journal) = &self.env.journal {
                // Dropped for good: a restart must not bring them back.
                let _ = journal.settle(&self.name, &settled);
            }
        }
        if !self.admit(&mut state, message, written_by.lsn().unwrap_or(0)) {
            return Ok(dropped);
        }
        if state.backlog.expiring > 0 {
            let now = self.env.clock.now_ms();
            self.schedule(&mut state, now);
        }
        self.dispatch(&mut state);
        Ok(dropped)
    }

    /// Puts an accepted message in the backlog: delayed while its terms
    /// hold it back (then `false`: nothing is due to go out for it),
    /// else as the memory window says. The caller dispatches.
    fn admit(&self, state: &mut State, message: Arc<Message>, written_by: Lsn) -> bool {
        state.counts.published += 1;
        if message.terms.deliver_at_ms != 0 {
            let now = self.env.clock.now_ms();
            if message.terms.held_back(now) {
                state.backlog.push_delayed(Pending::new(message));
                self.schedule(state, now);
                return false;
            }
        }
        if let Some(pending) = self.place(state, Pending::new(message), written_by) {
            state.backlog.push_back(pending);
        }
        true
    }

    /// Past the memory window (or behind messages already there), pages
    /// a new (or newly due) durable message out to disk and packs a
    /// non-durable one: returns the message when it stays as it is.
    fn place(&self, state: &mut State, pending: Pending, written_by: Lsn) -> Option<Pending> {
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

    /// The oldest message of the lowest priority: what a full queue lets go.
    fn pop_lowest(&self, state: &mut State) -> Option<Pending> {
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

    /// The refusal of a SEND to this queue when it is full.
    pub fn full(&self) -> QueueFull {
        QueueFull {
            destination: self.name.to_string(),
            max_length: self.policy.max_length,
            max_length_bytes: self.policy.max_length_bytes,
        }
    }

    /// Bytes of the messages waiting for a consumer, in memory and on disk.
    pub fn depth_bytes(&self) -> u64 {
        self.lock().backlog.total_bytes()
    }

    /// Messages waiting on disk, not in memory.
    pub fn paged(&self) -> usize {
        self.lock().backlog.paged()
    }

    /// Messages waiting packed in memory (non-durable, past the window).
    pub fn packed(&self) -> usize {
        self.lock().backlog.packed()
    }

    /// Adds a consumer and gives it what is waiting.
    pub fn subscribe(&self, spec: ConsumerSpec) {
        let mut state = self.lock();
        let ack_timeout_ms = match spec.ack_timeout_ms {
            0 => u32::try_from(self.policy.ack_timeout_ms).unwrap_or(u32::MAX),
            own => own,
        };
        state.consumers.push(Consumer {
            session: spec.session,
            subscription: spec.subscription,
            ack: spec.ack,
            outbox: spec.outbox,
            in_flight: 0,
            prefetch: spec.prefetch.max(1),
            ack_timeout_ms: if spec.ack.needs_ack() {
                ack_timeout_ms
            } else {
                0
            },
            selector: spec.selector,
        });
        self.dispatch(&mut state);
        drop(state);
        if let Some(cluster) = &self.env.cluster {
            cluster.watch_queue(&self.name);
        }
    }

    /// Whether its messages live in the cluster's Redis.
    pub fn env_cluster(&self) -> bool {
        self.env.cluster.is_some()
    }

    /// Removes a consumer. Its unsettled messages come back through [`requeue`](Self::requeue).
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        let mut state = self.lock();
        let before = state.consumers.len();
        state
            .consumers
            .retain(|c| !(c.session == session && &c.subscription == subscription));
        let gone = before != state.consumers.len();
        if state.next >= state.consumers.len() {
            state.next = 0;
        }
        self.dispatch(&mut state);
        drop(state);
        if gone && let Some(cluster) = &self.env.cluster {
            cluster.unwatch_queue(&self.name);
        }
    }

    /// Settles deliveries of one consumer that were acked or, for auto
    /// mode, written out: the consumer gets its credit back, more messages
    /// may flow, and the durable ones are recorded as done.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> Completion {
        let completion = match &self.env.journal {
            Some(journal) if tags.iter().any(|t| t.durable) => {
                let ids: Vec<u64> = tags
                    .iter()
                    .filter(|t| t.durable)
                    .map(|t| t.message)
                    .collect();
                journal.settle(&self.name, &ids)
            }
            _ => Completion::DONE,
        };
        let mut state = self.lock();
        state.counts.acknowledged += tags.len() as u64;
        state.return_credit(session, subscription, tags.len());
        self.dispatch(&mut state);
        completion
    }

    /// Puts deliveries that failed (NACK, an ack deadline passed, the
    /// consumer went) back at the head of their levels, in order, marked
    /// redelivered with one more failed delivery counted, and returns the
    /// consumer's credit. One that reaches the policy's `max_deliveries`
    /// is dead-lettered instead.
    pub fn requeue(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        messages: Vec<(Arc<Message>, u32)>,
    ) {
        let count = messages.len();
        let durable: Vec<u64> = messages
            .iter()
            .filter(|(m, _)| m.is_durable())
            .map(|(m, _)| m.id.number())
            .collect();
        if let Some(journal) = &self.env.journal {
            journal.returned(&self.name, &durable);
        }
        let mut state = self.lock();
        state.counts.redelivered += count as u64;
        for (message, deliveries) in messages.into_iter().rev() {
            let pending = Pending {
                message,
                deliveries: deliveries.saturating_add(1),
                redelivered: true,
            };
            let limit = self.policy.max_deliveries;
            if limit > 0 && pending.deliveries >= limit {
                self.dead(pending, DeathReason::MaxDeliveries);
            } else {
                state.backlog.push_front(pending);
            }
        }
        state.return_credit(session, subscription, count);
        // Offered to the next consumer first: one that let a message go
        // (or sat on it past its deadline) is the worst one to get it back.
        if let Some(i) = state
            .consumers
            .iter()
            .position(|c| c.session == session && &c.subscription == subscription)
        {
            state.next = (i + 1) % state.consumers.len();
        }
        self.dispatch(&mut state);
    }

    /// Dead-letters deliveries the consumer rejected (`NACK` with
    /// `requeue:false`) and returns its credit.
    pub fn reject(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        messages: Vec<(Arc<Message>, u32)>,
    ) {
        let mut state = self.lock();
        let count = messages.len();
        for (message, deliveries) in messages {
            let pending = Pending {
                message,
                deliveries: deliveries.saturating_add(1),
                redelivered: true,
            };
            self.dead(pending, DeathReason::Rejected);
        }
        state.return_credit(session, subscription, count);
        self.dispatch(&mut state);
    }

    /// Puts back deliveries that never reached their session (it closed
    /// with them still in its outbox). They were never seen, so they keep
    /// their marks.
    pub fn return_undelivered(&self, deliveries: Vec<Delivery>) {
        let mut state = self.lock();
        for d in deliveries.into_iter().rev() {
            state.backlog.push_front(Pending {
                message: d.message,
                deliveries: d.delivery_count.unwrap_or(0),
                redelivered: d.redelivered,
            });
        }
        self.dispatch(&mut state);
    }

    /// Sends a message to this queue's dead-letter destination (by way of
    /// the broker, after the lock is let go).
    fn dead(&self, pending: Pending, reason: DeathReason) {
        let i = match reason {
            DeathReason::Rejected => 0,
            DeathReason::Expired => 1,
            DeathReason::MaxDeliveries => 2,
            DeathReason::Overflow => 3,
        };
        self.dead_counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.env.dead_letters.push(DeadLetter {
            origin: self.name.clone(),
            message: pending.message,
            reason,
            target: self.dead_letter.clone(),
        });
    }

    /// Delayed messages that fell due go to their levels; expired ones
    /// are taken out. Called by the broker when the timers say so.
    pub fn tick(&self) {
        let now = self.env.clock.now_ms();
        let mut state = self.lock();
        state.wake_at = 0;
        for pending in state.backlog.take_due(now) {
            if pending.message.terms.expired(now) {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            if let Some(pending) = self.place(&mut state, pending, 0) {
                state.backlog.push_back(pending);
            }
        }
        if state.backlog.expiring > 0 && state.backlog.earliest_expiry < now {
            state.last_scan_ms = now;
            let memory = &self.env.memory;
            for pending in state.backlog.take_expired(now, &self.name, memory) {
                self.dead(pending, DeathReason::Expired);
            }
        }
        self.schedule(&mut state, now);
        self.dispatch(&mut state);
    }

    /// Asks the broker's timers for a tick at the next delay or expiry.
    fn schedule(&self, state: &mut State, now: u64) {
        let expiry = (state.backlog.expiring > 0)
            .then(|| (state.backlog.earliest_expiry + 1).max(state.last_scan_ms + EXPIRY_SCAN_MS));
        let next = match (state.backlog.next_due(), expiry) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return,
            },
        };
        if state.wake_at == 0 || next < state.wake_at || state.wake_at < now {
            state.wake_at = next;
            self.env.timers.wake(&self.name, next);
        }
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

    /// No messages, consumers or deduplication ids: nothing would be lost
    /// by forgetting it.
    pub fn is_idle(&self) -> bool {
        let idle = {
            let state = self.lock();
            state.backlog.count() == 0 && state.consumers.is_empty()
        };
        idle && self.dedup_len() == 0
    }

    /// How many consumers it has.
    pub fn consumer_count(&self) -> usize {
        self.lock().consumers.len()
    }

    /// Takes every waiting message out (in memory, on disk, delayed; not
    /// those out with consumers), leaving the journal alone. A cluster
    /// node gives these back to Redis when its last consumer has gone.
    pub fn take_waiting(&self) -> Vec<Arc<Message>> {
        self.take_all().into_iter().map(|p| p.message).collect()
    }

    fn take_all(&self) -> Vec<Pending> {
        let mut state = self.lock();
        let mut gone = Vec::new();
        while let Some(p) = self.pop_lowest(&mut state) {
            gone.push(p);
        }
        gone.extend(state.backlog.take_due(u64::MAX));
        gone
    }

    /// How many more messages its consumers could take now: their free
    /// credit less what already waits. A cluster node fetches no more
    /// than this from Redis, so the rest stays for other nodes.
    pub fn free_credit(&self) -> usize {
        let state = self.lock();
        let free: usize = state
            .consumers
            .iter()
            .map(|c| c.prefetch.saturating_sub(c.in_flight))
            .sum();
        free.saturating_sub(state.backlog.count())
    }

    /// Adds messages a cluster node fetched from Redis, in their order,
    /// and hands out what the consumers can take, under one lock. No
    /// local limit applies: Redis holds the queue's `max_length`, and a
    /// fetched message must not be stranded on a node.
    pub fn enqueue_fetched(&self, messages: impl IntoIterator<Item = Arc<Message>>) {
        let mut state = self.lock();
        for message in messages {
            self.admit(&mut state, message, 0);
        }
        if state.backlog.expiring > 0 {
            let now = self.env.clock.now_ms();
            self.schedule(&mut state, now);
        }
        self.dispatch(&mut state);
    }

    /// Adds a message another node was delivering when it died (or gave
    /// back): marked redelivered, with its count of failed deliveries.
    pub fn enqueue_returned(&self, message: Arc<Message>, deliveries: u32) {
        let mut state = self.lock();
        state.counts.redelivered += 1;
        state.backlog.push_back(Pending {
            message,
            deliveries,
            redelivered: true,
        });
        self.dispatch(&mut state);
    }

    /// Drops every waiting message (in memory, on disk, delayed; not
    /// those out with consumers), settling the durable ones; returns how
    /// many. Paged messages are read back to be dropped.
    pub fn purge(&self) -> usize {
        let gone = self.take_all();
        let durable: Vec<u64> = gone
            .iter()
            .filter(|p| p.message.is_durable())
            .map(|p| p.message.id.number())
            .collect();
        if let Some(journal) = &self.env.journal {
            let _ = journal.settle(&self.name, &durable);
        }
        gone.len()
    }

    /// Up to `n` waiting messages in memory, in the order they would go
    /// out (highest priority first), left where they are.
    pub fn peek(&self, n: usize) -> Vec<Arc<Message>> {
        self.lock().backlog.peek(n, &self.name)
    }

    /// Takes one waiting message out by its id (settling it if durable);
    /// false when it is not waiting in memory (a consumer has it, say).
    pub fn remove(&self, id: u64) -> bool {
        let mut state = self.lock();
        let taken = state
            .backlog
            .take_first(usize::MAX, |p| p.message.id.number() == id)
            .or_else(|| state.backlog.take_packed(id, &self.name, &self.env.memory));
        let Some(gone) = taken else {
            return false;
        };
        drop(state);
        if gone.message.is_durable()
            && let Some(journal) = &self.env.journal
        {
            let _ = journal.settle(&self.name, &[id]);
        }
        true
    }

    /// What has passed through since the queue was made, and what it holds.
    pub fn counts(&self) -> crate::metrics::QueueCounts {
        let state = self.lock();
        let dead = |i: usize| self.dead_counts[i].load(std::sync::atomic::Ordering::Relaxed);
        crate::metrics::QueueCounts {
            published: state.counts.published,
            delivered: state.counts.delivered,
            acknowledged: state.counts.acknowledged,
            redelivered: state.counts.redelivered,
            dead: [dead(0), dead(1), dead(2), dead(3)],
            depth: state.backlog.count() as u64,
            bytes: state.backlog.total_bytes(),
            consumers: state.consumers.len() as u64,
            unacked: state.consumers.iter().map(|c| c.in_flight as u64).sum(),
        }
    }

    /// Messages waiting for a consumer, in memory, on disk and delayed.
    pub fn depth(&self) -> usize {
        self.lock().backlog.count()
    }

    /// Hands messages to consumers round-robin while any has credit,
    /// highest priority first. Called with the lock held.
    fn dispatch(&self, state: &mut State) {
        if state.consumers.is_empty() {
            return;
        }
        if state.backlog.paged() > 0
            && state.backlog.bytes < self.policy.memory_window_bytes / 2
            && let Some(level) = state.backlog.highest_paged_level()
        {
            // Read ahead before memory runs dry, so consumers keep going.
            self.page_in(state, level);
        }
        if state.backlog.packed() > 0
            && state.backlog.unpacked_bytes() < self.policy.memory_window_bytes / 2
            && let Some(level) = state.backlog.highest_packed_level()
        {
            // Likewise, and so selectors see more than the memory part.
            state
                .backlog
                .unpack(level, UNPACK_BATCH, &self.name, &self.env.memory);
        }
        if state.consumers.iter().any(|c| c.selector.is_some()) {
            self.dispatch_selected(state);
            return;
        }
        let mut now = None;
        loop {
            let n = state.consumers.len();
            let Some(offset) = (0..n).find(|i| {
                let c = &state.consumers[(state.next + i) % n];
                c.in_flight < c.prefetch
            }) else {
                return;
            };
            let Some((level, source)) = state.backlog.next_level() else {
                return;
            };
            match source {
                Source::Memory => {}
                Source::Packed => {
                    let memory = &self.env.memory;
                    state
                        .backlog
                        .unpack(level, UNPACK_BATCH, &self.name, memory);
                    continue;
                }
                Source::Disk => {
                    self.page_in(state, level);
                    continue;
                }
            }
            let Some(pending) = state.backlog.pop_front(level) else {
                return;
            };
            if pending.message.terms.expires_at_ms != 0
                && pending
                    .message
                    .terms
                    .expired(*now.get_or_insert_with(|| self.env.clock.now_ms()))
            {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            let index = (state.next + offset) % n;
            match hand_to(&self.name, &mut state.consumers[index], pending) {
                Ok(()) => {
                    state.next = (index + 1) % n;
                    state.counts.delivered += 1;
                }
                Err(back) => state.backlog.push_front(back),
            }
        }
    }
}

impl QueueDestination {
    /// Dispatch when some consumer has a selector: each message in memory,
    /// in priority and then arrival order, goes to the next consumer (round
    /// robin) whose selector takes it and that has credit; a message nobody
    /// takes stays where it is and the walk goes on past it.
    fn dispatch_selected(&self, state: &mut State) {
        let now = self.env.clock.now_ms();
        loop {
            let State {
                backlog,
                consumers,
                next,
                counts,
                ..
            } = &mut *state;
            if !consumers.iter().any(|c| c.in_flight < c.prefetch) {
                return;
            }
            let n = consumers.len();
            let start = *next;
            let taken = backlog.take_first(SELECTOR_SCAN, |p| {
                p.message.terms.expired(now)
                    || (0..n).any(|i| consumers[(start + i) % n].can_take(&p.message))
            });
            let Some(pending) = taken else {
                return;
            };
            if pending.message.terms.expired(now) {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            let Some(index) = (0..n)
                .map(|i| (start + i) % n)
                .find(|i| consumers[*i].can_take(&pending.message))
            else {
                backlog.push_front(pending);
                return;
            };
            match hand_to(&self.name, &mut consumers[index], pending) {
                Ok(()) => {
                    *next = (index + 1) % n;
                    counts.delivered += 1;
                }
                Err(back) => backlog.push_front(back),
            }
        }
    }
}

/// Pushes a message to a consumer's outbox as its delivery. A session
/// that is closing refuses it: the message comes back, and the consumer
/// is offered nothing more until it unsubscribes.
fn hand_to(queue: &ByteString, consumer: &mut Consumer, pending: Pending) -> Result<(), Pending> {
    // The queue's own name, not the message's destination: a cluster
    // durable subscription's messages show their topic.
    let tag = DeliveryTag {
        destination: queue.clone(),
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
        delivery_count: Some(pending.deliveries),
        ack_timeout_ms: consumer.ack_timeout_ms,
        header_block: None,
    };
    match consumer.outbox.push_queue(delivery) {
        Ok(()) => {
            consumer.in_flight += 1;
            Ok(())
        }
        Err(back) => {
            consumer.in_flight = consumer.prefetch;
            Err(Pending {
                message: back.message,
                deliveries: back.delivery_count.unwrap_or(0),
                redelivered: back.redelivered,
            })
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
