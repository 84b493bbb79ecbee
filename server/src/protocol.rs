//! Typed, validated client frames, and the frames the server builds.

use bytes::Bytes;
use bytes::BytesMut;
use stomp_codec::{ByteString, Command, EncodeError, Frame, Headers, Version, encode_frame};

use std::sync::Arc;

use crate::broker::{
    AckMode, Charge, Delivery, DestinationKind, Message, Presence, Recovery, TopicOptions,
};
use crate::error::SessionError;
use crate::ids::SubscriptionId;

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

/// Headers the broker sets on MESSAGE itself, so a SEND cannot forge them.
/// Whether the broker sets this header itself (a client's is dropped).
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

/// Longest presence name and metadata accepted.
const MAX_PRESENCE_NAME: usize = 64;
const MAX_PRESENCE_META: usize = 1024;

/// A destination under the name it has here (RabbitMQ's aliases resolved).
fn canonical(destination: ByteString) -> ByteString {
    match crate::broker::exchange::alias(&destination) {
        Some(name) => ByteString::from(name),
        None => destination,
    }
}

fn required(frame: &Frame, header: &'static str) -> Result<ByteString, SessionError> {
    frame
        .headers
        .get_shared(header)
        .cloned()
        .ok_or(SessionError::MissingHeader {
            command: frame.command.as_str(),
            header,
        })
}

fn parse_heart_beat(value: Option<&str>) -> Result<(u64, u64), SessionError> {
    let Some(value) = value else {
        return Ok((0, 0));
    };
    let invalid = || SessionError::InvalidHeader {
        header: "heart-beat",
        value: value.chars().take(80).collect(),
        expected: "two non-negative integers in milliseconds, like 10000,10000",
    };
    let (cx, cy) = value.split_once(',').ok_or_else(invalid)?;
    let cx = cx.trim().parse().map_err(|_| invalid())?;
    let cy = cy.trim().parse().map_err(|_| invalid())?;
    Ok((cx, cy))
}

fn parse_will(frame: &Frame) -> Result<Option<Will>, SessionError> {
    let Some(destination) = frame.headers.get_shared("x-will-destination") else {
        return Ok(None);
    };
    DestinationKind::of(destination)?;
    let mut headers = Headers::new();
    for (name, value) in frame.headers.iter() {
        if let Some(name) = name.strip_prefix("x-will-header-")
            && !name.is_empty()
            && !BROKER_HEADERS.contains(&name)
        {
            headers.push(name, value);
        }
    }
    Ok(Some(Will {
        destination: destination.clone(),
        headers,
        body: Bytes::from(
            frame
                .headers
                .get("x-will-body")
                .unwrap_or_default()
                .to_string(),
        ),
    }))
}

fn parse_topic_options(frame: &Frame) -> Result<TopicOptions, SessionError> {
    let number = |header: &'static str| -> Result<Option<u64>, SessionError> {
        frame
            .headers
            .get(header)
            .map(|v| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| SessionError::InvalidHeader {
                        header,
                        value: v.chars().take(40).collect(),
                        expected: "a non-negative integer",
                    })
            })
            .transpose()
    };
    let epoch = || {
        frame
            .headers
            .get("x-since-epoch")
            .unwrap_or_default()
            .to_string()
    };
    let history = number("x-history")?.map(|n| usize::try_from(n).unwrap_or(usize::MAX));
    let recovery = match (number("x-history-before")?, number("x-since")?, history) {
        // Older history, a page at a time: the client scrolled up.
        (Some(position), _, n) => Some(Recovery::Before {
            epoch: epoch(),
            position,
            n: n.unwrap_or(50),
        }),
        (None, Some(position), _) => Some(Recovery::Since {
            epoch: epoch(),
            position,
        }),
        (None, None, Some(n)) => Some(Recovery::Last(n)),
        (None, None, None) => None,
    };
    let presence = match frame.headers.get("x-presence") {
        None => None,
        Some(name) => {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > MAX_PRESENCE_NAME {
                return Err(SessionError::InvalidHeader {
                    header: "x-presence",
                    value: name.chars().take(80).collect(),
                    expected: "a display name of 1 to 64 characters",
                });
            }
            let meta = frame.headers.get("x-presence-meta").unwrap_or_default();
            if meta.len() > MAX_PRESENCE_META {
                return Err(SessionError::InvalidHeader {
                    header: "x-presence-meta",
                    value: meta.chars().take(80).collect(),
                    expected: "at most 1024 bytes of metadata",
                });
            }
            Some(Presence {
                name: name.to_string(),
                meta: meta.to_string(),
                // Set by the session, which knows who logged in.
                login: String::new(),
            })
        }
    };
    Ok(TopicOptions {
        recovery,
        presence,
        watch_presence: frame.headers.get("x-presence-watch") == Some("true"),
        // Set by the session, which knows who is asking.
        durable: None,
    })
}

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

