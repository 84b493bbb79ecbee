//! Queues by feeding frames: round-robin, prefetch credit, ACK and NACK in
//! every version's form, and what comes back when a consumer goes.

use super::*;

#[test]
fn nack_does_not_exist_in_1_0() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send(frame("CONNECT", &[]));
    c.frames();
    c.error(frame("NACK", &[("message-id", "m-1")]));
}

#[test]
fn queue_round_robins_and_delivers_each_message_once() {
    let b = broker();
    let mut c1 = Client::connected(&b);
    let mut c2 = Client::connected(&b);
    c1.send(subscribe("a", "/queue/work", "auto"));
    c2.send(subscribe("b", "/queue/work", "auto"));
    let mut p = Client::connected(&b);
    for i in 0..10 {
        p.send(send("/queue/work", &i.to_string()));
    }
    let one = c1.bodies();
    let two = c2.bodies();
    assert_eq!(one, ["0", "2", "4", "6", "8"]);
    assert_eq!(two, ["1", "3", "5", "7", "9"]);
}

#[test]
fn queue_keeps_messages_until_a_consumer_comes() {
    let b = broker();
    let mut p = Client::connected(&b);
    p.send(send("/queue/later", "1"));
    p.send(send("/queue/later", "2"));
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/later", "auto"));
    assert_eq!(c.bodies(), ["1", "2"]);
}

#[test]
fn prefetch_limits_unacked_deliveries() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(frame(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/pf"),
            ("ack", "client-individual"),
            ("prefetch-count", "2"),
        ],
    ));
    let mut p = Client::connected(&b);
    for i in 0..5 {
        p.send(send("/queue/pf", &i.to_string()));
    }
    let frames = c.frames();
    assert_eq!(frames.len(), 2);
    let ack = frames[0].headers.get("ack").unwrap().to_string();
    c.send(frame("ACK", &[("id", &ack)]));
    assert_eq!(c.bodies(), ["2"]);
}

#[test]
fn acks_of_one_read_are_settled_together_and_before_any_other_frame() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(frame(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/queue/batch"),
            ("ack", "client-individual"),
            ("prefetch-count", "2"),
        ],
    ));
    let mut p = Client::connected(&b);
    for i in 0..8 {
        p.send(send("/queue/batch", &i.to_string()));
    }
    let acks = |frames: Vec<Frame>| -> Vec<String> {
        frames
            .iter()
            .map(|f| f.headers.get("ack").expect("an ack header").to_string())
            .collect()
    };
    // Two ACKs read together: nothing moves until the read is over...
    for id in acks(c.frames()) {
        assert_eq!(
            c.session.handle_in_batch(frame("ACK", &[("id", &id)])),
            Flow::Continue
        );
    }
    assert!(c.frames().is_empty(), "settled before the read ended");
    // ...then both credits come back at once.
    c.session.settle_acked();
    let next = c.frames();
    assert_eq!(next.len(), 2);
    // An ACK with a receipt is settled before its RECEIPT is written: the
    // credit it returned has already brought the next message.
    let ids = acks(next);
    c.session
        .handle_in_batch(frame("ACK", &[("id", &ids[0]), ("receipt", "r1")]));
    let frames = c.frames();
    let commands: Vec<Command> = frames.iter().map(|f| f.command).collect();
    assert_eq!(commands, [Command::Message, Command::Receipt]);
    // Any other frame settles the ACKs before it: here the DISCONNECT's
    // receipt is held until they are.
    let mut left = vec![ids[1].clone()];
    left.extend(acks(frames[..1].to_vec()));
    for id in &left {
        c.session.handle_in_batch(frame("ACK", &[("id", id)]));
    }
    let acknowledged = || match b.existing_destination("/queue/batch") {
        Some(crate::broker::Destination::Queue(q)) => q.counts().acknowledged,
        _ => panic!("the queue is gone"),
    };
    assert_eq!(acknowledged(), 3, "the last two wait for the read to end");
    c.session
        .handle_in_batch(frame("UNSUBSCRIBE", &[("id", "s")]));
    assert_eq!(acknowledged(), 5, "settled before the UNSUBSCRIBE");
    let mut d = Client::connected(&b);
    d.send(subscribe("t", "/queue/batch", "auto"));
    assert_eq!(d.bodies(), ["5", "6", "7"], "no acknowledged one came back");
}

#[test]
fn client_ack_is_cumulative_within_its_subscription_only() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("x", "/queue/cx", "client"));
    c.send(subscribe("y", "/queue/cy", "client"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/cx", "x1"));
    p.send(send("/queue/cy", "y1"));
    p.send(send("/queue/cx", "x2"));
    let frames = c.frames();
    let x2 = frames.iter().find(|f| &f.body[..] == b"x2").unwrap();
    c.send(frame("ACK", &[("id", x2.headers.get("ack").unwrap())]));
    assert!(c.frames().is_empty());
    // x1 and x2 are gone; y1 is still unacked and comes back on close.
    c.session.close();
    let mut d = Client::connected(&b);
    d.send(subscribe("x", "/queue/cx", "auto"));
    d.send(subscribe("y", "/queue/cy", "auto"));
    let frames = d.frames();
    let bodies: Vec<_> = frames
        .iter()
        .map(|f| String::from_utf8_lossy(&f.body).into_owned())
        .collect();
    assert_eq!(bodies, ["y1"]);
    assert_eq!(frames[0].headers.get("redelivered"), Some("true"));
}

#[test]
fn nack_requeues_at_the_head_marked_redelivered() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/n", "client-individual"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/n", "first"));
    p.send(send("/queue/n", "second"));
    let frames = c.frames();
    let first_ack = frames[0].headers.get("ack").unwrap().to_string();
    c.send(frame("NACK", &[("id", &first_ack)]));
    let again = c.frames();
    assert_eq!(&again[0].body[..], b"first");
    assert_eq!(again[0].headers.get("redelivered"), Some("true"));
    // The old ack id is spent.
    c.error(frame("ACK", &[("id", &first_ack)]));
}

#[test]
fn unsubscribe_and_disconnect_requeue_unacked() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/u", "client"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/u", "kept"));
    assert_eq!(c.bodies(), ["kept"]);
    c.send(frame("UNSUBSCRIBE", &[("id", "s")]));
    let mut d = Client::connected(&b);
    d.send(subscribe("s", "/queue/u", "client"));
    assert_eq!(d.bodies(), ["kept"]);
    assert_eq!(
        d.send(frame("DISCONNECT", &[("receipt", "bye")])),
        Flow::Close(CloseReason::ClientDisconnect)
    );
    assert_eq!(d.frames()[0].headers.get("receipt-id"), Some("bye"));
    drop(d);
    let mut e = Client::connected(&b);
    e.send(subscribe("s", "/queue/u", "auto"));
    assert_eq!(e.bodies(), ["kept"]);
}

#[test]
fn ack_by_message_id_in_1_1() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send(frame("CONNECT", &[("accept-version", "1.1")]));
    c.frames();
    c.send(subscribe("s", "/queue/v11", "client-individual"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/v11", "m"));
    let frames = c.frames();
    let id = frames[0].headers.get("message-id").unwrap().to_string();
    c.send(frame(
        "ACK",
        &[("message-id", &id), ("subscription", "s"), ("receipt", "r")],
    ));
    assert_eq!(c.frames()[0].command, Command::Receipt);
    c.error(frame(
        "ACK",
        &[("message-id", &id), ("subscription", "other")],
    ));
}
