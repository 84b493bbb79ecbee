//! The broker core: destinations and the routing of messages to them.
//!
//! Plain synchronous code, no sockets and no tasks: sessions call it, and
//! it pushes deliveries into the subscribers' [`Outbox`](crate::outbox::Outbox)es. Destinations
//! live in a sharded map, and each destination has its own lock, so
//! traffic to different rooms does not contend.

pub mod clock;
mod cluster_node;
pub mod dead_letter;
mod dedup;
mod destination;
mod durable_sub;
pub mod exchange;
pub mod exchanges;
mod maintenance;
pub mod memory;
mod message;
mod policy;
mod queue;
mod recovery;
pub mod selector;
mod sending;
mod settling;
mod stats;
pub mod sublist;
mod subscribing;
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
pub use maintenance::{DeleteError, DestinationInfo};
pub use memory::{Charge, Memory};
pub use message::{
    AckMode, Delivery, HeaderBlock, MESSAGE_OVERHEAD, Message, MessageId, StreamPosition,
    frame_size, message_size,
};
pub use policy::{Overflow, QueuePolicy, TopicPolicy, policy_for, queue_policy_for};
pub use queue::{Compacted, ConsumerSpec, QueueDestination, QueueEnv, QueueFull};
pub use selector::{Selector, SelectorError};
pub use stats::Stats;
pub use subscribing::SubscribeError;
pub use topic::{MAX_STREAM, Presence, Recovery, TopicDestination, TopicSubscription};

use stomp_codec::ByteString;

use crate::ids::{SessionId, SubscriptionId};
use crate::store::{Completion, Journal, JournalError};
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

impl Destination {
    /// Stops delivering to a subscription.
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        match self {
            Destination::Queue(q) => q.unsubscribe(session, subscription),
            Destination::Topic(t) => t.unsubscribe(session, subscription),
        }
    }
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
