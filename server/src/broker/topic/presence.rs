//! Who is present in a topic: members announce themselves (`x-presence`),
//! watchers get a snapshot and then each join and leave.

use std::sync::Arc;

use bytes::Bytes;

use crate::broker::Message;

use super::{Subscriber, TopicDestination};

/// A subscriber announcing itself (`x-presence`, `x-presence-meta`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Presence {
    /// Display name.
    pub name: String,
    /// Small free-form metadata (for example JSON with an avatar colour).
    pub meta: String,
    /// The subscriber's authenticated login (set by the session, not the
    /// client), so a display name can be told from who it really is.
    pub login: String,
}

impl TopicDestination {
    /// Tells the watching `others` that `who` joined or left, if `who` is present.
    pub(super) fn announce(&self, others: &[Subscriber], event: &str, who: &Subscriber) {
        let Some(p) = &who.presence else {
            return;
        };
        let notice = self.control(
            &[
                ("x-presence-event", event),
                ("content-type", "application/json"),
            ],
            Bytes::from(member_json(&self.member_id(who), p)),
        );
        for other in others.iter().filter(|s| s.watches()) {
            self.push_control(other, notice.clone());
        }
    }

    /// Tells this node's watchers of a join or leave on another node.
    pub fn announce_remote(&self, event: &str, json: &str) {
        let state = self.lock();
        let notice = self.control(
            &[
                ("x-presence-event", event),
                ("content-type", "application/json"),
            ],
            Bytes::from(json.to_string()),
        );
        for watcher in state.subscribers.iter().filter(|s| s.watches()) {
            self.push_control(watcher, notice.clone());
        }
    }

    /// The presence snapshot: every member present, as a JSON array.
    pub(super) fn presence_snapshot(&self, members: &[String]) -> Arc<Message> {
        self.control(
            &[
                ("x-presence-event", "snapshot"),
                ("content-type", "application/json"),
            ],
            Bytes::from(format!("[{}]", members.join(","))),
        )
    }

    /// A subscriber's presence entry, if it announced itself.
    pub(super) fn member_json(&self, s: &Subscriber) -> Option<String> {
        s.presence
            .as_ref()
            .map(|p| member_json(&self.member_id(s), p))
    }

    pub(super) fn member_id(&self, s: &Subscriber) -> String {
        s.member_id(self.cluster.as_ref().map(|c| c.node()))
    }
}

impl Subscriber {
    /// Present subscribers see each other; others only when they asked to watch.
    pub(super) fn watches(&self) -> bool {
        self.watch_presence || self.presence.is_some()
    }

    /// Unique in the broker; a cluster node's start with the node's id.
    pub(super) fn member_id(&self, node: Option<&str>) -> String {
        match node {
            Some(node) => format!("{node}.{}.{}", self.session.0, self.subscription.as_str()),
            None => format!("{}.{}", self.session.0, self.subscription.as_str()),
        }
    }
}

pub(super) fn member_json(id: &str, presence: &Presence) -> String {
    format!(
        "{{\"id\":{},\"name\":{},\"meta\":{},\"login\":{}}}",
        json_string(id),
        json_string(&presence.name),
        json_string(&presence.meta),
        json_string(&presence.login)
    )
}

/// A JSON string literal: the few escapes JSON requires, no dependency needed.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
