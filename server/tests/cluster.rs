//! Several real `stompbox` processes as one broker on a real
//! `redis-server` (Debian's; `scripts/test.sh` installs it), each on a
//! loopback port chosen free: topic fan-out across nodes, recovery on
//! another node with no gap and no duplicate, and Redis restarted under
//! the nodes.

mod support;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use support::{Broker, Client, Frame, WAIT, api_call};

/// A `redis-server` of the test's own, killed when dropped.
struct Redis {
    child: Child,
    port: u16,
    dir: PathBuf,
    /// Every write in the append-only file, synced before Redis answers.
    durable: bool,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_binary() -> &'static str {
    let path = "/usr/bin/redis-server";
    assert!(
        Path::new(path).exists(),
        "{path} is missing: the cluster tests need Debian's redis-server (scripts/test.sh installs it: apt-get install redis-server)"
    );
    path
}

impl Redis {
    /// Starts Redis on a free loopback port, without persistence, or
    /// with every write synced to its append-only file when `durable`.
    fn start(dir: &Path, durable: bool) -> Redis {
        // A port free a moment ago may be taken by the time Redis binds
        // it: try a few.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            if let Some(redis) = Redis::start_on(dir, port, durable) {
                return redis;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// Starts Redis on `port`; `None` when it does not answer PING.
    fn start_on(dir: &Path, port: u16, durable: bool) -> Option<Redis> {
        let mut redis = Redis {
            child: spawn(dir, port, durable),
            port,
            dir: dir.to_path_buf(),
            durable,
        };
        redis.answers().then_some(redis)
    }

    /// Whether it answers PING within 10 s (false at once if it exited).
    fn answers(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return true;
            }
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// SIGKILL: the nodes lose their connections.
    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// A new Redis on the same port and directory: empty, or with what
    /// its append-only file kept when durable.
    fn start_again(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.child = spawn(&self.dir, self.port, self.durable);
            if self.answers() {
                return;
            }
            self.kill();
            assert!(
                Instant::now() < deadline,
                "redis-server did not come back on port {}",
                self.port
            );
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 7];
        s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

fn spawn(dir: &Path, port: u16, durable: bool) -> Child {
    let persistence: &[&str] = if durable {
        &[
            "--save",
            "",
            "--appendonly",
            "yes",
            "--appendfsync",
            "always",
        ]
    } else {
        &["--save", "", "--appendonly", "no"]
    };
    Command::new(redis_binary())
        .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server runs")
}

/// The management token every node takes.
const TOKEN: &str = "a-management-token-of-at-least-32-bytes";

/// Nodes on one Redis, or on several sharing the destinations.
struct Cluster {
    nodes: Vec<Broker>,
    redis: Redis,
    /// The Redis servers after the first, when there are several.
    more_redis: Vec<Redis>,
    _dir: tempfile::TempDir,
}

fn cluster(n: usize) -> Cluster {
    cluster_on(1, n, false)
}

/// `n` nodes on `shards` Redis servers, durable ones or not.
fn cluster_on(shards: usize, n: usize, durable: bool) -> Cluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("api.token");
    std::fs::write(&token_file, TOKEN).expect("token written");
    let token_file = token_file.to_string_lossy().into_owned();
    let mut servers: Vec<Redis> = (0..shards)
        .map(|i| {
            let d = dir.path().join(format!("redis{i}"));
            std::fs::create_dir_all(&d).expect("a Redis directory");
            Redis::start(&d, durable)
        })
        .collect();
    let url = servers.iter().map(Redis::url).collect::<Vec<_>>().join(",");
    // Rooms that keep history with no publish rate limit, for the tests' bursts.
    let config = dir.path().join("stompbox.toml");
    std::fs::write(
        &config,
        "[[topics]]\npattern = \"/topic/room.*\"\nhistory = 1000\npublish_rate = 0.0\n\
         [[queues]]\npattern = \"/queue/small\"\nmax_length = 5\n",
    )
    .expect("config written");
    let config = config.to_string_lossy().into_owned();
    let nodes = (0..n)
        .map(|i| {
            let data = dir.path().join(format!("node{i}"));
            Broker::start(
                &data,
                &[
                    "--cluster",
                    &url,
                    "--config",
                    &config,
                    // A killed node's messages are taken over after 1 s.
                    "--cluster-claim-idle-ms",
                    "1000",
                    "--management-listen",
                    "127.0.0.1:0",
                    "--management-token-file",
                    &token_file,
                ],
            )
        })
        .collect();
    let redis = servers.remove(0);
    Cluster {
        nodes,
        redis,
        more_redis: servers,
        _dir: dir,
    }
}

fn subscribe(port: u16, destination: &str, extra: &str) -> Client {
    subscribe_seen(port, destination, extra).0
}

/// Subscribes with a receipt; also returns what came before the RECEIPT
/// (history and a presence snapshot do, as on one node).
fn subscribe_seen(port: u16, destination: &str, extra: &str) -> (Client, Vec<Frame>) {
    subscribe_as(Client::connect(port), "s", destination, extra)
}

/// Subscribes `c` as `id`, with a receipt; also returns what came before it.
fn subscribe_as(mut c: Client, id: &str, destination: &str, extra: &str) -> (Client, Vec<Frame>) {
    c.write(&format!(
        "SUBSCRIBE\nid:{id}\ndestination:{destination}\n{extra}receipt:sub\n\n\0"
    ));
    let mut before = Vec::new();
    loop {
        let f = c.read().expect("a RECEIPT for the SUBSCRIBE");
        match f.command.as_str() {
            "RECEIPT" => return (c, before),
            "MESSAGE" => before.push(f),
            _ => panic!("{f:?}"),
        }
    }
}

/// Sends with a receipt; the RECEIPT (or ERROR) that answers it.
fn send(c: &mut Client, destination: &str, body: &str) -> Frame {
    c.write(&format!(
        "SEND\ndestination:{destination}\nreceipt:r-{body}\n\n{body}\0"
    ));
    loop {
        let f = c.read().expect("an answer to the SEND");
        if f.command != "MESSAGE" {
            return f;
        }
    }
}

fn confirmed(c: &mut Client, destination: &str, body: &str) {
    let f = send(c, destination, body);
    assert_eq!(f.command, "RECEIPT", "{f:?}");
    assert!(!f.headers.contains_key("x-error"), "{f:?}");
}

fn position(f: &Frame) -> u64 {
    f.headers
        .get("x-stream-position")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no position in {f:?}"))
}

#[test]
fn a_topic_message_reaches_subscribers_on_every_node_in_one_order() {
    let c = cluster(3);
    let topic = "/topic/room.fanout";
    let mut subs: Vec<Client> = c
        .nodes
        .iter()
        .map(|n| subscribe(n.port, topic, ""))
        .collect();
    let mut publishers: Vec<Client> = c.nodes.iter().map(|n| Client::connect(n.port)).collect();
    for i in 0..30 {
        let from = i % 3;
        confirmed(&mut publishers[from], topic, &format!("m{i}"));
    }
    let mut seen: Vec<Vec<(String, String, u64)>> = Vec::new();
    for s in &mut subs {
        let got: Vec<(String, String, u64)> = (0..30)
            .map(|_| {
                let f = s.read().expect("a MESSAGE");
                assert_eq!(f.command, "MESSAGE", "{f:?}");
                let epoch = f.headers.get("x-stream-epoch").cloned().unwrap_or_default();
                let p = position(&f);
                (f.body, epoch, p)
            })
            .collect();
        seen.push(got);
    }
    // Each node's subscriber saw every message, in the order they were
    // confirmed, with the same cluster-wide positions under one epoch.
    let expected: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    for got in &seen {
        let bodies: Vec<String> = got.iter().map(|(b, _, _)| b.clone()).collect();
        assert_eq!(bodies, expected);
        assert_eq!(got, &seen[0]);
        let positions: Vec<u64> = got.iter().map(|(_, _, p)| *p).collect();
        assert_eq!(positions, (1..=30).collect::<Vec<u64>>());
    }
}

#[test]
fn a_client_moving_to_another_node_recovers_with_no_gap_and_no_duplicate() {
    let c = cluster(3);
    let topic = "/topic/room.move";
    let (a, b, p) = (c.nodes[0].port, c.nodes[1].port, c.nodes[2].port);
    let mut first = subscribe(a, topic, "");
    let mut publisher = Client::connect(p);
    for i in 1..=5 {
        confirmed(&mut publisher, topic, &format!("m{i}"));
    }
    let mut last = None;
    for _ in 1..=5 {
        last = first.read();
    }
    let last = last.expect("five messages");
    let epoch = last.headers["x-stream-epoch"].clone();
    let have = position(&last);
    drop(first);

    // Published while the client is away, and all the while it comes
    // back on another node: what it gets must go on from `have` by one,
    // history and live together.
    for i in 6..=10 {
        confirmed(&mut publisher, topic, &format!("m{i}"));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let feeder = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(p);
            let mut i: u64 = 11;
            while !stop.load(Ordering::Relaxed) && i < 2000 {
                confirmed(&mut c, topic, &format!("m{i}"));
                i += 1;
            }
            i - 1
        })
    };
    // History comes before the SUBSCRIBE's RECEIPT (as on one node): no
    // receipt asked here, so every frame is history, marker or live.
    let mut back = Client::connect(b);
    back.write(&format!(
        "SUBSCRIBE\nid:s\ndestination:{topic}\nx-since:{have}\nx-since-epoch:{epoch}\n\n\0"
    ));
    let mut expected = have + 1;
    let mut marker = None;
    let mut got: Vec<String> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while expected < have + 60 && Instant::now() < deadline {
        let f = back.read().expect("history, then live messages");
        assert_eq!(f.command, "MESSAGE", "{f:?}");
        got.push(
            f.headers
                .get("x-stream-position")
                .cloned()
                .unwrap_or_else(|| "marker".into()),
        );
        if let Some(r) = f.headers.get("x-recovery") {
            marker = Some(r.clone());
            assert_eq!(r, "complete", "{f:?}");
            continue;
        }
        assert_eq!(
            position(&f),
            expected,
            "no gap, no duplicate: {f:?} (marker {marker:?}, so far {got:?})"
        );
        assert_eq!(f.body, format!("m{expected}"));
        expected += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let published = feeder.join().expect("the feeder");
    assert_eq!(marker.as_deref(), Some("complete"));
    assert!(
        expected >= have + 60,
        "only up to {expected} arrived (published up to {published})"
    );
}

