//! Connections that stop talking are found out, and no client or address
//! can hold the broker's connections or memory for itself.

use std::time::Duration;

use integration_tests::{TestServer, Via};
use stomp_codec::Decoded;

#[tokio::test]
async fn a_client_asking_for_one_second_heart_beats_gets_them_early() {
    let server = TestServer::default().await;
    for via in [Via::Tcp, Via::Ws] {
        let mut c = server.raw_client(via).await;
        let connected = c.connect(&[("heart-beat", "0,1000")]).await;
        assert_eq!(connected.headers.get("heart-beat"), Some("1000,10000"));
        // Two heart-beats, each within the second a strict client allows.
        for _ in 0..2 {
            match c.next_within(Duration::from_millis(1000)).await {
                Ok(Some(Decoded::Heartbeat)) => {}
                other => panic!("expected a heart-beat within 1 s over {via:?}, got {other:?}"),
            }
        }
    }
    server.shutdown().await;
}

/// A TCP client connected from a chosen loopback source address.
async fn client_from(source: [u8; 4], server: &TestServer) -> integration_tests::Client {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(std::net::SocketAddr::from((source, 0)))
        .expect("bind a loopback source");
    let stream = socket.connect(server.tcp_addr()).await.expect("connect");
    integration_tests::Client::from_tcp(stream)
}

#[tokio::test]
async fn one_address_cannot_take_every_connection() {
    let server = TestServer::start(|c| {
        c.max_connections = Some(3);
        c.max_connections_per_ip = Some(2);
    })
    .await;
    let mut first = client_from([127, 0, 0, 1], &server).await;
    first.connect(&[]).await;
    let mut second = client_from([127, 0, 0, 1], &server).await;
    second.connect(&[]).await;
    let mut third = client_from([127, 0, 0, 1], &server).await;
    third
        .send(integration_tests::frame(
            stomp_codec::Command::Connect,
            &[("accept-version", "1.2")],
        ))
        .await;
    let error = third.expect_error_and_close().await;
    assert_eq!(
        error.headers.get("message"),
        Some("too many connections from your address")
    );
    // Another address still gets in, and the first address's clients keep working.
    let mut other = client_from([127, 0, 0, 2], &server).await;
    other.connect(&[]).await;
    first.subscribe("s", "/queue/still", "auto", &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_websocket_message_over_the_frame_limit_gets_an_error_before_the_close() {
    let server = TestServer::start(|c| {
        c.max_frame_size = 64 * 1024;
        c.max_body_size = 32 * 1024;
    })
    .await;
    let mut c = server.client(Via::Ws).await;
    let mut huge = b"SEND\ndestination:/queue/big\n\n".to_vec();
    huge.extend(std::iter::repeat_n(b'x', 200 * 1024));
    huge.push(0);
    c.send_raw(&huge).await;
    let error = c.expect_error_and_close().await;
    let message = error.headers.get("message").unwrap_or_default();
    assert!(message.contains("frame too large"), "{message}");
    assert!(message.contains("65536"), "the limit is named: {message}");
    // Everyone else carries on.
    let mut other = server.client(Via::Ws).await;
    other.subscribe("s", "/queue/big", "auto", &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_frame_begun_and_not_finished_in_time_closes_the_connection() {
    let server = TestServer::start(|c| c.frame_timeout_ms = 300).await;
    for via in [Via::Tcp, Via::Ws] {
        let mut idle = server.client(via).await;
        let mut slow = server.client(via).await;
        let started = std::time::Instant::now();
        slow.send_raw(b"SEND\ndestination:/queue/slow\ncontent-length:100\n\nonly a part")
            .await;
        let error = slow.expect_error_and_close().await;
        assert_eq!(
            error.headers.get("message"),
            Some("frame not completed in time")
        );
        assert!(started.elapsed() >= Duration::from_millis(300));
        // A connection with nothing half-sent is not affected, however long it idles.
        idle.send_confirmed(
            integration_tests::frame(stomp_codec::Command::Send, &[("destination", "/queue/ok")]),
            "still-here",
        )
        .await;
    }
    server.shutdown().await;
}
