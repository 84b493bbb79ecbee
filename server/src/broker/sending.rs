//! What a SEND does: a message made, deduplicated, stored when durable,
//! then queued, fanned out, or routed through an exchange.

use std::sync::Arc;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use crate::store::Completion;
use crate::terms::Terms;

use super::{
    Broker, Claim, Destination, Exchange, Message, MessageId, QueueDestination, SendError,
    exchange, message_size,
};

impl Broker {
    /// Accepts a message for `destination`: queued, or fanned out.
    /// An `ephemeral` message is never kept in a topic's history. The
    /// completion is done when the message is as safe as it will be: at
    /// once in memory, after the journal's sync when durable.
    pub fn send(
        &self,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Result<(MessageId, Completion), SendError> {
        let target = self.destination(&destination)?;
        self.send_to(&target, destination, headers, body, ephemeral)
    }

    /// Like [`send`](Self::send), to a destination already looked up. A
    /// queue at a limit of its policy may refuse the message, and so may
    /// a full journal when the message is durable.
    pub fn send_to(
        &self,
        target: &Destination,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Result<(MessageId, Completion), SendError> {
        let id = self.next_message_id();
        let Destination::Queue(q) = target else {
            let message = self.message(id.clone(), destination, headers, body, ephemeral);
            return self.publish(target, message).map(|c| (id, c));
        };
        let dedup = crate::terms::dedup_id(&headers).cloned();
        if let Some(key) = &dedup
            && let Claim::Duplicate(first) = q.claim_dedup(key)
        {
            // Confirmed as the first was, and not enqueued again.
            self.stats.note_duplicate();
            return Ok((id, first));
        }
        let mut message = self.message(id.clone(), destination, headers, body, ephemeral);
        message.terms = Terms::read(
            &message.headers,
            self.clock.now_ms(),
            q.policy().message_ttl_ms,
        );
        let result = match &self.cluster {
            Some(cluster)
                if q.env_cluster()
                    && !persistent(q, &message.headers)
                    && cluster.may_deliver_locally(q.name())
                    && q.would_deliver_at_once() =>
            {
                // Local preference: see `cluster::queues`.
                self.enqueue(q, message)
            }
            Some(cluster) if q.env_cluster() => {
                let Message {
                    destination,
                    headers,
                    body,
                    charge,
                    terms,
                    ..
                } = message;
                cluster
                    .enqueue(
                        &destination,
                        &headers,
                        &body,
                        terms.at_ms,
                        q.policy(),
                        charge,
                    )
                    .inspect(|c| cluster.note_sent(q.name(), *c))
                    .map(|c| (c, None))
                    .map_err(|e| SendError::Cluster(e.to_string()))
            }
            _ => self.enqueue(q, message),
        };
        if let Some(key) = &dedup {
            match &result {
                Ok((completion, pin)) => q.record_dedup(key, *completion, pin.clone()),
                Err(_) => q.release_dedup(key),
            }
        }
        self.route_dead_letters();
        result.map(|(c, _)| (id, c))
    }

    pub(super) fn message(
        &self,
        id: MessageId,
        destination: ByteString,
        headers: Headers,
        body: Bytes,
        ephemeral: bool,
    ) -> Message {
        let charge = self
            .memory
            .charge(message_size(&destination, &headers, &body));
        Message {
            id,
            destination,
            headers,
            body,
            stream: None,
            ephemeral,
            charge,
            journal: None,
            terms: Terms::default(),
        }
    }

    /// Fans a message out to a topic.
    fn publish(&self, target: &Destination, message: Message) -> Result<Completion, SendError> {
        let Destination::Topic(t) = target else {
            return Ok(Completion::DONE);
        };
        if let Some(cluster) = &self.cluster {
            // Every node, this one too, delivers it when the channel
            // brings it back with its cluster-wide position.
            let Message {
                destination,
                headers,
                body,
                ephemeral,
                charge,
                ..
            } = message;
            return cluster
                .publish(&destination, &headers, &body, t.policy(), ephemeral, charge)
                .map_err(|e| SendError::Cluster(e.to_string()));
        }
        let key = t.name().strip_prefix("/topic/").unwrap_or_default();
        let wild = self.wildcards.matches(key);
        let (dropped, completion) = t.publish(message, wild.as_deref().unwrap_or_default())?;
        if dropped > 0 {
            tracing::debug!(
                destination = t.name(),
                dropped,
                "slow subscribers missed a message"
            );
        }
        Ok(completion)
    }

    /// Stores (when durable) and enqueues a queue message; returns when it
    /// is safe, and its journal pin (for the deduplication window).
    fn enqueue(
        &self,
        q: &QueueDestination,
        mut message: Message,
    ) -> Result<(Completion, Option<crate::store::JournalPin>), SendError> {
        let mut completion = Completion::DONE;
        if let Some(store) = &self.journal
            && (persistent(q, &message.headers) || q.is_paging())
        {
            if !q.has_room(1, message.charge.bytes() as u64) {
                // Refused before it is written, so a full queue costs no disk.
                return Err(q.full().into());
            }
            let (c, pin) = store.enqueue(
                &message.destination,
                message.id.number(),
                message.terms.at_ms,
                &message.headers,
                &message.body,
            )?;
            completion = c;
            message.journal = Some(pin);
        }
        let pin = message.journal.clone();
        let dropped = q.enqueue(Arc::new(message), completion)?;
        if dropped > 0 {
            self.stats.note_dropped_from_queue(dropped);
            tracing::debug!(
                destination = q.name(),
                dropped,
                "queue full: oldest messages dropped"
            );
        }
        Ok((completion, pin))
    }

    /// Routes a SEND to `/exchange/NAME/KEY` to the queues NAME's bindings
    /// pick (following exchange-to-exchange bindings, then the alternate
    /// exchange when none did): a copy per queue, each with `x-exchange`
    /// and `x-routing-key`. Unroutable: dropped and counted, or refused
    /// when `mandatory`. Refused too when no queue took it; a queue that
    /// refuses while others take it is logged. Returns how many queues
    /// took it.
    pub fn publish_exchange(
        &self,
        name: &str,
        key: &str,
        mut headers: Headers,
        body: Bytes,
        mandatory: bool,
    ) -> Result<(usize, Completion), SendError> {
        let exchange = self.exchange(name)?;
        let mut queues: Vec<ByteString> = Vec::new();
        let mut visited = Vec::new();
        self.resolve(&exchange, key, &headers, &mut queues, &mut visited);
        if queues.is_empty() {
            self.stats.note_unroutable();
            if mandatory {
                return Err(SendError::Unroutable {
                    exchange: name.to_string(),
                    key: key.to_string(),
                });
            }
            return Ok((0, Completion::DONE));
        }
        headers.push("x-exchange", name);
        headers.push("x-routing-key", key);
        let mut completion = Completion::DONE;
        let mut taken = 0;
        let mut first_error = None;
        for queue in queues {
            match self.send(queue.clone(), headers.clone(), body.clone(), false) {
                Ok((_, c)) => {
                    completion = completion.and(c);
                    taken += 1;
                }
                Err(e) => {
                    tracing::info!(exchange = name, %queue, error = %e, "a bound queue refused a routed message");
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if taken == 0 => Err(e),
            _ => Ok((taken, completion)),
        }
    }

    /// The queues `exchange` routes `key` to, each once.
    fn resolve(
        &self,
        exchange: &Exchange,
        key: &str,
        headers: &Headers,
        queues: &mut Vec<ByteString>,
        visited: &mut Vec<String>,
    ) {
        // Loops are refused when declared; this only guards the walk.
        if visited.iter().any(|v| v == exchange.name()) || visited.len() > 32 {
            return;
        }
        visited.push(exchange.name().to_string());
        let before = queues.len();
        for target in exchange.route(key, headers) {
            match target {
                exchange::BindTarget::Queue(q) => {
                    if !queues.contains(&q) {
                        queues.push(q);
                    }
                }
                exchange::BindTarget::Exchange(next) => {
                    if let Ok(next) = self.exchange(&next) {
                        self.resolve(&next, key, headers, queues, visited);
                    }
                }
            }
        }
        if queues.len() == before
            && let Some(alternate) = exchange.alternate()
            && let Ok(alternate) = self.exchange(alternate)
        {
            self.resolve(&alternate, key, headers, queues, visited);
        }
    }
}

/// Whether a message for queue `q` is to be stored: the SEND's
/// `persistent` header when it has one, else the queue's policy.
fn persistent(q: &QueueDestination, headers: &Headers) -> bool {
    match headers.get("persistent") {
        Some("true") => true,
        Some("false") => false,
        _ => q.policy().durable,
    }
}
