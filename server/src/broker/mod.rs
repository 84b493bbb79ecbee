//! The broker core: destinations and the routing of messages to them.
//!
//! Plain synchronous code, no sockets and no tasks: sessions call it, and
//! it pushes deliveries into the subscribers' [`Outbox`](crate::outbox::Outbox)es. Destinations
//! live in a sharded map, and each destination has its own lock, so
//! traffic to different rooms does not contend.

pub mod clock;
pub mod dead_letter;
mod dedup;
mod destination;
mod durable_sub;
pub mod exchange;
pub mod exchanges;
pub mod memory;
mod message;
mod policy;
mod queue;
pub mod selector;
mod stats;
pub mod sublist;
pub mod timers;
mod topic;
pub mod wildcard;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use clock::Clock;
pub use dead_letter::DeathReason;
pub use dedup::Claim;
pub use destination::{DestinationError, DestinationKind};
pub use exchange::{Exchange, ExchangeConfig, ExchangeError, ExchangeKind};
pub use memory::{Charge, Memory};
pub use message::{
    AckMode, Delivery, HeaderBlock, MESSAGE_OVERHEAD, Message, MessageId, StreamPosition,
    frame_size, message_size,
};
pub use policy::{Overflow, QueuePolicy, TopicPolicy, policy_for, queue_policy_for};
pub use queue::{Compacted, ConsumerSpec, QueueDestination, QueueEnv, QueueFull};
pub use selector::{Selector, SelectorError};
pub use stats::Stats;
pub use topic::{
    MAX_STREAM, Presence, Recovery, SubscribeError, TopicDestination, TopicSubscription,
};

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::store::{Completion, Journal, JournalError, Recovered, RecoveredMessage};
use crate::terms::Terms;
use dead_letter::DeadLetters;
use timers::Timers;

/// A destination, resolved from its name.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<QueueDestination>),
    /// A topic.
    Topic(Arc<TopicDestination>),
}

const SHARDS: usize = 16;

/// Which of the [`SHARDS`] a destination name belongs to: a multiply-fold
/// over its 8-byte words (FxHash's constant), the high bits taken.
fn shard_index(name: &str) -> usize {
    const K: u64 = 0x517c_c1b7_2722_0a95;
    let mut h = name.len() as u64;
    for word in name.as_bytes().chunks(8) {
        let mut bytes = [0u8; 8];
        bytes[..word.len()].copy_from_slice(word);
        h = (h.rotate_left(5) ^ u64::from_le_bytes(bytes)).wrapping_mul(K);
    }
    (h >> 32) as usize % SHARDS
}

/// Queue names the broker gives its private queues (exchange subscriptions'
/// queues, connections' temp queues); clients cannot make or subscribe to them.
pub const PRIVATE_PREFIX: &str = "/queue/stompbox.";

/// Why a message was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The destination name is not valid.
    #[error(transparent)]
    Destination(#[from] DestinationError),
    /// The queue is at a limit of its policy.
    #[error(transparent)]
    QueueFull(#[from] QueueFull),
    /// The message should be durable and the journal cannot take it.
    #[error("{0}")]
    NotStored(String),
    /// An exchange destination that cannot be used.
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// In cluster mode, Redis cannot take the message now.
    #[error("{0}")]
    Cluster(String),
    /// `mandatory:true` and no binding took the message.
    #[error(
        "no binding of exchange {exchange:?} takes routing key {key:?} (and no alternate exchange does)"
    )]
    Unroutable {
        /// The exchange.
        exchange: String,
        /// The routing key.
        key: String,
    },
}

impl From<JournalError> for SendError {
    fn from(e: JournalError) -> SendError {
        SendError::NotStored(e.to_string())
    }
}

/// The broker: owns every destination.
#[derive(Debug)]
pub struct Broker {
    shards: Vec<Mutex<HashMap<String, Destination>>>,
    next_message: Arc<AtomicU64>,
    next_session: AtomicU64,
    policies: Vec<TopicPolicy>,
    queue_policies: Vec<QueuePolicy>,
    epoch: ByteString,
    /// Topics created so far: each new topic's stream gets an epoch of
    /// its own, so a topic forgotten by [`sweep`](Self::sweep) and created
    /// again never reuses an (epoch, position) pair of its earlier life.
    topics_created: AtomicU64,
    stats: Stats,
    /// Counters for `/metrics`. Boxed: sessions bump them from every
    /// core, and inline they would share cache lines with the fields
    /// every SEND reads.
    metrics: Box<crate::metrics::Metrics>,
    /// The open connections, for the management API.
    connections: crate::registry::Connections,
    memory: Arc<Memory>,
    /// Where durable messages are kept; `None` runs purely in memory.
    journal: Option<Arc<Journal>>,
    /// Durable subscription key → its topic, so one can be deleted by name
    /// from a connection that does not hold it.
    durables: Mutex<HashMap<ByteString, ByteString>>,
    /// Now, for delays and expiry.
    clock: Arc<Clock>,
    /// When queues next need a tick.
    timers: Arc<Timers>,
    /// Messages queues gave up on, to be moved to dead-letter queues.
    dead_letters: Arc<DeadLetters>,
    /// Wildcard topic subscriptions.
    wildcards: wildcard::WildcardIndex,
    /// Exchanges by name (declared in the config or by the API).
    exchanges: exchanges::Exchanges,
    /// Private subscription queues made so far, for their names.
    private_queues: AtomicU64,
    /// In cluster mode, the link to Redis: topics go through it.
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

/// Extras a SUBSCRIBE may ask of a topic; queues ignore them.
#[derive(Debug, Default, Clone)]
pub struct TopicOptions {
    /// History to replay first.
    pub recovery: Option<Recovery>,
    /// Announce the subscriber.
    pub presence: Option<Presence>,
    /// Receive presence snapshots and events.
    pub watch_presence: bool,
    /// The key of the durable subscription asked for (see `session`'s
    /// dialects: RabbitMQ's `durable:true`, ActiveMQ's and Artemis' names).
    pub durable: Option<ByteString>,
}

impl Default for Broker {
    fn default() -> Broker {
        Broker::new()
    }
}

impl Broker {
    /// An empty broker with the built-in chat topic policy.
    pub fn new() -> Broker {
        Broker::with_policies(vec![TopicPolicy::chat_default()])
    }

    /// An empty broker with these topic policies (first match wins) and
    /// no memory limit.
    pub fn with_policies(policies: Vec<TopicPolicy>) -> Broker {
        Broker::configured(policies, Vec::new(), Memory::unlimited())
    }

