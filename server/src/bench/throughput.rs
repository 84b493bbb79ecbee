//! `queue` and `fanout`: how many messages a second get through, with every
//! message accounted for.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use stomp_codec::{Command, Frame};
use tokio::sync::{Semaphore, mpsc};
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
    /// Send `persistent:true` with a receipt per message, each producer
    /// keeping at most --window SENDs unconfirmed; every RECEIPT is checked.
    #[arg(long, conflicts_with = "transient")]
    pub persistent: bool,
    /// Send `persistent:false` (Stompbox keeps such messages in memory only,
    /// even on a durable queue). Without either flag, SENDs carry no
    /// `persistent` header and each broker applies its default.
    #[arg(long)]
    pub transient: bool,
    /// Unconfirmed SENDs per producer with --persistent.
    #[arg(long, default_value_t = 256)]
    pub window: usize,
    /// An extra header for SUBSCRIBE and SEND, NAME:VALUE (repeat), e.g.
    /// x-queue-type:quorum for a RabbitMQ quorum queue.
    #[arg(long = "header", value_name = "NAME:VALUE")]
    pub headers: Vec<String>,
    /// Give the SENDs `priority` 0 to 9 in turn (JMS priorities), so the
    /// queue orders across every level.
    #[arg(long)]
    pub priorities: bool,
    /// An ack deadline for the consumers, ms (`x-ack-timeout` on their
    /// SUBSCRIBE only, unlike --header).
    #[arg(long, value_name = "MS")]
    pub ack_timeout: Option<u64>,
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
    /// Subscribers subscribe to a wildcard pattern (`/topic/NAME.*`) that
    /// the topic published to (`/topic/NAME.x`) matches.
    #[arg(long)]
    pub wildcard: bool,
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

/// How producers send.
#[derive(Clone)]
struct SendOptions {
    /// `Some(window)`: persistent, with receipts, at most `window` unconfirmed.
    confirm: Option<usize>,
    /// Say `persistent:false` when not confirming.
    transient: bool,
    /// Extra headers on every SEND.
    headers: Vec<(String, String)>,
    /// `priority` 0 to 9 in turn.
    priorities: bool,
    /// RECEIPTs that came before an earlier SEND's.
    out_of_order: Arc<AtomicU64>,
}

impl SendOptions {
    /// No extra headers, no receipts.
    fn plain() -> SendOptions {
        SendOptions {
            confirm: None,
            transient: false,
            headers: Vec::new(),
            priorities: false,
            out_of_order: Arc::default(),
        }
    }
}

/// Publishes `count` messages tagged with `producer`, flushing every
/// [`BATCH`]; with confirmation, waits for RECEIPTs to keep the window.
async fn produce(
    mut writer: Writer,
    reader: Reader,
    destination: String,
    producer: u64,
    count: u64,
    size: usize,
    options: SendOptions,
) -> Result<(Writer, Option<Reader>), BenchError> {
    let window = options.confirm.map(|w| Arc::new(Semaphore::new(w.max(1))));
    let (confirmer, reader) = match &window {
        Some(window) => (
            Some(tokio::spawn(confirm_receipts(
                reader,
                window.clone(),
                count,
                options.out_of_order.clone(),
            ))),
            None,
        ),
        None => (None, Some(reader)),
    };
    for seq in 0..count {
        let mut frame = Frame::new(Command::Send).header("destination", destination.as_str());
        for (n, v) in &options.headers {
            frame = frame.header(n.as_str(), v.as_str());
        }
        if options.priorities {
            const LEVELS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
            frame = frame.header("priority", LEVELS[(seq % 10) as usize]);
        }
        if let Some(window) = &window {
            let permit = match window.try_acquire() {
                Ok(p) => p,
                Err(_) => {
                    // The window is full: what is fed must go out to be confirmed.
                    writer.flush().await?;
                    match window.acquire().await {
                        Ok(p) => p,
                        Err(_) => return Err(receipt_failure(confirmer).await),
                    }
                }
            };
            permit.forget();
            frame = frame
                .header("persistent", "true")
                .header("receipt", seq.to_string());
        } else if options.transient {
            frame = frame.header("persistent", "false");
        }
        writer
            .feed(frame.body(body('S', producer, seq, size)))
            .await?;
        if (seq + 1) % BATCH as u64 == 0 {
            writer.flush().await?;
        }
    }
    writer.flush().await?;
    if let Some(confirmer) = confirmer {
        confirmer
            .await
            .map_err(|e| BenchError::Protocol(format!("the receipt reader failed: {e}")))??;
    }
    Ok((writer, reader))
}

/// Why the receipt reader stopped early.
async fn receipt_failure(
    confirmer: Option<tokio::task::JoinHandle<Result<(), BenchError>>>,
) -> BenchError {
    match confirmer {
        Some(task) => match task.await {
            Ok(Err(e)) => e,
            Ok(Ok(())) => BenchError::Protocol("more RECEIPTs than SENDs".into()),
            Err(e) => BenchError::Protocol(format!("the receipt reader failed: {e}")),
        },
        None => BenchError::Protocol("no receipt reader".into()),
    }
}

/// Reads a producer's RECEIPTs, in order, each one opening the window by one.
async fn confirm_receipts(
    reader: Reader,
    window: Arc<Semaphore>,
    count: u64,
    out_of_order: Arc<AtomicU64>,
) -> Result<(), BenchError> {
    let result = read_receipts(reader, &window, count, &out_of_order).await;
    // A producer waiting for room learns the reader stopped.
    window.close();
    result
}

