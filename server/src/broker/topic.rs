//! `/topic/NAME`: every current subscriber gets a copy. A topic may keep
//! recent messages for history and recovery, and tracks who is present.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use super::durable_sub::DurableSub;
use super::memory::Charge;
use super::message::{AckMode, Delivery, HeaderBlock, Message, MessageId, StreamPosition};
use super::policy::TopicPolicy;
use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::outbox::{Outbox, TopicPush};
use crate::store::{Completion, Journal, JournalError, TopicEntry};

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

/// A subscriber announcing itself (`x-presence`, `x-presence-meta`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Display name.
    pub name: String,
    /// Small free-form metadata (for example JSON with an avatar colour).
    pub meta: String,
    /// The subscriber's authenticated login (set by the session, not the
    /// client), so a display name can be told from who it really is.
    pub login: String,
}

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

/// Why a SUBSCRIBE to a topic was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    /// The destination name is not valid.
    #[error(transparent)]
    Destination(#[from] super::DestinationError),
    /// The durable subscription has a consumer already.
    #[error("durable subscription {0:?} is already active on another connection")]
    DurableInUse(String),
    /// The subscription needs the journal and the broker runs without one.
    #[error("durable subscriptions need the journal; this broker runs in memory only")]
    NoJournal,
    /// A wildcard pattern that is not well formed.
    #[error("{0}")]
    Pattern(String),
    /// An exchange subscription that cannot be made.
    #[error("{0}")]
    Exchange(String),
    /// A selector on a durable subscription.
    #[error(
        "selectors are not supported on durable subscriptions yet; filter in the client or use a live subscription"
    )]
    SelectorOnDurable,
    /// A selector on a queue in cluster mode.
    #[error(
        "selectors on queues are not available in cluster mode yet: a node fetches messages for its consumers, and one none of them selects would wait there"
    )]
    ClusterSelector,
    /// A wildcard subscription in cluster mode.
    #[error(
        "wildcard topic subscriptions are not available in cluster mode yet; subscribe to each topic"
    )]
    ClusterPattern,
    /// History, presence or durability asked of a wildcard subscription.
    #[error(
        "{0:?} is a wildcard pattern: history (x-history, x-since), presence and durable subscriptions need a single topic"
    )]
    PatternOptions(String),
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

impl Subscriber {
    /// Whether `message` was already sent to it as history.
    fn replayed(&self, message: &Message) -> bool {
        match (&self.replayed, &message.stream) {
            (Some((epoch, to)), Some(s)) => s.epoch == *epoch && s.position <= *to,
            _ => false,
        }
    }
}

/// Live messages held at most for one subscriber while its history is
/// read; beyond, the oldest go and its recovery says `gap`.
const MAX_PENDING: usize = 10_000;