/// The durable-subscription headers of a SUBSCRIBE or UNSUBSCRIBE.
fn parse_durable(frame: &Frame) -> Result<Option<DurableName>, SessionError> {
    let named = frame
        .headers
        .get("activemq.subscriptionName")
        .map(|v| ("activemq.subscriptionName", v))
        .or_else(|| {
            frame
                .headers
                .get("durable-subscription-name")
                .map(|v| ("durable-subscription-name", v))
        });
    if let Some((header, name)) = named {
        if name.is_empty() || name.chars().any(char::is_control) {
            return Err(SessionError::InvalidHeader {
                header,
                value: name.chars().take(40).collect(),
                expected: "a non-empty name without control characters",
            });
        }
        return Ok(Some(DurableName::Named(name.to_string())));
    }
    let flag = |name: &str| frame.headers.get(name) == Some("true");
    let by_id =
        (flag("durable") || flag("persistent")) && frame.headers.get("auto-delete") != Some("true");
    Ok(by_id.then_some(DurableName::ById))
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

/// The message as a receiver of `version` can be sent it: `None` when every
/// header can be written as it is (always so for 1.2), otherwise a copy
/// without the headers that version cannot carry (a line break in a 1.0
/// value, a carriage return in 1.1, a colon in a 1.0 name). Dropping them
/// beats the alternative, a message the receiver never gets.
pub fn fit_for_version(message: &Message, version: Version) -> Option<Arc<Message>> {
    let fits = |(name, value): (&str, &str)| {
        stomp_codec::header_encodable(Command::Message, version, name, value)
    };
    if version == Version::V1_2 || message.headers.iter().all(fits) {
        return None;
    }
    Some(Arc::new(Message {
        id: message.id.clone(),
        destination: message.destination.clone(),
        headers: message
            .headers
            .iter_shared()
            .filter(|(n, v)| fits((n, v)))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body: message.body.clone(),
        stream: message.stream.clone(),
        ephemeral: message.ephemeral,
        // A copy for one write, dropped right after: the original keeps the charge.
        charge: Charge::none(),
        journal: None,
        terms: message.terms,
    }))
}

/// Writes the MESSAGE for a delivery straight into `dst`, from the shared
/// message and the subscriber's few headers: no `Frame`, no header list and
/// no string is allocated per subscriber. `ack_id` is set when the client
/// must acknowledge. The message's own headers come from the delivery's
/// [`HeaderBlock`](crate::broker::HeaderBlock) when it has one for `version` (encoded by the first of
/// the message's receivers), so a fan-out escapes them once.
pub fn encode_message(
    delivery: &Delivery,
    ack_id: Option<u64>,
    version: Version,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let message = &delivery.message;
    let mut ack_text = itoa::Buffer::new();
    let mut count_text = itoa::Buffer::new();
    // The delivery's own headers in a small array: a chain of one adapter
    // per optional header cost every header a walk down the whole chain
    // (about 900 instructions a MESSAGE for one more optional header,
    // callgrind on bench queue).
    let mut own: [(&str, &str); 5] = [("", ""); 5];
    let mut n = 0;
    own[n] = ("subscription", delivery.subscription.as_str());
    n += 1;
    if let Some(id) = ack_id {
        own[n] = ("ack", ack_text.format(id));
        n += 1;
    }
    if delivery.redelivered {
        own[n] = ("redelivered", "true");
        n += 1;
    }
    if let Some(count) = delivery.delivery_count {
        own[n] = ("x-delivery-count", count_text.format(count));
        n += 1;
    }
    if delivery.history {
        own[n] = ("x-history", "true");
        n += 1;
    }
    let own = &own[..n];
    if let Some(shared) = &delivery.header_block {
        let block = shared.get_or_encode(version, || {
            let mut position_text = itoa::Buffer::new();
            let (broker, n) = broker_headers(delivery, &mut position_text);
            let headers = broker[..n].iter().copied().chain(message.headers.iter());
            let text: usize = message
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 2)
                .sum();
            let mut block = BytesMut::with_capacity(160 + text);
            stomp_codec::encode_header_block(
                Command::Message,
                headers,
                message.body.len(),
                version,
                &mut block,
            )
            .ok()
            .map(|()| block.freeze())
        });
        if let Some(block) = block {
            return stomp_codec::encode_frame_with_block(
                Command::Message,
                own.iter().copied(),
                block,
                &message.body,
                version,
                dst,
            );
        }
    }
    let mut position_text = itoa::Buffer::new();
    let (broker, n) = broker_headers(delivery, &mut position_text);
    // In one array, so the sender's headers sit behind a single chain.
    let mut all: [(&str, &str); 10] = [("", ""); 10];
    all[..own.len()].copy_from_slice(own);
    all[own.len()..own.len() + n].copy_from_slice(&broker[..n]);
    let headers = all[..own.len() + n]
        .iter()
        .copied()
        .chain(message.headers.iter());
    encode_frame(Command::Message, headers, &message.body, version, dst)
}

