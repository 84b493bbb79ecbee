//! The broker's hot path in-process, no sockets: SEND → destination →
//! outboxes, for a topic fan-out and a queue, and MESSAGE rendering and
//! encoding for one subscriber.

use std::hint::black_box;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stomp_codec::{ByteString, Headers, Version};
use stompbox::broker::{AckMode, Broker, ConsumerSpec, Destination, TopicOptions};
use stompbox::outbox::{Outbound, Outbox, SlowConsumerPolicy};
use stompbox::session::{Session, SessionSettings, SubscriptionId};

fn headers() -> Headers {
    let mut h = Headers::new();
    h.push("content-type", "text/plain");
    h.push("x-nick", "ana");
    h
}

struct Subscriber {
    outbox: Arc<Outbox>,
    session: Session,
}

fn subscriber(broker: &Arc<Broker>, destination: &str, id: usize) -> Subscriber {
    let outbox = Arc::new(Outbox::new(1 << 20, SlowConsumerPolicy::Disconnect));
    let session = Session::new(
        broker.clone(),
        Arc::new(SessionSettings::default()),
        outbox.clone(),
        true,
    );
    broker
        .subscribe(
            destination,
            ConsumerSpec {
                session: session.id(),
                subscription: SubscriptionId::from(format!("s{id}").as_str()),
                ack: AckMode::Auto,
                prefetch: 1 << 20,
                outbox: outbox.clone(),
                ack_timeout_ms: 0,
                selector: None,
            },
            TopicOptions::default(),
        )
        .expect("valid destination");
    Subscriber { outbox, session }
}

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("route");
    for k in [1usize, 100] {
        let broker = Arc::new(Broker::new());
        let name = format!("/topic/fanout-{k}");
        let mut subs: Vec<Subscriber> = (0..k).map(|i| subscriber(&broker, &name, i)).collect();
        let target = broker.destination(&name).expect("topic");
        let dest = ByteString::from(name.as_str());
        let body = Bytes::from(vec![b'x'; 128]);
        let h = headers();
        let mut drained = Vec::with_capacity(16);
        group.throughput(Throughput::Elements(k as u64));
        group.bench_function(format!("topic_fanout_{k}"), |b| {
            b.iter(|| {
                broker
                    .send_to(&target, dest.clone(), h.clone(), body.clone(), false)
                    .expect("accepted");
                for s in &mut subs {
                    s.outbox.drain_into(&mut drained);
                    drained.clear();
                }
            })
        });
    }
    let broker = Arc::new(Broker::new());
    let mut sub = subscriber(&broker, "/queue/route", 0);
    let target = broker.destination("/queue/route").expect("queue");
    assert!(matches!(target, Destination::Queue(_)));
    let dest = ByteString::from("/queue/route");
    let body = Bytes::from(vec![b'x'; 128]);
    let h = headers();
    let mut drained = Vec::with_capacity(16);
    group.throughput(Throughput::Elements(1));
    group.bench_function("queue_one_consumer", |b| {
        b.iter(|| {
            broker
                .send_to(&target, dest.clone(), h.clone(), body.clone(), false)
                .expect("accepted");
            sub.outbox.drain_into(&mut drained);
            for item in drained.drain(..) {
                if let Outbound::Delivery(d) = item {
                    black_box(sub.session.render(d));
                }
            }
            // Credit comes back once "written", as the driver does.
            sub.session.settle_written();
        })
    });
    group.finish();
}

fn render(c: &mut Criterion) {
    let broker = Arc::new(Broker::new());
    let mut sub = subscriber(&broker, "/topic/render", 0);
    let target = broker.destination("/topic/render").expect("topic");
    let mut group = c.benchmark_group("deliver");
    let mut out = BytesMut::with_capacity(4096);
    let mut drained = Vec::new();
    group.throughput(Throughput::Elements(1));
    group.bench_function("render_and_encode_message", |b| {
        b.iter(|| {
            broker
                .send_to(
                    &target,
                    ByteString::from("/topic/render"),
                    headers(),
                    Bytes::from_static(&[b'y'; 128]),
                    false,
                )
                .expect("accepted");
            sub.outbox.drain_into(&mut drained);
            for item in drained.drain(..) {
                if let Outbound::Delivery(d) = item {
                    let outgoing = sub.session.render(d);
                    out.clear();
                    outgoing.encode(Version::V1_2, &mut out).expect("encodable");
                    debug_assert!(out.starts_with(b"MESSAGE\n"));
                    black_box(&out);
                }
            }
        })
    });
    group.finish();
}

