//! Subscriptions: to queues and topics, to wildcard patterns, to exchanges
//! (through a private queue each), and durable ones.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stomp_codec::ByteString;

use crate::ids::{SessionId, SubscriptionId};
use crate::store::Completion;

use super::{
    Broker, ConsumerSpec, Destination, Exchange, PRIVATE_PREFIX, QueueDestination, QueueEnv,
    QueuePolicy, TopicOptions, TopicSubscription, exchange, queue_policy_for, wildcard,
};

impl Broker {
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

    /// Starts delivering what is published to every topic `pattern`
    /// matches (`a.*`, `a.#`, `a.>`: see [`sublist`](super::sublist)) to a subscription.
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
}

/// Why a SUBSCRIBE was refused.
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
