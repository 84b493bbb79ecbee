//! One STOMP session: frames in, frames (via the outbox) and broker calls
//! out. No sockets and no timers: the [`driver`] owns those, so every
//! protocol rule here can be tested by feeding frames.

mod auth;
mod directory;
pub mod driver;
mod durable;
mod heartbeat;
mod in_flight;
mod ledger;
mod limits;
mod receipts;
mod settings;
mod transaction;

use std::collections::HashMap;
use std::sync::Arc;

use stomp_codec::{ByteString, Command, Frame, Version};

pub use crate::ids::{SessionId, SubscriptionId};
pub use heartbeat::Heartbeat;
pub use settings::{AnonymousAccess, SessionSettings};

use crate::broker::{
    AckMode, Broker, ConsumerSpec, Delivery, Destination, MESSAGE_OVERHEAD, TopicOptions,
    frame_size, message_size,
};
use crate::error::{CloseReason, SessionError};
use crate::outbox::{Outbound, Outbox};
use crate::protocol::{self, AckTarget, ClientFrame, Connect, Will};
use crate::security::permissions::Permission;
use crate::store::Completion;
use limits::PublishLimits;
use receipts::Receipts;
use transaction::{Transactions, TxOp};

/// What held RECEIPTs wait on: the journal's syncs and the cluster's
/// answers. The driver waits for either to move.
#[derive(Debug)]
pub struct Progress {
    journal: Option<tokio::sync::watch::Receiver<crate::store::Lsn>>,
    cluster: Option<tokio::sync::watch::Receiver<u64>>,
}

impl Progress {
    /// Resolves when either moved; `None` once neither can any more.
    pub async fn changed(&mut self) -> Option<()> {
        async fn moved<T>(r: &mut Option<tokio::sync::watch::Receiver<T>>) -> Option<()> {
            match r {
                Some(r) => r.changed().await.ok(),
                None => std::future::pending().await,
            }
        }
        if self.journal.is_none() && self.cluster.is_none() {
            return None;
        }
        tokio::select! {
            r = moved(&mut self.journal) => r,
            r = moved(&mut self.cluster) => r,
        }
    }
}

/// What the driver should do after a frame was handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Flow {
    /// Keep going.
    Continue,
    /// CONNECT succeeded: switch the codec to `version`, start heart-beat timers.
    Connected {
        /// The agreed version.
        version: Version,
        /// The agreed heart-beats.
        heartbeat: Heartbeat,
    },
    /// Write what is queued (an ERROR or a DISCONNECT receipt), then close.
    Close(CloseReason),
}

/// The prefix of a connection's temp queues (RabbitMQ's name).
const TEMP_QUEUE: &str = "/temp-queue/";

/// A SEND here with a fresh token as its body renews the connection's
/// token: a browser keeps its connection past the first token's `exp`.
pub const TOKEN_RENEWAL: &str = "/sys/token";

/// A login's own destinations: SUBSCRIBE `/user/NAME` is the connected
/// login's, SEND `/user/LOGIN/NAME` reaches every connection of LOGIN
/// subscribed to `/user/NAME` (Spring's convention).
const USER: &str = "/user/";

/// Topics the broker keeps for `/user/` destinations; clients reach them
/// only through `/user/`.
const RESERVED_TOPICS: &str = "/topic/stompbox.";

/// The topic behind a login's `/user/NAME`.
fn user_topic(login: &str, name: &str) -> Result<String, SessionError> {
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

/// What a SUBSCRIBE asks besides its destination, id, ack mode and prefetch.
struct Extras<'a> {
    /// `x-ack-timeout`, ms (0: the queue policy's, if any).
    ack_timeout_ms: u32,
    /// An exchange subscription's binding arguments.
    bind_arguments: &'a [(String, String)],
    /// `selector`, parsed.
    selector: Option<Arc<crate::broker::Selector>>,
}

/// What an ACK or NACK does with what it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// ACK: done with.
    Ack,
    /// NACK: deliver it again.
    Requeue,
    /// NACK with `requeue:false`: dead-letter it.
    Reject,
}

impl Verdict {
    fn nack(requeue: bool) -> Verdict {
        if requeue {
            Verdict::Requeue
        } else {
            Verdict::Reject
        }
    }
}

