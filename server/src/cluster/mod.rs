//! Several Stompbox nodes as one broker, on Redis.
//!
//! With `cluster = "redis://..."`, topics live in Redis: a publish on any
//! node runs one script that gives the message the topic's next stream
//! position, keeps it in the topic's Redis Stream (as many as the topic
//! policy's `history`) and publishes it on the topic's channel. Every node
//! with local subscribers is subscribed to that channel and delivers what
//! arrives, its own publishes included, so all nodes see one order and
//! one numbering. A subscriber's `x-history` / `x-since` is read from the
//! stream, so a client that reconnects to another node recovers without
//! a gap or a duplicate.
//!
//! Two connections per node: one for commands (publishes are batched
//! into pipelines in their arrival order, by one task, so one session's
//! messages keep their order), one for pub/sub. Both reconnect with
//! backoff; while the command connection is down, topic SENDs are
//! refused with an ERROR naming the cause. Queues stay local to each
//! node for now (see the README).

mod membership;
mod queues;
mod scripts;
pub mod tickets;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use stomp_codec::{ByteString, Headers};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Charge, Recovery};
use crate::store::Completion;
pub use tickets::{Failure, Tickets};

/// Publishes sent to Redis in one pipeline at most.
const BATCH: usize = 512;
/// The longest wait between two attempts to reach Redis.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How long one Redis request may take before the connection is
/// treated as lost.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often an idle command connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Why a cluster request could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClusterError {
    /// The command connection to Redis is down.
    #[error(
        "the cluster's Redis at {0} is unreachable; topic messages are refused until it is back"
    )]
    Unavailable(String),
    /// Redis answered with an error.
    #[error("Redis refused the request: {0}")]
    Redis(String),
}

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

/// What the command task sends to Redis, in the order it was asked.
enum Request {
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
        frame: Bytes,
        at_ms: u64,
        max_length: usize,
    },
    /// Queue entries settled on this node: XACK and XDEL.
    Ack { queue: ByteString, ids: Vec<u64> },
    /// Anything else, in order with the rest (presence, wills).
    Cmd(Box<redis::Cmd>),
}

/// The scripts a node runs; the command task loads them at each connect.
struct Scripts {
    publish: redis::Script,
    enqueue: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    read: redis::Script,
}

struct Ticketed {
    ticket: u64,
    request: Request,
    /// Held until Redis has it, so a slow Redis raises the memory alarm
    /// and publishers are slowed, instead of this queue growing unseen.
    _charge: Option<Charge>,
}

enum Interest {
    Subscribe(ByteString),
    Unsubscribe(ByteString),
    /// A glob over topic channels, for wildcard subscriptions.
    PSubscribe(String),
    PUnsubscribe(String),
}

/// This node's link to the cluster's Redis.
pub struct Cluster {
    client: redis::Client,
    /// The URL without its password, for logs and errors.
    shown: String,
    /// Made once per run: new topic epochs start with it.
    node: String,
    tickets: Tickets,
    publishes: mpsc::UnboundedSender<Ticketed>,
    publish_rx: Mutex<Option<mpsc::UnboundedReceiver<Ticketed>>>,
    interest: mpsc::UnboundedSender<Interest>,
    interest_rx: Mutex<Option<mpsc::UnboundedReceiver<Interest>>>,
    /// Local subscriptions per topic and the ticket of the channel
    /// subscription that serves them.
    channels: Mutex<HashMap<ByteString, (usize, u64)>>,
    /// Local wildcard subscriptions per channel glob, and the ticket of
    /// the pattern subscription that serves them.
    patterns: Mutex<HashMap<String, (usize, u64)>>,
    history_script: redis::Script,
    scripts: Scripts,
    commands_up: tokio::sync::watch::Sender<bool>,
    /// Set once this node's liveness key was first written: its members
    /// count for the others from then on.
    alive: tokio::sync::watch::Sender<bool>,
    conn: Mutex<Option<MultiplexedConnection>>,
    /// Queues this node fetches for its consumers.
    feeds: queues::Feeds,
    /// How long a fetched queue message may sit unrefreshed in a node's
    /// pending list before other nodes take it over.
    claim_idle: Duration,
    /// The broker and this link, for the queue feeds they start (set by `run`).
    broker: std::sync::OnceLock<std::sync::Weak<Broker>>,
    me: std::sync::OnceLock<std::sync::Weak<Cluster>>,
    /// Cancelled when the broker stops: the queue feeds end.
    stopping: CancellationToken,
    /// Told by the pub/sub task when its connection drops: the command
    /// connection is checked at once rather than at the next publish.
    pubsub_lost: tokio::sync::Notify,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.shown)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// `url` with any password replaced by `***`.
