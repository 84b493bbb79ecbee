//! `queue` and `fanout`: how many messages a second get through, with every
//! message accounted for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use stomp_codec::{Command, Frame};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client::{Reader, Writer, connect};
use super::{AckArg, BenchError, Common, Report, body, hold_open, parse_body, progress, unique};

/// Frames fed before one flush: large enough to amortise the write, small
/// enough that the broker sees a steady stream.
const BATCH: usize = 64;

/// `queue` options.
#[derive(Args, Debug, Clone)]
pub struct QueueArgs {
    /// Producers.
    #[arg(short = 'p', long, default_value_t = 2)]
    pub producers: usize,
    /// Consumers.
    #[arg(short = 'c', long, default_value_t = 2)]
    pub consumers: usize,
    /// Messages in all.
    #[arg(short = 'n', long, default_value_t = 100_000)]
    pub messages: u64,
    /// Body size in bytes (at least 24).
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
    /// How consumers acknowledge.
    #[arg(long, value_enum, default_value_t = AckArg::Auto)]
    pub ack: AckArg,
    /// prefetch-count for each consumer.
    #[arg(long, default_value_t = 1000)]
    pub prefetch: usize,
}

/// `fanout` options.
#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    /// Subscribers.
    #[arg(short = 'k', long, default_value_t = 100)]
    pub subscribers: usize,
    /// Messages published.
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub messages: u64,
    /// Body size in bytes (at least 24).
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
}

/// Which (producer, sequence) pairs arrived, and how often.
struct Ledger {
    seen: Vec<AtomicU8>,
    per_producer: u64,
    received: AtomicU64,
    duplicates: AtomicU64,
    last: std::sync::Mutex<Option<Instant>>,
}

impl Ledger {
    fn new(producers: u64, per_producer: u64) -> Ledger {
        Ledger {
            seen: (0..producers * per_producer)
                .map(|_| AtomicU8::new(0))
                .collect(),
            per_producer,
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            last: std::sync::Mutex::new(None),
        }
    }

    fn record(&self, producer: u64, seq: u64) -> Result<(), BenchError> {
        let slot = self
            .seen
            .get((producer * self.per_producer + seq) as usize)
            .filter(|_| seq < self.per_producer)
            .ok_or_else(|| BenchError::Protocol(format!("unexpected message {producer}:{seq}")))?;
        if slot.fetch_add(1, Ordering::Relaxed) > 0 {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.received.fetch_add(1, Ordering::Relaxed);
        }
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(())
    }

    /// When the last message arrived (now, if none did).
    fn last_seen(&self) -> Instant {
        self.last
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unwrap_or_else(Instant::now)
    }

    fn missing(&self) -> u64 {
        self.seen.len() as u64 - self.received.load(Ordering::Relaxed)
    }
}

pub(super) async fn subscribe(
    writer: &mut Writer,
    reader: &mut Reader,
    destination: &str,
    headers: &[(&str, String)],
) -> Result<(), BenchError> {
    let mut frame = Frame::new(Command::Subscribe)
        .header("id", "0")
        .header("destination", destination)
        .header("receipt", "subscribed");
    for (n, v) in headers {
        frame = frame.header(*n, v.as_str());
    }
    writer.send(frame).await?;
    let reply = tokio::time::timeout(Duration::from_secs(10), reader.next_frame())
        .await
        .map_err(|_| BenchError::Timeout("no RECEIPT for SUBSCRIBE".into()))??;
    if reply.command != Command::Receipt {
        return Err(BenchError::Protocol(format!(
            "expected RECEIPT, got {}",
            reply.command
        )));
    }
    Ok(())
}

