//! `/metrics`: what the broker is doing, in the Prometheus text format.
//!
//! The hot paths only bump plain counters: relaxed atomics here for what
//! is shared (connections, logins), per-session tallies of frames added
//! in here in batches, and per-destination counts kept under each
//! destination's own lock (queues and topics count what passes through
//! them where they already hold it). Nothing is built per event; at
//! scrape, [`BrokerCollector`] reads it all and writes it out with
//! `prometheus-client`'s encoder (names, types, escaping as Prometheus' own
//! client writes them). Names follow Prometheus' conventions, and
//! RabbitMQ's where it has a counterpart (`..._published_total`,
//! `..._delivered_total`, `..._acknowledged_total`, `..._redelivered_total`).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use stomp_codec::Command;

use crate::broker::Broker;

/// How a connection reached the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportKind {
    /// STOMP over TCP.
    #[default]
    Tcp,
    /// STOMP over TLS.
    Tls,
    /// STOMP over WebSocket.
    Ws,
    /// STOMP over secure WebSocket.
    Wss,
}

const TRANSPORTS: [TransportKind; 4] = [
    TransportKind::Tcp,
    TransportKind::Tls,
    TransportKind::Ws,
    TransportKind::Wss,
];

impl TransportKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::Tcp => "tcp",
            TransportKind::Tls => "tls",
            TransportKind::Ws => "ws",
            TransportKind::Wss => "wss",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The commands frames are counted by, in and out: all of them.
const COMMANDS: [Command; 15] = Command::ALL;

fn command_index(command: Command) -> usize {
    // In the order of `Command::ALL`.
    match command {
        Command::Connect => 0,
        Command::Stomp => 1,
        Command::Connected => 2,
        Command::Send => 3,
        Command::Subscribe => 4,
        Command::Unsubscribe => 5,
        Command::Ack => 6,
        Command::Nack => 7,
        Command::Begin => 8,
        Command::Commit => 9,
        Command::Abort => 10,
        Command::Disconnect => 11,
        Command::Message => 12,
        Command::Receipt => 13,
        Command::Error => 14,
    }
}

/// Why a connection got no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every slot was taken.
    Full,
    /// Its address held its share.
    AddressFull,
}

/// Upper bounds of the publish-to-deliver latency buckets, in seconds
/// (the clock behind it counts milliseconds).
const LATENCY_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];

/// The broker-wide counters. One per broker.
#[derive(Debug, Default)]
pub struct Metrics {
    opened: [AtomicU64; 4],
    open: [AtomicI64; 4],
    refused: [AtomicU64; 2],
    logins_failed: AtomicU64,
    slow_consumers: AtomicU64,
    tokens_expired: AtomicU64,
    received: [AtomicU64; COMMANDS.len()],
    sent: [AtomicU64; COMMANDS.len()],
    latency_buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_sum_ms: AtomicU64,
    latency_count: AtomicU64,
}

