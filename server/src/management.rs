//! The management API: JSON over HTTP on its own listener (loopback by
//! default), for operators and their tools. Every call needs a bearer
//! token (`management_token_file`) or the Basic credentials of a login
//! listed in `management_users`; anything else is a 401 with a JSON error.
//!
//! - `GET /api/overview`: version, uptime, connections, memory, journal, counts.
//! - `GET /api/connections`, `DELETE /api/connections/{id}` (closes it with an ERROR).
//! - `GET /api/destinations`: every queue, topic and exchange with its counts.
//! - `GET /api/queues/{name}`, `POST /api/queues/{name}/purge`,
//!   `GET /api/queues/{name}/messages?count=N` (peek, left in place),
//!   `POST /api/queues/{name}/move-back` (dead letters back to where they
//!   were first sent: `{"count": N}`).
//! - `POST /api/publish`: `{"destination": ..., "body": ..., "headers": {...}}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use stomp_codec::Headers;

use crate::broker::{Broker, Destination};
use crate::security::passwords;

/// Who may call the API.
#[derive(Debug, Clone, Default)]
pub struct ApiAuth {
    /// The bearer token, when one is configured.
    pub token: Option<String>,
    /// Logins (with their argon2 hashes) allowed in by Basic credentials.
    pub users: Vec<(String, String)>,
}

impl ApiAuth {
    /// Whether any way in is configured (otherwise the API is not served).
    pub fn is_configured(&self) -> bool {
        self.token.is_some() || !self.users.is_empty()
    }
}

#[derive(Clone)]
struct ApiState {
    broker: Arc<Broker>,
    /// Where the broker's WebSocket is, for the admin page's console.
    ws_url: Arc<str>,
    auth: Arc<ApiAuth>,
    started: Instant,
    throttle: Arc<crate::security::LoginThrottle>,
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

/// Compares without leaking where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in text.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Some(out)
}

async fn authorize(
    State(state): State<ApiState>,
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let unauthorized = |why: &str| {
        let mut r = error(StatusCode::UNAUTHORIZED, why);
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            axum::http::HeaderValue::from_static("Bearer, Basic realm=\"stompbox\""),
        );
        r
    };
    let ok = if let Some(token) = given.strip_prefix("Bearer ") {
        state
            .auth
            .token
            .as_ref()
            .is_some_and(|t| same(t.as_bytes(), token.trim().as_bytes()))
    } else if let Some(basic) = given.strip_prefix("Basic ") {
        let Some(pair) = decode_base64(basic.trim()).and_then(|b| String::from_utf8(b).ok()) else {
            return unauthorized("malformed Basic credentials");
        };
        let (login, password) = pair.split_once(':').unwrap_or((&pair, ""));
        let hash = state
            .auth
            .users
            .iter()
            .find(|(l, _)| l == login)
            .map(|(_, h)| h.clone());
        let password = password.to_string();
        // argon2 takes tens of milliseconds: off the async workers.
        tokio::task::spawn_blocking(move || match hash {
            Some(h) => passwords::verify(&h, &password),
            None => {
                passwords::verify_nobody(&password);
                false
            }
        })
        .await
        .unwrap_or(false)
    } else {
        return unauthorized(
            "credentials required: Authorization: Bearer TOKEN, or Basic for a login in management_users",
        );
    };
    if !ok {
        // Guessing is slowed per address, as for STOMP logins.
        let wait = state
            .throttle
            .failed(peer.ip(), tokio::time::Instant::now());
        tokio::time::sleep(wait).await;
        return unauthorized("wrong token or credentials");
    }
    state.throttle.succeeded(peer.ip());
    next.run(request).await
}

/// The admin page's files, compiled in: (path, content type, bytes).
const ADMIN_FILES: &[(&str, &str, &[u8])] = &[
    (
        "/admin",
        "text/html; charset=utf-8",
        include_bytes!("../../web/admin/index.html"),
    ),
    (
        "/admin/admin.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../web/admin/admin.js"),
    ),
    (
        "/admin/admin.css",
        "text/css; charset=utf-8",
        include_bytes!("../../web/admin/admin.css"),
    ),
    (
        "/admin/favicon.svg",
        "image/svg+xml",
        include_bytes!("../../web/admin/favicon.svg"),
    ),
];

/// Serves the admin page's files; they hold no data, so no credentials
/// are asked for them (the page asks for the API's).
async fn admin_file(uri: axum::http::Uri) -> Response {
    let path = match uri.path() {
        "/" | "/admin/" | "/admin/index.html" => "/admin",
        other => other,
    };
    match ADMIN_FILES.iter().find(|(p, _, _)| *p == path) {
        Some((_, content_type, bytes)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            *bytes,
        )
            .into_response(),
        None => error(StatusCode::NOT_FOUND, "no such page"),
    }
}

