//! Durable topic subscriptions: a read marker in a topic's stream.
//!
//! A durable subscription is a cursor, not a copy of the messages (the
//! rumqttd model): the topic keeps its stream from the oldest cursor on,
//! and each subscription remembers the last position it has settled.
//! While its client is connected it is fed from the stream with prefetch
//! credit, like a queue consumer; while it is away, messages accumulate in
//! the stream and are delivered, in order, when it subscribes again.
//! Cursor moves are journaled, so subscriptions survive restarts.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::message::{AckMode, Delivery, Message};
use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::outbox::Outbox;

/// The connected consumer of a durable subscription.
#[derive(Debug)]
pub(super) struct Active {
    pub(super) session: SessionId,
    pub(super) subscription: SubscriptionId,
    ack: AckMode,
    outbox: Arc<Outbox>,
    prefetch: usize,
    in_flight: usize,
}

/// One durable subscription of a topic.
#[derive(Debug)]
pub(super) struct DurableSub {
    /// Every position up to this one is settled.
    pub(super) cursor: u64,
    /// Settled positions beyond the cursor (individual acks out of order).
    settled: BTreeSet<u64>,
    /// The next position to deliver.
    next: u64,
    /// Positions up to this one may have been delivered before: they go
    /// out marked redelivered.
    delivered: u64,
    pub(super) active: Option<Active>,
}

impl DurableSub {
    /// A subscription that starts after `cursor`; positions up to
    /// `delivered` count as delivered before.
    pub(super) fn new(cursor: u64, delivered: u64) -> DurableSub {
        DurableSub {
            cursor,
            settled: BTreeSet::new(),
            next: cursor + 1,
            delivered,
            active: None,
        }
    }

    /// Whether `session`'s `subscription` is this one's consumer.
    pub(super) fn is_held_by(&self, session: SessionId, subscription: &SubscriptionId) -> bool {
        self.active
            .as_ref()
            .is_some_and(|a| a.session == session && &a.subscription == subscription)
    }

    /// Connects a consumer: delivery resumes after the cursor, so whatever
    /// was delivered and not settled comes again.
    pub(super) fn activate(
        &mut self,
        session: SessionId,
        subscription: SubscriptionId,
        ack: AckMode,
        outbox: Arc<Outbox>,
        prefetch: usize,
    ) {
        self.settled.clear();
        self.next = self.cursor + 1;
        self.active = Some(Active {
            session,
            subscription,
            ack,
            outbox,
            prefetch: prefetch.max(1),
            in_flight: 0,
        });
    }

    /// The consumer left; messages accumulate until the next one.
    pub(super) fn deactivate(&mut self) {
        self.active = None;
        self.settled.clear();
        self.next = self.cursor + 1;
    }

    /// Hands the consumer what it has credit for, taking each message by
    /// position from the topic's stream with `find`.
    pub(super) fn dispatch(&mut self, find: impl Fn(u64) -> Option<Arc<Message>>) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        while active.in_flight < active.prefetch {
            let Some(message) = find(self.next) else {
                return;
            };
            let delivery = Delivery {
                subscription: active.subscription.clone(),
                redelivered: self.next <= self.delivered,
                ack: active.ack,
                tag: Some(DeliveryTag {
                    destination: message.destination.clone(),
                    message: self.next,
                    durable: true,
                }),
                message,
                history: false,
                control: false,
                delivery_count: None,
                ack_timeout_ms: 0,
                header_block: None,
            };
            if active.outbox.push_queue(delivery).is_err() {
                // Closing: it unsubscribes, and delivery resumes from the cursor next time.
                active.in_flight = active.prefetch;
                return;
            }
            active.in_flight += 1;
            self.delivered = self.delivered.max(self.next);
            self.next += 1;
        }
    }

    /// Settles delivered positions: the consumer gets the credit back, and
    /// the cursor moves over every position settled without a hole.
    /// Returns the new cursor when it moved.
    pub(super) fn settle(&mut self, positions: impl Iterator<Item = u64>) -> Option<u64> {
        let before = self.cursor;
        let mut count = 0;
        for p in positions {
            count += 1;
            if p > self.cursor {
                self.settled.insert(p);
            }
        }
        if let Some(active) = self.active.as_mut() {
            active.in_flight = active.in_flight.saturating_sub(count);
        }
        while self.settled.remove(&(self.cursor + 1)) {
            self.cursor += 1;
        }
        (self.cursor != before).then_some(self.cursor)
    }

    /// Gives credit back for deliveries that will not be settled now
    /// (NACK): they come again when the subscription is next activated.
    pub(super) fn release(&mut self, count: usize) {
        if let Some(active) = self.active.as_mut() {
            active.in_flight = active.in_flight.saturating_sub(count);
        }
    }

    /// Moves the cursor up to `position` when the stream no longer holds
    /// what lies before it; returns how many positions were skipped.
    pub(super) fn skip_to(&mut self, position: u64) -> u64 {
        if self.cursor >= position {
            return 0;
        }
        let skipped = position - self.cursor;
        self.cursor = position;
        self.settled.retain(|p| *p > position);
        self.next = self.next.max(position + 1);
        skipped
    }
}
