//! Why a session ends, and the errors a client can cause.

use std::fmt;

use stomp_codec::{DecodeError, Version};
use thiserror::Error;

use crate::broker::{DestinationError, QueueFull, SendError, SubscribeError};

/// Everything a client can get wrong. Each becomes an ERROR frame whose
/// `message` header is this error's `Display`, after which the connection closes.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SessionError {
    /// The bytes were not a STOMP frame.
    #[error("malformed frame: {0}")]
    Decode(#[from] DecodeError),
    /// A frame other than CONNECT/STOMP came first.
    #[error("not connected: send CONNECT (or STOMP) first, not {command}")]
    NotConnected {
        /// The command that came instead.
        command: &'static str,
    },
    /// A second CONNECT.
    #[error("already connected")]
    AlreadyConnected,
    /// No version in `accept-version` is one the broker speaks.
    #[error("no supported protocol version in accept-version {offered:?} (supported: 1.0,1.1,1.2)")]
    UnsupportedVersion {
        /// The header as sent.
        offered: String,
    },
    /// Wrong login or passcode.
    #[error("access refused: wrong login or passcode")]
    AuthenticationFailed,
    /// A token given as the passcode, or sent to `/sys/token`, gives no access.
    #[error("{0}")]
    TokenRefused(crate::security::tokens::TokenError),
    /// The connection's token reached its `exp` without a fresh one.
    #[error("token expired")]
    TokenExpired,
    /// No credentials, and anonymous access is not allowed for this client.
    #[error("access refused: {0}")]
    AnonymousRefused(&'static str),
    /// A server-to-client command sent by a client.
    #[error("{command} is a frame the server sends, not the client")]
    ServerCommand {
        /// The command.
        command: &'static str,
    },
    /// The command does not exist in the negotiated version.
    #[error("{command} is not part of STOMP {version}")]
    NotInVersion {
        /// The command.
        command: &'static str,
        /// The session's version.
        version: Version,
    },
    /// A required header is absent.
    #[error("{command} frame is missing the required header '{header}'")]
    MissingHeader {
        /// The command.
        command: &'static str,
        /// The missing header.
        header: &'static str,
    },
    /// A header's value is not acceptable.
    #[error("invalid '{header}' header {value:?}: {expected}")]
    InvalidHeader {
        /// The header.
        header: &'static str,
        /// Its value.
        value: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// The destination name is not one the broker serves.
    #[error("{0}")]
    Destination(#[from] DestinationError),
    /// SUBSCRIBE with an id the session already uses.
    #[error("subscription id {0:?} is already in use on this connection")]
    DuplicateSubscription(String),
    /// UNSUBSCRIBE (or ACK in 1.1) naming no current subscription.
    #[error("no subscription with id {0:?} on this connection")]
    UnknownSubscription(String),
    /// ACK or NACK of something that is not awaiting acknowledgement.
    #[error("no message awaiting acknowledgement has {0}")]
    UnknownAck(String),
    /// A wildcard subscription that cannot be made.
    #[error("{0}")]
    Pattern(String),
    /// What cluster mode does not do yet.
    #[error("{0}")]
    NotInCluster(String),
    /// An exchange destination that cannot be used.
    #[error("{0}")]
    Exchange(String),
    /// The login lacks a permission for a destination.
    #[error("access refused: {login} has no {permission} permission for {destination}")]
    AccessRefused {
        /// Who.
        login: String,
        /// `read`, `write` or `configure`.
        permission: &'static str,
        /// What.
        destination: String,
    },
    /// A selector that does not parse or is too large.
    #[error("{0}")]
    Selector(String),
    /// A SUBSCRIBE to (or SEND past /user/ into) the broker's private destinations.
    #[error(
        "{0:?} is private to the broker (a connection's temp queue or exchange subscription, a login's /user/ destination); use /temp-queue/NAME or /user/NAME for your own"
    )]
    Private(String),
    /// `mandatory:true` and no binding took the message.
    #[error("unroutable: {0}")]
    Unroutable(String),
    /// ACK or NACK of a delivery taken back because its ack deadline passed.
    #[error(
        "{0} was taken back after its ack deadline of {1} ms and requeued; acknowledge sooner or raise x-ack-timeout"
    )]
    AckExpired(String, u32),
    /// BEGIN of a transaction that is already open.
    #[error("transaction {0:?} is already open")]
    DuplicateTransaction(String),
    /// COMMIT, ABORT or a transactional frame naming no open transaction.
    #[error("no open transaction {0:?}")]
    UnknownTransaction(String),
    /// Too many open transactions or subscriptions.
    #[error("limit reached: {0}")]
    LimitReached(&'static str),
    /// A message over the destination's size limit.
    #[error(
        "message too large: {size} bytes with its headers, the limit for this destination is {limit} (max_message_size of the topic policy {policy:?})"
    )]
    MessageTooLarge {
        /// The frame's size: headers and body.
        size: usize,
        /// The destination's limit.
        limit: usize,
        /// The pattern of the topic policy that sets it.
        policy: String,
    },
    /// Publishing faster than the destination allows.
    #[error(
        "rate limited: at most {rate} messages a second to this destination (publish_rate of the topic policy {policy:?})"
    )]
    RateLimited {
        /// The allowed rate.
        rate: f64,
        /// The pattern of the topic policy that sets it.
        policy: String,
    },
    /// The queue is at a limit of its policy (`overflow = "reject-publish"`).
    #[error("{0}")]
    QueueFull(#[from] QueueFull),
    /// A durable subscription cannot be made, used or deleted as asked.
    #[error("durable subscription: {0}")]
    Durable(String),
    /// A durable message could not be written to the journal (full, or a
    /// failed write); it was not accepted.
    #[error("not stored: {0}")]
    NotStored(String),
    /// In cluster mode, Redis could not take a topic message now.
    #[error("not published: {0}")]
    ClusterUnavailable(String),
}

