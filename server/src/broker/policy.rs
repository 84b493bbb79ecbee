//! Per-topic policies chosen by destination-name pattern: how much history
//! a topic keeps, and the limits on what may be published to it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What applies to the topics whose names match `pattern`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TopicPolicy {
    /// A destination name where `*` matches any run of characters, e.g. `/topic/chat.*`.
    pub pattern: String,
    /// Messages kept for history and recovery (0: none).
    #[serde(default)]
    pub history: usize,
    /// Kept messages older than this many seconds are dropped (0: no age limit).
    #[serde(default)]
    pub max_age_secs: u64,
    /// Largest body accepted for these topics, bytes (0: only the frame limits apply).
    #[serde(default)]
    pub max_message_size: usize,
    /// Messages per second one connection may publish to these topics (0: unlimited).
    #[serde(default)]
    pub publish_rate: f64,
    /// How many messages a connection may publish in a burst above the rate.
    #[serde(default)]
    pub publish_burst: f64,
    /// The kept history is written to the journal and survives a restart
    /// under the same stream epoch (with no journal, or no history, nothing is).
    #[serde(default = "durable_by_default")]
    pub durable: bool,
}

impl TopicPolicy {
    /// The built-in policy for chat rooms (`/topic/chat.*`): the last 200
    /// messages of the past day, 16 KiB per message, 20 messages a second
    /// per connection with bursts of 40 (a fast typist sends a few a second;
    /// a runaway script is stopped).
    pub fn chat_default() -> TopicPolicy {
        TopicPolicy {
            pattern: "/topic/chat.*".into(),
            history: 200,
            max_age_secs: 86_400,
            max_message_size: 16 * 1024,
            publish_rate: 20.0,
            publish_burst: 40.0,
            durable: true,
        }
    }

    /// No history, no extra limits: what topics matching no pattern get.
    pub fn plain() -> TopicPolicy {
        TopicPolicy {
            pattern: "*".into(),
            history: 0,
            max_age_secs: 0,
            max_message_size: 0,
            publish_rate: 0.0,
            publish_burst: 0.0,
            durable: true,
        }
    }

    /// The age limit, if any.
    pub fn max_age(&self) -> Option<Duration> {
        (self.max_age_secs > 0).then(|| Duration::from_secs(self.max_age_secs))
    }

    /// Whether `name` matches this policy's pattern.
    ///
    /// ```
    /// use stompbox::broker::TopicPolicy;
    /// let p = TopicPolicy::chat_default();
    /// assert!(p.matches("/topic/chat.general"));
    /// assert!(!p.matches("/topic/prices"));
    /// ```
    pub fn matches(&self, name: &str) -> bool {
        glob(self.pattern.as_bytes(), name.as_bytes())
    }
}

/// What a full queue does with one more message (RabbitMQ's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Overflow {
    /// Refuse the SEND: an ERROR, or a RECEIPT with `x-error: queue-full`
    /// when the SEND asked for a receipt.
    #[default]
    RejectPublish,
    /// Accept it and drop the oldest waiting messages to make room.
    DropHead,
    /// Accept it and move the oldest waiting messages to the queue's
    /// dead-letter queue to make room (`x-death-reason: overflow`).
    DeadLetter,
}

/// Limits for the queues whose names match `pattern`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QueuePolicy {
    /// A destination name where `*` matches any run of characters, e.g. `/queue/jobs.*`.
    pub pattern: String,
    /// Messages waiting for a consumer (0: no limit).
    #[serde(default)]
    pub max_length: usize,
    /// Bytes of messages waiting for a consumer (0: no limit).
    #[serde(default)]
    pub max_length_bytes: u64,
    /// What happens when one more message would break a limit.
    #[serde(default)]
    pub overflow: Overflow,
    /// Messages are written to the journal and survive a restart, unless a
    /// SEND says `persistent:false` (with no journal, nothing is durable).
    #[serde(default = "durable_by_default")]
    pub durable: bool,
    /// Bytes of waiting messages a durable queue keeps in memory; beyond
    /// them, durable messages wait on disk and are read back in order as
    /// consumers near them (0: everything in memory).
    #[serde(default = "memory_window_by_default")]
    pub memory_window_bytes: u64,
    /// A message delivered this many times without being acknowledged is
    /// dead-lettered instead of delivered again (0: no limit).
    #[serde(default)]
    pub max_deliveries: u32,
    /// Where dead-lettered messages go: a `/queue/` name, or `""` to drop
    /// them (counted). Absent: `/queue/DLQ.NAME`, except for queues whose
    /// name starts with `DLQ.`, which drop.
    #[serde(default)]
    pub dead_letter: Option<String>,
    /// Messages expire this many ms after they were accepted (0: never,
    /// unless the SEND says so).
    #[serde(default)]
    pub message_ttl_ms: u64,
    /// A delivery not acknowledged within this many ms is taken back and
    /// given to another consumer (0: no deadline, unless the SUBSCRIBE sets
    /// `x-ack-timeout`).
    #[serde(default)]
    pub ack_timeout_ms: u64,
    /// A deduplication id is remembered this many seconds...
    #[serde(default = "dedup_window_secs_by_default")]
    pub dedup_window_secs: u64,
    /// ...and at most this many ids are remembered, oldest forgotten first.
    #[serde(default = "dedup_window_ids_by_default")]
    pub dedup_window_ids: usize,
}

