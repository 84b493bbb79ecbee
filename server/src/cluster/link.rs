//! One Redis the cluster engine talks to, and its command task: every
//! request of this node to this Redis, in the order they were made,
//! pipelined. Its pub/sub task is in `pubsub.rs`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::MultiplexedConnection;
use stomp_codec::ByteString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    BATCH, CHECK_EVERY, Cluster, ClusterError, Failure, MAX_BACKOFF, REQUEST_TIMEOUT, key,
    mask_url, queues, wire,
};
use crate::broker::Charge;

/// What the command task sends to Redis, in the order it was asked.
pub(super) enum Request {
    /// A topic message.
    Publish {
        topic: ByteString,
        frame: Bytes,
        keep: usize,
        max_age_ms: u64,
        ephemeral: bool,
    },
    /// A queue message.
    Enqueue {
        queue: ByteString,
        /// As `wire::pack` wrote it.
        packed: Bytes,
        at_ms: u64,
        max_length: usize,
    },
    /// Queue messages settled on this node.
    Settle { queue: ByteString, settled: Settled },
    /// Queue entries this node hands to the others (at most
    /// [`GIVE_BACK_RUN`]): marked long idle, and the others told.
    GiveBack {
        queue: ByteString,
        entries: Vec<u64>,
    },
    /// Anything else, in order with the rest (presence, wills).
    Cmd(Box<redis::Cmd>),
}

/// Queue messages settled on this node, by the entry (a bundle of
/// messages, see `queues/`) each was in.
#[derive(Debug, Default)]
pub(super) struct Settled {
    /// How many messages.
    pub(super) count: u64,
    /// Entries all of whose members are settled now: acknowledged and
    /// deleted.
    pub(super) whole: Vec<u64>,
    /// Of those, the ones whose settled members were written down before.
    pub(super) cleared: Vec<u64>,
    /// Members (entry, index) of entries not yet wholly settled.
    pub(super) members: Vec<(u64, u32)>,
}

impl Settled {
    /// A whole entry settled at once, `count` of its messages with it
    /// (the rest were settled before); any members written down go too.
    pub(super) fn entry(entry: u64, count: u64) -> Settled {
        Settled {
            count,
            whole: vec![entry],
            cleared: vec![entry],
            members: Vec::new(),
        }
    }
}

/// Entries given back in one request at most.
pub(super) const GIVE_BACK_RUN: usize = 1000;

/// A request and the ticket its answer resolves.
pub(super) struct Ticketed {
    pub(super) ticket: u64,
    pub(super) request: Request,
    /// Held until Redis has it, so a slow Redis raises the memory alarm
    /// and publishers are slowed, instead of this queue growing unseen.
    pub(super) _charge: Option<Charge>,
}

/// A change to what the pub/sub task follows.
pub(super) enum Interest {
    Subscribe(ByteString),
    Unsubscribe(ByteString),
    /// A glob over topic channels, for wildcard subscriptions.
    PSubscribe(String),
    PUnsubscribe(String),
}

/// One Redis: its client, its command connection, and the queues of
/// requests and interests its tasks take.
pub(super) struct Link {
    pub(super) client: redis::Client,
    /// The URL without its password, for logs and errors.
    pub(super) shown: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Whether the command connection is up.
    pub(super) up: tokio::sync::watch::Sender<bool>,
    pub(super) requests: mpsc::UnboundedSender<Ticketed>,
    pub(super) requests_rx: Mutex<Option<mpsc::UnboundedReceiver<Ticketed>>>,
    pub(super) interest: mpsc::UnboundedSender<Interest>,
    pub(super) interest_rx: Mutex<Option<mpsc::UnboundedReceiver<Interest>>>,
    /// Told by the pub/sub task when its connection drops: the command
    /// connection is checked at once rather than at the next publish.
    pub(super) pubsub_lost: tokio::sync::Notify,
}

impl Link {
    pub(super) fn new(url: &str) -> Result<Link, ClusterError> {
        let client = redis::Client::open(url)
            .map_err(|e| ClusterError::Redis(format!("cluster URL {}: {e}", mask_url(url))))?;
        let (requests, requests_rx) = mpsc::unbounded_channel();
        let (interest, interest_rx) = mpsc::unbounded_channel();
        Ok(Link {
            client,
            shown: mask_url(url),
            conn: Mutex::new(None),
            up: tokio::sync::watch::Sender::new(false),
            requests,
            requests_rx: Mutex::new(Some(requests_rx)),
            interest,
            interest_rx: Mutex::new(Some(interest_rx)),
            pubsub_lost: tokio::sync::Notify::new(),
        })
    }

