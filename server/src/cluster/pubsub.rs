//! The pub/sub task of one Redis: keeps this node subscribed to the
//! channels and patterns of the topics (and queues) it follows, and hands
//! what they bring to the broker.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use stomp_codec::ByteString;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::link::Interest;
use super::{
    Cluster, MAX_BACKOFF, REQUEST_TIMEOUT, key, membership, queues, topic_of_channel, wire,
};
use crate::broker::Broker;

impl Cluster {
    /// The pub/sub task: keeps this node subscribed to the channels of
    /// the topics it has subscribers for, and delivers what they bring.
    pub(super) async fn pubsub(
        self: Arc<Self>,
        shard: usize,
        mut interest: mpsc::UnboundedReceiver<Interest>,
        broker: Arc<Broker>,
        cancel: CancellationToken,
    ) {
        let link = &self.links[shard];
        let mut backoff = Duration::from_millis(100);
        loop {
            let connected = tokio::select! {
                _ = cancel.cancelled() => return,
                c = tokio::time::timeout(REQUEST_TIMEOUT, link.client.get_async_pubsub()) => c,
            };
            let Ok(Ok(pubsub)) = connected else {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
                continue;
            };
            let (mut sink, mut stream) = pubsub.split();
            // Whatever was asked while disconnected is settled by
            // subscribing to every channel wanted now.
            while interest.try_recv().is_ok() {}
            let wanted: Vec<ByteString> = self
                .channels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .filter(|topic| self.shard_of(topic) == shard)
                .cloned()
                .collect();
            let globs: Vec<String> = self
                .patterns
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .keys()
                .cloned()
                .collect();
            let mut subscribed: HashSet<ByteString> = HashSet::new();
            let mut psubscribed: HashSet<String> = HashSet::new();
            let mut ok = true;
            for topic in wanted {
                if sink.subscribe(key(&topic, "c")).await.is_err() {
                    ok = false;
                    break;
                }
                subscribed.insert(topic);
            }
            for glob in globs {
                if !ok || sink.psubscribe(&glob).await.is_err() {
                    ok = false;
                    break;
                }
                psubscribed.insert(glob);
            }
            if !ok {
                continue;
            }
            backoff = Duration::from_millis(100);
            tracing::info!(redis = %link.shown, channels = subscribed.len(), "cluster: pub/sub connected");
            self.answer_channels(shard, &subscribed, &psubscribed);
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    asked = interest.recv() => {
                        let Some(asked) = asked else { return };
                        let done = match asked {
                            Interest::Subscribe(topic) => {
                                let wanted = self.channels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&topic);
                                if wanted && !subscribed.contains(&topic) {
                                    let r = sink.subscribe(key(&topic, "c")).await;
                                    if r.is_ok() {
                                        subscribed.insert(topic);
                                    }
                                    r
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::Unsubscribe(topic) => {
                                let wanted = self.channels.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&topic);
                                if !wanted && subscribed.remove(&topic) {
                                    sink.unsubscribe(key(&topic, "c")).await
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::PSubscribe(glob) => {
                                let wanted = self.patterns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&glob);
                                if wanted && !psubscribed.contains(&glob) {
                                    let r = sink.psubscribe(&glob).await;
                                    if r.is_ok() {
                                        psubscribed.insert(glob);
                                    }
                                    r
                                } else {
                                    Ok(())
                                }
                            }
                            Interest::PUnsubscribe(glob) => {
                                let wanted = self.patterns.lock().unwrap_or_else(|e| e.into_inner()).contains_key(&glob);
                                if !wanted && psubscribed.remove(&glob) {
                                    sink.punsubscribe(&glob).await
                                } else {
                                    Ok(())
                                }
                            }
                        };
                        if done.is_err() {
                            break;
                        }
                        self.answer_channels(shard, &subscribed, &psubscribed);
                    }
                    message = stream.next() => {
                        let Some(message) = message else { break };
                        let Some(topic) = topic_of_channel(message.get_channel_name()) else { continue };
                        if topic.starts_with("/queue/") {
                            let claim = message.get_payload_bytes() == queues::CLAIM_NOTICE.as_bytes();
                            self.feeds.wake(topic, claim);
                            continue;
                        }
                        let payload = message.get_payload_bytes();
                        if message.from_pattern() {
                            // For wildcard subscribers only; presence is not theirs.
                            if payload.first() != Some(&membership::PRESENCE_MARK) {
                                match wire::decode_published(payload) {
                                    Ok(published) => broker.deliver_wild_from_cluster(topic, published),
                                    Err(e) => tracing::warn!(topic, error = %e, "cluster: dropped an unreadable message"),
                                }
                            }
                            continue;
                        }
                        if let Some((event, node, json)) = membership::read_presence(payload) {
                            // The origin node told its own subscribers itself.
                            if node != self.node {
                                broker.presence_from_cluster(topic, event, json);
                            }
                            continue;
                        }
                        match wire::decode_published(message.get_payload_bytes()) {
                            Ok(published) => broker.deliver_from_cluster(topic, published),
                            Err(e) => tracing::warn!(topic, error = %e, "cluster: dropped an unreadable message"),
                        }
                    }
                }
            }
            tracing::error!(redis = %link.shown, "cluster: lost the pub/sub connection to Redis; topic subscribers miss messages until it is back (reconnecting)");
            link.pubsub_lost.notify_one();
        }
    }

    /// Answers the channel-subscription tickets of the topics now subscribed.
    fn answer_channels(
        &self,
        shard: usize,
        subscribed: &HashSet<ByteString>,
        psubscribed: &HashSet<String>,
    ) {
        let channels = self.channels.lock().unwrap_or_else(|e| e.into_inner());
        for (topic, (_, ticket)) in channels.iter() {
            if subscribed.contains(topic) {
                self.tickets.answer(*ticket, Ok(()));
            }
        }
        drop(channels);
        let patterns = self.patterns.lock().unwrap_or_else(|e| e.into_inner());
        for (glob, (_, tickets)) in patterns.iter() {
            if psubscribed.contains(glob)
                && let Some(ticket) = tickets.get(shard)
            {
                self.tickets.answer(*ticket, Ok(()));
            }
        }
    }
}
