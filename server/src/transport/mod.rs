//! Thin adapters between sockets and [`run_session`](crate::session::driver::run_session).

pub mod admission;
pub mod http;
pub mod listener;
pub mod origin;
pub mod proxy_protocol;
pub mod read_ahead;
pub mod tcp;
pub mod tls;
pub mod web;
pub mod ws;
pub mod ws_handshake;

/// Who is at the other end of a connection, as its transport knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// The client's address (behind a trusted proxy, the one it forwarded).
    pub addr: std::net::SocketAddr,
    /// The login a verified client certificate gives, with `tls.cert_login`.
    pub certificate_login: Option<String>,
    /// TCP, TLS, WebSocket or secure WebSocket.
    pub transport: crate::metrics::TransportKind,
}

impl Peer {
    /// A peer at `addr` over `transport`, without a certificate login.
    pub fn new(addr: std::net::SocketAddr, transport: crate::metrics::TransportKind) -> Peer {
        Peer {
            addr,
            certificate_login: None,
            transport,
        }
    }
}

impl From<std::net::SocketAddr> for Peer {
    fn from(addr: std::net::SocketAddr) -> Peer {
        Peer::new(addr, crate::metrics::TransportKind::Tcp)
    }
}

/// The decoder for one client connection. Frames up to 64 KiB are copied
/// out of the read buffer: a queued message then holds its own few bytes,
/// not a read-buffer block (sharing made a backlog of 1 KiB messages cost
/// 293 MB of RSS where copying costs 189 MB, `stompbox bench memory`).
pub fn connection_decoder(limits: stomp_codec::Limits) -> stomp_codec::FrameDecoder {
    stomp_codec::FrameDecoder::with_limits(limits).copy_frames_up_to(64 * 1024)
}

/// The frame a connection is in the middle of receiving: since when (for
/// `frame_timeout_ms`, so a client cannot hold a connection and its buffer
/// by sending one byte a minute), and its bytes in the broker's memory.
#[derive(Debug)]
pub struct PartialFrame {
    since: Option<tokio::time::Instant>,
    charge: crate::broker::Charge,
}

/// Partial frames up to this size are not worth accounting (two atomic
/// operations per frame): connections × this is bounded anyway.
const ACCOUNT_PARTIAL_ABOVE: usize = 16 * 1024;

impl PartialFrame {
    /// Nothing received yet.
    pub fn new(memory: &std::sync::Arc<crate::broker::Memory>) -> PartialFrame {
        PartialFrame {
            since: None,
            charge: memory.charge(0),
        }
    }

    /// After a decode attempt: `pending` bytes wait in the buffer, and
    /// `completed` says whether a frame or heart-beat was just taken out.
    pub fn update(&mut self, pending: usize, completed: bool) {
        if pending == 0 || completed {
            // What is left after a whole frame is the start of the next
            // one, timed from the attempt that finds it incomplete (one
            // clock read per read, not one per frame).
            self.since = None;
        } else if self.since.is_none() {
            self.since = Some(tokio::time::Instant::now());
        }
        self.charge.set(if pending > ACCOUNT_PARTIAL_ABOVE {
            pending
        } else {
            0
        });
    }

    /// When the frame being received began, if one is.
    pub fn since(&self) -> Option<tokio::time::Instant> {
        self.since
    }
}

/// Sets up an accepted socket: no Nagle delay (chat latency matters more
/// than packet count), and TCP keepalive, so a peer that vanished without
/// a FIN (a pulled cable, a sleeping laptop) on a connection that agreed
/// no heart-beats is found out in about two minutes instead of held forever.
pub fn tune_accepted(stream: &tokio::net::TcpStream) {
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
    }
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let keepalive = keepalive.with_retries(KEEPALIVE_PROBES);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(error = %e, "cannot set TCP keepalive");
    }
}

/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: std::time::Duration = std::time::Duration::from_secs(60);
/// Time between unanswered probes.
pub const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);
/// Unanswered probes before the kernel drops the connection.
pub const KEEPALIVE_PROBES: u32 = 6;

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_partial_frame_is_timed_from_its_first_byte_and_counted_when_large() {
        let memory = crate::broker::Memory::unlimited();
        let mut partial = PartialFrame::new(&memory);
        partial.update(0, false);
        assert_eq!(partial.since(), None);
        partial.update(10, false);
        let began = partial.since().expect("a frame began");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        partial.update(20, false);
        assert_eq!(
            partial.since(),
            Some(began),
            "the same frame, still arriving"
        );
        partial.update(5, true);
        assert_eq!(
            partial.since(),
            None,
            "what follows a whole frame may be whole too"
        );
        partial.update(5, false);
        assert!(
            partial.since() > Some(began),
            "the next frame, found incomplete, is timed from now"
        );
        partial.update(1 << 20, false);
        assert_eq!(memory.used(), 1 << 20, "a large partial frame is counted");
        partial.update(0, true);
        assert_eq!(memory.used(), 0);
        assert_eq!(partial.since(), None);
    }

    #[tokio::test]
    async fn accepted_sockets_get_keepalive_and_nodelay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = listener.accept().await.expect("accept");
        tune_accepted(&accepted);
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().expect("keepalive"));
        assert_eq!(sock.tcp_keepalive_time().expect("idle"), KEEPALIVE_IDLE);
        assert_eq!(
            sock.tcp_keepalive_interval().expect("interval"),
            KEEPALIVE_INTERVAL
        );
        assert_eq!(
            sock.tcp_keepalive_retries().expect("probes"),
            KEEPALIVE_PROBES
        );
        assert!(accepted.nodelay().expect("nodelay"));
    }
}
