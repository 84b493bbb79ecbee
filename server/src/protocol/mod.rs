//! Typed, validated client frames (here and in `client_headers`), and the
//! frames the server builds (`outgoing`, `errors`).

mod client_headers;
mod errors;
mod outgoing;

pub use errors::{error_frame, first_line, notice_frame, quote_frame, quote_unparsed};
pub use outgoing::{encode_message, fit_for_version, receipt_frame};

use std::sync::Arc;

use bytes::Bytes;
use stomp_codec::{ByteString, Command, Frame, Headers, Version};

use crate::broker::{AckMode, TopicOptions};
use crate::error::SessionError;
use crate::ids::SubscriptionId;
use client_headers::{
    canonical, parse_durable, parse_heart_beat, parse_topic_options, parse_will, required,
};

/// CONNECT or STOMP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// Versions the client accepts; absent `accept-version` means 1.0.
    pub accept_version: Option<String>,
    /// The virtual host asked for.
    pub host: Option<String>,
    /// Credentials, when given.
    pub login: Option<String>,
    /// `client-id` (ActiveMQ, Artemis): names durable subscriptions.
    pub client_id: Option<String>,
    /// Credentials, when given.
    pub passcode: Option<String>,
    /// `cx,cy` in milliseconds: what the client can send, what it wants.
    pub heart_beat: (u64, u64),
    /// The last will, published if the connection ends without DISCONNECT.
    pub will: Option<Will>,
}

/// A message the broker publishes for a client whose connection ends
/// without DISCONNECT (`x-will-destination`, `x-will-body`, `x-will-header-NAME`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    /// Where to publish it.
    pub destination: ByteString,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
}

/// What an ACK or NACK points at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckTarget {
    /// 1.2: the MESSAGE's `ack` header.
    Id(ByteString),
    /// 1.0 and 1.1: the MESSAGE's `message-id` (and, in 1.1, its `subscription`).
    MessageId {
        /// The message id.
        message_id: ByteString,
        /// The subscription, when given.
        subscription: Option<SubscriptionId>,
    },
}

impl AckTarget {
    /// The same target in memory of its own: ACK frames are read in place,
    /// so one kept (buffered in a transaction) would otherwise keep the
    /// connection's read buffer it came in.
    pub fn detached(&self) -> AckTarget {
        match self {
            AckTarget::Id(id) => AckTarget::Id(ByteString::from(id.to_string())),
            AckTarget::MessageId {
                message_id,
                subscription,
            } => AckTarget::MessageId {
                message_id: ByteString::from(message_id.to_string()),
                subscription: subscription
                    .as_ref()
                    .map(|s| SubscriptionId::from(s.as_str())),
            },
        }
    }
}

/// A client frame whose required headers are present and well formed.
#[derive(Debug, Clone)]
pub enum ClientFrame {
    /// CONNECT or STOMP.
    Connect(Connect),
    /// SEND.
    Send {
        /// Where to.
        destination: ByteString,
        /// Buffer until COMMIT of this transaction.
        transaction: Option<ByteString>,
        /// The headers to pass on to subscribers.
        headers: Headers,
        /// The body.
        body: Bytes,
        /// `x-ephemeral:true`: not kept in topic history.
        ephemeral: bool,
        /// `mandatory:true` (AMQP's name): refuse it when no binding of an
        /// exchange takes it, rather than drop it.
        mandatory: bool,
    },
    /// SUBSCRIBE.
    Subscribe {
        /// What to.
        destination: ByteString,
        /// The client's id for it.
        id: SubscriptionId,
        /// How the client acknowledges.
        ack: AckMode,
        /// `prefetch-count`, when given.
        prefetch: Option<usize>,
        /// History and presence requests (topics only).
        options: TopicOptions,
        /// A durable subscription asked for (topics only).
        durable: Option<DurableName>,
        /// `x-ack-timeout`: deliveries not acknowledged in time are taken back.
        ack_timeout: Option<std::time::Duration>,
        /// For an exchange subscription: `x-match` and the `x-bind-NAME`
        /// header values (names without the prefix) of its binding.
        bind_arguments: Vec<(String, String)>,
        /// `selector`: only messages whose headers it selects.
        selector: Option<Arc<crate::broker::Selector>>,
    },
    /// UNSUBSCRIBE.
    Unsubscribe {
        /// Which subscription (absent when only a durable one is deleted by name).
        id: Option<SubscriptionId>,
        /// Delete this durable subscription too, not just stop it.
        forget: Option<DurableName>,
    },
    /// ACK.
    Ack {
        /// Which delivery.
        target: AckTarget,
        /// Buffer until COMMIT of this transaction.
        transaction: Option<ByteString>,
    },
    /// NACK.
    Nack {
        /// Which delivery.
        target: AckTarget,
        /// `requeue:false` (RabbitMQ's header): dead-letter it instead of
        /// delivering it again.
        requeue: bool,
        /// Buffer until COMMIT of this transaction.
        transaction: Option<ByteString>,
    },
    /// BEGIN.
    Begin(ByteString),
    /// COMMIT.
    Commit(ByteString),
    /// ABORT.
    Abort(ByteString),
    /// DISCONNECT.
    Disconnect,
}

