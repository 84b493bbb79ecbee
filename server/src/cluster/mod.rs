//! Several Stompbox nodes as one broker, on Redis.
//!
//! With `cluster = "redis://..."`, topics and queues live in Redis. A
//! topic publish on any node runs one script that gives the message the
//! topic's next stream position, keeps it in the topic's Redis Stream (as
//! many as the topic policy's `history`) and publishes it on the topic's
//! channel; every node with local subscribers follows that channel and
//! delivers what arrives, its own publishes included, so all nodes see
//! one order and one numbering (`topics.rs`). Queues are Streams read through one
//! consumer group (`queues/`); presence, last wills and dead nodes are
//! in `membership.rs`.
//!
//! Several Redis servers (`cluster = "redis://a,redis://b"`) share the
//! work by name: each topic and queue lives on one of them (a hash of its
//! name), and the first keeps what concerns nodes (liveness, wills,
//! presence). Each Redis has its own two connections and tasks
//! (`link.rs`); while one is down, only the destinations it holds are
//! refused.

mod link;
mod membership;
mod pubsub;
mod queues;
mod scripts;
pub mod tickets;
mod topics;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use stomp_codec::{ByteString, Headers};
use tokio_util::sync::CancellationToken;

use crate::broker::{Broker, Charge};
use crate::store::Completion;
use link::{Link, Request, Ticketed};
pub use tickets::{Failure, Tickets};
pub use topics::History;

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

/// The scripts a node runs; the command task loads them at each connect.
struct Scripts {
    publish: redis::Script,
    enqueue: redis::Script,
    settle: redis::Script,
    claim: redis::Script,
    join: redis::Script,
    leave: redis::Script,
    read: redis::Script,
}

/// This node's link to the cluster's Redis.
pub struct Cluster {
    /// The Redis servers, by shard; the first also keeps node state.
    links: Vec<Link>,
    /// Made once per run: new topic epochs start with it.
    node: String,
    tickets: Tickets,
    /// Local subscriptions per topic and the ticket of the channel
    /// subscription that serves them.
    channels: Mutex<HashMap<ByteString, (usize, u64)>>,
    /// Local wildcard subscriptions per channel glob, and the tickets of
    /// the pattern subscriptions (one per Redis) that serve them.
    patterns: Mutex<HashMap<String, (usize, Vec<u64>)>>,
    history_script: redis::Script,
    scripts: Scripts,
    /// Set once this node's liveness key was first written: its members
    /// count for the others from then on.
    alive: tokio::sync::watch::Sender<bool>,
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
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("redis", &self.shown())
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

/// Names of the queues that keep durable topic subscriptions' messages:
/// private (clients cannot address them), followed by the key in hex and
/// the topic.
pub const DURABLE_PREFIX: &str = "/queue/stompbox.durable.";

/// The queue that keeps durable subscription `durable_key`'s messages of `topic`.
pub fn durable_queue_name(topic: &str, durable_key: &str) -> String {
    let hex: String = durable_key.bytes().map(|b| format!("{b:02x}")).collect();
    format!("{DURABLE_PREFIX}{hex}:{topic}")
}

/// The topic a durable subscription's queue is fed from.
pub fn topic_of_durable_queue(queue: &str) -> Option<&str> {
    queue
        .strip_prefix(DURABLE_PREFIX)?
        .split_once(':')
        .map(|(_, t)| t)
}

fn topic_of_channel(channel: &str) -> Option<&str> {
    channel.strip_prefix("stompbox:{")?.strip_suffix("}:c")
}

impl Cluster {
    /// A link to the Redis servers in `urls` (`redis://[:password@]host:port[/db]`,
    /// several separated by commas); nothing is connected until [`run`](Self::run).
    /// Queue messages a node holds are taken over by the others after
    /// `claim_idle` without a refresh.
    pub fn new(urls: &str, claim_idle: Duration) -> Result<Arc<Cluster>, ClusterError> {
        let links = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(Link::new)
            .collect::<Result<Vec<Link>, ClusterError>>()?;
        if links.is_empty() {
            return Err(ClusterError::Redis("no Redis URL given".into()));
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Arc::new(Cluster {
            links,
            node: format!("{:x}{:x}", nanos, std::process::id()),
            tickets: Tickets::default(),
            channels: Mutex::new(HashMap::new()),
            patterns: Mutex::new(HashMap::new()),
            history_script: redis::Script::new(scripts::HISTORY),
            scripts: Scripts {
                publish: redis::Script::new(scripts::PUBLISH),
                enqueue: redis::Script::new(scripts::ENQUEUE),
                settle: redis::Script::new(scripts::SETTLE),
                claim: redis::Script::new(scripts::CLAIM),
                join: redis::Script::new(scripts::PRESENCE_JOIN),
                leave: redis::Script::new(scripts::PRESENCE_LEAVE),
                read: redis::Script::new(scripts::PRESENCE_READ),
            },
            alive: tokio::sync::watch::Sender::new(false),
            feeds: queues::Feeds::default(),
            claim_idle,
            stopping: CancellationToken::new(),
            broker: std::sync::OnceLock::new(),
            me: std::sync::OnceLock::new(),
        }))
    }

    /// Which Redis holds `name` (a topic or queue): a hash of the name, so
    /// every node agrees. A durable subscription's queue lives with its
    /// topic, whose publish script writes to it.
    fn shard_of(&self, name: &str) -> usize {
        if self.links.len() == 1 {
            return 0;
        }
        let name = topic_of_durable_queue(name).unwrap_or(name);
        crc32fast::hash(name.as_bytes()) as usize % self.links.len()
    }

