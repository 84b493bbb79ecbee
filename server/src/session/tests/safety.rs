//! Rules that keep one client from hurting another, or losing messages
//! silently: version differences, unsubscribe, transactions, topic streams.

use super::*;

/// A connected client of the given version (`None`: no accept-version, so 1.0).
fn connected_as(broker: &Arc<Broker>, accept: Option<&str>) -> Client {
    let mut c = Client::new(broker);
    let mut connect = frame("CONNECT", &[("host", "x")]);
    if let Some(v) = accept {
        connect = connect.header("accept-version", v);
    }
    assert!(matches!(c.send(connect), Flow::Connected { .. }));
    assert_eq!(c.frames()[0].command, Command::Connected);
    c
}

#[test]
fn older_receivers_get_the_message_without_the_headers_they_cannot_carry() {
    let b = broker();
    let mut producer = Client::connected(&b);
    let mut old = connected_as(&b, None);
    let mut mid = connected_as(&b, Some("1.1"));
    old.send(subscribe("s", "/topic/t", "auto"));
    mid.send(subscribe("s", "/topic/t", "auto"));
    producer.send(
        frame(
            "SEND",
            &[
                ("destination", "/topic/t"),
                ("x-lf", "two\nlines"),
                ("x-cr", "a\rb"),
                ("x-plain", "kept"),
            ],
        )
        .body("hello"),
    );
    let got = old.frames();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].headers.get("x-plain"), Some("kept"));
    assert_eq!(got[0].headers.get("x-lf"), None);
    assert_eq!(got[0].headers.get("x-cr"), None);
    assert_eq!(&got[0].body[..], b"hello");
    let got = mid.frames();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].headers.get("x-lf"), Some("two\nlines"));
    assert_eq!(got[0].headers.get("x-cr"), None);
    assert_eq!(b.stats().headers_dropped(), 2);
}

#[test]
fn a_message_requeued_by_an_older_receiver_keeps_every_header() {
    let b = broker();
    let mut producer = Client::connected(&b);
    let mut old = connected_as(&b, None);
    old.send(subscribe("s", "/queue/q", "client"));
    producer.send(frame("SEND", &[("destination", "/queue/q"), ("x-lf", "a\nb")]).body("m"));
    let got = old.frames();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers.get("x-lf"), None);
    old.session.close();
    let mut new = Client::connected(&b);
    new.send(subscribe("s", "/queue/q", "auto"));
    let got = new.frames();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].headers.get("x-lf"), Some("a\nb"));
    assert_eq!(got[0].headers.get("redelivered"), Some("true"));
}

#[test]
fn names_with_control_characters_are_refused() {
    let b = broker();
    let mut c = Client::connected(&b);
    let error = c.error(send("/queue/a\nb", "x"));
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("control character"),
        "{error:?}"
    );
    let mut c = Client::connected(&b);
    let error = c.error(subscribe("a\rb", "/queue/a", "auto"));
    assert!(
        error.headers.get("message").unwrap().contains("'id'"),
        "{error:?}"
    );
}

#[test]
fn unsubscribe_returns_deliveries_not_yet_written_to_the_queue() {
    let b = broker();
    let mut producer = Client::connected(&b);
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/q", "auto"));
    c.send(subscribe("t", "/topic/t", "auto"));
    for body in ["1", "2", "3"] {
        producer.send(send("/queue/q", body));
    }
    producer.send(send("/topic/t", "live"));
    // The deliveries sit in the outbox, unwritten, when UNSUBSCRIBE arrives.
    c.send(frame("UNSUBSCRIBE", &[("id", "s")]));
    c.send(frame("UNSUBSCRIBE", &[("id", "t")]));
    assert!(
        c.frames().iter().all(|f| f.command != Command::Message),
        "nothing is written for a cancelled subscription"
    );
    let mut other = Client::connected(&b);
    other.send(subscribe("s", "/queue/q", "auto"));
    let got = other.frames();
    let bodies: Vec<_> = got
        .iter()
        .map(|f| String::from_utf8_lossy(&f.body))
        .collect();
    assert_eq!(bodies, ["1", "2", "3"]);
    assert!(
        got.iter().all(|f| f.headers.get("redelivered").is_none()),
        "never seen, so not redelivered"
    );
}

#[test]
fn a_topic_forgotten_and_created_again_never_reuses_a_stream_position() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/topic/plain", "auto"));
    for body in ["1", "2", "3"] {
        c.send(send("/topic/plain", body));
    }
    let last = c.frames().pop().expect("three messages");
    let epoch = last.headers.get("x-stream-epoch").unwrap().to_string();
    assert_eq!(last.headers.get("x-stream-position"), Some("3"));
    c.send(frame("UNSUBSCRIBE", &[("id", "s")]));
    assert_eq!(b.sweep(), 1, "the unused topic is forgotten");

    // Created again: a publisher sends one message, then the client
    // recovers from position 3 of the old stream.
    c.send(send("/topic/plain", "4"));
    c.send(
        subscribe("r", "/topic/plain", "auto")
            .header("x-since", "3")
            .header("x-since-epoch", epoch.as_str()),
    );
    let marker = c.frames().pop().expect("a recovery marker");
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"), "{marker:?}");
    assert_ne!(marker.headers.get("x-stream-epoch"), Some(epoch.as_str()));
}

