//! `/sys/rooms`: the chat rooms that exist (`/topic/chat.*` topics with
//! subscribers or kept history) and how many subscribers each has, as one
//! JSON MESSAGE when a connection subscribes. Only rooms the login may
//! read are listed, so the directory shows nothing its permissions hide.
//! A client subscribes again to refresh it.

use crate::broker::{Broker, Destination};

/// The destination a client subscribes to for the directory.
pub(super) const ROOMS: &str = "/sys/rooms";

/// The rooms' prefix, and the most listed (the busiest first).
const CHAT: &str = "/topic/chat.";
const MAX_ROOMS: usize = 500;

/// The directory as JSON: `[{"name": "general", "destination":
/// "/topic/chat.general", "subscribers": 3}, ...]`, busiest first.
pub(super) fn rooms(broker: &Broker, may_read: impl Fn(&str) -> bool) -> String {
    let mut rooms: Vec<(String, usize)> = broker
        .all_destinations()
        .into_iter()
        .filter_map(|d| match d {
            Destination::Topic(t) if t.name().starts_with(CHAT) && may_read(t.name()) => {
                Some((t.name().to_string(), t.subscriber_count()))
            }
            _ => None,
        })
        .collect();
    rooms.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    rooms.truncate(MAX_ROOMS);
    let list: Vec<serde_json::Value> = rooms
        .into_iter()
        .map(|(destination, subscribers)| {
            serde_json::json!({
                "name": &destination[CHAT.len()..],
                "destination": destination,
                "subscribers": subscribers,
            })
        })
        .collect();
    serde_json::Value::Array(list).to_string()
}