/// The headers every receiver of the delivery's message gets alike, that
/// the broker sets (id, destination, stream position), in an array with
/// its length; the sender's follow them.
fn broker_headers<'a>(
    delivery: &'a Delivery,
    position_text: &'a mut itoa::Buffer,
) -> ([(&'a str, &'a str); 5], usize) {
    let message = &delivery.message;
    let mut broker: [(&str, &str); 5] = [("", ""); 5];
    broker[0] = ("message-id", message.id.as_str());
    broker[1] = ("destination", &*message.destination);
    let mut n = 2;
    if let Some(s) = &message.stream {
        broker[n] = ("x-stream-epoch", &s.epoch);
        broker[n + 1] = ("x-stream-position", position_text.format(s.position));
        n += 2;
    }
    // Durable by the queue's policy without the SEND saying so: the
    // receiver learns it as RabbitMQ's and ActiveMQ's clients expect.
    // (Queue deliveries only, which never share a block.)
    if delivery.tag.as_ref().is_some_and(|t| t.durable) && !message.headers.contains("persistent") {
        broker[n] = ("persistent", "true");
        n += 1;
    }
    (broker, n)
}

/// A RECEIPT for the frame that carried `receipt`.
pub fn receipt_frame(receipt: ByteString) -> Frame {
    Frame::new(Command::Receipt).header("receipt-id", receipt)
}

/// The ERROR frame for a client's mistake: a short `message`, then a body
/// that explains and quotes the frame that caused it.
pub fn error_frame(
    error: &SessionError,
    offending: Option<&str>,
    receipt: Option<ByteString>,
) -> Frame {
    let mut body = String::new();
    body.push_str(&error.to_string());
    body.push_str("\n\n");
    body.push_str(error.explanation());
    body.push('\n');
    if let Some(quoted) = offending {
        body.push_str("\nThe frame received:\n-----\n");
        body.push_str(quoted);
        body.push_str("\n-----\n");
    }
    let mut frame = Frame::new(Command::Error)
        .header("message", message_header(&error.to_string()))
        .header("content-type", "text/plain");
    if let SessionError::UnsupportedVersion { .. } = error {
        frame = frame.header("version", "1.0,1.1,1.2");
    }
    if let Some(receipt) = receipt {
        frame = frame.header("receipt-id", receipt);
    }
    frame.body(body)
}

/// An ERROR the broker sends on its own account (shutdown, slow consumer, timeouts).
pub fn notice_frame(message: &str, explanation: &str) -> Frame {
    Frame::new(Command::Error)
        .header("message", message_header(message))
        .header("content-type", "text/plain")
        .body(format!("{message}\n\n{explanation}\n"))
}

/// The `message` header of an ERROR: one line, and ": " written as " - ",
/// because 1.1 and 1.2 escape every colon in a header value as `\c`, which
/// a person reading the frame in telnet should not have to decode. The
/// body keeps the text as it is.
fn message_header(s: &str) -> String {
    one_line(s).replace(": ", " - ")
}

/// Text on a single line, so quoted header values stay readable.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The first line of unparsed input, without its line ending.
pub fn first_line(buf: &[u8]) -> &[u8] {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The command and header lines of input that failed to decode, for quoting
/// in an ERROR body, so the line at fault is among them: up to the empty
/// line or the NUL, at most 20 lines of 120 characters each, passcodes
/// hidden. `None` when nothing is pending.
pub fn quote_unparsed(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return None;
    }
    let head = buf.split(|&b| b == 0).next().unwrap_or_default();
    let mut lines = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || lines.len() == 20 {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let cut: String = text.chars().take(120).collect();
        lines.push(if cut.starts_with("passcode:") {
            "passcode:********".to_string()
        } else {
            cut
        });
    }
    Some(lines.join("\n"))
}

