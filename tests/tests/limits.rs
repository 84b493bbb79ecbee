//! The connection limit: one connection too many is told why and closed,
//! everyone already connected goes on as before, and a freed slot is
//! usable again.

use std::time::Duration;

use integration_tests::{Client, TestServer, Via, WAIT, body, frame, http_get};
use stomp_codec::Command;

async fn health(server: &TestServer) -> String {
    http_get(server.http_addr(), "/health").await
}

/// Connects over `via` until CONNECTED, for at most [`WAIT`]: a slot is
/// returned when the session that held it has finished closing.
async fn connect_when_room(server: &TestServer, via: Via) -> Client {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let mut client = server.raw_client(via).await;
        client
            .send(frame(Command::Connect, &[("accept-version", "1.2")]))
            .await;
        let reply = client.recv().await;
        if reply.command == Command::Connected {
            return client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room again within {WAIT:?}: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn one_connection_too_many(refused_via: Via) {
    let server = TestServer::start(|c| {
        c.max_connections = Some(2);
        c.max_connections_per_ip = Some(2);
    })
    .await;
    let mut producer = server.client(Via::Tcp).await;
    let mut consumer = server.client(Via::Ws).await;
    consumer.subscribe("1", "/queue/limits", "auto", &[]).await;
    assert!(
        {
            let h = health(&server).await;
            h.contains("\"connections\":2,") && h.contains("\"max_connections\":2,")
        },
        "health reports the connections held and the limit"
    );

    // The third sends its CONNECT like any client, and reads why it is refused.
    let mut refused = server.raw_client(refused_via).await;
    refused
        .send(frame(Command::Connect, &[("accept-version", "1.2")]))
        .await;
    let error = refused.expect_error_and_close().await;
    assert_eq!(
        error.headers.get("message"),
        Some("server full, too many connections")
    );
    assert!(
        body(&error).contains("at most 2 connections"),
        "{}",
        body(&error)
    );

    // Those already connected are unaffected.
    producer.publish("/queue/limits", "still here").await;
    assert_eq!(body(&consumer.messages(1).await[0]), "still here");

    // Once one leaves, its slot serves a newcomer.
    drop(producer);
    let mut newcomer = connect_when_room(&server, refused_via).await;
    newcomer.publish("/queue/limits", "from the newcomer").await;
    assert_eq!(body(&consumer.messages(1).await[0]), "from the newcomer");
    server.shutdown().await;
}

#[tokio::test]
async fn one_tcp_connection_too_many_is_refused_with_an_error() {
    one_connection_too_many(Via::Tcp).await;
}

#[tokio::test]
async fn one_websocket_connection_too_many_is_refused_with_an_error() {
    one_connection_too_many(Via::Ws).await;
}

#[tokio::test]
async fn refused_connections_do_not_count_against_the_limit() {
    let server = TestServer::start(|c| {
        c.max_connections = Some(1);
        c.max_connections_per_ip = Some(1);
    })
    .await;
    let mut holder = server.client(Via::Tcp).await;
    for _ in 0..20 {
        let mut refused = server.raw_client(Via::Tcp).await;
        let error = refused.expect_error_and_close().await;
        assert_eq!(
            error.headers.get("message"),
            Some("server full, too many connections")
        );
    }
    assert!({
        let h = health(&server).await;
        h.contains("\"connections\":1,") && h.contains("\"max_connections\":1,")
    });
    holder
        .send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    drop(holder);
    connect_when_room(&server, Via::Tcp).await;
    server.shutdown().await;
}