#[test]
fn redis_restarted_under_the_nodes_refuses_then_serves_again() {
    let mut c = cluster(2);
    let topic = "/topic/news";
    let mut sub = subscribe(c.nodes[1].port, topic, "");
    let mut publisher = Client::connect(c.nodes[0].port);
    confirmed(&mut publisher, topic, "before");
    assert_eq!(sub.read().expect("before").body, "before");

    c.redis.kill();
    // /health says so once the node has noticed (a PING each second).
    let health = |port: u16| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).expect("HTTP");
        write!(
            s,
            "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .expect("GET");
        let mut text = String::new();
        let _ = s.read_to_string(&mut text);
        text
    };
    let http = c.nodes[0].http_port();
    let deadline = Instant::now() + WAIT;
    while !health(http).contains("\"up\":false") {
        assert!(Instant::now() < deadline, "{}", health(http));
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(health(http).contains("Redis is unreachable"));
    // While Redis is down a topic SEND is refused on its RECEIPT, and the
    // connection goes on.
    let refused = send(&mut publisher, topic, "during");
    assert_eq!(refused.command, "RECEIPT", "{refused:?}");
    assert_eq!(
        refused.headers.get("x-error").map(String::as_str),
        Some("cluster-unavailable"),
        "{refused:?}"
    );

    c.redis.start_again();

    // The nodes reconnect by themselves (backoff of at most 5 s): keep
    // sending until one is confirmed.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0;
    loop {
        n += 1;
        let f = send(&mut publisher, topic, &format!("after{n}"));
        if f.command == "RECEIPT" && !f.headers.contains_key("x-error") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no SEND confirmed after Redis came back: {f:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        health(http).contains("\"status\":\"ok\""),
        "{}",
        health(http)
    );
    // The subscriber on the other node gets it: its node subscribed again.
    let deadline = Instant::now() + WAIT;
    loop {
        let f = sub.read().expect("a message after the restart");
        if f.body == format!("after{n}") {
            break;
        }
        assert!(Instant::now() < deadline);
    }
    for node in &c.nodes {
        assert!(!node.log().contains("panicked"), "{}", node.log());
    }
}

/// Subscribes to a queue with client-individual acks and `prefetch`.
/// A consumer of `queue`; messages may come before the SUBSCRIBE's
/// RECEIPT (the node fetches for it at once), and are read first.
fn consume(port: u16, queue: &str, prefetch: usize) -> Client {
    let (mut c, early) = subscribe_seen(
        port,
        queue,
        &format!("ack:client-individual\nprefetch-count:{prefetch}\n"),
    );
    c.unread(early);
    c
}

fn ack(c: &mut Client, f: &Frame) {
    let id = f.headers.get("ack").expect("an ack id");
    c.write(&format!("ACK\nid:{id}\n\n\0"));
}

#[test]
fn competing_consumers_on_three_nodes_get_each_queue_message_exactly_once() {
    let c = cluster(3);
    let queue = "/queue/work";
    let total = 300;
    let received = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = c
        .nodes
        .iter()
        .map(|n| {
            let mut client = consume(n.port, queue, 10);
            let received = received.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                // Until all consumers together have as many as were sent
                // (a duplicate would end it with one missing).
                let _ = client
                    .stream
                    .set_read_timeout(Some(Duration::from_millis(100)));
                let deadline = Instant::now() + WAIT;
                while received.load(Ordering::SeqCst) < total && Instant::now() < deadline {
                    let Some(f) = client.read() else { continue };
                    assert_eq!(f.command, "MESSAGE", "{f:?}");
                    ack(&mut client, &f);
                    got.push(f.body.parse::<u32>().expect("a number"));
                    received.fetch_add(1, Ordering::SeqCst);
                }
                got
            })
        })
        .collect();
    let producers: Vec<_> = c
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let port = n.port;
            std::thread::spawn(move || {
                let mut p = Client::connect(port);
                for k in (i..total).step_by(3) {
                    confirmed(&mut p, queue, &k.to_string());
                }
            })
        })
        .collect();
    for p in producers {
        p.join().expect("a producer");
    }
    let mut all = Vec::new();
    let mut per_node = Vec::new();
    for c in consumers {
        let got = c.join().expect("a consumer");
        per_node.push(got.len());
        all.extend(got);
    }
    all.sort_unstable();
    let expected: Vec<u32> = (0..total as u32).collect();
    assert_eq!(
        all.len(),
        total,
        "each message exactly once (per node: {per_node:?})"
    );
    assert_eq!(all, expected);
    assert!(
        per_node.iter().all(|n| *n > 0),
        "every node's consumer took some: {per_node:?}"
    );
}

