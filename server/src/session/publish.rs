//! SEND: where a message goes (`/user/`, temp queues, replies, exchanges,
//! queues and topics), the publish limits it passes, and the last will
//! published for a connection that ends without DISCONNECT.

use super::*;

/// The prefix of a connection's temp queues (RabbitMQ's name).
pub(super) const TEMP_QUEUE: &str = "/temp-queue/";

/// A login's own destinations: SUBSCRIBE `/user/NAME` is the connected
/// login's, SEND `/user/LOGIN/NAME` reaches every connection of LOGIN
/// subscribed to `/user/NAME` (Spring's convention).
pub(super) const USER: &str = "/user/";

/// Topics the broker keeps for `/user/` destinations; clients reach them
/// only through `/user/`.
pub(super) const RESERVED_TOPICS: &str = "/topic/stompbox.";

/// The topic behind a login's `/user/NAME`.
pub(super) fn user_topic(login: &str, name: &str) -> Result<String, SessionError> {
    if login.is_empty() || name.is_empty() {
        return Err(SessionError::Pattern(
            "a /user/ destination needs a login and a name: SEND to /user/LOGIN/NAME, SUBSCRIBE to /user/NAME".into(),
        ));
    }
    let topic = format!("{RESERVED_TOPICS}user/{login}/{name}");
    if crate::broker::wildcard::pattern_of(&topic).is_some() {
        return Err(SessionError::Pattern(format!(
            "{topic:?} would be a wildcard pattern; /user/ names and logins cannot have *, # or > segments"
        )));
    }
    crate::broker::DestinationKind::of(&topic)?;
    Ok(topic)
}

impl Session {
    pub(super) fn send(&mut self, send: ClientFrame) -> Result<Flow, SessionError> {
        let ClientFrame::Send {
            mut destination,
            mut headers,
            body,
            ephemeral,
            mandatory,
            ..
        } = send
        else {
            return Ok(Flow::Continue);
        };
        if destination == TOKEN_RENEWAL {
            return self.renew_token(&body);
        }
        // Who sent it, as authenticated: receivers can trust this header
        // (a SEND's own x-sender was dropped with the broker's headers).
        headers.push("x-sender", self.sender.clone());
        if destination.starts_with(RESERVED_TOPICS) {
            return Err(SessionError::Private(destination.to_string()));
        }
        if let Some(rest) = destination.strip_prefix(USER) {
            let (login, name) = rest.split_once('/').unwrap_or((rest, ""));
            destination = ByteString::from(user_topic(login, name)?);
        }
        if let Some(name) = destination.strip_prefix(TEMP_QUEUE) {
            destination = ByteString::from(self.temp_queue(name)?.name());
        }
        if let Some(reply_to) = headers.get("reply-to")
            && let Some(name) = reply_to.strip_prefix(TEMP_QUEUE)
        {
            headers = self.reply_to_temp_queue(name.to_string(), headers)?;
        }
        if destination.starts_with(crate::broker::PRIVATE_PREFIX)
            && self.broker.existing_private_queue(&destination).is_none()
        {
            // A reply to a requester that has gone: like an unroutable
            // message, dropped and counted unless the SEND insists.
            self.broker.stats().note_unroutable();
            if mandatory {
                return Err(SessionError::Unroutable(format!(
                    "{destination:?} is gone (the connection it belonged to closed)"
                )));
            }
            return Ok(Flow::Continue);
        }
        if let Some(exchange) = crate::broker::exchange::parse_destination(&destination) {
            let (name, key) = exchange.map_err(|e| SessionError::Exchange(e.to_string()))?;
            let (_, completion) = self
                .broker
                .publish_exchange(name, key, headers, body, mandatory)?;
            self.completion = self.completion.and(completion);
            return Ok(Flow::Continue);
        }
        let size = frame_size(&destination, &headers, &body);
        let target = self
            .limits
            .admit(&self.broker, &destination, size, Default::default())?;
        self.limits.spend(&target);
        let (_, completion) =
            self.broker
                .send_to(&target, destination, headers, body, ephemeral)?;
        self.completion = self.completion.and(completion);
        Ok(Flow::Continue)
    }