#[test]
fn a_position_beyond_the_head_is_a_gap() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/topic/chat.x", "auto"));
    c.send(send("/topic/chat.x", "only"));
    let epoch = c.frames()[0]
        .headers
        .get("x-stream-epoch")
        .unwrap()
        .to_string();
    c.send(
        subscribe("r", "/topic/chat.x", "auto")
            .header("x-since", "99")
            .header("x-since-epoch", epoch.as_str()),
    );
    let got = c.frames();
    let marker = got.last().expect("a marker");
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"));
}

#[test]
fn commit_applies_every_operation_or_none() {
    let b = broker();
    let mut watcher = Client::connected(&b);
    watcher.send(subscribe("q", "/queue/tx", "auto"));
    watcher.send(subscribe("t", "/topic/chat.tx", "auto"));
    let mut c = Client::connected(&b);
    // A valid SEND, then one to a destination that cannot exist.
    c.send(frame("BEGIN", &[("transaction", "a")]));
    c.send(
        frame(
            "SEND",
            &[("destination", "/queue/tx"), ("transaction", "a")],
        )
        .body("first"),
    );
    c.send(
        frame(
            "SEND",
            &[("destination", "/nowhere/x"), ("transaction", "a")],
        )
        .body("bad"),
    );
    let error = c.error(frame("COMMIT", &[("transaction", "a")]));
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("unknown destination")
    );
    assert!(
        watcher.frames().is_empty(),
        "the valid SEND did not happen either"
    );

    // A valid SEND, then one over the room's size limit: refused on the receipt, none applied.
    let mut c = Client::connected(&b);
    c.send(frame("BEGIN", &[("transaction", "b")]));
    c.send(
        frame(
            "SEND",
            &[("destination", "/topic/chat.tx"), ("transaction", "b")],
        )
        .body("ok"),
    );
    c.send(
        frame(
            "SEND",
            &[("destination", "/topic/chat.tx"), ("transaction", "b")],
        )
        .body("x".repeat(17 * 1024)),
    );
    assert_eq!(
        c.send(frame("COMMIT", &[("transaction", "b"), ("receipt", "r")])),
        Flow::Continue
    );
    let receipt = c.frames().pop().expect("a receipt");
    assert_eq!(receipt.headers.get("x-error"), Some("too-large"));
    assert!(
        watcher.frames().is_empty(),
        "nothing of the transaction was published"
    );

    // More SENDs than the room's burst allows, each fine alone: none applied.
    let mut c = Client::connected(&b);
    c.send(frame("BEGIN", &[("transaction", "c")]));
    for _ in 0..41 {
        c.send(
            frame(
                "SEND",
                &[("destination", "/topic/chat.tx"), ("transaction", "c")],
            )
            .body("m"),
        );
    }
    c.send(frame("COMMIT", &[("transaction", "c"), ("receipt", "r")]));
    let receipt = c.frames().pop().expect("a receipt");
    assert_eq!(receipt.headers.get("x-error"), Some("rate-limited"));
    assert!(watcher.frames().is_empty());

    // Within the limits, everything happens.
    c.send(frame("BEGIN", &[("transaction", "d")]));
    c.send(
        frame(
            "SEND",
            &[("destination", "/queue/tx"), ("transaction", "d")],
        )
        .body("1"),
    );
    c.send(
        frame(
            "SEND",
            &[("destination", "/topic/chat.tx"), ("transaction", "d")],
        )
        .body("2"),
    );
    c.send(frame("COMMIT", &[("transaction", "d")]));
    assert_eq!(watcher.bodies(), ["1", "2"]);
}

fn broker_with_queues(queues: Vec<crate::broker::QueuePolicy>) -> Arc<Broker> {
    Arc::new(Broker::configured(
        vec![crate::broker::TopicPolicy::chat_default()],
        queues,
        crate::broker::Memory::unlimited(),
    ))
}

fn queue_policy(
    max_length: usize,
    max_length_bytes: u64,
    overflow: crate::broker::Overflow,
) -> crate::broker::QueuePolicy {
    crate::broker::QueuePolicy {
        pattern: "/queue/limited.*".into(),
        max_length,
        max_length_bytes,
        overflow,
        ..crate::broker::QueuePolicy::unlimited()
    }
}