/// Reads `count` RECEIPTs, each opening the window by one. Every SEND's
/// receipt must come exactly once; the STOMP specification does not
/// promise their order (RabbitMQ's persistent receipts come out of it), so
/// disorder is counted, not refused.
async fn read_receipts(
    mut reader: Reader,
    window: &Semaphore,
    count: u64,
    out_of_order: &AtomicU64,
) -> Result<(), BenchError> {
    let mut confirmed = vec![false; count as usize];
    let mut expected = 0u64;
    for _ in 0..count {
        let frame = reader.next_frame().await?;
        if frame.command != Command::Receipt {
            return Err(BenchError::Protocol(format!(
                "expected a RECEIPT, got {}: {}",
                frame.command,
                frame.headers.get("message").unwrap_or_default()
            )));
        }
        let id = frame.headers.get("receipt-id").unwrap_or_default();
        if let Some(error) = frame.headers.get("x-error") {
            return Err(BenchError::Protocol(format!(
                "SEND {id} refused: {error}: {}",
                frame.headers.get("message").unwrap_or_default()
            )));
        }
        let seq: u64 = id
            .parse()
            .ok()
            .filter(|s| *s < count)
            .ok_or_else(|| BenchError::Protocol(format!("a RECEIPT for no SEND: {id:?}")))?;
        if std::mem::replace(&mut confirmed[seq as usize], true) {
            return Err(BenchError::Protocol(format!("RECEIPT {seq} came twice")));
        }
        if seq != expected {
            out_of_order.fetch_add(1, Ordering::Relaxed);
        }
        expected = seq + 1;
        window.add_permits(1);
    }
    Ok(())
}

/// Parses `--header NAME:VALUE` options.
fn parse_headers(specs: &[String]) -> Result<Vec<(String, String)>, BenchError> {
    specs
        .iter()
        .map(|spec| match spec.split_once(':') {
            Some((n, v)) if !n.is_empty() => Ok((n.to_string(), v.to_string())),
            _ => Err(BenchError::Usage(format!(
                "--header {spec:?}: expected NAME:VALUE"
            ))),
        })
        .collect()
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
    let extra = parse_headers(&args.headers)?;
    let options = SendOptions {
        confirm: args.persistent.then_some(args.window),
        transient: args.transient,
        headers: extra.clone(),
        priorities: args.priorities,
        out_of_order: Arc::default(),
    };
    let per_producer = args.messages.div_ceil(args.producers as u64);
    let total = per_producer * args.producers as u64;
    let ledger = Arc::new(Ledger::new(args.producers as u64, per_producer));
    let bar = progress(common, total, "queue");
    let deadline = common.deadline();

    let mut tasks = JoinSet::new();
    for i in 0..args.consumers {
        let (mut writer, mut reader) =
            connect(&common.receive_target(i)?, &credentials, None).await?;
        let ack = match args.ack {
            AckArg::Auto => "auto",
            AckArg::ClientIndividual => "client-individual",
        };
        let mut headers = vec![
            ("ack", ack.to_string()),
            ("prefetch-count", args.prefetch.to_string()),
        ];
        headers.extend(extra.iter().map(|(n, v)| (n.as_str(), v.clone())));
        if let Some(ms) = args.ack_timeout {
            headers.push(("x-ack-timeout", ms.to_string()));
        }
        subscribe(&mut writer, &mut reader, &destination, &headers).await?;
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
        producers.push(connect(&target, &credentials, None).await?);
    }
    let start = Instant::now();
    for (p, (writer, reader)) in producers.into_iter().enumerate() {
        let destination = destination.clone();
        let size = args.size;
        let options = options.clone();
        tasks.spawn(async move {
            hold_open(
                produce(
                    writer,
                    reader,
                    destination,
                    p as u64,
                    per_producer,
                    size,
                    options,
                )
                .await?,
            )
            .await
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
    params.insert("persistent".into(), json!(args.persistent));
    params.insert("transient".into(), json!(args.transient));
    if args.persistent {
        params.insert("window".into(), json!(args.window));
    }
    for (n, v) in &extra {
        params.insert(format!("header {n}"), json!(v));
    }
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
            (
                "receipts_out_of_order",
                options.out_of_order.load(Ordering::Relaxed) as f64,
                "receipts",
            ),
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
    let base = format!("/topic/{}", unique("bench"));
    // With --wildcard, subscribers take the pattern and the topic is one it matches.
    let (destination, pattern) = if args.wildcard {
        (format!("{base}.x"), format!("{base}.*"))
    } else {
        (base.clone(), base)
    };
    let expected = args.messages * args.subscribers as u64;
    // One ledger slot per (subscriber, message): every copy must arrive once.
    let ledger = Arc::new(Ledger::new(args.subscribers as u64, args.messages));
    let bar = progress(common, expected, "fanout");
    let deadline = common.deadline();
    let mut tasks = JoinSet::new();
    for k in 0..args.subscribers {
        let (mut writer, mut reader) =
            connect(&common.receive_target(k)?, &credentials, None).await?;
        subscribe(&mut writer, &mut reader, &pattern, &[]).await?;
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
    let (writer, reader) = connect(&target, &credentials, None).await?;
    let start = Instant::now();
    let size = args.size;
    let messages = args.messages;
    let publish_to = destination.clone();
    tasks.spawn(async move {
        let held = produce(
            writer,
            reader,
            publish_to,
            0,
            messages,
            size,
            SendOptions::plain(),
        )
        .await?;
        hold_open(held).await
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