impl From<SubscribeError> for SessionError {
    fn from(e: SubscribeError) -> SessionError {
        match e {
            SubscribeError::Destination(e) => SessionError::Destination(e),
            e @ (SubscribeError::Pattern(_)
            | SubscribeError::PatternOptions(_)
            | SubscribeError::ClusterPattern) => SessionError::Pattern(e.to_string()),
            e @ SubscribeError::ClusterSelector => SessionError::NotInCluster(e.to_string()),
            SubscribeError::Exchange(why) => SessionError::Exchange(why),
            other => SessionError::Durable(other.to_string()),
        }
    }
}

impl From<SendError> for SessionError {
    fn from(e: SendError) -> SessionError {
        match e {
            SendError::Destination(e) => SessionError::Destination(e),
            SendError::QueueFull(e) => SessionError::QueueFull(e),
            SendError::NotStored(why) => SessionError::NotStored(why),
            e @ SendError::Unroutable { .. } => SessionError::Unroutable(e.to_string()),
            SendError::Exchange(e) => SessionError::Exchange(e.to_string()),
            SendError::Cluster(why) => SessionError::ClusterUnavailable(why),
        }
    }
}

impl SessionError {
    /// Whether this refuses one SEND (or one late ACK) without breaking the
    /// session, so it can be answered on the frame's receipt instead of
    /// with ERROR and close.
    pub fn is_answerable_on_receipt(&self) -> bool {
        matches!(
            self,
            SessionError::MessageTooLarge { .. }
                | SessionError::RateLimited { .. }
                | SessionError::QueueFull(_)
                | SessionError::NotStored(_)
                | SessionError::ClusterUnavailable(_)
                | SessionError::AckExpired(..)
                | SessionError::Unroutable(_)
                | SessionError::AccessRefused { .. }
                | SessionError::TokenRefused(_)
        )
    }

