//! The HTTP side: WebSocket at `/ws`, `/health`, and the web client at `/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use super::admission::{self, ConnectionSlots};
use super::ws::{SUBPROTOCOLS, WsTransport};
use super::ws_handshake::Handshake;
use crate::broker::Broker;
use crate::session::driver::DriverSettings;

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    /// The broker.
    pub broker: Arc<Broker>,
    /// Per-connection settings.
    pub settings: Arc<DriverSettings>,
    /// Frame limits for WebSocket sessions.
    pub limits: stomp_codec::Limits,
    /// Cancelled on shutdown.
    pub cancel: CancellationToken,
    /// WebSocket sessions run on it: axum does not wait for upgraded sockets on shutdown.
    pub tracker: TaskTracker,
    /// Shared with the TCP listener: one limit for all STOMP connections.
    pub slots: Arc<ConnectionSlots>,
    /// Which web pages may open WebSockets.
    pub origins: Arc<super::origin::AllowedOrigins>,
}

/// The axum router.
pub fn router(state: HttpState, web_root: Option<PathBuf>) -> Router {
    let router = Router::new()
        .route("/ws", get(websocket))
        .route("/health", get(health));
    let router = match web_root {
        Some(root) => {
            router.fallback_service(ServeDir::new(root).append_index_html_on_directories(true))
        }
        None => router.fallback(super::web::embedded),
    };
    router.with_state(state)
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    let memory = state.broker.memory();
    let body = serde_json::json!({
        "status": if memory.alarm() { "memory alarm: publishers blocked" } else { "ok" },
        "connections": state.slots.open(),
        "max_connections": state.slots.max(),
        "memory_used": memory.used(),
        "memory_limit": memory.limit(),
        "memory_alarm": memory.alarm(),
        "memory_alarms": memory.alarms(),
        "headers_dropped": state.broker.stats().headers_dropped(),
        "dropped_from_queues": state.broker.stats().dropped_from_queues(),
        "dead_lettered": state.broker.stats().dead_lettered(),
        "dead_letters_dropped": state.broker.stats().dead_letters_dropped(),
        "duplicates": state.broker.stats().duplicates(),
        "unroutable": state.broker.stats().unroutable(),
        // null when running in memory only.
        "journal": state.broker.journal().map(|j| {
            let s = j.stats();
            serde_json::json!({
                "dir": j.dir().display().to_string(),
                "disk_bytes": s.disk_bytes,
                "max_bytes": s.max_bytes,
                "segments": s.segments,
                "syncs": s.syncs,
                "records": s.records,
                "bytes_written": s.bytes_written,
                "failed_writes": s.failed_writes,
            })
        }),
    });
    ([("content-type", "application/json")], body.to_string())
}

async fn websocket(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
    mut request: Request,
) -> Response {
    let text = |name| {
        request
            .headers()
            .get(name)
            .and_then(|v: &axum::http::HeaderValue| v.to_str().ok())
    };
    if let Err(refused) = state.origins.check(
        text(axum::http::header::ORIGIN),
        text(axum::http::header::HOST),
    ) {
        tracing::warn!(%peer, origin = %refused.0, "WebSocket from a page of another origin refused");
        return (axum::http::StatusCode::FORBIDDEN, format!("{refused}\n")).into_response();
    }
    let handshake = match Handshake::accept(&mut request, &SUBPROTOCOLS) {
        Ok(handshake) => handshake,
        Err(e) => return e.into_response(),
    };
    let (response, upgraded) = handshake.respond();
    let HttpState {
        broker,
        settings,
        limits,
        cancel,
        tracker,
        slots,
        origins: _,
    } = state;
    let cancel = cancel.child_token();
    // On the tracker: axum does not wait for upgraded sockets on shutdown.
    tracker.spawn(async move {
        let Some(upgraded) = upgraded.await else {
            return;
        };
        let transport = WsTransport::new(upgraded, limits, broker.memory()).await;
        // Admitted after the upgrade, so a browser over the limit reads
        // why in a STOMP ERROR instead of a bare failed handshake.
        admission::serve(transport, peer, &slots, broker, &settings, cancel).await;
    });
    response
}
