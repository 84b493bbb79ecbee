//! `latency` and `chat`: how long messages take at a steady rate.
//!
//! Each body carries the time it was written to the socket. Sends follow a
//! fixed schedule; when the tool's own timer wakes late (tokio's timers
//! have millisecond granularity) the messages that fell due are written
//! together, so the rate holds and the timer's lateness is not counted as
//! the broker's latency.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use hdrhistogram::Histogram;
use serde_json::json;
use stomp_codec::{Command, Frame};
use tokio::task::JoinSet;

use super::client::{Writer, connect};
use super::{BenchError, Common, Report, body, hold_open, parse_body, progress, unique};

/// `latency` options.
#[derive(Args, Debug, Clone)]
pub struct LatencyArgs {
    /// Messages per second.
    #[arg(short = 'r', long, default_value_t = 5000)]
    pub rate: u64,
    /// How long to publish, seconds.
    #[arg(short = 't', long, default_value_t = 10)]
    pub seconds: u64,
    /// Body size in bytes (at least 32).
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
}

/// `chat` options.
#[derive(Args, Debug, Clone)]
pub struct ChatArgs {
    /// Rooms.
    #[arg(long, default_value_t = 10)]
    pub rooms: usize,
    /// Users per room; each is one connection that reads the room and writes to it.
    #[arg(long, default_value_t = 10)]
    pub users: usize,
    /// Messages per second each user sends.
    #[arg(long, default_value_t = 2.0)]
    pub rate: f64,
    /// How long users send, seconds.
    #[arg(short = 't', long, default_value_t = 10)]
    pub seconds: u64,
    /// Body size in bytes (at least 32).
    #[arg(short = 's', long, default_value_t = 128)]
    pub size: usize,
}

type Shared = Arc<std::sync::Mutex<Histogram<u64>>>;

fn histogram() -> Result<Shared, BenchError> {
    // Nanoseconds, 3 significant figures, up to 60 s.
    Histogram::new_with_bounds(1, 60_000_000_000, 3)
        .map(|h| Arc::new(std::sync::Mutex::new(h)))
        .map_err(|e| BenchError::Usage(format!("histogram: {e}")))
}

/// Records the time since `stamp` (ns since `base`) as one latency.
fn record(hist: &Shared, base: Instant, stamp: u64) {
    let latency = (base.elapsed().as_nanos() as u64)
        .saturating_sub(stamp)
        .max(1);
    // Values above the histogram's 60 s bound are refused; a run never waits that long.
    let _ = hist
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .record(latency);
}

fn percentiles(h: &Histogram<u64>) -> Vec<(&'static str, f64, &'static str)> {
    let us = |ns: u64| ns as f64 / 1000.0;
    vec![
        ("p50_us", us(h.value_at_quantile(0.50)), "µs"),
        ("p90_us", us(h.value_at_quantile(0.90)), "µs"),
        ("p99_us", us(h.value_at_quantile(0.99)), "µs"),
        ("p99_9_us", us(h.value_at_quantile(0.999)), "µs"),
        ("max_us", us(h.max()), "µs"),
    ]
}

async fn subscribe(
    writer: &mut Writer,
    reader: &mut super::client::Reader,
    destination: &str,
) -> Result<(), BenchError> {
    writer
        .send(
            Frame::new(Command::Subscribe)
                .header("id", "0")
                .header("destination", destination)
                .header("receipt", "subscribed"),
        )
        .await?;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), reader.next_frame())
            .await
            .map_err(|_| BenchError::Timeout("no RECEIPT for SUBSCRIBE".into()))??;
        if f.command == Command::Receipt {
            return Ok(());
        }
    }
}

/// Sends `count` messages at `rate` a second from `offset` on, each stamped
/// with the time it is written (ns since `base`).
#[allow(clippy::too_many_arguments)]
async fn paced(
    writer: &mut Writer,
    destination: &str,
    tag: char,
    sender: u64,
    count: u64,
    rate: f64,
    offset: Duration,
    base: Instant,
    size: usize,
) -> Result<(), BenchError> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = base + offset;
    for i in 0..count {
        let due = start + interval.mul_f64(i as f64);
        let now = Instant::now();
        if due > now {
            writer.flush().await?;
            tokio::time::sleep(due - now).await;
        }
        let stamp = base.elapsed().as_nanos() as u64;
        writer
            .feed(
                Frame::new(Command::Send)
                    .header("destination", destination)
                    .body(body(tag, sender * 1_000_000_000 + i, stamp, size)),
            )
            .await?;
    }
    writer.flush().await
}

/// One subscriber, one publisher at a fixed rate.
pub async fn latency(common: &Common, args: &LatencyArgs) -> Result<Report, BenchError> {
    if args.size < 32 || args.rate == 0 || args.seconds == 0 {
        return Err(BenchError::Usage(
            "--size must be at least 32; --rate and --seconds at least 1".into(),
        ));
    }
    let target = common.target()?;
    let credentials = common.credentials();
    let destination = format!("/topic/{}", unique("bench-latency"));
    let total = args.rate * args.seconds;
    let hist = histogram()?;
    let received = Arc::new(AtomicU64::new(0));
    let bar = progress(common, total, "latency");
    let (mut sub_writer, mut reader) =
        connect(&common.receive_target(0)?, &credentials, None).await?;
    subscribe(&mut sub_writer, &mut reader, &destination).await?;
    let (mut writer, _pub_reader) = connect(&target, &credentials, None).await?;
    let base = Instant::now();
    let mut tasks: JoinSet<Result<(), BenchError>> = JoinSet::new();
    {
        let hist = hist.clone();
        let received = received.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let _keep = sub_writer;
            while received.load(Ordering::Relaxed) < total {
                let f = reader.next_frame().await?;
                let Some((_, stamp)) = parse_body(&f.body, b'T') else {
                    continue;
                };
                record(&hist, base, stamp);
                received.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
            Ok(())
        });
    }
    let rate = args.rate as f64;
    let size = args.size;
    let publish_to = destination.clone();
    tasks.spawn(async move {
        paced(
            &mut writer,
            &publish_to,
            'T',
            0,
            total,
            rate,
            Duration::from_millis(10),
            base,
            size,
        )
        .await?;
        hold_open(writer).await
    });
    let deadline = common.deadline() + Duration::from_secs(args.seconds);
    let outcome = collect(&received, total, deadline, &mut tasks).await;
    tasks.abort_all();
    bar.finish_and_clear();
    outcome?;
    let h = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut params = serde_json::Map::new();
    params.insert("rate".into(), json!(args.rate));
    params.insert("seconds".into(), json!(args.seconds));
    params.insert("size".into(), json!(args.size));
    let mut results = percentiles(&h);
    results.push(("received", total as f64, "msgs"));
    results.push(("missing", 0.0, "msgs"));
    Ok(Report {
        scenario: "latency",
        transport: target.transport(),
        params,
        results,
    })
}