    /// An empty broker with these topic and queue policies (first match
    /// wins), accounting its messages in `memory`.
    pub fn configured(
        policies: Vec<TopicPolicy>,
        queue_policies: Vec<QueuePolicy>,
        memory: Arc<Memory>,
    ) -> Broker {
        let hasher = RandomState::new();
        // Unique per run: a clock reading mixed with the process's random hash keys.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let epoch = ByteString::from(format!("{:016x}", hasher.hash_one(now)));
        Broker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            next_message: Arc::new(AtomicU64::new(1)),
            next_session: AtomicU64::new(1),
            policies,
            queue_policies,
            epoch,
            topics_created: AtomicU64::new(0),
            stats: Stats::default(),
            metrics: Default::default(),
            connections: Default::default(),
            memory,
            journal: None,
            durables: Mutex::new(HashMap::new()),
            clock: Arc::new(Clock::system()),
            timers: Arc::new(Timers::default()),
            dead_letters: Arc::new(DeadLetters::default()),
            wildcards: wildcard::WildcardIndex::default(),
            exchanges: exchanges::Exchanges::default(),
            private_queues: AtomicU64::new(0),
            cluster: None,
        }
    }

    /// The same broker as one node of a cluster: topics go through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Broker {
        // A topic's stream is Redis' in cluster mode: history a journal
        // kept from single-node runs is not mixed into it. Queues the
        // journal brought back stay on this node (not shared) until
        // they are drained and swept.
        let mut dropped = 0;
        let mut local_queues = 0;
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|_, d| matches!(d, Destination::Queue(_)));
            dropped += before - map.len();
            local_queues += map.len();
        }
        if dropped > 0 {
            tracing::warn!(
                topics = dropped,
                "cluster mode: topic history kept in the journal by earlier single-node runs is not used (topics live in Redis)"
            );
        }
        if local_queues > 0 {
            tracing::warn!(
                queues = local_queues,
                "cluster mode: queues recovered from this node's journal stay on this node until they are drained"
            );
        }
        self.cluster = Some(cluster);
        self
    }

    /// The cluster link, in cluster mode.
    pub fn cluster(&self) -> Option<&Arc<crate::cluster::Cluster>> {
        self.cluster.as_ref()
    }

    /// `None` while `completion` waits for the journal or the cluster;
    /// then whether it succeeded, and if not, the `x-error` code and why.
    pub fn outcome(&self, completion: Completion) -> Option<Result<(), (&'static str, String)>> {
        if let Some(journal) = &self.journal {
            match journal.outcome(completion)? {
                Ok(()) => {}
                Err(e) => return Some(Err(("not-stored", format!("not stored - {e}")))),
            }
        }
        if let (Some(cluster), Some(ticket)) = (&self.cluster, completion.ticket()) {
            return match cluster.tickets().outcome(ticket)? {
                Ok(()) => Some(Ok(())),
                Err(f) => Some(Err((f.code, format!("not accepted - {}", f.why)))),
            };
        }
        Some(Ok(()))
    }

    /// Delivers a message the cluster brought for `topic` to this node's
    /// wildcard subscribers whose pattern matches it (the channel came
    /// through a pattern subscription: exact subscribers get it apart).
    pub fn deliver_wild_from_cluster(
        &self,
        topic: &str,
        published: crate::cluster::wire::Published,
    ) {
        let key = topic.strip_prefix("/topic/").unwrap_or_default();
        let Some(subs) = self.wildcards.matches(key) else {
            return;
        };
        if subs.is_empty() {
            return;
        }
        let message = Arc::new(self.cluster_message(topic, published));
        let block = (subs.len() > 1).then(|| Arc::new(HeaderBlock::default()));
        for s in subs.iter() {
            if s.selector
                .as_ref()
                .is_some_and(|sel| !sel.matches(&message.headers))
            {
                continue;
            }
            let _ = s.outbox.push_topic(Delivery {
                subscription: s.subscription.clone(),
                message: message.clone(),
                redelivered: false,
                ack: s.ack,
                tag: None,
                history: false,
                control: false,
                delivery_count: None,
                ack_timeout_ms: 0,
                header_block: block.clone(),
            });
        }
    }

    /// Tells this node's watchers of `topic` that a member of another
    /// node joined or left.
    pub fn presence_from_cluster(&self, topic: &str, event: &str, json: &str) {
        if let Some(Destination::Topic(t)) = self.existing(topic) {
            t.announce_remote(event, json);
        }
    }

    /// Delivers a message the cluster brought for `topic` to this node's
    /// subscribers of it.
    pub fn deliver_from_cluster(&self, topic: &str, published: crate::cluster::wire::Published) {
        let Some(Destination::Topic(t)) = self.existing(topic) else {
            return;
        };
        let message = self.cluster_message(topic, published);
        t.deliver(message, &[]);
    }

    /// A queue message fetched from the cluster, accepted at `at_ms`.
    pub(crate) fn cluster_queue_message(
        &self,
        queue: &QueueDestination,
        headers: Headers,
        body: Bytes,
        at_ms: u64,
    ) -> Message {
        // A durable subscription's messages show their topic.
        let destination =
            crate::cluster::topic_of_durable_queue(queue.name()).unwrap_or(queue.name());
        let mut message = self.message(
            self.next_message_id(),
            ByteString::from(destination),
            headers,
            body,
            false,
        );
        message.terms = Terms::read(&message.headers, at_ms, queue.policy().message_ttl_ms);
        message
    }

    fn cluster_message(&self, topic: &str, p: crate::cluster::wire::Published) -> Message {
        let ephemeral = p.position == 0;
        let mut message = self.message(
            self.next_message_id(),
            ByteString::from(topic),
            p.headers,
            p.body,
            ephemeral,
        );
        if !ephemeral {
            message.stream = Some(Box::new(StreamPosition {
                epoch: p.epoch,
                position: p.position,
            }));
        }
        message
    }

    /// Reads what a cluster subscriber asked for from Redis (history,
    /// the presence of other nodes), then hands it to the topic, which
    /// sends it before the live messages.
    fn join_from_cluster(
        &self,
        cluster: Arc<crate::cluster::Cluster>,
        topic: Arc<TopicDestination>,
        (channel, joined): (Completion, u64),
        (session, subscription): (SessionId, SubscriptionId),
        recovery: Option<Recovery>,
        watches: bool,
    ) {
        let memory = self.memory.clone();
        let ids = self.next_message.clone();
        tokio::spawn(async move {
            // The channel first: what is published after the read then
            // arrives live, and what came before is in the read.
            let subscribed = cluster.settled(channel).await;
            let elsewhere = match (&subscribed, watches) {
                (_, false) => None,
                (Err(_), true) => Some(Vec::new()),
                (Ok(()), true) => Some(cluster.presence_elsewhere(topic.name()).await.unwrap_or_else(|e| {
                    tracing::warn!(topic = topic.name(), error = %e, "cluster: other nodes' presence could not be read");
                    Vec::new()
                })),
            };
            let Some(recovery) = recovery else {
                topic.finish_join(session, &subscription, None, elsewhere);
                cluster.tickets().answer(joined, Ok(()));
                return;
            };
            let loaded = match subscribed {
                Err(e) => Err(e),
                Ok(()) => {
                    let policy = topic.policy();
                    cluster
                        .history(topic.name(), &recovery, policy.history, policy.max_age())
                        .await
                        .map_err(|e| e.to_string())
                }
            };
            let loaded = loaded.map(|h| {
                let complete = match &recovery {
                    Recovery::Last(_) => true,
                    Recovery::Since { epoch, position } => {
                        *epoch == h.epoch && *position <= h.head && h.oldest <= position + 1
                    }
                    Recovery::Before { epoch, .. } => *epoch == h.epoch,
                };
                let epoch = ByteString::from(h.epoch);
                let messages = h
                    .entries
                    .into_iter()
                    .map(|(position, _age, headers, body)| {
                        let id = MessageId::new(ids.fetch_add(1, Ordering::Relaxed));
                        let charge = memory.charge(message_size(topic.name(), &headers, &body));
                        Arc::new(Message {
                            id,
                            destination: ByteString::from(topic.name()),
                            headers,
                            body,
                            stream: Some(Box::new(StreamPosition {
                                epoch: epoch.clone(),
                                position,
                            })),
                            ephemeral: false,
                            charge,
                            journal: None,
                            terms: Terms::default(),
                        })
                    })
                    .collect();
                topic::Loaded {
                    epoch,
                    head: h.head,
                    oldest: h.oldest,
                    messages,
                    complete,
                }
            });
            topic.finish_join(session, &subscription, Some(loaded), elsewhere);
            cluster.tickets().answer(joined, Ok(()));
        });
    }

    /// The same broker with these exchanges.
    pub fn with_exchanges(mut self, exchanges: exchanges::Exchanges) -> Broker {
        self.exchanges = exchanges;
        self
    }

    /// The exchange of this name.
    pub fn exchange(&self, name: &str) -> Result<Arc<Exchange>, ExchangeError> {
        self.exchanges
            .get(name)
            .ok_or_else(|| ExchangeError::Unknown(name.chars().take(100).collect()))
    }

    /// The exchanges, to declare, bind and delete while running.
    pub fn exchanges(&self) -> &exchanges::Exchanges {
        &self.exchanges
    }

    /// The same broker reading `clock` for delays and expiry (tests drive
    /// a manual one). Set before any queue exists.
    pub fn with_clock(mut self, clock: Clock) -> Broker {
        self.clock = Arc::new(clock);
        self
    }

    /// The broker's clock.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// When queues next need a tick (see [`run_timers`](Self::run_timers)).
    pub fn timers(&self) -> &Timers {
        &self.timers
    }

    fn queue_env(&self) -> QueueEnv {
        QueueEnv {
            journal: self.journal.clone(),
            memory: self.memory.clone(),
            clock: self.clock.clone(),
            timers: self.timers.clone(),
            dead_letters: self.dead_letters.clone(),
            cluster: self.cluster.clone(),
        }
    }

    /// A broker that keeps durable messages in `journal`, with the queues
    /// `recovered` from it in place (their messages marked redelivered),
    /// and message ids continuing past every id a previous run used.
    pub fn durable(
        policies: Vec<TopicPolicy>,
        queue_policies: Vec<QueuePolicy>,
        memory: Arc<Memory>,
        journal: Arc<Journal>,
        recovered: Recovered,
    ) -> Broker {
        let mut broker = Broker::configured(policies, queue_policies, memory);
        broker
            .next_message
            .store(recovered.next_id.max(1), Ordering::Relaxed);
        broker.journal = Some(journal.clone());
        let written_by = journal.resolved().borrow().to_owned();
        let now_ms = broker.clock.now_ms();
        for queue in recovered.queues {
            let Ok(Destination::Queue(q)) = broker.destination(&queue.name) else {
                tracing::warn!(destination = %queue.name, "journal: a recovered queue's name is no longer valid; its messages are skipped");
                continue;
            };
            // Delayed messages wait in memory; of the rest, the head of the
            // queue is read into memory, up to its window, and the others
            // wait on disk, where they are.
            let (delayed, ready): (Vec<&RecoveredMessage>, Vec<&RecoveredMessage>) = queue
                .messages
                .iter()
                .partition(|m| m.deliver_at_ms > now_ms);
            let window = q.policy().memory_window_bytes;
            let mut split = ready.len();
            if window > 0 {
                let mut bytes = 0;
                split = ready
                    .iter()
                    .position(|m| {
                        // As a message in memory is counted.
                        bytes += m.record.size + MESSAGE_OVERHEAD as u64;
                        bytes > window
                    })
                    .unwrap_or(ready.len());
            }
            let (head, rest) = ready.split_at(split);
            let in_memory: Vec<_> = head.iter().chain(delayed.iter()).copied().collect();
            let refs: Vec<_> = in_memory.iter().map(|m| m.record).collect();
            let read = journal.read(&refs, written_by);
            let mut messages = Vec::with_capacity(in_memory.len());
            for (m, stored) in in_memory.iter().zip(read) {
                let stored = match stored {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(destination = %queue.name, id = m.id, error = %e, "journal: a recovered message could not be read");
                        continue;
                    }
                };
                let pin = journal.pin_recovered(m);
                let message = Message::stored(
                    queue.name.clone(),
                    stored,
                    &broker.memory,
                    pin,
                    q.policy().message_ttl_ms,
                );
                messages.push((Arc::new(message), m.returned));
            }
            q.restore(messages);
            let paged: Vec<_> = rest
                .iter()
                .map(|m| (journal.pin_recovered(m), m.priority, m.returned))
                .collect();
            if !paged.is_empty() {
                q.restore_paged(paged, written_by);
            }
            for d in queue.dedup {
                q.restore_dedup(d.id, d.at_ms, Some(journal.pin_record(d.record)));
            }
        }
        for topic in recovered.topics {
            if DestinationKind::of(&topic.name) != Ok(DestinationKind::Topic) {
                continue;
            }
            // The recorded epoch, so clients' positions stay valid (a topic
            // known only by its subscriptions' cursors gets a new one).
            let epoch = if topic.epoch.is_empty() {
                ByteString::from(format!(
                    "{}.{}",
                    broker.epoch,
                    broker.topics_created.fetch_add(1, Ordering::Relaxed) + 1
                ))
            } else {
                topic.epoch.clone()
            };
            let t = broker.new_topic(&topic.name, epoch.clone(), topic.next_position);
            {
                let mut index = broker.durables.lock().unwrap_or_else(|e| e.into_inner());
                for (key, _) in &topic.durables {
                    index.insert(key.clone(), topic.name.clone());
                }
            }
            let messages = topic
                .messages
                .into_iter()
                .map(|m| {
                    let pin = journal.pin_recovered_topic(&m);
                    let charge =
                        broker
                            .memory
                            .charge(message_size(&topic.name, &m.headers, &m.body));
                    let message = Arc::new(Message {
                        id: MessageId::new(m.id),
                        destination: topic.name.clone(),
                        headers: m.headers,
                        body: m.body,
                        stream: Some(Box::new(StreamPosition {
                            epoch: epoch.clone(),
                            position: m.position,
                        })),
                        ephemeral: false,
                        charge,
                        journal: Some(pin),
                        terms: Terms::default(),
                    });
                    let age = std::time::Duration::from_millis(now_ms.saturating_sub(m.at_ms));
                    (message, age)
                })
                .collect();
            t.restore(topic.next_position, messages, topic.durables);
            let shard = broker.shard(&topic.name);
            shard
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(topic.name.to_string(), Destination::Topic(t));
        }
        // Every recovered message holds its pin now.
        journal.start_reclaiming();
        broker
    }

    /// The journal, when the broker keeps durable messages.
    pub fn journal(&self) -> Option<&Arc<Journal>> {
        self.journal.as_ref()
    }

    /// A fresh message id. With a journal, ids are reserved on disk in
    /// blocks before use, so a restart never hands one out again.
    fn next_message_id(&self) -> MessageId {
        let n = self.next_message.fetch_add(1, Ordering::Relaxed);
        if let Some(journal) = &self.journal
            && n >= journal.id_ceiling()
            && let Err(e) = journal.reserve_ids(n)
        {
            tracing::error!(error = %e, "journal: message ids could not be reserved on disk");
        }
        MessageId::new(n)
    }

    /// This broker run's id. Each topic's stream epoch starts with it
    /// (see [`TopicDestination::epoch`]).
    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The broker's memory accounting.
    pub fn memory(&self) -> &Arc<Memory> {
        &self.memory
    }

    /// The open connections.
    pub fn connections(&self) -> &crate::registry::Connections {
        &self.connections
    }

    /// The counters `/metrics` serves.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.metrics
    }

    /// Each queue's and each topic's counts, for `/metrics`.
    pub fn destination_counts(&self) -> crate::metrics::DestinationCounts {
        let (mut queues, mut topics) = (Vec::new(), Vec::new());
        for d in self.all_destinations() {
            match d {
                Destination::Queue(q) => queues.push((q.name().to_string(), q.counts())),
                Destination::Topic(t) => topics.push((t.name().to_string(), t.counts())),
            }
        }
        (queues, topics)
    }

    /// Counters of what happened since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A fresh session id.
    pub fn new_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// The destination of this name, created on first use.
    pub fn destination(&self, name: &str) -> Result<Destination, DestinationError> {
        let kind = DestinationKind::of(name)?;
        if kind == DestinationKind::Topic && wildcard::pattern_of(name).is_some() {
            return Err(DestinationError::Pattern(name.chars().take(100).collect()));
        }
        let shard = self.shard(name);
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(name) {
            return Ok(d.clone());
        }
        if name.starts_with(PRIVATE_PREFIX) {
            // Made only by the broker; a name of one that is gone (its
            // connection closed) must not become a queue nobody reads.
            return Err(DestinationError::PrivateGone(
                name.chars().take(100).collect(),
            ));
        }
        let d = match kind {
            DestinationKind::Queue => Destination::Queue(QueueDestination::new(
                name.to_string(),
                queue_policy_for(&self.queue_policies, name),
                self.queue_env(),
            )),
            DestinationKind::Topic => Destination::Topic(self.new_topic(
                name,
                ByteString::from(format!(
                    "{}.{}",
                    self.epoch,
                    self.topics_created.fetch_add(1, Ordering::Relaxed) + 1
                )),
                1,
            )),
        };
        map.insert(name.to_string(), d.clone());
        Ok(d)
    }

    /// A topic streaming under `epoch` from `next_position`; a durable one
    /// has its epoch recorded in the journal, so it outlives a restart even
    /// while its history is empty.
    fn new_topic(
        &self,
        name: &str,
        epoch: ByteString,
        next_position: u64,
    ) -> Arc<TopicDestination> {
        let topic = TopicDestination::new(
            name.to_string(),
            policy_for(&self.policies, name),
            epoch,
            self.next_message.clone(),
            self.journal.clone(),
            self.cluster.clone(),
        );
        if let Some(journal) = &self.journal
            && topic.is_durable()
        {
            journal.topic_head(name, topic.epoch(), next_position);
        }
        topic
    }

    /// Accepts a message for `destination`: queued, or fanned out.
    /// An `ephemeral` message is never kept in a topic's history. The
    /// completion is done when the message is as safe as it will be: at
    /// once in memory, after the journal's sync when durable.
    pub fn send(
        &self,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Result<(MessageId, Completion), SendError> {
        let target = self.destination(&destination)?;
        self.send_to(&target, destination, headers, body, ephemeral)
    }

    /// Like [`send`](Self::send), to a destination already looked up. A
    /// queue at a limit of its policy may refuse the message, and so may
    /// a full journal when the message is durable.
    pub fn send_to(
        &self,
        target: &Destination,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Result<(MessageId, Completion), SendError> {
        let id = self.next_message_id();
        let Destination::Queue(q) = target else {
            let message = self.message(id.clone(), destination, headers, body, ephemeral);
            return self.publish(target, message).map(|c| (id, c));
        };
        let dedup = crate::terms::dedup_id(&headers).cloned();
        if let Some(key) = &dedup
            && let Claim::Duplicate(first) = q.claim_dedup(key)
        {
            // Confirmed as the first was, and not enqueued again.
            self.stats.note_duplicate();
            return Ok((id, first));
        }
        let mut message = self.message(id.clone(), destination, headers, body, ephemeral);
        message.terms = Terms::read(
            &message.headers,
            self.clock.now_ms(),
            q.policy().message_ttl_ms,
        );
        let result = match &self.cluster {
            Some(cluster)
                if q.env_cluster()
                    && !persistent(q, &message.headers)
                    && cluster.may_deliver_locally(q.name())
                    && q.would_deliver_at_once() =>
            {
                // Local preference: see `cluster::queues`.
                self.enqueue(q, message)
            }
            Some(cluster) if q.env_cluster() => {
                let Message {
                    destination,
                    headers,
                    body,
                    charge,
                    terms,
                    ..
                } = message;
                cluster
                    .enqueue(
                        &destination,
                        &headers,
                        &body,
                        terms.at_ms,
                        q.policy(),
                        charge,
                    )
                    .inspect(|c| cluster.note_sent(q.name(), *c))
                    .map(|c| (c, None))
                    .map_err(|e| SendError::Cluster(e.to_string()))
            }
            _ => self.enqueue(q, message),
        };
        if let Some(key) = &dedup {
            match &result {
                Ok((completion, pin)) => q.record_dedup(key, *completion, pin.clone()),
                Err(_) => q.release_dedup(key),
            }
        }
        self.route_dead_letters();
        result.map(|(c, _)| (id, c))
    }

    fn message(
        &self,
        id: MessageId,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Message {
        let charge = self
            .memory
            .charge(message_size(&destination, &headers, &body));
        Message {
            id,
            destination,
            headers,
            body,
            stream: None,
            ephemeral,
            charge,
            journal: None,
            terms: Terms::default(),
        }
    }

    /// Fans a message out to a topic.
    fn publish(&self, target: &Destination, message: Message) -> Result<Completion, SendError> {
        let Destination::Topic(t) = target else {
            return Ok(Completion::DONE);
        };
        if let Some(cluster) = &self.cluster {
            // Every node, this one too, delivers it when the channel
            // brings it back with its cluster-wide position.
            let Message {
                destination,
                headers,
                body,
                ephemeral,
                charge,
                ..
            } = message;
            return cluster
                .publish(&destination, &headers, &body, t.policy(), ephemeral, charge)
                .map_err(|e| SendError::Cluster(e.to_string()));
        }
        let key = t.name().strip_prefix("/topic/").unwrap_or_default();
        let wild = self.wildcards.matches(key);
        let (dropped, completion) = t.publish(message, wild.as_deref().unwrap_or_default())?;
        if dropped > 0 {
            tracing::debug!(
                destination = t.name(),
                dropped,
                "slow subscribers missed a message"
            );
        }
        Ok(completion)
    }

    /// Stores (when durable) and enqueues a queue message; returns when it
    /// is safe, and its journal pin (for the deduplication window).
    fn enqueue(
        &self,
        q: &QueueDestination,
        mut message: Message,
    ) -> Result<(Completion, Option<crate::store::JournalPin>), SendError> {
        let mut completion = Completion::DONE;
        if let Some(store) = &self.journal
            && (persistent(q, &message.headers) || q.is_paging())
        {
            if !q.has_room(1, message.charge.bytes() as u64) {
                // Refused before it is written, so a full queue costs no disk.
                return Err(q.full().into());
            }
            let (c, pin) = store.enqueue(
                &message.destination,
                message.id.number(),
                message.terms.at_ms,
                &message.headers,
                &message.body,
            )?;
            completion = c;
            message.journal = Some(pin);
        }
        let pin = message.journal.clone();
        let dropped = q.enqueue(Arc::new(message), completion)?;
        if dropped > 0 {
            self.stats.note_dropped_from_queue(dropped);
            tracing::debug!(
                destination = q.name(),
                dropped,
                "queue full: oldest messages dropped"
            );
        }
        Ok((completion, pin))
    }

    /// Routes a SEND to `/exchange/NAME/KEY` to the queues NAME's bindings
    /// pick (following exchange-to-exchange bindings, then the alternate
    /// exchange when none did): a copy per queue, each with `x-exchange`
    /// and `x-routing-key`. Unroutable: dropped and counted, or refused
    /// when `mandatory`. Refused too when no queue took it; a queue that
    /// refuses while others take it is logged. Returns how many queues
    /// took it.
    pub fn publish_exchange(
        &self,
        name: &str,
        key: &str,
        mut headers: Headers,
        body: Bytes,
        mandatory: bool,
    ) -> Result<(usize, Completion), SendError> {
        let exchange = self.exchange(name)?;
        let mut queues: Vec<ByteString> = Vec::new();
        let mut visited = Vec::new();
        self.resolve(&exchange, key, &headers, &mut queues, &mut visited);
        if queues.is_empty() {
            self.stats.note_unroutable();
            if mandatory {
                return Err(SendError::Unroutable {
                    exchange: name.to_string(),
                    key: key.to_string(),
                });
            }
            return Ok((0, Completion::DONE));
        }
        headers.push("x-exchange", name);
        headers.push("x-routing-key", key);
        let mut completion = Completion::DONE;
        let mut taken = 0;
        let mut first_error = None;
        for queue in queues {
            match self.send(queue.clone(), headers.clone(), body.clone(), false) {
                Ok((_, c)) => {
                    completion = completion.and(c);
                    taken += 1;
                }
                Err(e) => {
                    tracing::info!(exchange = name, %queue, error = %e, "a bound queue refused a routed message");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if taken == 0 => Err(e),
            _ => Ok((taken, completion)),
        }
    }

    /// The queues `exchange` routes `key` to, each once.
    fn resolve(
        &self,
        exchange: &Exchange,
        key: &str,
        headers: &Headers,
        queues: &mut Vec<ByteString>,
        visited: &mut Vec<String>,
    ) {
        // Loops are refused when declared; this only guards the walk.
        if visited.iter().any(|v| v == exchange.name()) || visited.len() > 32 {
            return;
        }
        visited.push(exchange.name().to_string());
        let before = queues.len();
        for target in exchange.route(key, headers) {
            match target {
                exchange::BindTarget::Queue(q) => {
                    if !queues.contains(&q) {
                        queues.push(q);
                    }
                }
                exchange::BindTarget::Exchange(next) => {
                    if let Ok(next) = self.exchange(&next) {
                        self.resolve(&next, key, headers, queues, visited);
                    }
                }
            }
        }
        if queues.len() == before
            && let Some(alternate) = exchange.alternate()
            && let Ok(alternate) = self.exchange(alternate)
        {
            self.resolve(&alternate, key, headers, queues, visited);
        }
    }

    /// Subscribes to `/exchange/NAME/PATTERN` the way RabbitMQ does: a
    /// private queue, in memory, bound to the exchange with the pattern
    /// (and, for a headers exchange, `x-match` and the header values),
    /// consumed by this subscription and deleted with it
    /// ([`delete_private_queue`](Self::delete_private_queue)).
    pub fn subscribe_exchange(
        &self,
        name: &str,
        pattern: &str,
        arguments: &[(String, String)],
        spec: ConsumerSpec,
    ) -> Result<(Arc<Exchange>, Arc<QueueDestination>), SubscribeError> {
        let exchange = self
            .exchange(name)
            .map_err(|e| SubscribeError::Exchange(e.to_string()))?;
        let headers = exchange::HeaderMatch::from_arguments(
            arguments.iter().map(|(n, v)| (n.as_str(), v.as_str())),
        )
        .map_err(|e| SubscribeError::Exchange(e.to_string()))?;
        let n = self.private_queues.fetch_add(1, Ordering::Relaxed) + 1;
        let queue = self.private_queue(format!("{PRIVATE_PREFIX}subscription-{n}"));
        let queue_name = queue.name().to_string();
        exchange
            .bind(exchange::Binding {
                target: exchange::BindTarget::Queue(queue_name.as_str().into()),
                key: pattern.to_string(),
                headers,
                owner: Some((spec.session, spec.subscription.clone())),
            })
            .map_err(|e| SubscribeError::Exchange(e.to_string()))?;
        queue.subscribe(spec);
        Ok((exchange, queue))
    }

    /// A new private queue of this name (under [`PRIVATE_PREFIX`]): in
    /// memory, reachable by name for SENDs, deleted by its owner with
    /// [`delete_private_queue`](Self::delete_private_queue).
    pub fn private_queue(&self, name: String) -> Arc<QueueDestination> {
        let env = QueueEnv {
            // Private and short-lived: never journaled, and local to
            // this node in cluster mode.
            journal: None,
            cluster: None,
            ..self.queue_env()
        };
        let queue = QueueDestination::new(
            name.clone(),
            QueuePolicy {
                durable: false,
                ..queue_policy_for(&self.queue_policies, &name)
            },
            env,
        );
        let shard = self.shard(name.as_str());
        shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, Destination::Queue(queue.clone()));
        queue
    }

    /// The private queue of this name, if it exists.
    pub fn existing_private_queue(&self, name: &str) -> Option<Arc<QueueDestination>> {
        match self.existing(name) {
            Some(Destination::Queue(q)) if name.starts_with(PRIVATE_PREFIX) => Some(q),
            _ => None,
        }
    }

    /// Deletes a private subscription queue and what waits in it.
    pub fn delete_private_queue(&self, name: &str) {
        let shard = self.shard(name);
        shard.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    }

    /// Deletes the queue `name` and the messages waiting in it (settled
    /// in the journal, so they do not come back at restart). Refused while
    /// anything uses it: a consumer, a message delivered and not yet
    /// acknowledged, or a SEND on its way in (which holds the queue for a
    /// moment: asked again, the delete goes through). Returns how many
    /// messages went with it.
    pub fn delete_queue(&self, name: &str) -> Result<usize, DeleteError> {
        let shard = self.shard(name);
        let removed = {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Destination::Queue(q)) = map.get(name) else {
                return Err(DeleteError::NotFound(format!(
                    "queue {}",
                    name.chars().take(200).collect::<String>()
                )));
            };
            let counts = q.counts();
            if counts.consumers > 0 || counts.unacked > 0 {
                return Err(DeleteError::InUse {
                    consumers: counts.consumers,
                    unacked: counts.unacked,
                });
            }
            // Lookups happen under this lock: with the map's the only
            // reference, nobody can put a message in after it goes.
            if Arc::strong_count(q) > 1 {
                return Err(DeleteError::Busy);
            }
            match map.remove(name) {
                Some(Destination::Queue(q)) => q,
                _ => return Err(DeleteError::Busy),
            }
        };
        Ok(removed.purge())
    }

    /// Deletes the topic `name` and its kept history (a purge record in
    /// the journal keeps it from coming back at restart). Refused while it
    /// has subscribers or durable subscriptions. Returns how many kept
    /// messages went, and when the purge is on disk.
    pub fn delete_topic(&self, name: &str) -> Result<(usize, Completion), DeleteError> {
        let shard = self.shard(name);
        let removed = {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Destination::Topic(t)) = map.get(name) else {
                return Err(DeleteError::NotFound(format!(
                    "topic {}",
                    name.chars().take(200).collect::<String>()
                )));
            };
            if !t.is_unused() {
                return Err(DeleteError::TopicInUse {
                    subscribers: t.subscriber_count(),
                });
            }
            // As for queues: with the map's the only reference, nobody is
            // publishing to it.
            if Arc::strong_count(t) > 1 {
                return Err(DeleteError::Busy);
            }
            match map.remove(name) {
                Some(Destination::Topic(t)) => t,
                _ => return Err(DeleteError::Busy),
            }
        };
        let purged = removed.purge_history();
        if let Some(journal) = &self.journal {
            journal.forget_topic(name);
        }
        Ok(purged)
    }

    /// Moves the messages queues gave up on to their dead-letter queues
    /// (or drops them, counted, when they have none or would loop), and
    /// settles them in their first queue's journal. Called after every
    /// broker operation that may have produced some.
    pub fn route_dead_letters(&self) {
        while self.dead_letters.pending() {
            for letter in self.dead_letters.take() {
                let message = &letter.message;
                if let Some(cluster) = &self.cluster {
                    // Settled where it was: its copy (if any) is a new
                    // message of the dead-letter queue.
                    let _ =
                        cluster.queue_settled(&letter.origin, std::iter::once(message.id.number()));
                }
                let moved = match &letter.target {
                    None => Err("the queue has no dead-letter queue".to_string()),
                    Some(target) => {
                        match dead_letter::dead_letter_headers(message, letter.reason, target) {
                            None => Err(format!(
                                "sending it to {target} would close a dead-letter cycle"
                            )),
                            Some(headers) => self
                                .send(target.clone(), headers, message.body.clone(), false)
                                .map(|_| ())
                                .map_err(|e| e.to_string()),
                        }
                    }
                };
                match moved {
                    Ok(()) => self.stats.note_dead_lettered(),
                    Err(why) => {
                        self.stats.note_dead_letter_dropped();
                        tracing::info!(
                            destination = %message.destination,
                            message_id = %message.id,
                            reason = letter.reason.as_str(),
                            why,
                            "dead letter dropped"
                        );
                    }
                }
                // After the copy's record: a crash in between leaves the
                // message in both queues, never in neither.
                if message.is_durable()
                    && let Some(journal) = &self.journal
                {
                    let _ = journal.settle(&message.destination, &[message.id.number()]);
                }
            }
        }
    }

    /// Ticks the queues whose delays or expiries are due, then moves any
    /// dead letters. Returns when the next tick is wanted (ms since the
    /// Unix epoch). The broker's timer task calls this.
    pub fn run_timers(&self) -> Option<u64> {
        for name in self.timers.take_due(self.clock.now_ms()) {
            if let Some(Destination::Queue(q)) = self.existing(&name) {
                q.tick();
            }
        }
        self.route_dead_letters();
        self.timers.next()
    }

    /// Settles deliveries a subscription acknowledged (or, in auto mode,
    /// that were written to it): their queue may send it more, and durable
    /// messages are recorded as done. The completion is done when that
    /// record is on disk.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> Completion {
        let mut completion = Completion::DONE;
        for group in tags.chunk_by(|a, b| a.destination == b.destination) {
            completion = completion.and(match self.existing(&group[0].destination) {
                Some(Destination::Queue(q)) => {
                    let mut c = q.settle(session, subscription, group);
                    if let Some(cluster) = self.cluster.as_ref().filter(|_| q.env_cluster()) {
                        c = c.and(cluster.queue_settled(q.name(), group.iter().map(|t| t.message)));
                    }
                    c
                }
                Some(Destination::Topic(t)) => t.settle(session, subscription, group),
                None => Completion::DONE,
            });
        }
        self.route_dead_letters();
        completion
    }

    /// Puts deliveries a subscription will not acknowledge (NACK,
    /// UNSUBSCRIBE, a closed connection) back at the head of their queues,
    /// in order, marked redelivered. Topic deliveries are dropped.
    pub fn requeue(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        deliveries: Vec<Delivery>,
    ) {
        for (name, messages) in by_queue(deliveries) {
            match self.destination(&name) {
                Ok(Destination::Queue(q)) => q.requeue(session, subscription, counted(messages)),
                // A durable subscription's: sent again on its next SUBSCRIBE.
                Ok(Destination::Topic(t)) => t.release(session, subscription, messages.len()),
                Err(_) => {}
            }
        }
        self.route_dead_letters();
    }

    /// Dead-letters deliveries a subscription rejected (`NACK` with
    /// `requeue:false`). A durable topic subscription's are settled: a
    /// topic has no dead-letter queue.
    pub fn reject(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        deliveries: Vec<Delivery>,
    ) -> Completion {
        let mut completion = Completion::DONE;
        for (name, messages) in by_queue(deliveries) {
            match self.destination(&name) {
                Ok(Destination::Queue(q)) => q.reject(session, subscription, counted(messages)),
                Ok(Destination::Topic(t)) => {
                    let tags: Vec<DeliveryTag> =
                        messages.into_iter().filter_map(|d| d.tag).collect();
                    completion = completion.and(t.settle(session, subscription, &tags));
                }
                Err(_) => {}
            }
        }
        self.route_dead_letters();
        completion
    }

    /// Puts back deliveries that never reached their client (still in the
    /// outbox when its connection closed), unmarked.
    pub fn return_undelivered(&self, deliveries: Vec<Delivery>) {
        for (queue, list) in by_queue(deliveries) {
            if let Ok(Destination::Queue(q)) = self.destination(&queue) {
                q.return_undelivered(list);
            }
        }
        self.route_dead_letters();
    }

    /// The destination of this name, if it exists.
    /// A destination by name if it exists now (none is made).
    pub fn existing_destination(&self, name: &str) -> Option<Destination> {
        self.existing(name)
    }

    /// The shard that holds `name`. Picked by a cheap unkeyed hash: a
    /// shard is a lock, not a bucket, and inside it the map's own keyed
    /// hash (SipHash) keeps client-chosen names from colliding. Hashing
    /// each name twice with SipHash was 5.7% of the broker's instructions
    /// with an ACK per message (callgrind).
    fn shard(&self, name: &str) -> &Mutex<HashMap<String, Destination>> {
        &self.shards[shard_index(name)]
    }

    fn existing(&self, name: &str) -> Option<Destination> {
        let shard = self.shard(name);
        shard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
    }

    /// Starts delivering `destination`'s messages to a subscription. The
    /// completion is done when what the subscription made durable (a new
    /// durable subscription's cursor) is on disk.
    pub fn subscribe(
        &self,
        destination: &str,
        spec: ConsumerSpec,
        options: TopicOptions,
    ) -> Result<(Destination, Completion), SubscribeError> {
        let target = self.destination(destination)?;
        let completion = match &target {
            Destination::Queue(q) => {
                if q.env_cluster() && spec.selector.is_some() {
                    return Err(SubscribeError::ClusterSelector);
                }
                q.subscribe(spec);
                self.route_dead_letters();
                Completion::DONE
            }
            Destination::Topic(t) => {
                if let (Some(cluster), Some(key)) = (&self.cluster, &options.durable) {
                    return self.subscribe_durable_in_cluster(cluster, t, key, spec);
                }
                if let Some(key) = &options.durable {
                    self.durables
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(key.clone(), ByteString::from(t.name()));
                }
                if options.durable.is_some() && spec.selector.is_some() {
                    return Err(SubscribeError::SelectorOnDurable);
                }
                let session = spec.session;
                let subscription = spec.subscription.clone();
                let recovery = options.recovery.clone();
                let watches = options.watch_presence || options.presence.is_some();
                let completion = t.subscribe(TopicSubscription {
                    selector: spec.selector,
                    session: spec.session,
                    subscription: spec.subscription,
                    ack: spec.ack,
                    outbox: spec.outbox,
                    recovery: options.recovery,
                    presence: options.presence,
                    watch_presence: options.watch_presence,
                    durable: options.durable,
                    prefetch: spec.prefetch,
                })?;
                if let Some(cluster) = &self.cluster
                    && (recovery.is_some() || watches)
                {
                    // The RECEIPT comes after the history and snapshot,
                    // as on one node.
                    let joined = cluster.tickets().take();
                    self.join_from_cluster(
                        cluster.clone(),
                        t.clone(),
                        (completion, joined),
                        (session, subscription),
                        recovery,
                        watches,
                    );
                    completion.and(Completion::after_ticket(joined))
                } else {
                    completion
                }
            }
        };
        Ok((target, completion))
    }

    /// A durable topic subscription in cluster mode: a queue of its own
    /// in Redis, fed by the topic's publish script while the subscription
    /// exists, consumed like any cluster queue (so it survives its node,
    /// and its subscriber may come back on any node). The subscriber sees
    /// the topic as the MESSAGE's destination.
    fn subscribe_durable_in_cluster(
        &self,
        cluster: &Arc<crate::cluster::Cluster>,
        topic: &TopicDestination,
        key: &ByteString,
        spec: ConsumerSpec,
    ) -> Result<(Destination, Completion), SubscribeError> {
        if spec.selector.is_some() {
            return Err(SubscribeError::SelectorOnDurable);
        }
        let name = crate::cluster::durable_queue_name(topic.name(), key);
        let queue = {
            let shard = self.shard(&name);
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&name) {
                Some(Destination::Queue(q)) => q.clone(),
                _ => {
                    let q = QueueDestination::new(
                        name.clone(),
                        queue_policy_for(&self.queue_policies, topic.name()),
                        self.queue_env(),
                    );
                    map.insert(name.clone(), Destination::Queue(q.clone()));
                    q
                }
            }
        };
        if queue.consumer_count() > 0 {
            return Err(SubscribeError::DurableInUse(
                key.split('\n').next_back().unwrap_or_default().to_string(),
            ));
        }
        self.durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone(), ByteString::from(topic.name()));
        let registered = cluster.register_durable(topic.name(), key, &name);
        queue.subscribe(spec);
        Ok((Destination::Queue(queue), registered))
    }

    /// Starts delivering what is published to every topic `pattern`
    /// matches (`a.*`, `a.#`, `a.>`: see [`sublist`]) to a subscription.
    /// Live messages only: no history, presence or durability.
    pub fn subscribe_pattern(
        &self,
        pattern: &str,
        spec: ConsumerSpec,
        options: &TopicOptions,
    ) -> Result<Completion, SubscribeError> {
        if options.recovery.is_some()
            || options.presence.is_some()
            || options.watch_presence
            || options.durable.is_some()
        {
            return Err(SubscribeError::PatternOptions(pattern.to_string()));
        }
        self.wildcards
            .subscribe(
                pattern,
                wildcard::WildSub {
                    selector: spec.selector,
                    session: spec.session,
                    subscription: spec.subscription,
                    ack: spec.ack,
                    outbox: spec.outbox,
                },
            )
            .map_err(|e| SubscribeError::Pattern(e.to_string()))?;
        // In cluster mode the node follows every topic channel the pattern
        // may match; the RECEIPT waits until it does.
        Ok(match &self.cluster {
            Some(cluster) => cluster.watch_pattern(pattern),
            None => Completion::DONE,
        })
    }

    /// Stops a wildcard subscription.
    pub fn unsubscribe_pattern(
        &self,
        pattern: &str,
        session: SessionId,
        subscription: &SubscriptionId,
    ) {
        self.wildcards.unsubscribe(pattern, session, subscription);
        if let Some(cluster) = &self.cluster {
            cluster.unwatch_pattern(pattern);
        }
    }

    /// Deletes the durable subscription `key`, wherever it is. Returns
    /// whether it existed.
    pub fn forget_durable(&self, key: &str) -> bool {
        let topic = self
            .durables
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
        if let Some(cluster) = &self.cluster {
            // Made on any node: Redis knows. Deleted in the background;
            // a key no node ever made is logged, not refused.
            let cluster = cluster.clone();
            let key = key.to_string();
            tokio::spawn(async move {
                match cluster.forget_durable(&key).await {
                    Ok(true) => tracing::info!("durable subscription deleted"),
                    Ok(false) => tracing::info!("no durable subscription to delete"),
                    Err(e) => {
                        tracing::warn!(error = %e, "a durable subscription could not be deleted")
                    }
                }
            });
            return true;
        }
        match topic.map(|t| self.destination(&t)) {
            Some(Ok(Destination::Topic(t))) => t.forget_durable(key),
            _ => false,
        }
    }
}

