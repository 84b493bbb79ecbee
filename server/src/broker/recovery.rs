//! A broker rebuilt from its journal at start: queues, their deduplication
//! windows, durable topics' history and subscriptions.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use stomp_codec::ByteString;

use crate::store::{Journal, Recovered, RecoveredMessage};
use crate::terms::Terms;

use super::{
    Broker, Destination, DestinationKind, MESSAGE_OVERHEAD, Memory, Message, MessageId,
    QueuePolicy, StreamPosition, TopicPolicy, message_size,
};

impl Broker {
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
}
