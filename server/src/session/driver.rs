//! The one task per connection: a single `select!` over inbound frames,
//! the outbox, heart-beat timers and shutdown. Because it is one task,
//! cleanup (returning messages to queues) runs exactly once, at the end.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::FutureExt;
use stomp_codec::{Command, DecodeError, Decoded, EncodeError, Frame, Version};
use tokio::time::{Instant, Sleep, sleep_until, timeout};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::writer::{BatchWriter, write};
use super::{Flow, Heartbeat, Session, SessionSettings};
use crate::broker::{Broker, Charge, Delivery, Memory, frame_size};
use crate::error::CloseReason;
use crate::error::SessionError;
use crate::outbox::{Outbox, SlowConsumerPolicy};
use crate::protocol;
use crate::security::LoginThrottle;
use crate::transport::tcp::is_loopback;

/// Something to write: a frame, a delivery, or a heart-beat EOL.
#[derive(Debug)]
pub enum Outgoing {
    /// A frame.
    Frame(Frame),
    /// A MESSAGE, encoded from the delivery when written.
    Message {
        /// The delivery.
        delivery: Delivery,
        /// The `ack` header's value, when the client must acknowledge.
        ack_id: Option<u64>,
    },
    /// A heart-beat (one EOL).
    Heartbeat,
}

impl Outgoing {
    /// Appends the wire form for `version` to `dst`.
    pub fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), EncodeError> {
        match self {
            Outgoing::Frame(frame) => frame.encode(version, dst),
            Outgoing::Message { delivery, ack_id } => {
                protocol::encode_message(delivery, *ack_id, version, dst)
            }
            Outgoing::Heartbeat => {
                dst.extend_from_slice(b"\n");
                Ok(())
            }
        }
    }
}

/// Why reading failed.
#[derive(Debug)]
pub enum ReadError {
    /// The peer sent something that is not STOMP.
    Decode(DecodeError),
    /// The connection failed.
    Io(io::Error),
}

