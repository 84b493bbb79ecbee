//! What becomes of deliveries after they are sent: settled, requeued,
//! rejected, put back, or moved to dead-letter queues; and the queues'
//! timers (delays and expiry).

use std::sync::Arc;

use stomp_codec::ByteString;

use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::store::Completion;

use super::{Broker, Delivery, Destination, Message, dead_letter};

impl Broker {
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
