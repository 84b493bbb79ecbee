//! Session rules, tested by feeding frames and reading what comes out of
//! the outbox: no sockets, no timers.

use std::sync::Arc;

use bytes::BytesMut;
use stomp_codec::{Command, Decoded, Frame, FrameDecoder};

use super::driver::Outgoing;

use super::*;
use crate::outbox::{Outbox, SlowConsumerPolicy};

mod delivery;
mod identity;
mod queues;
mod safety;
mod topics;
mod transactions;

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

// --- Topics --------------------------------------------------------------------------------------

// --- Transactions ----------------------------------------------------------------------------------

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
