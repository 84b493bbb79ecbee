//! `/topic/NAME`: every current subscriber gets a copy. A topic may keep
//! recent messages for history and recovery, and tracks who is present.

mod cluster_join;
mod durable;
mod history;
mod presence;

pub(crate) use cluster_join::Loaded;
pub use history::Recovery;
pub use presence::Presence;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::ids::{SessionId, SubscriptionId};
use crate::outbox::{Outbox, TopicPush};
use crate::store::{Completion, Journal, JournalError, TopicEntry};

use super::SubscribeError;
use super::durable_sub::DurableSub;
use super::memory::Charge;
use super::message::{AckMode, Delivery, HeaderBlock, Message, MessageId, StreamPosition};
use super::policy::TopicPolicy;

use cluster_join::MAX_PENDING;
use presence::member_json;

/// Everything about one topic subscription.
#[derive(Debug)]
pub struct TopicSubscription {
    /// The subscribing session.
    pub session: SessionId,
    /// The client's id for it.
    pub subscription: SubscriptionId,
    /// How it acknowledges.
    pub ack: AckMode,
    /// Where its deliveries go.
    pub outbox: Arc<Outbox>,
    /// History to replay first.
    pub recovery: Option<Recovery>,
    /// Announce this subscriber to the others.
    pub presence: Option<Presence>,
    /// Receive the presence snapshot and join/leave events.
    pub watch_presence: bool,
    /// The key of the durable subscription this is, if it is one.
    pub durable: Option<ByteString>,
    /// Unsettled deliveries at once, for a durable subscription.
    pub prefetch: usize,
    /// Only messages this selects (live subscriptions).
    pub selector: Option<Arc<super::Selector>>,
}

/// Messages a topic keeps for its durable subscriptions at most; a
/// subscription that falls further behind loses the oldest (logged).
pub const MAX_STREAM: usize = 65_536;

#[derive(Debug)]
struct Subscriber {
    session: SessionId,
    subscription: SubscriptionId,
    ack: AckMode,
    outbox: Arc<Outbox>,
    presence: Option<Presence>,
    watch_presence: bool,
    selector: Option<Arc<super::Selector>>,
    /// In cluster mode, while its history is read from Redis: the live
    /// messages that arrived meanwhile, delivered after the history.
    pending: Option<Vec<Arc<Message>>>,
    /// In cluster mode, after its recovery: the epoch and position the
    /// history went up to. The channel may bring those messages after
    /// Redis answered the read (two connections), so they are skipped.
    replayed: Option<(ByteString, u64)>,
}

impl Subscriber {}

/// Whether a subscriber's selector, if any, takes a message.
fn selects(selector: &Option<Arc<super::Selector>>, message: &Message) -> bool {
    selector
        .as_ref()
        .is_none_or(|s| s.matches(&message.headers))
}

impl Subscriber {
    /// A copy of `message` for this subscriber, as history or live.
    fn delivery(&self, message: Arc<Message>, history: bool) -> Delivery {
        Delivery {
            history,
            ..Delivery::topic(self.subscription.clone(), message, self.ack)
        }
    }
}

#[derive(Debug)]
struct Kept {
    at: Instant,
    message: Arc<Message>,
}

#[derive(Debug, Default)]
struct State {
    subscribers: Vec<Subscriber>,
    /// The stream's retained messages in position order: the history, and
    /// whatever a durable subscription has not settled yet.
    kept: VecDeque<Kept>,
    /// The position the next published message gets.
    next_position: u64,
    /// Durable subscriptions by key.
    durables: HashMap<ByteString, DurableSub>,
    /// Messages published, copies queued and copies dropped, for `/metrics`.
    published: u64,
    delivered: u64,
    dropped: u64,
}

impl State {}

