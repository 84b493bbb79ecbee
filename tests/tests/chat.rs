//! Chat features against the real broker: history and recovery, presence,
//! last will, ephemeral messages, per-topic limits.

use std::time::Duration;

use integration_tests::{Client, TestServer, Via, body, frame};
use stomp_codec::{Command, Frame};
use stompbox::broker::{Destination, TopicPolicy};

fn position(m: &Frame) -> u64 {
    m.headers
        .get("x-stream-position")
        .expect("a stream position")
        .parse()
        .expect("a number")
}

async fn publish_n(p: &mut Client, destination: &str, from: usize, to: usize) {
    for i in from..to {
        p.publish(destination, &format!("m{i}")).await;
    }
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/queue/sync")]),
        "published",
    )
    .await;
}

/// The MESSAGE frames up to and including the recovery marker.
async fn until_recovery(c: &mut Client) -> (Vec<Frame>, Frame) {
    let mut history = Vec::new();
    loop {
        let f = c.recv().await;
        assert_eq!(f.command, Command::Message, "{f:?}");
        if f.headers.get("x-recovery").is_some() {
            return (history, f);
        }
        history.push(f);
    }
}

#[tokio::test]
async fn history_then_live_without_gap_or_duplicate() {
    let server = TestServer::default().await;
    let mut p = server.client(Via::Tcp).await;
    publish_n(&mut p, "/topic/chat.history", 0, 5).await;

    let mut c = server.client(Via::Ws).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "h"),
            ("destination", "/topic/chat.history"),
            ("x-history", "3"),
        ],
    ))
    .await;
    let (history, marker) = until_recovery(&mut c).await;
    assert_eq!(
        history.iter().map(body).collect::<Vec<_>>(),
        ["m2", "m3", "m4"]
    );
    assert!(
        history
            .iter()
            .all(|m| m.headers.get("x-history") == Some("true"))
    );
    assert_eq!(history.iter().map(position).collect::<Vec<_>>(), [3, 4, 5]);
    assert_eq!(marker.headers.get("x-recovery"), Some("complete"));
    assert_eq!(marker.headers.get("x-stream-position"), Some("5"));
    let epoch = marker.headers.get("x-stream-epoch").unwrap().to_string();

    publish_n(&mut p, "/topic/chat.history", 5, 6).await;
    let live = c.recv().await;
    assert_eq!((body(&live), position(&live)), ("m5".to_string(), 6));
    assert_eq!(live.headers.get("x-history"), None);
    assert_eq!(live.headers.get("x-stream-epoch"), Some(epoch.as_str()));
    server.shutdown().await;
}

#[tokio::test]
async fn older_history_comes_a_page_at_a_time_before_a_position() {
    let server = TestServer::default().await;
    let mut p = server.client(Via::Tcp).await;
    publish_n(&mut p, "/topic/chat.pages", 0, 10).await;
    let mut c = server.client(Via::Ws).await;
    c.subscribe("now", "/topic/chat.pages", "auto", &[("x-history", "3")])
        .await;
    let (latest, marker) = until_recovery(&mut c).await;
    assert_eq!(latest.iter().map(position).collect::<Vec<_>>(), [8, 9, 10]);
    assert_eq!(marker.headers.get("x-history-oldest"), Some("1"));
    let epoch = marker.headers.get("x-stream-epoch").unwrap().to_string();
    // Scrolled up: the four before position 8, then the rest.
    for (before, expected) in [("8", vec![4, 5, 6, 7]), ("4", vec![1, 2, 3])] {
        c.send(frame(
            Command::Subscribe,
            &[
                ("id", "older"),
                ("destination", "/topic/chat.pages"),
                ("x-history-before", before),
                ("x-history", "4"),
                ("x-since-epoch", &epoch),
            ],
        ))
        .await;
        let (page, marker) = until_recovery(&mut c).await;
        assert_eq!(page.iter().map(position).collect::<Vec<_>>(), expected);
        assert!(
            page.iter()
                .all(|m| m.headers.get("subscription") == Some("older"))
        );
        assert_eq!(marker.headers.get("x-recovery"), Some("complete"));
        c.send_confirmed(frame(Command::Unsubscribe, &[("id", "older")]), before)
            .await;
    }
    // Another run's position: nothing, and a gap.
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "old-run"),
            ("destination", "/topic/chat.pages"),
            ("x-history-before", "5"),
            ("x-since-epoch", "another-run"),
        ],
    ))
    .await;
    let (page, marker) = until_recovery(&mut c).await;
    assert!(page.is_empty());
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"));
    server.shutdown().await;
}

