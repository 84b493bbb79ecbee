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
}

impl Stats {
    /// Notes a message delivered with headers dropped for the receiver's version.
    pub fn note_headers_dropped(&self) {
        self.headers_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Messages delivered with headers dropped for the receiver's version.
    pub fn headers_dropped(&self) -> u64 {
        self.headers_dropped.load(Ordering::Relaxed)
    }
}