fn dedup_window_secs_by_default() -> u64 {
    600
}

fn dedup_window_ids_by_default() -> usize {
    100_000
}

fn durable_by_default() -> bool {
    true
}

fn memory_window_by_default() -> u64 {
    8 << 20
}

impl QueuePolicy {
    /// No limits of its own (the broker's memory limit still applies).
    pub fn unlimited() -> QueuePolicy {
        QueuePolicy {
            pattern: "*".into(),
            max_length: 0,
            max_length_bytes: 0,
            overflow: Overflow::RejectPublish,
            durable: true,
            memory_window_bytes: memory_window_by_default(),
            max_deliveries: 0,
            dead_letter: None,
            message_ttl_ms: 0,
            ack_timeout_ms: 0,
            dedup_window_secs: dedup_window_secs_by_default(),
            dedup_window_ids: dedup_window_ids_by_default(),
        }
    }

    /// Where queue `name`'s dead letters go under this policy.
    pub fn dead_letter_target(&self, name: &str) -> Option<stomp_codec::ByteString> {
        match self.dead_letter.as_deref() {
            None => super::dead_letter::default_target(name),
            Some("") => None,
            Some(target) => Some(target.into()),
        }
    }

    /// What is wrong with this policy, if anything.
    pub fn check(&self) -> Result<(), String> {
        if let Some(target) = self.dead_letter.as_deref()
            && !target.is_empty()
            && super::DestinationKind::of(target) != Ok(super::DestinationKind::Queue)
        {
            return Err(format!(
                "queue policy {:?}: dead_letter {target:?} is not a /queue/NAME destination (\"\" drops dead letters)",
                self.pattern
            ));
        }
        if self.dedup_window_ids > crate::store::MAX_DEDUP_IDS {
            return Err(format!(
                "queue policy {:?}: dedup_window_ids {} is above the most a window can hold, {}",
                self.pattern,
                self.dedup_window_ids,
                crate::store::MAX_DEDUP_IDS
            ));
        }
        if self.ack_timeout_ms > 86_400_000 {
            return Err(format!(
                "queue policy {:?}: ack_timeout_ms {} is above a day (86400000)",
                self.pattern, self.ack_timeout_ms
            ));
        }
        Ok(())
    }

    /// Whether neither limit is set.
    pub fn is_unlimited(&self) -> bool {
        self.max_length == 0 && self.max_length_bytes == 0
    }

    /// Whether `count` messages of `bytes` in all fit next to what waits.
    pub fn fits(&self, waiting: usize, waiting_bytes: u64, count: usize, bytes: u64) -> bool {
        (self.max_length == 0 || waiting + count <= self.max_length)
            && (self.max_length_bytes == 0 || waiting_bytes + bytes <= self.max_length_bytes)
    }
}

/// The first queue policy whose pattern matches `name`, or no limits.
pub fn queue_policy_for(policies: &[QueuePolicy], name: &str) -> QueuePolicy {
    policies
        .iter()
        .find(|p| glob(p.pattern.as_bytes(), name.as_bytes()))
        .cloned()
        .unwrap_or_else(QueuePolicy::unlimited)
}

/// `*` matches any run of bytes, everything else itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// The first policy whose pattern matches, or [`TopicPolicy::plain`].
pub fn policy_for(policies: &[TopicPolicy], name: &str) -> TopicPolicy {
    policies
        .iter()
        .find(|p| p.matches(name))
        .cloned()
        .unwrap_or_else(TopicPolicy::plain)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_patterns() {
        assert!(glob(b"/topic/chat.*", b"/topic/chat."));
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"/topic/*.log", b"/topic/app.log"));
        assert!(!glob(b"/topic/*.log", b"/topic/app.logs"));
        assert!(glob(b"/topic/exact", b"/topic/exact"));
        assert!(!glob(b"/topic/exact", b"/topic/exactly"));
    }

    #[test]
    fn first_match_wins() {
        let policies = vec![
            TopicPolicy {
                history: 5,
                ..TopicPolicy::chat_default()
            },
            TopicPolicy::chat_default(),
        ];
        assert_eq!(policy_for(&policies, "/topic/chat.x").history, 5);
        assert_eq!(policy_for(&policies, "/topic/other").history, 0);
    }
}
