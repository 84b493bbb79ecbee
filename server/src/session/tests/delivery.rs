//! Delivery guarantees, by feeding frames: priorities, delays, expiry,
//! delivery counts, ack deadlines, dead-letter queues, deduplicated SEND.
//! Time is a manual clock the test moves, and ack deadlines are passed an
//! explicit "now": nothing here sleeps.

use std::time::Duration;

use super::*;
use crate::broker::{Clock, Memory, QueuePolicy, TopicPolicy};

const START_MS: u64 = 1_700_000_000_000;

fn broker_with(queues: Vec<QueuePolicy>) -> Arc<Broker> {
    Arc::new(
        Broker::configured(
            vec![TopicPolicy::chat_default()],
            queues,
            Memory::unlimited(),
        )
        .with_clock(Clock::manual(START_MS)),
    )
}

fn policy(pattern: &str) -> QueuePolicy {
    QueuePolicy {
        pattern: pattern.into(),
        ..QueuePolicy::unlimited()
    }
}

fn send_with(dest: &str, body: &str, headers: &[(&str, &str)]) -> Frame {
    let mut f = send(dest, body);
    for (n, v) in headers {
        f = f.header(*n, *v);
    }
    f
}

fn messages(c: &mut Client) -> Vec<Frame> {
    c.frames()
        .into_iter()
        .filter(|f| f.command == Command::Message)
        .collect()
}

fn ack_of(f: &Frame) -> String {
    f.headers.get("ack").expect("an ack header").to_string()
}

/// Moves the broker's clock on and runs what falls due.
fn advance(broker: &Broker, ms: u64) {
    broker.clock().advance(ms);
    broker.run_timers();
}

#[test]
fn higher_priorities_go_first_and_fifo_within_one() {
    let b = broker_with(vec![]);
    let mut p = Client::connected(&b);
    for (body, priority) in [
        ("low", "1"),
        ("urgent-1", "9"),
        ("normal", ""),
        ("urgent-2", "9"),
    ] {
        let headers: Vec<(&str, &str)> = if priority.is_empty() {
            vec![]
        } else {
            vec![("priority", priority)]
        };
        p.send(send_with("/queue/work", body, &headers));
    }
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/work", "auto"));
    assert_eq!(c.bodies(), ["urgent-1", "urgent-2", "normal", "low"]);
}

#[test]
fn every_queue_delivery_counts_its_earlier_failures() {
    let b = broker_with(vec![]);
    let mut c = Client::connected(&b);
    c.send(send("/queue/jobs", "j"));
    c.send(subscribe("s", "/queue/jobs", "client-individual"));
    let first = messages(&mut c);
    assert_eq!(first[0].headers.get("x-delivery-count"), Some("0"));
    assert_eq!(first[0].headers.get("redelivered"), None);
    c.send(frame("NACK", &[("id", &ack_of(&first[0]))]));
    let second = messages(&mut c);
    assert_eq!(second[0].headers.get("x-delivery-count"), Some("1"));
    assert_eq!(second[0].headers.get("redelivered"), Some("true"));
    // A topic message has no count.
    c.send(subscribe("t", "/topic/news", "auto"));
    c.send(send("/topic/news", "n"));
    assert_eq!(messages(&mut c)[0].headers.get("x-delivery-count"), None);
}

#[test]
fn nack_without_requeue_dead_letters_with_the_reason() {
    let b = broker_with(vec![]);
    let mut c = Client::connected(&b);
    c.send(send_with("/queue/jobs", "bad input", &[("app", "kept")]));
    c.send(subscribe("s", "/queue/jobs", "client-individual"));
    let m = messages(&mut c);
    c.send(frame(
        "NACK",
        &[
            ("id", &ack_of(&m[0])),
            ("requeue", "false"),
            ("receipt", "r"),
        ],
    ));
    assert_eq!(c.frames()[0].command, Command::Receipt);
    c.send(subscribe("d", "/queue/DLQ.jobs", "auto"));
    let dead = messages(&mut c);
    assert_eq!(dead.len(), 1);
    let h = &dead[0].headers;
    assert_eq!(String::from_utf8_lossy(&dead[0].body), "bad input");
    assert_eq!(h.get("x-death-reason"), Some("rejected"));
    assert_eq!(h.get("x-original-destination"), Some("/queue/jobs"));
    assert_eq!(h.get("x-death-count"), Some("1"));
    assert_eq!(h.get("app"), Some("kept"));
    assert_eq!(b.stats().dead_lettered(), 1);
}

