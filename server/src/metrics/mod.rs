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

mod collector;

pub use collector::{BrokerCollector, MAX_DESTINATION_SERIES};

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use stomp_codec::Command;

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
