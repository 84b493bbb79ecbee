//! Durable state across a restart of the broker in this process: queued
//! and unacknowledged messages, chat history under the same epoch, and
//! transactions applied whole. (SIGKILL of the real binary is in
//! server/tests/durability.rs.)

use std::time::Duration;

use integration_tests::{TestServer, Via, body, frame};
use stomp_codec::Command;

/// A broker on `dir`'s journal.
async fn on(dir: &tempfile::TempDir) -> TestServer {
    let path = dir.path().to_path_buf();
    TestServer::start(move |c| c.data_dir = path).await
}

#[tokio::test]
async fn queued_and_unacknowledged_messages_survive_a_graceful_restart() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut p = server.client(Via::Tcp).await;
    for i in 0..5 {
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/queue/kept")]).body(format!("m{i}")),
            &format!("r{i}"),
        )
        .await;
    }
    // A consumer takes two and acknowledges neither.
    let mut c = server.client(Via::Tcp).await;
    c.subscribe(
        "s",
        "/queue/kept",
        "client-individual",
        &[("prefetch-count", "2")],
    )
    .await;
    let held = c.messages(2).await;
    assert_eq!(body(&held[0]), "m0");
    assert_eq!(
        held[0].headers.get("persistent"),
        Some("true"),
        "a durable message says so"
    );
    server.shutdown().await;

    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/kept", "client-individual", &[])
        .await;
    let all = c.messages(5).await;
    let bodies: Vec<String> = all.iter().map(body).collect();
    assert_eq!(bodies, ["m0", "m1", "m2", "m3", "m4"]);
    for m in &all {
        assert_eq!(m.headers.get("redelivered"), Some("true"), "{m:?}");
    }
    // Acknowledged now, so a third start finds the queue empty.
    for m in &all {
        let ack = m.headers.get("ack").expect("an ack id").to_string();
        c.send(frame(Command::Ack, &[("id", &ack)])).await;
    }
    c.send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    server.shutdown().await;

    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/kept", "auto", &[]).await;
    c.expect_nothing(Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn message_ids_are_not_reused_after_a_restart() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/ids", "auto", &[]).await;
    c.publish("/queue/ids", "first").await;
    let first = c.messages(1).await.remove(0);
    server.shutdown().await;

    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/ids", "auto", &[]).await;
    c.publish("/queue/ids", "second").await;
    let second = c.messages(1).await.remove(0);
    assert_ne!(
        first.headers.get("message-id"),
        second.headers.get("message-id")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn chat_history_comes_back_under_the_same_epoch() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut watcher = server.client(Via::Ws).await;
    watcher
        .subscribe("w", "/topic/chat.durable", "auto", &[])
        .await;
    // A room where nobody has spoken yet: its epoch must outlive the restart too.
    watcher
        .send(frame(
            Command::Subscribe,
            &[
                ("id", "q"),
                ("destination", "/topic/chat.quiet"),
                ("x-history", "5"),
            ],
        ))
        .await;
    let quiet = watcher.recv().await;
    let quiet_epoch = quiet
        .headers
        .get("x-stream-epoch")
        .expect("the marker names the epoch")
        .to_string();
    let mut p = server.client(Via::Ws).await;
    for i in 0..3 {
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/topic/chat.durable")])
                .body(format!("line {i}")),
            &format!("r{i}"),
        )
        .await;
    }
    let live = watcher.messages(3).await;
    let epoch = live[2]
        .headers
        .get("x-stream-epoch")
        .expect("an epoch")
        .to_string();
    let head = live[2]
        .headers
        .get("x-stream-position")
        .expect("a position")
        .to_string();
    server.shutdown().await;

    let server = on(&dir).await;
    // A client that had everything: complete, nothing replayed.
    let mut back = server.client(Via::Ws).await;
    back.send(frame(
        Command::Subscribe,
        &[
            ("id", "b"),
            ("destination", "/topic/chat.durable"),
            ("x-since", &head),
            ("x-since-epoch", &epoch),
        ],
    ))
    .await;
    let marker = back.recv().await;
    assert_eq!(
        marker.headers.get("x-recovery"),
        Some("complete"),
        "{marker:?}"
    );
    assert_eq!(marker.headers.get("x-stream-epoch"), Some(epoch.as_str()));
    back.send(frame(
        Command::Subscribe,
        &[
            ("id", "q"),
            ("destination", "/topic/chat.quiet"),
            ("x-since", "0"),
            ("x-since-epoch", &quiet_epoch),
        ],
    ))
    .await;
    let marker = back.recv().await;
    assert_eq!(
        marker.headers.get("x-recovery"),
        Some("complete"),
        "an empty room kept its epoch: {marker:?}"
    );
    // A newcomer sees the history, same epoch, same positions.
    let mut fresh = server.client(Via::Ws).await;
    fresh
        .send(frame(
            Command::Subscribe,
            &[
                ("id", "f"),
                ("destination", "/topic/chat.durable"),
                ("x-history", "10"),
            ],
        ))
        .await;
    let replay = fresh.messages(3).await;
    for (i, m) in replay.iter().enumerate() {
        assert_eq!(body(m), format!("line {i}"));
        assert_eq!(m.headers.get("x-stream-epoch"), Some(epoch.as_str()));
        assert_eq!(
            m.headers.get("x-stream-position"),
            live[i].headers.get("x-stream-position")
        );
        assert_eq!(
            m.headers.get("message-id"),
            live[i].headers.get("message-id")
        );
    }
    // The stream goes on from its head.
    p = server.client(Via::Ws).await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/chat.durable")]).body("line 3"),
        "r3",
    )
    .await;
    let next = back.recv().await;
    assert_eq!(body(&next), "line 3");
    let position: u64 = next
        .headers
        .get("x-stream-position")
        .and_then(|p| p.parse().ok())
        .expect("a position");
    assert_eq!(position, head.parse::<u64>().expect("a number") + 1);
    server.shutdown().await;
}

