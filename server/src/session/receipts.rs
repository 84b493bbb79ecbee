//! The session's own frames (RECEIPTs above all) held until what they
//! confirm is safe, then released in the order they were made.
//!
//! A RECEIPT for a durable SEND may go out only once its journal record
//! is synced; a later RECEIPT, even for something kept in memory only,
//! must not overtake it, or a client counting receipts would be told
//! "done" out of order. Frames that need no wait take the direct path
//! while nothing is held.

use std::collections::VecDeque;

use stomp_codec::{Command, Frame};

use crate::broker::Broker;
use crate::outbox::Outbox;
use crate::store::Completion;

/// Held frames beyond which the driver stops reading the connection,
/// so a client that floods receipted SENDs at a stalled disk is bounded.
pub(super) const MAX_HELD: usize = 8192;

#[derive(Debug, Default)]
pub(super) struct Receipts {
    held: VecDeque<(Completion, Frame)>,
}

impl Receipts {
    /// Queues `frame` to be written once `completion` is done and every
    /// frame before it went out.
    pub(super) fn push(
        &mut self,
        outbox: &Outbox,
        broker: &Broker,
        completion: Completion,
        frame: Frame,
    ) {
        if self.held.is_empty() && completion.is_done() {
            outbox.push_frame(frame);
            return;
        }
        self.held.push_back((completion, frame));
        self.release(outbox, broker);
    }

    /// Writes the held frames whose completions are done, in order, up to
    /// the first that is still waiting. A RECEIPT whose record could not
    /// be written says so (`x-error: not-stored`; `cluster-unavailable`
    /// when Redis did not take it) instead of confirming.
    pub(super) fn release(&mut self, outbox: &Outbox, broker: &Broker) {
        while let Some((completion, _)) = self.held.front() {
            let Some(outcome) = broker.outcome(*completion) else {
                return;
            };
            let Some((_, mut frame)) = self.held.pop_front() else {
                return;
            };
            if let Err((code, why)) = outcome
                && frame.command == Command::Receipt
            {
                frame = frame.header("x-error", code).header("message", why);
            }
            outbox.push_frame(frame);
        }
    }

    /// Whether any frame is waiting for the journal.
    pub(super) fn waiting(&self) -> bool {
        !self.held.is_empty()
    }

    /// How many frames are waiting.
    pub(super) fn len(&self) -> usize {
        self.held.len()
    }
}
