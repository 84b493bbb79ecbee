//! Session rules, tested by feeding frames and reading what comes out of
//! the outbox: no sockets, no timers.

use std::sync::Arc;

use bytes::BytesMut;
use stomp_codec::{Command, Decoded, Frame, FrameDecoder};

use super::driver::Outgoing;

use super::*;
use crate::outbox::{Outbox, SlowConsumerPolicy};

mod delivery;
mod safety;

struct Client {
    session: Session,
    outbox: Arc<Outbox>,
}

impl Client {
    fn new(broker: &Arc<Broker>) -> Client {
        Client::with(broker, SessionSettings::default(), true, 100)
    }

    fn with(
        broker: &Arc<Broker>,
        settings: SessionSettings,
        loopback: bool,
        backlog: usize,
    ) -> Client {
        let outbox = Arc::new(Outbox::new(backlog, SlowConsumerPolicy::Disconnect));
        Client {
            session: Session::new(broker.clone(), Arc::new(settings), outbox.clone(), loopback),
            outbox,
        }
    }

    fn connected(broker: &Arc<Broker>) -> Client {
        let mut c = Client::new(broker);
        let flow = c.send(frame(
            "CONNECT",
            &[("accept-version", "1.2"), ("host", "x")],
        ));
        assert!(matches!(flow, Flow::Connected { .. }), "{flow:?}");
        assert_eq!(c.frames()[0].command, Command::Connected);
        c
    }

    fn send(&mut self, frame: Frame) -> Flow {
        self.session.handle(frame)
    }

    /// What the driver would write now, in order: encoded as the
    /// transports do, and decoded back as the client would read it.
    fn frames(&mut self) -> Vec<Frame> {
        let mut items = Vec::new();
        self.outbox.drain_into(&mut items);
        let version = self.session.version().unwrap_or(Version::V1_2);
        let mut wire = BytesMut::new();
        for item in items {
            let outgoing = match item {
                Outbound::Frame(f) => Outgoing::Frame(f),
                Outbound::Delivery(d) => self.session.render(d),
            };
            outgoing.encode(version, &mut wire).expect("encodable");
        }
        self.session.settle_written();
        let mut decoder = FrameDecoder::new();
        decoder.set_version(version);
        let mut frames = Vec::new();
        while let Some(item) = decoder.decode(&mut wire).expect("decodable") {
            if let Decoded::Frame(f) = item {
                frames.push(f);
            }
        }
        frames
    }

    fn bodies(&mut self) -> Vec<String> {
        self.frames()
            .into_iter()
            .filter(|f| f.command == Command::Message)
            .map(|f| String::from_utf8_lossy(&f.body).into_owned())
            .collect()
    }

    fn error(&mut self, frame: Frame) -> Frame {
        let flow = self.send(frame);
        assert!(
            matches!(flow, Flow::Close(CloseReason::ProtocolError(_))),
            "{flow:?}"
        );
        let frames = self.frames();
        let error = frames.last().expect("an ERROR frame").clone();
        assert_eq!(error.command, Command::Error);
        assert!(error.headers.get("message").is_some_and(|m| !m.is_empty()));
        error
    }
}

fn frame(command: &str, headers: &[(&str, &str)]) -> Frame {
    let mut f = Frame::new(Command::from_bytes(command.as_bytes()).expect("a command"));
    for (n, v) in headers {
        f = f.header(*n, *v);
    }
    f
}

fn send(dest: &str, body: &str) -> Frame {
    frame("SEND", &[("destination", dest)]).body(body.to_string())
}

/// Users of these logins, each with the password `pw` (hashed cheaply).
fn users_with_password_pw(logins: &[&str]) -> std::collections::HashMap<String, String> {
    logins
        .iter()
        .map(|l| {
            (
                l.to_string(),
                crate::security::passwords::hash_for_tests("pw"),
            )
        })
        .collect()
}

/// A client connected as `who` with the password `pw`.
fn logged_in(broker: &Arc<Broker>, settings: &SessionSettings, who: &str) -> Client {
    let mut c = Client::with(broker, settings.clone(), true, 100);
    c.send(frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", who),
            ("passcode", "pw"),
        ],
    ));
    let connected = c.frames();
    assert_eq!(connected[0].command, Command::Connected, "{connected:?}");
    c
}

