//! When an effect is safe: the watermark a RECEIPT waits for.

use super::Lsn;

/// When an effect (a SEND, an ACK, a COMMIT) is safe: at once for memory
/// only, once the journal has synced the record `lsn`, and, in cluster
/// mode, once Redis has answered the request numbered `ticket` (see
/// `cluster::Tickets`). A RECEIPT is released when the completion of its
/// frame is done. Both are watermarks that only grow, so a completion is
/// two numbers and combining two takes the later of each.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Completion {
    lsn: Lsn,
    ticket: u64,
}

impl Completion {
    /// Done already: nothing to wait for.
    pub const DONE: Completion = Completion { lsn: 0, ticket: 0 };

    /// Done when the journal record `lsn` is synced.
    pub fn after(lsn: Lsn) -> Completion {
        Completion { lsn, ticket: 0 }
    }

    /// Done when the cluster request `ticket` has been answered.
    pub fn after_ticket(ticket: u64) -> Completion {
        Completion { lsn: 0, ticket }
    }

    /// Done when both are (records sync in order, so the later one).
    #[must_use]
    pub fn and(self, other: Completion) -> Completion {
        Completion {
            lsn: self.lsn.max(other.lsn),
            ticket: self.ticket.max(other.ticket),
        }
    }

    /// The journal record this waits for, if any.
    pub fn lsn(self) -> Option<Lsn> {
        (self.lsn > 0).then_some(self.lsn)
    }

    /// The cluster request this waits for, if any.
    pub fn ticket(self) -> Option<u64> {
        (self.ticket > 0).then_some(self.ticket)
    }

    /// Whether there is nothing to wait for.
    pub fn is_done(self) -> bool {
        self.lsn == 0 && self.ticket == 0
    }
}
