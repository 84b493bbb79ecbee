//! `memory`: does the broker stay inside its memory limit under load?
//!
//! Producers publish to one queue as fast as the broker lets them, each
//! SEND with a receipt (so a refusal by a queue limit is seen, not fatal).
//! A consumer drains at a set rate meanwhile, and a bystander on its own
//! connection keeps doing round trips through a topic. The broker's RSS is
//! sampled throughout. Then the producers stop, the consumer drains
//! everything, and after ten idle seconds RSS is read once more: what the
//! broker gives back once a backlog is gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use stomp_codec::{Command, Frame};
use tokio::task::JoinSet;

use super::client::connect;
use super::connections::{rss_anon_kib, rss_kib};
use super::throughput::{check_size, subscribe};
use super::{BenchError, Common, Report, body, unique};

/// `memory` options.
#[derive(Args, Debug, Clone)]
pub struct MemoryArgs {
    /// The broker's process id, whose resident memory is sampled (Linux /proc).
    #[arg(long)]
    pub pid: u32,
    /// Producer connections.
    #[arg(short = 'p', long, default_value_t = 4)]
    pub producers: usize,
    /// Body size in bytes (at least 24).
    #[arg(short = 's', long, default_value_t = 1024)]
    pub size: usize,
    /// How long producers publish, seconds.
    #[arg(short = 't', long, default_value_t = 20)]
    pub seconds: u64,
    /// Stop publishing once this many messages were accepted (0: no count limit).
    #[arg(short = 'n', long, default_value_t = 0)]
    pub messages: u64,
    /// Messages a second the consumer takes while producers publish (0: none until they stop).
    #[arg(long, default_value_t = 1000)]
    pub drain_rate: u64,
    /// The queue (default: a new one).
    #[arg(long)]
    pub queue: Option<String>,
    /// Seconds to wait idle after the drain before the last RSS reading.
    #[arg(long, default_value_t = 10)]
    pub settle: u64,
}

/// SENDs written before their receipts are read.
const WINDOW: usize = 64;

#[derive(Default)]
struct Counts {
    accepted: AtomicU64,
    refused: AtomicU64,
    consumed: AtomicU64,
    round_trips: AtomicU64,
    bystander_refused: AtomicU64,
    max_rss_kib: AtomicU64,
}