fn subscribe(id: &str, dest: &str, ack: &str) -> Frame {
    frame(
        "SUBSCRIBE",
        &[("id", id), ("destination", dest), ("ack", ack)],
    )
}

fn broker() -> Arc<Broker> {
    Arc::new(Broker::new())
}

// --- CONNECT ------------------------------------------------------------------------

#[test]
fn frames_before_connect_are_refused() {
    let b = broker();
    let mut c = Client::new(&b);
    let error = c.error(send("/queue/a", "x"));
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("not connected")
    );
    assert!(String::from_utf8_lossy(&error.body).contains("SEND\ndestination:/queue/a"));
}

#[test]
fn version_negotiation() {
    let b = broker();
    for (offered, expected) in [
        (None, "1.0"),
        (Some("1.0,1.1"), "1.1"),
        (Some("1.1,1.2"), "1.2"),
        (Some("1.2,3.0"), "1.2"),
    ] {
        let mut c = Client::new(&b);
        let mut connect = frame("STOMP", &[("host", "x")]);
        if let Some(v) = offered {
            connect = connect.header("accept-version", v);
        }
        c.send(connect);
        let connected = &c.frames()[0];
        assert_eq!(connected.command, Command::Connected);
        assert_eq!(
            connected.headers.get("version"),
            Some(expected),
            "{offered:?}"
        );
        assert!(connected.headers.get("session").is_some());
        assert!(
            connected
                .headers
                .get("server")
                .unwrap()
                .starts_with("stompbox/")
        );
        assert_eq!(connected.headers.get("heart-beat"), Some("10000,10000"));
    }
    let mut c = Client::new(&b);
    let error = c.error(frame("CONNECT", &[("accept-version", "2.0")]));
    assert_eq!(error.headers.get("version"), Some("1.0,1.1,1.2"));
}

#[test]
fn heart_beat_header_is_negotiated_or_refused() {
    let b = broker();
    let mut c = Client::new(&b);
    let flow = c.send(frame(
        "CONNECT",
        &[("accept-version", "1.2"), ("heart-beat", "5000,20000")],
    ));
    assert_eq!(
        flow,
        Flow::Connected {
            version: Version::V1_2,
            // What the client asked for, in both directions.
            heartbeat: Heartbeat::negotiate((5000, 20000), (20_000, 5000)),
        }
    );
    let mut c = Client::new(&b);
    c.error(frame(
        "CONNECT",
        &[("accept-version", "1.2"), ("heart-beat", "soon")],
    ));
}

#[test]
fn second_connect_is_refused() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.error(frame("CONNECT", &[("accept-version", "1.2")]));
}

#[test]
fn credentials_and_anonymous_access() {
    let b = broker();
    let users = SessionSettings {
        users: [(
            "alice".to_string(),
            crate::security::passwords::hash_for_tests("secret"),
        )]
        .into(),
        ..SessionSettings::default()
    };
    let mut c = Client::with(&b, users.clone(), false, 10);
    let ok = c.send(frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "alice"),
            ("passcode", "secret"),
        ],
    ));
    assert!(matches!(ok, Flow::Connected { .. }));
    let mut c = Client::with(&b, users.clone(), false, 10);
    c.error(frame(
        "CONNECT",
        &[
            ("accept-version", "1.2"),
            ("login", "alice"),
            ("passcode", "nope"),
        ],
    ));
    let mut c = Client::with(&b, users, false, 10);
    let e = c.error(frame("CONNECT", &[("accept-version", "1.2")]));
    assert!(e.headers.get("message").unwrap().contains("loopback"));
    let mut c = Client::with(&b, SessionSettings::default(), true, 10);
    assert!(matches!(
        c.send(frame("CONNECT", &[])),
        Flow::Connected { .. }
    ));
}

// --- Bad frames ---------------------------------------------------------------------------

