//! Delivery guarantees over real sockets against the real broker: ack
//! deadlines, delivery counts, dead-letter queues, TTL, priority, delays
//! and deduplicated SEND, and all of it across a restart for durable
//! queues. Deadlines and delays here are short real times; every wait is
//! for a frame, bounded.

use std::time::{Duration, Instant};

use integration_tests::{TestServer, Via, body, frame};
use stomp_codec::{Command, Frame};
use stompbox::broker::QueuePolicy;

fn send(destination: &str, text: &str, headers: &[(&str, &str)]) -> Frame {
    let mut f = frame(Command::Send, &[("destination", destination)]).body(text.to_string());
    for (n, v) in headers {
        f = f.header(*n, *v);
    }
    f
}

fn ack_id(f: &Frame) -> String {
    f.headers.get("ack").expect("an ack id").to_string()
}

#[tokio::test]
async fn a_worker_that_never_acks_loses_the_message_to_another_after_the_deadline() {
    let server = TestServer::default().await;
    let mut hung = server.client(Via::Tcp).await;
    hung.subscribe(
        "w",
        "/queue/work",
        "client-individual",
        &[("x-ack-timeout", "300"), ("prefetch-count", "1")],
    )
    .await;
    let mut healthy = server.client(Via::Ws).await;
    healthy
        .subscribe("w", "/queue/work", "client-individual", &[])
        .await;
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(send("/queue/work", "job-1", &[]), "r1")
        .await;
    p.send_confirmed(send("/queue/work", "job-2", &[]), "r2")
        .await;
    // Round-robin: one job each.
    let first = hung.messages(1).await.remove(0);
    let other = healthy.messages(1).await.remove(0);
    assert_eq!(first.headers.get("x-delivery-count"), Some("0"));
    let started = Instant::now();
    // The hung worker's job comes to the healthy one after the deadline.
    let taken_over = healthy.messages(1).await.remove(0);
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert_eq!(body(&taken_over), body(&first));
    assert_eq!(taken_over.headers.get("x-delivery-count"), Some("1"));
    assert_eq!(taken_over.headers.get("redelivered"), Some("true"));
    for m in [&other, &taken_over] {
        healthy
            .send_confirmed(frame(Command::Ack, &[("id", &ack_id(m))]), "ok")
            .await;
    }
    // The hung worker's connection is still there; its late ACK is told.
    hung.send(frame(
        Command::Ack,
        &[("id", &ack_id(&first)), ("receipt", "late")],
    ))
    .await;
    let receipt = hung.recv().await;
    assert_eq!(receipt.command, Command::Receipt);
    assert_eq!(receipt.headers.get("x-error"), Some("ack-expired"));
    // Nothing is delivered twice more.
    healthy.expect_nothing(Duration::from_millis(400)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn rejected_and_repeatedly_failing_messages_land_in_the_dead_letter_queue() {
    let server = TestServer::start(|c| {
        c.queues = vec![QueuePolicy {
            pattern: "/queue/flaky".into(),
            max_deliveries: 3,
            ..QueuePolicy::unlimited()
        }];
    })
    .await;
    let mut w = server.client(Via::Tcp).await;
    w.subscribe("w", "/queue/flaky", "client-individual", &[])
        .await;
    w.send_confirmed(send("/queue/flaky", "unparseable", &[("kind", "a")]), "s1")
        .await;
    let m = w.messages(1).await.remove(0);
    w.send_confirmed(
        frame(Command::Nack, &[("id", &ack_id(&m)), ("requeue", "false")]),
        "n1",
    )
    .await;
    w.send_confirmed(send("/queue/flaky", "crashes the worker", &[]), "s2")
        .await;
    for expected in ["0", "1", "2"] {
        let m = w.messages(1).await.remove(0);
        assert_eq!(m.headers.get("x-delivery-count"), Some(expected));
        w.send(frame(Command::Nack, &[("id", &ack_id(&m))])).await;
    }
    let mut dlq = server.client(Via::Ws).await;
    dlq.subscribe("d", "/queue/DLQ.flaky", "auto", &[]).await;
    let dead = dlq.messages(2).await;
    assert_eq!(body(&dead[0]), "unparseable");
    assert_eq!(dead[0].headers.get("x-death-reason"), Some("rejected"));
    assert_eq!(dead[0].headers.get("kind"), Some("a"));
    assert_eq!(body(&dead[1]), "crashes the worker");
    assert_eq!(
        dead[1].headers.get("x-death-reason"),
        Some("max-deliveries")
    );
    for d in &dead {
        assert_eq!(
            d.headers.get("x-original-destination"),
            Some("/queue/flaky")
        );
        assert_eq!(d.headers.get("x-death-count"), Some("1"));
    }
    w.expect_nothing(Duration::from_millis(200)).await;
    let health = integration_tests::http_get(server.http_addr(), "/health").await;
    assert!(health.contains("\"dead_lettered\":2"), "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn expired_messages_go_to_the_dead_letter_queue_without_any_consumer() {
    let server = TestServer::default().await;
    let mut dlq = server.client(Via::Tcp).await;
    dlq.subscribe("d", "/queue/DLQ.offers", "auto", &[]).await;
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(
        send("/queue/offers", "flash sale", &[("expiration", "200")]),
        "r",
    )
    .await;
    p.send_confirmed(send("/queue/offers", "still good", &[]), "r2")
        .await;
    let dead = dlq.messages(1).await.remove(0);
    assert_eq!(body(&dead), "flash sale");
    assert_eq!(dead.headers.get("x-death-reason"), Some("expired"));
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/offers", "auto", &[]).await;
    assert_eq!(body(&c.messages(1).await[0]), "still good");
    c.expect_nothing(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn priority_and_delay_over_the_wire() {
    let server = TestServer::default().await;
    let mut p = server.client(Via::Tcp).await;
    for (text, priority) in [("batch", "0"), ("page-oncall", "9"), ("email", "5")] {
        p.send_confirmed(send("/queue/tasks", text, &[("priority", priority)]), text)
            .await;
    }
    p.send_confirmed(
        send("/queue/tasks", "reminder", &[("x-delay", "400")]),
        "later",
    )
    .await;
    let sent = Instant::now();
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/tasks", "auto", &[]).await;
    let bodies: Vec<String> = c.messages(3).await.iter().map(body).collect();
    assert_eq!(bodies, ["page-oncall", "email", "batch"]);
    let reminder = c.messages(1).await.remove(0);
    assert_eq!(body(&reminder), "reminder");
    assert!(
        sent.elapsed() >= Duration::from_millis(390),
        "delivered after {:?}",
        sent.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_retried_send_with_the_same_dedup_id_is_enqueued_once() {
    let server = TestServer::default().await;
    let mut p = server.client(Via::Tcp).await;
    for attempt in 0..3 {
        let receipt = format!("try-{attempt}");
        let before = p
            .send_confirmed(
                send(
                    "/queue/payments",
                    "charge 10 EUR",
                    &[("x-dedup-id", "pay-7")],
                ),
                &receipt,
            )
            .await;
        assert!(before.is_empty());
    }
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/payments", "auto", &[]).await;
    assert_eq!(body(&c.messages(1).await[0]), "charge 10 EUR");
    c.expect_nothing(Duration::from_millis(200)).await;
    let health = integration_tests::http_get(server.http_addr(), "/health").await;
    assert!(health.contains("\"duplicates\":2"), "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn bad_terms_get_an_error_naming_the_header_and_nothing_is_enqueued() {
    let server = TestServer::default().await;
    for (header, value) in [("priority", "99"), ("x-delay", "-5"), ("expires", "soon")] {
        let mut c = server.client(Via::Tcp).await;
        c.send(send(
            "/queue/strict",
            "x",
            &[(header, value), ("receipt", "r")],
        ))
        .await;
        let error = c.expect_error_and_close().await;
        let message = error.headers.get("message").unwrap_or_default();
        assert!(message.contains(header), "{message}");
    }
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "s"),
            ("destination", "/queue/strict"),
            ("x-ack-timeout", "0"),
        ],
    ))
    .await;
    let error = c.expect_error_and_close().await;
    assert!(
        error
            .headers
            .get("message")
            .unwrap_or_default()
            .contains("x-ack-timeout")
    );
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/strict", "auto", &[]).await;
    c.expect_nothing(Duration::from_millis(200)).await;
    server.shutdown().await;
}

/// A broker on `dir`'s journal, with a small memory window on
/// `/queue/deep` so its messages wait on disk.
async fn on(dir: &tempfile::TempDir) -> TestServer {
    let path = dir.path().to_path_buf();
    TestServer::start(move |c| {
        c.data_dir = path;
        c.queues = vec![QueuePolicy {
            pattern: "/queue/deep".into(),
            memory_window_bytes: 4096,
            ..QueuePolicy::unlimited()
        }];
    })
    .await
}

#[tokio::test]
async fn priorities_delays_counts_and_dedup_ids_survive_a_restart() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut p = server.client(Via::Tcp).await;
    for (text, priority) in [("low", "1"), ("high", "8"), ("mid", "4")] {
        p.send_confirmed(send("/queue/kept", text, &[("priority", priority)]), text)
            .await;
    }
    p.send_confirmed(send("/queue/kept", "failing", &[("priority", "9")]), "f")
        .await;
    p.send_confirmed(
        send("/queue/later", "after restart", &[("x-delay", "1500")]),
        "d",
    )
    .await;
    let delayed_at = Instant::now();
    p.send_confirmed(send("/queue/once", "once", &[("x-dedup-id", "id-1")]), "o")
        .await;
    // Two failed deliveries of the priority-9 message.
    let mut w = server.client(Via::Tcp).await;
    w.subscribe(
        "w",
        "/queue/kept",
        "client-individual",
        &[("prefetch-count", "1")],
    )
    .await;
    for _ in 0..2 {
        let m = w.messages(1).await.remove(0);
        assert_eq!(body(&m), "failing");
        w.send(frame(Command::Nack, &[("id", &ack_id(&m))])).await;
    }
    // The third delivery is still unacknowledged when the broker stops:
    // its connection closing counts as a third failed delivery.
    let m = w.messages(1).await.remove(0);
    assert_eq!(m.headers.get("x-delivery-count"), Some("2"));
    // A consumer of the once-queue takes and acks its message.
    let mut o = server.client(Via::Tcp).await;
    o.subscribe("s", "/queue/once", "client-individual", &[])
        .await;
    let once = o.messages(1).await.remove(0);
    o.send_confirmed(frame(Command::Ack, &[("id", &ack_id(&once))]), "a")
        .await;
    server.shutdown().await;

    let server = on(&dir).await;
    let mut p = server.client(Via::Tcp).await;
    // The id is still known: a retry after the restart is not enqueued.
    p.send_confirmed(send("/queue/once", "once", &[("x-dedup-id", "id-1")]), "o2")
        .await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/kept", "client-individual", &[])
        .await;
    let kept = c.messages(4).await;
    let bodies: Vec<String> = kept.iter().map(body).collect();
    assert_eq!(bodies, ["failing", "high", "mid", "low"]);
    assert_eq!(kept[0].headers.get("x-delivery-count"), Some("3"));
    assert_eq!(kept[1].headers.get("x-delivery-count"), Some("0"));
    let mut o = server.client(Via::Tcp).await;
    o.subscribe("s", "/queue/once", "auto", &[]).await;
    o.expect_nothing(Duration::from_millis(200)).await;
    let mut l = server.client(Via::Tcp).await;
    l.subscribe("s", "/queue/later", "auto", &[]).await;
    let later = l.messages(1).await.remove(0);
    assert_eq!(body(&later), "after restart");
    // Held back across the restart until its original time (ms resolution).
    assert!(
        delayed_at.elapsed() >= Duration::from_millis(1490),
        "delivered {:?} after it was sent",
        delayed_at.elapsed()
    );
    server.shutdown().await;
}

#[tokio::test]
async fn priorities_hold_for_messages_waiting_on_disk() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut p = server.client(Via::Tcp).await;
    // Well past the 4 KiB window: most of these wait on disk.
    let filler = "x".repeat(512);
    for i in 0..40 {
        p.send(send(
            "/queue/deep",
            &format!("{i} {filler}"),
            &[("priority", "2")],
        ))
        .await;
    }
    p.send_confirmed(send("/queue/deep", "urgent", &[("priority", "7")]), "u")
        .await;
    server.shutdown().await;

    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/deep", "auto", &[]).await;
    let all = c.messages(41).await;
    assert_eq!(body(&all[0]), "urgent");
    let order: Vec<usize> = all[1..]
        .iter()
        .map(|m| {
            body(m)
                .split(' ')
                .next()
                .unwrap_or("")
                .parse()
                .unwrap_or(usize::MAX)
        })
        .collect();
    assert_eq!(order, (0..40).collect::<Vec<_>>());
    server.shutdown().await;
}

/// The two headers the README lists as ignored are accepted and change
/// nothing: a RabbitMQ client's quorum-queue or priority declaration works.
#[tokio::test]
async fn rabbitmq_queue_type_and_max_priority_are_accepted_and_ignored() {
    let server = TestServer::default().await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe(
        "q",
        "/queue/rabbit-style",
        "client-individual",
        &[("x-queue-type", "quorum"), ("x-max-priority", "10")],
    )
    .await;
    c.send_confirmed(
        frame(
            Command::Send,
            &[
                ("destination", "/queue/rabbit-style"),
                ("x-queue-type", "quorum"),
                ("x-max-priority", "10"),
            ],
        )
        .body("kept"),
        "sent",
    )
    .await;
    let m = c.messages(1).await.remove(0);
    assert_eq!(body(&m), "kept");
    server.shutdown().await;
}
