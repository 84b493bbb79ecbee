//! One STOMP session: frames in, frames (via the outbox) and broker calls
//! out. No sockets and no timers: the [`driver`] owns those, so every
//! protocol rule here can be tested by feeding frames.

mod acking;
mod auth;
mod connect;
mod directory;
pub mod driver;
mod durable;
mod heartbeat;
mod in_flight;
mod ledger;
mod limits;
mod publish;
mod receipts;
mod settings;
mod subscriptions;
mod transaction;
mod writer;

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
use acking::Verdict;
use limits::PublishLimits;
use publish::{RESERVED_TOPICS, TEMP_QUEUE, USER, user_topic};
use receipts::Receipts;
use subscriptions::{Extras, Subscription};
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

/// A SEND here with a fresh token as its body renews the connection's
/// token: a browser keeps its connection past the first token's `exp`.
pub const TOKEN_RENEWAL: &str = "/sys/token";

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
            // Read in place: a RECEIPT held for the journal (up to
            // `receipts::MAX_HELD` of them) must not keep read buffers.
            Command::Ack | Command::Nack => frame.headers.get("receipt").map(ByteString::from),
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
