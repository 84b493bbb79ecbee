//! Topics through Redis: a publish runs the topic's script (position,
//! history, channel), the node follows the channels its subscribers need,
//! and a subscriber's history is read from the topic's Stream.

use std::time::Duration;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::broker::{Charge, Recovery};
use crate::store::Completion;

use super::link::{Interest, Request, now_ms};
use super::{Cluster, ClusterError, REQUEST_TIMEOUT, glob_of, key, wire};

/// A topic's kept history, as read for one subscriber.
#[derive(Debug, Default)]
pub struct History {
    /// The topic's epoch.
    pub epoch: String,
    /// The last position given out.
    pub head: u64,
    /// The oldest position still kept (head + 1 when none is).
    pub oldest: u64,
    /// Entries in position order: position, age, headers and body.
    pub entries: Vec<(u64, Duration, Headers, Bytes)>,
}

impl Cluster {
    /// Hands a topic message to Redis; the completion is done once Redis
    /// has it. Refused at once while Redis is unreachable.
    pub fn publish(
        &self,
        topic: &ByteString,
        headers: &Headers,
        body: &[u8],
        policy: &crate::broker::TopicPolicy,
        ephemeral: bool,
        charge: Charge,
    ) -> Result<Completion, ClusterError> {
        let link = self.link(topic);
        if !link.is_up() {
            return Err(ClusterError::Unavailable(link.shown.clone()));
        }
        Ok(self.request(
            link,
            Request::Publish {
                topic: topic.clone(),
                frame: wire::encode(headers, body),
                keep: policy.history,
                max_age_ms: policy.max_age_secs.saturating_mul(1000),
                ephemeral,
            },
            Some(charge),
        ))
    }

    /// One more local subscription to `topic`: the node subscribes to its
    /// channel on the first. The completion is done once the channel
    /// subscription is in place, so a RECEIPT for the SUBSCRIBE means
    /// messages published anywhere from then on arrive.
    pub fn watch(&self, topic: &str) -> Completion {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let entry = channels.entry(ByteString::from(topic)).or_insert((0, 0));
        entry.0 += 1;
        if entry.0 == 1 {
            entry.1 = self.tickets.take();
            let _ = self
                .link(topic)
                .interest
                .send(Interest::Subscribe(ByteString::from(topic)));
        }
        Completion::after_ticket(entry.1)
    }

    /// One local subscription to `topic` fewer: the node leaves its
    /// channel after the last.
    pub fn unwatch(&self, topic: &str) {
        let mut channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = channels.get_mut(topic) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            channels.remove(topic);
            let _ = self
                .link(topic)
                .interest
                .send(Interest::Unsubscribe(ByteString::from(topic)));
        }
    }

    /// One more local wildcard subscription under `pattern` (`a.*`): the
    /// node follows every topic channel it may match.
    pub fn watch_pattern(&self, pattern: &str) -> Completion {
        let glob = glob_of(pattern);
        let mut patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = patterns.entry(glob.clone()).or_insert((0, Vec::new()));
        entry.0 += 1;
        if entry.0 == 1 {
            // Every Redis holds some topics: the pattern is followed on all.
            entry.1 = self.links.iter().map(|_| self.tickets.take()).collect();
            for link in &self.links {
                let _ = link.interest.send(Interest::PSubscribe(glob.clone()));
            }
        }
        Completion::after_ticket(entry.1.iter().copied().max().unwrap_or(0))
    }

    /// One local wildcard subscription under `pattern` fewer.
    pub fn unwatch_pattern(&self, pattern: &str) {
        let glob = glob_of(pattern);
        let mut patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let Some(entry) = patterns.get_mut(&glob) else {
            return;
        };
        entry.0 = entry.0.saturating_sub(1);
        if entry.0 == 0 {
            patterns.remove(&glob);
            for link in &self.links {
                let _ = link.interest.send(Interest::PUnsubscribe(glob.clone()));
            }
        }
    }

    /// Drops `topic`'s kept history (an operator's purge); returns how
    /// many messages went. Positions go on from where they were.
    pub async fn purge_topic(&self, topic: &str) -> Result<u64, ClusterError> {
        let link = self.link(topic);
        let Some(mut conn) = link.connection() else {
            return Err(ClusterError::Unavailable(link.shown.clone()));
        };
        let trimmed: u64 = tokio::time::timeout(
            REQUEST_TIMEOUT,
            redis::cmd("XTRIM")
                .arg(key(topic, "s"))
                .arg("MAXLEN")
                .arg(0)
                .query_async(&mut conn),
        )
        .await
        .map_err(|_| ClusterError::Unavailable(link.shown.clone()))?
        .map_err(|e| ClusterError::Redis(e.to_string()))?;
        Ok(trimmed)
    }

    /// Reads `topic`'s kept history for `recovery`, at most `limit`
    /// messages, those older than `max_age` left out.
    pub async fn history(
        &self,
        topic: &str,
        recovery: &Recovery,
        limit: usize,
        max_age: Option<Duration>,
    ) -> Result<History, ClusterError> {
        let link = self.link(topic);
        let Some(mut conn) = link.connection() else {
            return Err(ClusterError::Unavailable(link.shown.clone()));
        };
        // Positions stay far inside a Lua number's exact range.
        let clamp = |p: u64| p.min(1 << 52);
        let (mode, position, n, epoch) = match recovery {
            Recovery::Last(n) => ("last", 0, (*n).min(limit), ""),
            Recovery::Since { epoch, position } => {
                ("after", clamp(*position), limit, epoch.as_str())
            }
            Recovery::Before { epoch, position, n } => {
                ("before", clamp(*position), (*n).min(limit), epoch.as_str())
            }
        };
        let mut call = self.history_script.prepare_invoke();
        call.key(key(topic, "s"))
            .key(key(topic, "e"))
            .key(key(topic, "n"))
            .arg(mode)
            .arg(position)
            .arg(n.max(1))
            .arg(epoch)
            .arg(format!("{}.{}", self.node, self.tickets.take_unnumbered()));
        let reply: Vec<Vec<u8>> =
            tokio::time::timeout(REQUEST_TIMEOUT, call.invoke_async(&mut conn))
                .await
                .map_err(|_| ClusterError::Unavailable(link.shown.clone()))?
                .map_err(|e| ClusterError::Redis(e.to_string()))?;
        parse_history(reply, max_age)
    }
}

/// Reads the history script's answer (see `scripts::HISTORY`).
fn parse_history(reply: Vec<Vec<u8>>, max_age: Option<Duration>) -> Result<History, ClusterError> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let number = |b: &[u8]| text(b).parse::<u64>().unwrap_or(0);
    let mut items = reply.into_iter();
    let (Some(epoch), Some(head), Some(oldest)) = (items.next(), items.next(), items.next()) else {
        return Err(ClusterError::Redis("short history reply".into()));
    };
    let now = now_ms();
    let mut entries = Vec::new();
    let rest: Vec<Vec<u8>> = items.collect();
    for chunk in rest.chunks(3) {
        let [position, at, frame] = chunk else {
            continue;
        };
        let age = Duration::from_millis(now.saturating_sub(number(at)));
        if max_age.is_some_and(|max| age > max) {
            continue;
        }
        match wire::decode(frame) {
            Ok((headers, body)) => entries.push((number(position), age, headers, body)),
            Err(e) => tracing::warn!(error = %e, "cluster: skipped an unreadable history entry"),
        }
    }
    Ok(History {
        epoch: text(&epoch),
        head: number(&head),
        oldest: number(&oldest),
        entries,
    })
}
