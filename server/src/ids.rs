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
    /// Rendered once, in place: every MESSAGE of it writes this text. Not
    /// a shared string: that was one more allocation per message (16 bytes
    /// and a reference count), and `Message` 8 bytes larger, which put it
    /// in the allocator's 256-byte class instead of 224.
    text: [u8; ID_TEXT],
    len: u8,
}

/// "m-" and the 20 digits of the largest u64.
const ID_TEXT: usize = 22;

impl MessageId {
    pub(crate) fn new(number: u64) -> MessageId {
        // Not `format!`: its formatter machinery and growing String cost
        // about 1,100 instructions a message (callgrind, bench queue),
        // a tenth of the broker's work per queue message.
        let mut digits = itoa::Buffer::new();
        let digits = digits.format(number).as_bytes();
        let mut text = [0u8; ID_TEXT];
        text[..2].copy_from_slice(b"m-");
        text[2..2 + digits.len()].copy_from_slice(digits);
        MessageId {
            number,
            text,
            len: (2 + digits.len()) as u8,
        }
    }

    /// The id as it appears in the `message-id` header.
    pub fn as_str(&self) -> &str {
        // ASCII by construction; the fallback is never taken.
        std::str::from_utf8(&self.text[..usize::from(self.len)]).unwrap_or("m-")
    }

    /// The id's number: what the journal and delivery tags name it by.
    pub fn number(&self) -> u64 {
        self.number
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_render_every_number() {
        assert_eq!(MessageId::new(0).as_str(), "m-0");
        assert_eq!(MessageId::new(42).to_string(), "m-42");
        assert_eq!(MessageId::new(u64::MAX).as_str(), "m-18446744073709551615");
        assert_eq!(MessageId::new(7).number(), 7);
        assert!(std::mem::size_of::<MessageId>() <= 32);
    }
}