    /// A fresh token for the same login: its `exp` and permissions apply
    /// from now on. A token that does not verify changes nothing (the
    /// connection keeps its current token until that one's `exp`).
    pub(super) fn renew_token(&mut self, body: &[u8]) -> Result<Flow, SessionError> {
        use crate::security::tokens::TokenError;
        let refused = |why: &str| SessionError::TokenRefused(TokenError::Claims(why.into()));
        let Some(tokens) = &self.settings.tokens else {
            return Err(refused(
                "tokens are not configured on this broker ([tokens])",
            ));
        };
        if self.token.is_none() {
            return Err(refused(
                "this connection did not log in with a token, so it has none to renew",
            ));
        }
        let text = std::str::from_utf8(body).map_err(|_| refused("the body is not a token"))?;
        let fresh = tokens.verify(text).map_err(SessionError::TokenRefused)?;
        if fresh.login != self.login {
            return Err(refused(
                "the fresh token is for another sub; a connection keeps its login",
            ));
        }
        tracing::info!(login = %self.login, expires_at = fresh.expires_at, "token renewed");
        self.token = Some(auth::TokenGrant {
            expires_at: fresh.expires_at,
            permissions: fresh.permissions,
        });
        Ok(Flow::Continue)
    }

    /// This connection's temp queue `name`, made on first use.
    pub(super) fn temp_queue(
        &mut self,
        name: &str,
    ) -> Result<Arc<crate::broker::QueueDestination>, SessionError> {
        if let Some(q) = self.temp_queues.get(name) {
            return Ok(q.clone());
        }
        if self.temp_queues.len() >= self.settings.max_subscriptions {
            return Err(SessionError::LimitReached(
                "too many temp queues on one connection",
            ));
        }
        let full = format!("{}temp.{}.{name}", crate::broker::PRIVATE_PREFIX, self.id.0);
        if name.is_empty() {
            return Err(crate::broker::DestinationError::EmptyName(TEMP_QUEUE.to_string()).into());
        }
        crate::broker::DestinationKind::of(&full)?;
        let queue = self.broker.private_queue(full);
        self.temp_queues.insert(name.to_string(), queue.clone());
        Ok(queue)
    }

    /// A SEND's `reply-to:/temp-queue/NAME`, rewritten to the temp queue's
    /// broker-wide name (a service replies there without knowing who
    /// asked), and the connection subscribed to it as RabbitMQ does, with
    /// the subscription id `/temp-queue/NAME`, unless it already is.
    pub(super) fn reply_to_temp_queue(
        &mut self,
        name: String,
        headers: stomp_codec::Headers,
    ) -> Result<stomp_codec::Headers, SessionError> {
        let queue = self.temp_queue(&name)?;
        let id = SubscriptionId::from(format!("{TEMP_QUEUE}{name}").as_str());
        let subscribed = self.subscriptions.iter().any(|(sid, s)| {
            sid == &id || matches!(s, Subscription::Temp(q) if Arc::ptr_eq(q, &queue))
        });
        if !subscribed {
            queue.subscribe(ConsumerSpec {
                session: self.id,
                subscription: id.clone(),
                ack: AckMode::Auto,
                prefetch: self.settings.default_prefetch,
                outbox: self.outbox.clone(),
                ack_timeout_ms: 0,
                selector: None,
            });
            self.subscriptions
                .insert(id, Subscription::Temp(queue.clone()));
        }
        Ok(headers
            .iter_shared()
            .map(|(n, v)| {
                if &**n == "reply-to" {
                    (n.clone(), ByteString::from(queue.name()))
                } else {
                    (n.clone(), v.clone())
                }
            })
            .collect())
    }

    /// Publishes the last will, if the client left one; called when the
    /// connection ends without DISCONNECT. At most once.
    pub fn publish_will(&mut self) {
        if let Some(mut will) = self.will.take()
            && let Err(e) = {
                will.headers.push("x-sender", self.sender.clone());
                self.broker
                    .send(will.destination, will.headers, will.body, false)
            }
        {
            tracing::warn!(error = %e, "last will not published");
        }
    }
}