/// One topic. Publishing holds its lock while pushing into subscribers'
/// outboxes, which never blocks (slow subscribers are handled by the
/// outbox's policy), so a slow socket cannot stall a fan-out. Because
/// history replay and joining happen under the same lock, a subscriber
/// sees no gap and no duplicate between history and live messages.
#[derive(Debug)]
pub struct TopicDestination {
    name: ByteString,
    policy: TopicPolicy,
    epoch: ByteString,
    ids: Arc<AtomicU64>,
    state: Mutex<State>,
    /// Where kept history is written, when the policy keeps it durably.
    journal: Option<Arc<Journal>>,
    /// In cluster mode: the stream is in Redis, and this node follows the
    /// topic's channel while it has subscribers.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

impl TopicDestination {
    pub(crate) fn new(
        name: String,
        policy: TopicPolicy,
        epoch: ByteString,
        ids: Arc<AtomicU64>,
        journal: Option<Arc<Journal>>,
        cluster: Option<Arc<crate::cluster::Cluster>>,
    ) -> Arc<TopicDestination> {
        // In cluster mode the topic's stream is Redis'.
        let journal = journal.filter(|_| policy.durable && cluster.is_none());
        Arc::new(TopicDestination {
            name: ByteString::from(name),
            policy,
            epoch,
            ids,
            state: Mutex::new(State {
                next_position: 1,
                ..State::default()
            }),
            journal,
            cluster,
        })
    }

    /// Whether kept history goes to the journal.
    pub fn is_durable(&self) -> bool {
        self.journal.is_some() && self.policy.history > 0
    }

    /// Whether published messages go to the journal now: there is history
    /// to keep, or a durable subscription to keep them for.
    fn journals(&self, state: &State) -> bool {
        self.journal.is_some() && (self.policy.history > 0 || !state.durables.is_empty())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic's destination name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This topic's stream epoch: the broker run and which topic of the
    /// run this is. Positions count from 1 within one epoch.
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The policy that applies to this topic.
    pub fn policy(&self) -> &TopicPolicy {
        &self.policy
    }

    /// Adds a subscriber: replays what it asked for, tells it who is
    /// present, announces it, then it receives messages published from now on.
    ///
    /// A durable subscription is fed from the stream instead, starting
    /// after its cursor (a new one starts at the head).
    ///
    /// The completion is done when a new durable subscription's cursor is
    /// on disk (at once otherwise).
    pub fn subscribe(&self, sub: TopicSubscription) -> Result<Completion, SubscribeError> {
        let mut state = self.lock();
        self.trim(&mut state, Instant::now());
        let mut completion = Completion::DONE;
        if let Some(key) = &sub.durable {
            let Some(journal) = &self.journal else {
                return Err(SubscribeError::NoJournal);
            };
            if state.durables.get(key).is_some_and(|d| d.active.is_some()) {
                return Err(SubscribeError::DurableInUse(
                    key.split('\n').next_back().unwrap_or_default().to_string(),
                ));
            }
            if !state.durables.contains_key(key) {
                let head = state.next_position - 1;
                if state.durables.is_empty() && self.policy.history == 0 {
                    // The stream is kept from now on: its epoch must last.
                    journal.topic_head(&self.name, &self.epoch, state.next_position);
                }
                completion = journal.cursor(&self.name, key, head);
                state
                    .durables
                    .insert(key.clone(), DurableSub::new(head, head));
                tracing::info!(topic = %self.name, "durable subscription created");
            }
            if let Some(d) = state.durables.get_mut(key) {
                d.activate(
                    sub.session,
                    sub.subscription,
                    sub.ack,
                    sub.outbox,
                    sub.prefetch,
                );
            }
            state.dispatch_durables();
            return Ok(completion);
        }
        let subscriber = Subscriber {
            session: sub.session,
            subscription: sub.subscription,
            ack: sub.ack,
            outbox: sub.outbox,
            presence: sub.presence,
            watch_presence: sub.watch_presence,
            selector: sub.selector,
            pending: None,
            replayed: None,
        };
        let mut subscriber = subscriber;
        if let Some(cluster) = &self.cluster {
            completion = cluster.watch(&self.name);
            if sub.recovery.is_some() || subscriber.watches() {
                // History and the presence snapshot come from Redis:
                // sent by finish_join once it has answered.
                subscriber.pending = Some(Vec::new());
            }
            if let Some(p) = &subscriber.presence {
                let id = self.member_id(&subscriber);
                completion =
                    completion.and(cluster.presence_join(&self.name, &id, &member_json(&id, p)));
            }
        }
        if let Some(recovery) = sub.recovery.as_ref().filter(|_| self.cluster.is_none()) {
            self.send_history(&state, &subscriber, recovery);
        }
        if subscriber.watches() && self.cluster.is_none() {
            let members: Vec<String> = state
                .subscribers
                .iter()
                .chain(std::iter::once(&subscriber))
                .filter_map(|s| self.member_json(s))
                .collect();
            self.push_control(&subscriber, self.presence_snapshot(&members));
        }
        self.announce(&state.subscribers, "join", &subscriber);
        state.subscribers.push(subscriber);
        Ok(completion)
    }

    /// Removes a subscriber, announcing its leave if it was present.
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        let mut state = self.lock();
        if let Some(d) = state
            .durables
            .values_mut()
            .find(|d| d.is_held_by(session, subscription))
        {
            // Offline: messages accumulate until the next SUBSCRIBE.
            d.deactivate();
            return;
        }
        let Some(index) = state
            .subscribers
            .iter()
            .position(|s| s.session == session && &s.subscription == subscription)
        else {
            return;
        };
        let gone = state.subscribers.swap_remove(index);
        self.announce(&state.subscribers, "leave", &gone);
        if let Some(cluster) = &self.cluster {
            if let Some(p) = &gone.presence {
                let id = self.member_id(&gone);
                cluster.presence_leave(&self.name, &id, &member_json(&id, p));
            }
            cluster.unwatch(&self.name);
        }
    }