/// What a subscription of this connection is to.
#[derive(Debug)]
enum Subscription {
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
    fn stop(&self, broker: &Broker, session: SessionId, id: &SubscriptionId) {
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
    fn finish(&self, broker: &Broker) {
        if let Subscription::Exchange { queue, .. } = self {
            broker.delete_private_queue(queue.name());
        }
    }
}

/// The protocol state of one connection.
#[derive(Debug)]
pub struct Session {
    id: SessionId,
    broker: Arc<Broker>,
    settings: Arc<SessionSettings>,
    outbox: Arc<Outbox>,
    peer_is_loopback: bool,
    /// The login a verified client certificate gives, if any.
    certificate_login: Option<String>,
    /// When the login came from a token: its expiry and permissions.
    token: Option<auth::TokenGrant>,
    version: Option<Version>,
    subscriptions: HashMap<SubscriptionId, Subscription>,
    /// Deliveries awaiting ACK/NACK, and queue credit owed for written ones.
    ledger: ledger::AckLedger,
    transactions: Transactions,
    /// Published if the connection ends without DISCONNECT.
    will: Option<Will>,
    /// Whether the will is also kept in the cluster's Redis.
    will_kept: bool,
    /// Who connected (`(anonymous)` without a login) and its `client-id`:
    /// what durable subscriptions are named by.
    login: String,
    /// The login as every MESSAGE of this connection's SENDs says it
    /// (`x-sender`), shared rather than copied per message.
    sender: ByteString,
    client_id: Option<String>,
    /// Publish budgets: rate per topic policy.
    limits: PublishLimits,
    /// The session's own frames, held in order until what they confirm is safe.
    receipts: Receipts,
    /// What the frame being handled must wait for before its RECEIPT.
    completion: Completion,
    /// This connection's temp queues (`/temp-queue/NAME`), deleted when it closes.
    temp_queues: HashMap<String, Arc<crate::broker::QueueDestination>>,
    /// Frames in and out since they were last added to the broker's metrics.
    tally: crate::metrics::FrameTally,
    /// This connection's own counters, for the management API.
    counters: Option<Arc<crate::registry::ConnectionCounters>>,
    /// Counts deliveries, to time one in [`LATENCY_SAMPLE`].
    rendered: u32,
    closed: bool,
}

/// One queue delivery in this many has its publish-to-deliver time taken
/// (a clock read each would cost about 1% of queue throughput).
const LATENCY_SAMPLE: u32 = 16;

impl Session {
    /// A session that has not seen CONNECT yet.
    pub fn new(
        broker: Arc<Broker>,
        settings: Arc<SessionSettings>,
        outbox: Arc<Outbox>,
        peer_is_loopback: bool,
    ) -> Session {
        let transactions = Transactions::new(
            broker.memory().charge(0),
            settings.max_transactions,
            settings.max_transaction_frames,
            settings.max_transaction_bytes,
        );
        Session {
            id: broker.new_session_id(),
            broker,
            settings,
            outbox,
            peer_is_loopback,
            certificate_login: None,
            token: None,
            version: None,
            subscriptions: HashMap::new(),
            ledger: ledger::AckLedger::default(),
            transactions,
            will: None,
            will_kept: false,
            login: String::new(),
            sender: ByteString::from_static("(anonymous)"),
            client_id: None,
            limits: PublishLimits::default(),
            receipts: Receipts::default(),
            completion: Completion::DONE,
            temp_queues: HashMap::new(),
            tally: Default::default(),
            counters: None,
            rendered: 0,
            closed: false,
        }
    }

    /// The login a verified client certificate gives (`tls.cert_login`).
    pub fn with_certificate_login(mut self, login: Option<String>) -> Session {
        self.certificate_login = login;
        self
    }

    /// When the connection's token expires (seconds since the Unix epoch),
    /// if it logged in with one.
    pub fn token_expires_at(&self) -> Option<u64> {
        self.token.as_ref().map(|t| t.expires_at)
    }

    /// The token's `exp` has come: an ERROR `token expired`, and the
    /// connection closes (unless a renewal moved `exp` meanwhile).
    pub fn expire_token(&mut self, now_secs: u64) -> Flow {
        match self.token_expires_at() {
            Some(exp) if exp <= now_secs => {
                tracing::info!(login = %self.login, "token expired: closing the connection");
                self.broker.metrics().token_expired();
                self.fail(SessionError::TokenExpired, None, None)
            }
            _ => Flow::Continue,
        }
    }

