//! The deliveries a client still has to acknowledge, and the auto-ack
//! deliveries written since the last settle. Ownership of a queue message
//! moves through here: outbox → (written) ledger → settled through the
//! broker on ACK, or back to its queue on NACK, unsubscribe or close. The
//! ledger names queue messages by [`DeliveryTag`], never by pointer.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::driver::Outgoing;
use super::in_flight::InFlight;
use super::{SessionId, SubscriptionId};
use crate::broker::{AckMode, Broker, Delivery};
use crate::ids::DeliveryTag;
use crate::protocol::AckTarget;
use crate::store::Completion;

/// Taken-back deliveries remembered, so a late ACK gets a clear answer.
const REMEMBERED_EXPIRIES: usize = 1024;

#[derive(Debug)]
struct Unacked {
    delivery: Delivery,
}

/// The ack deadlines of one timeout value, in delivery order, which is
/// also time order: a queue, not a sorted set, so a delivery costs a push
/// and an ACK nothing (an acknowledged entry is dropped when it reaches the
/// front, or in a sweep when too many pile up behind an old one).
#[derive(Debug)]
struct DeadlineRun {
    timeout_ms: u32,
    due: VecDeque<(Instant, u64)>,
}

/// A delivery taken back at its ack deadline.
#[derive(Debug)]
struct Expired {
    ack_id: u64,
    delivery: Delivery,
}

#[derive(Debug, Default)]
pub(super) struct AckLedger {
    /// By ack id; ids grow, so the map is in delivery order, which
    /// cumulative `client` acks rely on.
    unacked: InFlight<Unacked>,
    /// Ack deadlines, one run per timeout value (nearly always one),
    /// watched by one timer in the driver.
    deadlines: Vec<DeadlineRun>,
    /// The latest deliveries taken back at their deadline.
    expired: VecDeque<Expired>,
    next_id: u64,
    /// Auto-ack queue deliveries written since the last settle.
    written: SettleBatch,
    /// Deliveries acknowledged since the last settle: the ACKs of one read
    /// are settled together, one queue lock and one dispatch for all of
    /// them instead of one each.
    acked: SettleBatch,
}

/// Queue deliveries to settle together, in order, and which subscription
/// each run of them is for (runs are long: a subscription's deliveries
/// come, and are acknowledged, in batches).
#[derive(Debug, Default)]
struct SettleBatch {
    tags: Vec<DeliveryTag>,
    runs: Vec<(SubscriptionId, usize)>,
}

impl SettleBatch {
    fn push(&mut self, subscription: &SubscriptionId, tag: DeliveryTag) {
        self.tags.push(tag);
        match self.runs.last_mut() {
            Some((sub, n)) if sub == subscription => *n += 1,
            _ => self.runs.push((subscription.clone(), 1)),
        }
    }

    fn is_empty(&self) -> bool {
        self.tags.is_empty()
    }

