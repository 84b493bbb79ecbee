//! Handing a queue's messages over: keeping what this node holds fresh
//! in Redis while it is alive, and giving it back to the other nodes when
//! its last consumer leaves or the node stops.

use std::collections::HashMap;
use std::sync::Arc;

use redis::Value;

use super::{Feed, GROUP};
use crate::broker::{Broker, Charge, QueueDestination};
use crate::cluster::Cluster;
use crate::cluster::link::{GIVE_BACK_RUN, Request};

impl Cluster {
    /// The node is stopping (its connections are closed): every queue
    /// message it holds goes back to the others at once.
    pub(in crate::cluster) async fn give_everything_back(&self, broker: &Broker) {
        for (name, feed) in self.feeds.all() {
            let Some(crate::broker::Destination::Queue(queue)) = broker.existing_destination(&name)
            else {
                continue;
            };
            self.give_back(&queue, &feed).await;
        }
    }

    /// Resets the idle time of the entries this node holds, so the other
    /// nodes do not take them over while it is alive.
    pub(super) async fn refresh(
        &self,
        feed: &Feed,
        stream: &str,
        conn: &mut redis::aio::MultiplexedConnection,
    ) {
        let ids: Vec<u64> = feed.held().entries.keys().copied().collect();
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(stream)
                .arg(GROUP)
                .arg(&self.node)
                .arg((self.claim_idle / 2).as_millis() as u64);
            for id in chunk {
                cmd.arg(format!("0-{id}"));
            }
            cmd.arg("JUSTID");
            let _: redis::RedisResult<Value> = cmd.query_async(conn).await;
        }
    }

    /// The node has no consumers of the queue left: what waits in its
    /// local queue is marked idle in Redis, so another node's next sweep
    /// takes it over at once.
    pub(super) async fn give_back(&self, queue: &QueueDestination, feed: &Feed) {
        let waiting = queue.take_waiting();
        let mut local = Vec::new();
        let mut keep = Vec::new();
        let entries: Vec<u64> = {
            let mut held = feed.held();
            let mut of_entry: HashMap<u64, Vec<Arc<crate::broker::Message>>> = HashMap::new();
            for m in waiting {
                match held.messages.get(&m.id.number()) {
                    Some((entry, _)) => of_entry.entry(*entry).or_default().push(m),
                    None => local.push(m),
                }
            }
            let mut entries = Vec::new();
            for (entry, messages) in of_entry {
                let open = held.entries.get(&entry).map_or(0, |h| h.open as usize);
                if messages.len() < open {
                    // Some of it is still out with a consumer here (one
                    // came as the others left): it stays, whole.
                    keep.extend(messages);
                    continue;
                }
                for m in &messages {
                    held.messages.remove(&m.id.number());
                }
                held.entries.remove(&entry);
                entries.push(entry);
            }
            entries
        };
        for m in keep {
            queue.enqueue_returned(m, 0);
        }
        // Messages that went to a local consumer without Redis and came
        // back (NACKed, or its connection closed) go to Redis now, for
        // the other nodes' consumers.
        for m in local {
            let sent = self.enqueue(
                queue.name_shared(),
                &m.headers,
                &m.body,
                m.terms.at_ms,
                queue.policy(),
                Charge::none(),
            );
            if let Err(e) = sent {
                tracing::warn!(queue = queue.name(), error = %e, "cluster: a message delivered here could not go back to Redis; it waits here");
                queue.enqueue_returned(m, 0);
            }
        }
        // Through the ordered request queue: after the settles made
        // before, so the others skip what was settled here.
        let mut given = crate::store::Completion::DONE;
        for chunk in entries.chunks(GIVE_BACK_RUN) {
            given = given.and(self.request(
                self.link(queue.name()),
                Request::GiveBack {
                    queue: queue.name_shared().clone(),
                    entries: chunk.to_vec(),
                },
                None,
            ));
        }
        if let Err(e) = self.settled(given).await {
            tracing::warn!(queue = queue.name(), error = %e, "cluster: could not give messages back (the others take them over once idle)");
        } else if !entries.is_empty() {
            tracing::debug!(
                queue = queue.name(),
                entries = entries.len(),
                "cluster: gave messages back"
            );
        }
    }
}