    /// Who connected (`(anonymous)` without a login); empty before CONNECT.
    pub fn login(&self) -> &str {
        &self.login
    }

    /// The broker it talks to.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// This session's id.
    pub fn id(&self) -> SessionId {
        self.id
    }

    /// The negotiated version, once connected.
    pub fn version(&self) -> Option<Version> {
        self.version
    }

    /// Handles one frame from the client.
    pub fn handle(&mut self, frame: Frame) -> Flow {
        let flow = self.handle_in_batch(frame);
        self.settle_acked();
        flow
    }

    /// Like [`Session::handle`], except that the deliveries an ACK without
    /// a receipt acknowledges are settled by a later frame, or by
    /// [`Session::settle_acked`], which the driver calls after the frames
    /// of one read: a consumer acknowledging every message then costs its
    /// queue one lock and one dispatch per read, not one per ACK. Any
    /// other frame settles them first, so it sees them settled.
    pub fn handle_in_batch(&mut self, frame: Frame) -> Flow {
        let ack = frame.command == Command::Ack;
        if !ack {
            self.settle_acked();
        }
        self.tally.received(frame.command);
        if self.tally.due() {
            self.flush_metrics();
        }
        let receipt = match frame.command {
            Command::Connect | Command::Stomp => None,
            _ => frame.headers.get_shared("receipt").cloned(),
        };
        let result = self.apply(&frame);
        if !ack || receipt.is_some() {
            self.settle_acked();
        }
        let completion = std::mem::take(&mut self.completion);
        match result {
            Ok(flow) => {
                if let Some(receipt) = receipt {
                    self.emit(completion, protocol::receipt_frame(receipt));
                }
                flow
            }
            // A refused publish that asked for a receipt is answered on the
            // receipt, so a chat client can say "too long" and carry on.
            Err(error) if error.is_answerable_on_receipt() && receipt.is_some() => {
                let receipt = receipt.unwrap_or_default();
                // After what the earlier frames of the transaction or
                // connection wait for: receipts stay in order.
                self.emit(
                    completion,
                    protocol::receipt_frame(receipt)
                        .header("x-error", error.code())
                        .header("message", error.to_string()),
                );
                Flow::Continue
            }
            Err(error) => self.fail(error, Some(&protocol::quote_frame(&frame)), receipt),
        }
    }

    /// Sends the client an ERROR for `error` and asks the driver to close.
    pub fn fail(
        &mut self,
        error: SessionError,
        offending: Option<&str>,
        receipt: Option<ByteString>,
    ) -> Flow {
        self.emit(
            Completion::DONE,
            protocol::error_frame(&error, offending, receipt),
        );
        Flow::Close(CloseReason::ProtocolError(error))
    }

    /// Queues a frame of the session's own behind any held RECEIPT.
    fn emit(&mut self, completion: Completion, frame: Frame) {
        self.receipts
            .push(&self.outbox, &self.broker, completion, frame);
    }

    /// Writes the held frames whose journal records are now synced; the
    /// driver calls this whenever the journal makes progress.
    pub fn release_receipts(&mut self) {
        self.receipts.release(&self.outbox, &self.broker);
    }

    /// Follows the journal's and the cluster's progress.
    pub fn progress(&self) -> Progress {
        Progress {
            journal: self.broker.journal().map(|j| j.resolved()),
            cluster: self.broker.cluster().map(|c| c.tickets().resolved()),
        }
    }

    /// Whether frames wait for the journal.
    pub fn receipts_waiting(&self) -> bool {
        self.receipts.waiting()
    }

    /// Whether so many frames wait for the journal that the driver should
    /// stop reading this connection until they are released.
    pub fn receipts_backed_up(&self) -> bool {
        self.receipts.len() >= receipts::MAX_HELD
    }