async fn collect(
    received: &AtomicU64,
    total: u64,
    deadline: tokio::time::Instant,
    tasks: &mut JoinSet<Result<(), BenchError>>,
) -> Result<(), BenchError> {
    loop {
        let got = received.load(Ordering::Relaxed);
        if got >= total {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => {
                return Err(BenchError::Incomplete(format!("{} of {total} messages did not arrive before the timeout", total - got)));
            }
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(BenchError::Protocol(format!("a worker failed: {e}"))),
            },
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
}

/// Rooms of users, each user reading the room and writing to it.
pub async fn chat(common: &Common, args: &ChatArgs) -> Result<Report, BenchError> {
    if args.size < 32
        || args.rooms == 0
        || args.users == 0
        || args.seconds == 0
        || args.rate.partial_cmp(&0.0) != Some(std::cmp::Ordering::Greater)
    {
        return Err(BenchError::Usage(
            "--size at least 32; rooms, users, rate and seconds above 0".into(),
        ));
    }
    let target = common.target()?;
    let credentials = common.credentials();
    let run = unique("bench");
    let per_user = (args.rate * args.seconds as f64).ceil() as u64;
    let per_room = per_user * args.users as u64;
    let expected = per_room * args.users as u64 * args.rooms as u64;
    let hist = histogram()?;
    let received = Arc::new(AtomicU64::new(0));
    let duplicates = Arc::new(AtomicU64::new(0));
    let bar = progress(common, expected, "chat");
    let mut users = Vec::new();
    for room in 0..args.rooms {
        let destination = format!("/topic/chat.{run}-{room}");
        for _ in 0..args.users {
            let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
            subscribe(&mut writer, &mut reader, &destination).await?;
            users.push((destination.clone(), writer, reader));
        }
    }
    let base = Instant::now();
    let mut tasks: JoinSet<Result<(), BenchError>> = JoinSet::new();
    for (index, (destination, mut writer, mut reader)) in users.into_iter().enumerate() {
        let hist = hist.clone();
        let received = received.clone();
        let duplicates = duplicates.clone();
        let bar = bar.clone();
        let users = args.users as u64;
        tasks.spawn(async move {
            // Which (sender, seq) of this room arrived here.
            let mut seen = vec![false; per_room as usize];
            let mut got = 0;
            while got < per_room {
                let f = reader.next_frame().await?;
                let Some((id, stamp)) = parse_body(&f.body, b'C') else {
                    continue;
                };
                let (sender, seq) = (id / 1_000_000_000, id % 1_000_000_000);
                let slot = ((sender % users) * per_user + seq) as usize;
                match seen.get_mut(slot) {
                    Some(s) if !*s => *s = true,
                    Some(_) => {
                        duplicates.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    None => {
                        return Err(BenchError::Protocol(format!(
                            "unexpected chat message {sender}:{seq}"
                        )));
                    }
                }
                got += 1;
                record(&hist, base, stamp);
                received.fetch_add(1, Ordering::Relaxed);
                bar.inc(1);
            }
            Ok(())
        });
        let rate = args.rate;
        let size = args.size;
        // Spread users' first messages over one interval, as real people are.
        let offset = Duration::from_secs_f64((index as f64 * 0.618_034).fract() / rate)
            + Duration::from_millis(10);
        tasks.spawn(async move {
            paced(
                &mut writer,
                &destination,
                'C',
                index as u64,
                per_user,
                rate,
                offset,
                base,
                size,
            )
            .await?;
            hold_open(writer).await
        });
    }
    let deadline = common.deadline() + Duration::from_secs(args.seconds);
    let outcome = collect(&received, expected, deadline, &mut tasks).await;
    tasks.abort_all();
    bar.finish_and_clear();
    outcome?;
    let dups = duplicates.load(Ordering::Relaxed);
    if dups > 0 {
        return Err(BenchError::Incomplete(format!(
            "{dups} chat messages arrived twice"
        )));
    }
    let h = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut params = serde_json::Map::new();
    params.insert("rooms".into(), json!(args.rooms));
    params.insert("users".into(), json!(args.users));
    params.insert("rate".into(), json!(args.rate));
    params.insert("seconds".into(), json!(args.seconds));
    params.insert("size".into(), json!(args.size));
    let mut results = percentiles(&h);
    results.push(("delivered", expected as f64, "msgs"));
    results.push((
        "delivered_per_sec",
        expected as f64 / args.seconds as f64,
        "msgs/s",
    ));
    results.push(("missing", 0.0, "msgs"));
    Ok(Report {
        scenario: "chat",
        transport: target.transport(),
        params,
        results,
    })
}