#[test]
fn a_message_failing_max_deliveries_times_goes_to_its_dead_letter_queue() {
    let b = broker_with(vec![QueuePolicy {
        max_deliveries: 2,
        dead_letter: Some("/queue/failed".into()),
        ..policy("/queue/jobs")
    }]);
    let mut c = Client::connected(&b);
    c.send(send("/queue/jobs", "poison"));
    c.send(subscribe("s", "/queue/jobs", "client-individual"));
    for expected in ["0", "1"] {
        let m = messages(&mut c);
        assert_eq!(m[0].headers.get("x-delivery-count"), Some(expected));
        c.send(frame("NACK", &[("id", &ack_of(&m[0]))]));
    }
    assert!(messages(&mut c).is_empty(), "delivered a third time");
    c.send(subscribe("d", "/queue/failed", "auto"));
    let dead = messages(&mut c);
    assert_eq!(
        dead[0].headers.get("x-death-reason"),
        Some("max-deliveries")
    );
    assert_eq!(String::from_utf8_lossy(&dead[0].body), "poison");
}

#[test]
fn expired_messages_are_never_delivered_and_are_dead_lettered() {
    let b = broker_with(vec![]);
    let mut p = Client::connected(&b);
    p.send(send_with("/queue/jobs", "stale", &[("expiration", "100")]));
    let absolute = (START_MS + 50).to_string();
    p.send(send_with(
        "/queue/jobs",
        "stale too",
        &[("expires", &absolute)],
    ));
    p.send(send_with(
        "/queue/jobs",
        "fresh",
        &[("expiration", "60000")],
    ));
    advance(&b, 101);
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/jobs", "auto"));
    assert_eq!(c.bodies(), ["fresh"]);
    c.send(subscribe("d", "/queue/DLQ.jobs", "auto"));
    let dead = messages(&mut c);
    assert_eq!(dead.len(), 2);
    assert!(
        dead.iter()
            .all(|m| m.headers.get("x-death-reason") == Some("expired")
                && m.headers.get("expiration").is_none())
    );
}

#[test]
fn a_queue_ttl_expires_messages_nobody_takes_even_without_consumers() {
    let b = broker_with(vec![QueuePolicy {
        message_ttl_ms: 1000,
        dead_letter: Some(String::new()),
        ..policy("/queue/ttl")
    }]);
    let mut p = Client::connected(&b);
    p.send(send("/queue/ttl", "a"));
    advance(&b, 999);
    assert_eq!(b.stats().dead_letters_dropped(), 0);
    advance(&b, 102);
    // Taken out by the timer: counted as dropped (no dead-letter queue).
    assert_eq!(b.stats().dead_letters_dropped(), 1);
    let Ok(crate::broker::Destination::Queue(q)) = b.destination("/queue/ttl") else {
        panic!("a queue");
    };
    assert_eq!(q.depth(), 0);
}

fn queue(b: &Broker, name: &str) -> Arc<crate::broker::QueueDestination> {
    match b.destination(name) {
        Ok(crate::broker::Destination::Queue(q)) => q,
        _ => panic!("{name} is a queue"),
    }
}

