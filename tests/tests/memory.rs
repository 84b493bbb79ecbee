//! Memory is bounded in bytes: above `memory_limit` publishers wait (their
//! sockets are not read), consumers drain, nothing accepted is lost and no
//! connection is dropped.

use std::time::Duration;

use integration_tests::{Client, TestServer, Via, WAIT, frame, http_get};
use stomp_codec::{Command, Decoded};
use stompbox::broker::Destination;
use stompbox::config::ByteSize;

async fn health(server: &TestServer) -> String {
    let response = http_get(server.http_addr(), "/health").await;
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// Polls `/health` until `check` holds, at most [`WAIT`].
async fn health_until(server: &TestServer, check: impl Fn(&str) -> bool) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let h = health(server).await;
        if check(&h) {
            return h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health never got there: {h}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn depth(server: &TestServer, name: &str) -> usize {
    match server.server().broker().destination(name) {
        Ok(Destination::Queue(q)) => q.depth(),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn publishers_wait_above_the_memory_limit_and_nothing_is_lost() {
    const LIMIT: usize = 2 << 20;
    const SIZE: usize = 64 << 10;
    const COUNT: usize = 60;
    let server = TestServer::start(|c| c.memory_limit = ByteSize::Bytes(LIMIT as u64)).await;
    let mut producer = server.client(Via::Tcp).await;
    let body = "x".repeat(SIZE);
    for i in 0..COUNT {
        producer
            .send(
                frame(
                    Command::Send,
                    &[("destination", "/queue/fill"), ("receipt", &i.to_string())],
                )
                .body(body.clone()),
            )
            .await;
    }
    let h = health_until(&server, |h| h.contains("\"memory_alarm\":true")).await;
    assert!(h.contains("publishers blocked"), "{h}");
    // The queue holds what fits under the limit, not all that was sent.
    let held = depth(&server, "/queue/fill");
    assert!(
        held * SIZE <= LIMIT + SIZE,
        "{held} messages of {SIZE} bytes queued"
    );
    assert!(held < COUNT);

    // A consumer on another connection drains; the producer resumes by itself.
    let mut consumer = server.client(Via::Ws).await;
    consumer
        .subscribe("c", "/queue/fill", "client-individual", &[])
        .await;
    let mut bodies = 0;
    while bodies < COUNT {
        let m = consumer.recv().await;
        assert_eq!(m.command, Command::Message);
        assert_eq!(m.body.len(), SIZE);
        let ack = m.headers.get("ack").expect("ack id").to_string();
        consumer.send(frame(Command::Ack, &[("id", &ack)])).await;
        bodies += 1;
    }
    let mut receipts = 0;
    while receipts < COUNT {
        match producer.next().await {
            Some(Decoded::Frame(f)) if f.command == Command::Receipt => receipts += 1,
            Some(Decoded::Heartbeat) => {}
            other => panic!("expected receipts, got {other:?}"),
        }
    }
    let h = health_until(&server, |h| h.contains("\"memory_alarm\":false")).await;
    assert!(h.contains("\"memory_alarms\":"), "{h}");
    // Both connections are still open and working.
    producer
        .send_confirmed(
            frame(Command::Send, &[("destination", "/queue/after")]).body("ok"),
            "after",
        )
        .await;
    consumer.subscribe("d", "/queue/after", "auto", &[]).await;
    assert_eq!(consumer.recv().await.body.as_ref(), b"ok");
    server.shutdown().await;
}

#[tokio::test]
async fn accepted_messages_give_their_memory_back_when_consumed() {
    let server = TestServer::default().await;
    let memory = server.server().broker().memory().clone();
    let mut producer = server.client(Via::Tcp).await;
    let body = "y".repeat(10_000);
    for i in 0..20 {
        producer
            .send_confirmed(
                frame(Command::Send, &[("destination", "/queue/give-back")]).body(body.clone()),
                &i.to_string(),
            )
            .await;
    }
    assert!(memory.used() >= 200_000, "{}", memory.used());
    let mut consumer = Client::connected_tcp(server.tcp_addr()).await;
    consumer
        .subscribe("c", "/queue/give-back", "auto", &[])
        .await;
    consumer.messages(20).await;
    // Auto-acked once written: the charge goes with the last reference.
    consumer
        .send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while memory.used() > 50_000 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} bytes still held",
            memory.used()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn consumers_acks_are_read_during_the_alarm_even_when_split() {
    const SIZE: usize = 64 << 10;
    let server = TestServer::start(|c| {
        c.memory_limit = ByteSize::Bytes(2 << 20);
        c.min_heart_beat_ms = 50;
    })
    .await;
    let mut consumer = server.raw_client(Via::Tcp).await;
    consumer.connect(&[("heart-beat", "0,50")]).await;
    consumer
        .subscribe(
            "c",
            "/queue/acks",
            "client-individual",
            &[("prefetch-count", "1")],
        )
        .await;
    let mut producer = server.client(Via::Tcp).await;
    let body = "a".repeat(SIZE);
    for i in 0..50 {
        producer
            .send(
                frame(
                    Command::Send,
                    &[("destination", "/queue/acks"), ("receipt", &i.to_string())],
                )
                .body(body.clone()),
            )
            .await;
    }
    health_until(&server, |h| h.contains("\"memory_alarm\":true")).await;
    // One ACK at a time, each written in two pieces with a server
    // heart-beat in between (so the broker has turned its loop with half an
    // ACK in its buffer); every one must be read for the next message to
    // come (prefetch 1) and memory to fall.
    for _ in 0..50 {
        let m = consumer.recv().await;
        assert_eq!(m.command, Command::Message);
        let ack = m.headers.get("ack").expect("ack id").to_string();
        consumer.send_raw(b"ACK\nid:").await;
        match consumer.next().await {
            Some(Decoded::Heartbeat) => {}
            other => panic!("expected a heart-beat, got {other:?}"),
        }
        consumer.send_raw(format!("{ack}\n\n\0").as_bytes()).await;
    }
    let h = health_until(&server, |h| h.contains("\"memory_alarm\":false")).await;
    assert!(h.contains("\"status\":\"ok\""), "{h}");
    server.shutdown().await;
}
