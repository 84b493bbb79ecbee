//! STOMP over WebSocket: each incoming message's bytes feed one decoder, so
//! a message may hold one frame, several, part of one, or a bare heart-beat
//! EOL; each outgoing frame is exactly one message.

use std::io;
use std::sync::Arc;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use stomp_codec::{DecodeError, Decoded, FrameDecoder, Limits, Version};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};

use super::PartialFrame;
use super::read_ahead::ReadAhead;

use crate::broker::Memory;
use crate::session::driver::{Outgoing, ReadError, Transport};

/// The subprotocols offered, most recent first.
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// Bytes tungstenite reads at a time, and allocates for each connection:
/// small, because [`ReadAhead`] below it reads in large chunks.
const READ_BUFFER: usize = 1024;
/// Bytes gathered before a WebSocket write goes out without a flush.
const WRITE_BUFFER: usize = 16 * 1024;

/// A read or encode buffer larger than this is released once empty.
const KEEP_BUFFER: usize = 64 * 1024;

/// The socket under a WebSocket connection.
type Socket = WebSocketStream<ReadAhead<TokioIo<Upgraded>>>;

/// One WebSocket connection.
pub struct WsTransport {
    socket: Socket,
    decoder: FrameDecoder,
    partial: PartialFrame,
    buf: BytesMut,
    encoded: BytesMut,
    closed: bool,
}

impl WsTransport {
    /// Speaks WebSocket on a connection that has completed the handshake.
    pub async fn new(upgraded: Upgraded, limits: Limits, memory: &Arc<Memory>) -> WsTransport {
        // The decoder enforces the frame limit; the WebSocket layer only
        // needs a ceiling so one message cannot exceed it by much.
        let max = limits.max_frame_size.saturating_add(1024);
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .write_buffer_size(WRITE_BUFFER)
            .max_message_size(Some(max))
            .max_frame_size(Some(max));
        let io = ReadAhead::new(TokioIo::new(upgraded));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        WsTransport {
            socket,
            decoder: super::connection_decoder(limits),
            partial: PartialFrame::new(memory),
            buf: BytesMut::new(),
            encoded: BytesMut::new(),
            closed: false,
        }
    }
}

impl Transport for WsTransport {
    async fn next(&mut self) -> Option<Result<Decoded, ReadError>> {
        loop {
            let decoded = self.decoder.decode(&mut self.buf);
            self.partial
                .update(self.buf.len(), matches!(decoded, Ok(Some(_))));
            match decoded {
                Ok(Some(item)) => {
                    if self.buf.is_empty() && self.buf.capacity() > KEEP_BUFFER {
                        self.buf = BytesMut::new();
                    }
                    return Some(Ok(item));
                }
                Ok(None) => {}
                Err(e) => return Some(Err(ReadError::Decode(e))),
            }
            if self.closed {
                return None;
            }
            // The only await: dropping this future between messages loses nothing.
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(Message::Text(text))) => self.buf.extend_from_slice(text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => self.buf.extend_from_slice(&bytes),
                // Pings are answered by tungstenite; raw frames are only ever written.
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                // One message over the ceiling: the client is told in a
                // STOMP ERROR naming the limit, as over TCP, not by a bare close.
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. }))) => {
                    self.closed = true;
                    return Some(Err(ReadError::Decode(DecodeError::FrameTooLarge {
                        limit: self.decoder.limits().max_frame_size,
                        size,
                    })));
                }
                Some(Err(e)) => return Some(Err(ReadError::Io(io::Error::other(e)))),
            }
        }
    }

    async fn write(&mut self, batch: &[Outgoing]) -> io::Result<()> {
        for item in batch {
            let message = match item {
                Outgoing::Heartbeat => Message::Text(Utf8Bytes::from_static("\n")),
                frame => {
                    self.encoded.clear();
                    if let Err(e) = frame.encode(self.decoder.version(), &mut self.encoded) {
                        tracing::warn!(error = %e, "frame not writable in the session's version; skipped");
                        continue;
                    }
                    let bytes = self.encoded.split().freeze();
                    // Grown for a large message: given back rather than kept.
                    if self.encoded.capacity() > KEEP_BUFFER {
                        self.encoded = BytesMut::new();
                    }
                    // Text when the whole frame is UTF-8 (what browsers
                    // expect for chat), binary otherwise so no byte is altered.
                    match Utf8Bytes::try_from(bytes.clone()) {
                        Ok(text) => Message::Text(text),
                        Err(_) => Message::Binary(bytes),
                    }
                }
            };
            self.socket.feed(message).await.map_err(io::Error::other)?;
        }
        self.socket.flush().await.map_err(io::Error::other)
    }

    fn set_version(&mut self, version: Version) {
        self.decoder.set_version(version);
    }

    fn pending(&self) -> &[u8] {
        &self.buf
    }

    fn partial_since(&self) -> Option<tokio::time::Instant> {
        self.partial.since()
    }

    async fn close(&mut self) {
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: Utf8Bytes::from_static("bye"),
            })))
            .await;
    }
}