    /// A short machine-readable code for refused frames (`x-error`).
    pub fn code(&self) -> &'static str {
        match self {
            SessionError::MessageTooLarge { .. } => "too-large",
            SessionError::RateLimited { .. } => "rate-limited",
            SessionError::QueueFull(_) => "queue-full",
            SessionError::NotStored(_) => "not-stored",
            SessionError::ClusterUnavailable(_) => "cluster-unavailable",
            SessionError::AckExpired(..) => "ack-expired",
            SessionError::Unroutable(_) => "unroutable",
            SessionError::AccessRefused { .. } => "access-refused",
            SessionError::TokenRefused(_) => "token-refused",
            _ => "error",
        }
    }

    /// A longer explanation for the ERROR frame's body.
    pub fn explanation(&self) -> &'static str {
        match self {
            SessionError::Decode(_) => {
                "The bytes received are not a valid STOMP frame. A frame is a command line, header lines \
                 (name:value), an empty line, an optional body, and a NUL byte (Ctrl+@ in telnet).\n\n\
                 The connection closes after an ERROR. To start again, reconnect and type:\n\n\
                 CONNECT\naccept-version:1.2\nhost:localhost\n\n^@"
            }
            SessionError::NotConnected { .. } => {
                "Every STOMP connection starts with a CONNECT frame, e.g.\n\nCONNECT\naccept-version:1.2\nhost:localhost\n\n^@"
            }
            SessionError::AlreadyConnected => "CONNECT may only be sent once per connection.",
            SessionError::UnsupportedVersion { .. } => {
                "This broker speaks STOMP 1.0, 1.1 and 1.2; list one of them in accept-version."
            }
            SessionError::AuthenticationFailed | SessionError::AnonymousRefused(_) => {
                "Send the login and passcode headers of a configured user with CONNECT."
            }
            SessionError::TokenRefused(_) => {
                "A token is a JWT signed with a key of the broker's [tokens] settings, with sub (the login) and exp claims, given as CONNECT's passcode. Renew it before exp with SEND to /sys/token, the fresh token as the body (for the same sub)."
            }
            SessionError::TokenExpired => {
                "The connection's token reached its exp. Get a fresh token and connect again; to keep a connection open, SEND a fresh token to /sys/token before exp."
            }
            SessionError::ServerCommand { .. } => {
                "Clients send CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT and DISCONNECT."
            }
            SessionError::NotInVersion { .. } => {
                "Negotiate a later version with accept-version to use it."
            }
            SessionError::MissingHeader { .. } | SessionError::InvalidHeader { .. } => {
                "See the STOMP specification for the headers this frame takes."
            }
            SessionError::Destination(_) => {
                "Destinations are /queue/NAME (each message goes to one consumer) and /topic/NAME (each message goes to every subscriber)."
            }
            SessionError::DuplicateSubscription(_) | SessionError::UnknownSubscription(_) => {
                "Subscription ids are chosen by the client with SUBSCRIBE's id header and are unique per connection."
            }
            SessionError::AccessRefused { .. } => {
                "The config's [permissions] say which destinations each login may read (SUBSCRIBE), write (SEND, last will) and configure (durable subscriptions). Ask with a receipt header to be told on the RECEIPT (x-error: access-refused) and keep the connection."
            }
            SessionError::Selector(_) => {
                "A selector is a SQL-92 condition over the message's headers: = <> < > <= >=, AND OR NOT, IN ('a', 'b'), LIKE 'a%' [ESCAPE '\\'], IS [NOT] NULL, BETWEEN 1 AND 5, 'strings' and numbers; at most 4096 bytes. The position counts bytes from the selector's start."
            }
            SessionError::Private(_) => {
                "Queues named /queue/stompbox.* belong to one connection (its temp queues, its exchange subscriptions). SEND to them is fine (that is how replies reach a reply-to address); only their owner receives."
            }
            SessionError::Exchange(_) => {
                "Exchanges are declared in the config file ([[exchanges]]: name, type direct|topic|fanout|headers, bindings). SEND to /exchange/NAME/ROUTING_KEY; SUBSCRIBE to /exchange/NAME/PATTERN (headers exchanges: x-match and x-bind-NAME headers) for a private queue bound that way."
            }
            SessionError::Unroutable(_) => {
                "With mandatory:true a SEND that no binding of the exchange takes is refused; without it, it is dropped and counted in /health as unroutable."
            }
            SessionError::Pattern(_) => {
                "A topic pattern's segments are separated by dots; * matches one segment, # any number (none too), > the rest (one or more, last only). SUBSCRIBE /topic/chat.* receives /topic/chat.general and /topic/chat.random; history, presence and durability need a single topic."
            }
            SessionError::NotInCluster(_) => {
                "This broker is one node of a cluster (see the README's \"Several nodes as one broker\"); this feature works on a single node only for now."
            }
            SessionError::AckExpired(..) => {
                "A delivery not acknowledged within its subscription's x-ack-timeout (or its queue policy's ack_timeout_ms) goes back to the queue for another consumer; acknowledging it afterwards has no effect. Ask with a receipt header to be told on the RECEIPT (x-error: ack-expired) and keep the connection."
            }
            SessionError::UnknownAck(_) => {
                "ACK and NACK must name a message delivered to a client or client-individual subscription and not yet acknowledged (1.2: the MESSAGE's ack header as id; 1.1: message-id and subscription)."
            }
            SessionError::DuplicateTransaction(_) | SessionError::UnknownTransaction(_) => {
                "Open a transaction with BEGIN, then end it once with COMMIT or ABORT."
            }
            SessionError::LimitReached(_) => {
                "The broker's configuration limits this per connection."
            }
            SessionError::MessageTooLarge { .. } => {
                "Send a shorter message. An operator changes the limit with max_message_size in the [[topics]] entry of that pattern (the built-in /topic/chat.* policy allows 16 KiB for chat). With a receipt header, a refused SEND is answered on its RECEIPT (x-error) and the connection stays open."
            }
            SessionError::RateLimited { .. } => {
                "Slow down. An operator changes the rate with publish_rate and publish_burst in the [[topics]] entry of that pattern (the built-in /topic/chat.* policy allows 20 a second for chat). With a receipt header, a refused SEND is answered on its RECEIPT (x-error) and the connection stays open."
            }
            SessionError::QueueFull(_) => {
                "The queue holds as many messages as its policy allows until consumers take some. Try again later. With a receipt header, a refused SEND is answered on its RECEIPT (x-error) and the connection stays open."
            }
            SessionError::Durable(_) => {
                "A durable topic subscription outlives its connection: SUBSCRIBE to a /topic/ with durable:true and an id (RabbitMQ's way), or with activemq.subscriptionName or durable-subscription-name after a CONNECT with client-id (ActiveMQ's and Artemis'). One connection at a time may hold it; UNSUBSCRIBE with the same headers deletes it."
            }
            SessionError::NotStored(_) => {
                "The broker could not keep the message on disk, so it did not accept it; the broker's log says why. Try again later, or send with persistent:false to accept the risk of losing it in a crash. With a receipt header, the refusal is answered on the RECEIPT (x-error) and the connection stays open."
            }
            SessionError::ClusterUnavailable(_) => {
                "This broker is one node of a cluster, and topic messages go through the cluster's Redis, which cannot take them now (the node's log says why). The node reconnects by itself; try again shortly. Queues on this node keep working. With a receipt header, the refusal is answered on the RECEIPT (x-error) and the connection stays open."
            }
        }
    }
}