/// Publishes `count` messages tagged with `producer`, flushing every [`BATCH`].
async fn produce(
    mut writer: Writer,
    destination: String,
    producer: u64,
    count: u64,
    size: usize,
) -> Result<Writer, BenchError> {
    for seq in 0..count {
        writer
            .feed(
                Frame::new(Command::Send)
                    .header("destination", destination.as_str())
                    .body(body('S', producer, seq, size)),
            )
            .await?;
        if (seq + 1) % BATCH as u64 == 0 {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    Ok(writer)
}

pub(super) fn check_size(size: usize) -> Result<(), BenchError> {
    if size < 24 {
        return Err(BenchError::Usage(
            "--size must be at least 24 bytes (the body carries a sequence number)".into(),
        ));
    }
    Ok(())
}

/// Waits until `done` or the deadline, then says what is missing.
async fn wait_for(
    ledger: &Ledger,
    deadline: tokio::time::Instant,
    tasks: &mut JoinSet<Result<(), BenchError>>,
) -> Result<(), BenchError> {
    loop {
        if ledger.missing() == 0 {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(BenchError::Incomplete(format!(
                    "{} of {} messages did not arrive before the timeout ({} duplicates)",
                    ledger.missing(),
                    ledger.seen.len(),
                    ledger.duplicates.load(Ordering::Relaxed)
                )));
            }
            Some(done) = tasks.join_next() => {
                match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => return Err(e),
                    Err(e) => return Err(BenchError::Protocol(format!("a worker failed: {e}"))),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// P producers, C competing consumers on one queue.
pub async fn queue(common: &Common, args: &QueueArgs) -> Result<Report, BenchError> {
    check_size(args.size)?;
    if args.producers == 0 || args.consumers == 0 || args.messages == 0 {
        return Err(BenchError::Usage(
            "producers, consumers and messages must be at least 1".into(),
        ));
    }
    let target = common.target()?;
    let credentials = common.credentials();
    let destination = format!("/queue/{}", unique("bench"));
    let per_producer = args.messages.div_ceil(args.producers as u64);
    let total = per_producer * args.producers as u64;
    let ledger = Arc::new(Ledger::new(args.producers as u64, per_producer));
    let bar = progress(common, total, "queue");
    let deadline = common.deadline();

    let mut tasks = JoinSet::new();
    for _ in 0..args.consumers {
        let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
        let ack = match args.ack {
            AckArg::Auto => "auto",
            AckArg::ClientIndividual => "client-individual",
        };
        subscribe(
            &mut writer,
            &mut reader,
            &destination,
            &[
                ("ack", ack.into()),
                ("prefetch-count", args.prefetch.to_string()),
            ],
        )
        .await?;
        let ledger = ledger.clone();
        let bar = bar.clone();
        let acking = args.ack == AckArg::ClientIndividual;
        // ACKs go through a channel to a writer task, which writes whatever
        // has piled up in one flush.
        let (ack_tx, mut ack_rx) = mpsc::unbounded_channel::<stomp_codec::ByteString>();
        tasks.spawn(async move {
            let mut ids = Vec::new();
            while ack_rx.recv_many(&mut ids, 256).await > 0 {
                for id in ids.drain(..) {
                    writer
                        .feed(Frame::new(Command::Ack).header("id", id))
                        .await?;
                }
                writer.flush().await?;
            }
            Ok(())
        });
        tasks.spawn(async move {
            loop {
                let frame = reader.next_frame().await?;
                if frame.command != Command::Message {
                    continue;
                }
                let (p, seq) = parse_body(&frame.body, b'S').ok_or_else(|| {
                    BenchError::Protocol("a MESSAGE body was not one the tool sent".into())
                })?;
                ledger.record(p, seq)?;
                bar.inc(1);
                if acking {
                    let id = frame.headers.get_shared("ack").cloned().ok_or_else(|| {
                        BenchError::Protocol("MESSAGE without an ack header".into())
                    })?;
                    if ack_tx.send(id).is_err() {
                        return Ok(());
                    }
                }
            }
        });
    }
    let mut producers = Vec::new();
    for _ in 0..args.producers {
        producers.push(connect(&target, &credentials, None).await?.0);
    }
    let start = Instant::now();
    for (p, writer) in producers.into_iter().enumerate() {
        let destination = destination.clone();
        let size = args.size;
        tasks.spawn(async move {
            hold_open(produce(writer, destination, p as u64, per_producer, size).await?).await
        });
    }
    let outcome = wait_for(&ledger, deadline, &mut tasks).await;
    tasks.abort_all();
    bar.finish_and_clear();
    outcome?;
    let duplicates = ledger.duplicates.load(Ordering::Relaxed);
    if duplicates > 0 {
        return Err(BenchError::Incomplete(format!(
            "{duplicates} messages arrived more than once"
        )));
    }
    let end = ledger.last_seen();
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let mut params = serde_json::Map::new();
    params.insert("producers".into(), json!(args.producers));
    params.insert("consumers".into(), json!(args.consumers));
    params.insert("messages".into(), json!(total));
    params.insert("size".into(), json!(args.size));
    params.insert(
        "ack".into(),
        json!(format!("{:?}", args.ack).to_lowercase()),
    );
    Ok(Report {
        scenario: "queue",
        transport: target.transport(),
        params,
        results: vec![
            ("msgs_per_sec", total as f64 / secs, "msgs/s"),
            (
                "mib_per_sec",
                total as f64 * args.size as f64 / secs / 1048576.0,
                "MiB/s",
            ),
            ("seconds", secs, "s"),
            ("received", total as f64, "msgs"),
            ("missing", 0.0, "msgs"),
            ("duplicates", 0.0, "msgs"),
        ],
    })
}

/// One publisher, K subscribers on one topic.
pub async fn fanout(common: &Common, args: &FanoutArgs) -> Result<Report, BenchError> {
    check_size(args.size)?;
    if args.subscribers == 0 || args.messages == 0 {
        return Err(BenchError::Usage(
            "subscribers and messages must be at least 1".into(),
        ));
    }
    let target = common.target()?;
    let credentials = common.credentials();
    let destination = format!("/topic/{}", unique("bench"));
    let expected = args.messages * args.subscribers as u64;
    // One ledger slot per (subscriber, message): every copy must arrive once.
    let ledger = Arc::new(Ledger::new(args.subscribers as u64, args.messages));
    let bar = progress(common, expected, "fanout");
    let deadline = common.deadline();
    let mut tasks = JoinSet::new();
    for k in 0..args.subscribers {
        let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
        subscribe(&mut writer, &mut reader, &destination, &[]).await?;
        let ledger = ledger.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let _keep = writer;
            let mut next = 0;
            loop {
                let frame = reader.next_frame().await?;
                if frame.command != Command::Message {
                    continue;
                }
                let (_, seq) = parse_body(&frame.body, b'S').ok_or_else(|| {
                    BenchError::Protocol("a MESSAGE body was not one the tool sent".into())
                })?;
                if seq != next {
                    return Err(BenchError::Incomplete(format!(
                        "subscriber {k} got message {seq} when {next} was due"
                    )));
                }
                next += 1;
                ledger.record(k as u64, seq)?;
                bar.inc(1);
            }
        });
    }
    let (writer, _reader) = connect(&target, &credentials, None).await?;
    let start = Instant::now();
    let size = args.size;
    let messages = args.messages;
    let publish_to = destination.clone();
    tasks.spawn(async move {
        let writer = produce(writer, publish_to, 0, messages, size).await?;
        hold_open((writer, _reader)).await
    });
    let outcome = wait_for(&ledger, deadline, &mut tasks).await;
    tasks.abort_all();
    bar.finish_and_clear();
    outcome?;
    let end = ledger.last_seen();
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let mut params = serde_json::Map::new();
    params.insert("subscribers".into(), json!(args.subscribers));
    params.insert("messages".into(), json!(args.messages));
    params.insert("size".into(), json!(args.size));
    Ok(Report {
        scenario: "fanout",
        transport: target.transport(),
        params,
        results: vec![
            ("delivered_per_sec", expected as f64 / secs, "msgs/s"),
            ("published_per_sec", args.messages as f64 / secs, "msgs/s"),
            ("seconds", secs, "s"),
            ("delivered", expected as f64, "msgs"),
            ("missing", 0.0, "msgs"),
        ],
    })
}
