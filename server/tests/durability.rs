//! Durability of the real binary: messages confirmed by a RECEIPT survive
//! SIGKILL at any moment, and a torn journal tail is cut at start.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::{BIN, Broker, Client, Frame, WAIT, api_call, wait_until};

/// Publishes `lines` to `destination` from a thread of its own, each with
/// itself as body and receipt id, until they are all sent or the broker
/// dies. Returns the receipt ids as they come, a count of them, and the
/// thread.
fn publish_confirmed(
    port: u16,
    destination: &'static str,
    lines: Vec<String>,
) -> (
    mpsc::Receiver<String>,
    Arc<AtomicUsize>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::channel();
    let counted = Arc::new(AtomicUsize::new(0));
    let counter = counted.clone();
    let writer = std::thread::spawn(move || {
        // None: the broker was killed before this producer got going.
        let Some(mut c) = Client::try_connect(port) else {
            return;
        };
        let mut reader = c.reader();
        std::thread::spawn(move || {
            while let Some(f) = reader.read() {
                if f.command == "RECEIPT"
                    && let Some(r) = f.headers.get("receipt-id")
                {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = tx.send(r.clone());
                }
            }
        });
        for line in lines {
            let frame = format!("SEND\ndestination:{destination}\nreceipt:{line}\n\n{line}\0");
            if c.stream.write_all(frame.as_bytes()).is_err() {
                return;
            }
        }
    });
    (rx, counted, writer)
}

/// A small deterministic generator: the seed is printed, so a failing
/// round can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Sends persistent messages with receipts from `producers` connections
/// until the connection dies; returns, per producer, the sequence numbers
/// whose RECEIPT arrived.
fn produce_until_killed(
    port: u16,
    round: usize,
    producers: usize,
    counted: &Arc<AtomicUsize>,
) -> Vec<mpsc::Receiver<u64>> {
    let mut confirmed = Vec::new();
    for p in 0..producers {
        let (tx, rx) = mpsc::channel();
        confirmed.push(rx);
        let counted = counted.clone();
        std::thread::spawn(move || {
            let mut c = Client::connect(port);
            let mut reader = c.reader();
            std::thread::spawn(move || {
                while let Some(f) = reader.read() {
                    if f.command == "RECEIPT"
                        && let Some(seq) = f.headers.get("receipt-id").and_then(|r| r.parse().ok())
                    {
                        counted.fetch_add(1, Ordering::Relaxed);
                        let _ = tx.send(seq);
                    }
                }
            });
            // Bounded: at most this many per round, whenever the kill comes.
            for seq in 0..20_000u64 {
                let frame = format!(
                    "SEND\ndestination:/queue/crash\npersistent:true\nreceipt:{seq}\nx-producer:{round}.{p}\nx-seq:{seq}\n\n{round}.{p}.{seq}\0"
                );
                if c.stream.write_all(frame.as_bytes()).is_err() {
                    return;
                }
            }
        });
    }
    confirmed
}

/// Drains `/queue/crash` up to a marker sent now: what a restarted broker
/// holds. Returns (producer, seq, redelivered) in arrival order.
fn drain(port: u16, marker: &str) -> Vec<(String, u64, bool)> {
    let mut c = Client::connect(port);
    c.write(&format!(
        "SEND\ndestination:/queue/crash\npersistent:true\nreceipt:marker\n\n{marker}\0"
    ));
    c.write("SUBSCRIBE\ndestination:/queue/crash\nid:d\nack:client-individual\n\n\0");
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT * 3;
    loop {
        assert!(Instant::now() < deadline, "the marker never arrived");
        let f = c.read().expect("the broker serves the drain");
        if f.command != "MESSAGE" {
            continue;
        }
        let ack = f.headers.get("ack").cloned().expect("an ack id");
        c.write(&format!("ACK\nid:{ack}\n\n\0"));
        if f.body == marker {
            break;
        }
        let producer = f.headers.get("x-producer").cloned().expect("x-producer");
        let seq: u64 = f
            .headers
            .get("x-seq")
            .and_then(|s| s.parse().ok())
            .expect("x-seq");
        assert_eq!(f.body, format!("{producer}.{seq}"), "the body is intact");
        assert_eq!(
            f.headers.get("persistent").map(String::as_str),
            Some("true")
        );
        got.push((producer, seq, f.headers.contains_key("redelivered")));
    }
    // The ACKs are settled before the next round kills the broker.
    c.write("DISCONNECT\nreceipt:bye\n\n\0");
    while let Some(f) = c.read() {
        if f.command == "RECEIPT" {
            break;
        }
    }
    got
}

