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

/// A broker-assigned message id, unique for the broker's lifetime.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(ByteString);

impl MessageId {
    pub(crate) fn new(n: u64) -> MessageId {
        MessageId(ByteString::from(format!("m-{n}")))
    }

    /// The id as it appears in the `message-id` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