    /// The command connection, when it is up.
    pub(super) fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the command connection is up now.
    pub(super) fn is_up(&self) -> bool {
        *self.up.borrow()
    }

    /// The command connection is gone: publishes are refused until the
    /// task has connected again.
    pub(super) fn lost(&self, why: &str) {
        tracing::error!(redis = %self.shown, error = %why, "cluster: lost the connection to Redis; reconnecting");
        self.up.send_replace(false);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

impl Cluster {
    /// The command task: connects, then sends publishes in pipelines, in
    /// the order they were made; reconnects with backoff when Redis goes
    /// away, failing what was in flight.
    pub(super) async fn commands(
        self: Arc<Self>,
        shard: usize,
        mut rx: mpsc::UnboundedReceiver<Ticketed>,
        cancel: CancellationToken,
    ) {
        let link = &self.links[shard];
        let mut backoff = Duration::from_millis(100);
        let mut logged_down = false;
        'connect: loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => return,
                c = tokio::time::timeout(REQUEST_TIMEOUT, link.client.get_multiplexed_async_connection()) => c,
            };
            let mut conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    if !logged_down {
                        tracing::error!(redis = %link.shown, error = %e, "cluster: cannot reach Redis; topic messages are refused until it is back (retrying)");
                        logged_down = true;
                    }
                    self.fail_queued(link, &mut rx);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(_) => {
                    self.fail_queued(link, &mut rx);
                    continue;
                }
            };
            // Loaded once per connection; a restarted Redis has lost it.
            let mut loaded: Result<String, redis::RedisError> = Ok(String::new());
            for script in [
                &self.scripts.publish,
                &self.scripts.enqueue,
                &self.scripts.settle,
                &self.scripts.claim,
                &self.scripts.join,
                &self.scripts.leave,
            ] {
                if loaded.is_ok() {
                    loaded = script.prepare_invoke().load_async(&mut conn).await;
                }
            }
            if let Err(e) = loaded {
                tracing::error!(redis = %link.shown, error = %e, "cluster: Redis refused the publish script");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            *link.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
            link.up.send_replace(true);
            backoff = Duration::from_millis(100);
            tracing::info!(redis = %link.shown, "cluster: connected to Redis");
            logged_down = false;
            let mut check = tokio::time::interval(CHECK_EVERY);
            check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let first = tokio::select! {
                    _ = cancel.cancelled() => return,
                    r = rx.recv() => r,
                    // A dead connection is found by a PING, not by the
                    // next client's publish failing.
                    _ = check.tick() => {
                        if self.ping(&mut conn).await {
                            continue;
                        }
                        link.lost("no answer to PING");
                        continue 'connect;
                    }
                    _ = link.pubsub_lost.notified() => {
                        if self.ping(&mut conn).await {
                            continue;
                        }
                        link.lost("no answer to PING after the pub/sub connection dropped");
                        continue 'connect;
                    }
                };
                let Some(first) = first else { return };
                let mut batch = vec![first];
                while batch.len() < BATCH {
                    match rx.try_recv() {
                        Ok(p) => batch.push(p),
                        Err(_) => break,
                    }
                }
                let groups = group(&batch);
                let mut pipe = redis::pipe();
                pipe.ignore_errors();
                for g in &groups {
                    self.add_to(&mut pipe, g);
                }
                let result: Result<Result<Vec<redis::RedisResult<redis::Value>>, _>, _> =
                    tokio::time::timeout(REQUEST_TIMEOUT, pipe.query_async(&mut conn)).await;
                match result {
                    Ok(Ok(answers)) => {
                        let mut answers = answers.into_iter();
                        let mut outcomes = Vec::with_capacity(batch.len());
                        for g in &groups {
                            self.answer(g, &mut answers, &mut outcomes);
                        }
                        self.tickets.answer_all(outcomes);
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer in time".to_string(),
                        };
                        link.lost(&why);
                        // Redis may or may not have run them: a RECEIPT must
                        // not claim it did.
                        let failure = Failure::unavailable(format!("Redis connection lost: {why}"));
                        self.tickets
                            .answer_all(batch.iter().map(|t| (t.ticket, Err(failure.clone()))));
                        continue 'connect;
                    }
                }
            }
        }
    }

    /// Adds one group's commands to a pipeline.
    fn add_to(&self, pipe: &mut redis::Pipeline, group: &[&Ticketed]) {
        let Some(first) = group.first() else { return };
        match &first.request {
            Request::Publish {
                topic,
                frame,
                keep,
                max_age_ms,
                ephemeral,
            } => {
                pipe.cmd("EVALSHA")
                    .arg(self.scripts.publish.get_hash())
                    .arg(4)
                    .arg(key(topic, "s"))
                    .arg(key(topic, "e"))
                    .arg(key(topic, "n"))
                    .arg(key(topic, "d"))
                    .arg(format!("{}.{}", self.node, first.ticket))
                    .arg(keep)
                    .arg(if *ephemeral { "1" } else { "0" })
                    .arg(&frame[..])
                    .arg(key(topic, "c"))
                    .arg(now_ms())
                    .arg(max_age_ms);
            }
            Request::Enqueue {
                queue, max_length, ..
            } => {
                let bytes = group
                    .iter()
                    .map(|t| match &t.request {
                        Request::Enqueue { packed, .. } => packed.len(),
                        _ => 0,
                    })
                    .sum();
                let mut bundle = wire::Bundle::with_capacity(group.len(), bytes);
                for t in group {
                    if let Request::Enqueue { packed, at_ms, .. } = &t.request {
                        bundle.push(*at_ms, packed);
                    }
                }
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(self.scripts.enqueue.get_hash())
                    .arg(3)
                    .arg(key(queue, "q"))
                    .arg(key(queue, "n"))
                    .arg(key(queue, "len"))
                    .arg(max_length)
                    .arg(key(queue, "c"))
                    .arg(bundle.len())
                    .arg(bundle.bytes());
                if *max_length > 0 {
                    // Only a queue near its limit cuts the bundle short.
                    cmd.arg(bundle.ends());
                }
            }
            Request::Settle { queue, .. } => {
                let mut count = 0;
                let mut whole = Vec::new();
                let mut cleared = Vec::new();
                let mut members: Vec<(u64, u32)> = Vec::new();
                for t in group {
                    if let Request::Settle { settled, .. } = &t.request {
                        count += settled.count;
                        whole.extend_from_slice(&settled.whole);
                        cleared.extend_from_slice(&settled.cleared);
                        members.extend_from_slice(&settled.members);
                    }
                }
                // Members of an entry that went whole in this same call
                // need no writing down.
                if !members.is_empty() && !whole.is_empty() {
                    let done: HashSet<u64> = whole.iter().copied().collect();
                    members.retain(|(entry, _)| !done.contains(entry));
                }
                members.sort_unstable();
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(self.scripts.settle.get_hash())
                    .arg(3)
                    .arg(key(queue, "q"))
                    .arg(key(queue, "len"))
                    .arg(key(queue, "x"))
                    .arg(queues::GROUP)
                    .arg(count)
                    .arg(whole.len())
                    .arg(&whole)
                    .arg(cleared.len())
                    .arg(&cleared);
                for run in members.chunk_by(|a, b| a.0 == b.0) {
                    let indexes: Vec<String> = run.iter().map(|(_, i)| i.to_string()).collect();
                    cmd.arg(run[0].0).arg(indexes.join(","));
                }
            }
            Request::GiveBack { queue, entries } => {
                pipe.cmd("XCLAIM")
                    .arg(key(queue, "q"))
                    .arg(queues::GROUP)
                    .arg(&self.node)
                    .arg(0)
                    .arg(entries.iter().map(|n| format!("0-{n}")).collect::<Vec<_>>())
                    .arg("IDLE")
                    .arg(self.claim_idle.as_millis() as u64 * 10)
                    .arg("JUSTID");
                // The other nodes' feeds look for them at once.
                pipe.cmd("PUBLISH")
                    .arg(key(queue, "c"))
                    .arg(queues::CLAIM_NOTICE);
            }
            Request::Cmd(cmd) => {
                pipe.add_command((**cmd).clone());
            }
        }
    }

    /// One group's tickets' outcomes, from its commands' replies.
    fn answer(
        &self,
        group: &[&Ticketed],
        answers: &mut impl Iterator<Item = redis::RedisResult<redis::Value>>,
        outcomes: &mut Vec<(u64, Result<(), Failure>)>,
    ) {
        let Some(first) = group.first() else { return };
        let mut outcome = answers.next().unwrap_or(Ok(redis::Value::Nil));
        // A give-back is two commands (XCLAIM, PUBLISH).
        if matches!(first.request, Request::GiveBack { .. }) {
            let published = answers.next().unwrap_or(Ok(redis::Value::Nil));
            outcome = outcome.and(published);
        }
        if let Err(e) = &outcome {
            tracing::warn!(error = %e, "cluster: Redis refused a request");
        }
        // A run of queue messages: the script says how many fitted.
        let taken = match (&first.request, &outcome) {
            (Request::Enqueue { .. }, Ok(redis::Value::Int(n))) => usize::try_from(*n).unwrap_or(0),
            _ => group.len(),
        };
        for (i, t) in group.iter().enumerate() {
            let answer = match (&outcome, &t.request) {
                (Err(e), _) => Err(Failure::unavailable(format!("Redis refused it: {e}"))),
                (Ok(_), Request::Enqueue { max_length, .. }) if i >= taken => Err(Failure {
                    code: "queue-full",
                    why: format!("the queue holds its max_length of {max_length} messages"),
                }),
                (Ok(_), _) => Ok(()),
            };
            outcomes.push((t.ticket, answer));
        }
    }

    /// Whether the command connection answers a PING in time.
    async fn ping(&self, conn: &mut MultiplexedConnection) -> bool {
        let pong = tokio::time::timeout(
            REQUEST_TIMEOUT,
            redis::cmd("PING").query_async::<String>(conn),
        )
        .await;
        matches!(pong, Ok(Ok(_)))
    }

    /// Answers every publish queued while Redis is down as failed.
    fn fail_queued(&self, link: &Link, rx: &mut mpsc::UnboundedReceiver<Ticketed>) {
        link.up.send_replace(false);
        while let Ok(t) = rx.try_recv() {
            self.tickets.answer(
                t.ticket,
                Err(Failure::unavailable(format!(
                    "Redis at {} is unreachable",
                    link.shown
                ))),
            );
        }
    }
}