#[test]
fn a_full_queue_rejects_publishes_on_the_receipt() {
    let b = broker_with_queues(vec![queue_policy(
        2,
        0,
        crate::broker::Overflow::RejectPublish,
    )]);
    let mut c = Client::connected(&b);
    for body in ["1", "2"] {
        c.send(send("/queue/limited.a", body).header("receipt", body));
    }
    c.send(send("/queue/limited.a", "3").header("receipt", "3"));
    let receipts = c.frames();
    assert_eq!(receipts.len(), 3);
    assert_eq!(receipts[1].headers.get("x-error"), None);
    assert_eq!(receipts[2].headers.get("x-error"), Some("queue-full"));
    assert!(
        receipts[2]
            .headers
            .get("message")
            .unwrap()
            .contains("max_length 2")
    );
    // Without a receipt: an ERROR, and the connection closes.
    let error = c.error(send("/queue/limited.a", "4"));
    assert!(error.headers.get("message").unwrap().contains("is full"));
    // Other queues are not limited, and consuming makes room.
    let mut consumer = Client::connected(&b);
    consumer.send(subscribe("s", "/queue/limited.a", "auto"));
    assert_eq!(consumer.bodies(), ["1", "2"]);
    let mut c = Client::connected(&b);
    c.send(send("/queue/limited.a", "5").header("receipt", "5"));
    assert_eq!(c.frames()[0].headers.get("x-error"), None);
}

#[test]
fn a_full_drop_head_queue_drops_its_oldest_messages() {
    let b = broker_with_queues(vec![queue_policy(
        0,
        3 * 600,
        crate::broker::Overflow::DropHead,
    )]);
    let mut c = Client::connected(&b);
    for i in 0..6 {
        c.send(send("/queue/limited.b", &format!("{i}{}", "x".repeat(100))));
    }
    assert!(c.frames().is_empty(), "nothing refused");
    let mut consumer = Client::connected(&b);
    consumer.send(subscribe("s", "/queue/limited.b", "auto"));
    let firsts: Vec<char> = consumer
        .bodies()
        .iter()
        .map(|b| b.chars().next().unwrap())
        .collect();
    assert_eq!(
        firsts,
        ['3', '4', '5'],
        "the newest three that fit in 1800 bytes (about 544 each)"
    );
    assert_eq!(b.stats().dropped_from_queues(), 3);
}

#[test]
fn a_room_limit_counts_headers_as_well_as_the_body() {
    let b = broker();
    let mut c = Client::connected(&b);
    let padding = "h".repeat(15_000);
    // A tiny body under 16 KiB of headers is over the chat room's 16 KiB limit.
    c.send(
        send("/topic/chat.headers", "hi")
            .header("x-a", padding.as_str())
            .header("x-b", padding.as_str())
            .header("receipt", "r"),
    );
    let receipt = c.frames().pop().expect("a receipt");
    assert_eq!(receipt.headers.get("x-error"), Some("too-large"));
}

#[test]
fn commit_checks_queue_room_for_all_its_sends() {
    let b = broker_with_queues(vec![queue_policy(
        2,
        0,
        crate::broker::Overflow::RejectPublish,
    )]);
    let mut c = Client::connected(&b);
    c.send(frame("BEGIN", &[("transaction", "t")]));
    for body in ["1", "2", "3"] {
        c.send(
            frame(
                "SEND",
                &[("destination", "/queue/limited.tx"), ("transaction", "t")],
            )
            .body(body),
        );
    }
    c.send(frame("COMMIT", &[("transaction", "t"), ("receipt", "r")]));
    assert_eq!(
        c.frames().pop().unwrap().headers.get("x-error"),
        Some("queue-full")
    );
    let mut consumer = Client::connected(&b);
    consumer.send(subscribe("s", "/queue/limited.tx", "auto"));
    assert!(consumer.bodies().is_empty(), "none of the three was queued");
}

#[test]
fn transactions_are_bounded_in_bytes_and_counted_in_memory() {
    let b = broker();
    let settings = SessionSettings {
        max_transaction_bytes: 10_000,
        ..SessionSettings::default()
    };
    let mut c = Client::with(&b, settings, true, 100);
    c.send(frame("CONNECT", &[("accept-version", "1.2")]));
    c.frames();
    c.send(frame("BEGIN", &[("transaction", "t")]));
    let body = "z".repeat(4000);
    for _ in 0..2 {
        c.send(
            frame(
                "SEND",
                &[("destination", "/queue/tx-bytes"), ("transaction", "t")],
            )
            .body(body.clone()),
        );
    }
    assert!(
        b.memory().used() >= 8000,
        "buffered bytes are counted: {}",
        b.memory().used()
    );
    c.send(frame("ABORT", &[("transaction", "t")]));
    assert_eq!(
        b.memory().used(),
        0,
        "an aborted transaction gives its bytes back"
    );
    c.send(frame("BEGIN", &[("transaction", "u")]));
    for _ in 0..2 {
        c.send(
            frame(
                "SEND",
                &[("destination", "/queue/tx-bytes"), ("transaction", "u")],
            )
            .body(body.clone()),
        );
    }
    let error = c.error(
        frame(
            "SEND",
            &[("destination", "/queue/tx-bytes"), ("transaction", "u")],
        )
        .body(body.clone()),
    );
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("max_transaction_bytes")
    );
    c.session.close();
    assert_eq!(
        b.memory().used(),
        0,
        "a closed connection's transactions give their bytes back"
    );
}