pub fn mask_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    match rest.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_string(),
    }
}

fn key(topic: &str, what: &str) -> String {
    // The braces are a Redis Cluster hash tag: a topic's keys and channel
    // share a slot, as its scripts need.
    format!("stompbox:{{{topic}}}:{what}")
}

/// The channel glob a node follows for a wildcard pattern (`chat.*`):
/// every topic channel that starts with the pattern's literal part. It
/// takes more than the pattern does (`chatter.x` for `chat.*`); the
/// node's own wildcard index picks exactly.
fn glob_of(pattern: &str) -> String {
    let mut literal = String::new();
    for token in pattern.split('.') {
        if matches!(token, "*" | "#" | ">") {
            break;
        }
        if !literal.is_empty() {
            literal.push('.');
        }
        literal.push_str(token);
    }
    let mut glob = String::from("stompbox:{/topic/");
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            glob.push('\\');
        }
        glob.push(c);
    }
    glob.push('*');
    glob
}

fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("stompbox:{")?.strip_suffix("}:c")
}

impl Cluster {
    /// A link to the Redis at `url` (`redis://[:password@]host:port[/db]`);
    /// nothing is connected until [`run`](Self::run).
    /// Queue messages a node holds are taken over by the others after
    /// `claim_idle` without a refresh.
    pub fn new(url: &str, claim_idle: Duration) -> Result<Arc<Cluster>, ClusterError> {
        let client = redis::Client::open(url)
            .map_err(|e| ClusterError::Redis(format!("cluster URL {}: {e}", mask_url(url))))?;
        let (publishes, publish_rx) = mpsc::unbounded_channel();
        let (interest, interest_rx) = mpsc::unbounded_channel();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Arc::new(Cluster {
            client,
            shown: mask_url(url),
            node: format!("{:x}{:x}", nanos, std::process::id()),
            tickets: Tickets::default(),
            publishes,
            publish_rx: Mutex::new(Some(publish_rx)),
            interest,
            interest_rx: Mutex::new(Some(interest_rx)),
            channels: Mutex::new(HashMap::new()),
            patterns: Mutex::new(HashMap::new()),
            history_script: redis::Script::new(scripts::HISTORY),
            scripts: Scripts {
                publish: redis::Script::new(scripts::PUBLISH),
                enqueue: redis::Script::new(scripts::ENQUEUE),
                join: redis::Script::new(scripts::PRESENCE_JOIN),
                leave: redis::Script::new(scripts::PRESENCE_LEAVE),
                read: redis::Script::new(scripts::PRESENCE_READ),
            },
            commands_up: tokio::sync::watch::Sender::new(false),
            alive: tokio::sync::watch::Sender::new(false),
            conn: Mutex::new(None),
            pubsub_lost: tokio::sync::Notify::new(),
            feeds: queues::Feeds::default(),
            claim_idle,
            stopping: CancellationToken::new(),
            broker: std::sync::OnceLock::new(),
            me: std::sync::OnceLock::new(),
        }))
    }

    /// The Redis this node uses, without its password.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// The tickets of this node's requests.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// Whether the command connection is up now.
    pub fn is_up(&self) -> bool {
        *self.commands_up.borrow()
    }

    /// Waits up to `limit` for the command connection; whether it is up.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut up = self.commands_up.subscribe();
        tokio::time::timeout(limit, up.wait_for(|u| *u))
            .await
            .is_ok()
    }

    /// Starts the connection tasks; `broker` receives what the channels bring.
    pub fn run(
        self: &Arc<Self>,
        broker: Arc<Broker>,
        cancel: CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks = Vec::new();
        let _ = self.broker.set(Arc::downgrade(&broker));
        let _ = self.me.set(Arc::downgrade(self));
        let stopping = self.stopping.clone();
        let stop_on = cancel.clone();
        tasks.push(tokio::spawn(async move {
            stop_on.cancelled().await;
            stopping.cancel();
        }));
        let publish_rx = self
            .publish_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = publish_rx {
            tasks.push(tokio::spawn(self.clone().commands(rx, cancel.clone())));
        }
        tasks.push(tokio::spawn(
            self.clone().membership(broker.clone(), cancel.clone()),
        ));
        let interest_rx = self
            .interest_rx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(rx) = interest_rx {
            tasks.push(tokio::spawn(self.clone().pubsub(rx, broker, cancel)));
        }
        tasks
    }

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
        if !self.is_up() {
            return Err(ClusterError::Unavailable(self.shown.clone()));
        }
        Ok(self.request(
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

    /// Hands a queue message to Redis; the completion is done once Redis
    /// has it (or says why not: a full queue). Refused at once while
    /// Redis is unreachable.
    pub fn enqueue(
        &self,
        queue: &ByteString,
        headers: &Headers,
        body: &[u8],
        at_ms: u64,
        policy: &crate::broker::QueuePolicy,
        charge: Charge,
    ) -> Result<Completion, ClusterError> {
        if !self.is_up() {
            return Err(ClusterError::Unavailable(self.shown.clone()));
        }
        Ok(self.request(
            Request::Enqueue {
                queue: queue.clone(),
                frame: wire::encode(headers, body),
                at_ms,
                max_length: policy.max_length,
            },
            Some(charge),
        ))
    }

    fn request_ack(&self, queue: &str, ids: Vec<u64>) -> Completion {
        self.request(
            Request::Ack {
                queue: ByteString::from(queue),
                ids,
            },
            None,
        )
    }

    /// Queues a request for the command task, numbered.
    fn request(&self, request: Request, charge: Option<Charge>) -> Completion {
        let ticket = self.tickets.take();
        let sent = self.publishes.send(Ticketed {
            ticket,
            request,
            _charge: charge,
        });
        if sent.is_err() {
            self.tickets.answer(
                ticket,
                Err(Failure::unavailable("the broker is shutting down")),
            );
        }
        Completion::after_ticket(ticket)
    }

    /// The command connection, when it is up.
    fn connection(&self) -> Option<MultiplexedConnection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner()).clone()
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
                .interest
                .send(Interest::Unsubscribe(ByteString::from(topic)));
        }
    }

    /// One more local wildcard subscription under `pattern` (`a.*`): the
    /// node follows every topic channel it may match.
    pub fn watch_pattern(&self, pattern: &str) -> Completion {
        let glob = glob_of(pattern);
        let mut patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        let entry = patterns.entry(glob.clone()).or_insert((0, 0));
        entry.0 += 1;
        if entry.0 == 1 {
            entry.1 = self.tickets.take();
            let _ = self.interest.send(Interest::PSubscribe(glob));
        }
        Completion::after_ticket(entry.1)
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
            let _ = self.interest.send(Interest::PUnsubscribe(glob));
        }
    }

    /// Waits until `completion`'s ticket is answered.
    pub async fn settled(&self, completion: Completion) -> Result<(), String> {
        let Some(ticket) = completion.ticket() else {
            return Ok(());
        };
        let mut resolved = self.tickets.resolved();
        loop {
            if let Some(outcome) = self.tickets.outcome(ticket) {
                return outcome.map_err(|f| f.why);
            }
            if resolved.changed().await.is_err() {
                return Err("the broker is shutting down".into());
            }
        }
    }

    /// Drops `topic`'s kept history (an operator's purge); returns how
    /// many messages went. Positions go on from where they were.
    pub async fn purge_topic(&self, topic: &str) -> Result<u64, ClusterError> {
        let Some(mut conn) = self.connection() else {
            return Err(ClusterError::Unavailable(self.shown.clone()));
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
        .map_err(|_| ClusterError::Unavailable(self.shown.clone()))?
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
        let Some(mut conn) = self.connection() else {
            return Err(ClusterError::Unavailable(self.shown.clone()));
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
                .map_err(|_| ClusterError::Unavailable(self.shown.clone()))?
                .map_err(|e| ClusterError::Redis(e.to_string()))?;
        parse_history(reply, max_age)
    }

    /// The command task: connects, then sends publishes in pipelines, in
    /// the order they were made; reconnects with backoff when Redis goes
    /// away, failing what was in flight.
    async fn commands(
        self: Arc<Self>,
        mut rx: mpsc::UnboundedReceiver<Ticketed>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        let mut logged_down = false;
        'connect: loop {
            let conn = tokio::select! {
                _ = cancel.cancelled() => return,
                c = tokio::time::timeout(REQUEST_TIMEOUT, self.client.get_multiplexed_async_connection()) => c,
            };
            let mut conn = match conn {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    if !logged_down {
                        tracing::error!(redis = %self.shown, error = %e, "cluster: cannot reach Redis; topic messages are refused until it is back (retrying)");
                        logged_down = true;
                    }
                    self.fail_queued(&mut rx);
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
                Err(_) => {
                    self.fail_queued(&mut rx);
                    continue;
                }
            };
            // Loaded once per connection; a restarted Redis has lost it.
            let mut loaded: Result<String, redis::RedisError> = Ok(String::new());
            for script in [
                &self.scripts.publish,
                &self.scripts.enqueue,
                &self.scripts.join,
                &self.scripts.leave,
            ] {
                if loaded.is_ok() {
                    loaded = script.prepare_invoke().load_async(&mut conn).await;
                }
            }
            if let Err(e) = loaded {
                tracing::error!(redis = %self.shown, error = %e, "cluster: Redis refused the publish script");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            }
            *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
            self.commands_up.send_replace(true);
            backoff = Duration::from_millis(100);
            tracing::info!(redis = %self.shown, "cluster: connected to Redis");
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
                        self.lost("no answer to PING");
                        continue 'connect;
                    }
                    _ = self.pubsub_lost.notified() => {
                        if self.ping(&mut conn).await {
                            continue;
                        }
                        self.lost("no answer to PING after the pub/sub connection dropped");
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
                        for g in &groups {
                            self.answer(g, &mut answers);
                        }
                    }
                    failed => {
                        let why = match failed {
                            Ok(Err(e)) => e.to_string(),
                            _ => "no answer in time".to_string(),
                        };
                        self.lost(&why);
                        // Redis may or may not have run them: a RECEIPT must
                        // not claim it did.
                        for t in &batch {
                            self.tickets.answer(
                                t.ticket,
                                Err(Failure::unavailable(format!(
                                    "Redis connection lost: {why}"
                                ))),
                            );
                        }
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
                    .arg(3)
                    .arg(key(topic, "s"))
                    .arg(key(topic, "e"))
                    .arg(key(topic, "n"))
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
                let cmd = pipe
                    .cmd("EVALSHA")
                    .arg(self.scripts.enqueue.get_hash())
                    .arg(2)
                    .arg(key(queue, "q"))
                    .arg(key(queue, "n"))
                    .arg(max_length)
                    .arg(key(queue, "c"));
                for t in group {
                    if let Request::Enqueue { frame, at_ms, .. } = &t.request {
                        cmd.arg(&frame[..]).arg(at_ms);
                    }
                }
            }
            Request::Ack { queue, ids } => {
                let ids: Vec<String> = ids.iter().map(|n| format!("0-{n}")).collect();
                pipe.cmd("XACK")
                    .arg(key(queue, "q"))
                    .arg(queues::GROUP)
                    .arg(&ids);
                pipe.cmd("XDEL").arg(key(queue, "q")).arg(&ids);
            }
            Request::Cmd(cmd) => {
                pipe.add_command((**cmd).clone());
            }
        }
    }

    /// Answers one group's tickets from its commands' replies.
    fn answer(
        &self,
        group: &[&Ticketed],
        answers: &mut impl Iterator<Item = redis::RedisResult<redis::Value>>,
    ) {
        let Some(first) = group.first() else { return };
        let mut outcome = answers.next().unwrap_or(Ok(redis::Value::Nil));
        // An Ack is two commands (XACK, XDEL).
        if matches!(first.request, Request::Ack { .. }) {
            let deleted = answers.next().unwrap_or(Ok(redis::Value::Nil));
            outcome = outcome.and(deleted);
        }
        if let Err(e) = &outcome {
            tracing::warn!(redis = %self.shown, error = %e, "cluster: Redis refused a request");
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
            self.tickets.answer(t.ticket, answer);
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

    /// The command connection is gone: publishes are refused until the
    /// task has connected again.
    fn lost(&self, why: &str) {
        tracing::error!(redis = %self.shown, error = %why, "cluster: lost the connection to Redis; reconnecting");
        self.commands_up.send_replace(false);
        *self.conn.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Answers every publish queued while Redis is down as failed.
    fn fail_queued(&self, rx: &mut mpsc::UnboundedReceiver<Ticketed>) {
        self.commands_up.send_replace(false);
        while let Ok(t) = rx.try_recv() {
            self.tickets.answer(
                t.ticket,
                Err(Failure::unavailable(format!(
                    "Redis at {} is unreachable",
                    self.shown
                ))),
            );
        }
    }

    /// The pub/sub task: keeps this node subscribed to the channels of
    /// the topics it has subscribers for, and delivers what they bring.
    async fn pubsub(
        self: Arc<Self>,
        mut interest: mpsc::UnboundedReceiver<Interest>,
        broker: Arc<Broker>,
        cancel: CancellationToken,
    ) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                c = tokio::time::timeout(REQUEST_TIMEOUT, self.client.get_async_pubsub()) => c,
            };
            let Ok(Ok(pubsub)) = connected else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let (mut sink, mut stream) = pubsub.split();
            // Whatever was asked while disconnected is settled by
            // subscribing to every channel wanted now.
            while interest.try_recv().is_ok() {}
            let wanted: Vec<ByteString> = self
                .channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let globs: Vec<String> = self
                .patterns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let mut subscribed: HashSet<ByteString> = HashSet::new();
            let mut psubscribed: HashSet<String> = HashSet::new();
            let mut ok = true;
            for topic in wanted {
                if sink.subscribe(key(&topic, "c")).await.is_err() {
                    ok = false;
                    break;
                }
                subscribed.insert(topic);
            }
            for glob in globs {
                if !ok || sink.psubscribe(&glob).await.is_err() {
                    ok = false;
                    break;
                }
                psubscribed.insert(glob);
            }
            if !ok {
                continue;
            }
            backoff = Duration::from_millis(100);
            tracing::info!(redis = %self.shown, channels = subscribed.len(), "cluster: pub/sub connected");
            self.answer_channels(&subscribed, &psubscribed);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    asked = interest.recv() => {
                        let Some(asked) = asked else { return };
                        let done = match asked {
                            Interest::Subscribe(topic) => {
                                let wanted = self.channels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&topic);
                                if wanted && !subscribed.contains(&topic) {
                                    let r = sink.subscribe(key(&topic, "c")).await;
                                    if r.is_ok() {
                                        subscribed.insert(topic);
                                    }
                                    r
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::Unsubscribe(topic) => {
                                let wanted = self.channels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&topic);
                                if !wanted && subscribed.remove(&topic) {
                                    sink.unsubscribe(key(&topic, "c")).await
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::PSubscribe(glob) => {
                                let wanted = self.patterns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&glob);
                                if wanted && !psubscribed.contains(&glob) {
                                    let r = sink.psubscribe(&glob).await;
                                    if r.is_ok() {
                                        psubscribed.insert(glob);
                                    }
                                    r
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::PUnsubscribe(glob) => {
                                let wanted = self.patterns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&glob);
                                if !wanted && psubscribed.remove(&glob) {
                                    sink.punsubscribe(&glob).await
                                } else {
                                    Ok(())
                                }
                            }
                        };
                        if done.is_err() {
                            break;
                        }
                        self.answer_channels(&subscribed, &psubscribed);
                    }
                    message = stream.next() => {
                        let Some(message) = message else { break };
                        let Some(topic) = topic_of_channel(message.get_channel_name()) else { continue };
                        if topic.starts_with("/queue/") {
                            self.feeds.wake(topic);
                            continue;
                        }
                        let payload = message.get_payload_bytes();
                        if message.from_pattern() {
                            // For wildcard subscribers only; presence is not theirs.
                            if payload.first() != Some(&membership::PRESENCE_MARK) {
                                match wire::decode_published(payload) {
                                    Ok(published) => broker.deliver_wild_from_cluster(topic, published),
                                    Err(e) => tracing::warn!(topic, error = %e, "cluster: dropped an unreadable message"),
                                }
                            }
                            continue;
                        }
                        if let Some((event, node, json)) = membership::read_presence(payload) {
                            // The origin node told its own subscribers itself.
                            if node != self.node {
                                broker.presence_from_cluster(topic, event, json);
                            }
                            continue;
                        }
                        match wire::decode_published(message.get_payload_bytes()) {
                            Ok(published) => broker.deliver_from_cluster(topic, published),
                            Err(e) => tracing::warn!(topic, error = %e, "cluster: dropped an unreadable message"),
                        }
                    }
                }
            }
            tracing::error!(redis = %self.shown, "cluster: lost the pub/sub connection to Redis; topic subscribers miss messages until it is back (reconnecting)");
            self.pubsub_lost.notify_one();
        }
    }

    /// Answers the channel-subscription tickets of the topics now subscribed.
    fn answer_channels(&self, subscribed: &HashSet<ByteString>, psubscribed: &HashSet<String>) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, (_, ticket)) in channels.iter() {
            if subscribed.contains(topic) {
                self.tickets.answer(*ticket, Ok(()));
            }
        }
        drop(channels);
        let patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        for (glob, (_, ticket)) in patterns.iter() {
            if psubscribed.contains(glob) {
                self.tickets.answer(*ticket, Ok(()));
            }
        }
    }
}