#[test]
fn messages_past_the_memory_window_wait_packed_and_come_back_whole() {
    let b = broker_with(vec![QueuePolicy {
        memory_window_bytes: 2000,
        ..policy("/queue/big")
    }]);
    let mut p = Client::connected(&b);
    for i in 0..40 {
        let n = i.to_string();
        let mut headers = vec![("x-n", n.as_str()), ("content-type", "text/plain")];
        if i % 4 == 0 {
            headers.push(("priority", "9"));
        }
        p.send(send_with("/queue/big", &format!("m{i}"), &headers));
    }
    let q = queue(&b, "/queue/big");
    assert_eq!(q.depth(), 40);
    assert!(q.packed() > 30, "only {} packed", q.packed());
    // Packed, they are charged what they take, not a message's allowance.
    let held = b.memory().used();
    assert!(
        held < 40 * crate::broker::MESSAGE_OVERHEAD / 2,
        "{held} bytes charged"
    );
    // Looking does not take them out; order is priority, then arrival.
    let peeked = q.peek(100);
    assert_eq!(peeked.len(), 40);
    assert_eq!(&peeked[0].body[..], b"m0");
    assert_eq!(&peeked[10].body[..], b"m1");
    // One packed message taken out by id.
    let m17 = peeked.iter().find(|m| &m.body[..] == b"m17").expect("m17");
    assert!(q.remove(m17.id.number()));
    assert_eq!(q.depth(), 39);

    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/big", "auto"));
    let got = messages(&mut c);
    let bodies: Vec<String> = got
        .iter()
        .map(|f| String::from_utf8_lossy(&f.body).into_owned())
        .collect();
    let mut expected: Vec<String> = (0..40).step_by(4).map(|i| format!("m{i}")).collect();
    expected.extend(
        (0..40)
            .filter(|i| i % 4 != 0 && *i != 17)
            .map(|i| format!("m{i}")),
    );
    assert_eq!(bodies, expected);
    for f in &got {
        let n = f.headers.get("x-n").expect("x-n kept");
        assert_eq!(String::from_utf8_lossy(&f.body), format!("m{n}"));
        assert_eq!(f.headers.get("content-type"), Some("text/plain"));
        assert_eq!(f.headers.get("destination"), Some("/queue/big"));
        assert!(f.headers.get("x-sender").is_some());
        assert!(f.headers.get("message-id").is_some());
    }
    assert_eq!(q.depth(), 0);
    assert_eq!(q.packed(), 0);
    drop((got, peeked));
    assert_eq!(b.memory().used(), 0, "every charge given back");
}

#[test]
fn packed_messages_expire_on_time_without_consumers() {
    let b = broker_with(vec![QueuePolicy {
        memory_window_bytes: 1000,
        message_ttl_ms: 1000,
        dead_letter: Some(String::new()),
        ..policy("/queue/ttl")
    }]);
    let mut p = Client::connected(&b);
    for i in 0..20 {
        p.send(send("/queue/ttl", &format!("m{i}")));
    }
    let q = queue(&b, "/queue/ttl");
    assert!(q.packed() > 15, "only {} packed", q.packed());
    advance(&b, 999);
    assert_eq!(q.depth(), 20);
    advance(&b, 102);
    assert_eq!(b.stats().dead_letters_dropped(), 20);
    assert_eq!(q.depth(), 0);
    assert_eq!(q.packed(), 0);
}

#[test]
fn delayed_messages_wait_for_their_time() {
    let b = broker_with(vec![]);
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/later", "auto"));
    c.send(send_with(
        "/queue/later",
        "in 500 ms",
        &[("x-delay", "500")],
    ));
    c.send(send_with(
        "/queue/later",
        "in 200 ms",
        &[("AMQ_SCHEDULED_DELAY", "200")],
    ));
    c.send(send("/queue/later", "now"));
    assert_eq!(c.bodies(), ["now"]);
    advance(&b, 199);
    assert!(c.bodies().is_empty());
    advance(&b, 1);
    assert_eq!(c.bodies(), ["in 200 ms"]);
    advance(&b, 300);
    assert_eq!(c.bodies(), ["in 500 ms"]);
}

