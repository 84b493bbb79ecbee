//! The one way frames reach a connection: a per-session queue that the
//! broker fills synchronously and the session's driver drains in batches.
//!
//! It is bounded by accounting rather than by blocking the producer: queue
//! deliveries are bounded by the subscription's prefetch credit (the
//! queue keeps the rest), the session's own replies by the session reading
//! no further input while its writes are blocked, and topic deliveries by
//! `max_topic_backlog` with the configured [`SlowConsumerPolicy`].

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Deserialize;
use stomp_codec::Frame;
use tokio::sync::Notify;

use crate::broker::Delivery;
use crate::ids::SubscriptionId;

/// Queue capacity given back once drained: what a few frames grow it to.
const LIGHT_QUEUE: usize = 8;

/// What happens when a topic subscriber falls `max_topic_backlog` messages behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum SlowConsumerPolicy {
    /// Send the connection an ERROR and close it (the default: nothing is
    /// silently lost, and the client knows to reconnect and recover).
    Disconnect,
    /// Drop the messages that do not fit, counting them in the log.
    DropNew,
}

/// Something the driver will write to the connection.
#[derive(Debug)]
pub enum Outbound {
    /// A frame built by the session (CONNECTED, RECEIPT, ERROR).
    Frame(Frame),
    /// A message for one of the session's subscriptions.
    Delivery(Delivery),
}

#[derive(Debug)]
struct State {
    items: VecDeque<Outbound>,
    topic_backlog: usize,
    closed: bool,
    slow: bool,
    dropped: u64,
}

/// A session's outgoing queue. See the module documentation.
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    // A pending wake-up is a flag, not a count: `notify_one` keeps one
    // permit when nobody waits. (A channel did the same job at 500 bytes
    // a connection.)
    wake: Notify,
    max_topic_backlog: usize,
    policy: SlowConsumerPolicy,
}

/// What a push did with a topic delivery.
#[derive(Debug, PartialEq, Eq)]
pub enum TopicPush {
    /// Queued for writing.
    Queued,
    /// Dropped under [`SlowConsumerPolicy::DropNew`] or because the session is closing.
    Dropped,
}