#[tokio::test]
async fn recovery_after_a_disconnect_delivers_exactly_what_was_missed() {
    let server = TestServer::default().await;
    let mut p = server.client(Via::Tcp).await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("r", "/topic/chat.recover", "auto", &[]).await;
    publish_n(&mut p, "/topic/chat.recover", 0, 3).await;
    let seen = c.messages(3).await;
    let last = position(&seen[2]);
    let epoch = seen[2].headers.get("x-stream-epoch").unwrap().to_string();
    drop(c);

    publish_n(&mut p, "/topic/chat.recover", 3, 7).await;
    let mut again = server.client(Via::Tcp).await;
    again
        .send(frame(
            Command::Subscribe,
            &[
                ("id", "r"),
                ("destination", "/topic/chat.recover"),
                ("x-since", &last.to_string()),
                ("x-since-epoch", &epoch),
            ],
        ))
        .await;
    let (missed, marker) = until_recovery(&mut again).await;
    assert_eq!(
        missed.iter().map(body).collect::<Vec<_>>(),
        ["m3", "m4", "m5", "m6"]
    );
    assert_eq!(marker.headers.get("x-recovery"), Some("complete"));
    publish_n(&mut p, "/topic/chat.recover", 7, 8).await;
    assert_eq!(body(&again.recv().await), "m7");
    server.shutdown().await;
}

#[tokio::test]
async fn trimmed_history_is_reported_as_a_gap() {
    let server = TestServer::start(|c| {
        c.topics = vec![TopicPolicy {
            history: 3,
            ..TopicPolicy::chat_default()
        }];
    })
    .await;
    let mut p = server.client(Via::Tcp).await;
    publish_n(&mut p, "/topic/chat.trim", 0, 10).await;
    let epoch = topic_epoch(&server, "/topic/chat.trim");
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "t"),
            ("destination", "/topic/chat.trim"),
            ("x-since", "2"),
            ("x-since-epoch", &epoch),
        ],
    ))
    .await;
    let (kept, marker) = until_recovery(&mut c).await;
    assert_eq!(
        kept.iter().map(body).collect::<Vec<_>>(),
        ["m7", "m8", "m9"]
    );
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"));
    server.shutdown().await;
}

#[tokio::test]
async fn a_restarted_broker_reports_the_epoch_change() {
    let first = TestServer::default().await;
    let mut p = first.client(Via::Tcp).await;
    publish_n(&mut p, "/topic/chat.restart", 0, 2).await;
    let old_epoch = topic_epoch(&first, "/topic/chat.restart");
    first.shutdown().await;

    let second = TestServer::default().await;
    assert_ne!(topic_epoch(&second, "/topic/chat.restart"), old_epoch);
    let mut c = second.client(Via::Ws).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "x"),
            ("destination", "/topic/chat.restart"),
            ("x-since", "2"),
            ("x-since-epoch", &old_epoch),
        ],
    ))
    .await;
    let (kept, marker) = until_recovery(&mut c).await;
    assert!(kept.is_empty());
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"));
    second.shutdown().await;
}

fn presence_event(f: &Frame) -> (String, String) {
    (
        f.headers
            .get("x-presence-event")
            .unwrap_or_default()
            .to_string(),
        body(f),
    )
}