    /// Settles every run through the broker; the buffers are kept for the
    /// next batch.
    fn settle(&mut self, broker: &Broker, session: SessionId) -> Completion {
        let mut completion = Completion::DONE;
        let mut start = 0;
        for (subscription, n) in self.runs.drain(..) {
            let run = &self.tags[start..start + n];
            completion = completion.and(broker.settle(session, &subscription, run));
            start += n;
        }
        self.tags.clear();
        completion
    }
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
                self.written.push(&delivery.subscription, tag.clone());
            }
            return Outgoing::Message {
                delivery,
                ack_id: None,
            };
        }
        self.next_id += 1;
        if delivery.ack_timeout_ms > 0 {
            let at = Instant::now() + Duration::from_millis(u64::from(delivery.ack_timeout_ms));
            let run = match self
                .deadlines
                .iter()
                .position(|r| r.timeout_ms == delivery.ack_timeout_ms)
            {
                Some(i) => &mut self.deadlines[i],
                None => {
                    self.deadlines.push(DeadlineRun {
                        timeout_ms: delivery.ack_timeout_ms,
                        due: VecDeque::new(),
                    });
                    let last = self.deadlines.len() - 1;
                    &mut self.deadlines[last]
                }
            };
            run.due.push_back((at, self.next_id));
        }
        // The clone is reference counts only: the message is shared.
        self.unacked.insert(
            self.next_id,
            Unacked {
                delivery: delivery.clone(),
            },
        );
        Outgoing::Message {
            delivery,
            ack_id: Some(self.next_id),
        }
    }

    /// Settles auto-ack deliveries once they are written: their queues
    /// get the credit back, and durable ones are recorded as done.
    pub(super) fn settle_written(&mut self, broker: &Broker, session: SessionId) {
        if !self.written.is_empty() {
            let _ = self.written.settle(broker, session);
        }
    }

    /// Keeps acknowledged deliveries to be settled by [`Self::settle_acked`].
    pub(super) fn defer_settle(&mut self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            if let Some(tag) = d.tag {
                self.acked.push(&d.subscription, tag);
            }
        }
    }

    /// Settles the deliveries acknowledged since the last call.
    pub(super) fn settle_acked(&mut self, broker: &Broker, session: SessionId) -> Completion {
        if self.acked.is_empty() {
            return Completion::DONE;
        }
        self.acked.settle(broker, session)
    }

    /// The ack id of the delivery an ACK/NACK names, if it awaits one.
    pub(super) fn find(&self, target: &AckTarget) -> Option<u64> {
        match target {
            AckTarget::Id(id) => id.parse::<u64>().ok().filter(|n| self.unacked.contains(*n)),
            AckTarget::MessageId {
                message_id,
                subscription,
            } => self
                .unacked
                .iter()
                .find(|(_, u)| matches(&u.delivery, message_id, subscription.as_ref()))
                .map(|(n, _)| n),
        }
    }

    /// The earliest ack deadline of a delivery still unacknowledged (an
    /// acknowledged one at the front only makes the driver wake for nothing).
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        self.deadlines
            .iter()
            .filter_map(|r| r.due.front().map(|(at, _)| *at))
            .min()
    }

    /// Drops deadlines of deliveries no longer unacknowledged from the
    /// front of each run, and sweeps a run that holds far more of them
    /// than there are unacknowledged deliveries.
    fn trim_deadlines(&mut self) {
        let unacked = &self.unacked;
        for run in &mut self.deadlines {
            while run
                .due
                .front()
                .is_some_and(|(_, id)| !unacked.contains(*id))
            {
                run.due.pop_front();
            }
            if run.due.len() > 2 * unacked.len() + 64 {
                run.due.retain(|(_, id)| unacked.contains(*id));
            }
        }
    }

    /// Takes out the deliveries whose ack deadline passed at `now`,
    /// remembering them for a late ACK.
    pub(super) fn take_expired(&mut self, now: Instant) -> Vec<Delivery> {
        let mut out = Vec::new();
        let mut due = Vec::new();
        for run in &mut self.deadlines {
            while run.due.front().is_some_and(|(at, _)| *at <= now) {
                if let Some((_, id)) = run.due.pop_front() {
                    due.push(id);
                }
            }
        }
        due.sort_unstable();
        for id in due {
            {
                let Some(u) = self.unacked.remove(id) else {
                    continue;
                };
                out.push(u.delivery.clone());
                if self.expired.len() == REMEMBERED_EXPIRIES {
                    self.expired.pop_front();
                }
                self.expired.push_back(Expired {
                    ack_id: id,
                    delivery: u.delivery,
                });
            }
        }
        self.trim_deadlines();
        out
    }

    /// What an ACK/NACK of a delivery taken back at its deadline names:
    /// the delivery (as the client knows it) and its deadline, ms.
    pub(super) fn find_expired(&self, target: &AckTarget) -> Option<(String, u32)> {
        let e = self.expired.iter().rev().find(|e| match target {
            AckTarget::Id(id) => id.parse::<u64>().ok() == Some(e.ack_id),
            AckTarget::MessageId {
                message_id,
                subscription,
            } => matches(&e.delivery, message_id, subscription.as_ref()),
        })?;
        let named = match target {
            AckTarget::Id(id) => format!("ack id {:?}", id.to_string()),
            AckTarget::MessageId { message_id, .. } => {
                format!("message-id {:?}", message_id.to_string())
            }
        };
        Some((named, e.delivery.ack_timeout_ms))
    }

    /// Removes the delivery `ack_id` and, in `client` mode, every earlier
    /// delivery of the same subscription.
    pub(super) fn take(&mut self, ack_id: u64) -> Vec<Delivery> {
        let Some(named) = self.unacked.get(ack_id) else {
            return Vec::new();
        };
        if named.delivery.ack != AckMode::Client {
            let taken = self.remove(ack_id).into_iter().collect();
            self.trim_deadlines();
            return taken;
        }
        let subscription = named.delivery.subscription.clone();
        self.take_where(|n, d| n <= ack_id && d.subscription == subscription)
    }

    fn remove(&mut self, ack_id: u64) -> Option<Delivery> {
        self.unacked.remove(ack_id).map(|u| u.delivery)
    }

    /// Removes every delivery that matches.
    pub(super) fn take_where(&mut self, matches: impl Fn(u64, &Delivery) -> bool) -> Vec<Delivery> {
        let ids: Vec<u64> = self
            .unacked
            .iter()
            .filter(|(n, u)| matches(*n, &u.delivery))
            .map(|(n, _)| n)
            .collect();
        let taken = ids.iter().filter_map(|n| self.remove(*n)).collect();
        self.trim_deadlines();
        taken
    }
}

/// Whether a delivery is the one a 1.0/1.1 ACK names.
fn matches(
    d: &Delivery,
    message_id: &str,
    subscription: Option<&crate::ids::SubscriptionId>,
) -> bool {
    d.message.id.as_str() == message_id && subscription.is_none_or(|s| *s == d.subscription)
}

/// Dead-letters rejected deliveries (`NACK` with `requeue:false`).
pub(super) fn reject(broker: &Broker, session: SessionId, deliveries: Vec<Delivery>) -> Completion {
    let mut completion = Completion::DONE;
    for (subscription, list) in by_subscription(deliveries.iter()) {
        let list = list.into_iter().cloned().collect();
        completion = completion.and(broker.reject(session, &subscription, list));
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