/// Messages to one queue sent in one bundle at most.
const ENQUEUE_RUN: usize = 128;
/// Bytes of messages in one bundle at most (a bundle may pass it by its
/// last message).
const ENQUEUE_BYTES: usize = 128 * 1024;

/// The batch in groups, each one script call or command: the SENDs to a
/// queue go together (one bundle), and so do the settles of a queue.
///
/// Queue requests commute with those of other queues, and a queue's
/// settles with its SENDs (they name entries already read), so a
/// request may join a group made earlier in the batch; a topic publish,
/// a give-back or any other command starts afresh, keeping its place.
fn group(batch: &[Ticketed]) -> Vec<Vec<&Ticketed>> {
    let mut groups: Vec<Vec<&Ticketed>> = Vec::new();
    // (queue, is a SEND, the group it joins, that group's bytes): a
    // batch names few queues, so a scan beats hashing each name.
    let mut open: Vec<(&ByteString, bool, usize, usize)> = Vec::new();
    for t in batch {
        let (queue, sending, bytes) = match &t.request {
            Request::Enqueue { queue, packed, .. } => (queue, true, packed.len()),
            Request::Settle { queue, .. } => (queue, false, 0),
            _ => {
                open.clear();
                groups.push(vec![t]);
                continue;
            }
        };
        let joined = open
            .iter_mut()
            .find(|(q, s, _, _)| *s == sending && *q == queue);
        match joined {
            Some((_, _, at, size))
                if !sending || (groups[*at].len() < ENQUEUE_RUN && *size < ENQUEUE_BYTES) =>
            {
                groups[*at].push(t);
                *size += bytes;
            }
            Some(full) => {
                *full = (queue, sending, groups.len(), bytes);
                groups.push(vec![t]);
            }
            None => {
                open.push((queue, sending, groups.len(), bytes));
                groups.push(vec![t]);
            }
        }
    }
    groups
}

pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
