//! Queues in cluster mode: one Redis Stream per queue, read through one
//! consumer group by every node with consumers of it.
//!
//! A node fetches no more than its local consumers have credit for
//! (`QueueDestination::free_credit`), so what it does not need stays in
//! Redis for the others: each message goes to one node, and that node's
//! queue hands it to one consumer. The fetched messages are ordinary
//! messages of the node's local queue (acks, ack deadlines, NACK and
//! redelivery, expiry and dead-lettering work as on one node); the node
//! remembers which Redis entry each is, acknowledges it with XACK (and
//! deletes it) when it is settled, and keeps its pending entries fresh
//! while it holds them. The entries of a node that stops refreshing
//! (killed, cut off) go idle, and the other nodes take them over with
//! XAUTOCLAIM and deliver them `redelivered:true`.
//!
//! The SENDs to one queue that reach Redis together are one stream entry
//! (a bundle, `wire::Bundle`), so Redis adds, hands out and acknowledges
//! a run of messages once: per message it would cost more of Redis' CPU
//! than the whole of the plain broker's work. A node holds an entry while
//! any of its messages is unsettled here. When only some are settled,
//! their indexes are written down in the queue's hash of settled members,
//! so a node that takes the entry over (its holder gave it back or died)
//! delivers only the rest. The queue's message count (for `max_length`)
//! is kept apart, since the stream's length counts entries.
//!
//! A `persistent:false` message sent to a node whose local consumer can
//! take it at once goes to that consumer without Redis (NATS' local
//! preference for queue groups): it asked for no safety beyond memory, and
//! the round trip through Redis costs about 7 µs of Redis' CPU a message.
//! So that this never overtakes the node's own earlier messages waiting in
//! Redis, a node goes local only after a read of the stream, made once
//! its last Redis-bound SEND of the queue was answered, found nothing new.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;
use stomp_codec::ByteString;
use tokio_util::sync::CancellationToken;

mod entries;
mod handover;
mod holdings;

use super::link::Settled;
use super::{Cluster, key};
use crate::broker::{Broker, QueueDestination};
use entries::{entries_for, entry_of, read_entry, settled_members};
use holdings::{Held, Holdings};

/// The consumer group every node reads a queue's stream through.
pub(super) const GROUP: &str = "stompbox";

/// The notice a node publishes on a queue's channel when it gave messages back.
pub(super) const CLAIM_NOTICE: &str = "claim";

/// One queue this node has consumers for.
#[derive(Debug)]
pub(super) struct Feed {
    consumers: AtomicUsize,
    /// Another node gave messages back: look for them before new ones.
    claim_due: std::sync::atomic::AtomicBool,
    held: Mutex<Holdings>,
    /// The ticket of this node's last SEND of the queue that went to Redis.
    last_sent: AtomicU64,
    /// `last_sent` as it was at the last read that found nothing new
    /// after it was answered (`u64::MAX`: no such read yet). Equal to
    /// `last_sent`: nothing this node sent waits in Redis.
    drained_at: AtomicU64,
    wake: tokio::sync::Notify,
    stop: CancellationToken,
}

