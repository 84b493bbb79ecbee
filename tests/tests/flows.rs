//! Messaging flows, each run over TCP and over WebSocket against the real broker.

use std::collections::HashSet;
use std::time::Duration;

use integration_tests::{Client, TestServer, Via, body, frame};
use stomp_codec::Command;

macro_rules! over_both {
    ($($name:ident),* $(,)?) => {
        mod tcp {
            $( #[tokio::test] async fn $name() { super::$name(integration_tests::Via::Tcp).await } )*
        }
        mod websocket {
            $( #[tokio::test] async fn $name() { super::$name(integration_tests::Via::Ws).await } )*
        }
    };
}

over_both!(
    queue_competing_consumers,
    topic_fan_out,
    auto_ack,
    client_ack_is_cumulative,
    client_individual_ack_and_redelivery_on_disconnect,
    nack_redelivers,
    transactions,
    receipts_and_user_headers,
    disconnect_receipt_then_close,
    heart_beats_from_server,
    silent_client_is_disconnected,
    heart_beating_client_stays_connected,
);

async fn queue_competing_consumers(via: Via) {
    let server = TestServer::default().await;
    let mut a = server.client(via).await;
    let mut b = server.client(via).await;
    a.subscribe("a", "/queue/work", "client-individual", &[])
        .await;
    b.subscribe("b", "/queue/work", "client-individual", &[])
        .await;
    let mut producer = server.client(via).await;
    let total = 200;
    for i in 0..total {
        producer.publish("/queue/work", &i.to_string()).await;
    }
    producer
        .send_confirmed(
            frame(Command::Send, &[("destination", "/queue/work")]).body("end"),
            "done",
        )
        .await;

    let mut seen = Vec::new();
    let mut per_consumer = [0usize; 2];
    while seen.len() < total + 1 {
        for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
            if let Ok(Some(stomp_codec::Decoded::Frame(f))) =
                c.next_within(Duration::from_millis(50)).await
            {
                assert_eq!(f.command, Command::Message);
                c.send(frame(
                    Command::Ack,
                    &[("id", f.headers.get("ack").unwrap())],
                ))
                .await;
                per_consumer[i] += 1;
                seen.push(body(&f));
            }
        }
    }
    let unique: HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), total + 1, "each message exactly once");
    assert!(
        per_consumer[0] > 0 && per_consumer[1] > 0,
        "both consumers got work: {per_consumer:?}"
    );
    a.expect_nothing(Duration::from_millis(200)).await;
    b.expect_nothing(Duration::from_millis(50)).await;
    server.shutdown().await;
}

async fn topic_fan_out(via: Via) {
    let server = TestServer::default().await;
    let mut subscribers = Vec::new();
    for i in 0..3 {
        let mut c = server.client(via).await;
        c.subscribe(&format!("s{i}"), "/topic/news", "auto", &[])
            .await;
        subscribers.push(c);
    }
    let mut publisher = server.client(via).await;
    for i in 0..50 {
        publisher.publish("/topic/news", &format!("m{i}")).await;
    }
    for c in &mut subscribers {
        let got: Vec<String> = c.messages(50).await.iter().map(body).collect();
        let expected: Vec<String> = (0..50).map(|i| format!("m{i}")).collect();
        assert_eq!(
            got, expected,
            "every subscriber gets every message, in order"
        );
    }
    server.shutdown().await;
}

async fn auto_ack(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("0", "/queue/auto", "auto", &[]).await;
    let mut p = server.client(via).await;
    p.publish("/queue/auto", "x").await;
    let m = c.recv().await;
    assert_eq!(m.headers.get("ack"), None, "auto mode needs no ACK");
    drop(c);
    // Auto-acked: nothing comes back after the consumer leaves.
    let mut d = server.client(via).await;
    d.subscribe("0", "/queue/auto", "auto", &[]).await;
    d.expect_nothing(Duration::from_millis(300)).await;
    server.shutdown().await;
}

