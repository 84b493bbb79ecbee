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

use bytes::Bytes;
use redis::Value;
use stomp_codec::ByteString;
use tokio_util::sync::CancellationToken;

use super::{Cluster, key};
use crate::broker::{Broker, Charge, QueueDestination};

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
    /// Local message number → the Redis entry (`0-<n>`) it is.
    held: Mutex<HashMap<u64, u64>>,
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
            held: Mutex::new(HashMap::new()),
            last_sent: AtomicU64::new(0),
            drained_at: AtomicU64::new(u64::MAX),
            wake: tokio::sync::Notify::new(),
            stop,
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
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
        let ids: Vec<u64> = {
            let mut held = feed.held();
            numbers.filter_map(|n| held.remove(&n)).collect()
        };
        feed.wake.notify_one();
        if ids.is_empty() {
            return crate::store::Completion::DONE;
        }
        self.request_ack(queue, ids)
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

    /// The node is stopping (its connections are closed): every queue
    /// message it holds goes back to the others at once.
    pub(super) async fn give_everything_back(&self, broker: &Broker) {
        for (name, feed) in self.feeds.all() {
            let Some(crate::broker::Destination::Queue(queue)) = broker.existing_destination(&name)
            else {
                continue;
            };
            let Some(mut conn) = self.link(&name).connection() else {
                continue;
            };
            self.give_back(&queue, &feed, &key(&name, "q"), &mut conn)
                .await;
        }
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
                self.give_back(&queue, &feed, &stream, &mut conn).await;
                if feed.held().is_empty() && feed.consumers.load(Ordering::Relaxed) == 0 {
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
                    let reply: redis::RedisResult<Value> = redis::cmd("XAUTOCLAIM")
                        .arg(&stream)
                        .arg(GROUP)
                        .arg(&self.node)
                        .arg(idle.as_millis() as u64)
                        .arg("0-0")
                        .arg("COUNT")
                        .arg(credit)
                        .query_async(&mut conn)
                        .await;
                    if let Ok(Value::Array(parts)) = reply
                        && let Some(entries) = parts.into_iter().nth(1)
                    {
                        let taken = self.take_in(&broker, &queue, &feed, entries, true);
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
            let mut taken = 0;
            let reply: redis::RedisResult<Value> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&self.node)
                .arg("COUNT")
                .arg(credit)
                .arg("STREAMS")
                .arg(&stream)
                .arg(">")
                .query_async(&mut conn)
                .await;
            match reply {
                Ok(Value::Array(streams)) => {
                    for s in streams {
                        if let Value::Array(mut pair) = s
                            && pair.len() == 2
                        {
                            let entries = pair.pop().unwrap_or(Value::Nil);
                            taken += self.take_in(&broker, &queue, &feed, entries, false);
                        }
                    }
                }
                Ok(Value::Map(streams)) => {
                    for (_, entries) in streams {
                        taken += self.take_in(&broker, &queue, &feed, entries, false);
                    }
                }
                Ok(_) => {}
                Err(e) if e.code() == Some("NOGROUP") => group_made = false,
                Err(e) => {
                    tracing::warn!(queue = %name, error = %e, "cluster: reading the queue failed");
                    continue;
                }
            }
            if taken >= credit {
                // There may be more: look again at once.
                feed.wake.notify_one();
            } else if after_sends {
                // A send after `mark` moved `last_sent` on, so this
                // cannot claim more than it saw.
                feed.drained_at.store(mark, Ordering::Release);
            }
        }
    }

    /// Puts fetched entries into the local queue; returns how many.
    fn take_in(
        &self,
        broker: &Broker,
        queue: &QueueDestination,
        feed: &Feed,
        entries: Value,
        claimed: bool,
    ) -> usize {
        let Value::Array(entries) = entries else {
            return 0;
        };
        let mut taken = 0;
        for entry in entries {
            let Some((n, fields)) = entry_of(entry) else {
                continue;
            };
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == name)
                    .map(|(_, v)| v.clone())
            };
            let Some(frame) = field("f") else { continue };
            let number = |v: Option<Bytes>| {
                v.and_then(|b| {
                    std::str::from_utf8(&b)
                        .ok()
                        .and_then(|s| s.parse::<u64>().ok())
                })
                .unwrap_or(0)
            };
            let at_ms = number(field("t"));
            let deliveries = number(field("d")) as u32;
            let (headers, body) = match super::wire::decode(&frame) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(queue = queue.name(), error = %e, "cluster: an unreadable queue entry was dropped");
                    let _ = self.request_ack(queue.name(), vec![n]);
                    continue;
                }
            };
            let message = broker.cluster_queue_message(queue, headers, body, at_ms);
            feed.held().insert(message.id.number(), n);
            let message = Arc::new(message);
            if claimed {
                queue.enqueue_returned(message, deliveries.saturating_add(1));
            } else if let Err(e) = queue.enqueue(message, crate::store::Completion::DONE) {
                // Fetched within credit, so only a policy's own local
                // limit can refuse it; it stays pending in Redis and
                // goes to another node once idle.
                tracing::warn!(queue = queue.name(), error = %e, "cluster: a fetched message did not fit the local queue");
            }
            taken += 1;
        }
        broker.route_dead_letters();
        taken
    }

    /// Resets the idle time of the entries this node holds, so the other
    /// nodes do not take them over while it is alive.
    async fn refresh(
        &self,
        feed: &Feed,
        stream: &str,
        conn: &mut redis::aio::MultiplexedConnection,
    ) {
        let ids: Vec<u64> = feed.held().values().copied().collect();
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
    async fn give_back(
        &self,
        queue: &QueueDestination,
        feed: &Feed,
        stream: &str,
        conn: &mut redis::aio::MultiplexedConnection,
    ) {
        let waiting = queue.take_waiting();
        let mut local = Vec::new();
        let ids: Vec<u64> = {
            let mut held = feed.held();
            waiting
                .into_iter()
                .filter_map(|m| match held.remove(&m.id.number()) {
                    Some(id) => Some(id),
                    None => {
                        local.push(m);
                        None
                    }
                })
                .collect()
        };
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
        for chunk in ids.chunks(1000) {
            let mut cmd = redis::cmd("XCLAIM");
            cmd.arg(stream)
                .arg(GROUP)
                .arg(&self.node)
                .arg(0)
                .arg(chunk.iter().map(|id| format!("0-{id}")).collect::<Vec<_>>())
                .arg("IDLE")
                .arg(self.claim_idle.as_millis() as u64 * 10)
                .arg("JUSTID");
            if let Err(e) = cmd.query_async::<Value>(conn).await {
                tracing::warn!(queue = queue.name(), error = %e, "cluster: could not give messages back (the others take them over once idle)");
            }
        }
        if !ids.is_empty() {
            // The other nodes' feeds look for them at once.
            let _: redis::RedisResult<Value> = redis::cmd("PUBLISH")
                .arg(key(queue.name(), "c"))
                .arg(CLAIM_NOTICE)
                .query_async(conn)
                .await;
        }
        if !ids.is_empty() {
            tracing::debug!(
                queue = queue.name(),
                messages = ids.len(),
                "cluster: gave messages back"
            );
        }
    }
}

/// An entry `[id, [field, value, ...]]` as its number and fields.
fn entry_of(entry: Value) -> Option<(u64, Vec<(String, Bytes)>)> {
    let Value::Array(mut parts) = entry else {
        return None;
    };
    if parts.len() != 2 {
        return None;
    }
    let fields = parts.pop()?;
    let id = parts.pop()?;
    let id = match id {
        Value::BulkString(b) => String::from_utf8(b).ok()?,
        Value::SimpleString(s) => s,
        _ => return None,
    };
    let n = id.strip_prefix("0-")?.parse().ok()?;
    let Value::Array(flat) = fields else {
        return None;
    };
    let mut out = Vec::new();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        let (Value::BulkString(k), Value::BulkString(v)) = (k, v) else {
            continue;
        };
        out.push((String::from_utf8_lossy(&k).into_owned(), Bytes::from(v)));
    }
    Some((n, out))
}
