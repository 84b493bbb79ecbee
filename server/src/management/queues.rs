//! Destinations as operators see them: the list, one queue, and the
//! actions on queues (purge, peek, move dead letters back, delete), plus
//! publishing for debugging.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use stomp_codec::Headers;

use super::rates::{self, Counter};
use super::{ApiState, error};
use crate::broker::{DeleteError, Destination};

/// The calls on destinations, queues and publishing.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/api/destinations", get(destinations))
        .route("/api/queues/{name}", get(queue).delete(delete_queue))
        .route("/api/queues/{name}/purge", post(purge))
        .route("/api/queues/{name}/messages", get(peek))
        .route("/api/queues/{name}/move-back", post(move_back))
        .route("/api/topics/{name}", axum::routing::delete(delete_topic))
        .route("/api/topics/{name}/purge", post(purge_topic))
        .route("/api/publish", post(publish))
}

async fn destinations(State(s): State<ApiState>) -> Json<Value> {
    let (mut queues, mut topics) = (Vec::new(), Vec::new());
    for d in s.broker.all_destinations() {
        match d {
            Destination::Queue(q) => queues.push(queue_json(&s, &q, false)),
            Destination::Topic(t) => topics.push(topic_json(&s, &t)),
        }
    }
    let by_name = |a: &Value, b: &Value| a["name"].as_str().cmp(&b["name"].as_str());
    queues.sort_by(by_name);
    topics.sort_by(by_name);
    let exchanges: Vec<Value> = s
        .broker
        .list()
        .into_iter()
        .filter(|d| d.name.starts_with("/exchange/"))
        .map(|d| json!({ "name": d.name, "type": d.kind, "bindings": d.bindings }))
        .collect();
    Json(json!({
        "queues": queues,
        "topics": topics,
        "exchanges": exchanges,
        "rate_interval_secs": rates::INTERVAL.as_secs(),
    }))
}

/// A queue's counts and rates; its policy whole when `full`, else the
/// pattern that chose it.
fn queue_json(s: &ApiState, q: &crate::broker::QueueDestination, full: bool) -> Value {
    let c = q.counts();
    let name = q.name().to_string();
    let policy = if full {
        serde_json::to_value(q.policy()).unwrap_or_default()
    } else {
        json!(q.policy().pattern)
    };
    json!({
        "name": name, "messages": c.depth, "bytes": c.bytes, "consumers": c.consumers,
        "unacked": c.unacked, "published": c.published, "delivered": c.delivered,
        "acknowledged": c.acknowledged, "redelivered": c.redelivered,
        "dead": { "rejected": c.dead[0], "expired": c.dead[1], "max_deliveries": c.dead[2], "overflow": c.dead[3] },
        "publish_rate": s.rates.rate(&Counter::QueuePublished(name.clone())),
        "deliver_rate": s.rates.rate(&Counter::QueueDelivered(name.clone())),
        "ack_rate": s.rates.rate(&Counter::QueueAcknowledged(name)),
        "policy": policy,
    })
}

fn topic_json(s: &ApiState, t: &crate::broker::TopicDestination) -> Value {
    let c = t.counts();
    let name = t.name().to_string();
    json!({
        "name": name, "subscribers": c.consumers, "published": c.published,
        "delivered": c.delivered, "dropped": c.dropped,
        "publish_rate": s.rates.rate(&Counter::TopicPublished(name.clone())),
        "deliver_rate": s.rates.rate(&Counter::TopicDelivered(name)),
        "policy": serde_json::to_value(t.policy()).unwrap_or_default(),
    })
}

/// The queue `/queue/{name}`, if it exists.
fn find_queue(s: &ApiState, name: &str) -> Result<Arc<crate::broker::QueueDestination>, String> {
    let full = format!("/queue/{name}");
    match s.broker.existing_destination(&full) {
        Some(Destination::Queue(q)) => Ok(q),
        _ => Err(format!("no queue {full}")),
    }
}

async fn queue(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    match find_queue(&s, &name) {
        Ok(q) => Json(queue_json(&s, &q, true)).into_response(),
        Err(m) => error(StatusCode::NOT_FOUND, m),
    }
}

async fn purge(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let q = match find_queue(&s, &name) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::NOT_FOUND, m),
    };
    // Paged messages are read back to be dropped: off the async workers.
    match tokio::task::spawn_blocking(move || q.purge()).await {
        Ok(n) => Json(json!({ "purged": n })).into_response(),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the purge failed"),
    }
}

