//! Destination names and what kind of destination each one is.

use thiserror::Error;

/// The kinds of destination a name can refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DestinationKind {
    /// `/queue/NAME`: each message to one consumer.
    Queue,
    /// `/topic/NAME`: each message to every subscriber.
    Topic,
}

/// Why a destination name was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DestinationError {
    /// Neither `/queue/…` nor `/topic/…`.
    #[error(
        "unknown destination {0:?}: use /queue/NAME (one consumer per message) or /topic/NAME (every subscriber)"
    )]
    Unknown(String),
    /// `/queue/` or `/topic/` with nothing after it.
    #[error("destination {0:?} has an empty name")]
    EmptyName(String),
    /// A control character (newline, carriage return, tab…) in the name:
    /// receivers of STOMP 1.0 and 1.1 could not be sent the name back.
    #[error("destination {0:?} contains a control character; names are printable text")]
    ControlCharacter(String),
    /// A private queue's name whose queue is gone (its connection closed).
    #[error(
        "{0:?} was a private queue (a connection's temp queue or an exchange subscription's) and is gone"
    )]
    PrivateGone(String),
    /// A wildcard pattern where a single destination is needed (SEND).
    #[error(
        "{0:?} is a wildcard pattern (a segment is *, # or >): SUBSCRIBE to it, SEND to a single topic"
    )]
    Pattern(String),
}

impl DestinationKind {
    /// Classifies a destination name.
    ///
    /// ```
    /// use stompbox::broker::DestinationKind;
    /// assert_eq!(DestinationKind::of("/queue/jobs"), Ok(DestinationKind::Queue));
    /// assert_eq!(DestinationKind::of("/topic/chat.general"), Ok(DestinationKind::Topic));
    /// assert!(DestinationKind::of("jobs").is_err());
    /// assert!(DestinationKind::of("/queue/two\nlines").is_err());
    /// ```
    pub fn of(name: &str) -> Result<DestinationKind, DestinationError> {
        let (kind, rest) = if let Some(rest) = name.strip_prefix("/queue/") {
            (DestinationKind::Queue, rest)
        } else if let Some(rest) = name.strip_prefix("/topic/") {
            (DestinationKind::Topic, rest)
        } else {
            return Err(DestinationError::Unknown(name.chars().take(100).collect()));
        };
        if rest.is_empty() {
            return Err(DestinationError::EmptyName(name.to_string()));
        }
        // Bytes first: names are nearly always ASCII, and this runs for
        // every SEND; no early exit, so the loop vectorises.
        let ascii_control = name
            .bytes()
            .fold(false, |found, b| found | (b < 0x20) | (b == 0x7f));
        if ascii_control || (!name.is_ascii() && name.chars().any(char::is_control)) {
            return Err(DestinationError::ControlCharacter(
                name.chars().take(100).collect(),
            ));
        }
        Ok(kind)
    }
}
