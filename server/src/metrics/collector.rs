//! The `/metrics` exposition, written at scrape time from the counters the
//! broker keeps (see the parent module) with `prometheus-client`'s encoder.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::broker::Broker;

use super::{COMMANDS, LATENCY_BUCKETS, QueueCounts, TRANSPORTS, TopicCounts};

/// Writes the broker's state at scrape time.
#[derive(Debug)]
pub struct BrokerCollector {
    broker: Arc<Broker>,
    /// Destinations with series of their own; the rest are summed under
    /// `destination="_other"`, so a broker with a million queues does not
    /// send a million series.
    max_destinations: usize,
}

/// The default cap on destinations with series of their own.
pub const MAX_DESTINATION_SERIES: usize = 1000;

impl BrokerCollector {
    /// A collector for `broker`.
    pub fn new(broker: Arc<Broker>, max_destinations: usize) -> BrokerCollector {
        BrokerCollector {
            broker,
            max_destinations,
        }
    }

    /// The whole exposition, as served at `/metrics`.
    pub fn render(self) -> Result<String, std::fmt::Error> {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(self));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry)?;
        Ok(out)
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, value) in series {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        ConstCounter::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], i64)],
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in series {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        ConstGauge::new(*value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

const DEATH_REASONS: [&str; 4] = ["rejected", "expired", "max_deliveries", "overflow"];

impl Collector for BrokerCollector {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let b = &self.broker;
        let m = b.metrics();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let by_transport = |values: &dyn Fn(usize) -> i64| {
            TRANSPORTS
                .iter()
                .map(|t| (t.as_str(), values(t.index())))
                .collect::<Vec<_>>()
        };
        let open = by_transport(&|i| m.open[i].load(Ordering::Relaxed));
        let open: Vec<([(&str, &str); 1], i64)> = open
            .iter()
            .map(|(t, v)| ([("transport", *t)], *v))
            .collect();
        let open: Vec<(&[(&str, &str)], i64)> = open.iter().map(|(l, v)| (&l[..], *v)).collect();
        gauge(
            &mut e,
            "stompbox_connections",
            "Open STOMP connections.",
            &open,
        )?;
        let opened = by_transport(&|i| m.opened[i].load(Ordering::Relaxed) as i64);
        let opened: Vec<([(&str, &str); 1], u64)> = opened
            .iter()
            .map(|(t, v)| ([("transport", *t)], *v as u64))
            .collect();
        let opened: Vec<(&[(&str, &str)], u64)> =
            opened.iter().map(|(l, v)| (&l[..], *v)).collect();
        counter(
            &mut e,
            "stompbox_connections_opened",
            "STOMP connections admitted since start.",
            &opened,
        )?;
        counter(
            &mut e,
            "stompbox_connections_refused",
            "Connections refused for lack of a slot.",
            &[
                (&[("reason", "full")], load(&m.refused[0])),
                (&[("reason", "address_full")], load(&m.refused[1])),
            ],
        )?;
        counter(
            &mut e,
            "stompbox_logins_failed",
            "CONNECTs whose credentials were refused.",
            &[(&[], load(&m.logins_failed))],
        )?;
        counter(
            &mut e,
            "stompbox_slow_consumer_disconnects",
            "Connections closed for falling too far behind on topics.",
            &[(&[], load(&m.slow_consumers))],
        )?;
        counter(
            &mut e,
            "stompbox_tokens_expired",
            "Connections closed at their token's exp.",
            &[(&[], load(&m.tokens_expired))],
        )?;
        for (name, help, counts) in [
            (
                "stompbox_frames_received",
                "Frames received from clients, by command.",
                &m.received,
            ),
            (
                "stompbox_frames_sent",
                "Frames sent to clients, by command.",
                &m.sent,
            ),
        ] {
            let labels: Vec<[(&str, &str); 1]> =
                COMMANDS.iter().map(|c| [("command", c.as_str())]).collect();
            let series: Vec<(&[(&str, &str)], u64)> = labels
                .iter()
                .zip(counts.iter())
                .map(|(l, n)| (&l[..], load(n)))
                .filter(|(_, n)| *n > 0)
                .collect();
            counter(&mut e, name, help, &series)?;
        }
        let memory = b.memory();
        gauge(
            &mut e,
            "stompbox_memory_used_bytes",
            "Bytes of messages and buffers counted against the memory limit.",
            &[(&[], memory.used() as i64)],
        )?;
        gauge(
            &mut e,
            "stompbox_memory_limit_bytes",
            "The memory high watermark.",
            &[(&[], memory.limit() as i64)],
        )?;
        gauge(
            &mut e,
            "stompbox_memory_alarm",
            "1 while publishers are blocked by the memory watermark.",
            &[(&[], i64::from(memory.alarm()))],
        )?;
        let stats = b.stats();
        counter(
            &mut e,
            "stompbox_messages_unroutable",
            "SENDs to exchanges that no binding took.",
            &[(&[], stats.unroutable())],
        )?;
        counter(
            &mut e,
            "stompbox_messages_duplicate",
            "SENDs confirmed without enqueueing: repeated deduplication ids.",
            &[(&[], stats.duplicates())],
        )?;
        counter(
            &mut e,
            "stompbox_dead_letters_dropped",
            "Messages given up on with nowhere to go.",
            &[(&[], stats.dead_letters_dropped())],
        )?;
        if let Some(journal) = b.journal() {
            let s = journal.stats();
            counter(
                &mut e,
                "stompbox_journal_syncs",
                "fdatasync calls of the journal.",
                &[(&[], s.syncs)],
            )?;
            counter(
                &mut e,
                "stompbox_journal_records",
                "Records written to the journal.",
                &[(&[], s.records)],
            )?;
            counter(
                &mut e,
                "stompbox_journal_written_bytes",
                "Bytes written to the journal.",
                &[(&[], s.bytes_written)],
            )?;
            counter(
                &mut e,
                "stompbox_journal_failed_writes",
                "Journal writes that failed (disk full, I/O errors).",
                &[(&[], s.failed_writes)],
            )?;
            gauge(
                &mut e,
                "stompbox_journal_disk_bytes",
                "Bytes of journal segments on disk.",
                &[(&[], s.disk_bytes as i64)],
            )?;
        }
        // Publish-to-deliver latency.
        {
            let mut cumulative = 0;
            let mut buckets = Vec::with_capacity(LATENCY_BUCKETS.len() + 1);
            for (i, upper) in LATENCY_BUCKETS.iter().enumerate() {
                cumulative += load(&m.latency_buckets[i]);
                buckets.push((*upper, cumulative));
            }
            cumulative += load(&m.latency_buckets[LATENCY_BUCKETS.len()]);
            buckets.push((f64::INFINITY, cumulative));
            let mut family = e.encode_descriptor(
                "stompbox_delivery_latency_seconds",
                "Time from a SEND to a queue being accepted to its MESSAGE being written, sampled (1 in 16 deliveries per connection; millisecond clock).",
                None,
                MetricType::Histogram,
            )?;
            family.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
                load(&m.latency_sum_ms) as f64 / 1000.0,
                load(&m.latency_count),
                &buckets,
                None,
            )?;
        }
        self.encode_destinations(&mut e)
    }
}