#[tokio::test]
async fn a_committed_transaction_is_receipted_once_on_disk_and_survives() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(Command::Begin, &[("transaction", "t")])).await;
    for i in 0..3 {
        c.send(
            frame(
                Command::Send,
                &[("destination", "/queue/tx"), ("transaction", "t")],
            )
            .body(format!("t{i}")),
        )
        .await;
    }
    c.send_confirmed(frame(Command::Commit, &[("transaction", "t")]), "committed")
        .await;
    // Aborted work leaves nothing behind.
    c.send(frame(Command::Begin, &[("transaction", "u")])).await;
    c.send(
        frame(
            Command::Send,
            &[("destination", "/queue/tx"), ("transaction", "u")],
        )
        .body("aborted"),
    )
    .await;
    c.send_confirmed(frame(Command::Abort, &[("transaction", "u")]), "aborted")
        .await;
    server.shutdown().await;

    let server = on(&dir).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/tx", "auto", &[]).await;
    let got: Vec<String> = c.messages(3).await.iter().map(body).collect();
    assert_eq!(got, ["t0", "t1", "t2"]);
    c.expect_nothing(Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_queue_policy_or_the_send_can_keep_messages_in_memory_only() {
    let dir = tempfile::tempdir().expect("a data directory");
    let path = dir.path().to_path_buf();
    let start = move || {
        let path = path.clone();
        TestServer::start(move |c| {
            c.data_dir = path;
            c.queues = vec![stompbox::broker::QueuePolicy {
                pattern: "/queue/scratch.*".into(),
                durable: false,
                ..stompbox::broker::QueuePolicy::unlimited()
            }];
        })
    };
    let server = start().await;
    let mut p = server.client(Via::Tcp).await;
    for (destination, persistent, text) in [
        ("/queue/scratch.a", None, "policy says memory"),
        ("/queue/scratch.a", Some("true"), "send says disk"),
        ("/queue/plain", Some("false"), "send says memory"),
        ("/queue/plain", None, "default disk"),
    ] {
        let mut f = frame(Command::Send, &[("destination", destination)]);
        if let Some(v) = persistent {
            f = f.header("persistent", v);
        }
        p.send_confirmed(f.body(text), text).await;
    }
    server.shutdown().await;

    let server = start().await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("a", "/queue/scratch.a", "auto", &[]).await;
    assert_eq!(body(&c.messages(1).await[0]), "send says disk");
    c.subscribe("b", "/queue/plain", "auto", &[]).await;
    assert_eq!(body(&c.messages(1).await[0]), "default disk");
    c.expect_nothing(Duration::from_millis(300)).await;
    // A persistent header that is neither true nor false is refused.
    let mut bad = server.client(Via::Tcp).await;
    bad.send(frame(
        Command::Send,
        &[("destination", "/queue/plain"), ("persistent", "yes")],
    ))
    .await;
    expect_error_naming(&mut bad, "persistent").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_journal_refuses_durable_sends_and_keeps_serving() {
    use stompbox::config::ByteSize;
    let dir = tempfile::tempdir().expect("a data directory");
    let path = dir.path().to_path_buf();
    let server = TestServer::start(move |c| {
        c.data_dir = path;
        c.journal_segment_bytes = ByteSize::Text("64KiB".into());
        c.journal_max_bytes = ByteSize::Text("128KiB".into());
    })
    .await;
    let mut p = server.client(Via::Tcp).await;
    let body = "x".repeat(1024);
    let mut accepted = 0;
    let refusal = loop {
        assert!(accepted < 1000, "the journal never filled");
        let receipt = format!("r{accepted}");
        p.send(
            frame(Command::Send, &[("destination", "/queue/full")])
                .header("receipt", receipt.as_str())
                .body(body.clone()),
        )
        .await;
        let r = p.recv().await;
        assert_eq!(r.command, Command::Receipt);
        if r.headers.get("x-error").is_some() {
            break r;
        }
        accepted += 1;
    };
    assert_eq!(refusal.headers.get("x-error"), Some("not-stored"));
    assert!(
        refusal
            .headers
            .get("message")
            .is_some_and(|m| m.contains("journal is full")),
        "{refusal:?}"
    );
    // Memory-only messages still go through, and consumers are served.
    p.send_confirmed(
        frame(
            Command::Send,
            &[("destination", "/queue/full"), ("persistent", "false")],
        )
        .body("in memory"),
        "mem",
    )
    .await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe(
        "s",
        "/queue/full",
        "client-individual",
        &[("prefetch-count", "0")],
    )
    .await;
    let got = c.messages(accepted + 1).await;
    assert_eq!(body_of(got.last()), "in memory");
    for m in &got {
        let ack = m.headers.get("ack").expect("ack").to_string();
        c.send(frame(Command::Ack, &[("id", &ack)])).await;
    }
    c.send_confirmed(frame(Command::Disconnect, &[]), "acked")
        .await;
    // Once the settled segments are deleted, durable SENDs are taken again.
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal never had room again"
        );
        p.send(
            frame(Command::Send, &[("destination", "/queue/again")])
                .header("receipt", "again")
                .body("after"),
        )
        .await;
        let r = p.recv().await;
        if r.headers.get("x-error").is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

fn body_of(f: Option<&stomp_codec::Frame>) -> String {
    f.map(body).unwrap_or_default()
}

#[tokio::test]
async fn a_few_old_messages_do_not_pin_the_journal_and_keep_their_order() {
    use stompbox::config::ByteSize;
    let dir = tempfile::tempdir().expect("a data directory");
    let path = dir.path().to_path_buf();
    let start = move || {
        let path = path.clone();
        TestServer::start(move |c| {
            c.data_dir = path;
            c.journal_segment_bytes = ByteSize::Text("64KiB".into());
        })
    };
    let server = start().await;
    let mut p = server.client(Via::Tcp).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("busy", "/queue/busy", "auto", &[]).await;
    let payload = "b".repeat(2000);
    // Two messages nobody consumes, far apart in the journal, with about
    // 2 MiB of traffic that is consumed at once around them.
    for round in 0..2 {
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/queue/stuck")]).body(format!("stuck {round}")),
            &format!("s{round}"),
        )
        .await;
        for i in 0..500 {
            p.send(frame(Command::Send, &[("destination", "/queue/busy")]).body(payload.clone()))
                .await;
            if i % 100 == 99 {
                p.send_confirmed(
                    frame(Command::Send, &[("destination", "/queue/busy")]),
                    &format!("b{round}-{i}"),
                )
                .await;
            }
        }
        c.messages(505).await;
    }
    let journal = server
        .server()
        .broker()
        .journal()
        .cloned()
        .expect("a journal");
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT * 2;
    loop {
        let stats = journal.stats();
        if stats.disk_bytes <= 4 * 64 * 1024 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the journal stayed at {stats:?}: compaction did not free the old segments"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.shutdown().await;

    let server = start().await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/queue/stuck", "auto", &[]).await;
    let got: Vec<String> = c.messages(2).await.iter().map(body).collect();
    assert_eq!(
        got,
        ["stuck 0", "stuck 1"],
        "moved records keep their order"
    );
    server.shutdown().await;
}

/// The next frame is an ERROR whose `message` contains `text`, and the
/// connection closes.
async fn expect_error_naming(client: &mut integration_tests::Client, text: &str) {
    let error = client.expect_error_and_close().await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains(text)),
        "{error:?}"
    );
}