async fn delete_queue(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let broker = s.broker.clone();
    let full = format!("/queue/{name}");
    // Paged messages are read back to be settled: off the async workers.
    let deleted = tokio::task::spawn_blocking(move || broker.delete_queue(&full)).await;
    match deleted {
        Ok(Ok(n)) => {
            Json(json!({ "deleted": format!("/queue/{name}"), "messages": n })).into_response()
        }
        Ok(Err(e @ DeleteError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => error(StatusCode::CONFLICT, e.to_string()),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the delete failed"),
    }
}

/// The topic `/topic/{name}`, if it exists.
fn find_topic(s: &ApiState, name: &str) -> Result<Arc<crate::broker::TopicDestination>, String> {
    let full = format!("/topic/{name}");
    match s.broker.existing_destination(&full) {
        Some(Destination::Topic(t)) => Ok(t),
        _ => Err(format!("no topic {full}")),
    }
}

/// Drops a topic's kept history (a chat room's, say), on disk too.
async fn purge_topic(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    if let Some(cluster) = s.broker.cluster() {
        // The history is Redis', whether this node follows the topic or not.
        return match cluster.purge_topic(&format!("/topic/{name}")).await {
            Ok(n) => Json(json!({ "purged": n })).into_response(),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        };
    }
    let t = match find_topic(&s, &name) {
        Ok(t) => t,
        Err(m) => return error(StatusCode::NOT_FOUND, m),
    };
    let (n, completion) = t.purge_history();
    match saved(&s, completion).await {
        Ok(()) => Json(json!({ "purged": n })).into_response(),
        Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
    }
}

async fn delete_topic(State(s): State<ApiState>, Path(name): Path<String>) -> Response {
    let full = format!("/topic/{name}");
    match s.broker.delete_topic(&full) {
        Ok((n, completion)) => match saved(&s, completion).await {
            Ok(()) => Json(json!({ "deleted": full, "messages": n })).into_response(),
            Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        },
        Err(e @ DeleteError::NotFound(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

#[derive(Deserialize)]
struct PeekQuery {
    count: Option<usize>,
}

fn message_json(m: &crate::broker::Message) -> Value {
    let headers: serde_json::Map<String, Value> = m
        .headers
        .iter()
        .map(|(n, v)| (n.to_string(), Value::from(v.to_string())))
        .collect();
    json!({
        "message_id": m.id.to_string(),
        "destination": m.destination.to_string(),
        "headers": headers,
        "body": String::from_utf8_lossy(&m.body),
        "priority": m.terms.priority,
    })
}

async fn peek(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(query): Query<PeekQuery>,
) -> Response {
    let q = match find_queue(&s, &name) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::NOT_FOUND, m),
    };
    let count = query.count.unwrap_or(10).min(1000);
    let messages: Vec<Value> = q.peek(count).iter().map(|m| message_json(m)).collect();
    Json(json!({ "messages": messages })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MoveBack {
    #[serde(default)]
    count: Option<usize>,
}

/// Dead letters go back to the destination they were first sent to
/// (`x-original-destination`), without the headers the dead-lettering added.
async fn move_back(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Option<Json<MoveBack>>,
) -> Response {
    let q = match find_queue(&s, &name) {
        Ok(q) => q,
        Err(m) => return error(StatusCode::NOT_FOUND, m),
    };
    let count = body.and_then(|b| b.0.count).unwrap_or(100).min(10_000);
    let mut moved = 0;
    let mut skipped = Vec::new();
    for m in q.peek(count) {
        let Some(original) = m.headers.get("x-original-destination") else {
            skipped.push(json!({ "message_id": m.id.to_string(), "why": "no x-original-destination header: not a dead letter" }));
            continue;
        };
        let mut headers = Headers::default();
        for (n, v) in m.headers.iter() {
            if !n.starts_with("x-death") && n != "x-original-destination" {
                headers.push(n.to_string(), v.to_string());
            }
        }
        let sent = s
            .broker
            .send(original.to_string().into(), headers, m.body.clone(), false);
        s.broker.route_dead_letters();
        let sent = match sent {
            Ok((_, completion)) => saved(&s, completion)
                .await
                .map_err(|_| "not saved".to_string()),
            Err(e) => Err(e.to_string()),
        };
        match sent {
            // Taken out only once it is where it belongs (on disk when
            // durable): at least once.
            Ok(()) => {
                q.remove(m.id.number());
                moved += 1;
            }
            Err(why) => skipped.push(json!({ "message_id": m.id.to_string(), "why": why })),
        }
    }
    Json(json!({ "moved": moved, "skipped": skipped })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Publish {
    destination: String,
    #[serde(default)]
    body: String,
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
}

async fn publish(
    State(s): State<ApiState>,
    body: Result<Json<Publish>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let Json(p) = match body {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!(
                    "expected {{\"destination\": ..., \"body\": ..., \"headers\": {{...}}}}: {e}"
                ),
            );
        }
    };
    let mut headers = Headers::default();
    for (n, v) in &p.headers {
        if crate::protocol::is_broker_header(n) {
            continue;
        }
        headers.push(n.clone(), v.clone());
    }
    headers.push("x-sender", "(management API)");
    let broker = &s.broker;
    let body = bytes::Bytes::from(p.body.into_bytes());
    let destination = crate::broker::exchange::alias(&p.destination).unwrap_or(p.destination);
    // Through an exchange it must reach a queue: the caller wants to know
    // when it went nowhere.
    let sent = match crate::broker::exchange::parse_destination(&destination) {
        Some(Err(e)) => Err(e.to_string()),
        Some(Ok((name, key))) => broker
            .publish_exchange(name, key, headers, body, true)
            .map(|(n, c)| (json!({ "routed_to_queues": n }), c))
            .map_err(|e| e.to_string()),
        None => broker
            .send(destination.clone().into(), headers, body, false)
            .map(|(id, c)| (json!({ "message_id": id.to_string() }), c))
            .map_err(|e| e.to_string()),
    };
    broker.route_dead_letters();
    match sent {
        Ok((answer, completion)) => match saved(&s, completion).await {
            Ok(()) => Json(answer).into_response(),
            Err(why) => error(StatusCode::INTERNAL_SERVER_ERROR, why),
        },
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Waits until a durable message is on disk, as a RECEIPT would.
/// Waits until `completion` is done: on disk, and in cluster mode taken
/// by Redis.
async fn saved(s: &ApiState, completion: crate::store::Completion) -> Result<(), String> {
    if let Some(journal) = s.broker.journal() {
        journal
            .wait(completion)
            .await
            .map_err(|e| format!("accepted but not saved: {e}"))?;
    }
    if let Some(cluster) = s.broker.cluster() {
        cluster
            .settled(completion)
            .await
            .map_err(|e| format!("not accepted by the cluster: {e}"))?;
    }
    Ok(())
}
