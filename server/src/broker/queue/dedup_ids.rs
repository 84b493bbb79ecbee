//! A queue's window of deduplication ids (`x-dedup-id`): a repeat within it
//! is confirmed like the first and not enqueued again.

use stomp_codec::ByteString;

use crate::broker::dedup::{Claim, DedupWindow};
use crate::store::{Completion, JournalPin};

use super::QueueDestination;

impl QueueDestination {
    /// Whether a SEND with deduplication id `id` is new (enqueue it, then
    /// [`record_dedup`](Self::record_dedup)), or a repeat within the
    /// policy's window (confirm it when the first is safe, enqueue nothing).
    pub fn claim_dedup(&self, id: &ByteString) -> Claim {
        let now = self.env.clock.now_ms();
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        dedup
            .get_or_insert_with(|| self.new_dedup_window())
            .claim(id, now)
    }

    fn new_dedup_window(&self) -> DedupWindow {
        DedupWindow::new(
            self.policy.dedup_window_secs.saturating_mul(1000),
            self.policy.dedup_window_ids,
            self.env.memory.clone(),
        )
    }

    /// Completes a claim: the message is enqueued, safe once `written`.
    pub fn record_dedup(&self, id: &ByteString, written: Completion, pin: Option<JournalPin>) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = dedup.as_mut() {
            window.record(id, written, pin);
        }
    }

    /// Gives up a claim whose message was refused.
    pub fn release_dedup(&self, id: &ByteString) {
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(window) = dedup.as_mut() {
            window.release(id);
        }
    }

    /// Puts back a deduplication id recovered from the journal, if it is
    /// still within the window.
    pub fn restore_dedup(&self, id: ByteString, at_ms: u64, pin: Option<JournalPin>) {
        let now = self.env.clock.now_ms();
        let window_ms = self.policy.dedup_window_secs.saturating_mul(1000);
        if at_ms.saturating_add(window_ms) <= now {
            return;
        }
        let mut dedup = self.dedup.lock().unwrap_or_else(|e| e.into_inner());
        dedup
            .get_or_insert_with(|| self.new_dedup_window())
            .restore(id, at_ms, pin);
    }

    /// Deduplication ids held.
    pub fn dedup_len(&self) -> usize {
        self.dedup
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map_or(0, DedupWindow::len)
    }
}