/// Why a session ended; logged once per session.
#[derive(Debug, Clone, PartialEq)]
pub enum CloseReason {
    /// DISCONNECT, or the peer closed the socket.
    ClientDisconnect,
    /// The peer closed without DISCONNECT.
    ConnectionLost,
    /// The client broke the protocol.
    ProtocolError(SessionError),
    /// Nothing arrived within the negotiated heart-beat window.
    HeartbeatTimeout,
    /// No CONNECT within the connect timeout.
    ConnectTimeout,
    /// A frame was begun and not finished within `frame_timeout_ms`.
    FrameTimeout,
    /// A topic subscriber fell too far behind.
    SlowConsumer,
    /// The broker is shutting down.
    ServerShutdown,
    /// An administrator closed it (management API).
    ClosedByAdministrator,
    /// The socket failed.
    Io(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::ClientDisconnect => f.write_str("client disconnected"),
            CloseReason::ConnectionLost => f.write_str("connection lost without DISCONNECT"),
            CloseReason::ProtocolError(e) => write!(f, "protocol error: {e}"),
            CloseReason::HeartbeatTimeout => f.write_str("heart-beat timeout"),
            CloseReason::ConnectTimeout => f.write_str("no CONNECT in time"),
            CloseReason::FrameTimeout => f.write_str("frame not completed in time"),
            CloseReason::SlowConsumer => f.write_str("slow consumer"),
            CloseReason::ServerShutdown => f.write_str("server shutdown"),
            CloseReason::ClosedByAdministrator => f.write_str("closed by an administrator"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}