/// A `client-individual` consumer's read of 64 ACKs, as the driver hands
/// them over: each handled in the batch, then all settled together (one
/// queue lock and one dispatch), which also delivers the next 64.
fn acks(c: &mut Criterion) {
    use stomp_codec::{Command, Frame};
    use stompbox::session::driver::Outgoing;
    const READ: usize = 64;
    let broker = Arc::new(Broker::new());
    let outbox = Arc::new(Outbox::new(1 << 20, SlowConsumerPolicy::Disconnect));
    let mut session = Session::new(
        broker.clone(),
        Arc::new(SessionSettings::default()),
        outbox.clone(),
        true,
    );
    session.handle(Frame::new(Command::Connect).header("accept-version", "1.2"));
    session.handle(
        Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", "/queue/acks")
            .header("ack", "client-individual")
            .header("prefetch-count", READ.to_string()),
    );
    let target = broker.destination("/queue/acks").expect("queue");
    let dest = ByteString::from("/queue/acks");
    let body = Bytes::from(vec![b'x'; 128]);
    let h = headers();
    let send = || {
        broker
            .send_to(&target, dest.clone(), h.clone(), body.clone(), false)
            .expect("accepted");
    };
    for _ in 0..2 * READ {
        send();
    }
    let mut drained = Vec::with_capacity(READ);
    let mut ids = Vec::with_capacity(READ);
    let mut take = |session: &mut Session, ids: &mut Vec<String>| {
        outbox.drain_into(&mut drained);
        for item in drained.drain(..) {
            if let Outbound::Delivery(d) = item
                && let Outgoing::Message {
                    ack_id: Some(id), ..
                } = session.render(d)
            {
                ids.push(id.to_string());
            }
        }
    };
    take(&mut session, &mut ids);
    assert_eq!(ids.len(), READ, "a prefetch's worth delivered");
    let mut group = c.benchmark_group("ack");
    group.throughput(Throughput::Elements(READ as u64));
    group.bench_function("client_individual_64_acks_per_read", |b| {
        b.iter(|| {
            for id in ids.drain(..) {
                session.handle_in_batch(Frame::new(Command::Ack).header("id", id));
            }
            session.settle_acked();
            for _ in 0..READ {
                send();
            }
            take(&mut session, &mut ids);
        })
    });
    assert_eq!(ids.len(), READ, "every ACK freed a delivery");
    group.finish();
}

