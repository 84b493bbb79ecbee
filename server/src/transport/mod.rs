//! Thin adapters between sockets and [`run_session`](crate::session::driver::run_session).

pub mod admission;
pub mod http;
pub mod read_ahead;
pub mod tcp;
pub mod web;
pub mod ws;
pub mod ws_handshake;

/// The first line of unparsed input, shortened, for quoting in an ERROR body.
fn first_line(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return None;
    }
    let end = memchr_lf(buf).unwrap_or(buf.len()).min(120);
    let line = String::from_utf8_lossy(&buf[..end]);
    Some(line.trim_end_matches('\r').to_string())
}

fn memchr_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
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