/// Runs the scenario; see the module documentation.
pub async fn memory(common: &Common, args: &MemoryArgs) -> Result<Report, BenchError> {
    check_size(args.size)?;
    if args.producers == 0 {
        return Err(BenchError::Usage("--producers must be at least 1".into()));
    }
    let target = common.target()?;
    let credentials = common.credentials();
    let queue = args
        .queue
        .clone()
        .unwrap_or_else(|| format!("/queue/{}", unique("memory")));
    let deadline = common.deadline();
    let counts = Arc::new(Counts::default());
    let publishing = Arc::new(AtomicBool::new(true));
    // Set once every producer has its last receipt: until then a producer
    // blocked by the broker may still have messages on the way.
    let producers_done = Arc::new(AtomicBool::new(false));
    let rss_before = rss_kib(args.pid)?;
    let anon_before = rss_anon_kib(args.pid)?;
    let started = Instant::now();
    let publish_until = started + Duration::from_secs(args.seconds);

    // RSS sampler.
    let sampler = {
        let (counts, pid) = (counts.clone(), args.pid);
        tokio::spawn(async move {
            loop {
                if let Ok(kib) = rss_kib(pid) {
                    counts.max_rss_kib.fetch_max(kib, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    // The consumer: a set rate while producers publish, then all it can.
    let consumer = {
        let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
        subscribe(
            &mut writer,
            &mut reader,
            &queue,
            &[
                ("ack", "client-individual".into()),
                ("prefetch-count", "256".into()),
            ],
        )
        .await?;
        let (counts, publishing, rate) = (counts.clone(), publishing.clone(), args.drain_rate);
        let producers_done = producers_done.clone();
        tokio::spawn(async move {
            let begun = Instant::now();
            loop {
                if publishing.load(Ordering::Relaxed) {
                    let allowed = rate as f64 * begun.elapsed().as_secs_f64();
                    if (counts.consumed.load(Ordering::Relaxed) as f64) >= allowed {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                } else if producers_done.load(Ordering::Relaxed)
                    && counts.consumed.load(Ordering::Relaxed)
                        >= counts.accepted.load(Ordering::Relaxed)
                {
                    return Ok::<(), BenchError>(());
                }
                let frame =
                    match tokio::time::timeout(Duration::from_millis(200), reader.next_frame())
                        .await
                    {
                        Ok(frame) => frame?,
                        Err(_) => continue,
                    };
                if frame.command != Command::Message {
                    continue;
                }
                if let Some(ack) = frame.headers.get("ack") {
                    writer
                        .send(Frame::new(Command::Ack).header("id", ack))
                        .await?;
                }
                counts.consumed.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    // The bystander: round trips through a topic of its own.
    let hist = Arc::new(std::sync::Mutex::new(
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
            .map_err(|e| BenchError::Usage(format!("histogram: {e}")))?,
    ));
    let bystander = {
        let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
        let topic = format!("/topic/{}", unique("bystander"));
        subscribe(&mut writer, &mut reader, &topic, &[]).await?;
        let (counts, publishing, hist) = (counts.clone(), publishing.clone(), hist.clone());
        tokio::spawn(async move {
            while publishing.load(Ordering::Relaxed) {
                let sent = Instant::now();
                writer
                    .send(
                        Frame::new(Command::Send)
                            .header("destination", topic.as_str())
                            .header("receipt", "r")
                            .body("ping"),
                    )
                    .await?;
                // The MESSAGE and the RECEIPT, in either order.
                for _ in 0..2 {
                    let f = tokio::time::timeout_at(deadline, reader.next_frame())
                        .await
                        .map_err(|_| BenchError::Timeout("the bystander's round trip".into()))??;
                    if f.headers.get("x-error").is_some() {
                        counts.bystander_refused.fetch_add(1, Ordering::Relaxed);
                    }
                }
                let us = sent.elapsed().as_micros() as u64;
                let _ = hist
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .record(us.max(1));
                counts.round_trips.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok::<(), BenchError>(())
        })
    };

    // Producers, last, so the others' SUBSCRIBE receipts come first: windows of receipted SENDs.
    let mut producers = JoinSet::new();
    for p in 0..args.producers {
        let (mut writer, mut reader) = connect(&target, &credentials, None).await?;
        let (counts, publishing, queue) = (counts.clone(), publishing.clone(), queue.clone());
        let (size, limit) = (args.size, args.messages);
        producers.spawn(async move {
            let mut seq = 0u64;
            while publishing.load(Ordering::Relaxed) && Instant::now() < publish_until {
                if limit > 0 && counts.accepted.load(Ordering::Relaxed) >= limit {
                    break;
                }
                for _ in 0..WINDOW {
                    seq += 1;
                    writer
                        .feed(
                            Frame::new(Command::Send)
                                .header("destination", queue.as_str())
                                .header("receipt", seq.to_string())
                                .body(body('M', p as u64, seq, size)),
                        )
                        .await?;
                }
                writer.flush().await?;
                for _ in 0..WINDOW {
                    let reply = tokio::time::timeout_at(deadline, reader.next_frame())
                        .await
                        .map_err(|_| BenchError::Timeout("a producer's receipts".into()))??;
                    if reply.headers.get("x-error").is_some() {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                    } else {
                        counts.accepted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Ok::<(), BenchError>(())
        });
    }

    // Publishing ends when the time is up or every producer has stopped
    // (the message count reached); producers blocked by the broker then
    // finish once the consumer, now draining at full speed, makes room.
    let all_done = async {
        while let Some(done) = producers.join_next().await {
            done.map_err(|e| BenchError::Io(e.to_string()))??;
        }
        Ok::<(), BenchError>(())
    };
    tokio::pin!(all_done);
    let finished = tokio::select! {
        done = &mut all_done => { done?; true }
        _ = tokio::time::sleep_until(publish_until.into()) => false,
    };
    let published_for = started.elapsed();
    let rss_after_publishing = rss_kib(args.pid)?;
    publishing.store(false, Ordering::Relaxed);
    if !finished {
        tokio::time::timeout_at(deadline, all_done)
            .await
            .map_err(|_| BenchError::Timeout("producers never got their receipts".into()))??;
    }
    producers_done.store(true, Ordering::Relaxed);
    bystander
        .await
        .map_err(|e| BenchError::Io(e.to_string()))??;
    tokio::time::timeout_at(deadline, consumer)
        .await
        .map_err(|_| BenchError::Timeout("draining the queue".into()))?
        .map_err(|e| BenchError::Io(e.to_string()))??;
    let drained_after = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.settle)).await;
    let rss_settled = rss_kib(args.pid)?;
    let anon_settled = rss_anon_kib(args.pid)?;
    sampler.abort();

    let accepted = counts.accepted.load(Ordering::Relaxed);
    let consumed = counts.consumed.load(Ordering::Relaxed);
    if consumed != accepted {
        return Err(BenchError::Incomplete(format!(
            "{accepted} messages accepted, {consumed} consumed"
        )));
    }
    let h = hist.lock().unwrap_or_else(|e| e.into_inner()).clone();
    Ok(Report {
        scenario: "memory",
        transport: target.transport(),
        params: serde_json::Map::from_iter([
            ("producers".to_string(), json!(args.producers)),
            ("size".to_string(), json!(args.size)),
            ("seconds".to_string(), json!(args.seconds)),
            ("messages".to_string(), json!(args.messages)),
            ("drain_rate".to_string(), json!(args.drain_rate)),
            ("queue".to_string(), json!(queue)),
        ]),
        results: vec![
            ("accepted", accepted as f64, "msgs"),
            (
                "refused",
                counts.refused.load(Ordering::Relaxed) as f64,
                "msgs",
            ),
            ("consumed", consumed as f64, "msgs"),
            ("published_for_s", published_for.as_secs_f64(), "s"),
            ("drained_after_s", drained_after.as_secs_f64(), "s"),
            (
                "bystander_round_trips",
                counts.round_trips.load(Ordering::Relaxed) as f64,
                "",
            ),
            (
                "bystander_refused",
                counts.bystander_refused.load(Ordering::Relaxed) as f64,
                "",
            ),
            ("bystander_p50_us", h.value_at_quantile(0.5) as f64, "µs"),
            ("bystander_p99_us", h.value_at_quantile(0.99) as f64, "µs"),
            ("bystander_max_us", h.max() as f64, "µs"),
            ("rss_before_kib", rss_before as f64, "KiB"),
            (
                "rss_max_kib",
                counts.max_rss_kib.load(Ordering::Relaxed) as f64,
                "KiB",
            ),
            (
                "rss_end_of_publishing_kib",
                rss_after_publishing as f64,
                "KiB",
            ),
            ("rss_settled_kib", rss_settled as f64, "KiB"),
            // What each queued message cost at the peak of the backlog, and
            // what the drained backlog left behind, as the ratios read.
            (
                "rss_per_accepted_b",
                rss_after_publishing.saturating_sub(rss_before) as f64 * 1024.0
                    / accepted.max(1) as f64,
                "B",
            ),
            (
                "rss_settled_over_before",
                rss_settled as f64 / rss_before.max(1) as f64,
                "x",
            ),
            ("rss_anon_before_kib", anon_before as f64, "KiB"),
            ("rss_anon_settled_kib", anon_settled as f64, "KiB"),
        ],
    })
}
