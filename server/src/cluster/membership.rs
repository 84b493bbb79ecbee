//! Which nodes are alive, what each has promised (last wills, presence),
//! and who keeps those promises when a node dies.
//!
//! Each node refreshes `stompbox:alive:NODE` (expiring after
//! `cluster_claim_idle_ms`) and is listed in `stompbox:nodes`. Its
//! connections' last wills wait in `stompbox:wills:NODE` and its present
//! members in one hash per topic. Every node looks at the list each
//! second: the first survivor to find a node's key gone takes the node
//! over in one script, then publishes its wills and the leave events of
//! its members, as the node itself would have.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use stomp_codec::{ByteString, Headers};
use tokio_util::sync::CancellationToken;

use super::{Cluster, Request, key, scripts, wire};
use crate::broker::Broker;

/// An EVALSHA of `script` (loaded by the command task at each connect)
/// with `keys`; the caller adds the arguments.
pub(super) fn evalsha(script: &redis::Script, keys: &[String]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    cmd
}

/// First byte of a presence event on a topic's channel (a message's
/// payload starts with its epoch, which never has it).
pub(super) const PRESENCE_MARK: u8 = 1;

/// A presence event as it travels: `\x01EVENT\nNODE\nJSON`.
pub(super) fn presence_payload(event: &str, node: &str, json: &str) -> Vec<u8> {
    let mut p = vec![PRESENCE_MARK];
    p.extend_from_slice(event.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(node.as_bytes());
    p.push(b'\n');
    p.extend_from_slice(json.as_bytes());
    p
}

/// Reads a presence event: its name, origin node and member JSON.
pub(super) fn read_presence(payload: &[u8]) -> Option<(&str, &str, &str)> {
    let rest = payload.strip_prefix(&[PRESENCE_MARK])?;
    let text = std::str::from_utf8(rest).ok()?;
    let mut parts = text.splitn(3, '\n');
    Some((parts.next()?, parts.next()?, parts.next()?))
}

impl Cluster {
    /// This node's id, which member ids of its subscribers start with.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// A local subscriber joined `topic`'s presence as `member` (`json`
    /// is what others are shown): recorded in Redis and announced on
    /// every node. The completion is done when Redis has it, so a RECEIPT
    /// for the SUBSCRIBE means every node's newcomers see the member.
    pub fn presence_join(&self, topic: &str, member: &str, json: &str) -> crate::store::Completion {
        let mut cmd = evalsha(
            &self.scripts.join,
            &[
                key(topic, &format!("p:{}", self.node)),
                key(topic, "pn"),
                format!("stompbox:ptopics:{}", self.node),
            ],
        );
        cmd.arg(member).arg(json).arg(&self.node).arg(topic);
        let kept = self.request(self.home(), Request::Cmd(Box::new(cmd)), None);
        kept.and(self.announce(topic, "join", &self.node, json))
    }

    /// A local member left `topic`'s presence.
    pub fn presence_leave(&self, topic: &str, member: &str, json: &str) {
        let mut cmd = evalsha(
            &self.scripts.leave,
            &[key(topic, &format!("p:{}", self.node))],
        );
        cmd.arg(member);
        let _ = self.request(self.home(), Request::Cmd(Box::new(cmd)), None);
        let _ = self.announce(topic, "leave", &self.node, json);
    }

    /// Publishes a presence event of `node`'s on `topic`'s channel.
    fn announce(
        &self,
        topic: &str,
        event: &str,
        node: &str,
        json: &str,
    ) -> crate::store::Completion {
        let mut cmd = redis::cmd("PUBLISH");
        cmd.arg(key(topic, "c"))
            .arg(presence_payload(event, node, json));
        self.request(self.link(topic), Request::Cmd(Box::new(cmd)), None)
    }

    /// The members of `topic` on the other live nodes, as JSON objects.
    pub async fn presence_elsewhere(
        &self,
        topic: &str,
    ) -> Result<Vec<String>, super::ClusterError> {
        let Some(mut conn) = self.home().connection() else {
            return Err(super::ClusterError::Unavailable(self.home().shown.clone()));
        };
        let mut cmd = self.scripts.read.prepare_invoke();
        cmd.key(key(topic, "pn"))
            .arg(key(topic, "p:"))
            .arg(&self.node)
            .arg("stompbox:alive:");
        let members: Vec<String> =
            tokio::time::timeout(super::REQUEST_TIMEOUT, cmd.invoke_async(&mut conn))
                .await
                .map_err(|_| super::ClusterError::Unavailable(self.home().shown.clone()))?
                .map_err(|e| super::ClusterError::Redis(e.to_string()))?;
        Ok(members)
    }

    /// Keeps a connection's last will in Redis, for a survivor to publish
    /// should this node die before the connection ends.
    pub fn keep_will(&self, session: u64, destination: &str, headers: &Headers, body: &[u8]) {
        let mut all = Headers::with_capacity(headers.len() + 1);
        all.push("destination", destination);
        for (n, v) in headers.iter() {
            all.push(n, v);
        }
        let mut cmd = redis::cmd("HSET");
        cmd.arg(format!("stompbox:wills:{}", self.node))
            .arg(session)
            .arg(&wire::encode(&all, body)[..]);
        let _ = self.request(self.home(), Request::Cmd(Box::new(cmd)), None);
    }

    /// The connection ended: its will is published (by this node) or not
    /// needed; either way no survivor should publish it.
    pub fn forget_will(&self, session: u64) {
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(format!("stompbox:wills:{}", self.node))
            .arg(session);
        let _ = self.request(self.home(), Request::Cmd(Box::new(cmd)), None);
    }

    /// A clean stop, once the node's connections are closed: what they
    /// asked on their way out (leaves, acks, will deletions) reaches Redis,
    /// the queue messages it holds go back to the others, and the node
    /// leaves the list, so no survivor takes it over and publishes wills
    /// of connections that ended with the shutdown. Bounded by `limit`.
    pub async fn leave(&self, broker: &Broker, limit: Duration) {
        // No more fetching, and no more liveness marks.
        self.stopping.cancel();
        let done = async {
            let last = self.tickets.take_unnumbered();
            let _ = self
                .settled(crate::store::Completion::after_ticket(last))
                .await;
            self.give_everything_back(broker).await;
            let Some(mut conn) = self.home().connection() else {
                return;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SREM")
                .arg("stompbox:nodes")
                .arg(&self.node)
                .ignore()
                .cmd("DEL")
                .arg(format!("stompbox:alive:{}", self.node))
                .arg(format!("stompbox:wills:{}", self.node))
                .arg(format!("stompbox:ptopics:{}", self.node))
                .ignore();
            let _: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        };
        if tokio::time::timeout(limit, done).await.is_err() {
            tracing::warn!(
                "cluster: leaving took too long; the other nodes will take this node over once its liveness key expires"
            );
        } else {
            tracing::info!("cluster: left the cluster");
        }
    }

    /// Refreshes this node's liveness and takes over dead nodes.
    pub(super) async fn membership(
        self: Arc<Self>,
        broker: Arc<Broker>,
        cancel: CancellationToken,
    ) {
        let every = (self.claim_idle / 3).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let take_over = redis::Script::new(scripts::TAKE_OVER);
        let mut up = self.home().up.subscribe();
        loop {
            // Straight after (re)connecting too: a node's presence counts
            // only while its liveness key is there.
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
                _ = up.changed() => {}
            }
            if self.stopping.is_cancelled() {
                return;
            }
            let Some(mut conn) = self.home().connection() else {
                continue;
            };
            let mut pipe = redis::pipe();
            pipe.cmd("SET")
                .arg(format!("stompbox:alive:{}", self.node))
                .arg(1)
                .arg("PX")
                .arg(self.claim_idle.as_millis() as u64)
                .ignore()
                .cmd("SADD")
                .arg("stompbox:nodes")
                .arg(&self.node)
                .ignore()
                .cmd("SMEMBERS")
                .arg("stompbox:nodes");
            let nodes: redis::RedisResult<(Vec<String>,)> = pipe.query_async(&mut conn).await;
            let Ok((nodes,)) = nodes else { continue };
            self.alive.send_replace(true);
            for node in nodes.iter().filter(|n| **n != self.node) {
                let taken: redis::RedisResult<Value> = take_over
                    .arg(node)
                    .arg("stompbox:")
                    .invoke_async(&mut conn)
                    .await;
                match taken {
                    Ok(Value::Array(parts)) => self.keep_promises(&broker, node, parts),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(node, error = %e, "cluster: checking a node failed"),
                }
            }
        }
    }

    /// Publishes a dead node's wills and its members' leaves.
    fn keep_promises(&self, broker: &Broker, node: &str, parts: Vec<Value>) {
        let mut parts = parts.into_iter();
        let (Some(Value::Array(wills)), Some(Value::Array(topics))) = (parts.next(), parts.next())
        else {
            return;
        };
        let mut published = 0;
        for will in wills {
            let Value::BulkString(frame) = will else {
                continue;
            };
            let Ok((mut headers, body)) = wire::decode(&frame) else {
                continue;
            };
            let Some(destination) = headers.get("destination").map(ByteString::from) else {
                continue;
            };
            headers.remove("destination");
            match broker.send(destination, headers, body, false) {
                Ok(_) => published += 1,
                Err(e) => {
                    tracing::warn!(node, error = %e, "cluster: a dead node's last will was not published")
                }
            }
        }
        let mut left = 0;
        for topic in topics {
            let Value::Array(pair) = topic else { continue };
            let mut pair = pair.into_iter();
            let (Some(Value::BulkString(name)), Some(Value::Array(members))) =
                (pair.next(), pair.next())
            else {
                continue;
            };
            let name = String::from_utf8_lossy(&name).into_owned();
            for member in members {
                let Value::BulkString(json) = member else {
                    continue;
                };
                let json = String::from_utf8_lossy(&json);
                let _ = self.announce(&name, "leave", node, &json);
                left += 1;
            }
        }
        tracing::warn!(
            node,
            wills = published,
            members = left,
            "cluster: a node stopped answering; published its last wills and its members' leaves"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_presence_event_reads_back() {
        let p = presence_payload("join", "n1", "{\"id\":\"a\"}");
        assert_eq!(read_presence(&p), Some(("join", "n1", "{\"id\":\"a\"}")));
        assert_eq!(read_presence(b"epoch\n1\nSEND"), None);
    }
}
