//! Wildcard topic subscriptions: `SUBSCRIBE /topic/chat.*` receives what
//! is published to `/topic/chat.general` and `/topic/chat.random`. One
//! index for the broker (a [`Sublist`] trie); a topic's publish looks its
//! name up once (cached) and pushes to the matches under the topic's own
//! lock, so a wildcard subscriber sees each topic's messages in order.
//! Wildcard subscriptions are live only: history, presence and durable
//! subscriptions need a single topic.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use super::message::AckMode;
use super::sublist::{PatternError, Sublist};
use crate::ids::{SessionId, SubscriptionId};
use crate::outbox::Outbox;

/// One wildcard subscription.
#[derive(Debug, Clone)]
pub struct WildSub {
    /// The subscribing session.
    pub session: SessionId,
    /// Its id for the subscription.
    pub subscription: SubscriptionId,
    /// How it acknowledges.
    pub ack: AckMode,
    /// Where its deliveries go.
    pub outbox: Arc<Outbox>,
    /// Only messages this selects.
    pub selector: Option<Arc<super::Selector>>,
}

impl PartialEq for WildSub {
    fn eq(&self, other: &WildSub) -> bool {
        self.session == other.session && self.subscription == other.subscription
    }
}

/// The broker's wildcard subscriptions, by pattern.
#[derive(Debug, Default)]
pub struct WildcardIndex {
    list: RwLock<Sublist<WildSub>>,
    /// How many there are: read on every topic publish, so a broker
    /// without wildcard subscriptions takes no lock for them.
    count: AtomicUsize,
}

/// The pattern of a topic destination, when it is one: `/topic/a.*` → `a.*`.
pub fn pattern_of(destination: &str) -> Option<&str> {
    destination
        .strip_prefix("/topic/")
        .filter(|key| super::sublist::is_pattern(key))
}

impl WildcardIndex {
    /// Adds a subscription to the topics `pattern` matches.
    pub fn subscribe(&self, pattern: &str, sub: WildSub) -> Result<(), PatternError> {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.insert(pattern, sub)?;
        self.count.store(list.len(), Ordering::Release);
        Ok(())
    }

    /// Removes a session's subscription under `pattern`.
    pub fn unsubscribe(&self, pattern: &str, session: SessionId, subscription: &SubscriptionId) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        list.remove(pattern, |s| {
            s.session == session && &s.subscription == subscription
        });
        self.count.store(list.len(), Ordering::Release);
    }

    /// The subscriptions whose pattern matches topic `key` (the name after
    /// `/topic/`); `None` when there are no wildcard subscriptions at all.
    pub fn matches(&self, key: &str) -> Option<Arc<[WildSub]>> {
        if self.count.load(Ordering::Acquire) == 0 {
            return None;
        }
        if let Some(hit) = self
            .list
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .cached(key)
        {
            return Some(hit);
        }
        let found = self
            .list
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .matches(key);
        Some(found)
    }

    /// How many wildcard subscriptions exist.
    pub fn len(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
