//! `/topic/NAME`: every current subscriber gets a copy.

use std::sync::{Arc, Mutex};

use super::message::{AckMode, Delivery, Message, Origin};
use crate::outbox::{Outbox, TopicPush};
use crate::session::{SessionId, SubscriptionId};

#[derive(Debug)]
struct Subscriber {
    session: SessionId,
    subscription: SubscriptionId,
    ack: AckMode,
    outbox: Arc<Outbox>,
}

/// One topic. Publishing holds its lock while pushing into subscribers'
/// outboxes, which never blocks (slow subscribers are handled by the
/// outbox's policy), so a slow socket cannot stall a fan-out.
#[derive(Debug)]
pub struct TopicDestination {
    name: String,
    subscribers: Mutex<Vec<Subscriber>>,
}

impl TopicDestination {
    pub(crate) fn new(name: String) -> Arc<TopicDestination> {
        Arc::new(TopicDestination {
            name,
            subscribers: Mutex::new(Vec::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Subscriber>> {
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The topic's destination name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a subscriber; it receives messages published from now on.
    pub fn subscribe(
        &self,
        session: SessionId,
        subscription: SubscriptionId,
        ack: AckMode,
        outbox: Arc<Outbox>,
    ) {
        self.lock().push(Subscriber {
            session,
            subscription,
            ack,
            outbox,
        });
    }

    /// Removes a subscriber.
    pub fn unsubscribe(&self, session: SessionId, subscription: &SubscriptionId) {
        self.lock()
            .retain(|s| !(s.session == session && &s.subscription == subscription));
    }

    /// Sends a copy to every subscriber; returns how many were dropped by
    /// slow-consumer policy.
    pub fn publish(&self, message: Arc<Message>) -> usize {
        let subscribers = self.lock();
        let mut dropped = 0;
        for s in subscribers.iter() {
            let delivery = Delivery {
                subscription: s.subscription.clone(),
                message: message.clone(),
                redelivered: false,
                ack: s.ack,
                origin: Origin::Topic,
            };
            if s.outbox.push_topic(delivery) == TopicPush::Dropped {
                dropped += 1;
            }
        }
        dropped
    }

    /// The number of current subscribers.
    pub fn subscriber_count(&self) -> usize {
        self.lock().len()
    }
}