#[test]
fn an_ack_deadline_takes_back_only_that_message_and_a_late_ack_is_told() {
    let b = broker_with(vec![]);
    let mut slow = Client::connected(&b);
    slow.send(frame(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/jobs"),
            ("ack", "client-individual"),
            ("x-ack-timeout", "1000"),
        ],
    ));
    slow.send(send("/queue/jobs", "job"));
    let m = messages(&mut slow);
    assert_eq!(m.len(), 1);
    let started = tokio::time::Instant::now();
    assert!(
        slow.session
            .next_ack_deadline()
            .is_some_and(|d| d > started)
    );
    let mut other = Client::connected(&b);
    other.send(subscribe("s", "/queue/jobs", "client-individual"));
    assert!(messages(&mut other).is_empty());
    // Not yet due: nothing moves.
    assert_eq!(slow.session.expire_acks(started), 0);
    assert_eq!(
        slow.session
            .expire_acks(started + Duration::from_millis(1001)),
        1
    );
    let again = messages(&mut other);
    assert_eq!(String::from_utf8_lossy(&again[0].body), "job");
    assert_eq!(again[0].headers.get("x-delivery-count"), Some("1"));
    // The slow worker's late ACK: told on the receipt, connection kept.
    let flow = slow.send(frame("ACK", &[("id", &ack_of(&m[0])), ("receipt", "late")]));
    assert_eq!(flow, Flow::Continue);
    let receipt = &slow.frames()[0];
    assert_eq!(receipt.headers.get("x-error"), Some("ack-expired"));
    assert!(receipt.headers.get("message").unwrap().contains("1000 ms"));
    // Without a receipt, an ERROR that says what happened.
    let error = slow.error(frame("ACK", &[("id", &ack_of(&m[0]))]));
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("ack deadline")
    );
}

#[test]
fn a_queue_policy_sets_the_ack_deadline_and_auto_ack_has_none() {
    let b = broker_with(vec![QueuePolicy {
        ack_timeout_ms: 250,
        ..policy("/queue/jobs")
    }]);
    let mut c = Client::connected(&b);
    c.send(subscribe("a", "/queue/jobs", "auto"));
    c.send(send("/queue/jobs", "1"));
    assert_eq!(c.bodies(), ["1"]);
    assert!(c.session.next_ack_deadline().is_none());
    c.send(frame("UNSUBSCRIBE", &[("id", "a")]));
    c.send(subscribe("c", "/queue/jobs", "client"));
    c.send(send("/queue/jobs", "2"));
    assert_eq!(messages(&mut c).len(), 1);
    let deadline = c.session.next_ack_deadline().expect("a deadline");
    let now = tokio::time::Instant::now();
    assert!(deadline <= now + Duration::from_millis(250));
}

#[test]
fn a_repeated_dedup_id_is_confirmed_but_enqueued_once() {
    let b = broker_with(vec![]);
    let mut p = Client::connected(&b);
    for (i, header) in ["x-dedup-id", "x-dedup-id", "_AMQ_DUPL_ID"]
        .iter()
        .enumerate()
    {
        let receipt = format!("r{i}");
        p.send(send_with(
            "/queue/orders",
            "order 42",
            &[(header, "order-42"), ("receipt", &receipt)],
        ));
    }
    let receipts: Vec<_> = p
        .frames()
        .iter()
        .map(|f| f.headers.get("receipt-id").unwrap_or_default().to_string())
        .collect();
    assert_eq!(receipts, ["r0", "r1", "r2"]);
    p.send(send_with(
        "/queue/orders",
        "order 43",
        &[("x-dedup-id", "order-43")],
    ));
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/orders", "auto"));
    assert_eq!(c.bodies(), ["order 42", "order 43"]);
    assert_eq!(b.stats().duplicates(), 2);
}