impl Feed {
    fn new(stop: CancellationToken) -> Feed {
        Feed {
            consumers: AtomicUsize::new(0),
            claim_due: std::sync::atomic::AtomicBool::new(false),
            held: Mutex::new(Holdings::default()),
            last_sent: AtomicU64::new(0),
            drained_at: AtomicU64::new(u64::MAX),
            wake: tokio::sync::Notify::new(),
            stop,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Holdings> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The queues this node feeds.
#[derive(Debug, Default)]
pub(super) struct Feeds {
    feeds: Mutex<HashMap<ByteString, Arc<Feed>>>,
}

impl Feeds {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ByteString, Arc<Feed>>> {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn get(&self, queue: &str) -> Option<Arc<Feed>> {
        self.lock().get(queue).cloned()
    }

    /// Every queue fed now, by name.
    pub(super) fn all(&self) -> Vec<(ByteString, Arc<Feed>)> {
        self.lock()
            .iter()
            .map(|(n, f)| (n.clone(), f.clone()))
            .collect()
    }

    /// A queue's notice: something new (`claim`: given back) to read.
    pub(super) fn wake(&self, queue: &str, claim: bool) {
        if let Some(feed) = self.get(queue) {
            if claim {
                feed.claim_due.store(true, Ordering::Relaxed);
            }
            feed.wake.notify_one();
        }
    }
}

impl Cluster {
    /// A local consumer of `queue` joined: the node starts fetching for
    /// it (and follows the queue's notices) with the first.
    pub fn watch_queue(&self, queue: &str) {
        let Some(me) = self.me.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let Some(broker) = self.broker.get().and_then(std::sync::Weak::upgrade) else {
            return;
        };
        let mut feeds = self.feeds.lock();
        let feed = feeds
            .entry(ByteString::from(queue))
            .or_insert_with(|| {
                let feed = Arc::new(Feed::new(self.stopping.child_token()));
                tokio::spawn(me.feed(broker, queue.to_string(), feed.clone()));
                feed
            })
            .clone();
        drop(feeds);
        if feed.consumers.fetch_add(1, Ordering::Relaxed) == 0 {
            let _ = self.watch(queue);
        }
        feed.wake.notify_one();
    }

    /// A local consumer of `queue` left (its unacknowledged messages are
    /// back in the local queue): after the last, the node gives what it
    /// holds back to the others and stops fetching.
    pub fn unwatch_queue(&self, queue: &str) {
        let Some(feed) = self.feeds.get(queue) else {
            return;
        };
        let before = feed
            .consumers
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                Some(n.saturating_sub(1))
            })
            .unwrap_or(0);
        if before == 1 {
            self.unwatch(queue);
        }
        feed.wake.notify_one();
    }

    /// Messages of `queue` settled here (acknowledged, or given up on and
    /// dead-lettered): their entries are acknowledged and deleted in
    /// Redis. The completion is done when Redis has done so.
    pub fn queue_settled(
        &self,
        queue: &str,
        numbers: impl Iterator<Item = u64>,
    ) -> crate::store::Completion {
        let Some(feed) = self.feeds.get(queue) else {
            return crate::store::Completion::DONE;
        };
        let settled = feed.held().settle(numbers);
        feed.wake.notify_one();
        if settled.count == 0 {
            return crate::store::Completion::DONE;
        }
        self.request_settle(queue, settled)
    }

    /// Whether a `persistent:false` message for `queue` may go to a local
    /// consumer without Redis: this node feeds the queue and nothing it
    /// sent to the queue's stream is still waiting there (see the module
    /// documentation). The caller checks that a consumer can take it now.
    pub fn may_deliver_locally(&self, queue: &str) -> bool {
        self.feeds.get(queue).is_some_and(|f| {
            f.drained_at.load(Ordering::Acquire) == f.last_sent.load(Ordering::Acquire)
        })
    }

    /// A SEND of `queue` went to Redis, answered by `completion`'s ticket.
    pub fn note_sent(&self, queue: &str, completion: crate::store::Completion) {
        if let (Some(feed), Some(ticket)) = (self.feeds.get(queue), completion.ticket()) {
            feed.last_sent.fetch_max(ticket, Ordering::AcqRel);
        }
    }

    /// Whether this node follows `queue` (it has fetched from Redis).
    pub fn feeds_queue(&self, queue: &str) -> bool {
        self.feeds.get(queue).is_some()
    }

    /// Fetches `queue`'s messages for the local consumers while it has
    /// any, takes over idle ones of dead nodes, and keeps its own fresh.
    async fn feed(self: Arc<Self>, broker: Arc<Broker>, name: String, feed: Arc<Feed>) {
        let stream = key(&name, "q");
        let idle = self.claim_idle;
        let mut sweep = tokio::time::interval((idle / 2).max(Duration::from_millis(100)));
        let mut refresh = tokio::time::interval((idle / 4).max(Duration::from_millis(50)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut group_made = false;
        // Messages per entry read lately.
        let mut per_entry = 1.0_f64;
        loop {
            let mut claim = false;
            let mut touch = false;
            tokio::select! {
                _ = feed.stop.cancelled() => return,
                _ = feed.wake.notified() => {}
                _ = sweep.tick() => claim = true,
                _ = refresh.tick() => touch = true,
                // Also a poll, for notices missed while pub/sub was down.
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            let Some(mut conn) = self.link(&name).connection() else {
                continue;
            };
            // Looked up each time: the queue may have been swept and made
            // again since.
            let Some(crate::broker::Destination::Queue(queue)) = broker.existing_destination(&name)
            else {
                if feed.consumers.load(Ordering::Relaxed) == 0 {
                    self.feeds.lock().remove(name.as_str());
                    return;
                }
                continue;
            };
            if !group_made {
                let made: redis::RedisResult<()> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(GROUP)
                    .arg("0")
                    .arg("MKSTREAM")
                    .query_async(&mut conn)
                    .await;
                match made {
                    Ok(()) => group_made = true,
                    Err(e) if e.code() == Some("BUSYGROUP") => group_made = true,
                    Err(e) => {
                        tracing::warn!(queue = %name, error = %e, "cluster: cannot make the queue's consumer group");
                        continue;
                    }
                }
            }
            if feed.consumers.load(Ordering::Relaxed) == 0 {
                self.give_back(&queue, &feed).await;
                if feed.held().entries.is_empty() && feed.consumers.load(Ordering::Relaxed) == 0 {
                    let mut feeds = self.feeds.lock();
                    if feed.consumers.load(Ordering::Relaxed) == 0 {
                        feeds.remove(name.as_str());
                        return;
                    }
                }
                continue;
            }
            if touch {
                self.refresh(&feed, &stream, &mut conn).await;
            }
            // Messages given back or left by a dead node go before new
            // ones, so a handover keeps their order where it can.
            if claim || feed.claim_due.swap(false, Ordering::Relaxed) {
                let credit = queue.free_credit();
                if credit > 0 {
                    let reply: redis::RedisResult<Value> = self
                        .scripts
                        .claim
                        .key(&stream)
                        .key(key(&name, "x"))
                        .arg(GROUP)
                        .arg(&self.node)
                        .arg(idle.as_millis() as u64)
                        .arg(entries_for(credit, per_entry))
                        .invoke_async(&mut conn)
                        .await;
                    if let Ok(Value::Array(parts)) = reply
                        && let Ok([Value::Array(entries), Value::Array(settled)]) =
                            <[Value; 2]>::try_from(parts)
                    {
                        let skip = settled.iter().map(settled_members);
                        let mut taken = 0;
                        for (entry, skip) in entries.into_iter().zip(skip) {
                            taken += self.take_in(&broker, &queue, &feed, entry, &skip, true);
                        }
                        broker.route_dead_letters();
                        if taken > 0 {
                            tracing::info!(queue = %name, messages = taken, "cluster: took over messages another node held too long (gone?)");
                        }
                    }
                }
            }
            let credit = queue.free_credit();
            if credit == 0 {
                continue;
            }
            // Taken before the read: if every SEND this node made to the
            // stream up to `mark` was answered, a read that comes back
            // short shows none of them still waits.
            let mark = feed.last_sent.load(Ordering::Acquire);
            let after_sends = self.tickets().watermark() >= mark;
            let asked = entries_for(credit, per_entry);
            let mut read = 0;
            let mut taken = 0;
            let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.node)
                .arg("COUNT")
                .arg(asked)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn)
                .await;
            let streams = match reply {
                Ok(Value::Array(streams)) => streams
                    .into_iter()
                    .filter_map(|s| match s {
                        Value::Array(mut pair) if pair.len() == 2 => pair.pop(),
                        _ => None,
                    })
                    .collect(),
                Ok(Value::Map(streams)) => streams.into_iter().map(|(_, e)| e).collect(),
                Ok(_) => Vec::new(),
                Err(e) if e.code() == Some("NOGROUP") => {
                    group_made = false;
                    Vec::new()
                }
                Err(e) => {
                    tracing::warn!(queue = %name, error = %e, "cluster: reading the queue failed");
                    continue;
                }
            };
            for entries in streams {
                if let Value::Array(entries) = entries {
                    for entry in entries {
                        read += 1;
                        taken += self.take_in(&broker, &queue, &feed, entry, &[], false);
                    }
                }
            }
            broker.route_dead_letters();
            if read > 0 {
                // Bundles vary with the senders' pace: follow it, so a
                // read asks for about as many entries as credit allows.
                per_entry = (per_entry * 3.0 + taken as f64 / read as f64) / 4.0;
            }
            if read >= asked {
                // There may be more: look again at once.
                feed.wake.notify_one();
            } else if after_sends {
                // A send after `mark` moved `last_sent` on, so this
                // cannot claim more than it saw.
                feed.drained_at.store(mark, Ordering::Release);
            }
        }
    }

    /// Puts the messages of one fetched entry into the local queue, but
    /// those at the indexes in `skip` (settled by a node that held it
    /// before); returns how many went in.
    fn take_in(
        &self,
        broker: &Broker,
        queue: &QueueDestination,
        feed: &Feed,
        entry: Value,
        skip: &[u32],
        claimed: bool,
    ) -> usize {
        let Some((entry, fields)) = entry_of(entry) else {
            return 0;
        };
        if claimed && feed.held().entries.contains_key(&entry) {
            // Its own entry, gone idle while this node was too busy to
            // refresh it: its messages are here already.
            return 0;
        }
        let messages = match read_entry(fields) {
            Ok(messages) => messages,
            Err(e) => {
                tracing::warn!(queue = queue.name(), error = %e, "cluster: an unreadable queue entry was dropped");
                let _ = self.request_settle(queue.name(), Settled::entry(entry, 0));
                return 0;
            }
        };
        let mut taken = Vec::with_capacity(messages.len());
        let mut unreadable = Vec::new();
        for (index, (at_ms, message)) in messages.into_iter().enumerate() {
            let index = index as u32;
            if skip.contains(&index) {
                continue;
            }
            match message.read() {
                Ok((headers, body)) => {
                    let message = broker.cluster_queue_message(queue, headers, body, at_ms);
                    taken.push((index, Arc::new(message)));
                }
                Err(e) => {
                    tracing::warn!(queue = queue.name(), error = %e, "cluster: an unreadable queue message was dropped");
                    unreadable.push((entry, index));
                }
            }
        }
        if taken.is_empty() {
            // Nothing left to deliver: every member was settled before
            // (its holder died between the last settle and the XACK) or
            // cannot be read. Finish the job.
            let _ =
                self.request_settle(queue.name(), Settled::entry(entry, unreadable.len() as u64));
            return 0;
        }
        {
            let mut held = feed.held();
            held.entries.insert(
                entry,
                Held {
                    open: taken.len() as u32,
                    written: !skip.is_empty() || !unreadable.is_empty(),
                },
            );
            for (index, message) in &taken {
                held.messages.insert(message.id.number(), (entry, *index));
            }
        }
        if !unreadable.is_empty() {
            // Settled as if delivered: nobody can read them.
            let _ = self.request_settle(
                queue.name(),
                Settled {
                    count: unreadable.len() as u64,
                    members: unreadable,
                    ..Settled::default()
                },
            );
        }
        let count = taken.len();
        if claimed {
            for (_, message) in taken {
                queue.enqueue_returned(message, 1);
            }
        } else {
            queue.enqueue_fetched(taken.into_iter().map(|(_, m)| m));
        }
        count
    }
}