impl BrokerCollector {
    fn encode_destinations(&self, e: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (mut queues, mut topics) = self.broker.destination_counts();
        // The busiest keep series of their own.
        queues.sort_by(|a, b| b.1.published.cmp(&a.1.published).then(a.0.cmp(&b.0)));
        topics.sort_by(|a, b| b.1.published.cmp(&a.1.published).then(a.0.cmp(&b.0)));
        let mut other_queue = QueueCounts::default();
        let mut other_queues = false;
        if queues.len() > self.max_destinations {
            for (_, c) in queues.drain(self.max_destinations..) {
                other_queue.published += c.published;
                other_queue.delivered += c.delivered;
                other_queue.acknowledged += c.acknowledged;
                other_queue.redelivered += c.redelivered;
                for i in 0..4 {
                    other_queue.dead[i] += c.dead[i];
                }
                other_queue.depth += c.depth;
                other_queue.bytes += c.bytes;
                other_queue.consumers += c.consumers;
                other_queue.unacked += c.unacked;
                other_queues = true;
            }
        }
        if other_queues {
            queues.push(("_other".to_string(), other_queue));
        }
        let mut other_topic = TopicCounts::default();
        let mut other_topics = false;
        if topics.len() > self.max_destinations {
            for (_, c) in topics.drain(self.max_destinations..) {
                other_topic.published += c.published;
                other_topic.delivered += c.delivered;
                other_topic.dropped += c.dropped;
                other_topic.consumers += c.consumers;
                other_topics = true;
            }
        }
        if other_topics {
            topics.push(("_other".to_string(), other_topic));
        }
        type Pick<T> = fn(&T) -> u64;
        let queue_counters: [(&str, &str, Pick<QueueCounts>); 4] = [
            (
                "stompbox_queue_messages_published",
                "Messages enqueued.",
                |c| c.published,
            ),
            (
                "stompbox_queue_messages_delivered",
                "Deliveries handed to consumers.",
                |c| c.delivered,
            ),
            (
                "stompbox_queue_messages_acknowledged",
                "Deliveries acknowledged.",
                |c| c.acknowledged,
            ),
            (
                "stompbox_queue_messages_redelivered",
                "Deliveries that came back to the queue (NACK, ack deadline, consumer gone).",
                |c| c.redelivered,
            ),
        ];
        for (name, help, pick) in queue_counters {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (queue, c) in &queues {
                ConstCounter::new(pick(c))
                    .encode(family.encode_family(&[("destination", queue.as_str())])?)?;
            }
        }
        {
            let mut family = e.encode_descriptor(
                "stompbox_queue_messages_dead",
                "Messages a queue gave up on (to its dead-letter queue, or dropped), by reason.",
                None,
                MetricType::Counter,
            )?;
            for (queue, c) in &queues {
                for (i, reason) in DEATH_REASONS.iter().enumerate() {
                    if c.dead[i] > 0 {
                        ConstCounter::new(c.dead[i]).encode(family.encode_family(&[
                            ("destination", queue.as_str()),
                            ("reason", reason),
                        ])?)?;
                    }
                }
            }
        }
        let queue_gauges: [(&str, &str, Pick<QueueCounts>); 4] = [
            (
                "stompbox_queue_messages",
                "Messages waiting (in memory, on disk, delayed).",
                |c| c.depth,
            ),
            (
                "stompbox_queue_bytes",
                "Bytes of the messages waiting.",
                |c| c.bytes,
            ),
            ("stompbox_queue_consumers", "Consumers.", |c| c.consumers),
            (
                "stompbox_queue_messages_unacked",
                "Deliveries out and not yet settled.",
                |c| c.unacked,
            ),
        ];
        for (name, help, pick) in queue_gauges {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (queue, c) in &queues {
                ConstGauge::new(pick(c) as i64)
                    .encode(family.encode_family(&[("destination", queue.as_str())])?)?;
            }
        }
        let topic_counters: [(&str, &str, Pick<TopicCounts>); 3] = [
            (
                "stompbox_topic_messages_published",
                "Messages published to a topic.",
                |c| c.published,
            ),
            (
                "stompbox_topic_messages_delivered",
                "Copies queued for a topic's subscribers.",
                |c| c.delivered,
            ),
            (
                "stompbox_topic_messages_dropped",
                "Copies dropped for slow subscribers.",
                |c| c.dropped,
            ),
        ];
        for (name, help, pick) in topic_counters {
            let mut family = e.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (topic, c) in &topics {
                ConstCounter::new(pick(c))
                    .encode(family.encode_family(&[("destination", topic.as_str())])?)?;
            }
        }
        let mut family = e.encode_descriptor(
            "stompbox_topic_subscribers",
            "A topic's own subscribers (wildcard ones not counted per topic).",
            None,
            MetricType::Gauge,
        )?;
        for (topic, c) in &topics {
            ConstGauge::new(c.consumers as i64)
                .encode(family.encode_family(&[("destination", topic.as_str())])?)?;
        }
        Ok(())
    }
}
