//! When queues next need the broker's attention without any client doing
//! anything: a delayed message falls due, a waiting message expires. One
//! time-ordered set for the whole broker, purged by one task (the shape of
//! mini-redis' expirations), instead of a timer per message.

use std::collections::BTreeSet;
use std::sync::Mutex;

use stomp_codec::ByteString;

/// Wake-up times of queues, ms since the Unix epoch.
#[derive(Debug, Default)]
pub struct Timers {
    due: Mutex<BTreeSet<(u64, ByteString)>>,
    /// Told when a wake-up earlier than every other one is added, so the
    /// task sleeping until the old earliest one starts over.
    changed: tokio::sync::Notify,
}

impl Timers {
    /// Asks for `queue` to be ticked at `at_ms`.
    pub fn wake(&self, queue: &ByteString, at_ms: u64) {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let earliest = due.first().is_none_or(|(t, _)| at_ms < *t);
        due.insert((at_ms, queue.clone()));
        drop(due);
        if earliest {
            self.changed.notify_one();
        }
    }

    /// Takes the queues due at `now_ms`, each once.
    pub fn take_due(&self, now_ms: u64) -> Vec<ByteString> {
        let mut due = self.due.lock().unwrap_or_else(|e| e.into_inner());
        let mut names = Vec::new();
        while let Some((t, _)) = due.first() {
            if *t > now_ms {
                break;
            }
            if let Some((_, name)) = due.pop_first()
                && !names.contains(&name)
            {
                names.push(name);
            }
        }
        names
    }

    /// The earliest wake-up asked for.
    pub fn next(&self) -> Option<u64> {
        self.due
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .first()
            .map(|(t, _)| *t)
    }

    /// Resolves when an earlier wake-up was added.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}
