//! Reading the headers of client frames that carry more than a string:
//! heart-beats, the last will, topic options (history, presence), durable
//! subscription names.

use bytes::Bytes;
use stomp_codec::{ByteString, Frame, Headers};

use crate::broker::{DestinationKind, Presence, Recovery, TopicOptions};
use crate::error::SessionError;

use super::{BROKER_HEADERS, DurableName, Will};

/// Longest presence name and metadata accepted.
const MAX_PRESENCE_NAME: usize = 64;

const MAX_PRESENCE_META: usize = 1024;

/// A destination under the name it has here (RabbitMQ's aliases resolved).
pub(super) fn canonical(destination: ByteString) -> ByteString {
    match crate::broker::exchange::alias(&destination) {
        Some(name) => ByteString::from(name),
        None => destination,
    }
}

pub(super) fn required(frame: &Frame, header: &'static str) -> Result<ByteString, SessionError> {
    frame
        .headers
        .get_shared(header)
        .cloned()
        .ok_or(SessionError::MissingHeader {
            command: frame.command.as_str(),
            header,
        })
}

pub(super) fn parse_heart_beat(value: Option<&str>) -> Result<(u64, u64), SessionError> {
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

pub(super) fn parse_will(frame: &Frame) -> Result<Option<Will>, SessionError> {
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

pub(super) fn parse_topic_options(frame: &Frame) -> Result<TopicOptions, SessionError> {
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

/// The durable-subscription headers of a SUBSCRIBE or UNSUBSCRIBE.
pub(super) fn parse_durable(frame: &Frame) -> Result<Option<DurableName>, SessionError> {
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