/// The API's router, with the admin page at `/admin`; `ws_url` is the
/// broker's WebSocket, for the page's STOMP console.
pub fn router(broker: Arc<Broker>, auth: ApiAuth, ws_url: String) -> Router {
    let state = ApiState {
        broker,
        ws_url: ws_url.into(),
        auth: Arc::new(auth),
        started: Instant::now(),
        throttle: Arc::new(crate::security::LoginThrottle::new()),
    };
    let api = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}", delete(close_connection))
        .route("/api/destinations", get(destinations))
        .route("/api/queues/{name}", get(queue))
        .route("/api/queues/{name}/purge", post(purge))
        .route("/api/queues/{name}/messages", get(peek))
        .route("/api/queues/{name}/move-back", post(move_back))
        .route("/api/publish", post(publish))
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API call (see /api/overview)",
            )
        })
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .with_state(state);
    Router::new()
        .route("/", get(admin_file))
        .route("/admin", get(admin_file))
        .route("/admin/", get(admin_file))
        .route("/admin/{file}", get(admin_file))
        .merge(api)
}

async fn overview(State(s): State<ApiState>) -> Json<Value> {
    let b = &s.broker;
    let memory = b.memory();
    let (queues, topics) = b.destination_counts();
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "ws_url": &*s.ws_url,
        "uptime_secs": s.started.elapsed().as_secs(),
        "connections": b.connections().len(),
        "queues": queues.len(),
        "topics": topics.len(),
        "messages_waiting": queues.iter().map(|(_, c)| c.depth).sum::<u64>(),
        "messages_unacked": queues.iter().map(|(_, c)| c.unacked).sum::<u64>(),
        "published": queues.iter().map(|(_, c)| c.published).sum::<u64>()
            + topics.iter().map(|(_, c)| c.published).sum::<u64>(),
        "memory_used": memory.used(),
        "memory_limit": memory.limit(),
        "memory_alarm": memory.alarm(),
        "journal": b.journal().map(|j| {
            let st = j.stats();
            json!({ "dir": j.dir().display().to_string(), "disk_bytes": st.disk_bytes, "max_bytes": st.max_bytes })
        }),
    }))
}

async fn connections(State(s): State<ApiState>) -> Json<Value> {
    Json(json!({ "connections": s.broker.connections().list() }))
}

async fn close_connection(State(s): State<ApiState>, Path(id): Path<String>) -> Response {
    let Ok(id) = id.parse::<u64>() else {
        return error(
            StatusCode::BAD_REQUEST,
            format!("{id:?} is not a connection id (a number)"),
        );
    };
    if s.broker.connections().close(id) {
        Json(json!({ "closed": id })).into_response()
    } else {
        error(StatusCode::NOT_FOUND, format!("no open connection {id}"))
    }
}

async fn destinations(State(s): State<ApiState>) -> Json<Value> {
    let (queues, topics) = s.broker.destination_counts();
    let exchanges: Vec<Value> = s
        .broker
        .list()
        .into_iter()
        .filter(|d| d.name.starts_with("/exchange/"))
        .map(|d| json!({ "name": d.name, "type": d.kind, "bindings": d.bindings }))
        .collect();
    Json(json!({
        "queues": queues.iter().map(|(name, c)| queue_json(name, c)).collect::<Vec<_>>(),
        "topics": topics.iter().map(|(name, c)| json!({
            "name": name, "subscribers": c.consumers, "published": c.published,
            "delivered": c.delivered, "dropped": c.dropped,
        })).collect::<Vec<_>>(),
        "exchanges": exchanges,
    }))
}

fn queue_json(name: &str, c: &crate::metrics::QueueCounts) -> Value {
    json!({
        "name": name, "messages": c.depth, "bytes": c.bytes, "consumers": c.consumers,
        "unacked": c.unacked, "published": c.published, "delivered": c.delivered,
        "acknowledged": c.acknowledged, "redelivered": c.redelivered,
        "dead": { "rejected": c.dead[0], "expired": c.dead[1], "max_deliveries": c.dead[2], "overflow": c.dead[3] },
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
        Ok(q) => Json(queue_json(q.name(), &q.counts())).into_response(),
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
        match sent {
            // Taken out only once it is where it belongs: at least once.
            Ok(_) => {
                q.remove(m.id.number());
                moved += 1;
            }
            Err(e) => skipped.push(json!({ "message_id": m.id.to_string(), "why": e.to_string() })),
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
    let sent = s.broker.send(
        p.destination.clone().into(),
        headers,
        bytes::Bytes::from(p.body.into_bytes()),
        false,
    );
    s.broker.route_dead_letters();
    match sent {
        Ok((id, _)) => Json(json!({ "message_id": id.to_string() })).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Serves the API on `listener` until `cancel`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    cancel: tokio_util::sync::CancellationToken,
) {
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(cancel.cancelled_owned())
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "management API failed");
    }
}
