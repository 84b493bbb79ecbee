//! What a connection may publish now: a queue's room, a topic policy's
//! size limit and rate budget. Checked before a SEND (or a whole COMMIT)
//! takes effect, so that a refused publish changes nothing.

use std::collections::HashMap;
use std::time::Instant;

use crate::broker::{Broker, Destination, MESSAGE_OVERHEAD, QueueFull};
use crate::error::SessionError;

/// Messages admitted before one in the same COMMIT, against one budget.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Batch {
    pub(super) count: usize,
    pub(super) bytes: u64,
}

/// A token bucket: `rate` tokens a second, holding at most `burst`.
#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Refills for the time passed and says how many tokens there are.
    fn available(&mut self, rate: f64, burst: f64, now: Instant) -> f64 {
        let capacity = burst.max(1.0);
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(capacity);
        self.last = now;
        self.tokens
    }
}

/// One connection's publish budgets: a token bucket per topic policy.
#[derive(Debug, Default)]
pub(super) struct PublishLimits {
    buckets: HashMap<String, TokenBucket>,
}

impl PublishLimits {
    /// Checks that a message whose frame is `size` bytes may be published
    /// to `destination` now, after the `batch` admitted before it in the
    /// same COMMIT, without taking anything; returns the destination.
    pub(super) fn admit(
        &mut self,
        broker: &Broker,
        destination: &str,
        size: usize,
        batch: Batch,
    ) -> Result<Destination, SessionError> {
        let target = broker.destination(destination)?;
        let count = batch.count + 1;
        match &target {
            Destination::Queue(queue) => {
                if !queue.has_room(count, batch.bytes + (size + MESSAGE_OVERHEAD) as u64) {
                    let policy = queue.policy();
                    return Err(SessionError::QueueFull(QueueFull {
                        destination: queue.name().to_string(),
                        max_length: policy.max_length,
                        max_length_bytes: policy.max_length_bytes,
                    }));
                }
            }
            Destination::Topic(topic) => {
                let policy = topic.policy();
                if policy.max_message_size > 0 && size > policy.max_message_size {
                    return Err(SessionError::MessageTooLarge {
                        size,
                        limit: policy.max_message_size,
                        policy: policy.pattern.clone(),
                    });
                }
                if policy.publish_rate > 0.0 {
                    let now = Instant::now();
                    let bucket =
                        self.buckets
                            .entry(policy.pattern.clone())
                            .or_insert(TokenBucket {
                                tokens: policy.publish_burst.max(1.0),
                                last: now,
                            });
                    if bucket.available(policy.publish_rate, policy.publish_burst, now)
                        < count as f64
                    {
                        return Err(SessionError::RateLimited {
                            rate: policy.publish_rate,
                            policy: policy.pattern.clone(),
                        });
                    }
                }
            }
        }
        Ok(target)
    }

    /// Spends the rate budget of one message [`admit`](Self::admit)ted to `target`.
    pub(super) fn spend(&mut self, target: &Destination) {
        if let Destination::Topic(topic) = target
            && let Some(bucket) = self.buckets.get_mut(&topic.policy().pattern)
        {
            bucket.tokens -= 1.0;
        }
    }

    /// Checks messages (destination, frame size) as if sent together, so
    /// that a COMMIT applies all of them or none.
    pub(super) fn admit_all<'a>(
        &mut self,
        broker: &Broker,
        messages: impl Iterator<Item = (&'a str, usize)>,
    ) -> Result<(), SessionError> {
        // What is admitted before each message, per budget: a queue's room
        // is its own, a rate budget is shared by the topics of one policy.
        let mut batches: HashMap<String, Batch> = HashMap::new();
        for (destination, size) in messages {
            // Routed through an exchange: its queues' own limits apply as
            // the message reaches them.
            if let Some(exchange) = crate::broker::exchange::parse_destination(destination) {
                let (name, _) = exchange.map_err(|e| SessionError::Exchange(e.to_string()))?;
                broker
                    .exchange(name)
                    .map_err(|e| SessionError::Exchange(e.to_string()))?;
                continue;
            }
            let budget = match broker.destination(destination)? {
                Destination::Topic(t) => t.policy().pattern.clone(),
                Destination::Queue(_) => destination.to_string(),
            };
            let batch = batches.entry(budget).or_default();
            let before = *batch;
            batch.count += 1;
            batch.bytes += (size + MESSAGE_OVERHEAD) as u64;
            self.admit(broker, destination, size, before)?;
        }
        Ok(())
    }
}