impl Metrics {
    /// A connection was admitted.
    pub fn connection_opened(&self, transport: TransportKind) {
        self.opened[transport.index()].fetch_add(1, Ordering::Relaxed);
        self.open[transport.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// An admitted connection ended.
    pub fn connection_closed(&self, transport: TransportKind) {
        self.open[transport.index()].fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was refused for lack of a slot.
    pub fn connection_refused(&self, why: Refused) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// A CONNECT's credentials were refused.
    pub fn login_failed(&self) {
        self.logins_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// A slow topic subscriber was disconnected.
    pub fn slow_consumer_disconnected(&self) {
        self.slow_consumers.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection was closed at its token's `exp`.
    pub fn token_expired(&self) {
        self.tokens_expired.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a session's tally of frames and empties it.
    pub fn add_frames(&self, tally: &mut FrameTally) {
        for (i, n) in tally.received.iter_mut().enumerate() {
            if *n > 0 {
                self.received[i].fetch_add(u64::from(*n), Ordering::Relaxed);
                *n = 0;
            }
        }
        for (i, n) in tally.sent.iter_mut().enumerate() {
            if *n > 0 {
                self.sent[i].fetch_add(u64::from(*n), Ordering::Relaxed);
                *n = 0;
            }
        }
        tally.since_flush = 0;
    }

    /// One message's time from its SEND being accepted to its MESSAGE
    /// being written, in milliseconds.
    pub fn observe_latency_ms(&self, ms: u64) {
        let seconds = ms as f64 / 1000.0;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.latency_sum_ms.fetch_add(ms, Ordering::Relaxed);
        self.latency_count.fetch_add(1, Ordering::Relaxed);
    }
}

/// One session's frames since they were last added to [`Metrics`]:
/// counted without atomics, added in batches.
#[derive(Debug, Default, Clone)]
pub struct FrameTally {
    received: [u32; COMMANDS.len()],
    sent: [u32; COMMANDS.len()],
    since_flush: u32,
}

impl FrameTally {
    /// Frames counted before they are added to the broker's counters
    /// whatever else happens.
    pub const FLUSH_EVERY: u32 = 64;

    /// A frame from the client.
    pub fn received(&mut self, command: Command) {
        self.received[command_index(command)] += 1;
        self.since_flush += 1;
    }

    /// A frame to the client.
    pub fn sent(&mut self, command: Command) {
        self.sent[command_index(command)] += 1;
        self.since_flush += 1;
    }

    /// Whether enough has been counted to add it now.
    pub fn due(&self) -> bool {
        self.since_flush >= Self::FLUSH_EVERY
    }

    /// Whether anything is counted.
    pub fn is_empty(&self) -> bool {
        self.since_flush == 0
    }

    /// Adds what is counted to one connection's own counters.
    pub fn add_to(&self, connection: &crate::registry::ConnectionCounters) {
        use std::sync::atomic::Ordering::Relaxed;
        let sum = |a: &[u32]| a.iter().map(|&n| u64::from(n)).sum::<u64>();
        connection.frames_in.fetch_add(sum(&self.received), Relaxed);
        connection.frames_out.fetch_add(sum(&self.sent), Relaxed);
        let sends = self.received[command_index(Command::Send)];
        let messages = self.sent[command_index(Command::Message)];
        connection.messages_in.fetch_add(u64::from(sends), Relaxed);
        connection
            .messages_out
            .fetch_add(u64::from(messages), Relaxed);
    }
}

/// What one queue has counted since it was made, and holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages enqueued.
    pub published: u64,
    /// Deliveries handed to consumers.
    pub delivered: u64,
    /// Deliveries acknowledged (auto-ack ones once written).
    pub acknowledged: u64,
    /// Deliveries that came back (NACK, ack deadline, consumer gone).
    pub redelivered: u64,
    /// Messages given up on, by reason: rejected, expired, max-deliveries, overflow.
    pub dead: [u64; 4],
    /// Messages waiting.
    pub depth: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Consumers.
    pub consumers: u64,
    /// Deliveries out and not yet settled.
    pub unacked: u64,
}

/// What one topic has counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TopicCounts {
    /// Messages published.
    pub published: u64,
    /// Copies queued for subscribers.
    pub delivered: u64,
    /// Copies the slow-consumer policy dropped.
    pub dropped: u64,
    /// Subscribers.
    pub consumers: u64,
}

/// Each queue's and each topic's counts, by name.
pub type DestinationCounts = (Vec<(String, QueueCounts)>, Vec<(String, TopicCounts)>);

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_fall_into_their_buckets() {
        let m = Metrics::default();
        m.observe_latency_ms(0);
        m.observe_latency_ms(1);
        m.observe_latency_ms(7);
        m.observe_latency_ms(60_000);
        let counts: Vec<u64> = m
            .latency_buckets
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .collect();
        assert_eq!(counts[0], 2, "0 and 1 ms are within 1 ms");
        assert_eq!(counts[3], 1, "7 ms is within 10 ms");
        assert_eq!(
            counts[LATENCY_BUCKETS.len()],
            1,
            "a minute is past every bucket"
        );
        assert_eq!(m.latency_count.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn command_indexes_follow_the_list() {
        for (i, c) in COMMANDS.iter().enumerate() {
            assert_eq!(command_index(*c), i, "{c}");
        }
    }

    #[test]
    fn a_tally_is_added_and_emptied() {
        let m = Metrics::default();
        let mut t = FrameTally::default();
        t.received(Command::Send);
        t.received(Command::Send);
        t.sent(Command::Receipt);
        m.add_frames(&mut t);
        assert!(t.is_empty());
        assert_eq!(
            m.received[command_index(Command::Send)].load(Ordering::Relaxed),
            2
        );
        assert_eq!(
            m.sent[command_index(Command::Receipt)].load(Ordering::Relaxed),
            1
        );
    }
}