#[test]
fn a_killed_nodes_unacknowledged_messages_go_to_a_consumer_on_another_node() {
    let mut c = cluster(2);
    let queue = "/queue/held";
    let mut producer = Client::connect(c.nodes[1].port);
    for k in 0..10 {
        confirmed(&mut producer, queue, &k.to_string());
    }
    // Node 0's consumer takes five and never acknowledges them.
    let mut holder = consume(c.nodes[0].port, queue, 5);
    let held: Vec<String> = (0..5)
        .map(|_| holder.read().expect("a message").body)
        .collect();
    let doomed = c.nodes.remove(0);
    doomed.kill();

    let mut survivor = consume(c.nodes[0].port, queue, 100);
    let mut got = Vec::new();
    let mut redelivered = Vec::new();
    let deadline = Instant::now() + WAIT;
    while got.len() < 10 && Instant::now() < deadline {
        let f = survivor
            .read()
            .expect("the messages, the killed node's too");
        ack(&mut survivor, &f);
        if f.headers.get("redelivered").map(String::as_str) == Some("true") {
            redelivered.push(f.body.clone());
        }
        got.push(f.body);
    }
    got.sort();
    let expected: Vec<String> = {
        let mut e: Vec<String> = (0..10).map(|k| k.to_string()).collect();
        e.sort();
        e
    };
    assert_eq!(got, expected, "all ten, once each");
    redelivered.sort();
    let mut held = held;
    held.sort();
    assert_eq!(redelivered, held, "the killed node's five come redelivered");
}

