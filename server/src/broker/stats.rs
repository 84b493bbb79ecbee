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
    /// Messages moved to a dead-letter queue.
    dead_lettered: AtomicU64,
    /// Messages given up on with nowhere to go (no dead-letter queue, a
    /// cycle, or a dead-letter queue that refused them).
    dead_letters_dropped: AtomicU64,
    /// SENDs confirmed without enqueueing: repeats of a deduplication id.
    duplicates: AtomicU64,
    /// SENDs to an exchange that no binding took.
    unroutable: AtomicU64,
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

    /// Notes a message moved to a dead-letter queue.
    pub fn note_dead_lettered(&self) {
        self.dead_lettered.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a dead letter with nowhere to go.
    pub fn note_dead_letter_dropped(&self) {
        self.dead_letters_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a duplicate SEND.
    pub fn note_duplicate(&self) {
        self.duplicates.fetch_add(1, Ordering::Relaxed);
    }

    /// Notes a SEND no binding took.
    pub fn note_unroutable(&self) {
        self.unroutable.fetch_add(1, Ordering::Relaxed);
    }

    /// SENDs to exchanges that no binding took.
    pub fn unroutable(&self) -> u64 {
        self.unroutable.load(Ordering::Relaxed)
    }

    /// Messages moved to dead-letter queues.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered.load(Ordering::Relaxed)
    }

    /// Dead letters dropped (expired, rejected or failing messages with
    /// nowhere to go).
    pub fn dead_letters_dropped(&self) -> u64 {
        self.dead_letters_dropped.load(Ordering::Relaxed)
    }

    /// Duplicate SENDs confirmed without enqueueing.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
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