    fn apply(&mut self, frame: &Frame) -> Result<Flow, SessionError> {
        let Some(version) = self.version else {
            if !matches!(frame.command, Command::Connect | Command::Stomp) {
                return Err(SessionError::NotConnected {
                    command: frame.command.as_str(),
                });
            }
            let ClientFrame::Connect(connect) = ClientFrame::parse(frame, Version::V1_2)? else {
                return Err(SessionError::NotConnected { command: "CONNECT" });
            };
            return self.connect(connect);
        };
        match ClientFrame::parse(frame, version)? {
            ClientFrame::Connect(_) => Err(SessionError::AlreadyConnected),
            ClientFrame::Disconnect => Ok(Flow::Close(CloseReason::ClientDisconnect)),
            send @ ClientFrame::Send { .. } => {
                if let ClientFrame::Send { destination, .. } = &send {
                    self.permit(Permission::Write, destination)?;
                }
                if let ClientFrame::Send {
                    transaction: Some(tx),
                    ..
                } = &send
                {
                    let tx = tx.clone();
                    return self.buffer(&tx, TxOp::Send(Box::new(send)));
                }
                self.send(send)
            }
            ClientFrame::Subscribe {
                destination,
                id,
                ack,
                prefetch,
                mut options,
                durable,
                ack_timeout,
                bind_arguments,
                selector,
            } => {
                if let Some(presence) = options.presence.as_mut() {
                    presence.login = self.login.clone();
                }
                if let Some(name) = &durable
                    && destination.starts_with("/topic/")
                {
                    options.durable = Some(durable::key(
                        &self.login,
                        self.client_id.as_deref(),
                        name,
                        Some(&id),
                    )?);
                }
                let ack_timeout_ms =
                    ack_timeout.map_or(0, |t| u32::try_from(t.as_millis()).unwrap_or(u32::MAX));
                self.subscribe(
                    destination,
                    id,
                    ack,
                    prefetch,
                    options,
                    Extras {
                        ack_timeout_ms,
                        bind_arguments: &bind_arguments,
                        selector,
                    },
                )
            }
            ClientFrame::Unsubscribe { id, forget } => {
                let active = id
                    .as_ref()
                    .filter(|id| self.subscriptions.contains_key(*id));
                match (active, &forget) {
                    (Some(id), _) => {
                        let id = id.clone();
                        self.unsubscribe(&id);
                    }
                    (None, None) => {
                        let id = id.map(|i| i.as_str().to_string()).unwrap_or_default();
                        return Err(SessionError::UnknownSubscription(id));
                    }
                    // Deleting a durable subscription this connection does not hold.
                    (None, Some(_)) => {}
                }
                if let Some(name) = &forget {
                    let key =
                        durable::key(&self.login, self.client_id.as_deref(), name, id.as_ref())?;
                    if !self.broker.forget_durable(&key) && active.is_none() {
                        return Err(SessionError::Durable(format!(
                            "no durable subscription {:?} to delete",
                            durable::shown(&key)
                        )));
                    }
                }
                Ok(Flow::Continue)
            }
            ClientFrame::Ack {
                target,
                transaction,
            } => match transaction {
                Some(tx) => {
                    self.find_unacked(&target)?;
                    self.buffer(&tx, TxOp::Ack(target.detached()))
                }
                None => self.ack(&target, Verdict::Ack),
            },
            ClientFrame::Nack {
                target,
                requeue,
                transaction,
            } => match transaction {
                Some(tx) => {
                    self.find_unacked(&target)?;
                    self.buffer(&tx, TxOp::Nack(target.detached(), requeue))
                }
                None => self.ack(&target, Verdict::nack(requeue)),
            },
            ClientFrame::Begin(tx) => {
                self.transactions.begin(tx)?;
                Ok(Flow::Continue)
            }
            ClientFrame::Commit(tx) => {
                let ops = self.transactions.end(&tx)?;
                // Everything is checked before anything takes effect; past
                // this point no operation can fail.
                let sends = ops.iter().filter_map(|op| match op {
                    TxOp::Send(send) => match &**send {
                        ClientFrame::Send {
                            destination,
                            headers,
                            body,
                            ..
                        } => Some((&**destination, frame_size(destination, headers, body))),
                        _ => None,
                    },
                    _ => None,
                });
                self.limits.admit_all(&self.broker, sends)?;
                let journal = self.broker.journal().cloned();
                let Some(journal) = journal else {
                    self.apply_committed(ops)?;
                    return Ok(Flow::Continue);
                };
                if ops.iter().any(|op| matches!(op, TxOp::Send(_))) {
                    journal
                        .check_room()
                        .map_err(|e| SessionError::NotStored(e.to_string()))?;
                }
                // One journal record for the whole transaction: after a
                // crash, all of its durable effects are there or none is.
                let (applied, completion) = journal.atomic(|| self.apply_committed(ops));
                self.completion = self.completion.and(completion);
                applied?;
                Ok(Flow::Continue)
            }
            ClientFrame::Abort(tx) => {
                self.transactions.end(&tx)?;
                Ok(Flow::Continue)
            }
        }
    }