    /// Delivers a message the cluster's channel brought (its stream
    /// position given by Redis) to this node's subscribers.
    pub fn deliver(&self, message: Message, wildcard: &[super::wildcard::WildSub]) {
        let mut state = self.lock();
        self.fan_out(&mut state, Arc::new(message), wildcard);
    }

    /// Assigns the message its stream position, keeps it if the policy says
    /// so, and sends a copy to every subscriber; returns how many copies the
    /// slow-consumer policy dropped.
    ///
    /// A message kept in durable history is written to the journal first
    /// (the completion says when it is on disk); a full journal refuses it.
    pub fn publish(
        &self,
        mut message: Message,
        wildcard: &[super::wildcard::WildSub],
    ) -> Result<(usize, Completion), JournalError> {
        let mut state = self.lock();
        let now = Instant::now();
        let mut completion = Completion::DONE;
        let journals = self.journals(&state);
        if !message.ephemeral {
            if let Some(journal) = self.journal.as_ref().filter(|_| journals) {
                let at_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                // Under the topic's lock: the journal sees positions in order.
                let (c, pin) = journal.topic_append(&TopicEntry {
                    topic: &self.name,
                    epoch: &self.epoch,
                    position: state.next_position,
                    id: message.id.number(),
                    at_ms,
                    headers: &message.headers,
                    body: &message.body,
                })?;
                completion = c;
                message.journal = Some(pin);
            }
            message.stream = Some(Box::new(StreamPosition {
                epoch: self.epoch.clone(),
                position: state.next_position,
            }));
            state.next_position += 1;
        }
        let message = Arc::new(message);
        if (self.policy.history > 0 || !state.durables.is_empty()) && !message.ephemeral {
            state.kept.push_back(Kept {
                at: now,
                message: message.clone(),
            });
        }
        self.trim(&mut state, now);
        let ephemeral = message.ephemeral;
        let dropped = self.fan_out(&mut state, message, wildcard);
        if !ephemeral {
            state.dispatch_durables();
        }
        Ok((dropped, completion))
    }

