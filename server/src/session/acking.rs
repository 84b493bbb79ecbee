//! What the client acknowledges: deliveries rendered into the ledger,
//! ACK and NACK, ack deadlines, and settling what was acknowledged (the
//! ACKs of one read together) or written in auto mode.

use super::*;

/// What an ACK or NACK does with what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// ACK: done with.
    Ack,
    /// NACK: deliver it again.
    Requeue,
    /// NACK with `requeue:false`: dead-letter it.
    Reject,
}

impl Verdict {
    pub(super) fn nack(requeue: bool) -> Verdict {
        if requeue {
            Verdict::Requeue
        } else {
            Verdict::Reject
        }
    }
}

impl Session {
    /// The ack id of the delivery an ACK/NACK names.
    pub(super) fn find_unacked(&self, target: &AckTarget) -> Result<u64, SessionError> {
        if let Some(found) = self.ledger.find(target) {
            return Ok(found);
        }
        if let Some((named, timeout_ms)) = self.ledger.find_expired(target) {
            return Err(SessionError::AckExpired(named, timeout_ms));
        }
        Err(match target {
            AckTarget::Id(id) => SessionError::UnknownAck(format!("ack id {:?}", id.to_string())),
            AckTarget::MessageId {
                subscription: Some(s),
                ..
            } if !self.subscriptions.contains_key(s) => {
                SessionError::UnknownSubscription(s.as_str().to_string())
            }
            AckTarget::MessageId { message_id, .. } => {
                SessionError::UnknownAck(format!("message-id {:?}", message_id.to_string()))
            }
        })
    }

    /// When the earliest unacknowledged delivery's ack deadline passes;
    /// the driver sleeps until then.
    pub fn next_ack_deadline(&self) -> Option<tokio::time::Instant> {
        self.ledger.next_deadline()
    }

    /// Takes back the deliveries whose ack deadline passed at `now` and
    /// requeues them (one more failed delivery each); the connection and
    /// its other deliveries carry on. Returns how many.
    pub fn expire_acks(&mut self, now: tokio::time::Instant) -> usize {
        let taken = self.ledger.take_expired(now);
        let n = taken.len();
        if n > 0 {
            tracing::debug!(
                session = %self.id,
                deliveries = n,
                "ack deadline passed: deliveries taken back"
            );
            ledger::requeue(&self.broker, self.id, taken);
        }
        n
    }

    /// ACK or NACK of the delivery `target` names, and in `client` mode of
    /// every earlier delivery of the same subscription.
    pub(super) fn ack(
        &mut self,
        target: &AckTarget,
        verdict: Verdict,
    ) -> Result<Flow, SessionError> {
        let ack_id = self.find_unacked(target)?;
        let taken = self.ledger.take(ack_id);
        match verdict {
            // Settled after the frame, or with the other ACKs of its read
            // (see `handle_in_batch`).
            Verdict::Ack => self.ledger.defer_settle(taken),
            Verdict::Requeue => ledger::requeue(&self.broker, self.id, taken),
            Verdict::Reject => {
                let completion = ledger::reject(&self.broker, self.id, taken);
                self.completion = self.completion.and(completion);
            }
        }
        Ok(Flow::Continue)
    }

    /// Turns a delivery from the outbox into the MESSAGE to write, and
    /// remembers it when the client has to acknowledge it.
    pub fn render(&mut self, delivery: Delivery) -> driver::Outgoing {
        self.rendered = self.rendered.wrapping_add(1);
        if self.rendered.is_multiple_of(LATENCY_SAMPLE) && delivery.message.terms.at_ms != 0 {
            let now = self.broker.clock().now_ms();
            self.broker
                .metrics()
                .observe_latency_ms(now.saturating_sub(delivery.message.terms.at_ms));
        }
        let mut outgoing = self.ledger.render(delivery);
        // Fitted after the ledger took its copy, so a message that goes
        // back to its queue keeps every header for the next receiver.
        if let (Some(version), driver::Outgoing::Message { delivery, .. }) =
            (self.version, &mut outgoing)
            && let Some(fitted) = protocol::fit_for_version(&delivery.message, version)
        {
            self.broker.stats().note_headers_dropped();
            tracing::debug!(
                message_id = %delivery.message.id,
                %version,
                "headers this version cannot carry were dropped"
            );
            delivery.message = fitted;
            // The shared block holds headers this receiver cannot take.
            delivery.header_block = None;
        }
        outgoing
    }

    /// Settles the deliveries acknowledged by ACKs handled in a batch.
    pub fn settle_acked(&mut self) {
        let completion = self.ledger.settle_acked(&self.broker, self.id);
        self.completion = self.completion.and(completion);
    }

    /// Returns credit for auto-ack queue deliveries once they are written.
    pub fn settle_written(&mut self) {
        self.ledger.settle_written(&self.broker, self.id);
    }
}
