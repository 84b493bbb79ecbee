//! A cluster subscriber's join: its history and the presence snapshot are
//! read from Redis, and the live messages that arrive meanwhile wait.

use std::sync::Arc;

use bytes::Bytes;
use stomp_codec::ByteString;

use crate::broker::Message;
use crate::ids::{SessionId, SubscriptionId};

use super::{Subscriber, TopicDestination, selects};

/// Live messages held at most for one subscriber while its history is
/// read; beyond, the oldest go and its recovery says `gap`.
pub(super) const MAX_PENDING: usize = 10_000;

/// A topic's history as the cluster read it for one subscriber.
#[derive(Debug)]
pub struct Loaded {
    /// The topic's cluster-wide epoch.
    pub epoch: ByteString,
    /// The last position given out.
    pub head: u64,
    /// The oldest position still kept.
    pub oldest: u64,
    /// What to replay, in position order.
    pub messages: Vec<Arc<Message>>,
    /// Whether it connects to what the client had.
    pub complete: bool,
}

impl Subscriber {
    /// Whether `message` was already sent to it as history.
    pub(super) fn replayed(&self, message: &Message) -> bool {
        match (&self.replayed, &message.stream) {
            (Some((epoch, to)), Some(s)) => s.epoch == *epoch && s.position <= *to,
            _ => false,
        }
    }
}

impl TopicDestination {
    /// Ends a cluster subscriber's join: its history (or why there is
    /// none) and the marker, if it asked for history; the presence
    /// snapshot (this node's members and `elsewhere`'s), if it watches;
    /// then the live messages that arrived while Redis was asked (those
    /// the history already had are left out), and from then on it is live.
    pub fn finish_join(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        loaded: Option<Result<Loaded, String>>,
        elsewhere: Option<Vec<String>>,
    ) {
        let mut state = self.lock();
        let here: Vec<String> = state
            .subscribers
            .iter()
            .filter_map(|s| self.member_json(s))
            .collect();
        let Some(subscriber) = state
            .subscribers
            .iter_mut()
            .find(|s| s.session == session && &s.subscription == subscription)
        else {
            return;
        };
        let Some(pending) = subscriber.pending.take() else {
            return;
        };
        if let Some(Ok(loaded)) = &loaded
            && let Some(last) = loaded.messages.last().and_then(|m| m.stream.as_ref())
        {
            subscriber.replayed = Some((last.epoch.clone(), last.position));
        }
        let subscriber = &*subscriber;
        let marker = match loaded {
            None => None,
            Some(Ok(loaded)) => {
                for message in loaded.messages {
                    if selects(&subscriber.selector, &message) {
                        let _ = subscriber
                            .outbox
                            .push_topic(subscriber.delivery(message, true));
                    }
                }
                let overflowed = pending.len() >= MAX_PENDING;
                Some(self.control(
                    &[
                        (
                            "x-recovery",
                            if loaded.complete && !overflowed {
                                "complete"
                            } else {
                                "gap"
                            },
                        ),
                        ("x-stream-epoch", &loaded.epoch),
                        ("x-stream-position", &loaded.head.to_string()),
                        ("x-history-oldest", &loaded.oldest.to_string()),
                    ],
                    Bytes::new(),
                ))
            }
            Some(Err(why)) => Some(self.control(
                &[
                    ("x-recovery", "gap"),
                    ("x-error", "cluster-unavailable"),
                    ("message", &why),
                ],
                Bytes::new(),
            )),
        };
        if let Some(marker) = marker {
            self.push_control(subscriber, marker);
        }
        if let Some(elsewhere) = elsewhere {
            let members: Vec<String> = here.into_iter().chain(elsewhere).collect();
            self.push_control(subscriber, self.presence_snapshot(&members));
        }
        for message in pending {
            if !subscriber.replayed(&message) {
                let _ = subscriber
                    .outbox
                    .push_topic(subscriber.delivery(message, false));
            }
        }
    }
}