#[test]
fn every_bad_frame_gets_an_error_with_its_receipt() {
    let b = broker();
    let cases = [
        frame("SEND", &[("receipt", "r9")]),
        frame(
            "SUBSCRIBE",
            &[("destination", "/queue/a"), ("receipt", "r9")],
        ),
        frame(
            "SUBSCRIBE",
            &[
                ("id", "1"),
                ("destination", "/queue/a"),
                ("ack", "sometimes"),
                ("receipt", "r9"),
            ],
        ),
        frame(
            "SEND",
            &[("destination", "/elsewhere/a"), ("receipt", "r9")],
        ),
        frame("SEND", &[("destination", "/queue/"), ("receipt", "r9")]),
        frame("UNSUBSCRIBE", &[("id", "nope"), ("receipt", "r9")]),
        frame("ACK", &[("id", "12345"), ("receipt", "r9")]),
        frame("NACK", &[("id", "x"), ("receipt", "r9")]),
        frame("COMMIT", &[("transaction", "t"), ("receipt", "r9")]),
        frame("ABORT", &[("transaction", "t"), ("receipt", "r9")]),
        frame(
            "SEND",
            &[
                ("destination", "/queue/a"),
                ("transaction", "t"),
                ("receipt", "r9"),
            ],
        ),
        frame("MESSAGE", &[("receipt", "r9")]),
        frame(
            "SUBSCRIBE",
            &[
                ("id", "1"),
                ("destination", "/queue/a"),
                ("prefetch-count", "-1"),
                ("receipt", "r9"),
            ],
        ),
    ];
    for bad in cases {
        let mut c = Client::connected(&b);
        let quoted = bad.command.as_str();
        let error = c.error(bad);
        assert_eq!(error.headers.get("receipt-id"), Some("r9"));
        let body = String::from_utf8_lossy(&error.body);
        assert!(body.contains(&format!("-----\n{quoted}\n")), "{body}");
    }
}

#[test]
fn duplicate_subscription_id_is_refused() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/topic/t", "auto"));
    let e = c.error(subscribe("s", "/queue/q", "auto"));
    assert!(e.headers.get("message").unwrap().contains("already in use"));
}

#[test]
fn nack_does_not_exist_in_1_0() {
    let b = broker();
    let mut c = Client::new(&b);
    c.send(frame("CONNECT", &[]));
    c.frames();
    c.error(frame("NACK", &[("message-id", "m-1")]));
}

// --- Receipts and headers -------------------------------------------------------------------

#[test]
fn receipt_follows_the_effect() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("0", "/queue/r", "auto").header("receipt", "sub-1"));
    let frames = c.frames();
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].headers.get("receipt-id"), Some("sub-1"));
    // The subscription is active by the time the receipt is out.
    let mut p = Client::connected(&b);
    p.send(send("/queue/r", "hi").header("receipt", "s-1"));
    assert_eq!(p.frames()[0].headers.get("receipt-id"), Some("s-1"));
    assert_eq!(c.bodies(), ["hi"]);
}

#[test]
fn message_carries_user_headers_and_broker_headers_cannot_be_forged() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("sub-7", "/topic/h", "client"));
    c.send(
        frame(
            "SEND",
            &[
                ("destination", "/topic/h"),
                ("content-type", "application/json"),
                ("x-a", "1"),
                ("x-a", "2"),
                ("message-id", "forged"),
                ("subscription", "forged"),
            ],
        )
        .body("{}"),
    );
    let frames = c.frames();
    let m = &frames[0];
    assert_eq!(m.command, Command::Message);
    assert_eq!(m.headers.get("destination"), Some("/topic/h"));
    assert_eq!(m.headers.get("subscription"), Some("sub-7"));
    assert!(m.headers.get("message-id").unwrap().starts_with("m-"));
    assert!(m.headers.get("ack").is_some());
    assert_eq!(m.headers.get("content-type"), Some("application/json"));
    assert_eq!(m.headers.get_all("x-a").collect::<Vec<_>>(), ["1", "2"]);
    assert_eq!(m.headers.get_all("message-id").count(), 1);
}

// --- Queues ------------------------------------------------------------------------------------

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

// --- Topics --------------------------------------------------------------------------------------

