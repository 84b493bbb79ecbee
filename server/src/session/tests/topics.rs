//! Topics by feeding frames: fan-out, slow subscribers, wildcard patterns,
//! and the destinations an operator sees listed or swept.

use super::*;

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