    /// Sends a copy of `message` to every subscriber it selects (held
    /// back for one whose cluster history is still being read); returns
    /// how many copies the slow-consumer policy dropped.
    fn fan_out(
        &self,
        state: &mut State,
        message: Arc<Message>,
        wildcard: &[super::wildcard::WildSub],
    ) -> usize {
        for s in state
            .subscribers
            .iter_mut()
            .filter(|_| self.cluster.is_some())
        {
            if let Some(pending) = &mut s.pending {
                if pending.len() >= MAX_PENDING {
                    pending.remove(0);
                }
                pending.push(message.clone());
            }
        }
        let own = state
            .subscribers
            .iter()
            .filter(|s| s.pending.is_none() && !s.replayed(&message))
            .map(|s| (&s.selector, &s.subscription, s.ack, &s.outbox));
        // Wildcard subscribers under this topic's lock, like its own: they
        // get each topic's messages in order.
        let matching = wildcard
            .iter()
            .map(|s| (&s.selector, &s.subscription, s.ack, &s.outbox));
        // One block of encoded headers for all receivers, when there may be
        // more than one (a lone receiver's is encoded straight into its output).
        let block = (state.subscribers.len() + wildcard.len() > 1)
            .then(|| Arc::new(HeaderBlock::default()));
        let mut dropped = 0;
        let mut queued = 0;
        for (selector, subscription, ack, outbox) in own.chain(matching) {
            if !selects(selector, &message) {
                continue;
            }
            let delivery = Delivery {
                header_block: block.clone(),
                ..Delivery::topic(subscription.clone(), message.clone(), ack)
            };
            if outbox.push_topic(delivery) == TopicPush::Dropped {
                dropped += 1;
            } else {
                queued += 1;
            }
        }
        state.published += 1;
        state.delivered += queued;
        state.dropped += dropped as u64;
        dropped
    }

    /// No subscribers and, once expired history is trimmed, nothing kept.
    pub fn is_idle(&self) -> bool {
        let mut state = self.lock();
        self.trim(&mut state, Instant::now());
        state.subscribers.is_empty() && state.kept.is_empty() && state.durables.is_empty()
    }

    /// What has passed through since the topic was made.
    pub fn counts(&self) -> crate::metrics::TopicCounts {
        let state = self.lock();
        crate::metrics::TopicCounts {
            published: state.published,
            delivered: state.delivered,
            dropped: state.dropped,
            consumers: state.subscribers.len() as u64,
        }
    }

    /// The number of current subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// The number of messages kept for history.
    pub fn kept(&self) -> usize {
        self.lock().kept.len()
    }

    /// Whether nothing holds it: no subscriber and no durable subscription.
    pub fn is_unused(&self) -> bool {
        let state = self.lock();
        state.subscribers.is_empty() && state.durables.is_empty()
    }

    /// A broker notice for this topic's subscribers.
    fn control(&self, headers: &[(&str, &str)], body: Bytes) -> Arc<Message> {
        let mut h = Headers::with_capacity(headers.len());
        for (n, v) in headers {
            h.push(*n, *v);
        }
        Arc::new(Message {
            id: MessageId::new(self.ids.fetch_add(1, Ordering::Relaxed)),
            destination: self.name.clone(),
            headers: h,
            body,
            stream: None,
            ephemeral: true,
            // Notices are small and short-lived: not worth the accounting.
            charge: Charge::none(),
            journal: None,
            terms: Default::default(),
        })
    }

    fn push_control(&self, to: &Subscriber, message: Arc<Message>) {
        let _ = to.outbox.push_topic(Delivery {
            control: true,
            ..Delivery::topic(to.subscription.clone(), message, to.ack)
        });
    }
}
