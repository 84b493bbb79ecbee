//! A topic's durable subscriptions: cursors in its stream, fed what they
//! have credit for, moved on as they settle.

use std::time::Instant;

use stomp_codec::ByteString;

use crate::ids::{DeliveryTag, SessionId, SubscriptionId};
use crate::store::Completion;

use super::{Kept, State, TopicDestination};

impl State {
    /// Feeds every connected durable subscription what it has credit for.
    pub(super) fn dispatch_durables(&mut self) {
        if self.durables.is_empty() {
            return;
        }
        // Split borrow: the lookup reads `kept` while subscriptions change.
        let kept = &self.kept;
        let find = |position: u64| {
            let pos = |k: &Kept| k.message.stream.as_ref().map_or(0, |s| s.position);
            let index = kept.binary_search_by_key(&position, pos).ok()?;
            kept.get(index).map(|k| k.message.clone())
        };
        for d in self.durables.values_mut() {
            d.dispatch(find);
        }
    }
}

impl TopicDestination {
    /// Settles deliveries of a durable subscription (ACK, or written in auto
    /// mode): its cursor moves over them, and it is sent more. The
    /// completion is done when the cursor's record is on disk.
    pub fn settle(
        &self,
        session: SessionId,
        subscription: &SubscriptionId,
        tags: &[DeliveryTag],
    ) -> Completion {
        let mut state = self.lock();
        let Some((key, d)) = state
            .durables
            .iter_mut()
            .find(|(_, d)| d.is_held_by(session, subscription))
        else {
            return Completion::DONE;
        };
        let moved = d.settle(tags.iter().map(|t| t.message));
        let mut completion = Completion::DONE;
        if let (Some(position), Some(journal)) = (moved, &self.journal) {
            completion = journal.cursor(&self.name, key, position);
        }
        self.trim(&mut state, Instant::now());
        state.dispatch_durables();
        completion
    }

    /// Gives a durable subscription credit back for deliveries it will not
    /// settle now (NACK); they come again when it is next subscribed.
    pub fn release(&self, session: SessionId, subscription: &SubscriptionId, count: usize) {
        let mut state = self.lock();
        if let Some(d) = state
            .durables
            .values_mut()
            .find(|d| d.is_held_by(session, subscription))
        {
            d.release(count);
        }
        state.dispatch_durables();
    }

    /// Deletes the durable subscription `key`; whatever only it still
    /// needed is let go. Returns whether it existed.
    pub fn forget_durable(&self, key: &str) -> bool {
        let mut state = self.lock();
        if state.durables.remove(key).is_none() {
            return false;
        }
        if let Some(journal) = &self.journal {
            let _ = journal.cursor_gone(&self.name, key);
        }
        self.trim(&mut state, Instant::now());
        tracing::info!(topic = %self.name, "durable subscription deleted");
        true
    }

    /// The keys of this topic's durable subscriptions.
    pub fn durable_keys(&self) -> Vec<ByteString> {
        self.lock().durables.keys().cloned().collect()
    }
}