#[test]
fn topic_fans_out_to_every_subscriber() {
    let b = broker();
    let mut subs: Vec<Client> = (0..3).map(|_| Client::connected(&b)).collect();
    for (i, c) in subs.iter_mut().enumerate() {
        c.send(subscribe(&format!("t{i}"), "/topic/room", "auto"));
    }
    let mut p = Client::connected(&b);
    p.send(send("/topic/room", "hello"));
    p.send(send("/topic/other", "elsewhere"));
    for c in &mut subs {
        assert_eq!(c.bodies(), ["hello"]);
    }
}

#[test]
fn slow_topic_subscriber_is_flagged_not_buffered_without_bound() {
    let b = broker();
    let mut c = Client::with(&b, SessionSettings::default(), true, 3);
    c.send(frame("CONNECT", &[("accept-version", "1.2")]));
    c.send(subscribe("s", "/topic/fast", "auto"));
    c.frames();
    let mut p = Client::connected(&b);
    for i in 0..10 {
        p.send(send("/topic/fast", &i.to_string()));
    }
    assert!(c.outbox.is_slow());
    assert_eq!(c.outbox.dropped(), 7);
    assert_eq!(c.bodies().len(), 3);
}

// --- Transactions ----------------------------------------------------------------------------------

#[test]
fn transactional_sends_happen_at_commit_only() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/tx", "auto"));
    let mut p = Client::connected(&b);
    p.send(frame("BEGIN", &[("transaction", "t1")]));
    p.send(send("/queue/tx", "a").header("transaction", "t1"));
    p.send(send("/queue/tx", "b").header("transaction", "t1"));
    assert!(c.bodies().is_empty());
    p.send(frame("COMMIT", &[("transaction", "t1")]));
    assert_eq!(c.bodies(), ["a", "b"]);

    p.send(frame("BEGIN", &[("transaction", "t2")]));
    p.send(send("/queue/tx", "never").header("transaction", "t2"));
    p.send(frame("ABORT", &[("transaction", "t2")]));
    assert!(c.bodies().is_empty());
    p.error(frame("COMMIT", &[("transaction", "t2")]));
}

#[test]
fn transactional_acks_happen_at_commit_and_abort_discards_them() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/queue/txa", "client-individual"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/txa", "m1"));
    let frames = c.frames();
    let ack = frames[0].headers.get("ack").unwrap().to_string();
    c.send(frame("BEGIN", &[("transaction", "t")]));
    c.send(frame("ACK", &[("id", &ack), ("transaction", "t")]));
    c.send(frame("ABORT", &[("transaction", "t")]));
    // Still unacked: closing puts it back.
    c.session.close();
    let mut d = Client::connected(&b);
    d.send(subscribe("s", "/queue/txa", "client-individual"));
    let frames = d.frames();
    assert_eq!(&frames[0].body[..], b"m1");
    let ack = frames[0].headers.get("ack").unwrap().to_string();
    d.send(frame("BEGIN", &[("transaction", "t")]));
    d.send(frame("ACK", &[("id", &ack), ("transaction", "t")]));
    d.send(frame("COMMIT", &[("transaction", "t")]));
    d.session.close();
    let mut e = Client::connected(&b);
    e.send(subscribe("s", "/queue/txa", "auto"));
    assert!(e.bodies().is_empty());
}

#[test]
fn duplicate_begin_is_refused() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(frame("BEGIN", &[("transaction", "t")]));
    c.error(frame("BEGIN", &[("transaction", "t")]));
}

#[test]
fn unused_destinations_are_forgotten_and_used_ones_kept() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("s", "/topic/live", "auto"));
    let mut p = Client::connected(&b);
    p.send(send("/queue/full", "waiting"));
    p.send(send("/topic/nobody", "gone"));
    p.send(send("/topic/chat.kept", "history"));
    c.send(subscribe("q", "/queue/drained", "auto"));
    p.send(send("/queue/drained", "taken"));
    c.frames();
    c.send(frame("UNSUBSCRIBE", &[("id", "q")]));
    assert_eq!(b.destination_count(), 5);
    // /topic/nobody (no subscriber, no history) and /queue/drained (empty, no consumer) go;
    // the live topic, the queue with a message and the chat topic's history stay.
    assert_eq!(b.sweep(), 2);
    assert_eq!(b.destination_count(), 3);
    c.send(send("/queue/full", "second"));
    c.send(subscribe("again", "/queue/full", "auto"));
    assert_eq!(c.bodies(), ["waiting", "second"]);
}