async fn join(
    server: &TestServer,
    via: Via,
    name: &str,
    extra: &[(&str, &str)],
) -> (Client, String) {
    let mut c = match extra.is_empty() {
        true => server.client(via).await,
        false => {
            let mut c = server.raw_client(via).await;
            c.connect(extra).await;
            c
        }
    };
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "room"),
            ("destination", "/topic/chat.presence"),
            ("x-presence", name),
            ("x-presence-meta", "{\"color\":\"teal\"}"),
        ],
    ))
    .await;
    let snapshot = c.recv().await;
    let (event, list) = presence_event(&snapshot);
    assert_eq!(event, "snapshot");
    (c, list)
}

#[tokio::test]
async fn presence_snapshot_join_and_leave_including_a_killed_connection() {
    let server = TestServer::default().await;
    let (mut ana, list) = join(&server, Via::Ws, "ana", &[]).await;
    assert!(
        list.contains("\"name\":\"ana\"") && list.contains("teal"),
        "{list}"
    );

    let (bob, list) = join(&server, Via::Tcp, "bob", &[]).await;
    assert!(
        list.contains("\"ana\"") && list.contains("\"bob\""),
        "{list}"
    );
    let (event, who) = presence_event(&ana.recv().await);
    assert_eq!(event, "join");
    assert!(who.contains("\"name\":\"bob\""), "{who}");
    // Who they really are, not only the name they chose: the login
    // (anonymous here) is set by the broker.
    assert!(who.contains("\"login\":\"(anonymous)\""), "{who}");

    // Bob's connection dies without DISCONNECT.
    drop(bob);
    let (event, who) = presence_event(&ana.recv().await);
    assert_eq!(event, "leave");
    assert!(who.contains("\"bob\""));
    server.shutdown().await;
}