#[test]
fn a_consumer_that_leaves_hands_its_messages_to_another_nodes_consumer() {
    let c = cluster(2);
    let queue = "/queue/handover";
    let mut producer = Client::connect(c.nodes[1].port);
    for k in 0..6 {
        confirmed(&mut producer, queue, &k.to_string());
    }
    let mut leaving = consume(c.nodes[0].port, queue, 3);
    let first: Vec<String> = (0..3)
        .map(|_| leaving.read().expect("a message").body)
        .collect();
    leaving.write("DISCONNECT\nreceipt:bye\n\n\0");
    assert_eq!(leaving.read().expect("the RECEIPT").command, "RECEIPT");

    let mut staying = consume(c.nodes[1].port, queue, 100);
    let mut got = Vec::new();
    while got.len() < 6 {
        let f = staying.read().expect("all six");
        ack(&mut staying, &f);
        got.push(f.body);
    }
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3", "4", "5"]);
    assert!(first.iter().all(|b| got.contains(b)));
}

/// Sends `count` messages (bodies `0`..) to `queue` in one write, each
/// with a receipt, so they reach Redis together; returns once all are
/// confirmed.
fn burst(c: &mut Client, queue: &str, count: usize) {
    let frames: String = (0..count)
        .map(|k| format!("SEND\ndestination:{queue}\nreceipt:b-{k}\n\n{k}\0"))
        .collect();
    c.write(&frames);
    for _ in 0..count {
        let f = c.read().expect("a RECEIPT for each SEND");
        assert_eq!(f.command, "RECEIPT", "{f:?}");
        assert!(!f.headers.contains_key("x-error"), "{f:?}");
    }
}

/// The entries in `queue`'s stream.
fn entries_in(c: &Cluster, queue: &str) -> usize {
    let reply = redis_call(c.redis.port, &["XLEN", &format!("stompbox:{{{queue}}}:q")]);
    reply
        .trim_start_matches(':')
        .parse()
        .expect("XLEN answers a number")
}

/// A burst's messages on node 0, the even ones acknowledged there (the
/// last ACK confirmed), the node's consumer then gone by `leave`: a
/// consumer on node 1 gets the odd ones, once each and redelivered, and
/// none of the acknowledged ones, though they shared stream entries.
fn partly_settled_entries_move_without_their_settled_members(
    leave: impl FnOnce(&mut Cluster, Client),
) {
    let mut c = cluster(2);
    let queue = "/queue/bundled";
    let total = 40;
    let mut producer = Client::connect(c.nodes[1].port);
    burst(&mut producer, queue, total);
    let entries = entries_in(&c, queue);
    assert!(
        entries < total,
        "a burst is bundled: {entries} entries for {total} messages"
    );
    let mut holder = consume(c.nodes[0].port, queue, total);
    let mut acked = Vec::new();
    for _ in 0..total {
        let f = holder.read().expect("every message");
        let k: usize = f.body.parse().expect("a number");
        if k.is_multiple_of(2) {
            acked.push(f);
        }
    }
    let (last, rest) = acked.split_last().expect("some to acknowledge");
    for f in rest {
        ack(&mut holder, f);
    }
    let id = last.headers.get("ack").expect("an ack id");
    holder.write(&format!("ACK\nid:{id}\nreceipt:acked\n\n\0"));
    assert_eq!(holder.read().expect("the RECEIPT").command, "RECEIPT");
    leave(&mut c, holder);

    let mut taker = consume(c.nodes.last().expect("a node").port, queue, 100);
    let mut got = Vec::new();
    while got.len() < total / 2 {
        let f = taker.read().expect("the odd ones");
        assert_eq!(
            f.headers.get("redelivered").map(String::as_str),
            Some("true"),
            "{f:?}"
        );
        ack(&mut taker, &f);
        got.push(f.body.parse::<usize>().expect("a number"));
    }
    got.sort_unstable();
    let odd: Vec<usize> = (0..total).filter(|k| !k.is_multiple_of(2)).collect();
    assert_eq!(got, odd, "the unacknowledged ones, once each");
    // Anything else taken over would be queued before a new message.
    confirmed(&mut producer, queue, "last");
    let f = taker.read().expect("the new message");
    assert_eq!(f.body, "last", "nothing acknowledged came again: {f:?}");
    ack(&mut taker, &f);
    let deadline = Instant::now() + WAIT;
    while entries_in(&c, queue) != 0 {
        assert!(Instant::now() < deadline, "settled entries stayed in Redis");
        std::thread::sleep(Duration::from_millis(10));
    }
    let settled = redis_call(c.redis.port, &["HLEN", &format!("stompbox:{{{queue}}}:x")]);
    assert_eq!(settled, ":0", "no settled members are left written down");
}

#[test]
fn a_consumer_that_leaves_hands_over_partly_acknowledged_bundles_without_the_acknowledged() {
    partly_settled_entries_move_without_their_settled_members(|_, mut holder| {
        holder.write("DISCONNECT\nreceipt:bye\n\n\0");
        assert_eq!(holder.read().expect("the RECEIPT").command, "RECEIPT");
    });
}