    /// Starts keeping `topic`'s messages in `queue` for a durable
    /// subscription (from now on); the completion is done when Redis has
    /// it, so a RECEIPT for the SUBSCRIBE means nothing published after is
    /// missed.
    pub fn register_durable(&self, topic: &str, durable_key: &str, queue: &str) -> Completion {
        let mut add = redis::cmd("SADD");
        add.arg(key(topic, "d")).arg(queue);
        let added = self.request(self.link(topic), Request::Cmd(Box::new(add)), None);
        let mut name = redis::cmd("HSET");
        name.arg("stompbox:durables").arg(durable_key).arg(queue);
        added.and(self.request(self.home(), Request::Cmd(Box::new(name)), None))
    }

    /// Deletes the durable subscription `durable_key`, wherever it was
    /// made: its queue's messages go, and the topic stops feeding it.
    pub async fn forget_durable(&self, durable_key: &str) -> Result<bool, ClusterError> {
        let home = self.home();
        let Some(mut conn) = home.connection() else {
            return Err(ClusterError::Unavailable(home.shown.clone()));
        };
        let queue: Option<String> = redis::cmd("HGET")
            .arg("stompbox:durables")
            .arg(durable_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        let Some(queue) = queue else {
            return Ok(false);
        };
        let Some(topic) = topic_of_durable_queue(&queue) else {
            return Ok(false);
        };
        let link = self.link(topic);
        let Some(mut there) = link.connection() else {
            return Err(ClusterError::Unavailable(link.shown.clone()));
        };
        let mut pipe = redis::pipe();
        pipe.cmd("SREM")
            .arg(key(topic, "d"))
            .arg(&queue)
            .ignore()
            .cmd("DEL")
            .arg(key(&queue, "q"))
            .arg(key(&queue, "n"))
            .arg(key(&queue, "len"))
            .arg(key(&queue, "x"))
            .ignore();
        let _: () = pipe
            .query_async(&mut there)
            .await
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        let _: () = redis::cmd("HDEL")
            .arg("stompbox:durables")
            .arg(durable_key)
            .query_async(&mut conn)
            .await
            .map_err(|e| ClusterError::Redis(e.to_string()))?;
        Ok(true)
    }

    /// The Redis that holds `name`.
    fn link(&self, name: &str) -> &Link {
        &self.links[self.shard_of(name)]
    }

    /// The Redis that keeps node state: liveness, wills, presence.
    fn home(&self) -> &Link {
        &self.links[0]
    }

    /// The Redis servers this node uses, without passwords.
    pub fn shown(&self) -> String {
        self.links
            .iter()
            .map(|l| l.shown.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The tickets of this node's requests.
    pub fn tickets(&self) -> &Tickets {
        &self.tickets
    }

    /// For `/health`: this node's id and each Redis with whether it is
    /// reachable now.
    pub fn health(&self) -> serde_json::Value {
        serde_json::json!({
            "node": self.node,
            "redis": self
                .links
                .iter()
                .map(|l| serde_json::json!({ "url": l.shown, "up": l.is_up() }))
                .collect::<Vec<_>>(),
            "topics_followed": self.channels.lock().unwrap_or_else(|e| e.into_inner()).len(),
            "queues_fed": self.feeds.all().len(),
        })
    }

    /// Whether the command connections are all up now.
    pub fn is_up(&self) -> bool {
        self.links.iter().all(Link::is_up)
    }

    /// Waits up to `limit` for every command connection and this node's
    /// first liveness mark; whether all happened.
    pub async fn wait_up(&self, limit: Duration) -> bool {
        let mut alive = self.alive.subscribe();
        tokio::time::timeout(limit, async {
            for link in &self.links {
                let _ = link.up.subscribe().wait_for(|u| *u).await;
            }
            let _ = alive.wait_for(|a| *a).await;
        })
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
        for (shard, link) in self.links.iter().enumerate() {
            let requests = link
                .requests_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(rx) = requests {
                tasks.push(tokio::spawn(self.clone().commands(
                    shard,
                    rx,
                    cancel.clone(),
                )));
            }
            let interest = link
                .interest_rx
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(rx) = interest {
                tasks.push(tokio::spawn(self.clone().pubsub(
                    shard,
                    rx,
                    broker.clone(),
                    cancel.clone(),
                )));
            }
        }
        tasks.push(tokio::spawn(self.clone().membership(broker, cancel)));
        tasks
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
        let link = self.link(queue);
        if !link.is_up() {
            return Err(ClusterError::Unavailable(link.shown.clone()));
        }
        Ok(self.request(
            link,
            Request::Enqueue {
                queue: queue.clone(),
                packed: wire::pack(headers, body),
                at_ms,
                max_length: policy.max_length,
            },
            Some(charge),
        ))
    }

    /// Asks Redis to settle queue messages held here (see `queues/`).
    fn request_settle(&self, queue: &str, settled: link::Settled) -> Completion {
        self.request(
            self.link(queue),
            Request::Settle {
                queue: ByteString::from(queue),
                settled,
            },
            None,
        )
    }

    /// Queues a request for `link`'s command task, numbered.
    fn request(&self, link: &Link, request: Request, charge: Option<Charge>) -> Completion {
        let ticket = self.tickets.take();
        let sent = link.requests.send(Ticketed {
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
