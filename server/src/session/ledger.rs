//! The deliveries a client still has to acknowledge, and the credit owed
//! to queues for what was written. Ownership of a queue message moves
//! through here: outbox → (written) ledger → dropped on ACK, or back to
//! its queue on NACK, unsubscribe or close.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::driver::Outgoing;
use super::{SessionId, SubscriptionId};
use crate::broker::{AckMode, Delivery, Message, Origin, QueueDestination};
use crate::protocol::AckTarget;

#[derive(Debug, Default)]
pub(super) struct AckLedger {
    /// By ack id; ids grow, so the map is in delivery order, which
    /// cumulative `client` acks rely on.
    unacked: BTreeMap<u64, Delivery>,
    next_id: u64,
    /// Auto-ack queue deliveries written since the last settle.
    written: Vec<(Arc<QueueDestination>, SubscriptionId)>,
}

impl AckLedger {
    /// The MESSAGE to write for a delivery; remembers the delivery when the
    /// client has to acknowledge it.
    pub(super) fn render(&mut self, delivery: Delivery) -> Outgoing {
        if delivery.control {
            return Outgoing::Message {
                delivery,
                ack_id: None,
            };
        }
        if !delivery.ack.needs_ack() {
            if let Origin::Queue(queue) = &delivery.origin {
                self.written
                    .push((queue.clone(), delivery.subscription.clone()));
            }
            return Outgoing::Message {
                delivery,
                ack_id: None,
            };
        }
        self.next_id += 1;
        // The clone is reference counts only: the message is shared.
        self.unacked.insert(self.next_id, delivery.clone());
        Outgoing::Message {
            delivery,
            ack_id: Some(self.next_id),
        }
    }

    /// Returns queue credit for auto-ack deliveries once they are written.
    pub(super) fn settle_written(&mut self, session: SessionId) {
        for (queue, subscription) in self.written.drain(..) {
            queue.settle(session, &subscription, 1);
        }
    }

    /// The ack id of the delivery an ACK/NACK names, if it awaits one.
    pub(super) fn find(&self, target: &AckTarget) -> Option<u64> {
        match target {
            AckTarget::Id(id) => id
                .parse::<u64>()
                .ok()
                .filter(|n| self.unacked.contains_key(n)),
            AckTarget::MessageId {
                message_id,
                subscription,
            } => self
                .unacked
                .iter()
                .find(|(_, d)| {
                    d.message.id.as_str() == &**message_id
                        && subscription.as_ref().is_none_or(|s| *s == d.subscription)
                })
                .map(|(n, _)| *n),
        }
    }

    /// Removes the delivery `ack_id` and, in `client` mode, every earlier
    /// delivery of the same subscription.
    pub(super) fn take(&mut self, ack_id: u64) -> Vec<Delivery> {
        let Some(named) = self.unacked.get(&ack_id) else {
            return Vec::new();
        };
        if named.ack != AckMode::Client {
            return self.unacked.remove(&ack_id).into_iter().collect();
        }
        let subscription = named.subscription.clone();
        self.take_where(|n, d| n <= ack_id && d.subscription == subscription)
    }

    /// Removes every delivery that matches.
    pub(super) fn take_where(&mut self, matches: impl Fn(u64, &Delivery) -> bool) -> Vec<Delivery> {
        let ids: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(n, d)| matches(**n, d))
            .map(|(n, _)| *n)
            .collect();
        ids.iter().filter_map(|n| self.unacked.remove(n)).collect()
    }
}

/// Settles acknowledged deliveries: their queues may send more.
pub(super) fn settle(session: SessionId, deliveries: &[Delivery]) {
    for (queue, subscription, messages) in by_queue(deliveries.iter().cloned()) {
        queue.settle(session, &subscription, messages.len());
    }
}

/// Puts deliveries back on their queues, marked redelivered; topic
/// deliveries have nowhere to go back to and are dropped.
pub(super) fn requeue(session: SessionId, deliveries: Vec<Delivery>) {
    for (queue, subscription, messages) in by_queue(deliveries.into_iter()) {
        queue.requeue(session, &subscription, messages);
    }
}

/// Puts deliveries the client never saw (still in the outbox when the
/// session closed) back on their queues, unmarked.
pub(super) fn return_undelivered(deliveries: Vec<Delivery>) {
    let mut groups: Vec<(Arc<QueueDestination>, Vec<Delivery>)> = Vec::new();
    for d in deliveries {
        let Origin::Queue(q) = &d.origin else {
            continue;
        };
        let q = q.clone();
        match groups.iter_mut().find(|(known, _)| Arc::ptr_eq(known, &q)) {
            Some((_, list)) => list.push(d),
            None => groups.push((q, vec![d])),
        }
    }
    for (queue, list) in groups {
        queue.return_undelivered(list);
    }
}

type QueueGroup = (Arc<QueueDestination>, SubscriptionId, Vec<Arc<Message>>);

/// Queue deliveries grouped by queue and subscription, in order.
fn by_queue(deliveries: impl Iterator<Item = Delivery>) -> Vec<QueueGroup> {
    let mut groups: Vec<QueueGroup> = Vec::new();
    for d in deliveries {
        let Origin::Queue(q) = &d.origin else {
            continue;
        };
        match groups
            .iter_mut()
            .find(|(known, sub, _)| Arc::ptr_eq(known, q) && *sub == d.subscription)
        {
            Some((_, _, list)) => list.push(d.message),
            None => groups.push((q.clone(), d.subscription.clone(), vec![d.message])),
        }
    }
    groups
}