#[test]
fn receipted_persistent_messages_survive_sigkill_at_random_moments() {
    let data = tempfile::tempdir().expect("a data directory");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let producers = 3;
    // Everything ever delivered, to tell a duplicate from a first delivery.
    let mut seen: HashSet<(String, u64)> = HashSet::new();
    let mut total_confirmed = 0;
    let mut broker = Broker::start(data.path(), &[]);
    for round in 0..5 {
        let counted = Arc::new(AtomicUsize::new(0));
        let confirmed = produce_until_killed(broker.port, round, producers, &counted);
        // Killed once a random number of SENDs (up to 15,000 of 60,000) is
        // confirmed: mid-write, mid-sync, anywhere.
        let wait_for = (rng.next() % 15_000) as usize;
        wait_until(|| counted.load(Ordering::Relaxed) >= wait_for);
        broker.kill();
        let confirmed: Vec<BTreeMap<u64, ()>> = confirmed
            .into_iter()
            .map(|rx| rx.iter().map(|s| (s, ())).collect())
            .collect();
        let count: usize = confirmed.iter().map(BTreeMap::len).sum();
        total_confirmed += count;
        eprintln!("round {round}: killed after {wait_for} receipts, {count} in all");

        broker = Broker::start(data.path(), &[]);
        let got = drain(broker.port, &format!("marker-{round}"));
        // Every receipted message arrives, in its producer's order.
        let mut last: HashMap<String, u64> = HashMap::new();
        let mut arrived: HashMap<String, HashSet<u64>> = HashMap::new();
        for (producer, seq, redelivered) in &got {
            let is_new = seen.insert((producer.clone(), *seq));
            assert!(
                is_new || *redelivered,
                "round {round}: {producer}.{seq} came twice without redelivered:true (seed {seed})"
            );
            if is_new {
                if let Some(prev) = last.get(producer) {
                    assert!(
                        seq > prev,
                        "round {round}: {producer} out of order: {seq} after {prev} (seed {seed})"
                    );
                }
                last.insert(producer.clone(), *seq);
            }
            arrived.entry(producer.clone()).or_default().insert(*seq);
            // Nothing invented: only what a producer of some round sent.
            let (r, _) = producer.split_once('.').expect("round.producer");
            assert!(r.parse::<usize>().expect("a round") <= round);
        }
        for (p, seqs) in confirmed.iter().enumerate() {
            let producer = format!("{round}.{p}");
            let have = arrived.get(&producer).cloned().unwrap_or_default();
            let lost: Vec<&u64> = seqs.keys().filter(|s| !have.contains(s)).take(5).collect();
            assert!(
                lost.is_empty(),
                "round {round}: receipted messages of {producer} lost after SIGKILL, e.g. {lost:?} (seed {seed}); log:\n{}",
                broker.log()
            );
        }
    }
    assert!(
        total_confirmed > 0,
        "no SEND was receipted in any round: the test proved nothing"
    );
    drop(broker);
}

#[test]
fn a_torn_journal_tail_is_cut_and_what_came_before_is_kept() {
    let data = tempfile::tempdir().expect("a data directory");
    let broker = Broker::start(data.path(), &[]);
    let mut c = Client::connect(broker.port);
    for i in 0..10 {
        c.write(&format!(
            "SEND\ndestination:/queue/torn\nreceipt:{i}\n\nmessage {i}\0"
        ));
    }
    let mut receipts = 0;
    while receipts < 10 {
        let f = c.read().expect("receipts");
        if f.command == "RECEIPT" {
            receipts += 1;
        }
    }
    broker.kill();
    // A crash in the middle of the last record: half of it on disk.
    let mut segments: Vec<_> = std::fs::read_dir(data.path())
        .expect("list")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segments.sort();
    let last = segments.last().expect("a segment");
    // Segments are preallocated: the data ends at the last byte that is
    // not zero. Its last 5 bytes never reached the disk.
    let mut bytes = std::fs::read(last).expect("read");
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    bytes[end - 5..end].fill(0);
    std::fs::write(last, bytes).expect("write");

    let broker = Broker::start(data.path(), &[]);
    let mut c = Client::connect(broker.port);
    c.write("SUBSCRIBE\ndestination:/queue/torn\nid:s\n\n\0");
    let mut bodies = Vec::new();
    while bodies.len() < 9 {
        let f = c.read().expect("a message");
        if f.command == "MESSAGE" {
            bodies.push(f.body.clone());
        }
    }
    let expected: Vec<String> = (0..9).map(|i| format!("message {i}")).collect();
    assert_eq!(bodies, expected);
    // The cut record is gone, and the log says what was dropped.
    c.write("SEND\ndestination:/queue/torn\nreceipt:probe\n\nprobe\0");
    loop {
        let f = c.read().expect("the probe");
        if f.command == "MESSAGE" {
            assert_eq!(f.body, "probe", "the torn message came back");
            break;
        }
    }
    let log = broker.log();
    assert!(log.contains("torn write"), "{log}");
}

