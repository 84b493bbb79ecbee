//! `/queue/NAME`: each message to exactly one consumer, round-robin over
//! the consumers that have prefetch credit left; higher priorities first,
//! FIFO within one; delayed messages held back until due; expired ones
//! never delivered; messages that keep failing set aside (dead-lettered).

mod backlog;
mod cold;
mod dedup_ids;
mod dispatch;
mod operations;
mod settling;
mod storage;
mod timing;

pub use storage::Compacted;

use std::sync::{Arc, Mutex};

use stomp_codec::ByteString;

use super::clock::Clock;
use super::dead_letter::{DeadLetters, DeathReason};
use super::dedup::DedupWindow;
use super::memory::Memory;
use super::message::{AckMode, Message};
use super::policy::{Overflow, QueuePolicy};
use super::timers::Timers;
use crate::ids::{SessionId, SubscriptionId};
use crate::outbox::Outbox;
use crate::store::{Completion, Journal, Lsn};
use backlog::{Backlog, Pending};

/// Packed messages unpacked at a time as consumers near them: enough to
/// keep them busy between two unpackings, few enough that one unpacking
/// (about 0.2 µs a message) holds the queue's lock only briefly.
const UNPACK_BATCH: usize = 256;

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

impl Consumer {}

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

    /// Messages waiting for a consumer, in memory, on disk and delayed.
    pub fn depth(&self) -> usize {
        self.lock().backlog.count()
    }
}

impl QueueDestination {}

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