impl Broker {
    /// Forgets destinations nobody uses: no messages, subscribers or kept
    /// history, and no reference held anywhere but here (a session that
    /// just looked one up keeps it alive). Without this, every name ever
    /// used (private rooms, benchmark runs) would stay in memory.
    /// Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            // Lock order: shard, then destination; nothing takes them the other way.
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|name, d| match d {
                Destination::Queue(q) => Arc::strong_count(q) > 1 || !q.is_idle(),
                Destination::Topic(t) => {
                    let keep = Arc::strong_count(t) > 1 || !t.is_idle();
                    if !keep && let Some(journal) = &self.journal {
                        journal.forget_topic(name);
                    }
                    keep
                }
            });
            removed += before - map.len();
        }
        removed
    }

    /// Moves the journal records that keep segment `segment` alive to the
    /// journal's end, so the segment can be deleted (see
    /// [`Journal::compaction_candidate`]). Returns how many moved.
    pub fn compact(&self, segment: u64) -> usize {
        let mut done = Compacted::default();
        // Looked up under the shard locks, compacted outside them.
        for d in self.all_destinations() {
            done.merge(match d {
                Destination::Queue(q) => q.compact(segment),
                Destination::Topic(t) => t.compact(segment),
            });
        }
        // The old records' segment may go once their pins are dropped:
        // not before the new records are on disk.
        if let Some(journal) = &self.journal {
            journal.wait_blocking(done.written);
        }
        done.old.len()
    }

    /// Every destination, each shard's taken under its lock and then let go.
    pub fn all_destinations(&self) -> Vec<Destination> {
        self.shards
            .iter()
            .flat_map(|shard| {
                shard
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// How many destinations exist.
    pub fn destination_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Why a queue or topic was not deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// No queue or topic of that name.
    #[error("no {0}")]
    NotFound(String),
    /// Subscribers or durable subscriptions hold a topic.
    #[error(
        "the topic has {subscribers} subscriber(s) or durable subscriptions: close them (DELETE /api/connections/ID) first"
    )]
    TopicInUse {
        /// Its subscribers.
        subscribers: usize,
    },
    /// Consumers or unacknowledged messages hold it.
    #[error(
        "the queue has {consumers} consumer(s) and {unacked} unacknowledged message(s): close them (DELETE /api/connections/ID) first"
    )]
    InUse {
        /// Its consumers.
        consumers: u64,
        /// Messages delivered and not yet acknowledged.
        unacked: u64,
    },
    /// A SEND was putting a message in at that moment.
    #[error("a message was arriving at that moment: try again")]
    Busy,
}