/// Subscribes to `room` with `x-history:200` and returns the replayed
/// MESSAGEs and the recovery marker.
fn history(port: u16, room: &str) -> (Vec<Frame>, Frame) {
    let mut c = Client::connect(port);
    c.write(&format!(
        "SUBSCRIBE\ndestination:{room}\nid:h\nx-history:200\n\n\0"
    ));
    let mut replay = Vec::new();
    loop {
        let f = c.read().expect("the history");
        if f.headers.contains_key("x-recovery") {
            return (replay, f);
        }
        if f.command == "MESSAGE" {
            replay.push(f);
        }
    }
}

#[test]
fn receipted_chat_messages_survive_sigkill_under_the_same_epoch() {
    let data = tempfile::tempdir().expect("a data directory");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let room = "/topic/chat.crash";
    let mut broker = Broker::start(data.path(), &[]);
    let mut epoch: Option<String> = None;
    let mut confirmed: Vec<String> = Vec::new();
    for round in 0..4 {
        // 30 lines, under the chat policy's burst of 40 a connection.
        let lines = (0..30).map(|i| format!("r{round}-{i}")).collect();
        let (rx, _, writer) = publish_confirmed(broker.port, room, lines);
        // Killed once a random number of lines (0 to 29) is confirmed:
        // the rest are in flight, being written, or not yet sent.
        let wait_for = (rng.next() % 30) as usize;
        let mut receipted: Vec<String> = Vec::new();
        let deadline = std::time::Instant::now() + WAIT;
        while receipted.len() < wait_for && std::time::Instant::now() < deadline {
            if let Ok(r) = rx.recv_timeout(Duration::from_millis(50)) {
                receipted.push(r);
            }
        }
        broker.kill();
        let _ = writer.join();
        receipted.extend(rx.iter());
        eprintln!("round {round}: {} receipts", receipted.len());
        confirmed.extend(receipted);

        broker = Broker::start(data.path(), &[]);
        let (replay, marker) = history(broker.port, room);
        let now_epoch = marker
            .headers
            .get("x-stream-epoch")
            .cloned()
            .expect("an epoch");
        if !replay.is_empty() || !confirmed.is_empty() {
            match &epoch {
                Some(e) => assert_eq!(e, &now_epoch, "the room's epoch changed (seed {seed})"),
                None => epoch = Some(now_epoch.clone()),
            }
        }
        let bodies: Vec<&str> = replay.iter().map(|f| f.body.as_str()).collect();
        for line in &confirmed {
            assert!(
                bodies.contains(&line.as_str()),
                "round {round}: receipted {line} missing from the history after SIGKILL (seed {seed}); log:\n{}",
                broker.log()
            );
        }
        let positions: Vec<u64> = replay
            .iter()
            .map(|f| {
                f.headers
                    .get("x-stream-position")
                    .and_then(|p| p.parse().ok())
                    .expect("a position")
            })
            .collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "positions in order: {positions:?}"
        );
    }
    assert!(
        !confirmed.is_empty(),
        "no chat line was receipted: the test proved nothing"
    );
}

