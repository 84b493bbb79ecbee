//! The HTTP side: WebSocket at `/ws`, `/health`, and the web client at `/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_http::services::ServeDir;

use super::admission::ConnectionSlots;
use super::tcp::is_loopback;
use super::ws::{SUBPROTOCOLS, WsTransport};
use crate::broker::Broker;
use crate::session::driver::{DriverSettings, refuse, run_session};

/// Bytes read from a WebSocket at a time.
const WS_READ_BUFFER: usize = 4 * 1024;
/// Bytes gathered before a WebSocket write goes out without a flush.
const WS_WRITE_BUFFER: usize = 16 * 1024;

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
    (
        [("content-type", "application/json")],
        format!(
            "{{\"status\":\"ok\",\"connections\":{},\"max_connections\":{}}}",
            state.slots.open(),
            state.slots.max()
        ),
    )
}

async fn websocket(
    upgrade: WebSocketUpgrade,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    State(state): State<HttpState>,
) -> Response {
    // The decoder enforces the frame limit; the WebSocket layer only needs
    // a ceiling so one message cannot exceed it by much.
    let max = state.limits.max_frame_size + 1024;
    upgrade
        .protocols(SUBPROTOCOLS)
        .max_message_size(max)
        .max_frame_size(max)
        // tungstenite's defaults reserve 128 KiB per direction per
        // connection: 138 KiB per idle browser in `stompbox bench
        // connections` over ws://. Chat frames are small, and larger ones
        // still arrive, in more reads.
        .read_buffer_size(WS_READ_BUFFER)
        .write_buffer_size(WS_WRITE_BUFFER)
        .on_upgrade(move |socket| {
            let HttpState {
                broker,
                settings,
                limits,
                cancel,
                tracker,
                slots,
            } = state;
            let transport = WsTransport::new(socket, limits);
            // Claimed after the upgrade, so a browser over the limit reads
            // why in a STOMP ERROR instead of a bare failed handshake.
            let slot = slots.claim();
            let cancel = cancel.child_token();
            tracker.track_future(async move {
                let Some(slot) = slot else {
                    tracing::debug!(%peer, max = slots.max(), "connection refused: server full");
                    return refuse(transport, slots.refusal()).await;
                };
                run_session(transport, broker, &settings, is_loopback(&peer), cancel).await;
                drop(slot);
            })
        })
}
