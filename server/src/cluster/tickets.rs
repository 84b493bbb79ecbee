//! Numbered requests to Redis and which of them have been answered.
//!
//! A RECEIPT in cluster mode waits for Redis' answer; the session keeps
//! only a number (a ticket) in its [`Completion`](crate::store::Completion),
//! as it keeps a journal LSN. Answers may come back out of order (the
//! command connection and the pub/sub connection are separate), so the
//! watermark followed by drivers is "every ticket up to here is answered",
//! and failed tickets are remembered until they fall below it.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use tokio::sync::watch;

/// Why a request failed: the `x-error` code its RECEIPT carries, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `cluster-unavailable`, or `queue-full`.
    pub code: &'static str,
    /// What went wrong.
    pub why: String,
}

impl Failure {
    /// Redis could not be asked, or refused.
    pub fn unavailable(why: impl Into<String>) -> Failure {
        Failure {
            code: "cluster-unavailable",
            why: why.into(),
        }
    }
}

/// Failures remembered at most; beyond it the oldest are forgotten (a
/// session still waiting for one of those is told it succeeded, which
/// can only happen after tens of thousands of failures in a row).
const MAX_FAILED: usize = 65_536;

#[derive(Debug, Default)]
struct State {
    next: u64,
    /// Whether each ticket from the oldest unanswered one on is still
    /// unanswered (`open[0]` is ticket `oldest`). Tickets are taken in
    /// order and mostly answered in order, so this is a short window; a
    /// sorted set cost a node more than the rest of a ticket's life.
    open: VecDeque<bool>,
    oldest: u64,
    failed: BTreeMap<u64, Failure>,
}

/// The tickets of one node.
#[derive(Debug)]
pub struct Tickets {
    state: Mutex<State>,
    resolved: watch::Sender<u64>,
}

impl Default for Tickets {
    fn default() -> Tickets {
        Tickets {
            state: Mutex::new(State {
                next: 1,
                oldest: 1,
                ..State::default()
            }),
            resolved: watch::Sender::new(0),
        }
    }
}

impl Tickets {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new ticket, pending until [`answer`](Self::answer)ed.
    pub fn take(&self) -> u64 {
        let mut state = self.lock();
        let ticket = state.next;
        state.next += 1;
        state.open.push_back(true);
        ticket
    }

    /// A number unique in this node's run that no request waits for.
    pub fn take_unnumbered(&self) -> u64 {
        let ticket = self.take();
        self.answer(ticket, Ok(()));
        ticket
    }

    /// Records the answer to `ticket`: `Err` with why it failed.
    pub fn answer(&self, ticket: u64, outcome: Result<(), Failure>) {
        self.answer_all(std::iter::once((ticket, outcome)));
    }

    /// Records several answers at once: one lock, and the watermark's
    /// followers woken once, not once per ticket.
    pub fn answer_all(&self, answers: impl IntoIterator<Item = (u64, Result<(), Failure>)>) {
        let mut state = self.lock();
        let mut any = false;
        for (ticket, outcome) in answers {
            let Some(open) = ticket
                .checked_sub(state.oldest)
                .and_then(|i| usize::try_from(i).ok())
                .and_then(|i| state.open.get_mut(i))
                .filter(|open| **open)
            else {
                continue;
            };
            *open = false;
            any = true;
            if let Err(why) = outcome {
                state.failed.insert(ticket, why);
                while state.failed.len() > MAX_FAILED {
                    state.failed.pop_first();
                }
            }
        }
        if !any {
            return;
        }
        while state.open.front() == Some(&false) {
            state.open.pop_front();
            state.oldest += 1;
        }
        let watermark = state.oldest - 1;
        drop(state);
        self.resolved.send_if_modified(|w| {
            let moved = watermark > *w;
            if moved {
                *w = watermark;
            }
            moved
        });
    }

    /// `None` while `ticket` is unanswered; then whether it succeeded.
    pub fn outcome(&self, ticket: u64) -> Option<Result<(), Failure>> {
        if *self.resolved.borrow() < ticket {
            return None;
        }
        match self.lock().failed.get(&ticket) {
            Some(why) => Some(Err(why.clone())),
            None => Some(Ok(())),
        }
    }

    /// The watermark now: every ticket up to it is answered.
    pub fn watermark(&self) -> u64 {
        *self.resolved.borrow()
    }

    /// Follows the watermark: every ticket up to it is answered.
    pub fn resolved(&self) -> watch::Receiver<u64> {
        self.resolved.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_waits_for_the_oldest_pending_ticket() {
        let t = Tickets::default();
        let a = t.take();
        let b = t.take();
        t.answer(b, Err(Failure::unavailable("down")));
        assert_eq!(t.outcome(b), None, "a is still pending");
        t.answer(a, Ok(()));
        assert_eq!(t.outcome(a), Some(Ok(())));
        assert_eq!(t.outcome(b), Some(Err(Failure::unavailable("down"))));
        assert_eq!(*t.resolved().borrow(), 2);
    }

    #[test]
    fn answers_given_together_move_the_watermark_once_past_them_all() {
        let t = Tickets::default();
        let tickets: Vec<u64> = (0..5).map(|_| t.take()).collect();
        let mut resolved = t.resolved();
        resolved.mark_unchanged();
        t.answer_all(tickets[1..].iter().rev().map(|&k| (k, Ok(()))));
        assert!(
            !resolved.has_changed().expect("open"),
            "the first is pending"
        );
        t.answer_all([
            (tickets[0], Err(Failure::unavailable("down"))),
            (tickets[2], Err(Failure::unavailable("twice"))),
        ]);
        assert_eq!(*resolved.borrow_and_update(), tickets[4]);
        assert!(t.outcome(tickets[0]).is_some_and(|o| o.is_err()));
        assert_eq!(t.outcome(tickets[2]), Some(Ok(())), "answered before");
    }

    #[test]
    fn an_answer_twice_counts_once() {
        let t = Tickets::default();
        let a = t.take();
        t.answer(a, Ok(()));
        t.answer(a, Err(Failure::unavailable("late")));
        assert_eq!(t.outcome(a), Some(Ok(())));
    }
}