impl Outbox {
    /// A new, empty outbox.
    pub fn new(max_topic_backlog: usize, policy: SlowConsumerPolicy) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                topic_backlog: 0,
                closed: false,
                slow: false,
                dropped: 0,
            }),
            wake: Notify::new(),
            max_topic_backlog,
            policy,
        }
    }

    /// A future that resolves once something was pushed since the last
    /// time one resolved. Cancel-safe (a wake-up taken by a dropped one is
    /// kept); for the one driver that drains this outbox, which keeps one
    /// alive across its turns rather than making one a turn.
    pub fn ready(&self) -> tokio::sync::futures::Notified<'_> {
        self.wake.notified()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wake(&self) {
        self.wake.notify_one();
    }

    /// Wakes the driver for an item just pushed onto `was_empty` items.
    /// Only the first item of a batch needs it: the driver drains the
    /// outbox whole on the turn the wake-up starts (or wakes itself when it
    /// stops with items left), so an item pushed behind others is written
    /// with them. One wake per delivery was 14% of a fan-out's CPU (the
    /// notifier's state bounced between the two cores).
    fn wake_if(&self, was_empty: bool) {
        if was_empty {
            self.wake();
        }
    }

    /// Makes [`ready`](Self::ready) resolve at once: for a driver that
    /// stopped draining with items left.
    pub fn notify(&self) {
        self.wake();
    }

    /// Queues a frame of the session's own.
    pub fn push_frame(&self, frame: Frame) {
        let mut state = self.lock();
        if !state.closed {
            let was_empty = state.items.is_empty();
            state.items.push_back(Outbound::Frame(frame));
            drop(state);
            self.wake_if(was_empty);
        }
    }

    /// Queues a queue delivery; gives it back if the session is closing, so
    /// the queue keeps the message.
    pub fn push_queue(&self, delivery: Delivery) -> Result<(), Delivery> {
        let mut state = self.lock();
        if state.closed {
            return Err(delivery);
        }
        let was_empty = state.items.is_empty();
        state.items.push_back(Outbound::Delivery(delivery));
        drop(state);
        self.wake_if(was_empty);
        Ok(())
    }

    /// Queues a topic delivery, applying the slow-consumer policy.
    pub fn push_topic(&self, delivery: Delivery) -> TopicPush {
        let mut state = self.lock();
        if state.closed || state.slow {
            state.dropped += 1;
            return TopicPush::Dropped;
        }
        if state.topic_backlog >= self.max_topic_backlog {
            state.dropped += 1;
            if self.policy == SlowConsumerPolicy::Disconnect {
                state.slow = true;
                drop(state);
                self.wake();
            }
            return TopicPush::Dropped;
        }
        state.topic_backlog += 1;
        let was_empty = state.items.is_empty();
        state.items.push_back(Outbound::Delivery(delivery));
        drop(state);
        self.wake_if(was_empty);
        TopicPush::Queued
    }

    /// Moves everything queued into `batch`, in order.
    pub fn drain_into(&self, batch: &mut Vec<Outbound>) {
        self.drain_up_to(batch, usize::MAX);
    }

    /// Moves queued items into `batch`, in order, until about `max_bytes`
    /// of messages are taken (always at least one item); returns whether
    /// more are left. Writing a backlog in slices keeps the write buffer
    /// bounded: a thousand 1 MiB messages are not encoded into one 1 GiB buffer.
    pub fn drain_up_to(&self, batch: &mut Vec<Outbound>, max_bytes: usize) -> bool {
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = 0usize;
        while let Some(item) = state.items.front() {
            let size = match item {
                Outbound::Delivery(d) => d.message.body.len() + 256,
                Outbound::Frame(f) => f.body.len() + 256,
            };
            if taken > 0 && taken + size > max_bytes {
                break;
            }
            taken += size;
            let Some(item) = state.items.pop_front() else {
                break;
            };
            if let Outbound::Delivery(d) = &item
                && d.tag.is_none()
            {
                state.topic_backlog = state.topic_backlog.saturating_sub(1);
            }
            batch.push(item);
        }
        if state.items.is_empty() && state.items.capacity() <= LIGHT_QUEUE {
            // Idle connections hold no queue memory (400 bytes each); a
            // busy one, whose queue grew past this, keeps its capacity.
            state.items = VecDeque::new();
        }
        !state.items.is_empty()
    }

    /// Takes back every delivery still queued for one subscription (it has
    /// just been cancelled), so queue messages can return to their queue
    /// instead of being written for a subscription that no longer exists.
    pub fn take_subscription(&self, subscription: &SubscriptionId) -> Vec<Delivery> {
        let mut state = self.lock();
        let state = &mut *state;
        let mut taken = Vec::new();
        let mut kept = VecDeque::with_capacity(state.items.len());
        for item in state.items.drain(..) {
            match item {
                Outbound::Delivery(d) if d.subscription == *subscription => {
                    if d.tag.is_none() {
                        state.topic_backlog = state.topic_backlog.saturating_sub(1);
                    }
                    taken.push(d);
                }
                other => kept.push_back(other),
            }
        }
        state.items = kept;
        taken
    }

    /// Whether a topic subscriber overflowed under the disconnect policy.
    pub fn is_slow(&self) -> bool {
        self.lock().slow
    }

    /// The number of topic messages dropped for this session so far.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Refuses further pushes and returns what was still queued, so queue
    /// deliveries can go back to their queues.
    pub fn close(&self) -> Vec<Outbound> {
        let mut state = self.lock();
        state.closed = true;
        state.topic_backlog = 0;
        state.items.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stomp_codec::Command;

    #[test]
    fn a_backlog_is_drained_in_slices_of_bounded_size() {
        let outbox = Outbox::new(100, SlowConsumerPolicy::Disconnect);
        for _ in 0..10 {
            outbox.push_frame(Frame::new(Command::Receipt).body(vec![0u8; 1000]));
        }
        let mut batch = Vec::new();
        assert!(outbox.drain_up_to(&mut batch, 3000), "more left");
        assert_eq!(batch.len(), 2, "1256 bytes each: two fit in 3000");
        batch.clear();
        assert!(outbox.drain_up_to(&mut batch, 10), "one item at least");
        assert_eq!(batch.len(), 1);
        batch.clear();
        assert!(!outbox.drain_up_to(&mut batch, usize::MAX));
        assert_eq!(batch.len(), 7);
    }

    #[test]
    fn the_driver_is_woken_once_a_batch_and_again_after_it_drains() {
        use futures_util::FutureExt;
        let outbox = Outbox::new(100, SlowConsumerPolicy::Disconnect);
        let mut ready = std::pin::pin!(outbox.ready());
        assert!(ready.as_mut().now_or_never().is_none(), "nothing pushed");
        for _ in 0..5 {
            outbox.push_frame(Frame::new(Command::Receipt));
        }
        assert!(
            ready.as_mut().now_or_never().is_some(),
            "woken by the first"
        );
        let mut again = std::pin::pin!(outbox.ready());
        assert!(
            again.as_mut().now_or_never().is_none(),
            "one wake-up for the five"
        );
        let mut batch = Vec::new();
        outbox.drain_into(&mut batch);
        assert_eq!(batch.len(), 5, "the driver takes all it was woken for");
        outbox.push_frame(Frame::new(Command::Receipt));
        assert!(
            again.as_mut().now_or_never().is_some(),
            "the next push onto a drained outbox wakes it again"
        );
        // A driver that stops with items left wakes itself.
        outbox.push_frame(Frame::new(Command::Receipt));
        let mut third = std::pin::pin!(outbox.ready());
        assert!(third.as_mut().now_or_never().is_none());
        outbox.notify();
        assert!(third.as_mut().now_or_never().is_some());
    }
}
