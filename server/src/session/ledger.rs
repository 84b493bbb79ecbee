//! The deliveries a client still has to acknowledge, and the auto-ack
//! deliveries written since the last settle. Ownership of a queue message
//! moves through here: outbox → (written) ledger → settled through the
//! broker on ACK, or back to its queue on NACK, unsubscribe or close. The
//! ledger names queue messages by [`DeliveryTag`], never by pointer.

use std::collections::BTreeMap;

use super::driver::Outgoing;
use super::{SessionId, SubscriptionId};
use crate::broker::{AckMode, Broker, Delivery};
use crate::ids::DeliveryTag;
use crate::protocol::AckTarget;
use crate::store::Completion;

#[derive(Debug, Default)]
pub(super) struct AckLedger {
    /// By ack id; ids grow, so the map is in delivery order, which
    /// cumulative `client` acks rely on.
    unacked: BTreeMap<u64, Delivery>,
    next_id: u64,
    /// Auto-ack queue deliveries written since the last settle, in order,
    /// and which subscription each run of them is for (runs are long: a
    /// subscription's deliveries come in batches).
    written: Vec<DeliveryTag>,
    written_runs: Vec<(SubscriptionId, usize)>,
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
            if let Some(tag) = &delivery.tag {
                self.written.push(tag.clone());
                match self.written_runs.last_mut() {
                    Some((sub, n)) if *sub == delivery.subscription => *n += 1,
                    _ => self.written_runs.push((delivery.subscription.clone(), 1)),
                }
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

    /// Settles auto-ack deliveries once they are written: their queues
    /// get the credit back, and durable ones are recorded as done.
    pub(super) fn settle_written(&mut self, broker: &Broker, session: SessionId) {
        if self.written.is_empty() {
            return;
        }
        let mut start = 0;
        for (subscription, n) in self.written_runs.drain(..) {
            let _ = broker.settle(session, &subscription, &self.written[start..start + n]);
            start += n;
        }
        // The buffers are kept for the next batch.
        self.written.clear();
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

/// Settles acknowledged deliveries (of one subscription or several).
pub(super) fn settle(broker: &Broker, session: SessionId, deliveries: &[Delivery]) -> Completion {
    let mut completion = Completion::DONE;
    for (subscription, list) in by_subscription(deliveries.iter()) {
        let tags: Vec<DeliveryTag> = list.iter().filter_map(|d| d.tag.clone()).collect();
        completion = completion.and(broker.settle(session, &subscription, &tags));
    }
    completion
}

/// Puts deliveries back on their queues, marked redelivered; topic
/// deliveries have nowhere to go back to and are dropped.
pub(super) fn requeue(broker: &Broker, session: SessionId, deliveries: Vec<Delivery>) {
    for (subscription, list) in by_subscription(deliveries.iter()) {
        let list = list.into_iter().cloned().collect();
        broker.requeue(session, &subscription, list);
    }
}

/// Deliveries grouped by subscription, in order.
fn by_subscription<'a>(
    deliveries: impl Iterator<Item = &'a Delivery>,
) -> Vec<(SubscriptionId, Vec<&'a Delivery>)> {
    let mut groups: Vec<(SubscriptionId, Vec<&Delivery>)> = Vec::new();
    for d in deliveries.filter(|d| d.tag.is_some()) {
        match groups.iter_mut().find(|(s, _)| *s == d.subscription) {
            Some((_, list)) => list.push(d),
            None => groups.push((d.subscription.clone(), vec![d])),
        }
    }
    groups
}