#[test]
fn a_killed_nodes_partly_acknowledged_bundles_go_on_without_the_acknowledged() {
    partly_settled_entries_move_without_their_settled_members(|c, _| {
        c.nodes.remove(0).kill();
    });
}

/// The next presence notice (`x-presence-event`) on `c`: event and body.
fn presence(c: &mut Client) -> (String, String) {
    loop {
        let f = c.read().expect("a presence notice");
        if let Some(e) = f.headers.get("x-presence-event") {
            return (e.clone(), f.body);
        }
    }
}

#[test]
fn presence_and_last_wills_reach_every_node_even_when_a_node_dies() {
    let mut c = cluster(2);
    let room = "/topic/room.lobby";
    let (a, b) = (c.nodes[0].port, c.nodes[1].port);
    // Ann on node A.
    let _ann = subscribe(a, room, "x-presence:Ann\n");
    // Bob on node B sees Ann in his snapshot, and himself.
    let (mut bob, seen) = subscribe_seen(b, room, "x-presence:Bob\n");
    let snapshot = seen.last().expect("a snapshot before the RECEIPT");
    let (event, body) = (&snapshot.headers["x-presence-event"], &snapshot.body);
    assert_eq!(event, "snapshot");
    assert!(
        body.contains("\"Ann\"") && body.contains("\"Bob\""),
        "{body}"
    );

    // Cid joins on node A, leaves cleanly: Bob on B sees both.
    let mut cid = subscribe(a, room, "x-presence:Cid\n");
    assert_eq!(presence(&mut bob).0, "join");
    cid.write("UNSUBSCRIBE\nid:s\nreceipt:u\n\n\0");
    let (event, body) = presence(&mut bob);
    assert_eq!(
        (event.as_str(), body.contains("Cid")),
        ("leave", true),
        "{body}"
    );

    // Dee on node A leaves a will; her connection dies with the node.
    let mut dee = Client::connect_with(
        a,
        "x-will-destination:/topic/room.lobby\nx-will-body:Dee is gone\n",
    );
    dee.write("SUBSCRIBE\nid:d\ndestination:/topic/room.lobby\nx-presence:Dee\nreceipt:d\n\n\0");
    assert_eq!(presence(&mut dee).0, "snapshot");
    assert_eq!(dee.read().expect("a RECEIPT").command, "RECEIPT");
    assert_eq!(presence(&mut bob).0, "join");
    // Eve on node B leaves a will and her connection is cut: node B
    // itself publishes it.
    let eve = Client::connect_with(
        b,
        "x-will-destination:/topic/room.lobby\nx-will-body:Eve is gone\n",
    );
    drop(eve);
    let mut wills = Vec::new();
    let mut leaves = Vec::new();
    let deadline = Instant::now() + WAIT;
    let node_a = c.nodes.remove(0);
    node_a.kill();
    // A survivor (node B) publishes Dee's will and Ann's and Dee's leaves.
    while (wills.len() < 2 || leaves.len() < 2) && Instant::now() < deadline {
        let f = bob.read().expect("wills and leaves");
        match f.headers.get("x-presence-event").map(String::as_str) {
            Some("leave") => leaves.push(f.body),
            Some(_) => {}
            None => wills.push(f.body),
        }
    }
    wills.sort();
    assert_eq!(wills, ["Dee is gone", "Eve is gone"]);
    assert!(
        leaves.iter().any(|l| l.contains("Ann")) && leaves.iter().any(|l| l.contains("Dee")),
        "{leaves:?}"
    );
}

#[test]
fn a_queues_max_length_holds_across_nodes() {
    let c = cluster(2);
    let mut a = Client::connect(c.nodes[0].port);
    let mut b = Client::connect(c.nodes[1].port);
    for k in 0..5 {
        let client = if k % 2 == 0 { &mut a } else { &mut b };
        confirmed(client, "/queue/small", &format!("k{k}"));
    }
    let refused = send(&mut b, "/queue/small", "k5");
    assert_eq!(refused.command, "RECEIPT", "{refused:?}");
    assert_eq!(
        refused.headers.get("x-error").map(String::as_str),
        Some("queue-full"),
        "{refused:?}"
    );
    assert!(
        refused.headers["message"].contains("max_length of 5"),
        "{refused:?}"
    );
}

#[test]
fn a_wildcard_subscriber_gets_topics_published_on_other_nodes() {
    let c = cluster(2);
    let mut wild = subscribe(c.nodes[1].port, "/topic/room.*", "");
    // An exact subscriber on the same node gets its topic once, too.
    let mut exact = subscribe(c.nodes[1].port, "/topic/room.a", "");
    let mut publisher = Client::connect(c.nodes[0].port);
    for (topic, body) in [
        ("/topic/room.a", "1"),
        ("/topic/roomy.b", "no"),
        ("/topic/room.b", "2"),
        ("/topic/room.b.c", "no"),
    ] {
        confirmed(&mut publisher, topic, body);
    }
    confirmed(&mut publisher, "/topic/room.a", "3");
    let got: Vec<(String, String)> = (0..3)
        .map(|_| {
            let f = wild.read().expect("a message");
            (f.headers["destination"].clone(), f.body)
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/topic/room.a".to_string(), "1".to_string()),
            ("/topic/room.b".to_string(), "2".to_string()),
            ("/topic/room.a".to_string(), "3".to_string()),
        ]
    );
    assert_eq!(exact.read().expect("1").body, "1");
    assert_eq!(exact.read().expect("3").body, "3");
}

