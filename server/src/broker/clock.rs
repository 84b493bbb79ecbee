//! The wall clock the broker reads for message delays and expiry, which
//! are absolute times (ms since the Unix epoch, as clients send `expires`).
//! Tests set it by hand, so a delay or a TTL is tested without waiting.

use std::sync::atomic::{AtomicU64, Ordering};

/// The broker's source of "now".
#[derive(Debug, Default)]
pub struct Clock {
    /// Set: a hand-driven clock reading this; `None`: the system clock.
    manual: Option<AtomicU64>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that reads `start_ms` until [`advance`](Self::advance)d.
    pub fn manual(start_ms: u64) -> Clock {
        Clock {
            manual: Some(AtomicU64::new(start_ms)),
        }
    }

    /// Now, ms since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::Relaxed),
            None => crate::terms::now_ms(),
        }
    }

    /// Moves a manual clock forward (the system clock moves by itself).
    pub fn advance(&self, ms: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ms, Ordering::Relaxed);
        }
    }
}