async fn client_ack_is_cumulative(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("0", "/queue/cumulative", "client", &[]).await;
    let mut p = server.client(via).await;
    for i in 1..=5 {
        p.publish("/queue/cumulative", &i.to_string()).await;
    }
    let got = c.messages(5).await;
    // ACK of the third covers the first three.
    c.send_confirmed(
        frame(Command::Ack, &[("id", got[2].headers.get("ack").unwrap())]),
        "acked",
    )
    .await;
    c.send(frame(Command::Disconnect, &[])).await;
    c.expect_closed().await;
    let mut d = server.client(via).await;
    d.subscribe("0", "/queue/cumulative", "client", &[]).await;
    let again = d.messages(2).await;
    assert_eq!(again.iter().map(body).collect::<Vec<_>>(), ["4", "5"]);
    assert!(
        again
            .iter()
            .all(|m| m.headers.get("redelivered") == Some("true"))
    );
    d.expect_nothing(Duration::from_millis(200)).await;
    server.shutdown().await;
}

async fn client_individual_ack_and_redelivery_on_disconnect(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("0", "/queue/individual", "client-individual", &[])
        .await;
    let mut p = server.client(via).await;
    for i in 1..=3 {
        p.publish("/queue/individual", &i.to_string()).await;
    }
    let got = c.messages(3).await;
    c.send(frame(
        Command::Ack,
        &[("id", got[0].headers.get("ack").unwrap())],
    ))
    .await;
    c.send_confirmed(
        frame(Command::Ack, &[("id", got[2].headers.get("ack").unwrap())]),
        "r",
    )
    .await;
    // The connection dies without DISCONNECT: "2" goes back to the queue.
    drop(c);
    let mut d = server.client(via).await;
    d.subscribe("0", "/queue/individual", "client-individual", &[])
        .await;
    let again = d.recv().await;
    assert_eq!(body(&again), "2");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    server.shutdown().await;
}

async fn nack_redelivers(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("0", "/queue/nack", "client-individual", &[])
        .await;
    let mut p = server.client(via).await;
    p.publish("/queue/nack", "retry me").await;
    let first = c.recv().await;
    c.send(frame(
        Command::Nack,
        &[("id", first.headers.get("ack").unwrap())],
    ))
    .await;
    let second = c.recv().await;
    assert_eq!(body(&second), "retry me");
    assert_eq!(second.headers.get("redelivered"), Some("true"));
    assert_eq!(
        second.headers.get("message-id"),
        first.headers.get("message-id")
    );
    server.shutdown().await;
}

async fn transactions(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("0", "/queue/tx", "auto", &[]).await;
    let mut p = server.client(via).await;
    p.send(frame(Command::Begin, &[("transaction", "t1")]))
        .await;
    for text in ["a", "b"] {
        p.send(
            frame(
                Command::Send,
                &[("destination", "/queue/tx"), ("transaction", "t1")],
            )
            .body(text),
        )
        .await;
    }
    p.send(frame(Command::Begin, &[("transaction", "t2")]))
        .await;
    p.send(
        frame(
            Command::Send,
            &[("destination", "/queue/tx"), ("transaction", "t2")],
        )
        .body("aborted"),
    )
    .await;
    p.send_confirmed(frame(Command::Abort, &[("transaction", "t2")]), "aborted")
        .await;
    c.expect_nothing(Duration::from_millis(200)).await;
    p.send_confirmed(
        frame(Command::Commit, &[("transaction", "t1")]),
        "committed",
    )
    .await;
    let got = c.messages(2).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["a", "b"]);
    c.expect_nothing(Duration::from_millis(200)).await;
    server.shutdown().await;
}