#[tokio::test]
async fn presence_leaves_when_the_heart_beat_times_out() {
    let server = TestServer::start(|c| {
        c.heart_beat = "0,300".into();
        c.min_heart_beat_ms = 50;
    })
    .await;
    let (mut ana, _) = join(&server, Via::Ws, "ana", &[]).await;
    // Carol promises heart-beats every 300 ms, then goes silent (a closed laptop lid).
    let (mut carol, _) = join(&server, Via::Tcp, "carol", &[("heart-beat", "300,0")]).await;
    let (event, _) = presence_event(&ana.recv().await);
    assert_eq!(event, "join");
    // Ana keeps heart-beating; Carol does not.
    let mut left = None;
    for _ in 0..80 {
        ana.send_raw(b"\n").await;
        if let Ok(Some(stomp_codec::Decoded::Frame(f))) =
            ana.next_within(Duration::from_millis(50)).await
        {
            left = Some(f);
            break;
        }
    }
    let (event, who) = presence_event(&left.expect("a leave event within 4 s"));
    assert_eq!(event, "leave");
    assert!(who.contains("carol"));
    assert_eq!(
        carol.recv().await.headers.get("message"),
        Some("heart-beat timeout")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn last_will_on_a_killed_connection_not_on_disconnect() {
    let server = TestServer::default().await;
    let mut watcher = server.client(Via::Tcp).await;
    watcher
        .subscribe("w", "/topic/chat.status", "auto", &[])
        .await;
    let will = [
        ("x-will-destination", "/topic/chat.status"),
        ("x-will-body", "dave went offline"),
        ("x-will-header-x-user", "dave"),
    ];

    let mut clean = server.raw_client(Via::Ws).await;
    clean.connect(&will).await;
    clean
        .send(frame(Command::Disconnect, &[("receipt", "bye")]))
        .await;
    assert_eq!(clean.recv().await.command, Command::Receipt);
    clean.expect_closed().await;
    watcher.expect_nothing(Duration::from_millis(300)).await;

    let mut killed = server.raw_client(Via::Tcp).await;
    killed.connect(&will).await;
    drop(killed);
    let m = watcher.recv().await;
    assert_eq!(body(&m), "dave went offline");
    assert_eq!(m.headers.get("x-user"), Some("dave"));
    server.shutdown().await;
}

#[tokio::test]
async fn ephemeral_messages_are_live_only() {
    let server = TestServer::default().await;
    let mut live = server.client(Via::Tcp).await;
    live.subscribe("l", "/topic/chat.typing", "auto", &[]).await;
    let mut p = server.client(Via::Tcp).await;
    p.send(
        frame(
            Command::Send,
            &[
                ("destination", "/topic/chat.typing"),
                ("x-ephemeral", "true"),
            ],
        )
        .body("ana is typing"),
    )
    .await;
    publish_n(&mut p, "/topic/chat.typing", 0, 1).await;
    let typing = live.recv().await;
    assert_eq!(body(&typing), "ana is typing");
    assert_eq!(typing.headers.get("x-ephemeral"), Some("true"));
    assert_eq!(typing.headers.get("x-stream-position"), None);
    assert_eq!(position(&live.recv().await), 1);

    let mut late = server.client(Via::Tcp).await;
    late.send(frame(
        Command::Subscribe,
        &[
            ("id", "x"),
            ("destination", "/topic/chat.typing"),
            ("x-history", "10"),
        ],
    ))
    .await;
    let (history, _) = until_recovery(&mut late).await;
    assert_eq!(history.iter().map(body).collect::<Vec<_>>(), ["m0"]);
    server.shutdown().await;
}

#[tokio::test]
async fn too_large_is_refused_on_the_receipt_or_with_an_error() {
    let server = TestServer::default().await;
    let mut c = server.client(Via::Ws).await;
    let big = "x".repeat(17 * 1024);
    c.send(
        frame(
            Command::Send,
            &[("destination", "/topic/chat.big"), ("receipt", "r1")],
        )
        .body(big.clone()),
    )
    .await;
    let r = c.recv().await;
    assert_eq!(r.command, Command::Receipt);
    assert_eq!(r.headers.get("x-error"), Some("too-large"));
    assert!(
        r.headers
            .get("message")
            .unwrap()
            .contains("message too large")
    );
    // Still connected.
    c.subscribe("ok", "/topic/chat.big", "auto", &[]).await;
    // Without a receipt: ERROR and close.
    c.send(frame(Command::Send, &[("destination", "/topic/chat.big")]).body(big))
        .await;
    let error = c.expect_error_and_close().await;
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("message too large")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn publishing_too_fast_is_rate_limited() {
    let server = TestServer::default().await;
    let mut c = server.client(Via::Tcp).await;
    for i in 0..100 {
        c.send(
            frame(
                Command::Send,
                &[
                    ("destination", "/topic/chat.flood"),
                    ("receipt", &format!("r{i}")),
                ],
            )
            .body("spam"),
        )
        .await;
    }
    let mut limited = 0;
    for _ in 0..100 {
        let r = c.recv().await;
        assert_eq!(r.command, Command::Receipt);
        if r.headers.get("x-error") == Some("rate-limited") {
            limited += 1;
        }
    }
    // A burst of 40 passes; most of the rest, sent within milliseconds, does not.
    assert!(limited >= 50, "only {limited} of 100 were limited");
    // Other destinations are not limited.
    c.send_confirmed(
        frame(Command::Send, &[("destination", "/queue/unlimited")]),
        "q",
    )
    .await;
    server.shutdown().await;
}

/// The stream epoch of a topic, as its messages carry it.
fn topic_epoch(server: &TestServer, name: &str) -> String {
    match server.server().broker().destination(name) {
        Ok(Destination::Topic(t)) => t.epoch().to_string(),
        other => panic!("{name} is not a topic: {other:?}"),
    }
}