/// The command and header lines of a frame, for quoting in an ERROR body.
/// Values are cut so that a huge header does not make a huge ERROR.
pub fn quote_frame(frame: &Frame) -> String {
    let mut out = String::from(frame.command.as_str());
    for (name, value) in frame.headers.iter().take(20) {
        out.push('\n');
        out.push_str(name);
        out.push(':');
        // A secret is never echoed, not even back to whoever sent it: the
        // ERROR may end up in a log or on a screen.
        if name == "passcode" {
            out.push_str("********");
            continue;
        }
        let cut: String = value.chars().take(120).collect();
        out.push_str(&one_line(&cut));
    }
    if frame.headers.len() > 20 {
        out.push_str("\n…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsed_input_is_quoted_up_to_the_headers_end_with_passcodes_hidden() {
        let quoted = quote_unparsed(
            b"CONNECT\r\nlogin:ana\r\npasscode:secret\r\ndestination /queue/a\r\n\r\nbody\0",
        );
        assert_eq!(
            quoted.as_deref(),
            Some("CONNECT\nlogin:ana\npasscode:********\ndestination /queue/a")
        );
        assert_eq!(quote_unparsed(b""), None);
        let many: Vec<u8> = (0..30)
            .flat_map(|i| format!("h{i}:v\n").into_bytes())
            .collect();
        assert_eq!(quote_unparsed(&many).map(|q| q.lines().count()), Some(20));
        let long = [b'x'; 500];
        assert_eq!(quote_unparsed(&long).map(|q| q.len()), Some(120));
        assert_eq!(first_line(b"SEND\r\ndestination:/q\n"), b"SEND");
    }

    fn topic_delivery(
        message: &Arc<Message>,
        subscription: &str,
        block: Option<Arc<crate::broker::HeaderBlock>>,
    ) -> Delivery {
        Delivery {
            subscription: SubscriptionId::from(subscription),
            message: message.clone(),
            redelivered: false,
            ack: AckMode::Client,
            tag: None,
            history: true,
            control: false,
            delivery_count: None,
            ack_timeout_ms: 0,
            header_block: block,
        }
    }

    fn topic_message(headers: &[(&str, &str)]) -> Arc<Message> {
        Arc::new(Message {
            id: crate::ids::MessageId::new(7),
            destination: ByteString::from("/topic/t"),
            headers: headers.iter().copied().collect(),
            body: Bytes::from_static(b"hello"),
            stream: Some(Box::new(crate::broker::StreamPosition {
                epoch: ByteString::from("e1"),
                position: 3,
            })),
            ephemeral: false,
            charge: Charge::none(),
            journal: None,
            terms: Default::default(),
        })
    }

    /// Encodes the message for each (version, subscription, ack id) in
    /// turn, sharing `block`, and checks each frame against the one
    /// encoded without a block.
    fn same_as_alone(
        message: &Arc<Message>,
        block: &Arc<crate::broker::HeaderBlock>,
        versions: &[Version],
    ) {
        for &version in versions {
            for (subscription, ack_id) in [("s:1", Some(1)), ("two", None), ("three", Some(9))] {
                let alone = topic_delivery(message, subscription, None);
                let mut expected = BytesMut::new();
                let alone_result = encode_message(&alone, ack_id, version, &mut expected);
                let shared = topic_delivery(message, subscription, Some(block.clone()));
                let mut got = BytesMut::new();
                let shared_result = encode_message(&shared, ack_id, version, &mut got);
                let context = format!("{version} {subscription}");
                assert_eq!(shared_result.is_ok(), alone_result.is_ok(), "{context}");
                assert_eq!(got, expected, "{context}");
            }
        }
    }

    #[test]
    fn receivers_sharing_a_header_block_get_the_frame_each_would_get_alone() {
        // Texts each version escapes differently, and one 1.0 cannot carry.
        let message = topic_message(&[
            ("x-colon", "a:b"),
            ("x-lf", "two\nlines"),
            ("x-back", "c\\d"),
        ]);
        // The first receiver's version (1.2) keeps the block; the others
        // encode whole.
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_2, Version::V1_1, Version::V1_0],
        );
        let kept = block.get_or_encode(Version::V1_2, || unreachable!());
        assert!(kept.is_some_and(|b| b.starts_with(b"message-id:") && b.ends_with(b"\n\n")));
        assert_eq!(block.get_or_encode(Version::V1_1, || unreachable!()), None);
        // A first receiver that cannot take a header leaves the block empty,
        // and the rest are encoded whole.
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_0, Version::V1_2, Version::V1_1],
        );
        assert_eq!(block.get_or_encode(Version::V1_2, || unreachable!()), None);
        // 1.1 first, with headers it can carry.
        let message = topic_message(&[("x-colon", "a:b"), ("x-back", "c\\d")]);
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_1, Version::V1_0, Version::V1_2],
        );
        assert!(
            block
                .get_or_encode(Version::V1_1, || unreachable!())
                .is_some()
        );
    }
}
