//! Rates for the API's lists: counters sampled every few seconds, and the
//! per-second change between the last two samples (RabbitMQ's management
//! plugin shows the same kind of "over the last interval" rates).

use std::collections::HashMap;
use std::sync::{Mutex, Weak};
use std::time::{Duration, Instant};

use crate::broker::Broker;

/// How often counters are sampled.
pub(super) const INTERVAL: Duration = Duration::from_secs(5);

/// What a rate is of: a counter of a queue, topic or connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Counter {
    /// Messages a queue took in.
    QueuePublished(String),
    /// Deliveries a queue made.
    QueueDelivered(String),
    /// Acknowledgements a queue received.
    QueueAcknowledged(String),
    /// Messages published to a topic.
    TopicPublished(String),
    /// Copies a topic queued for subscribers.
    TopicDelivered(String),
    /// SENDs from a connection.
    ConnectionIn(u64),
    /// MESSAGEs to a connection.
    ConnectionOut(u64),
}

#[derive(Debug, Default)]
struct Sampled {
    at: Option<Instant>,
    counts: HashMap<Counter, u64>,
    rates: HashMap<Counter, f64>,
}

/// The last sample and the rates it gave.
#[derive(Debug, Default)]
pub(super) struct Rates {
    sampled: Mutex<Sampled>,
}

impl Rates {
    /// Records counts read at `now`; each counter's rate becomes its
    /// change since the previous sample per second (counters that are new,
    /// or went down because their destination was made again, have none).
    pub(super) fn record(&self, now: Instant, counts: impl IntoIterator<Item = (Counter, u64)>) {
        let mut s = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        let elapsed =
            s.at.map(|at| now.saturating_duration_since(at).as_secs_f64());
        let mut rates = HashMap::new();
        let mut fresh = HashMap::new();
        for (counter, count) in counts {
            if let (Some(secs), Some(&before)) = (elapsed, s.counts.get(&counter))
                && secs > 0.0
                && count >= before
            {
                rates.insert(counter.clone(), (count - before) as f64 / secs);
            }
            fresh.insert(counter, count);
        }
        *s = Sampled {
            at: Some(now),
            counts: fresh,
            rates,
        };
    }

    /// The counter's rate per second over the last interval, rounded to
    /// a tenth (0 until two samples have seen it).
    pub(super) fn rate(&self, counter: &Counter) -> f64 {
        let s = self.sampled.lock().unwrap_or_else(|e| e.into_inner());
        let r = s.rates.get(counter).copied().unwrap_or(0.0);
        (r * 10.0).round() / 10.0
    }

    /// Samples the broker's counters.
    pub(super) fn sample(&self, broker: &Broker) {
        let (queues, topics) = broker.destination_counts();
        let mut counts = Vec::with_capacity(queues.len() * 3 + topics.len() * 2);
        for (name, c) in queues {
            counts.push((Counter::QueuePublished(name.clone()), c.published));
            counts.push((Counter::QueueDelivered(name.clone()), c.delivered));
            counts.push((Counter::QueueAcknowledged(name), c.acknowledged));
        }
        for (name, c) in topics {
            counts.push((Counter::TopicPublished(name.clone()), c.published));
            counts.push((Counter::TopicDelivered(name), c.delivered));
        }
        for c in broker.connections().list() {
            counts.push((Counter::ConnectionIn(c.id), c.messages_in));
            counts.push((Counter::ConnectionOut(c.id), c.messages_out));
        }
        self.record(Instant::now(), counts);
    }
}

/// Samples every [`INTERVAL`] until the broker is gone.
pub(super) async fn run(rates: std::sync::Arc<Rates>, broker: Weak<Broker>) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(broker) = broker.upgrade() else {
            return;
        };
        rates.sample(&broker);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rate_is_the_change_per_second_between_samples() {
        let rates = Rates::default();
        let t0 = Instant::now();
        let q = Counter::QueuePublished("/queue/a".into());
        rates.record(t0, [(q.clone(), 100)]);
        assert_eq!(rates.rate(&q), 0.0, "one sample gives no rate");
        rates.record(t0 + Duration::from_secs(5), [(q.clone(), 150)]);
        assert_eq!(rates.rate(&q), 10.0);
        // Made again from zero: no rate rather than a negative one.
        rates.record(t0 + Duration::from_secs(10), [(q.clone(), 3)]);
        assert_eq!(rates.rate(&q), 0.0);
        // Gone: forgotten.
        rates.record(t0 + Duration::from_secs(15), []);
        rates.record(t0 + Duration::from_secs(20), [(q.clone(), 7)]);
        assert_eq!(rates.rate(&q), 0.0);
    }
}
