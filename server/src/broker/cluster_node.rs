//! How the broker works as one node of a cluster: topics and shared queues
//! go through Redis (see [`crate::cluster`]), and what it brings back is
//! delivered here.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::ids::{SessionId, SubscriptionId};
use crate::store::Completion;
use crate::terms::Terms;

use super::{
    Broker, ConsumerSpec, Delivery, Destination, HeaderBlock, Message, MessageId, QueueDestination,
    Recovery, StreamPosition, SubscribeError, TopicDestination, message_size, queue_policy_for,
    topic,
};

impl Broker {
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
                header_block: block.clone(),
                ..Delivery::topic(s.subscription.clone(), message.clone(), s.ack)
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
    pub(super) fn join_from_cluster(
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

    /// A durable topic subscription in cluster mode: a queue of its own
    /// in Redis, fed by the topic's publish script while the subscription
    /// exists, consumed like any cluster queue (so it survives its node,
    /// and its subscriber may come back on any node). The subscriber sees
    /// the topic as the MESSAGE's destination.
    pub(super) fn subscribe_durable_in_cluster(
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
}