    /// Applies a committed transaction's operations, in order. Everything
    /// was checked before; past this point no operation fails.
    fn apply_committed(&mut self, ops: Vec<TxOp>) -> Result<(), SessionError> {
        for op in ops {
            match op {
                TxOp::Send(send) => {
                    self.send(*send)?;
                }
                // Acked twice inside one transaction, or requeued
                // since: nothing is left to acknowledge.
                TxOp::Ack(target) => {
                    if self.find_unacked(&target).is_ok() {
                        self.ack(&target, Verdict::Ack)?;
                    }
                }
                TxOp::Nack(target, requeue) => {
                    if self.find_unacked(&target).is_ok() {
                        self.ack(&target, Verdict::nack(requeue))?;
                    }
                }
            }
        }
        Ok(())
    }

    fn connect(&mut self, connect: Connect) -> Result<Flow, SessionError> {
        let version = match &connect.accept_version {
            None => Version::V1_0,
            Some(offered) => offered
                .split(',')
                .filter_map(Version::parse)
                .max()
                .ok_or_else(|| SessionError::UnsupportedVersion {
                    offered: offered.chars().take(80).collect(),
                })?,
        };
        let identity = match auth::authenticate(
            &self.settings,
            self.peer_is_loopback,
            self.certificate_login.as_deref(),
            &connect,
        ) {
            Ok(identity) => identity,
            Err(e) => {
                let login = connect.login.as_deref().unwrap_or(auth::ANONYMOUS);
                tracing::warn!(login, error = %e, "login refused");
                return Err(e);
            }
        };
        let login = identity.login.as_str();
        tracing::Span::current().record("login", login);
        tracing::info!(
            login,
            %version,
            token = identity.token.is_some(),
            certificate = self.certificate_login.as_deref() == Some(login),
            "connected"
        );
        self.sender = ByteString::from(login);
        self.login = identity.login;
        self.token = identity.token;
        if let Some(client) = &connect.client_id
            && client.chars().any(char::is_control)
        {
            return Err(SessionError::InvalidHeader {
                header: "client-id",
                value: client.chars().take(40).collect(),
                expected: "printable text without control characters",
            });
        }
        self.client_id = connect.client_id.clone();
        if let Some(will) = &connect.will {
            self.permit(Permission::Write, &will.destination)?;
        }
        self.will = connect.will.clone();
        if let (Some(cluster), Some(will)) = (self.broker.cluster(), &self.will) {
            // Should this node die first, a survivor publishes it.
            let mut headers = will.headers.clone();
            headers.push("x-sender", self.sender.clone());
            cluster.keep_will(self.id.0, &will.destination, &headers, &will.body);
            self.will_kept = true;
        }
        let (sx, sy) = Heartbeat::offer(
            connect.heart_beat,
            self.settings.heart_beat,
            self.settings.min_heart_beat.as_millis() as u64,
        );
        let heartbeat = Heartbeat::negotiate(connect.heart_beat, (sx, sy));
        self.version = Some(version);
        self.outbox.push_frame(
            Frame::new(Command::Connected)
                .header("version", version.as_str())
                .header("session", self.id.to_string())
                .header("server", concat!("stompbox/", env!("CARGO_PKG_VERSION")))
                .header("heart-beat", format!("{sx},{sy}")),
        );
        Ok(Flow::Connected { version, heartbeat })
    }

    fn buffer(&mut self, tx: &ByteString, op: TxOp) -> Result<Flow, SessionError> {
        let bytes = match &op {
            TxOp::Send(send) => match &**send {
                ClientFrame::Send {
                    destination,
                    headers,
                    body,
                    ..
                } => message_size(destination, headers, body),
                _ => MESSAGE_OVERHEAD,
            },
            TxOp::Ack(_) | TxOp::Nack(..) => MESSAGE_OVERHEAD,
        };
        self.transactions.buffer(tx, op, bytes)?;
        Ok(Flow::Continue)
    }

