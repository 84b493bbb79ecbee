//! Delays and expiry: a queue asks the broker's timers for a tick when its
//! next delayed message falls due or its next expiry passes.

use crate::broker::dead_letter::DeathReason;

use super::{QueueDestination, State};

/// Shortest time between two scans of a queue for expired messages: each
/// scan walks the messages in memory, so many distinct expiry times must
/// not cost a walk each.
const EXPIRY_SCAN_MS: u64 = 100;

impl QueueDestination {
    /// Delayed messages that fell due go to their levels; expired ones
    /// are taken out. Called by the broker when the timers say so.
    pub fn tick(&self) {
        let now = self.env.clock.now_ms();
        let mut state = self.lock();
        state.wake_at = 0;
        for pending in state.backlog.take_due(now) {
            if pending.message.terms.expired(now) {
                self.dead(pending, DeathReason::Expired);
                continue;
            }
            if let Some(pending) = self.place(&mut state, pending, 0) {
                state.backlog.push_back(pending);
            }
        }
        if state.backlog.expiring > 0 && state.backlog.earliest_expiry < now {
            state.last_scan_ms = now;
            let memory = &self.env.memory;
            for pending in state.backlog.take_expired(now, &self.name, memory) {
                self.dead(pending, DeathReason::Expired);
            }
        }
        self.schedule(&mut state, now);
        self.dispatch(&mut state);
    }

    /// Asks the broker's timers for a tick at the next delay or expiry.
    pub(super) fn schedule(&self, state: &mut State, now: u64) {
        let expiry = (state.backlog.expiring > 0)
            .then(|| (state.backlog.earliest_expiry + 1).max(state.last_scan_ms + EXPIRY_SCAN_MS));
        let next = match (state.backlog.next_due(), expiry) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return,
            },
        };
        if state.wake_at == 0 || next < state.wake_at || state.wake_at < now {
            state.wake_at = next;
            self.env.timers.wake(&self.name, next);
        }
    }
}