#[test]
fn the_dedup_window_forgets_ids_after_its_time() {
    let b = broker_with(vec![QueuePolicy {
        dedup_window_secs: 10,
        ..policy("/queue/orders")
    }]);
    let mut p = Client::connected(&b);
    p.send(send_with("/queue/orders", "first", &[("x-dedup-id", "a")]));
    advance(&b, 9_999);
    p.send(send_with("/queue/orders", "repeat", &[("x-dedup-id", "a")]));
    advance(&b, 1);
    p.send(send_with(
        "/queue/orders",
        "new again",
        &[("x-dedup-id", "a")],
    ));
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/orders", "auto"));
    assert_eq!(c.bodies(), ["first", "new again"]);
}

#[test]
fn out_of_range_terms_are_refused_and_nothing_is_enqueued() {
    let b = broker_with(vec![]);
    for (header, value, range) in [
        ("priority", "99", "from 0 (lowest) to 9"),
        ("x-delay", "-5", "from 0 to 4294967295"),
        ("expires", "soon", "since the Unix epoch"),
        ("expiration", "1.5", "non-negative number of milliseconds"),
        ("AMQ_SCHEDULED_DELAY", "later", "from 0 to 4294967295"),
    ] {
        let mut c = Client::connected(&b);
        let error = c.error(send_with("/queue/strict", "x", &[(header, value)]));
        let message = error.headers.get("message").unwrap();
        assert!(
            message.contains(header) && message.contains(range),
            "{message}"
        );
    }
    let mut c = Client::connected(&b);
    let error = c.error(frame(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/strict"),
            ("x-ack-timeout", "0"),
        ],
    ));
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("x-ack-timeout")
    );
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/strict", "client-individual"));
    assert!(messages(&mut c).is_empty(), "nothing was enqueued");
    c.send(send("/queue/strict", "x"));
    let m = messages(&mut c);
    let error = c.error(frame(
        "NACK",
        &[("id", &ack_of(&m[0])), ("requeue", "maybe")],
    ));
    assert!(error.headers.get("message").unwrap().contains("requeue"));
}

#[test]
fn dead_letter_cycles_are_broken() {
    let b = broker_with(vec![
        QueuePolicy {
            dead_letter: Some("/queue/b".into()),
            ..policy("/queue/a")
        },
        QueuePolicy {
            dead_letter: Some("/queue/a".into()),
            ..policy("/queue/b")
        },
    ]);
    let mut c = Client::connected(&b);
    c.send(send("/queue/a", "hot potato"));
    c.send(subscribe("a", "/queue/a", "client-individual"));
    let m = messages(&mut c);
    c.send(frame(
        "NACK",
        &[("id", &ack_of(&m[0])), ("requeue", "false")],
    ));
    c.send(subscribe("b", "/queue/b", "client-individual"));
    let m = messages(&mut c);
    assert_eq!(m[0].headers.get("x-death-queues"), Some("/queue/a"));
    c.send(frame(
        "NACK",
        &[("id", &ack_of(&m[0])), ("requeue", "false")],
    ));
    // Back to /queue/a would close the loop: dropped, counted.
    assert!(messages(&mut c).is_empty());
    assert_eq!(b.stats().dead_letters_dropped(), 1);
    assert_eq!(b.stats().dead_lettered(), 1);
}

#[test]
fn a_full_dead_letter_overflow_queue_moves_its_oldest_aside() {
    let b = broker_with(vec![QueuePolicy {
        max_length: 2,
        overflow: crate::broker::Overflow::DeadLetter,
        ..policy("/queue/bounded")
    }]);
    let mut p = Client::connected(&b);
    for body in ["1", "2", "3"] {
        p.send(send("/queue/bounded", body));
    }
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/bounded", "auto"));
    assert_eq!(c.bodies(), ["2", "3"]);
    c.send(subscribe("d", "/queue/DLQ.bounded", "auto"));
    let dead = messages(&mut c);
    assert_eq!(String::from_utf8_lossy(&dead[0].body), "1");
    assert_eq!(dead[0].headers.get("x-death-reason"), Some("overflow"));
}
