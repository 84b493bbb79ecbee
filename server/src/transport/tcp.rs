//! STOMP over TCP, plain or TLS: `FramedRead` for input, one buffered
//! write per batch.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::StreamExt;
use stomp_codec::{CodecError, Decoded, StompCodec, Version};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::PartialFrame;
use super::admission::{self, ConnectionSlots};
use super::read_ahead::ReadAhead;
use crate::broker::{Broker, Memory};
use crate::session::driver::{DriverSettings, Outgoing, ReadError, Transport};

/// The decoder's read buffer. Small, so an idle connection costs little
/// even after it was busy; [`ReadAhead`] below it still reads 16 KiB per
/// system call, which is worth about 1.6x in queue throughput over 1 KiB
/// reads (measured with `stompbox bench queue`).
const READ_BUFFER: usize = 1024;

/// A read buffer larger than this is replaced by a small one once empty.
const KEEP_READ_BUFFER: usize = 64 * 1024;
/// A write buffer larger than this is freed after its batch is written.
const KEEP_WRITE_BUFFER: usize = 256 * 1024;

/// One TCP connection, of plain halves unless said otherwise.
pub struct TcpTransport<R = OwnedReadHalf, W = OwnedWriteHalf> {
    reader: FramedRead<ReadAhead<R>, ConnectionCodec>,
    writer: W,
    version: Version,
    buf: BytesMut,
}

/// One STOMP-over-TLS connection.
pub type TlsTransport =
    TcpTransport<ReadHalf<TlsStream<TcpStream>>, WriteHalf<TlsStream<TcpStream>>>;

impl TcpTransport {
    /// Wraps a connected socket.
    pub fn new(
        stream: TcpStream,
        limits: stomp_codec::Limits,
        memory: &Arc<Memory>,
    ) -> TcpTransport {
        super::tune_accepted(&stream);
        let (read, write) = stream.into_split();
        TcpTransport::from_halves(read, write, limits, memory)
    }
}

impl TlsTransport {
    /// Wraps a socket whose TLS handshake is done.
    pub fn tls(
        stream: TlsStream<TcpStream>,
        limits: stomp_codec::Limits,
        memory: &Arc<Memory>,
    ) -> TlsTransport {
        let (read, write) = tokio::io::split(stream);
        TcpTransport::from_halves(read, write, limits, memory)
    }
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> TcpTransport<R, W> {
    /// Wraps the two halves of a stream.
    pub fn from_halves(
        read: R,
        write: W,
        limits: stomp_codec::Limits,
        memory: &Arc<Memory>,
    ) -> Self {
        TcpTransport {
            reader: FramedRead::with_capacity(
                ReadAhead::new(read),
                ConnectionCodec {
                    codec: StompCodec::with_decoder(super::connection_decoder(limits)),
                    partial: PartialFrame::new(memory),
                },
                READ_BUFFER,
            ),
            writer: write,
            version: Version::V1_2,
            buf: BytesMut::new(),
        }
    }
}

impl<R, W> Transport for TcpTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send,
{
    async fn next(&mut self) -> Option<Result<Decoded, ReadError>> {
        let item = self.reader.next().await?;
        // A buffer grown for one large frame is given back once that frame
        // is out, rather than kept for the connection's life.
        let buffer = self.reader.read_buffer_mut();
        if buffer.is_empty() && buffer.capacity() > KEEP_READ_BUFFER {
            *buffer = BytesMut::with_capacity(READ_BUFFER);
        }
        match item {
            Ok(item) => Some(Ok(item)),
            Err(CodecError::Decode(e)) => Some(Err(ReadError::Decode(e))),
            Err(CodecError::Io(e)) => Some(Err(ReadError::Io(e))),
            Err(CodecError::Encode(e)) => Some(Err(ReadError::Io(io::Error::other(e)))),
        }
    }

    async fn write(&mut self, batch: &[Outgoing]) -> io::Result<()> {
        self.buf.clear();
        for item in batch {
            if let Err(e) = item.encode(self.version, &mut self.buf) {
                tracing::warn!(error = %e, "frame not writable in the session's version; skipped");
            }
        }
        let written = self.writer.write_all(&self.buf).await;
        // Grown for a burst of large messages: given back, not kept.
        if self.buf.capacity() > KEEP_WRITE_BUFFER {
            self.buf = BytesMut::new();
        }
        written?;
        self.writer.flush().await
    }

    fn set_version(&mut self, version: Version) {
        self.version = version;
        self.reader.decoder_mut().codec.set_version(version);
    }

    fn pending(&self) -> &[u8] {
        self.reader.read_buffer()
    }

    fn partial_since(&self) -> Option<tokio::time::Instant> {
        self.reader.decoder().partial.since()
    }

