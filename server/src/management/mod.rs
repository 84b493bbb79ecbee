//! The management API: JSON over HTTP on its own listener (loopback by
//! default), for operators and their tools. Every call needs a bearer
//! token (`management_token_file`) or the Basic credentials of a login
//! listed in `management_users`; anything else is a 401 with a JSON error.
//!
//! - `GET /api/overview`: version, uptime, connections, memory, journal, counts.
//! - `GET /api/connections` (counters and rates), `DELETE /api/connections/{id}`
//!   (closes it with an ERROR).
//! - `GET /api/destinations`: every queue, topic and exchange with its
//!   counts, rates and policy.
//! - `GET|DELETE /api/queues/{name}`, `POST /api/queues/{name}/purge`,
//!   `GET /api/queues/{name}/messages?count=N` (peek, left in place),
//!   `POST /api/queues/{name}/move-back` (dead letters back to where they
//!   were first sent: `{"count": N}`) — see `queues`.
//! - `GET /api/exchanges`, `GET|PUT|DELETE /api/exchanges/{name}`,
//!   `POST|DELETE /api/exchanges/{name}/bindings` — see `exchanges`.
//! - `POST /api/publish`: `{"destination": ..., "body": ..., "headers": {...}}`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use serde_json::{Value, json};

use crate::broker::Broker;

mod admin_page;
mod auth;
mod exchanges;
mod queues;
mod rates;

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
    rates: Arc<rates::Rates>,
}

/// A JSON error response.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
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
        rates: Arc::new(rates::Rates::default()),
    };
    tokio::spawn(rates::run(
        state.rates.clone(),
        Arc::downgrade(&state.broker),
    ));
    let api = Router::new()
        .route("/api/overview", get(overview))
        .route("/api/connections", get(connections))
        .route("/api/connections/{id}", delete(close_connection))
        .merge(queues::routes())
        .merge(exchanges::routes())
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "no such API call (see /api/overview)",
            )
        })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::authorize,
        ))
        .with_state(state);
    Router::new()
        .route("/", get(admin_page::admin_file))
        .route("/admin", get(admin_page::admin_file))
        .route("/admin/", get(admin_page::admin_file))
        .route("/admin/{file}", get(admin_page::admin_file))
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
    let list: Vec<Value> = s
        .broker
        .connections()
        .list()
        .into_iter()
        .map(|c| {
            let (send, deliver) = (
                s.rates.rate(&rates::Counter::ConnectionIn(c.id)),
                s.rates.rate(&rates::Counter::ConnectionOut(c.id)),
            );
            let mut v = serde_json::to_value(c).unwrap_or_default();
            v["send_rate"] = json!(send);
            v["deliver_rate"] = json!(deliver);
            v
        })
        .collect();
    Json(json!({ "connections": list, "rate_interval_secs": rates::INTERVAL.as_secs() }))
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