/// A topic's history as the cluster read it for one subscriber.
#[derive(Debug)]
pub struct Loaded {
    /// The topic's cluster-wide epoch.
    pub epoch: ByteString,
    /// The last position given out.
    pub head: u64,
    /// The oldest position still kept.
    pub oldest: u64,
    /// What to replay, in position order.
    pub messages: Vec<Arc<Message>>,
    /// Whether it connects to what the client had.
    pub complete: bool,
}

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
            subscription: self.subscription.clone(),
            message,
            redelivered: false,
            ack: self.ack,
            tag: None,
            history,
            control: false,
            delivery_count: None,
            ack_timeout_ms: 0,
            header_block: None,
        }
    }

    /// Present subscribers see each other; others only when they asked to watch.
    fn watches(&self) -> bool {
        self.watch_presence || self.presence.is_some()
    }

    /// Unique in the broker; a cluster node's start with the node's id.
    fn member_id(&self, node: Option<&str>) -> String {
        match node {
            Some(node) => format!("{node}.{}.{}", self.session.0, self.subscription.as_str()),
            None => format!("{}.{}", self.session.0, self.subscription.as_str()),
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

impl State {
    /// Feeds every connected durable subscription what it has credit for.
    fn dispatch_durables(&mut self) {
        if self.durables.is_empty() {
            return;
        }
        // Split borrow: the lookup reads `kept` while subscriptions change.
        let kept = &self.kept;
        let find = |position: u64| {
            let pos = |k: &Kept| k.message.stream.as_ref().map_or(0, |s| s.position);
            let index = kept.binary_search_by_key(&position, pos).ok()?;
            kept.get(index).map(|k| k.message.clone())
        };
        for d in self.durables.values_mut() {
            d.dispatch(find);
        }
    }
}

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
            let (replay, complete) = self.replay(&state, recovery);
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
                .history(&state, Instant::now())
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
            self.push_control(&subscriber, marker);
        }
        if subscriber.watches() && self.cluster.is_none() {
            let members: Vec<String> = state
                .subscribers
                .iter()
                .chain(std::iter::once(&subscriber))
                .filter_map(|s| {
                    s.presence
                        .as_ref()
                        .map(|p| member_json(&self.member_id(s), p))
                })
                .collect();
            let snapshot = self.control(
                &[
                    ("x-presence-event", "snapshot"),
                    ("content-type", "application/json"),
                ],
                Bytes::from(format!("[{}]", members.join(","))),
            );
            self.push_control(&subscriber, snapshot);
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

    /// Ends a cluster subscriber's join: its history (or why there is
    /// none) and the marker, if it asked for history; the presence
    /// snapshot (this node's members and `elsewhere`'s), if it watches;
    /// then the live messages that arrived while Redis was asked (those
    /// the history already had are left out), and from then on it is live.
    pub fn finish_join(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        loaded: Option<Result<Loaded, String>>,
        elsewhere: Option<Vec<String>>,
    ) {
        let mut state = self.lock();
        let here: Vec<String> = state
            .subscribers
            .iter()
            .filter_map(|s| {
                s.presence
                    .as_ref()
                    .map(|p| member_json(&self.member_id(s), p))
            })
            .collect();
        let Some(subscriber) = state
            .subscribers
            .iter_mut()
            .find(|s| s.session == session && &s.subscription == subscription)
        else {
            return;
        };
        let Some(pending) = subscriber.pending.take() else {
            return;
        };
        if let Some(Ok(loaded)) = &loaded
            && let Some(last) = loaded.messages.last().and_then(|m| m.stream.as_ref())
        {
            subscriber.replayed = Some((last.epoch.clone(), last.position));
        }
        let subscriber = &*subscriber;
        let marker = match loaded {
            None => None,
            Some(Ok(loaded)) => {
                for message in loaded.messages {
                    if selects(&subscriber.selector, &message) {
                        let _ = subscriber
                            .outbox
                            .push_topic(subscriber.delivery(message, true));
                    }
                }
                let overflowed = pending.len() >= MAX_PENDING;
                Some(self.control(
                    &[
                        (
                            "x-recovery",
                            if loaded.complete && !overflowed {
                                "complete"
                            } else {
                                "gap"
                            },
                        ),
                        ("x-stream-epoch", &loaded.epoch),
                        ("x-stream-position", &loaded.head.to_string()),
                        ("x-history-oldest", &loaded.oldest.to_string()),
                    ],
                    Bytes::new(),
                ))
            }
            Some(Err(why)) => Some(self.control(
                &[
                    ("x-recovery", "gap"),
                    ("x-error", "cluster-unavailable"),
                    ("message", &why),
                ],
                Bytes::new(),
            )),
        };
        if let Some(marker) = marker {
            self.push_control(subscriber, marker);
        }
        if let Some(elsewhere) = elsewhere {
            let members: Vec<String> = here.into_iter().chain(elsewhere).collect();
            let snapshot = self.control(
                &[
                    ("x-presence-event", "snapshot"),
                    ("content-type", "application/json"),
                ],
                Bytes::from(format!("[{}]", members.join(","))),
            );
            self.push_control(subscriber, snapshot);
        }
        for message in pending {
            if !subscriber.replayed(&message) {
                let _ = subscriber
                    .outbox
                    .push_topic(subscriber.delivery(message, false));
            }
        }
    }

    /// Tells this node's watchers of a join or leave on another node.
    pub fn announce_remote(&self, event: &str, json: &str) {
        let state = self.lock();
        let notice = self.control(
            &[
                ("x-presence-event", event),
                ("content-type", "application/json"),
            ],
            Bytes::from(json.to_string()),
        );
        for watcher in state.subscribers.iter().filter(|s| s.watches()) {
            self.push_control(watcher, notice.clone());
        }
    }

    /// Delivers a message the cluster's channel brought (its stream
    /// position given by Redis) to this node's subscribers.
    pub fn deliver(&self, message: Message, wildcard: &[super::wildcard::WildSub]) {
        let mut state = self.lock();
        self.fan_out(&mut state, Arc::new(message), wildcard);
    }

    fn member_id(&self, s: &Subscriber) -> String {
        s.member_id(self.cluster.as_ref().map(|c| c.node()))
    }

    /// Tells the watching `others` that `who` joined or left, if `who` is present.
    fn announce(&self, others: &[Subscriber], event: &str, who: &Subscriber) {
        let Some(p) = &who.presence else {
            return;
        };
        let notice = self.control(
            &[
                ("x-presence-event", event),
                ("content-type", "application/json"),
            ],
            Bytes::from(member_json(&self.member_id(who), p)),
        );
        for other in others.iter().filter(|s| s.watches()) {
            self.push_control(other, notice.clone());
        }
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
                subscription: subscription.clone(),
                message: message.clone(),
                redelivered: false,
                ack,
                tag: None,
                history: false,
                control: false,
                delivery_count: None,
                ack_timeout_ms: 0,
                header_block: block.clone(),
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

    /// Writes the journal records of kept messages held in journal segment
    /// `segment` again at the journal's end (see `QueueDestination::compact`).
    pub fn compact(&self, segment: u64) -> super::queue::Compacted {
        let mut done = super::queue::Compacted::default();
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

    /// No subscribers and, once expired history is trimmed, nothing kept.
    pub fn is_idle(&self) -> bool {
        let mut state = self.lock();
        self.trim(&mut state, Instant::now());
        state.subscribers.is_empty() && state.kept.is_empty() && state.durables.is_empty()
    }

    /// Settles deliveries of a durable subscription (ACK, or written in auto
    /// mode): its cursor moves over them, and it is sent more. The
    /// completion is done when the cursor's record is on disk.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> Completion {
        let mut state = self.lock();
        let Some((key, d)) = state
            .durables
            .iter_mut()
            .find(|(_, d)| d.is_held_by(session, subscription))
        else {
            return Completion::DONE;
        };
        let moved = d.settle(tags.iter().map(|t| t.message));
        let mut completion = Completion::DONE;
        if let (Some(position), Some(journal)) = (moved, &self.journal) {
            completion = journal.cursor(&self.name, key, position);
        }
        self.trim(&mut state, Instant::now());
        state.dispatch_durables();
        completion
    }

    /// Gives a durable subscription credit back for deliveries it will not
    /// settle now (NACK); they come again when it is next subscribed.
    pub fn release(&self, session: SessionId, subscription: &SubscriptionId, count: usize) {
        let mut state = self.lock();
        if let Some(d) = state
            .durables
            .values_mut()
            .find(|d| d.is_held_by(session, subscription))
        {
            d.release(count);
        }
        state.dispatch_durables();
    }

    /// Deletes the durable subscription `key`; whatever only it still
    /// needed is let go. Returns whether it existed.
    pub fn forget_durable(&self, key: &str) -> bool {
        let mut state = self.lock();
        if state.durables.remove(key).is_none() {
            return false;
        }
        if let Some(journal) = &self.journal {
            let _ = journal.cursor_gone(&self.name, key);
        }
        self.trim(&mut state, Instant::now());
        tracing::info!(topic = %self.name, "durable subscription deleted");
        true
    }

    /// The keys of this topic's durable subscriptions.
    pub fn durable_keys(&self) -> Vec<ByteString> {
        self.lock().durables.keys().cloned().collect()
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

    /// Whether nothing holds it: no subscriber and no durable subscription.
    pub fn is_unused(&self) -> bool {
        let state = self.lock();
        state.subscribers.is_empty() && state.durables.is_empty()
    }

    /// Drops retained messages nothing needs: beyond the history's count
    /// and age, and already settled by every durable subscription. Past
    /// [`MAX_STREAM`] the oldest go regardless, moving lagging cursors on.
    fn trim(&self, state: &mut State, now: Instant) {
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

    /// The history window: the kept messages the policy's count and age
    /// allow (more may be retained for durable subscriptions).
    fn history<'a>(&self, state: &'a State, now: Instant) -> impl Iterator<Item = &'a Kept> + 'a {
        let skip = state.kept.len().saturating_sub(self.policy.history);
        let max_age = self.policy.max_age();
        state
            .kept
            .iter()
            .skip(skip)
            .filter(move |k| max_age.is_none_or(|age| now.duration_since(k.at) <= age))
    }

    /// The kept messages to replay, and whether they connect to what the
    /// client already has (no gap).
    fn replay(&self, state: &State, recovery: &Recovery) -> (Vec<Arc<Message>>, bool) {
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
            subscription: to.subscription.clone(),
            message,
            redelivered: false,
            ack: to.ack,
            tag: None,
            history: false,
            control: true,
            delivery_count: None,
            ack_timeout_ms: 0,
            header_block: None,
        });
    }
}

fn member_json(id: &str, presence: &Presence) -> String {
    format!(
        "{{\"id\":{},\"name\":{},\"meta\":{},\"login\":{}}}",
        json_string(id),
        json_string(&presence.name),
        json_string(&presence.meta),
        json_string(&presence.login)
    )
}

/// A JSON string literal: the few escapes JSON requires, no dependency needed.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