    async fn close(&mut self) {
        let _ = self.writer.shutdown().await;
    }
}

/// The codec, and what it notes about the frame being received.
struct ConnectionCodec {
    codec: StompCodec,
    partial: PartialFrame,
}

impl Decoder for ConnectionCodec {
    type Item = Decoded;
    type Error = CodecError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, CodecError> {
        let item = self.codec.decode(buf)?;
        self.partial.update(buf.len(), item.is_some());
        Ok(item)
    }
}

/// How often a failing `accept` is logged: out of descriptors, it fails
/// every time it is tried.
const ACCEPT_WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// TLS handshakes in progress at once on one listener: a handshake costs
/// memory and CPU before a connection holds a slot, so a flood of them is
/// bounded here, and the connections past it are closed at once.
pub const MAX_HANDSHAKES: usize = 1024;

/// Accepts TCP connections until `cancel`, one session task per connection
/// while `slots` has room, a refusal otherwise; a PROXY header and a TLS
/// handshake, as `edge` says, come first, in the connection's own task.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    listener: TcpListener,
    edge: Edge,
    broker: Arc<Broker>,
    settings: Arc<DriverSettings>,
    limits: stomp_codec::Limits,
    slots: Arc<ConnectionSlots>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    let mut last_warning: Option<tokio::time::Instant> = None;
    let mut failures_since_warning = 0u64;
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(ok) => ok,
            Err(e) => {
                // Usually out of file descriptors: back off instead of
                // spinning, and say so now and then rather than 20 times a second.
                failures_since_warning += 1;
                if last_warning.is_none_or(|at| at.elapsed() >= ACCEPT_WARN_EVERY) {
                    tracing::warn!(
                        error = %e,
                        failures = failures_since_warning,
                        open_connections = slots.open(),
                        "accept failed; retrying"
                    );
                    last_warning = Some(tokio::time::Instant::now());
                    failures_since_warning = 0;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (slots, broker, settings) = (slots.clone(), broker.clone(), settings.clone());
        let cancel = cancel.child_token();
        let proxied = edge.trusted_proxies.contains(&peer.ip());
        if edge.tls.is_none() && !proxied {
            let transport = TcpTransport::new(stream, limits, broker.memory());
            // Spawned as it is, not inside an async block: the block would
            // keep its own copy of every value moved into `serve`.
            tracker.spawn(admission::serve(
                transport,
                peer.into(),
                slots,
                broker,
                settings,
                cancel,
            ));
            continue;
        }
        // A TLS handshake or a PROXY header comes before the session.
        let Ok(permit) = handshakes.clone().try_acquire_owned() else {
            tracing::warn!(%peer, max = MAX_HANDSHAKES, "too many connections in their TLS handshake or PROXY header: connection closed");
            continue;
        };
        let tls = edge.tls.clone();
        tracker.spawn(async move {
            let opened = tokio::select! {
                _ = cancel.cancelled() => return,
                // Boxed: the handshake's state is large, and inline it would
                // stay in the task's allocation for the connection's life.
                opened = Box::pin(open(stream, peer, proxied, tls, settings.connect_timeout)) => opened,
            };
            drop(permit);
            match opened {
                Ok(Opened::Plain(stream, peer)) => {
                    let transport = TcpTransport::new(stream, limits, broker.memory());
                    admission::serve(transport, peer, slots, broker, settings, cancel).await;
                }
                Ok(Opened::Tls(stream, peer)) => {
                    let transport = TlsTransport::tls(unbox(stream), limits, broker.memory());
                    admission::serve(transport, peer, slots, broker, settings, cancel).await;
                }
                Err(e) => tracing::info!(%peer, error = %e, "connection closed before STOMP"),
            }
        });
    }
}

/// What is in front of the STOMP listener: TLS, and proxies whose PROXY
/// headers name their clients.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// TLS for every connection, when this is the TLS listener.
    pub tls: Option<Arc<super::tls::TlsAcceptors>>,
    /// Addresses whose connections may begin with a PROXY header.
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
}

/// A connection ready for STOMP. The TLS stream is boxed: inline, the
/// task's future would have room for it for the connection's whole life
/// (0.9 KiB more per idle TLS connection, measured).
enum Opened {
    Plain(TcpStream, super::Peer),
    Tls(Box<TlsStream<TcpStream>>, super::Peer),
}

/// Moves a value out of its box and frees the box now: a box moved out of
/// in place is freed only when its binding goes out of scope, which in the
/// accept task is after the whole session (1.1 KiB per idle TLS
/// connection, seen with massif).
#[allow(clippy::boxed_local)]
fn unbox<T>(boxed: Box<T>) -> T {
    *boxed
}

/// The PROXY header (from a trusted proxy), then the TLS handshake (on the
/// TLS listener), both within `within`.
async fn open(
    mut stream: TcpStream,
    peer: SocketAddr,
    proxied: bool,
    tls: Option<Arc<super::tls::TlsAcceptors>>,
    within: std::time::Duration,
) -> io::Result<Opened> {
    let started = tokio::time::Instant::now();
    let mut client = peer;
    if proxied && let Some(named) = super::proxy_protocol::read_header(&mut stream, within).await? {
        tracing::debug!(%peer, client = %named, "PROXY header: the client's address is the one the proxy names");
        client = named;
    }
    let Some(tls) = tls else {
        return Ok(Opened::Plain(stream, client.into()));
    };
    let transport = crate::metrics::TransportKind::Tls;
    super::tune_accepted(&stream);
    let left = within.saturating_sub(started.elapsed());
    let (stream, certificate_login) = tls.handshake(stream, left).await?;
    Ok(Opened::Tls(
        Box::new(stream),
        super::Peer {
            addr: client,
            certificate_login,
            transport,
        },
    ))
}

/// Whether a peer address is on this machine.
pub fn is_loopback(peer: &SocketAddr) -> bool {
    match peer.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}
