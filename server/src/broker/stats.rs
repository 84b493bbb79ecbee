//! Broker-wide counters of events an operator should be able to see
//! (served by `/health`), kept as relaxed atomics: they are read rarely and
//! must cost nothing on the paths that bump them.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counts of things that happened since the broker started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages delivered to an older-version receiver without some of
    /// their headers, because that version cannot carry them.
    headers_dropped: AtomicU64,
    /// Messages a full `drop-head` queue dropped to make room.
    dropped_from_queues: AtomicU64,
}

impl Stats {
    /// Notes a message delivered with headers dropped for the receiver's version.
    pub fn note_headers_dropped(&self) {
        self.headers_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes messages a full `drop-head` queue dropped.
    pub fn note_dropped_from_queue(&self, count: usize) {
        self.dropped_from_queues
            .fetch_add(count as u64, Ordering::Relaxed);
    }

    /// Messages full `drop-head` queues dropped to make room.
    pub fn dropped_from_queues(&self) -> u64 {
        self.dropped_from_queues.load(Ordering::Relaxed)
    }

    /// Messages delivered with headers dropped for the receiver's version.
    pub fn headers_dropped(&self) -> u64 {
        self.headers_dropped.load(Ordering::Relaxed)
    }
}
