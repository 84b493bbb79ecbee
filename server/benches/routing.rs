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

criterion_group!(benches, fanout, render);
criterion_main!(benches);