/// Whether the broker sets this header on MESSAGE itself (a SEND's is
/// dropped, so it cannot be forged).
pub fn is_broker_header(name: &str) -> bool {
    BROKER_HEADERS.contains(&name)
}

const BROKER_HEADERS: [&str; 15] = [
    "destination",
    "message-id",
    "subscription",
    "ack",
    "redelivered",
    "receipt",
    "transaction",
    "content-length",
    "x-stream-epoch",
    "x-stream-position",
    "x-history",
    "x-recovery",
    "x-presence-event",
    "x-delivery-count",
    "x-sender",
];

/// How a client names a durable topic subscription, in the dialects
/// clients already speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurableName {
    /// RabbitMQ: `durable:true` (or `persistent:true`) on the subscription `id`.
    ById,
    /// ActiveMQ (`activemq.subscriptionName`) and Artemis
    /// (`durable-subscription-name`), with `client-id` on CONNECT.
    Named(String),
}

impl ClientFrame {
    /// Validates a decoded frame for a session speaking `version`.
    pub fn parse(frame: &Frame, version: Version) -> Result<ClientFrame, SessionError> {
        let transaction = frame.headers.get_shared("transaction").cloned();
        Ok(match frame.command {
            Command::Connect | Command::Stomp => ClientFrame::Connect(Connect {
                accept_version: frame.headers.get("accept-version").map(str::to_string),
                host: frame.headers.get("host").map(str::to_string),
                login: frame.headers.get("login").map(str::to_string),
                client_id: frame.headers.get("client-id").map(str::to_string),
                passcode: frame.headers.get("passcode").map(str::to_string),
                heart_beat: parse_heart_beat(frame.headers.get("heart-beat"))?,
                will: parse_will(frame)?,
            }),
            Command::Send => {
                let destination = canonical(required(frame, "destination")?);
                // Sized exactly: the list lives as long as the message, and
                // room for the headers dropped here cost 190 bytes a message.
                let kept = |name: &str| !BROKER_HEADERS.contains(&name);
                // One more for the `x-sender` the session adds.
                let mut headers = Headers::with_capacity(
                    frame.headers.iter().filter(|(n, _)| kept(n)).count() + 1,
                );
                for (name, value) in frame.headers.iter_shared() {
                    if kept(name) {
                        headers.push(name.clone(), value.clone());
                    }
                }
                crate::terms::validate(&frame.headers).map_err(|e| {
                    SessionError::InvalidHeader {
                        header: e.header,
                        value: e.value,
                        expected: e.expected,
                    }
                })?;
                if let Some(value) = frame.headers.get("persistent")
                    && value != "true"
                    && value != "false"
                {
                    return Err(SessionError::InvalidHeader {
                        header: "persistent",
                        value: value.chars().take(40).collect(),
                        expected: "true or false",
                    });
                }
                ClientFrame::Send {
                    destination,
                    transaction,
                    mandatory: frame.headers.get("mandatory") == Some("true"),
                    ephemeral: frame.headers.get("x-ephemeral") == Some("true"),
                    headers,
                    body: frame.body.clone(),
                }
            }
            Command::Subscribe => {
                let destination = canonical(required(frame, "destination")?);
                // 1.0 made the id optional; its UNSUBSCRIBE can name the destination instead.
                let id = match frame.headers.get_shared("id") {
                    Some(id) => id.clone(),
                    None if version == Version::V1_0 => destination.clone(),
                    None => required(frame, "id")?,
                };
                if id.chars().any(char::is_control) {
                    return Err(SessionError::InvalidHeader {
                        header: "id",
                        value: id.chars().take(40).collect(),
                        expected: "printable text without control characters",
                    });
                }
                let ack_value = frame.headers.get("ack");
                let ack = AckMode::parse(ack_value).ok_or_else(|| SessionError::InvalidHeader {
                    header: "ack",
                    value: ack_value.unwrap_or_default().to_string(),
                    expected: "auto, client or client-individual",
                })?;
                let prefetch = match frame.headers.get("prefetch-count") {
                    None => None,
                    Some(v) => Some(v.trim().parse::<usize>().map_err(|_| {
                        SessionError::InvalidHeader {
                            header: "prefetch-count",
                            value: v.chars().take(40).collect(),
                            expected: "a non-negative integer",
                        }
                    })?),
                };
                let ack_timeout = frame
                    .headers
                    .get("x-ack-timeout")
                    .map(crate::terms::ack_timeout)
                    .transpose()
                    .map_err(|e| SessionError::InvalidHeader {
                        header: e.header,
                        value: e.value,
                        expected: e.expected,
                    })?;
                let bind_arguments = frame
                    .headers
                    .iter()
                    .filter_map(|(n, v)| {
                        if n == "x-match" {
                            Some((n.to_string(), v.to_string()))
                        } else {
                            n.strip_prefix("x-bind-")
                                .filter(|name| !name.is_empty())
                                .map(|name| (name.to_string(), v.to_string()))
                        }
                    })
                    .collect();
                let selector = frame
                    .headers
                    .get("selector")
                    .map(|text| crate::broker::Selector::parse(text).map(Arc::new))
                    .transpose()
                    .map_err(|e| SessionError::Selector(e.to_string()))?;
                ClientFrame::Subscribe {
                    selector,
                    bind_arguments,
                    ack_timeout,
                    options: parse_topic_options(frame)?,
                    durable: parse_durable(frame)?,
                    destination,
                    id: SubscriptionId::from(id),
                    ack,
                    prefetch,
                }
            }
            Command::Unsubscribe => {
                let forget = parse_durable(frame)?;
                let id = match frame.headers.get_shared("id") {
                    Some(id) => Some(id.clone()),
                    None if version == Version::V1_0 => {
                        frame.headers.get_shared("destination").cloned()
                    }
                    None => None,
                };
                // Deleting a durable subscription by name needs no id.
                let id = match (id, &forget) {
                    (Some(id), _) => Some(SubscriptionId::from(id)),
                    (None, Some(DurableName::Named(_))) => None,
                    (None, _) if version == Version::V1_0 => {
                        Some(SubscriptionId::from(required(frame, "destination")?))
                    }
                    (None, _) => Some(SubscriptionId::from(required(frame, "id")?)),
                };
                ClientFrame::Unsubscribe { id, forget }
            }
            Command::Ack | Command::Nack => {
                if frame.command == Command::Nack && version == Version::V1_0 {
                    return Err(SessionError::NotInVersion {
                        command: "NACK",
                        version,
                    });
                }
                let target = match version {
                    Version::V1_2 => AckTarget::Id(required(frame, "id")?),
                    Version::V1_1 => AckTarget::MessageId {
                        message_id: required(frame, "message-id")?,
                        subscription: Some(SubscriptionId::from(required(frame, "subscription")?)),
                    },
                    Version::V1_0 => AckTarget::MessageId {
                        message_id: required(frame, "message-id")?,
                        subscription: frame
                            .headers
                            .get_shared("subscription")
                            .cloned()
                            .map(SubscriptionId::from),
                    },
                };
                if frame.command == Command::Ack {
                    ClientFrame::Ack {
                        target,
                        transaction,
                    }
                } else {
                    let requeue = match frame.headers.get("requeue") {
                        None | Some("true") => true,
                        Some("false") => false,
                        Some(other) => {
                            return Err(SessionError::InvalidHeader {
                                header: "requeue",
                                value: other.chars().take(40).collect(),
                                expected: "true (deliver it again, the default) or false (dead-letter it)",
                            });
                        }
                    };
                    ClientFrame::Nack {
                        target,
                        requeue,
                        transaction,
                    }
                }
            }
            Command::Begin => ClientFrame::Begin(required(frame, "transaction")?),
            Command::Commit => ClientFrame::Commit(required(frame, "transaction")?),
            Command::Abort => ClientFrame::Abort(required(frame, "transaction")?),
            Command::Disconnect => ClientFrame::Disconnect,
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return Err(SessionError::ServerCommand {
                    command: frame.command.as_str(),
                });
            }
        })
    }
}
