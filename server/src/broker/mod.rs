//! The broker core: destinations and the routing of messages to them.
//!
//! Plain synchronous code, no sockets and no tasks: sessions call it, and
//! it pushes deliveries into the subscribers' [`Outbox`]es. Destinations
//! live in a sharded map, and each destination has its own lock, so
//! traffic to different rooms does not contend.

mod destination;
mod message;
mod queue;
mod topic;

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use destination::{DestinationError, DestinationKind};
pub use message::{AckMode, Delivery, Message, MessageId, Origin};
pub use queue::{ConsumerSpec, QueueDestination};
pub use topic::TopicDestination;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::session::{SessionId, SubscriptionId};

/// A destination, resolved from its name.
#[derive(Debug, Clone)]
pub enum Destination {
    /// A queue.
    Queue(Arc<QueueDestination>),
    /// A topic.
    Topic(Arc<TopicDestination>),
}

const SHARDS: usize = 16;

/// The broker: owns every destination.
#[derive(Debug)]
pub struct Broker {
    shards: Vec<Mutex<HashMap<String, Destination>>>,
    hasher: RandomState,
    next_message: AtomicU64,
    next_session: AtomicU64,
}

impl Default for Broker {
    fn default() -> Broker {
        Broker::new()
    }
}

impl Broker {
    /// An empty broker.
    pub fn new() -> Broker {
        Broker {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            next_message: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
        }
    }

    /// A fresh session id.
    pub fn new_session_id(&self) -> SessionId {
        SessionId(self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    /// The destination of this name, created on first use.
    pub fn destination(&self, name: &str) -> Result<Destination, DestinationError> {
        let kind = DestinationKind::of(name)?;
        let shard = &self.shards[(self.hasher.hash_one(name) as usize) % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = map.get(name) {
            return Ok(d.clone());
        }
        let d = match kind {
            DestinationKind::Queue => Destination::Queue(QueueDestination::new(name.to_string())),
            DestinationKind::Topic => Destination::Topic(TopicDestination::new(name.to_string())),
        };
        map.insert(name.to_string(), d.clone());
        Ok(d)
    }

    /// Accepts a message for `destination`: queued, or fanned out.
    pub fn send(
        &self,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
    ) -> Result<MessageId, DestinationError> {
        let target = self.destination(&destination)?;
        let id = MessageId::new(self.next_message.fetch_add(1, Ordering::Relaxed));
        let message = Arc::new(Message {
            id: id.clone(),
            destination,
            headers,
            body,
        });
        match target {
            Destination::Queue(q) => q.enqueue(message),
            Destination::Topic(t) => {
                let dropped = t.publish(message);
                if dropped > 0 {
                    tracing::debug!(
                        destination = t.name(),
                        dropped,
                        "slow subscribers missed a message"
                    );
                }
            }
        }
        Ok(id)
    }

    /// Starts delivering `destination`'s messages to a subscription.
    pub fn subscribe(
        &self,
        destination: &str,
        spec: ConsumerSpec,
    ) -> Result<Destination, DestinationError> {
        let target = self.destination(destination)?;
        match &target {
            Destination::Queue(q) => q.subscribe(spec),
            Destination::Topic(t) => {
                t.subscribe(spec.session, spec.subscription, spec.ack, spec.outbox)
            }
        }
        Ok(target)
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