#[test]
fn a_client_gets_the_heart_beats_it_asks_for_down_to_the_floor() {
    let b = broker();
    for (asked, offered) in [
        (Some("1000,1000"), "1000,1000"),
        (Some("100,2000"), "2000,1000"),
        (Some("0,0"), "10000,10000"),
        (None, "10000,10000"),
    ] {
        let mut c = Client::new(&b);
        let mut connect = frame("CONNECT", &[("accept-version", "1.2")]);
        if let Some(hb) = asked {
            connect = connect.header("heart-beat", hb);
        }
        c.send(connect);
        let connected = &c.frames()[0];
        assert_eq!(
            connected.headers.get("heart-beat"),
            Some(offered),
            "{asked:?}"
        );
    }
}

#[test]
fn wildcard_subscriptions_match_by_segment() {
    let b = broker();
    let mut c = Client::connected(&b);
    c.send(subscribe("one", "/topic/news.*", "auto"));
    c.send(subscribe("all", "/topic/news.#", "auto"));
    c.send(subscribe("rest", "/topic/news.>", "auto"));
    for (dest, body) in [
        ("/topic/news", "root"),
        ("/topic/news.sport", "sport"),
        ("/topic/news.sport.tennis", "tennis"),
        ("/topic/weather", "rain"),
    ] {
        c.send(send(dest, body));
    }
    let got: Vec<(String, String)> = c
        .frames()
        .into_iter()
        .map(|f| {
            (
                f.headers
                    .get("subscription")
                    .unwrap_or_default()
                    .to_string(),
                String::from_utf8_lossy(&f.body).into_owned(),
            )
        })
        .collect();
    let of = |sub: &str| -> Vec<&str> {
        got.iter()
            .filter(|(s, _)| s == sub)
            .map(|(_, b)| b.as_str())
            .collect()
    };
    assert_eq!(of("one"), ["sport"]);
    assert_eq!(
        of("all"),
        ["root", "sport", "tennis"],
        "news.# matches news"
    );
    assert_eq!(
        of("rest"),
        ["sport", "tennis"],
        "news.> needs one segment more"
    );
    c.send(frame("UNSUBSCRIBE", &[("id", "all")]));
    c.send(send("/topic/news.x", "after"));
    let mut subs: Vec<String> = c
        .frames()
        .iter()
        .map(|f| {
            f.headers
                .get("subscription")
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    subs.sort();
    assert_eq!(subs, ["one", "rest"]);
}

#[test]
fn patterns_are_for_subscribing_and_must_be_well_formed() {
    let b = broker();
    let mut c = Client::connected(&b);
    let e = c.error(send("/topic/news.*", "x"));
    assert!(
        e.headers
            .get("message")
            .unwrap()
            .contains("wildcard pattern")
    );
    for (pattern, says) in [
        ("/topic/news..*", "empty segment"),
        ("/topic/a.>.b", "last segment"),
    ] {
        let mut c = Client::connected(&b);
        let e = c.error(subscribe("s", pattern, "auto"));
        assert!(
            e.headers.get("message").unwrap().contains(says),
            "{pattern}"
        );
    }
    let mut c = Client::connected(&b);
    let e = c.error(frame(
        "SUBSCRIBE",
        &[
            ("id", "s"),
            ("destination", "/topic/chat.*"),
            ("x-history", "10"),
        ],
    ));
    assert!(e.headers.get("message").unwrap().contains("single topic"));
}

#[test]
fn destinations_are_listed_with_kind_depth_consumers_and_bindings() {
    let exchanges = crate::broker::exchanges::Exchanges::new(
        &[crate::broker::ExchangeConfig {
            name: "orders".into(),
            kind: crate::broker::ExchangeKind::Topic,
            alternate_exchange: None,
            bindings: vec![crate::broker::exchange::BindingConfig {
                queue: Some("/queue/eu".into()),
                exchange: None,
                key: "orders.eu.*".into(),
                arguments: Default::default(),
            }],
        }],
        None,
    )
    .expect("valid");
    let b = Arc::new(Broker::new().with_exchanges(exchanges));
    let mut c = Client::connected(&b);
    c.send(send("/queue/jobs", "a"));
    c.send(send("/queue/jobs", "b"));
    c.send(subscribe("t", "/topic/news", "auto"));
    c.send(subscribe("w", "/topic/news.*", "auto"));
    let list = b.list();
    let find = |name: &str| list.iter().find(|d| d.name == name).expect(name).clone();
    let jobs = find("/queue/jobs");
    assert_eq!(
        (jobs.kind.as_str(), jobs.depth, jobs.consumers),
        ("queue", 2, 0)
    );
    let news = find("/topic/news");
    assert_eq!((news.kind.as_str(), news.consumers), ("topic", 1));
    let orders = find("/exchange/orders");
    assert_eq!(orders.kind, "topic");
    assert_eq!(orders.bindings, ["orders.eu.* → /queue/eu"]);
    assert_eq!(find("/topic/ (wildcard subscriptions)").consumers, 1);
}

#[test]
fn every_message_says_who_sent_it_and_that_cannot_be_forged() {
    let b = broker();
    let mut anon = Client::connected(&b);
    anon.send(subscribe("s", "/topic/news", "auto"));
    anon.send(
        frame(
            "SEND",
            &[("destination", "/topic/news"), ("x-sender", "admin")],
        )
        .body("hi"),
    );
    let got = anon.frames();
    assert_eq!(got[0].headers.get("x-sender"), Some("(anonymous)"));
    assert_eq!(
        got[0]
            .headers
            .iter()
            .filter(|(n, _)| *n == "x-sender")
            .count(),
        1,
        "the forged one is gone"
    );

    let settings = SessionSettings {
        users: users_with_password_pw(&["ana"]),
        ..SessionSettings::default()
    };
    let mut ana = logged_in(&b, &settings, "ana");
    ana.send(send("/topic/news", "from ana"));
    assert_eq!(anon.frames()[0].headers.get("x-sender"), Some("ana"));
}

#[test]
fn permissions_decide_reads_writes_and_durable_subscriptions() {
    use crate::security::permissions::Grants;
    let b = broker();
    let mut permissions = crate::security::permissions::PermissionTable::new();
    permissions.insert(
        "*".into(),
        Grants {
            read: vec!["/topic/chat.*".into(), "/queue/user.{login}.*".into()],
            write: vec!["/topic/chat.*".into()],
            configure: vec![],
        },
    );
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob"]),
        permissions,
        ..SessionSettings::default()
    };
    let login = |who: &str| logged_in(&b, &settings, who);
    let mut ana = login("ana");
    // Allowed: own queue, the chat rooms.
    ana.send(subscribe("own", "/queue/user.ana.inbox", "auto").header("receipt", "1"));
    ana.send(send("/topic/chat.general", "hi").header("receipt", "2"));
    let ok: Vec<_> = ana.frames();
    assert!(
        ok.iter().all(|f| f.headers.get("x-error").is_none()),
        "{ok:?}"
    );
    // Refused on the receipt, the connection kept: bob's queue, a write
    // elsewhere, a durable subscription (configure).
    ana.send(subscribe("bob", "/queue/user.bob.inbox", "auto").header("receipt", "3"));
    ana.send(send("/queue/jobs", "x").header("receipt", "4"));
    ana.send(frame(
        "SUBSCRIBE",
        &[
            ("id", "d"),
            ("destination", "/topic/chat.general"),
            ("durable", "true"),
            ("receipt", "5"),
        ],
    ));
    let refused = ana.frames();
    assert_eq!(refused.len(), 3, "{refused:?}");
    for (f, (permission, what)) in refused.iter().zip([
        ("read", "/queue/user.bob.inbox"),
        ("write", "/queue/jobs"),
        ("configure", "/topic/chat.general"),
    ]) {
        assert_eq!(f.headers.get("x-error"), Some("access-refused"));
        let message = f.headers.get("message").unwrap();
        assert!(
            message.contains(permission) && message.contains(what),
            "{message}"
        );
    }
    // Without a receipt: an ERROR.
    let e = ana.error(send("/queue/jobs", "x"));
    assert!(e.headers.get("message").unwrap().contains("access refused"));
    // A transactional SEND is checked when it is sent, not at COMMIT.
    let mut bob = login("bob");
    bob.send(frame("BEGIN", &[("transaction", "t")]));
    let e = bob.error(frame(
        "SEND",
        &[("destination", "/queue/jobs"), ("transaction", "t")],
    ));
    assert!(e.headers.get("message").unwrap().contains("write"));
}

#[test]
fn user_destinations_reach_every_connection_of_that_login_only() {
    let b = broker();
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob"]),
        ..SessionSettings::default()
    };
    let login = |who: &str| logged_in(&b, &settings, who);
    let (mut tab1, mut tab2, mut bob) = (login("ana"), login("ana"), login("bob"));
    for c in [&mut tab1, &mut tab2, &mut bob] {
        c.send(subscribe("inbox", "/user/inbox", "auto"));
    }
    bob.send(send("/user/ana/inbox", "hello ana"));
    for tab in [&mut tab1, &mut tab2] {
        let got = tab.frames();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].body.as_ref(), b"hello ana");
        assert_eq!(got[0].headers.get("x-sender"), Some("bob"));
    }
    assert!(bob.frames().is_empty());
    // The topic behind it is not reachable directly.
    let e = bob.error(subscribe("peek", "/topic/stompbox.user/ana/inbox", "auto"));
    assert!(e.headers.get("message").unwrap().contains("private"));
    // Anonymous clients have none.
    let mut anon = Client::connected(&b);
    let e = anon.error(subscribe("inbox", "/user/inbox", "auto"));
    assert!(e.headers.get("message").unwrap().contains("log in"));
}