/// Matching a topic against 100,000 wildcard patterns of which 10 match:
/// the trie's lookup (uncached) and the cached path a publish takes.
fn wildcards(c: &mut Criterion) {
    use stompbox::broker::sublist::Sublist;
    let mut list: Sublist<u32> = Sublist::default();
    let mut n = 0u32;
    // 99,990 patterns over other keys: a.<i>.*, b.#.<i>, c.<i>.>
    while n < 99_990 {
        let pattern = match n % 3 {
            0 => format!("a.k{n}.*"),
            1 => format!("b.#.k{n}"),
            _ => format!("c.k{n}.>"),
        };
        list.insert(&pattern, n).expect("valid");
        n += 1;
    }
    // And 10 that match "orders.eu.paid".
    for pattern in [
        "orders.eu.paid",
        "orders.*.paid",
        "orders.#",
        "orders.>",
        "*.eu.*",
        "#.paid",
        "orders.eu.#",
        "#",
        "*.*.*",
        "orders.#.paid",
    ] {
        list.insert(pattern, n).expect("valid");
        n += 1;
    }
    assert_eq!(list.lookup("orders.eu.paid").len(), 10);
    // The same bindings on a topic exchange: what routing a SEND costs.
    let exchange = stompbox::broker::Exchange::new(
        "orders".into(),
        stompbox::broker::ExchangeKind::Topic,
        None,
    );
    for i in 0..100_000u32 {
        let key = match i {
            0 => "orders.eu.paid".to_string(),
            1 => "orders.*.paid".to_string(),
            2 => "orders.#".to_string(),
            3 => "orders.>".to_string(),
            4 => "*.eu.*".to_string(),
            5 => "#.paid".to_string(),
            6 => "orders.eu.#".to_string(),
            7 => "#".to_string(),
            8 => "*.*.*".to_string(),
            9 => "orders.#.paid".to_string(),
            n if n % 3 == 0 => format!("a.k{n}.*"),
            n if n % 3 == 1 => format!("b.#.k{n}"),
            n => format!("c.k{n}.>"),
        };
        exchange
            .bind(stompbox::broker::exchange::Binding {
                target: stompbox::broker::exchange::BindTarget::Queue(
                    format!("/queue/q{i}").as_str().into(),
                ),
                key,
                headers: Default::default(),
                owner: None,
            })
            .expect("valid");
    }
    let h = headers();
    assert_eq!(exchange.route("orders.eu.paid", &h).len(), 10);
    let mut group = c.benchmark_group("wildcard");
    group.throughput(Throughput::Elements(1));
    group.bench_function("topic_exchange_route_100k_bindings_10_match", |b| {
        b.iter(|| black_box(exchange.route(black_box("orders.eu.paid"), &h)))
    });
    group.finish();
    let mut group = c.benchmark_group("wildcard");
    group.throughput(Throughput::Elements(1));
    group.bench_function("lookup_100k_patterns_10_match", |b| {
        b.iter(|| black_box(list.lookup(black_box("orders.eu.paid"))))
    });
    group.bench_function("cached_100k_patterns_10_match", |b| {
        b.iter(|| black_box(list.matches(black_box("orders.eu.paid"))))
    });
    group.finish();

    // A publish to a topic with 100 wildcard subscribers, against 100 exact ones.
    let mut group = c.benchmark_group("route");
    let broker = Arc::new(Broker::new());
    let mut subs: Vec<Subscriber> = (0..100)
        .map(|i| subscriber_pattern(&broker, "/topic/wild.*", i))
        .collect();
    let target = broker.destination("/topic/wild.x").expect("topic");
    let dest = ByteString::from("/topic/wild.x");
    let body = Bytes::from(vec![b'x'; 128]);
    let h = headers();
    let mut drained = Vec::with_capacity(16);
    group.throughput(Throughput::Elements(100));
    group.bench_function("wildcard_fanout_100", |b| {
        b.iter(|| {
            broker
                .send_to(&target, dest.clone(), h.clone(), body.clone(), false)
                .expect("accepted");
            for s in &mut subs {
                s.outbox.drain_into(&mut drained);
                drained.clear();
            }
        })
    });
    group.finish();
}

fn subscriber_pattern(broker: &Arc<Broker>, destination: &str, id: usize) -> Subscriber {
    let outbox = Arc::new(Outbox::new(1 << 20, SlowConsumerPolicy::Disconnect));
    let session = Session::new(
        broker.clone(),
        Arc::new(SessionSettings::default()),
        outbox.clone(),
        true,
    );
    let pattern = destination
        .strip_prefix("/topic/")
        .expect("a topic pattern");
    broker
        .subscribe_pattern(
            pattern,
            ConsumerSpec {
                session: session.id(),
                subscription: SubscriptionId::from(format!("w{id}").as_str()),
                ack: AckMode::Auto,
                prefetch: 1 << 20,
                outbox: outbox.clone(),
                ack_timeout_ms: 0,
                selector: None,
            },
            &TopicOptions::default(),
        )
        .expect("valid pattern");
    Subscriber { outbox, session }
}

/// Evaluating a selector against a message's headers.
fn selectors(c: &mut Criterion) {
    use stompbox::broker::Selector;
    let mut h = headers();
    h.push("region", "eu");
    h.push("amount", "250");
    h.push("type", "order");
    let mut group = c.benchmark_group("selector");
    group.throughput(Throughput::Elements(1));
    for (name, text) in [
        ("equality", "region = 'eu'"),
        (
            "compound",
            "region IN ('eu', 'uk') AND amount BETWEEN 100 AND 500 AND type LIKE 'ord%'",
        ),
    ] {
        let selector = Selector::parse(text).expect("valid");
        assert!(selector.matches(&h));
        group.bench_function(name, |b| {
            b.iter(|| black_box(selector.matches(black_box(&h))))
        });
    }
    group.bench_function("parse_compound", |b| {
        b.iter(|| {
            black_box(Selector::parse(black_box(
                "region IN ('eu', 'uk') AND amount BETWEEN 100 AND 500 AND type LIKE 'ord%'",
            )))
        })
    });
    group.finish();
}

criterion_group!(benches, fanout, render, acks, wildcards, selectors);
criterion_main!(benches);
