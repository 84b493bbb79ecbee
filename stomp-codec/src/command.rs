//! The command line of a frame, and the protocol version that governs escaping.

use std::fmt;

/// Every STOMP 1.2 command, client and server side.
///
/// Commands are case-sensitive on the wire: `send` is not `SEND`.
///
/// ```
/// use stomp_codec::Command;
/// assert_eq!(Command::from_bytes(b"SEND"), Some(Command::Send));
/// assert_eq!(Command::from_bytes(b"send"), None);
/// assert_eq!(Command::Message.as_str(), "MESSAGE");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    /// Client: open a session (all versions).
    Connect,
    /// Client: open a session (1.1+ alias of CONNECT that telnet-era servers do not confuse with HTTP).
    Stomp,
    /// Server: the session is open.
    Connected,
    /// Client: publish a message.
    Send,
    /// Client: register interest in a destination.
    Subscribe,
    /// Client: end a subscription.
    Unsubscribe,
    /// Client: acknowledge a message.
    Ack,
    /// Client: reject a message (1.1+).
    Nack,
    /// Client: start a transaction.
    Begin,
    /// Client: commit a transaction.
    Commit,
    /// Client: roll back a transaction.
    Abort,
    /// Client: close the session gracefully.
    Disconnect,
    /// Server: a message delivered to a subscription.
    Message,
    /// Server: confirms that a frame carrying a `receipt` header was processed.
    Receipt,
    /// Server: something went wrong; the connection closes after it.
    Error,
}

impl Command {
    /// All commands, in the order of the specification.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Command::ALL.len(), 15);
    /// ```
    pub const ALL: [Command; 15] = [
        Command::Connect,
        Command::Stomp,
        Command::Connected,
        Command::Send,
        Command::Subscribe,
        Command::Unsubscribe,
        Command::Ack,
        Command::Nack,
        Command::Begin,
        Command::Commit,
        Command::Abort,
        Command::Disconnect,
        Command::Message,
        Command::Receipt,
        Command::Error,
    ];

    /// Parses a command line (without its EOL). Exact, case-sensitive match.
    ///
    /// ```
    /// use stomp_codec::Command;
    /// assert_eq!(Command::from_bytes(b"CONNECT"), Some(Command::Connect));
    /// assert_eq!(Command::from_bytes(b"HELLO"), None);
    /// ```
    pub fn from_bytes(line: &[u8]) -> Option<Command> {
        Some(match line {
            b"SEND" => Command::Send,
            b"MESSAGE" => Command::Message,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"CONNECTED" => Command::Connected,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// The command as written on the wire.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Command::Nack.as_str(), "NACK");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Connected => "CONNECTED",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Whether header escaping is off for this command in every version.
    ///
    /// The specification exempts CONNECT and CONNECTED so that 1.0 peers can
    /// still read them; STOMP is the 1.1 alias of CONNECT and sent before any
    /// version is agreed, so it is exempt for the same reason.
    ///
    /// ```
    /// use stomp_codec::Command;
    /// assert!(Command::Connected.is_unescaped());
    /// assert!(!Command::Send.is_unescaped());
    /// ```
    pub fn is_unescaped(self) -> bool {
        matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A STOMP protocol version. It decides which header escapes exist.
///
/// ```
/// use stomp_codec::Version;
/// assert_eq!(Version::parse("1.1"), Some(Version::V1_1));
/// assert_eq!(Version::V1_2.as_str(), "1.2");
/// assert!(Version::V1_0 < Version::V1_2);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Version {
    /// STOMP 1.0: no escaping at all.
    V1_0,
    /// STOMP 1.1: `\n`, `\c` and `\\`.
    V1_1,
    /// STOMP 1.2: `\r`, `\n`, `\c` and `\\`.
    #[default]
    V1_2,
}

impl Version {
    /// Every version, oldest first.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Version::ALL.len(), 3);
    /// ```
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// Parses `1.0`, `1.1` or `1.2`.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Version::parse("2.0"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }

    /// The version as it appears in `accept-version` and `version` headers.
    ///
    /// ```
    /// assert_eq!(stomp_codec::Version::V1_0.as_str(), "1.0");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