#[test]
fn a_durable_subscription_loses_no_receipted_message_to_sigkill() {
    let data = tempfile::tempdir().expect("a data directory");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    eprintln!("seed {seed}");
    let mut rng = Rng(seed);
    let topic = "/topic/crash.durable";
    let subscribe = format!(
        "SUBSCRIBE\ndestination:{topic}\nid:keeper\ndurable:true\nauto-delete:false\nack:client-individual\nprefetch-count:1000\n\n\0"
    );
    let mut broker = Broker::start(data.path(), &[]);
    // Created, then left: everything from now on is kept for it.
    {
        let mut c = Client::connect(broker.port);
        c.write(&subscribe.replace("\n\n\0", "\nreceipt:made\n\n\0"));
        while c.read().is_some_and(|f| f.command != "RECEIPT") {}
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut total = 0;
    for round in 0..4 {
        let lines = (0..20_000).map(|i| format!("{round}.{i}")).collect();
        let (rx, counted, _) = publish_confirmed(broker.port, topic, lines);
        let wait_for = (rng.next() % 5_000) as usize;
        wait_until(|| counted.load(Ordering::Relaxed) >= wait_for);
        broker.kill();
        let receipted: Vec<String> = rx.iter().collect();
        total += receipted.len();
        eprintln!(
            "round {round}: killed after {wait_for} receipts, {} in all",
            receipted.len()
        );

        broker = Broker::start(data.path(), &[]);
        // A marker published now comes after everything kept.
        let marker = format!("marker-{round}");
        let mut p = Client::connect(broker.port);
        p.write(&format!(
            "SEND\ndestination:{topic}\nreceipt:m\n\n{marker}\0"
        ));
        while p.read().is_some_and(|f| f.command != "RECEIPT") {}
        let mut c = Client::connect(broker.port);
        c.write(&subscribe);
        let mut got = Vec::new();
        let mut last_position = 0u64;
        loop {
            let f = c.read().expect("the durable subscription is served");
            if f.command != "MESSAGE" {
                continue;
            }
            let position: u64 = f
                .headers
                .get("x-stream-position")
                .and_then(|p| p.parse().ok())
                .expect("a position");
            assert!(position > last_position, "in stream order (seed {seed})");
            last_position = position;
            let ack = f.headers.get("ack").cloned().expect("ack");
            c.write(&format!("ACK\nid:{ack}\n\n\0"));
            if f.body == marker {
                break;
            }
            let again = !seen.insert(f.body.clone());
            assert!(
                !again || f.headers.contains_key("redelivered"),
                "{} came twice without redelivered:true (seed {seed})",
                f.body
            );
            got.push(f.body);
        }
        let have: HashSet<&String> = got.iter().collect();
        let lost: Vec<&String> = receipted
            .iter()
            .filter(|r| !have.contains(r))
            .take(5)
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: receipted messages lost by the durable subscription, e.g. {lost:?} (seed {seed})"
        );
        // Leave, with every ACK settled, before the next round's producer.
        c.write("DISCONNECT\nreceipt:bye\n\n\0");
        while c.read().is_some_and(|f| f.command != "RECEIPT") {}
    }
    assert!(total > 0, "no SEND was receipted: the test proved nothing");
}

#[test]
fn a_failed_write_is_never_confirmed_and_loses_nothing_confirmed() {
    // Files may not grow past 1 MiB (the process's file-size limit): a 2 MB
    // message's record cannot be written, as on a full disk.
    let data = tempfile::tempdir().expect("a data directory");
    let mut limited = Command::new("prlimit");
    limited.args(["--fsize=1048576", BIN]);
    let broker = Broker::start_with(limited, data.path(), &["--journal-segment-bytes", "64KiB"]);
    let mut c = Client::connect(broker.port);
    let send = |c: &mut Client, receipt: &str, body: &str| {
        c.write(&format!(
            "SEND\ndestination:/queue/efbig\nreceipt:{receipt}\n\n{body}\0"
        ));
        loop {
            let f = c.read().expect("an answer");
            if f.command == "RECEIPT" {
                return f;
            }
        }
    };
    for i in 0..20 {
        let r = send(&mut c, &format!("before-{i}"), &format!("before {i}"));
        assert!(!r.headers.contains_key("x-error"), "{r:?}");
    }
    let big = "x".repeat(2_000_000);
    let refused = send(&mut c, "big", &big);
    assert_eq!(
        refused.headers.get("x-error").map(String::as_str),
        Some("not-stored"),
        "a record that could not be written was confirmed: {refused:?}"
    );
    // The broker goes on: later messages are written (to a new segment).
    for i in 0..20 {
        let r = send(&mut c, &format!("after-{i}"), &format!("after {i}"));
        assert!(!r.headers.contains_key("x-error"), "{r:?}");
    }
    let log = broker.log();
    assert!(log.contains("journal write failed"), "{log}");
    broker.kill();

    // Every confirmed message is there after a restart; the refused one is
    // not invented (it may be delivered before the restart, never after).
    let broker = Broker::start(data.path(), &[]);
    let mut c = Client::connect(broker.port);
    c.write("SUBSCRIBE\ndestination:/queue/efbig\nid:s\n\n\0");
    let mut bodies = Vec::new();
    while bodies.len() < 40 {
        let Some(f) = c.read() else {
            panic!(
                "only {} messages came back: {bodies:?}\nlog:\n{}",
                bodies.len(),
                broker.log()
            );
        };
        if f.command == "MESSAGE" {
            assert!(
                f.body.len() < 100,
                "the refused message came back after the restart"
            );
            bodies.push(f.body);
        }
    }
    let expected: Vec<String> = (0..20)
        .map(|i| format!("before {i}"))
        .chain((0..20).map(|i| format!("after {i}")))
        .collect();
    // The refused one was delivered live, if at all, before the restart.
    bodies.retain(|b| b.len() < 100);
    assert_eq!(bodies, expected);
}

