//! Destinations as a whole, for operators and the broker's background tasks:
//! listed, counted, deleted, swept when unused, compacted in the journal.

use std::sync::Arc;

use crate::store::Completion;

use super::{Broker, Compacted, Destination, exchange};

impl Broker {
    /// Every destination and exchange, sorted by name: what an operations
    /// API shows.
    pub fn list(&self) -> Vec<DestinationInfo> {
        let mut out = Vec::new();
        for d in self.all_destinations() {
            {
                out.push(match d {
                    Destination::Queue(q) => DestinationInfo {
                        name: q.name().to_string(),
                        kind: "queue".into(),
                        depth: q.depth(),
                        consumers: q.consumer_count(),
                        bindings: Vec::new(),
                    },
                    Destination::Topic(t) => DestinationInfo {
                        name: t.name().to_string(),
                        kind: "topic".into(),
                        depth: t.kept(),
                        consumers: t.subscriber_count(),
                        bindings: Vec::new(),
                    },
                });
            }
        }
        for x in self.exchanges.all() {
            out.push(DestinationInfo {
                name: format!("/exchange/{}", x.name()),
                kind: format!("{:?}", x.kind()).to_lowercase(),
                depth: 0,
                consumers: 0,
                bindings: x
                    .bindings()
                    .iter()
                    .map(|b| {
                        let target = match &b.target {
                            exchange::BindTarget::Queue(q) => q.to_string(),
                            exchange::BindTarget::Exchange(e) => format!("/exchange/{e}"),
                        };
                        format!("{} → {target}", b.key)
                    })
                    .collect(),
            });
        }
        if !self.wildcards.is_empty() {
            out.push(DestinationInfo {
                name: "/topic/ (wildcard subscriptions)".into(),
                kind: "patterns".into(),
                depth: 0,
                consumers: self.wildcards.len(),
                bindings: Vec::new(),
            });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Each queue's and each topic's counts, for `/metrics`.
    pub fn destination_counts(&self) -> crate::metrics::DestinationCounts {
        let (mut queues, mut topics) = (Vec::new(), Vec::new());
        for d in self.all_destinations() {
            match d {
                Destination::Queue(q) => queues.push((q.name().to_string(), q.counts())),
                Destination::Topic(t) => topics.push((t.name().to_string(), t.counts())),
            }
        }
        (queues, topics)
    }

    /// Deletes the queue `name` and the messages waiting in it (settled
    /// in the journal, so they do not come back at restart). Refused while
    /// anything uses it: a consumer, a message delivered and not yet
    /// acknowledged, or a SEND on its way in (which holds the queue for a
    /// moment: asked again, the delete goes through). Returns how many
    /// messages went with it.
    pub fn delete_queue(&self, name: &str) -> Result<usize, DeleteError> {
        let shard = self.shard(name);
        let removed = {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Destination::Queue(q)) = map.get(name) else {
                return Err(DeleteError::NotFound(format!(
                    "queue {}",
                    name.chars().take(200).collect::<String>()
                )));
            };
            let counts = q.counts();
            if counts.consumers > 0 || counts.unacked > 0 {
                return Err(DeleteError::InUse {
                    consumers: counts.consumers,
                    unacked: counts.unacked,
                });
            }
            // Lookups happen under this lock: with the map's the only
            // reference, nobody can put a message in after it goes.
            if Arc::strong_count(q) > 1 {
                return Err(DeleteError::Busy);
            }
            match map.remove(name) {
                Some(Destination::Queue(q)) => q,
                _ => return Err(DeleteError::Busy),
            }
        };
        Ok(removed.purge())
    }

    /// Deletes the topic `name` and its kept history (a purge record in
    /// the journal keeps it from coming back at restart). Refused while it
    /// has subscribers or durable subscriptions. Returns how many kept
    /// messages went, and when the purge is on disk.
    pub fn delete_topic(&self, name: &str) -> Result<(usize, Completion), DeleteError> {
        let shard = self.shard(name);
        let removed = {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let Some(Destination::Topic(t)) = map.get(name) else {
                return Err(DeleteError::NotFound(format!(
                    "topic {}",
                    name.chars().take(200).collect::<String>()
                )));
            };
            if !t.is_unused() {
                return Err(DeleteError::TopicInUse {
                    subscribers: t.subscriber_count(),
                });
            }
            // As for queues: with the map's the only reference, nobody is
            // publishing to it.
            if Arc::strong_count(t) > 1 {
                return Err(DeleteError::Busy);
            }
            match map.remove(name) {
                Some(Destination::Topic(t)) => t,
                _ => return Err(DeleteError::Busy),
            }
        };
        let purged = removed.purge_history();
        if let Some(journal) = &self.journal {
            journal.forget_topic(name);
        }
        Ok(purged)
    }

    /// Forgets destinations nobody uses: no messages, subscribers or kept
    /// history, and no reference held anywhere but here (a session that
    /// just looked one up keeps it alive). Without this, every name ever
    /// used (private rooms, benchmark runs) would stay in memory.
    /// Returns how many were removed.
    pub fn sweep(&self) -> usize {
        let mut removed = 0;
        for shard in &self.shards {
            // Lock order: shard, then destination; nothing takes them the other way.
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            let before = map.len();
            map.retain(|name, d| match d {
                Destination::Queue(q) => Arc::strong_count(q) > 1 || !q.is_idle(),
                Destination::Topic(t) => {
                    let keep = Arc::strong_count(t) > 1 || !t.is_idle();
                    if !keep && let Some(journal) = &self.journal {
                        journal.forget_topic(name);
                    }
                    keep
                }
            });
            removed += before - map.len();
        }
        removed
    }

    /// Moves the journal records that keep segment `segment` alive to the
    /// journal's end, so the segment can be deleted (see
    /// [`Journal::compaction_candidate`](crate::store::Journal::compaction_candidate)). Returns how many moved.
    pub fn compact(&self, segment: u64) -> usize {
        let mut done = Compacted::default();
        // Looked up under the shard locks, compacted outside them.
        for d in self.all_destinations() {
            done.merge(match d {
                Destination::Queue(q) => q.compact(segment),
                Destination::Topic(t) => t.compact(segment),
            });
        }
        // The old records' segment may go once their pins are dropped:
        // not before the new records are on disk.
        if let Some(journal) = &self.journal {
            journal.wait_blocking(done.written);
        }
        done.old.len()
    }
}

/// Why a queue or topic was not deleted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeleteError {
    /// No queue or topic of that name.
    #[error("no {0}")]
    NotFound(String),
    /// Subscribers or durable subscriptions hold a topic.
    #[error(
        "the topic has {subscribers} subscriber(s) or durable subscriptions: close them (DELETE /api/connections/ID) first"
    )]
    TopicInUse {
        /// Its subscribers.
        subscribers: usize,
    },
    /// Consumers or unacknowledged messages hold it.
    #[error(
        "the queue has {consumers} consumer(s) and {unacked} unacknowledged message(s): close them (DELETE /api/connections/ID) first"
    )]
    InUse {
        /// Its consumers.
        consumers: u64,
        /// Messages delivered and not yet acknowledged.
        unacked: u64,
    },
    /// A SEND was putting a message in at that moment.
    #[error("a message was arriving at that moment: try again")]
    Busy,
}

/// One destination as an operator sees it (see [`Broker::list`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DestinationInfo {
    /// Its name: `/queue/…`, `/topic/…` or `/exchange/NAME`.
    pub name: String,
    /// `queue`, `topic`, or the exchange's type.
    pub kind: String,
    /// Messages waiting (queues), or kept for history and durable
    /// subscriptions (topics); 0 for exchanges.
    pub depth: usize,
    /// Consumers or subscribers (wildcard ones not counted per topic).
    pub consumers: usize,
    /// An exchange's bindings, as `KEY → TARGET`.
    pub bindings: Vec<String>,
}