/// Positions of MESSAGE frames, for order checks.
fn position(f: &stomp_codec::Frame) -> u64 {
    f.headers
        .get("x-stream-position")
        .and_then(|p| p.parse().ok())
        .expect("a stream position")
}

#[tokio::test]
async fn a_durable_subscription_catches_up_after_being_away_and_after_a_restart() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    let durable = [("durable", "true"), ("auto-delete", "false")];
    let mut sub = server.client(Via::Tcp).await;
    sub.subscribe("ticker", "/topic/prices", "client-individual", &durable)
        .await;
    let mut p = server.client(Via::Tcp).await;
    for i in 1..=3 {
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/topic/prices")]).body(format!("p{i}")),
            &format!("r{i}"),
        )
        .await;
    }
    let got = sub.messages(3).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["p1", "p2", "p3"]);
    assert_eq!(got[0].headers.get("persistent"), Some("true"));
    // Only the first is acknowledged before the subscriber goes away.
    let ack = got[0].headers.get("ack").expect("ack").to_string();
    sub.send_confirmed(frame(Command::Ack, &[("id", &ack)]), "acked")
        .await;
    sub.send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    for i in 4..=5 {
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/topic/prices")]).body(format!("p{i}")),
            &format!("r{i}"),
        )
        .await;
    }
    // Back: the unacknowledged two again (marked), then what it missed.
    let mut sub = server.client(Via::Tcp).await;
    sub.subscribe("ticker", "/topic/prices", "client-individual", &durable)
        .await;
    let got = sub.messages(4).await;
    assert_eq!(
        got.iter().map(body).collect::<Vec<_>>(),
        ["p2", "p3", "p4", "p5"]
    );
    assert_eq!(got[0].headers.get("redelivered"), Some("true"));
    assert_eq!(got[1].headers.get("redelivered"), Some("true"));
    assert_eq!(got[2].headers.get("redelivered"), None);
    assert!(got.windows(2).all(|w| position(&w[0]) < position(&w[1])));
    // p2 and p3 acknowledged; p4 and p5 are not when the broker stops.
    for m in &got[..2] {
        let ack = m.headers.get("ack").expect("ack").to_string();
        sub.send(frame(Command::Ack, &[("id", &ack)])).await;
    }
    sub.send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    drop(p);
    server.shutdown().await;

    let server = on(&dir).await;
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/prices")]).body("p6"),
        "r6",
    )
    .await;
    let mut sub = server.client(Via::Tcp).await;
    sub.subscribe("ticker", "/topic/prices", "client-individual", &durable)
        .await;
    let got = sub.messages(3).await;
    assert_eq!(got.iter().map(body).collect::<Vec<_>>(), ["p4", "p5", "p6"]);
    // Deleting it: UNSUBSCRIBE with durable:true (RabbitMQ's way).
    sub.send_confirmed(
        frame(
            Command::Unsubscribe,
            &[("id", "ticker"), ("durable", "true")],
        ),
        "gone",
    )
    .await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/prices")]).body("p7"),
        "r7",
    )
    .await;
    // A new durable subscription of that id starts at the head.
    sub.subscribe("ticker", "/topic/prices", "auto", &durable)
        .await;
    sub.expect_nothing(Duration::from_millis(300)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn activemq_and_artemis_durable_subscriptions_by_client_id_and_name() {
    let dir = tempfile::tempdir().expect("a data directory");
    let server = on(&dir).await;
    for (header, name) in [
        ("activemq.subscriptionName", "orders-a"),
        ("durable-subscription-name", "orders-b"),
    ] {
        let mut c = integration_tests::Client::tcp(server.tcp_addr()).await;
        c.connect(&[("client-id", "app-1")]).await;
        c.subscribe("s", "/topic/orders", "client", &[(header, name)])
            .await;
        // The same subscription from another connection is refused while held.
        let mut other = integration_tests::Client::tcp(server.tcp_addr()).await;
        other.connect(&[("client-id", "app-1")]).await;
        other
            .send(frame(
                Command::Subscribe,
                &[
                    ("id", "x"),
                    ("destination", "/topic/orders"),
                    (header, name),
                ],
            ))
            .await;
        expect_error_naming(&mut other, "already active").await;
        c.send_confirmed(frame(Command::Disconnect, &[]), "bye")
            .await;
    }
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/orders")]).body("order 1"),
        "r1",
    )
    .await;
    // Both kept it while away.
    for (header, name) in [
        ("activemq.subscriptionName", "orders-a"),
        ("durable-subscription-name", "orders-b"),
    ] {
        let mut c = integration_tests::Client::tcp(server.tcp_addr()).await;
        c.connect(&[("client-id", "app-1")]).await;
        c.subscribe("s", "/topic/orders", "auto", &[(header, name)])
            .await;
        assert_eq!(body(&c.messages(1).await[0]), "order 1");
        c.send_confirmed(frame(Command::Disconnect, &[]), "bye")
            .await;
        // Deleted by name from a connection that does not hold it.
        let mut d = integration_tests::Client::tcp(server.tcp_addr()).await;
        d.connect(&[("client-id", "app-1")]).await;
        d.send_confirmed(frame(Command::Unsubscribe, &[(header, name)]), "gone")
            .await;
        // Deleting it again says there is none.
        d.send(frame(Command::Unsubscribe, &[(header, name)])).await;
        expect_error_naming(&mut d, "no durable subscription").await;
    }
    // A name without client-id is refused with a reason.
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "s"),
            ("destination", "/topic/orders"),
            ("activemq.subscriptionName", "x"),
        ],
    ))
    .await;
    expect_error_naming(&mut c, "client-id").await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_deep_durable_backlog_waits_on_disk_not_in_memory() {
    let dir = tempfile::tempdir().expect("a data directory");
    let path = dir.path().to_path_buf();
    let window = 64 * 1024;
    let start = move || {
        let path = path.clone();
        TestServer::start(move |c| {
            c.data_dir = path;
            // Many segments: recovery must keep every one its messages need.
            c.journal_segment_bytes = stompbox::config::ByteSize::Text("64KiB".into());
            c.queues = vec![stompbox::broker::QueuePolicy {
                pattern: "/queue/deep".into(),
                memory_window_bytes: window,
                ..stompbox::broker::QueuePolicy::unlimited()
            }];
        })
    };
    let queue_of = |server: &TestServer| match server.server().broker().destination("/queue/deep") {
        Ok(stompbox::broker::Destination::Queue(q)) => q,
        other => panic!("not a queue: {other:?}"),
    };
    let server = start().await;
    let mut p = server.client(Via::Tcp).await;
    let payload = "d".repeat(1000);
    let total = 3000;
    for i in 0..total {
        let mut f = frame(Command::Send, &[("destination", "/queue/deep")])
            .body(format!("{i:05} {payload}"));
        // Now and then one that asks to stay in memory: while the queue waits
        // on disk it is written there too, to keep its place in line.
        if i % 500 == 250 {
            f = f.header("persistent", "false");
        }
        if i % 100 == 99 {
            p.send_confirmed(f, &format!("r{i}")).await;
        } else {
            p.send(f).await;
        }
    }
    let q = queue_of(&server);
    assert_eq!(q.depth(), total);
    assert!(q.paged() > total * 9 / 10, "{} paged of {total}", q.paged());
    let used = server.server().broker().memory().used();
    assert!(
        used < 2 * window as usize + 512 * 1024,
        "3 MB of messages held {used} bytes of memory"
    );
    server.shutdown().await;

    // After a restart too, only the window is read into memory.
    let server = start().await;
    let q = queue_of(&server);
    assert_eq!(q.depth(), total);
    assert!(q.paged() > total * 9 / 10);
    let mut c = server.client(Via::Tcp).await;
    c.subscribe(
        "s",
        "/queue/deep",
        "client-individual",
        &[("prefetch-count", "100")],
    )
    .await;
    let mut expected = 0..total;
    for _ in 0..total {
        let m = c.recv().await;
        assert_eq!(m.command, Command::Message);
        let want = expected.next().expect("more expected");
        assert!(
            body(&m).starts_with(&format!("{want:05} ")),
            "expected {want}, got {}",
            &body(&m)[..5]
        );
        assert_eq!(m.headers.get("redelivered"), Some("true"));
        let ack = m.headers.get("ack").expect("ack").to_string();
        c.send(frame(Command::Ack, &[("id", &ack)])).await;
    }
    c.send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    assert_eq!(q.depth(), 0);
    server.shutdown().await;
}