async fn receipts_and_user_headers(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.subscribe("room", "/topic/headers", "auto", &[]).await;
    let mut p = server.client(via).await;
    p.send_confirmed(
        frame(
            Command::Send,
            &[
                ("destination", "/topic/headers"),
                ("content-type", "text/plain;charset=utf-8"),
                ("x-nick", "ana: the \"first\""),
                ("x-empty", ""),
            ],
        )
        .body("héllo"),
        "sent-1",
    )
    .await;
    let m = c.recv().await;
    assert_eq!(m.headers.get("destination"), Some("/topic/headers"));
    assert_eq!(m.headers.get("subscription"), Some("room"));
    assert!(m.headers.get("message-id").is_some());
    assert_eq!(
        m.headers.get("content-type"),
        Some("text/plain;charset=utf-8")
    );
    assert_eq!(m.headers.get("content-length"), Some("6"));
    assert_eq!(m.headers.get("x-nick"), Some("ana: the \"first\""));
    assert_eq!(m.headers.get("x-empty"), Some(""));
    assert_eq!(body(&m), "héllo");
    server.shutdown().await;
}

async fn disconnect_receipt_then_close(via: Via) {
    let server = TestServer::default().await;
    let mut c = server.client(via).await;
    c.send(frame(Command::Disconnect, &[("receipt", "bye")]))
        .await;
    let r = c.recv().await;
    assert_eq!(
        (r.command, r.headers.get("receipt-id")),
        (Command::Receipt, Some("bye"))
    );
    c.expect_closed().await;
    server.shutdown().await;
}

async fn heart_beats_from_server(via: Via) {
    let server = TestServer::start(|c| {
        c.heart_beat = "100,0".into();
        c.min_heart_beat_ms = 50;
    })
    .await;
    let mut c = server.raw_client(via).await;
    let connected = c.connect(&[("heart-beat", "0,100")]).await;
    assert_eq!(connected.headers.get("heart-beat"), Some("100,0"));
    // About 10 expected in a second; at least 3 leaves room for a loaded machine.
    c.expect_nothing(Duration::from_millis(1000)).await;
    assert!(c.heartbeats >= 3, "got {} heart-beats", c.heartbeats);
    server.shutdown().await;
}

async fn silent_client_is_disconnected(via: Via) {
    let server = TestServer::start(|c| {
        c.heart_beat = "0,100".into();
        c.min_heart_beat_ms = 50;
    })
    .await;
    let mut c = server.raw_client(via).await;
    c.connect(&[("heart-beat", "100,0")]).await;
    let error = c.expect_error_and_close().await;
    assert_eq!(error.headers.get("message"), Some("heart-beat timeout"));
    // The broker is fine.
    let mut fresh = server.client(via).await;
    fresh.subscribe("0", "/queue/after", "auto", &[]).await;
    server.shutdown().await;
}

async fn heart_beating_client_stays_connected(via: Via) {
    // A generous window (1 s) against a beat every 100 ms, so a loaded machine does not flake.
    let server = TestServer::start(|c| {
        c.heart_beat = "0,500".into();
        c.min_heart_beat_ms = 50;
    })
    .await;
    let mut c = server.raw_client(via).await;
    c.connect(&[("heart-beat", "500,0")]).await;
    for _ in 0..15 {
        c.send_raw(b"\r\n").await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.subscribe("0", "/queue/alive", "auto", &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn tcp_and_websocket_clients_share_destinations() {
    let server = TestServer::default().await;
    let mut browser = Client::connected_ws(&server.ws_url()).await;
    let mut script = Client::connected_tcp(server.tcp_addr()).await;
    browser.subscribe("b", "/topic/mixed", "auto", &[]).await;
    script.subscribe("s", "/topic/mixed", "auto", &[]).await;
    script.publish("/topic/mixed", "from tcp").await;
    browser.publish("/topic/mixed", "from ws").await;
    for c in [&mut browser, &mut script] {
        let got: HashSet<String> = c.messages(2).await.iter().map(body).collect();
        assert_eq!(
            got,
            HashSet::from(["from tcp".to_string(), "from ws".to_string()])
        );
    }
    server.shutdown().await;
}
