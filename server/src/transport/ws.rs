//! STOMP over WebSocket: each incoming message's bytes feed one decoder, so
//! a message may hold one frame, several, part of one, or a bare heart-beat
//! EOL; each outgoing frame is exactly one message.

use std::io;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::BytesMut;
use futures_util::SinkExt;
use stomp_codec::{Decoded, FrameDecoder, Limits, Version};

use crate::session::driver::{Outgoing, ReadError, Transport};

/// The subprotocols offered, most recent first.
pub const SUBPROTOCOLS: [&str; 3] = ["v12.stomp", "v11.stomp", "v10.stomp"];

/// One WebSocket connection.
pub struct WsTransport {
    socket: WebSocket,
    decoder: FrameDecoder,
    buf: BytesMut,
    encoded: BytesMut,
    closed: bool,
}

impl WsTransport {
    /// Wraps an upgraded socket.
    pub fn new(socket: WebSocket, limits: Limits) -> WsTransport {
        WsTransport {
            socket,
            decoder: FrameDecoder::with_limits(limits),
            buf: BytesMut::new(),
            encoded: BytesMut::new(),
            closed: false,
        }
    }
}

impl Transport for WsTransport {
    async fn next(&mut self) -> Option<Result<Decoded, ReadError>> {
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(item)) => return Some(Ok(item)),
                Ok(None) => {}
                Err(e) => return Some(Err(ReadError::Decode(e))),
            }
            if self.closed {
                return None;
            }
            // The only await: dropping this future between messages loses nothing.
            match self.socket.recv().await {
                None | Some(Ok(Message::Close(_))) => {
                    self.closed = true;
                    return None;
                }
                Some(Ok(Message::Text(text))) => self.buf.extend_from_slice(text.as_bytes()),
                Some(Ok(Message::Binary(bytes))) => self.buf.extend_from_slice(&bytes),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
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

    fn pending_line(&self) -> Option<String> {
        super::first_line(&self.buf)
    }

    async fn close(&mut self) {
        let _ = self
            .socket
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: Utf8Bytes::from_static("bye"),
            })))
            .await;
    }
}