    fn send(&mut self, send: ClientFrame) -> Result<Flow, SessionError> {
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

    /// Refuses what this login's permissions do not allow. The connection's
    /// own temp queues, and replies to any private queue (its address came
    /// from a reply-to), are always allowed.
    fn permit(&self, what: Permission, destination: &str) -> Result<(), SessionError> {
        let own = destination.starts_with(TEMP_QUEUE)
            || (what == Permission::Write
                && destination.starts_with(crate::broker::PRIVATE_PREFIX));
        let allowed = match self.token.as_ref().and_then(|t| t.permissions.as_ref()) {
            // A token's own permissions stand in for the configured ones.
            Some(grants) => {
                crate::security::permissions::grants_allow(grants, &self.login, what, destination)
            }
            None => crate::security::permissions::allows(
                &self.settings.permissions,
                &self.login,
                what,
                destination,
            ),
        };
        if own || allowed {
            return Ok(());
        }
        Err(SessionError::AccessRefused {
            login: self.login.clone(),
            permission: what.as_str(),
            destination: destination.chars().take(200).collect(),
        })
    }

    /// A fresh token for the same login: its `exp` and permissions apply
    /// from now on. A token that does not verify changes nothing (the
    /// connection keeps its current token until that one's `exp`).
    fn renew_token(&mut self, body: &[u8]) -> Result<Flow, SessionError> {
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
    fn temp_queue(
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
    fn reply_to_temp_queue(
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

    fn subscribe(
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
    fn unsubscribe(&mut self, id: &SubscriptionId) {
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

    /// The ack id of the delivery an ACK/NACK names.
    fn find_unacked(&self, target: &AckTarget) -> Result<u64, SessionError> {
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
    fn ack(&mut self, target: &AckTarget, verdict: Verdict) -> Result<Flow, SessionError> {
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

    /// Counts a frame written to the client.
    pub fn note_sent(&mut self, outgoing: &driver::Outgoing) {
        match outgoing {
            driver::Outgoing::Frame(f) => self.tally.sent(f.command),
            driver::Outgoing::Message { .. } => self.tally.sent(Command::Message),
            driver::Outgoing::Heartbeat => {}
        }
    }

    /// Adds the frames counted so far to the broker's metrics (and to
    /// the connection's own counters, when it has them).
    pub fn flush_metrics(&mut self) {
        if !self.tally.is_empty() {
            if let Some(counters) = &self.counters {
                self.tally.add_to(counters);
                counters.subscriptions.store(
                    self.subscriptions.len() as u64,
                    std::sync::atomic::Ordering::Relaxed,
                );
            }
            self.broker.metrics().add_frames(&mut self.tally);
        }
    }

    /// Counts this connection's frames in `counters` too (the management
    /// API lists them per connection).
    pub fn count_in(&mut self, counters: Arc<crate::registry::ConnectionCounters>) {
        self.counters = Some(counters);
    }

    /// Settles the deliveries acknowledged by ACKs handled in a batch.
    pub fn settle_acked(&mut self) {
        if self.ledger.has_acked() {
            let completion = self.ledger.settle_acked(&self.broker, self.id);
            self.completion = self.completion.and(completion);
        }
    }

    /// Returns credit for auto-ack queue deliveries once they are written.
    pub fn settle_written(&mut self) {
        self.ledger.settle_written(&self.broker, self.id);
    }

    /// Ends the session: stops its subscriptions, returns every message it
    /// held to its queue, drops open transactions. Idempotent.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.flush_metrics();
        self.settle_written();
        self.settle_acked();
        let leftovers: Vec<Delivery> = self
            .outbox
            .close()
            .into_iter()
            .filter_map(|item| match item {
                Outbound::Delivery(d) => Some(d),
                Outbound::Frame(_) => None,
            })
            .collect();
        let stopped: Vec<Subscription> = self
            .subscriptions
            .drain()
            .map(|(id, subscription)| {
                subscription.stop(&self.broker, self.id, &id);
                subscription
            })
            .collect();
        // Never-seen deliveries first, then the unacked ones in front of
        // them, so the queue's order is what it was.
        self.broker.return_undelivered(leftovers);
        let held = self.ledger.take_where(|_, _| true);
        ledger::requeue(&self.broker, self.id, held);
        for subscription in stopped {
            subscription.finish(&self.broker);
        }
        for (_, queue) in self.temp_queues.drain() {
            self.broker.delete_private_queue(queue.name());
        }
        self.transactions.clear();
        if self.will_kept
            && let Some(cluster) = self.broker.cluster()
        {
            // Published by now if it was to be (after it, in order).
            cluster.forget_will(self.id.0);
            self.will_kept = false;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
