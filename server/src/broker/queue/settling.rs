//! What becomes of a queue's deliveries: settled (ACK, or written in auto
//! mode), requeued, rejected, put back unseen, or given up on (dead letters).

use std::sync::Arc;

use crate::broker::dead_letter::{DeadLetter, DeathReason};
use crate::broker::{Delivery, Message};
use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::store::Completion;

use super::QueueDestination;
use super::backlog::Pending;

impl QueueDestination {
    /// Settles deliveries of one consumer that were acked or, for auto
    /// mode, written out: the consumer gets its credit back, more messages
    /// may flow, and the durable ones are recorded as done.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> Completion {
        let completion = match &self.env.journal {
            Some(journal) if tags.iter().any(|t| t.durable) => {
                let ids: Vec<u64> = tags
                    .iter()
                    .filter(|t| t.durable)
                    .map(|t| t.message)
                    .collect();
                journal.settle(&self.name, &ids)
            }
            _ => Completion::DONE,
        };
        let mut state = self.lock();
        state.counts.acknowledged += tags.len() as u64;
        state.return_credit(session, subscription, tags.len());
        self.dispatch(&mut state);
        completion
    }

    /// Puts deliveries that failed (NACK, an ack deadline passed, the
    /// consumer went) back at the head of their levels, in order, marked
    /// redelivered with one more failed delivery counted, and returns the
    /// consumer's credit. One that reaches the policy's `max_deliveries`
    /// is dead-lettered instead.
    pub fn requeue(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        messages: Vec<(Arc<Message>, u32)>,
    ) {
        let count = messages.len();
        let durable: Vec<u64> = messages
            .iter()
            .filter(|(m, _)| m.is_durable())
            .map(|(m, _)| m.id.number())
            .collect();
        if let Some(journal) = &self.env.journal {
            journal.returned(&self.name, &durable);
        }
        let mut state = self.lock();
        state.counts.redelivered += count as u64;
        for (message, deliveries) in messages.into_iter().rev() {
            let pending = Pending {
                message,
                deliveries: deliveries.saturating_add(1),
                redelivered: true,
            };
            let limit = self.policy.max_deliveries;
            if limit > 0 && pending.deliveries >= limit {
                self.dead(pending, DeathReason::MaxDeliveries);
            } else {
                state.backlog.push_front(pending);
            }
        }
        state.return_credit(session, subscription, count);
        // Offered to the next consumer first: one that let a message go
        // (or sat on it past its deadline) is the worst one to get it back.
        if let Some(i) = state
            .consumers
            .iter()
            .position(|c| c.session == session && &c.subscription == subscription)
        {
            state.next = (i + 1) % state.consumers.len();
        }
        self.dispatch(&mut state);
    }

    /// Dead-letters deliveries the consumer rejected (`NACK` with
    /// `requeue:false`) and returns its credit.
    pub fn reject(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        messages: Vec<(Arc<Message>, u32)>,
    ) {
        let mut state = self.lock();
        let count = messages.len();
        for (message, deliveries) in messages {
            let pending = Pending {
                message,
                deliveries: deliveries.saturating_add(1),
                redelivered: true,
            };
            self.dead(pending, DeathReason::Rejected);
        }
        state.return_credit(session, subscription, count);
        self.dispatch(&mut state);
    }

    /// Puts back deliveries that never reached their session (it closed
    /// with them still in its outbox). They were never seen, so they keep
    /// their marks.
    pub fn return_undelivered(&self, deliveries: Vec<Delivery>) {
        let mut state = self.lock();
        for d in deliveries.into_iter().rev() {
            state.backlog.push_front(Pending {
                message: d.message,
                deliveries: d.delivery_count.unwrap_or(0),
                redelivered: d.redelivered,
            });
        }
        self.dispatch(&mut state);
    }

    /// Sends a message to this queue's dead-letter destination (by way of
    /// the broker, after the lock is let go).
    pub(super) fn dead(&self, pending: Pending, reason: DeathReason) {
        let i = match reason {
            DeathReason::Rejected => 0,
            DeathReason::Expired => 1,
            DeathReason::MaxDeliveries => 2,
            DeathReason::Overflow => 3,
        };
        self.dead_counts[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.env.dead_letters.push(DeadLetter {
            origin: self.name.clone(),
            message: pending.message,
            reason,
            target: self.dead_letter.clone(),
        });
    }
}
