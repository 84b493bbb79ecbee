//! Messages a queue gives up on: rejected (`NACK` with `requeue:false`),
//! expired, delivered `max_deliveries` times, or pushed out of a full
//! queue. Queues put them here under their own lock; the broker takes them
//! out after and sends each to its queue's dead-letter queue, so no queue
//! lock is ever held while another queue's is taken.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use stomp_codec::{ByteString, Headers};

use super::message::Message;

/// Why a message was dead-lettered (the `x-death-reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathReason {
    /// NACKed with `requeue:false`.
    Rejected,
    /// Its TTL passed before it was delivered.
    Expired,
    /// Delivered `max_deliveries` times without being acknowledged.
    MaxDeliveries,
    /// Pushed out of a full queue whose overflow is `dead-letter`.
    Overflow,
}

impl DeathReason {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            DeathReason::Rejected => "rejected",
            DeathReason::Expired => "expired",
            DeathReason::MaxDeliveries => "max-deliveries",
            DeathReason::Overflow => "overflow",
        }
    }
}

/// A message on its way out of a queue.
#[derive(Debug)]
pub struct DeadLetter {
    /// The queue that gave it up.
    pub origin: ByteString,
    /// The message (its journal record is settled as it is moved).
    pub message: Arc<Message>,
    /// Why.
    pub reason: DeathReason,
    /// Where it is to go, from the queue's policy; `None`: it is dropped.
    pub target: Option<ByteString>,
}

/// Dead letters waiting to be moved.
#[derive(Debug, Default)]
pub struct DeadLetters {
    list: Mutex<Vec<DeadLetter>>,
    /// Whether `list` may have any: read on every SEND, so the common
    /// case takes no lock.
    waiting: AtomicBool,
}

impl DeadLetters {
    /// Adds one.
    pub fn push(&self, letter: DeadLetter) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.push(letter);
        self.waiting.store(true, Ordering::Release);
    }

    /// Whether any wait.
    pub fn pending(&self) -> bool {
        self.waiting.load(Ordering::Acquire)
    }

    /// Takes every waiting one, oldest first.
    pub fn take(&self) -> Vec<DeadLetter> {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.store(false, Ordering::Release);
        std::mem::take(&mut *list)
    }
}

/// Headers that are dropped from a dead-lettered copy: its delay, expiry
/// and deduplication were for its first queue (an expired message would
/// otherwise expire again at once in its dead-letter queue).
const NOT_CARRIED: [&str; 10] = [
    "expires",
    "expiration",
    "x-delay",
    "AMQ_SCHEDULED_DELAY",
    "x-dedup-id",
    "_AMQ_DUPL_ID",
    "x-death-reason",
    "x-death-count",
    "x-death-queues",
    "x-first-death-reason",
];

/// Longest `x-death-queues` kept: a message dead-lettered through more
/// queues than this is dropped (a cycle the names did not reveal).
pub const MAX_DEATHS: usize = 16;

/// The headers of the dead-lettered copy of a message that leaves
/// `source` for `reason`, or `None` when sending it would close a cycle:
/// `target` is a queue it already left this way (or its own source).
pub fn dead_letter_headers(
    message: &Message,
    reason: DeathReason,
    target: &str,
) -> Option<Headers> {
    let source = &*message.destination;
    let path = message.headers.get("x-death-queues").unwrap_or_default();
    let mut queues: Vec<&str> = path.split(',').filter(|q| !q.is_empty()).collect();
    if target == source || queues.contains(&target) || queues.len() >= MAX_DEATHS {
        return None;
    }
    queues.push(source);
    let count = queues.len();
    let mut headers = Headers::with_capacity(message.headers.len() + 4);
    for (name, value) in message.headers.iter_shared() {
        if !NOT_CARRIED.contains(&name.as_ref()) {
            headers.push(name.clone(), value.clone());
        }
    }
    if !headers.contains("x-original-destination") {
        headers.push("x-original-destination", source);
    }
    headers.push("x-death-reason", reason.as_str());
    headers.push("x-death-count", count.to_string());
    headers.push("x-death-queues", queues.join(","));
    Some(headers)
}

/// The dead-letter queue of a queue by default: `/queue/DLQ.NAME` for
/// `/queue/NAME` (ActiveMQ's individual dead-letter strategy); a queue that
/// is itself a dead-letter queue has none, so nothing loops.
pub fn default_target(queue: &str) -> Option<ByteString> {
    let name = queue.strip_prefix("/queue/")?;
    if name.starts_with("DLQ.") {
        return None;
    }
    Some(ByteString::from(format!("/queue/DLQ.{name}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::Charge;
    use crate::ids::MessageId;
    use bytes::Bytes;

    fn message(destination: &str, headers: &[(&str, &str)]) -> Message {
        Message {
            id: MessageId::new(1),
            destination: destination.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (ByteString::from(*n), ByteString::from(*v)))
                .collect(),
            body: Bytes::from_static(b"x"),
            stream: None,
            ephemeral: false,
            charge: Charge::none(),
            journal: None,
            terms: Default::default(),
        }
    }

    #[test]
    fn the_copy_says_why_and_where_from() {
        let m = message("/queue/jobs", &[("expiration", "5"), ("app", "a")]);
        let h = dead_letter_headers(&m, DeathReason::Expired, "/queue/DLQ.jobs").unwrap();
        assert_eq!(h.get("x-death-reason"), Some("expired"));
        assert_eq!(h.get("x-original-destination"), Some("/queue/jobs"));
        assert_eq!(h.get("x-death-count"), Some("1"));
        assert_eq!(h.get("app"), Some("a"));
        assert_eq!(h.get("expiration"), None);
    }

    #[test]
    fn cycles_are_broken() {
        let a = message("/queue/a", &[]);
        let h = dead_letter_headers(&a, DeathReason::Rejected, "/queue/b").unwrap();
        let mut b = message("/queue/b", &[]);
        b.headers = h;
        // b dead-letters back to a, which it already left: dropped.
        assert!(dead_letter_headers(&b, DeathReason::Rejected, "/queue/a").is_none());
        let h = dead_letter_headers(&b, DeathReason::Rejected, "/queue/c").unwrap();
        assert_eq!(h.get("x-death-count"), Some("2"));
        assert_eq!(h.get("x-original-destination"), Some("/queue/a"));
        assert!(dead_letter_headers(&a, DeathReason::Rejected, "/queue/a").is_none());
    }

    #[test]
    fn default_targets() {
        assert_eq!(
            default_target("/queue/jobs").as_deref(),
            Some("/queue/DLQ.jobs")
        );
        assert_eq!(default_target("/queue/DLQ.jobs"), None);
    }
}
