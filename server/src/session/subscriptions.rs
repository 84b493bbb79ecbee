//! SUBSCRIBE and UNSUBSCRIBE: what a subscription is to (a destination, a
//! wildcard pattern, a temp queue, an exchange binding, the room directory)
//! and how it stops.

use super::*;

/// What a SUBSCRIBE asks besides its destination, id, ack mode and prefetch.
pub(super) struct Extras<'a> {
    /// `x-ack-timeout`, ms (0: the queue policy's, if any).
    pub(super) ack_timeout_ms: u32,
    /// An exchange subscription's binding arguments.
    pub(super) bind_arguments: &'a [(String, String)],
    /// `selector`, parsed.
    pub(super) selector: Option<Arc<crate::broker::Selector>>,
}

/// What a subscription of this connection is to.
#[derive(Debug)]
pub(super) enum Subscription {
    /// One queue or topic.
    Destination(Destination),
    /// Every topic a wildcard pattern matches (the pattern, after `/topic/`).
    Pattern(String),
    /// One of this connection's temp queues.
    Temp(Arc<crate::broker::QueueDestination>),
    /// A private queue bound to an exchange.
    Exchange {
        exchange: Arc<crate::broker::Exchange>,
        queue: Arc<crate::broker::QueueDestination>,
    },
    /// The room directory (`/sys/rooms`): one MESSAGE, nothing to stop.
    Directory,
}

impl Subscription {
    /// Stops deliveries to it.
    pub(super) fn stop(&self, broker: &Broker, session: SessionId, id: &SubscriptionId) {
        match self {
            Subscription::Destination(d) => d.unsubscribe(session, id),
            Subscription::Pattern(p) => broker.unsubscribe_pattern(p, session, id),
            Subscription::Temp(queue) => queue.unsubscribe(session, id),
            Subscription::Exchange { exchange, queue } => {
                exchange.unbind_owner(session, id);
                queue.unsubscribe(session, id);
            }
            Subscription::Directory => {}
        }
    }

    /// Lets go of what it owned, once its messages were given back.
    pub(super) fn finish(&self, broker: &Broker) {
        if let Subscription::Exchange { queue, .. } = self {
            broker.delete_private_queue(queue.name());
        }
    }
}

impl Session {
    pub(super) fn subscribe(
        &mut self,
        destination: ByteString,
        id: SubscriptionId,
        ack: AckMode,
        prefetch: Option<usize>,
        options: TopicOptions,
        extras: Extras<'_>,
    ) -> Result<Flow, SessionError> {
        let Extras {
            ack_timeout_ms,
            bind_arguments,
            selector,
        } = extras;
        if self.subscriptions.contains_key(&id) {
            return Err(SessionError::DuplicateSubscription(id.as_str().to_string()));
        }
        if self.subscriptions.len() >= self.settings.max_subscriptions {
            return Err(SessionError::LimitReached(
                "too many subscriptions on one connection",
            ));
        }
        let prefetch = match prefetch {
            None => self.settings.default_prefetch,
            Some(0) => self.settings.max_prefetch,
            Some(n) => n.min(self.settings.max_prefetch),
        };
        let spec = ConsumerSpec {
            session: self.id,
            subscription: id.clone(),
            ack,
            prefetch,
            outbox: self.outbox.clone(),
            ack_timeout_ms,
            selector,
        };
        if &*destination == directory::ROOMS {
            let body = directory::rooms(&self.broker, |room| {
                self.permit(Permission::Read, room).is_ok()
            });
            self.outbox.push_frame(
                Frame::new(Command::Message)
                    .header("subscription", id.as_str())
                    .header("destination", directory::ROOMS)
                    .header("message-id", format!("rooms-{}-{}", self.id, id.as_str()))
                    .header("content-type", "application/json")
                    .body(body),
            );
            self.subscriptions.insert(id, Subscription::Directory);
            return Ok(Flow::Continue);
        }
        if destination.starts_with(crate::broker::PRIVATE_PREFIX)
            || destination.starts_with(RESERVED_TOPICS)
        {
            return Err(SessionError::Private(destination.to_string()));
        }
        self.permit(Permission::Read, &destination)?;
        let destination = match destination.strip_prefix(USER) {
            Some(name) => {
                if &*self.sender == "(anonymous)" {
                    return Err(SessionError::LimitReached(
                        "/user/ destinations are a login's own: log in to use them",
                    ));
                }
                ByteString::from(user_topic(&self.login, name)?)
            }
            None => destination,
        };
        if options.durable.is_some() {
            self.permit(Permission::Configure, &destination)?;
        }
        if let Some(name) = destination.strip_prefix(TEMP_QUEUE) {
            let queue = self.temp_queue(name)?;
            queue.subscribe(spec);
            self.subscriptions.insert(id, Subscription::Temp(queue));
            return Ok(Flow::Continue);
        }
        if let Some(exchange) = crate::broker::exchange::parse_destination(&destination) {
            let (name, pattern) = exchange.map_err(|e| SessionError::Exchange(e.to_string()))?;
            let (exchange, queue) =
                self.broker
                    .subscribe_exchange(name, pattern, bind_arguments, spec)?;
            self.subscriptions
                .insert(id, Subscription::Exchange { exchange, queue });
            return Ok(Flow::Continue);
        }
        if let Some(pattern) = crate::broker::wildcard::pattern_of(&destination) {
            let completion = self.broker.subscribe_pattern(pattern, spec, &options)?;
            self.completion = self.completion.and(completion);
            self.subscriptions
                .insert(id, Subscription::Pattern(pattern.to_string()));
            return Ok(Flow::Continue);
        }
        let (destination, completion) = self.broker.subscribe(&destination, spec, options)?;
        self.completion = self.completion.and(completion);
        self.subscriptions
            .insert(id, Subscription::Destination(destination));
        Ok(Flow::Continue)
    }

    /// Stops a subscription of this connection.
    pub(super) fn unsubscribe(&mut self, id: &SubscriptionId) {
        let Some(subscription) = self.subscriptions.remove(id) else {
            return;
        };
        subscription.stop(&self.broker, self.id, id);
        self.broker.route_dead_letters();
        // Not yet written: back to the queue unmarked (topic copies
        // are dropped); then what was written and not acked, in
        // front of them, marked redelivered.
        self.broker
            .return_undelivered(self.outbox.take_subscription(id));
        let held = self.ledger.take_where(|_, d| &d.subscription == id);
        ledger::requeue(&self.broker, self.id, held);
        subscription.finish(&self.broker);
    }
}
