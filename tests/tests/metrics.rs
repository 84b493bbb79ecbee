//! `/metrics`: parses as the Prometheus text format, and its counters and
//! gauges follow the traffic.

use integration_tests::{TestServer, Via, frame, http_get};
use stomp_codec::Command;

/// Scrapes `/metrics` and parses it.
async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let response = http_get(server.http_addr(), "/metrics").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("openmetrics-text"), "{head}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    prometheus_parse::Scrape::parse(lines).expect("the Prometheus text format")
}

/// The value of the sample `name` with these labels (0 when absent).
fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .find(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map_or(0.0, |s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
}

#[tokio::test]
async fn metrics_parse_and_follow_the_traffic() {
    let server = TestServer::default().await;
    let before = scrape(&server).await;
    assert_eq!(
        value(&before, "stompbox_connections", &[("transport", "tcp")]),
        0.0
    );

    let mut producer = server.client(Via::Tcp).await;
    let mut consumer = server.client(Via::Ws).await;
    consumer
        .subscribe("q", "/queue/metered", "client-individual", &[])
        .await;
    for i in 0..10 {
        producer
            .send_confirmed(
                frame(Command::Send, &[("destination", "/queue/metered")]).body(format!("m{i}")),
                &format!("r{i}"),
            )
            .await;
    }
    let messages = consumer.messages(10).await;
    // Seven acknowledged, three handed back.
    for m in &messages[..7] {
        let ack = m.headers.get("ack").expect("ack id");
        consumer.send(frame(Command::Ack, &[("id", ack)])).await;
    }
    for m in &messages[7..] {
        let ack = m.headers.get("ack").expect("ack id");
        consumer
            .send(frame(Command::Nack, &[("id", ack), ("requeue", "false")]))
            .await;
    }
    consumer
        .send_confirmed(frame(Command::Unsubscribe, &[("id", "q")]), "done")
        .await;
    producer.subscribe("t", "/topic/metered", "auto", &[]).await;
    producer
        .send_confirmed(
            frame(Command::Send, &[("destination", "/topic/metered")]).body("t"),
            "t1",
        )
        .await;

    let after = scrape(&server).await;
    let q = [("destination", "/queue/metered")];
    assert_eq!(
        value(&after, "stompbox_connections", &[("transport", "tcp")]),
        1.0
    );
    assert_eq!(
        value(&after, "stompbox_connections", &[("transport", "ws")]),
        1.0
    );
    assert_eq!(
        value(&after, "stompbox_queue_messages_published_total", &q),
        10.0
    );
    assert_eq!(
        value(&after, "stompbox_queue_messages_delivered_total", &q),
        10.0
    );
    assert_eq!(
        value(&after, "stompbox_queue_messages_acknowledged_total", &q),
        7.0
    );
    assert_eq!(
        value(
            &after,
            "stompbox_queue_messages_dead_total",
            &[("destination", "/queue/metered"), ("reason", "rejected")]
        ),
        3.0
    );
    assert_eq!(value(&after, "stompbox_queue_messages", &q), 0.0);
    let t = [("destination", "/topic/metered")];
    assert_eq!(
        value(&after, "stompbox_topic_messages_published_total", &t),
        1.0
    );
    assert_eq!(
        value(&after, "stompbox_topic_messages_delivered_total", &t),
        1.0
    );
    // Frames counted once each connection's outbox drained after them.
    assert!(
        value(
            &after,
            "stompbox_frames_received_total",
            &[("command", "SEND")]
        ) >= 11.0
    );
    assert!(
        value(
            &after,
            "stompbox_frames_sent_total",
            &[("command", "RECEIPT")]
        ) >= 11.0
    );
    assert!(
        value(
            &after,
            "stompbox_frames_received_total",
            &[("command", "ACK")]
        ) >= 7.0
    );
    assert!(
        value(
            &after,
            "stompbox_connections_opened_total",
            &[("transport", "ws")]
        ) >= 1.0
    );

    drop(consumer);
    // A closed connection leaves the gauge (the broker notices the close first).
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT;
    loop {
        let now = scrape(&server).await;
        if value(&now, "stompbox_connections", &[("transport", "ws")]) == 0.0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ws connection is still counted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn refused_logins_are_counted() {
    let server = TestServer::start(|c| {
        c.users.insert(
            "ana".into(),
            stompbox::security::passwords::hash_for_tests("secret"),
        );
        c.anonymous = stompbox::session::AnonymousAccess::Never;
    })
    .await;
    for _ in 0..2 {
        let mut c = server.raw_client(Via::Tcp).await;
        c.send(frame(Command::Connect, &[("accept-version", "1.2")]))
            .await;
        c.expect_error_and_close().await;
    }
    let scraped = scrape(&server).await;
    assert_eq!(value(&scraped, "stompbox_logins_failed_total", &[]), 2.0);
    assert_eq!(
        value(&scraped, "stompbox_connections", &[("transport", "tcp")]),
        0.0
    );
    server.shutdown().await;
}