#[test]
fn the_room_directory_lists_rooms_with_subscribers_that_the_login_may_read() {
    use crate::security::permissions::Grants;
    let b = broker();
    let mut permissions = crate::security::permissions::PermissionTable::new();
    permissions.insert(
        "*".into(),
        Grants {
            read: vec!["/topic/chat.*".into(), "/sys/rooms".into()],
            write: vec!["/topic/chat.*".into()],
            configure: vec![],
        },
    );
    permissions.insert(
        "ana".into(),
        Grants {
            read: vec!["/topic/chat.general".into(), "/sys/rooms".into()],
            write: vec![],
            configure: vec![],
        },
    );
    let settings = SessionSettings {
        users: users_with_password_pw(&["ana", "bob", "cy"]),
        permissions,
        ..SessionSettings::default()
    };
    let mut bob = logged_in(&b, &settings, "bob");
    let mut cy = logged_in(&b, &settings, "cy");
    bob.send(subscribe("g", "/topic/chat.general", "auto"));
    cy.send(subscribe("g", "/topic/chat.general", "auto"));
    bob.send(subscribe("r", "/topic/chat.random", "auto"));
    bob.send(subscribe("n", "/topic/news", "auto"));
    let rooms = |c: &mut Client| -> serde_json::Value {
        c.send(subscribe("dir", "/sys/rooms", "auto").header("receipt", "listed"));
        let frames = c.frames();
        let m = frames
            .iter()
            .find(|f| f.command == Command::Message)
            .unwrap_or_else(|| panic!("no directory in {frames:?}"));
        assert_eq!(m.headers.get("subscription"), Some("dir"));
        assert_eq!(m.headers.get("content-type"), Some("application/json"));
        c.send(frame("UNSUBSCRIBE", &[("id", "dir")]));
        serde_json::from_slice(&m.body).expect("JSON")
    };
    assert_eq!(
        rooms(&mut bob),
        serde_json::json!([
            { "name": "general", "destination": "/topic/chat.general", "subscribers": 2 },
            { "name": "random", "destination": "/topic/chat.random", "subscribers": 1 },
        ])
    );
    // Ana may read only the general room: that is all she is shown.
    let mut ana = logged_in(&b, &settings, "ana");
    assert_eq!(
        rooms(&mut ana),
        serde_json::json!([
            { "name": "general", "destination": "/topic/chat.general", "subscribers": 2 },
        ])
    );
}