#[test]
fn an_operators_purge_on_one_node_empties_the_history_every_node_serves() {
    let c = cluster(2);
    let mut p = Client::connect(c.nodes[0].port);
    for k in 0..3 {
        confirmed(&mut p, "/topic/room.purge", &format!("k{k}"));
    }
    let (status, body) = api_call(
        c.nodes[1].management_port(),
        TOKEN,
        "POST",
        "/api/topics/room.purge/purge",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"purged":3}"#));
    let (_, seen) = subscribe_seen(c.nodes[0].port, "/topic/room.purge", "x-history:10\n");
    assert_eq!(seen.len(), 1, "only the marker: {seen:?}");
    assert_eq!(
        seen[0].headers.get("x-recovery").map(String::as_str),
        Some("complete")
    );
    assert_eq!(
        seen[0].headers.get("x-stream-position").map(String::as_str),
        Some("3")
    );
}

/// A raw Redis command (each argument one bulk string); the first line
/// of the answer (`:3`, `*2`, `+OK`).
fn redis_call(port: u16, args: &[&str]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("Redis");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let mut req = format!("*{}\r\n", args.len());
    for a in args {
        req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(req.as_bytes()).expect("a request");
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while s.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).trim().to_string()
}

/// How many keys of Redis at `port` match `pattern`.
fn redis_keys(port: u16, pattern: &str) -> usize {
    redis_call(port, &["KEYS", pattern])
        .trim_start_matches('*')
        .parse()
        .expect("an array length")
}

#[test]
fn two_redis_servers_share_the_destinations_and_one_down_refuses_only_its_own() {
    let mut c = cluster_on(2, 2, false);
    let topics: Vec<String> = (0..12).map(|i| format!("/topic/room.s{i}")).collect();
    let mut subs: Vec<Client> = topics
        .iter()
        .map(|t| subscribe(c.nodes[1].port, t, ""))
        .collect();
    let mut publisher = Client::connect(c.nodes[0].port);
    for t in &topics {
        confirmed(&mut publisher, t, "hello");
    }
    for s in &mut subs {
        assert_eq!(s.read().expect("each topic's message").body, "hello");
    }
    // Queues too: sent on one node, taken on the other.
    for i in 0..12 {
        confirmed(&mut publisher, &format!("/queue/s{i}"), &format!("job{i}"));
    }
    for i in 0..12 {
        let mut consumer = consume(c.nodes[1].port, &format!("/queue/s{i}"), 1);
        let f = consumer.read().expect("the job");
        assert_eq!(f.body, format!("job{i}"));
        ack(&mut consumer, &f);
    }
    let first = redis_keys(c.redis.port, "stompbox:{/topic/room.s*}:s");
    let second = redis_keys(c.more_redis[0].port, "stompbox:{/topic/room.s*}:s");
    assert_eq!(first + second, 12);
    assert!(
        first > 0 && second > 0,
        "both Redis servers hold topics: {first} and {second}"
    );

    // The second Redis goes away: its topics are refused, the first's are not.
    c.more_redis[0].kill();
    let (mut taken, mut refused) = (0, 0);
    for t in &topics {
        let f = send(&mut publisher, t, "again");
        match f.headers.get("x-error").map(String::as_str) {
            None => taken += 1,
            Some("cluster-unavailable") => refused += 1,
            other => panic!("{other:?}: {f:?}"),
        }
    }
    assert_eq!((taken, refused), (first, second));
}