/// One destination as an operator sees it (see [`Broker::list`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DestinationInfo {
    /// Its name: `/queue/…`, `/topic/…` or `/exchange/NAME`.
    pub name: String,
    /// `queue`, `topic`, or the exchange's type.
    pub kind: String,
    /// Messages waiting (queues), or kept for history and durable
    /// subscriptions (topics); 0 for exchanges.
    pub depth: usize,
    /// Consumers or subscribers (wildcard ones not counted per topic).
    pub consumers: usize,
    /// An exchange's bindings, as `KEY → TARGET`.
    pub bindings: Vec<String>,
}

impl Broker {
    /// Every destination and exchange, sorted by name: what an operations
    /// API shows.
    pub fn list(&self) -> Vec<DestinationInfo> {
        let mut out = Vec::new();
        for d in self.all_destinations() {
            {
                out.push(match d {
                    Destination::Queue(q) => DestinationInfo {
                        name: q.name().to_string(),
                        kind: "queue".into(),
                        depth: q.depth(),
                        consumers: q.consumer_count(),
                        bindings: Vec::new(),
                    },
                    Destination::Topic(t) => DestinationInfo {
                        name: t.name().to_string(),
                        kind: "topic".into(),
                        depth: t.kept(),
                        consumers: t.subscriber_count(),
                        bindings: Vec::new(),
                    },
                });
            }
        }
        for x in self.exchanges.all() {
            out.push(DestinationInfo {
                name: format!("/exchange/{}", x.name()),
                kind: format!("{:?}", x.kind()).to_lowercase(),
                depth: 0,
                consumers: 0,
                bindings: x
                    .bindings()
                    .iter()
                    .map(|b| {
                        let target = match &b.target {
                            exchange::BindTarget::Queue(q) => q.to_string(),
                            exchange::BindTarget::Exchange(e) => format!("/exchange/{e}"),
                        };
                        format!("{} → {target}", b.key)
                    })
                    .collect(),
            });
        }
        if !self.wildcards.is_empty() {
            out.push(DestinationInfo {
                name: "/topic/ (wildcard subscriptions)".into(),
                kind: "patterns".into(),
                depth: 0,
                consumers: self.wildcards.len(),
                bindings: Vec::new(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }
}

impl Destination {
    /// Stops delivering to a subscription.
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        match self {
            Destination::Queue(q) => q.unsubscribe(session, subscription),
            Destination::Topic(t) => t.unsubscribe(session, subscription),
        }
    }
}

/// Whether a message for queue `q` is to be stored: the SEND's
/// `persistent` header when it has one, else the queue's policy.
fn persistent(q: &QueueDestination, headers: &Headers) -> bool {
    match headers.get("persistent") {
        Some("true") => true,
        Some("false") => false,
        _ => q.policy().durable,
    }
}

/// Messages with their counts of failed deliveries.
fn counted(deliveries: Vec<Delivery>) -> Vec<(Arc<Message>, u32)> {
    deliveries
        .into_iter()
        .map(|d| (d.message, d.delivery_count.unwrap_or(0)))
        .collect()
}

/// Queue deliveries grouped by queue, each group in its original order;
/// topic deliveries are left out.
fn by_queue(deliveries: Vec<Delivery>) -> Vec<(ByteString, Vec<Delivery>)> {
    let mut groups: Vec<(ByteString, Vec<Delivery>)> = Vec::new();
    for d in deliveries {
        let Some(tag) = &d.tag else { continue };
        match groups.iter_mut().find(|(q, _)| *q == tag.destination) {
            Some((_, list)) => list.push(d),
            None => groups.push((tag.destination.clone(), vec![d])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_spread_over_every_shard() {
        let mut counts = [0usize; SHARDS];
        for i in 0..1600 {
            counts[shard_index(&format!("/queue/orders.{i}"))] += 1;
        }
        // 100 a shard on average: none empty, none with a quarter of all.
        assert!(counts.iter().all(|&n| n > 40 && n < 400), "{counts:?}");
        assert_eq!(shard_index(""), shard_index(""));
    }
}