/// Delayed, deduplicated sends confirmed before a SIGKILL: after the
/// restart the producer retries every one (it cannot know which made it),
/// and each message is delivered exactly once, after its delay.
#[test]
fn delayed_and_deduplicated_sends_survive_sigkill_exactly_once() {
    const N: usize = 300;
    let data = tempfile::tempdir().expect("a data directory");
    let seed = 0x5eed_u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    let mut rng = Rng(seed | 1);
    let kill_after = (rng.next() % (N as u64 / 2)) as usize;
    eprintln!("seed {seed:#x}: SIGKILL after {kill_after} receipts");
    let send = |i: usize| {
        format!(
            "SEND\ndestination:/queue/later\nx-delay:1500\nx-dedup-id:job-{i}\npriority:{}\nreceipt:{i}\n\njob-{i}\0",
            i % 10
        )
    };

    let broker = Broker::start(data.path(), &[]);
    let port = broker.port;
    let mut c = Client::connect(port);
    let mut confirmed = HashSet::new();
    for i in 0..N {
        c.write(&send(i));
    }
    while confirmed.len() < kill_after {
        let f = c.read().expect("receipts");
        if f.command == "RECEIPT" {
            confirmed.insert(f.headers["receipt-id"].clone());
        }
    }
    broker.kill();

    let broker = Broker::start(data.path(), &[]);
    let mut c = Client::connect(broker.port);
    let retried = Instant::now();
    for i in 0..N {
        c.write(&send(i));
    }
    let mut receipts = 0;
    while receipts < N {
        let f = c.read().expect("every retry is confirmed");
        assert_eq!(f.command, "RECEIPT", "{f:?}");
        receipts += 1;
    }
    c.write("SUBSCRIBE\ndestination:/queue/later\nid:s\nack:auto\n\n\0");
    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.len() < N {
        let f = c.read().expect("every job arrives");
        if f.command != "MESSAGE" {
            continue;
        }
        *seen.entry(f.body.clone()).or_default() += 1;
        if !f.headers.contains_key("redelivered") {
            // Sent again after the restart: held back for its delay.
            assert!(
                retried.elapsed() >= Duration::from_millis(1400),
                "{} arrived {:?} after the retry",
                f.body,
                retried.elapsed()
            );
        }
    }
    // Anything more would be a duplicate: wait past every delay for it.
    c.stream
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    while let Some(f) = c.read() {
        if f.command == "MESSAGE" {
            *seen.entry(f.body.clone()).or_default() += 1;
        }
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered twice: {twice:?}");
    for r in &confirmed {
        assert!(seen.contains_key(&format!("job-{r}")), "lost job-{r}");
    }
}

#[test]
fn a_purged_rooms_history_stays_purged_after_sigkill() {
    let data = tempfile::tempdir().expect("a data directory");
    let secrets = tempfile::tempdir().expect("a directory for the token");
    let token = "a-management-token-of-at-least-32-bytes";
    let token_file = secrets.path().join("token");
    std::fs::write(&token_file, token).expect("token");
    let token_arg = token_file.to_string_lossy().into_owned();
    let extra = [
        "--management-listen",
        "127.0.0.1:0",
        "--management-token-file",
        token_arg.as_str(),
    ];
    let room = "/topic/chat.purged";
    let publish = |port: u16, lines: Vec<String>| {
        let n = lines.len();
        let (rx, _, writer) = publish_confirmed(port, room, lines);
        let got: Vec<String> = rx.iter().take(n).collect();
        let _ = writer.join();
        assert_eq!(got.len(), n, "every line receipted");
    };
    let broker = Broker::start(data.path(), &extra);
    publish(
        broker.port,
        (0..10).map(|i| format!("before-{i}")).collect(),
    );
    let (status, body) = api_call(
        broker.management_port(),
        token,
        "POST",
        "/api/topics/chat.purged/purge",
    );
    assert_eq!((status, body.as_str()), (200, r#"{"purged":10}"#));
    publish(broker.port, vec!["after".to_string()]);
    broker.kill();

    // Killed right after the purge's answer: the purge held, the later line too.
    for _ in 0..2 {
        let broker = Broker::start(data.path(), &extra);
        let (replay, _) = history(broker.port, room);
        let bodies: Vec<&str> = replay.iter().map(|f| f.body.as_str()).collect();
        assert_eq!(bodies, ["after"], "log:\n{}", broker.log());
        broker.kill();
    }
}