#[test]
fn a_node_stopped_cleanly_hands_over_its_messages_and_publishes_no_wills() {
    let mut c = cluster(2);
    let room = "/topic/room.bye";
    let mut watcher = subscribe(c.nodes[1].port, room, "");
    let mut producer = Client::connect(c.nodes[1].port);
    for k in 0..4 {
        confirmed(&mut producer, "/queue/bye", &k.to_string());
    }
    let mut dee = Client::connect_with(
        c.nodes[0].port,
        "x-will-destination:/topic/room.bye\nx-will-body:Dee is gone\n",
    );
    dee.write(
        "SUBSCRIBE\nid:q\ndestination:/queue/bye\nack:client-individual\nprefetch-count:2\n\n\0",
    );
    let held: Vec<String> = (0..2).map(|_| dee.read().expect("a job").body).collect();

    // SIGTERM: a clean stop.
    let stopping = c.nodes.remove(0);
    let status = Command::new("kill")
        .args(["-TERM", &stopping.child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let mut stopping = stopping;
    let _ = stopping.child.wait();
    // It left: no survivor will take it over, and it kept no will.
    assert_eq!(redis_call(c.redis.port, &["SCARD", "stompbox:nodes"]), ":1");
    assert_eq!(redis_keys(c.redis.port, "stompbox:wills:*"), 0);

    let mut consumer = consume(c.nodes[0].port, "/queue/bye", 10);
    let mut got = Vec::new();
    while got.len() < 4 {
        let f = consumer.read().expect("all four jobs");
        ack(&mut consumer, &f);
        got.push(f.body);
    }
    got.sort();
    assert_eq!(got, ["0", "1", "2", "3"]);
    assert!(held.iter().all(|h| got.contains(h)));
    // The room saw no will: the next message there is this one.
    confirmed(&mut producer, room, "after");
    let next = watcher.read().expect("a message");
    assert_eq!(next.body, "after", "{next:?}");
}

#[test]
fn receipted_queue_messages_survive_a_sigkilled_redis_that_syncs_every_write() {
    let mut c = cluster_on(1, 2, true);
    let mut producer = Client::connect(c.nodes[0].port);
    for k in 0..20 {
        confirmed(&mut producer, "/queue/kept", &k.to_string());
    }
    // Five are out with a consumer, unacknowledged, when Redis dies.
    let mut early = consume(c.nodes[1].port, "/queue/kept", 5);
    for _ in 0..5 {
        early.read().expect("a job");
    }
    c.redis.kill();
    c.redis.start_again();
    // The nodes reconnect by themselves; the consumer's node still holds
    // its five, and the rest wait in the recovered stream.
    drop(early);
    let mut consumer = consume(c.nodes[0].port, "/queue/kept", 100);
    let mut got = Vec::new();
    while got.len() < 20 {
        let f = consumer.read().expect("all twenty after Redis came back");
        ack(&mut consumer, &f);
        assert!(!got.contains(&f.body), "{} twice", f.body);
        got.push(f.body);
    }
    got.sort_by_key(|b| b.parse::<u32>().unwrap_or(u32::MAX));
    assert_eq!(got, (0..20).map(|k| k.to_string()).collect::<Vec<_>>());
}

#[test]
fn a_rejected_or_expired_message_is_dead_lettered_once_across_nodes() {
    let c = cluster(2);
    let mut producer = Client::connect(c.nodes[0].port);
    confirmed(&mut producer, "/queue/orders", "bad order");
    // Expired before anyone could take it: `expires` is absolute, in ms.
    producer.write("SEND\ndestination:/queue/orders\nexpires:1\nreceipt:old\n\nstale order\0");
    assert_eq!(producer.read().expect("a RECEIPT").command, "RECEIPT");

    let mut dead = consume(c.nodes[1].port, "/queue/DLQ.orders", 10);
    let mut consumer = consume(c.nodes[0].port, "/queue/orders", 10);
    let f = consumer.read().expect("the order");
    assert_eq!(f.body, "bad order");
    let id = f.headers["ack"].clone();
    consumer.write(&format!("NACK\nid:{id}\nrequeue:false\nreceipt:n\n\n\0"));
    let mut reasons = Vec::new();
    while reasons.len() < 2 {
        let f = dead.read().expect("both dead letters");
        ack(&mut dead, &f);
        reasons.push((
            f.body.clone(),
            f.headers.get("x-death-reason").cloned().unwrap_or_default(),
        ));
    }
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("bad order".to_string(), "rejected".to_string()),
            ("stale order".to_string(), "expired".to_string()),
        ]
    );
    // Settled in Redis too (the XACK follows the dead letter's XADD in the
    // same ordered pipeline): nothing of /queue/orders is left to take over.
    let deadline = Instant::now() + WAIT;
    while redis_call(c.redis.port, &["XLEN", "stompbox:{/queue/orders}:q"]) != ":0" {
        assert!(Instant::now() < deadline, "the originals stayed in Redis");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn what_cluster_mode_cannot_do_yet_is_refused_with_a_clear_error() {
    let c = cluster(1);
    let mut client = Client::connect(c.nodes[0].port);
    client.write("SUBSCRIBE\nid:q\ndestination:/queue/a\nselector:x = 1\n\n\0");
    let f = client.read().expect("an ERROR");
    assert_eq!(f.command, "ERROR", "{f:?}");
    assert!(f.headers["message"].contains("cluster mode"), "{f:?}");
}

#[test]
fn a_durable_subscription_keeps_what_is_published_while_away_for_any_node() {
    let c = cluster(2);
    let topic = "/topic/news.durable";
    let durable = "ack:client-individual\nactivemq.subscriptionName:reader\n";
    // A queue's waiting messages may come before the SUBSCRIBE's RECEIPT:
    // those are returned with the client.
    let subscribe_durable = |port: u16| {
        let client = Client::connect_with(port, "client-id:app-1\n");
        subscribe_as(client, "d", topic, durable)
    };
    let mut publisher = Client::connect(c.nodes[1].port);
    let (mut first, none) = subscribe_durable(c.nodes[0].port);
    assert!(none.is_empty(), "{none:?}");
    for k in 0..3 {
        confirmed(&mut publisher, topic, &format!("m{k}"));
    }
    for k in 0..3 {
        let f = first.read().expect("live");
        assert_eq!(
            (f.body.as_str(), f.headers["destination"].as_str()),
            (format!("m{k}").as_str(), topic)
        );
        ack(&mut first, &f);
    }
    drop(first);
    // Published while the subscriber is away; it comes back on the other node.
    for k in 3..6 {
        confirmed(&mut publisher, topic, &format!("m{k}"));
    }
    let (mut back, early) = subscribe_durable(c.nodes[1].port);
    let mut early = early.into_iter();
    let mut missed = Vec::new();
    for _ in 3..6 {
        let f = match early.next() {
            Some(f) => f,
            None => back.read().expect("what was missed"),
        };
        assert_eq!(f.headers["destination"], topic);
        ack(&mut back, &f);
        missed.push(f.body);
    }
    // Each once; not always in order: the first node may have fetched
    // some for its subscriber as it left and given them back.
    missed.sort();
    assert_eq!(missed, ["m3", "m4", "m5"]);
    // Deleted (UNSUBSCRIBE with the same name): nothing more is kept for it.
    back.write(&format!("UNSUBSCRIBE\nid:d\n{durable}receipt:u\n\n\0"));
    assert_eq!(back.read().expect("a RECEIPT").command, "RECEIPT");
    let deadline = Instant::now() + WAIT;
    while redis_call(c.redis.port, &["SCARD", &format!("stompbox:{{{topic}}}:d")]) != ":0" {
        assert!(Instant::now() < deadline, "the subscription stayed");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// How many messages of `queue` ever went into Redis (its entry counter).
fn entries_made(c: &Cluster, queue: &str) -> u64 {
    let key = format!("stompbox:{{{queue}}}:n");
    let mut s = TcpStream::connect(("127.0.0.1", c.redis.port)).expect("Redis");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    let req = format!("*2\r\n$3\r\nGET\r\n${}\r\n{key}\r\n", key.len());
    s.write_all(req.as_bytes()).expect("a request");
    let mut line = || {
        let mut text = Vec::new();
        let mut byte = [0u8; 1];
        while s.read_exact(&mut byte).is_ok() && byte[0] != b'\n' {
            text.push(byte[0]);
        }
        String::from_utf8_lossy(&text).trim().to_string()
    };
    // A bulk reply: "$<len>" then the number, or "$-1" when never set.
    if line() == "$-1" {
        return 0;
    }
    line().parse().expect("a number")
}

/// Sends `body` with `persistent:false`, confirmed.
fn send_transient(c: &mut Client, queue: &str, body: &str) {
    c.write(&format!(
        "SEND\ndestination:{queue}\npersistent:false\nreceipt:r-{body}\n\n{body}\0"
    ));
    let f = c.read().expect("the RECEIPT");
    assert_eq!(f.command, "RECEIPT", "{f:?}");
}

fn ack_confirmed(c: &mut Client, f: &Frame) {
    let id = f.headers.get("ack").expect("an ack id");
    c.write(&format!("ACK\nid:{id}\nreceipt:a-{id}\n\n\0"));
    let r = c.read().expect("the ACK's RECEIPT");
    assert_eq!(r.command, "RECEIPT", "{r:?}");
}

#[test]
fn a_transient_message_for_a_ready_local_consumer_skips_redis_and_keeps_its_order() {
    let c = cluster(2);
    let queue = "/queue/local";
    let port = c.nodes[0].port;
    let mut consumer = consume(port, queue, 1);
    let mut producer = Client::connect(port);
    // Until the node's first read of the stream comes back empty it sends
    // to Redis; then, with the consumer keeping up, nothing goes there.
    let mut local_run = 0;
    let mut sent = 0;
    while local_run < 20 {
        assert!(sent < 500, "never went local ({sent} sent)");
        let before = entries_made(&c, queue);
        send_transient(&mut producer, queue, &format!("w{sent}"));
        let f = consumer.read().expect("the message");
        assert_eq!(f.body, format!("w{sent}"));
        ack_confirmed(&mut consumer, &f);
        local_run = if entries_made(&c, queue) == before {
            local_run + 1
        } else {
            0
        };
        sent += 1;
    }

    // The consumer busy (prefetch 1): the first goes to it, the rest to
    // Redis; once it catches up, a new one must not overtake them.
    let before = entries_made(&c, queue);
    for k in 1..=5 {
        send_transient(&mut producer, queue, &format!("m{k}"));
    }
    assert_eq!(entries_made(&c, queue), before + 4, "m2..m5 went to Redis");
    // m1 acknowledged, the consumer has room again while m2 is still
    // being fetched from Redis: m6, sent now, must come after m5.
    let f = consumer.read().expect("m1");
    ack_confirmed(&mut consumer, &f);
    let mut got = vec![f.body];
    send_transient(&mut producer, queue, "m6");
    for k in 2..=6 {
        let f = consumer.read().expect("m2..m6");
        if k < 6 {
            // The next message may come before a RECEIPT would.
            ack(&mut consumer, &f);
        } else {
            ack_confirmed(&mut consumer, &f);
        }
        got.push(f.body);
    }
    assert_eq!(got, ["m1", "m2", "m3", "m4", "m5", "m6"]);
    // Persistent ones always go through Redis.
    let before = entries_made(&c, queue);
    confirmed(&mut producer, queue, "p1");
    assert_eq!(entries_made(&c, queue), before + 1);
    let f = consumer.read().expect("p1");
    assert_eq!(f.body, "p1");
    ack_confirmed(&mut consumer, &f);

    // A message that went straight to a consumer here and came back (its
    // connection closed unacknowledged) goes to Redis for the others.
    let mut k = 0;
    let held = loop {
        assert!(k < 500, "never went local again");
        let before = entries_made(&c, queue);
        send_transient(&mut producer, queue, &format!("h{k}"));
        let f = consumer.read().expect("the message");
        if entries_made(&c, queue) == before {
            break f.body;
        }
        ack_confirmed(&mut consumer, &f);
        k += 1;
    };
    consumer.write("DISCONNECT\nreceipt:bye\n\n\0");
    assert_eq!(consumer.read().expect("the RECEIPT").command, "RECEIPT");
    let mut other = consume(c.nodes[1].port, queue, 10);
    let f = other.read().expect("the message given back");
    assert_eq!(f.body, held);
}
