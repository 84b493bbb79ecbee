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
