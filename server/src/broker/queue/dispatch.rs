//! Handing waiting messages to consumers: round-robin over those with
//! credit, highest priority first; with selectors, each message to the next
//! consumer that selects it.

use stomp_codec::ByteString;

use crate::broker::dead_letter::DeathReason;
use crate::broker::{Delivery, Message};
use crate::ids::DeliveryTag;

use super::backlog::{Pending, Source};
use super::{Consumer, QueueDestination, State, UNPACK_BATCH};

/// Messages looked at per dispatch for consumers with selectors: a queue
/// whose head nobody's selector takes is not blocked, but the walk past
/// such messages is bounded.
const SELECTOR_SCAN: usize = 4096;

impl Consumer {
    fn can_take(&self, message: &Message) -> bool {
        self.in_flight < self.prefetch
            && self
                .selector
                .as_ref()
                .is_none_or(|s| s.matches(&message.headers))
    }
}

impl QueueDestination {
    /// Hands messages to consumers round-robin while any has credit,
    /// highest priority first. Called with the lock held.
    pub(super) fn dispatch(&self, state: &mut State) {
        if state.consumers.is_empty() {
            return;
        }
        if state.backlog.paged() > 0
            && state.backlog.bytes < self.policy.memory_window_bytes / 2
            && let Some(level) = state.backlog.highest_paged_level()
        {
            // Read ahead before memory runs dry, so consumers keep going.
            self.page_in(state, level);
        }
        if state.backlog.packed() > 0
            && state.backlog.unpacked_bytes() < self.policy.memory_window_bytes / 2
            && let Some(level) = state.backlog.highest_packed_level()
        {
            // Likewise, and so selectors see more than the memory part.
            state
                .backlog
                .unpack(level, UNPACK_BATCH, &self.name, &self.env.memory);
        }
        if state.consumers.iter().any(|c| c.selector.is_some()) {
            self.dispatch_selected(state);
            return;
        }
        let mut now = None;
        loop {
            let n = state.consumers.len();
            let Some(offset) = (0..n).find(|i| {
                let c = &state.consumers[(state.next + i) % n];
                c.in_flight < c.prefetch
            }) else {
                return;
            };
            let Some((level, source)) = state.backlog.next_level() else {
                return;
            };
            match source {
                Source::Memory => {}
                Source::Packed => {
                    let memory = &self.env.memory;
                    state
                        .backlog
                        .unpack(level, UNPACK_BATCH, &self.name, memory);
                    continue;
                }
                Source::Disk => {
                    self.page_in(state, level);
                    continue;
                }
            }
            let Some(pending) = state.backlog.pop_front(level) else {
                return;
            };
            if pending.message.terms.expires_at_ms != 0
                && pending
                    .message
                    .terms
                    .expired(*now.get_or_insert_with(|| self.env.clock.now_ms()))
            {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            let index = (state.next + offset) % n;
            match hand_to(&self.name, &mut state.consumers[index], pending) {
                Ok(()) => {
                    state.next = (index + 1) % n;
                    state.counts.delivered += 1;
                }
                Err(back) => state.backlog.push_front(back),
            }
        }
    }

    /// Dispatch when some consumer has a selector: each message in memory,
    /// in priority and then arrival order, goes to the next consumer (round
    /// robin) whose selector takes it and that has credit; a message nobody
    /// takes stays where it is and the walk goes on past it.
    fn dispatch_selected(&self, state: &mut State) {
        let now = self.env.clock.now_ms();
        loop {
            let State {
                backlog,
                consumers,
                next,
                counts,
                ..
            } = &mut *state;
            if !consumers.iter().any(|c| c.in_flight < c.prefetch) {
                return;
            }
            let n = consumers.len();
            let start = *next;
            let taken = backlog.take_first(SELECTOR_SCAN, |p| {
                p.message.terms.expired(now)
                    || (0..n).any(|i| consumers[(start + i) % n].can_take(&p.message))
            });
            let Some(pending) = taken else {
                return;
            };
            if pending.message.terms.expired(now) {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            let Some(index) = (0..n)
                .map(|i| (start + i) % n)
                .find(|i| consumers[*i].can_take(&pending.message))
            else {
                backlog.push_front(pending);
                return;
            };
            match hand_to(&self.name, &mut consumers[index], pending) {
                Ok(()) => {
                    *next = (index + 1) % n;
                    counts.delivered += 1;
                }
                Err(back) => backlog.push_front(back),
            }
        }
    }
}

/// Pushes a message to a consumer's outbox as its delivery. A session
/// that is closing refuses it: the message comes back, and the consumer
/// is offered nothing more until it unsubscribes.
fn hand_to(queue: &ByteString, consumer: &mut Consumer, pending: Pending) -> Result<(), Pending> {
    // The queue's own name, not the message's destination: a cluster
    // durable subscription's messages show their topic.
    let tag = DeliveryTag {
        destination: queue.clone(),
        message: pending.message.id.number(),
        durable: pending.message.is_durable(),
    };
    let delivery = Delivery {
        subscription: consumer.subscription.clone(),
        message: pending.message,
        redelivered: pending.redelivered,
        ack: consumer.ack,
        tag: Some(tag),
        history: false,
        control: false,
        delivery_count: Some(pending.deliveries),
        ack_timeout_ms: consumer.ack_timeout_ms,
        header_block: None,
    };
    match consumer.outbox.push_queue(delivery) {
        Ok(()) => {
            consumer.in_flight += 1;
            Ok(())
        }
        Err(back) => {
            consumer.in_flight = consumer.prefetch;
            Err(Pending {
                message: back.message,
                deliveries: back.delivery_count.unwrap_or(0),
                redelivered: back.redelivered,
            })
        }
    }
}
