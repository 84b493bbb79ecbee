//! The HTTP listeners as axum sees them: plain, and TLS with each
//! handshake in a task of its own (one slow client's handshake must not
//! hold up everyone else's accept). Both name the client as a [`Peer`],
//! which carries a client certificate's login to the WebSocket sessions.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::serve::{IncomingStream, Listener};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;

use super::Peer;
use super::tls::TlsAcceptors;
use crate::metrics::TransportKind;

/// Waits a little after a failed accept (out of descriptors, usually)
/// rather than spin.
async fn accept_failed(e: io::Error) {
    tracing::warn!(error = %e, "HTTP accept failed; retrying");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// Plain HTTP, sockets tuned as the STOMP listener's are.
#[derive(Debug)]
pub struct PlainListener(pub TcpListener);

impl Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (TcpStream, Peer) {
        loop {
            match self.0.accept().await {
                Ok((stream, addr)) => {
                    // WebSocket frames are small and latency-bound, and a
                    // WebSocket peer can vanish as silently as a TCP one.
                    super::tune_accepted(&stream);
                    return (stream, Peer::new(addr, TransportKind::Ws));
                }
                Err(e) => accept_failed(e).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        self.0.local_addr().map(|a| Peer::new(a, TransportKind::Ws))
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// HTTPS: connections whose handshake is done, from a task that accepts
/// and hands each new socket to a handshake task of its own.
#[derive(Debug)]
pub struct TlsListener {
    done: mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    /// Starts accepting on `listener` until `cancel`.
    pub fn start(
        listener: TcpListener,
        tls: Arc<TlsAcceptors>,
        handshake_timeout: Duration,
        cancel: CancellationToken,
    ) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        // Finished handshakes wait here for axum; a few are plenty.
        let (tx, done) = mpsc::channel(64);
        let handshakes = Arc::new(tokio::sync::Semaphore::new(super::tcp::MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = cancel.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let (stream, addr) = match accepted {
                    Ok(ok) => ok,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                };
                let Ok(permit) = handshakes.clone().try_acquire_owned() else {
                    tracing::warn!(peer = %addr, "too many TLS handshakes in progress: connection closed");
                    continue;
                };
                super::tune_accepted(&stream);
                let (tls, tx, cancel) = (tls.clone(), tx.clone(), cancel.clone());
                tokio::spawn(async move {
                    let handshake = tokio::select! {
                        _ = cancel.cancelled() => return,
                        done = tls.handshake(stream, handshake_timeout) => done,
                    };
                    drop(permit);
                    match handshake {
                        Ok((stream, certificate_login)) => {
                            let peer = Peer {
                                addr,
                                certificate_login,
                                transport: TransportKind::Wss,
                            };
                            let _ = tx.send((stream, peer)).await;
                        }
                        Err(e) => tracing::info!(peer = %addr, error = %e, "TLS handshake failed"),
                    }
                });
            }
        });
        Ok(TlsListener { done, local })
    }
}

impl Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (TlsStream<TcpStream>, Peer) {
        match self.done.recv().await {
            Some(next) => next,
            // Stopped accepting (shutdown): axum's graceful shutdown ends the server.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Peer> {
        Ok(Peer::new(self.local, TransportKind::Wss))
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}