/// Messages to one queue sent one after another at most in one script call.
const ENQUEUE_RUN: usize = 256;

/// The batch in groups of one request each, except that consecutive queue
/// messages to the same queue go together (one script call).
fn group(batch: &[Ticketed]) -> Vec<Vec<&Ticketed>> {
    let mut groups: Vec<Vec<&Ticketed>> = Vec::new();
    for t in batch {
        if let Request::Enqueue { queue, .. } = &t.request
            && let Some(last) = groups.last_mut()
            && last.len() < ENQUEUE_RUN
            && matches!(&last[0].request, Request::Enqueue { queue: q, .. } if q == queue)
        {
            last.push(t);
            continue;
        }
        groups.push(vec![t]);
    }
    groups
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patterns_glob_covers_what_it_matches() {
        assert_eq!(glob_of("chat.*"), "stompbox:{/topic/chat*");
        assert_eq!(glob_of("a.b.#"), "stompbox:{/topic/a.b*");
        assert_eq!(glob_of(">"), "stompbox:{/topic/*");
        assert_eq!(glob_of("we?rd[1].*"), "stompbox:{/topic/we\\?rd\\[1\\]*");
    }

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            mask_url("redis://:s3cret@10.0.0.5:6379/0"),
            "redis://:***@10.0.0.5:6379/0"
        );
        assert_eq!(
            mask_url("redis://app:s3cret@host:1"),
            "redis://app:***@host:1"
        );
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
    }
}
