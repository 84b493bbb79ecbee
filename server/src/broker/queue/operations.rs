//! What operators and cluster nodes do to a queue as a whole: counts, peek,
//! remove one message, purge; take what waits, fetch into it, return to it.

use std::sync::Arc;

use crate::broker::Message;

use super::QueueDestination;
use super::backlog::Pending;

impl QueueDestination {
    /// What has passed through since the queue was made, and what it holds.
    pub fn counts(&self) -> crate::metrics::QueueCounts {
        let state = self.lock();
        let dead = |i: usize| self.dead_counts[i].load(std::sync::atomic::Ordering::Relaxed);
        crate::metrics::QueueCounts {
            published: state.counts.published,
            delivered: state.counts.delivered,
            acknowledged: state.counts.acknowledged,
            redelivered: state.counts.redelivered,
            dead: [dead(0), dead(1), dead(2), dead(3)],
            depth: state.backlog.count() as u64,
            bytes: state.backlog.total_bytes(),
            consumers: state.consumers.len() as u64,
            unacked: state.consumers.iter().map(|c| c.in_flight as u64).sum(),
        }
    }

    /// Up to `n` waiting messages in memory, in the order they would go
    /// out (highest priority first), left where they are.
    pub fn peek(&self, n: usize) -> Vec<Arc<Message>> {
        self.lock().backlog.peek(n, &self.name)
    }

    /// Takes one waiting message out by its id (settling it if durable);
    /// false when it is not waiting in memory (a consumer has it, say).
    pub fn remove(&self, id: u64) -> bool {
        let mut state = self.lock();
        let taken = state
            .backlog
            .take_first(usize::MAX, |p| p.message.id.number() == id)
            .or_else(|| state.backlog.take_packed(id, &self.name, &self.env.memory));
        let Some(gone) = taken else {
            return false;
        };
        drop(state);
        if gone.message.is_durable()
            && let Some(journal) = &self.env.journal
        {
            let _ = journal.settle(&self.name, &[id]);
        }
        true
    }

    /// Drops every waiting message (in memory, on disk, delayed; not
    /// those out with consumers), settling the durable ones; returns how
    /// many. Paged messages are read back to be dropped.
    pub fn purge(&self) -> usize {
        let gone = self.take_all();
        let durable: Vec<u64> = gone
            .iter()
            .filter(|p| p.message.is_durable())
            .map(|p| p.message.id.number())
            .collect();
        if let Some(journal) = &self.env.journal {
            let _ = journal.settle(&self.name, &durable);
        }
        gone.len()
    }

    /// Takes every waiting message out (in memory, on disk, delayed; not
    /// those out with consumers), leaving the journal alone. A cluster
    /// node gives these back to Redis when its last consumer has gone.
    pub fn take_waiting(&self) -> Vec<Arc<Message>> {
        self.take_all().into_iter().map(|p| p.message).collect()
    }

    fn take_all(&self) -> Vec<Pending> {
        let mut state = self.lock();
        let mut gone = Vec::new();
        while let Some(p) = self.pop_lowest(&mut state) {
            gone.push(p);
        }
        gone.extend(state.backlog.take_due(u64::MAX));
        gone
    }

    /// How many more messages its consumers could take now: their free
    /// credit less what already waits. A cluster node fetches no more
    /// than this from Redis, so the rest stays for other nodes.
    pub fn free_credit(&self) -> usize {
        let state = self.lock();
        let free: usize = state
            .consumers
            .iter()
            .map(|c| c.prefetch.saturating_sub(c.in_flight))
            .sum();
        free.saturating_sub(state.backlog.count())
    }

    /// Adds messages a cluster node fetched from Redis, in their order,
    /// and hands out what the consumers can take, under one lock. No
    /// local limit applies: Redis holds the queue's `max_length`, and a
    /// fetched message must not be stranded on a node.
    pub fn enqueue_fetched(&self, messages: impl IntoIterator<Item = Arc<Message>>) {
        let mut state = self.lock();
        for message in messages {
            self.admit(&mut state, message, 0);
        }
        if state.backlog.expiring > 0 {
            let now = self.env.clock.now_ms();
            self.schedule(&mut state, now);
        }
        self.dispatch(&mut state);
    }

    /// Adds a message another node was delivering when it died (or gave
    /// back): marked redelivered, with its count of failed deliveries.
    pub fn enqueue_returned(&self, message: Arc<Message>, deliveries: u32) {
        let mut state = self.lock();
        state.counts.redelivered += 1;
        state.backlog.push_back(Pending {
            message,
            deliveries,
            redelivered: true,
        });
        self.dispatch(&mut state);
    }
}