/// What the driver needs from a connection; TCP and WebSocket implement it.
pub trait Transport: Send {
    /// The next frame or heart-beat; `None` once the peer has closed.
    /// Must be cancel-safe: it is raced against timers.
    fn next(&mut self) -> impl Future<Output = Option<Result<Decoded, ReadError>>> + Send;
    /// Writes a batch and flushes it once.
    fn write(&mut self, batch: &[Outgoing]) -> impl Future<Output = io::Result<()>> + Send;
    /// Switches header escaping once the version is agreed.
    fn set_version(&mut self, version: Version);
    /// The input received but not yet decoded: the start of the frame
    /// being received, or of the one that failed to decode.
    fn pending(&self) -> &[u8];
    /// When the frame being received began, if one is partly here.
    fn partial_since(&self) -> Option<Instant>;
    /// Closes the connection after everything was written.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Per-connection settings of the driver.
#[derive(Debug, Clone)]
pub struct DriverSettings {
    /// How long a new connection may take to send CONNECT.
    pub connect_timeout: Duration,
    /// How long one batch may take to write before the client counts as stuck.
    pub write_timeout: Duration,
    /// How long a frame may take to arrive once begun.
    pub frame_timeout: Duration,
    /// Topic messages queued for one connection before the slow-consumer policy applies.
    pub max_topic_backlog: usize,
    /// What to do with a slow topic subscriber.
    pub slow_consumer: SlowConsumerPolicy,
    /// The session's own settings.
    pub session: Arc<SessionSettings>,
    /// Failed logins per address, shared by every connection.
    pub login_throttle: Arc<LoginThrottle>,
}

impl Default for DriverSettings {
    fn default() -> DriverSettings {
        DriverSettings {
            connect_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(30),
            frame_timeout: Duration::from_secs(30),
            max_topic_backlog: 4096,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            session: Arc::new(SessionSettings::default()),
            login_throttle: Arc::new(LoginThrottle::new()),
        }
    }
}

/// Runs one connection to its end and says why it ended.
pub async fn run_session<T: Transport>(
    transport: &mut T,
    broker: Arc<Broker>,
    settings: &DriverSettings,
    peer: crate::transport::Peer,
    cancel: CancellationToken,
) -> CloseReason {
    let crate::transport::Peer {
        addr: peer,
        certificate_login,
        transport: kind,
    } = peer;
    let outbox = Outbox::new(settings.max_topic_backlog, settings.slow_consumer);
    let outbox = Arc::new(outbox);
    let mut session = Session::new(
        broker.clone(),
        settings.session.clone(),
        outbox.clone(),
        is_loopback(&peer),
    )
    .with_certificate_login(certificate_login);
    // Every line a session logs names the connection and where it came from.
    // The login is filled in at CONNECT.
    let span = tracing::info_span!(
        "session",
        session_id = session.id().0,
        %peer,
        login = tracing::field::Empty
    );
    let memory = broker.memory().clone();
    let registration = broker.connections().register(session.id(), peer, kind);
    session.count_in(registration.counters.clone());
    drive(
        transport,
        &mut session,
        &outbox,
        settings,
        peer,
        &memory,
        cancel,
        registration.close.clone(),
    )
    .instrument(span)
    .await
}

/// How long a closing connection waits for the journal to release the
/// RECEIPTs it still holds (a sync takes milliseconds; a stalled disk is
/// not waited for forever).
const RECEIPT_DRAIN: Duration = Duration::from_secs(10);

/// Resolves when the journal synced or the cluster answered; never
/// without either.
async fn progressed(progress: &mut super::Progress) -> Option<()> {
    match progress.changed().await {
        Some(()) => Some(()),
        None => std::future::pending().await,
    }
}

/// How long a refused connection is given to read why before it is dropped.
const REFUSAL_LINGER: Duration = Duration::from_secs(1);

/// Tells a connection the broker will not serve why (`refusal`, an ERROR),
/// then closes it. Bounded: a client that neither reads nor closes costs
/// the broker at most two seconds.
pub async fn refuse<T: Transport>(mut transport: T, refusal: Frame) {
    let _ = timeout(REFUSAL_LINGER, transport.write(&[Outgoing::Frame(refusal)])).await;
    transport.close().await;
    // Closing a socket with unread input makes the kernel reset the
    // connection, which can destroy the ERROR before the client reads it;
    // so the client's CONNECT is read and dropped until it hangs up.
    let _ = timeout(REFUSAL_LINGER, async {
        while let Some(Ok(_)) = transport.next().await {}
    })
    .await;
}

// Each argument is a different thing the loop watches; a struct to carry
// them would only be taken apart again at the top.
#[allow(clippy::too_many_arguments)]
async fn drive<T: Transport>(
    transport: &mut T,
    session: &mut Session,
    outbox: &Outbox,
    settings: &DriverSettings,
    peer: SocketAddr,
    memory: &Arc<Memory>,
    cancel: CancellationToken,
    close: CancellationToken,
) -> CloseReason {
    tracing::debug!("connection opened");

    let mut heartbeat = Heartbeat::OFF;
    let mut connected = false;
    let opened = Instant::now();
    let connect_deadline = opened + settings.connect_timeout;
    // A person typing CONNECT by hand in telnet gets longer than a silent
    // socket: once bytes arrive before CONNECT, the limits are at least
    // TYPING_GRACE.
    let typing_deadline = opened + settings.connect_timeout.max(TYPING_GRACE);
    let mut typing = false;
    let mut last_read = Instant::now();
    let mut last_write = Instant::now();
    let mut writer = BatchWriter::default();
    let far = Duration::from_secs(86_400 * 365);
    // A SEND that arrived during a memory alarm: it waits here (its bytes
    // counted), and the connection is not read, until the alarm clears.
    let mut held: Option<(Frame, Charge)> = None;
    // One timer for frame_timeout_ms, moved only when it must be: a
    // timer created on every turn of the loop cost more than the rest of
    // the check. It fires at the deadline of the frame being received, or,
    // when none is known, a timeout from its last firing (a frame begun
    // while the driver waits on the transport is seen then).
    let frame_watch = tokio::time::sleep(settings.frame_timeout);
    tokio::pin!(frame_watch);
    // Follows the journal's syncs and the cluster's answers, to release
    // RECEIPTs that wait for them.
    let mut synced = session.progress();
    // The earliest ack deadline: one timer, moved earlier when a sooner
    // deadline appears and left alone when acks make it later (it then
    // fires early, finds nothing due, and is set again): re-arming a timer
    // on every ACK cost more than the deadlines themselves.
    // Boxed on first use, as is the token's: most connections use
    // neither, and each timer inline made every connection's task about
    // 100 bytes larger (its allocation is the largest a connection has).
    let mut ack_watch: Option<Pin<Box<Sleep>>> = None;
    let mut ack_watch_armed = false;
    // The token's exp, when the connection logged in with one: set again
    // whenever a renewal moves it.
    let mut token_watch: Option<Pin<Box<Sleep>>> = None;
    // The heart-beat and CONNECT deadlines' timer (see its use).
    let liveness_watch = tokio::time::sleep(far);
    tokio::pin!(liveness_watch);
    let mut liveness_armed = false;
    let mut token_watch_for: Option<u64> = None;

    // Made once and polled on every turn: a future made per turn
    // registered with its token or notifier and left again each time, about
    // 4,600 of the 22,000 instructions a message cost at 500 msgs/s
    // (callgrind on `bench latency`).
    let shutdown = cancel.cancelled();
    tokio::pin!(shutdown);
    let closed_by_operator = close.cancelled();
    tokio::pin!(closed_by_operator);
    let ready = outbox.ready();
    tokio::pin!(ready);
    let reason = loop {
        // Not read during a memory alarm: a connection holding a SEND, and
        // one in the middle of receiving a SEND (reading on would only
        // bring more bytes in). Any other frame is read, above all a
        // consumer's ACKs: blocking those would keep memory from falling.
        let blocked = held.is_some()
            || session.receipts_backed_up()
            || (memory.alarm()
                && transport.partial_since().is_some()
                && protocol::first_line(transport.pending()) == b"SEND");
        let read_deadline = if blocked {
            // Not reading: the client's heart-beats wait in the socket.
            None
        } else if connected {
            heartbeat.read_timeout().map(|t| last_read + t)
        } else if typing || transport.partial_since().is_some() {
            typing = true;
            Some(typing_deadline)
        } else {
            Some(connect_deadline)
        };
        let frame_timeout = if connected {
            settings.frame_timeout
        } else {
            settings.frame_timeout.max(TYPING_GRACE)
        };
        let write_tick = heartbeat.write_every().map(|t| last_write + t);
        // One timer for both: moved earlier when a deadline comes sooner,
        // left alone when reads and writes push them later (it then fires
        // early and is set again). Two timers made afresh every turn cost
        // instructions on every frame and 200 bytes in every connection's task.
        let liveness_due = match (read_deadline, write_tick) {
            (Some(read), Some(write)) => Some(read.min(write)),
            (read, write) => read.or(write),
        };
        if let Some(due) = liveness_due
            && (!liveness_armed || due < liveness_watch.deadline())
        {
            liveness_watch.as_mut().reset(due);
            liveness_armed = true;
        }
        let ack_deadline = session.next_ack_deadline();
        if let Some(due) = ack_deadline
            && (!ack_watch_armed || ack_watch.as_ref().is_none_or(|w| due < w.deadline()))
        {
            rearm(&mut ack_watch, due);
            ack_watch_armed = true;
        }
        let token_expiry = session.token_expires_at();
        if token_expiry != token_watch_for {
            token_watch_for = token_expiry;
            if let Some(exp) = token_expiry {
                rearm(&mut token_watch, instant_of_unix_secs(exp));
            }
        }
        if let Some(since) = transport.partial_since()
            && since + frame_timeout < frame_watch.deadline()
        {
            frame_watch.as_mut().reset(since + frame_timeout);
        }
        let flow = tokio::select! {
            _ = &mut shutdown => {
                outbox.push_frame(protocol::notice_frame(
                    "server shutting down",
                    "The broker is stopping. Reconnect in a moment.",
                ));
                Flow::Close(CloseReason::ServerShutdown)
            }
            _ = &mut closed_by_operator => {
                outbox.push_frame(protocol::notice_frame(
                    "closed by an administrator",
                    "An operator closed this connection through the management API. Reconnect if you should be here.",
                ));
                Flow::Close(CloseReason::ClosedByAdministrator)
            }
            _ = &mut ready => {
                ready.set(outbox.ready());
                if outbox.is_slow() {
                    // Written directly, ahead of the backlog; the backlog's
                    // queue messages go back to their queues in `close`.
                    let notice = protocol::notice_frame(
                        "slow consumer: too many topic messages waiting",
                        &format!(
                            "This connection fell more than {} topic messages behind and was closed so \
                             the broker's memory stays bounded. Reconnect and read faster.",
                            settings.max_topic_backlog
                        ),
                    );
                    let _ = write(transport, &[Outgoing::Frame(notice)], settings.write_timeout).await;
                    session.broker().metrics().slow_consumer_disconnected();
                    Flow::Close(CloseReason::SlowConsumer)
                } else {
                    Flow::Continue
                }
            }
            _ = fire(&mut ack_watch), if ack_deadline.is_some() && ack_watch_armed => {
                ack_watch_armed = false;
                session.expire_acks(Instant::now());
                Flow::Continue
            }
            _ = fire(&mut token_watch), if token_watch_for.is_some() => {
                match session.expire_token(unix_secs()) {
                    // Woken early (the clocks differ, or exp is more than a
                    // year ahead): wait again.
                    Flow::Continue => {
                        let exp = token_watch_for.unwrap_or_default();
                        let again = instant_of_unix_secs(exp).max(Instant::now() + Duration::from_millis(100));
                        rearm(&mut token_watch, again);
                        Flow::Continue
                    }
                    flow => flow,
                }
            }
            Some(()) = progressed(&mut synced), if session.receipts_waiting() => {
                session.release_receipts();
                Flow::Continue
            }
            _ = memory.cleared(), if blocked => {
                last_read = Instant::now();
                tracing::debug!("memory alarm cleared: reading resumes");
                match held.take() {
                    Some((frame, _charge)) => session.handle(frame),
                    None => Flow::Continue,
                }
            }
            item = transport.next(), if !blocked => {
                let mut reading = Reading {
                    connected,
                    typing: &mut typing,
                    read_any: false,
                    memory,
                    held: &mut held,
                };
                let mut flow = reading.take(item, session, transport);
                // Frames already here (a consumer's batch of ACKs, a
                // producer's burst of SENDs) are handled before anything
                // is written, so what they produce goes out in one write
                // rather than one write per frame.
                for _ in 0..DRAIN_PER_WRITE {
                    if !matches!(flow, Flow::Continue)
                        || reading.held.is_some()
                        || session.receipts_backed_up()
                    {
                        break;
                    }
                    match transport.next().now_or_never() {
                        Some(item) => flow = reading.take(item, session, transport),
                        None => break,
                    }
                }
                if reading.read_any {
                    last_read = Instant::now();
                }
                session.settle_acked();
                flow
            }
            _ = &mut liveness_watch, if liveness_armed && liveness_due.is_some() => {
                liveness_armed = false;
                let now = Instant::now();
                if read_deadline.is_none_or(|d| d > now) {
                    // Fired for the write tick, or early (the deadline moved
                    // on since it was set): set again on the next turn.
                    if write_tick.is_some_and(|t| t <= now) {
                        writer.heartbeat_due = true;
                    }
                    Flow::Continue
                } else if !connected && !typing && transport.partial_since().is_some() {
                    // Bytes came while waiting: someone is typing. The
                    // next turn waits for the longer deadline.
                    typing = true;
                    Flow::Continue
                } else {
                let (message, explanation, reason) = if connected {
                    ("heart-beat timeout", "Nothing arrived from the client within twice the negotiated heart-beat interval.".to_string(), CloseReason::HeartbeatTimeout)
                } else {
                    (
                        "no CONNECT received in time",
                        format!(
                            "A connection must send CONNECT within {} s of opening (connect_timeout_ms); one that has begun typing a frame gets {} s. Reconnect and send CONNECT first.",
                            settings.connect_timeout.as_secs_f64(),
                            settings.connect_timeout.max(TYPING_GRACE).as_secs(),
                        ),
                        CloseReason::ConnectTimeout,
                    )
                };
                outbox.push_frame(protocol::notice_frame(message, &explanation));
                Flow::Close(reason)
                }
            }
            _ = &mut frame_watch, if !blocked => {
                let deadline = transport.partial_since().unwrap_or_else(Instant::now) + frame_timeout;
                frame_watch.as_mut().reset(deadline);
                match transport.partial_since() {
                    Some(since) if since + frame_timeout <= Instant::now() => {
                        outbox.push_frame(protocol::notice_frame(
                            "frame not completed in time",
                            &format!(
                                "A frame was begun and not finished within {} ms. Send each frame \
                                 whole, with its NUL, without long pauses.",
                                frame_timeout.as_millis()
                            ),
                        ));
                        Flow::Close(CloseReason::FrameTimeout)
                    }
                    _ => Flow::Continue,
                }
            }
        };
        match flow {
            Flow::Continue => {}
            Flow::Connected {
                version,
                heartbeat: agreed,
            } => {
                settings.login_throttle.succeeded(peer.ip());
                session
                    .broker()
                    .connections()
                    .logged_in(session.id(), session.login());
                transport.set_version(version);
                heartbeat = agreed;
                connected = true;
                tracing::debug!(%version, ?agreed, "connected");
            }
            Flow::Close(reason) => {
                if matches!(
                    reason,
                    CloseReason::ProtocolError(SessionError::AnonymousRefused(_))
                ) {
                    session.broker().metrics().login_failed();
                }
                if matches!(
                    reason,
                    CloseReason::ProtocolError(
                        SessionError::AuthenticationFailed | SessionError::TokenRefused(_)
                    )
                ) && !connected
                {
                    session.broker().metrics().login_failed();
                    // Guessing gets slower with every wrong guess from an address.
                    let wait = settings.login_throttle.failed(peer.ip(), Instant::now());
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
                break reason;
            }
        }
        match writer
            .flush(transport, outbox, session, settings.write_timeout)
            .await
        {
            Ok(true) => last_write = Instant::now(),
            Ok(false) => {}
            Err(reason) => break reason,
        }
    };
    // What the session queued last (an ERROR, a DISCONNECT receipt) goes
    // out before the connection closes, after the RECEIPTs it waits behind.
    if !matches!(reason, CloseReason::Io(_) | CloseReason::SlowConsumer) {
        let _ = timeout(RECEIPT_DRAIN, async {
            while session.receipts_waiting() {
                if synced.changed().await.is_none() {
                    break;
                }
                session.release_receipts();
            }
        })
        .await;
        let _ = writer
            .flush(transport, outbox, session, settings.write_timeout)
            .await;
    }
    // A will is for connections that died, not for clean goodbyes or a
    // broker going down.
    if !matches!(
        reason,
        CloseReason::ClientDisconnect | CloseReason::ServerShutdown | CloseReason::ConnectTimeout
    ) {
        session.publish_will();
    }
    session.close();
    transport.close().await;
    match &reason {
        CloseReason::ClientDisconnect | CloseReason::ServerShutdown => {
            tracing::debug!(%reason, "session ended")
        }
        _ => tracing::info!(%reason, "session ended"),
    }
    reason
}

/// Sets a lazily boxed timer to fire at `at`, making it on first use.
fn rearm(watch: &mut Option<Pin<Box<Sleep>>>, at: Instant) {
    match watch {
        Some(w) => w.as_mut().reset(at),
        None => *watch = Some(Box::pin(sleep_until(at))),
    }
}

/// Resolves when a lazily boxed timer fires; never, while it is unset.
async fn fire(watch: &mut Option<Pin<Box<Sleep>>>) {
    match watch {
        Some(w) => w.as_mut().await,
        None => std::future::pending().await,
    }
}

/// Frames handled at most, when more are already here, before the
/// driver writes and looks at its other events again.
const DRAIN_PER_WRITE: usize = 64;

/// What reading a frame changes in the driver's state.
struct Reading<'a> {
    connected: bool,
    typing: &'a mut bool,
    /// Whether anything was read: `last_read` is set once per read, after
    /// its frames (a clock read per frame cost more than the check).
    read_any: bool,
    memory: &'a Arc<Memory>,
    held: &'a mut Option<(Frame, Charge)>,
}

impl Reading<'_> {
    /// Acts on what the transport gave.
    fn take<T: Transport>(
        &mut self,
        item: Option<Result<Decoded, ReadError>>,
        session: &mut Session,
        transport: &T,
    ) -> Flow {
        match item {
            None => Flow::Close(if self.connected {
                CloseReason::ConnectionLost
            } else {
                CloseReason::ClientDisconnect
            }),
            Some(Err(ReadError::Io(e))) => Flow::Close(CloseReason::Io(e.to_string())),
            Some(Err(ReadError::Decode(e))) => {
                let quoted = protocol::quote_unparsed(transport.pending());
                session.fail(e.into(), quoted.as_deref(), None)
            }
            Some(Ok(Decoded::Heartbeat)) => {
                self.read_any = true;
                // An Enter before CONNECT: someone is at a keyboard.
                *self.typing |= !self.connected;
                Flow::Continue
            }
            Some(Ok(Decoded::Frame(frame))) => {
                self.read_any = true;
                if frame.command == Command::Send && self.memory.alarm() {
                    tracing::info!("memory alarm: publisher blocked");
                    let size = frame_size(
                        frame.headers.get("destination").unwrap_or_default(),
                        &frame.headers,
                        &frame.body,
                    );
                    *self.held = Some((frame, self.memory.charge(size)));
                    Flow::Continue
                } else {
                    session.handle_in_batch(frame)
                }
            }
        }
    }
}

/// The least a connection that has begun sending before CONNECT (a person
/// typing in telnet) gets to finish CONNECT, and any frame before it.
const TYPING_GRACE: Duration = Duration::from_secs(60);

/// Seconds since the Unix epoch now.
fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The monotonic instant of a Unix time in seconds (now, if it is past).
fn instant_of_unix_secs(at: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    // At most a year ahead: a token valid for longer is checked again then.
    let wait = at
        .saturating_mul(1000)
        .saturating_sub(now_ms)
        .min(365 * 86_400_000);
    Instant::now() + Duration::from_millis(wait)
}
