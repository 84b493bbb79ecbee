//! The names the broker and sessions use for connections, subscriptions
//! and messages. In their own module so the broker core speaks in ids and
//! never imports the session that owns a connection (the seam a journal or
//! a clustered engine sits behind).

use std::fmt;

use stomp_codec::ByteString;

/// Identifies a connection within the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "session-{}", self.0)
    }
}

/// A subscription id, chosen by the client and unique within its session.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubscriptionId(ByteString);

impl SubscriptionId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<ByteString> for SubscriptionId {
    fn from(s: ByteString) -> SubscriptionId {
        SubscriptionId(s)
    }
}

impl From<&str> for SubscriptionId {
    fn from(s: &str) -> SubscriptionId {
        SubscriptionId(ByteString::from(s))
    }
}

/// A broker-assigned message id. Never reused: with a journal, not even
/// across restarts (blocks of ids are reserved on disk before use).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId {
    number: u64,
    /// Rendered once: every MESSAGE of it writes this text.
    text: ByteString,
}

impl MessageId {
    pub(crate) fn new(number: u64) -> MessageId {
        // Not `format!`: its formatter machinery and growing String cost
        // about 1,100 instructions a message (callgrind, bench queue),
        // a tenth of the broker's work per queue message.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(number);
        let mut text = String::with_capacity(2 + digits.len());
        text.push_str("m-");
        text.push_str(digits);
        MessageId {
            number,
            text: ByteString::from(text),
        }
    }

    /// The id as it appears in the `message-id` header.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The id's number: what the journal and delivery tags name it by.
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Names one delivery of a queue message, for settling it through the
/// broker: which queue, and which of its messages. What the ack ledger
/// keeps instead of a pointer to the queue, so the same calls work when
/// the queue lives in a journal or on another node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryTag {
    /// The queue's name.
    pub destination: ByteString,
    /// The message's number ([`MessageId::number`]).
    pub message: u64,
    /// Whether the message is in the journal, so settling it is written there.
    pub durable: bool,
}
