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
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<Vec<std::net::IpAddr>>,
    /// What the chat page needs to know of the configuration, as JSON
    /// (`/config.json`): where to get a login token, if anywhere.
    pub page_config: Arc<str>,
}

/// Who a WebSocket client is when a proxy may stand between: behind a
/// trusted proxy, the address it forwarded (the right-most one not itself
/// a trusted proxy); a request that says it was forwarded by a proxy that
/// is not trusted counts as coming from nowhere in particular, never from
/// loopback, so a proxy on the same host cannot make every client local.
pub fn client_address(
    peer: SocketAddr,
    forwarded_for: Option<&str>,
    trusted: &[std::net::IpAddr],
) -> SocketAddr {
    let Some(forwarded) = forwarded_for else {
        return peer;
    };
    if !trusted.contains(&peer.ip()) {
        return SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), peer.port());
    }
    forwarded
        .split(',')
        .rev()
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .find(|ip| !trusted.contains(ip))
        .map_or(
            SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), peer.port()),
            |ip| SocketAddr::new(ip, 0),
        )
}

/// The axum router.
pub fn router(state: HttpState, web_root: Option<PathBuf>) -> Router {
    let router = Router::new()
        .route("/ws", get(websocket))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/config.json", get(page_config));
    let router = match web_root {
        Some(root) => {
            router.fallback_service(ServeDir::new(root).append_index_html_on_directories(true))
        }
        None => router.fallback(super::web::embedded),
    };
    router.with_state(state)
}

async fn page_config(State(state): State<HttpState>) -> impl IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "application/json"),
            (axum::http::header::CACHE_CONTROL, "no-cache"),
        ],
        state.page_config.to_string(),
    )
}

async fn health(State(state): State<HttpState>) -> impl IntoResponse {
    let memory = state.broker.memory();
    let cluster = state.broker.cluster();
    let status = if memory.alarm() {
        "memory alarm: publishers blocked"
    } else if cluster.is_some_and(|c| !c.is_up()) {
        "cluster: a Redis is unreachable; its topics and queues are refused"
    } else {
        "ok"
    };
    let body = serde_json::json!({
        "status": status,
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
        // null when not a cluster node.
        "cluster": cluster.map(|c| c.health()),
    });
    ([("content-type", "application/json")], body.to_string())
}

/// The Prometheus exposition (OpenMetrics text).
async fn metrics(State(state): State<HttpState>) -> Response {
    let collector = crate::metrics::BrokerCollector::new(
        state.broker.clone(),
        crate::metrics::MAX_DESTINATION_SERIES,
    );
    // Locks every destination in turn: off the async workers.
    match tokio::task::spawn_blocking(move || collector.render()).await {
        Ok(Ok(text)) => (
            [(
                "content-type",
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        _ => (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            [("content-type", "application/json")],
            r#"{"error":"metrics could not be written"}"#,
        )
            .into_response(),
    }
}

async fn websocket(
    ConnectInfo(connection): ConnectInfo<super::Peer>,
    State(state): State<HttpState>,
    mut request: Request,
) -> Response {
    let peer = connection.addr;
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
    let forwarded_for = text(axum::http::HeaderName::from_static("x-forwarded-for"))
        .map(str::to_string)
        .or_else(|| text(axum::http::header::FORWARDED).map(|_| String::new()));
    let client = client_address(peer, forwarded_for.as_deref(), &state.trusted_proxies);
    if client != peer {
        tracing::debug!(%peer, %client, "a proxied WebSocket: the client's address is taken from X-Forwarded-For, or treated as remote when the proxy is not trusted");
    }
    let peer = super::Peer {
        addr: client,
        certificate_login: connection.certificate_login,
        transport: connection.transport,
    };
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
        trusted_proxies: _,
        page_config: _,
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
        admission::serve(transport, peer, slots, broker, settings, cancel).await;
    });
    response
}

#[cfg(test)]
mod tests {
    use super::client_address;
    use std::net::{IpAddr, SocketAddr};

    #[test]
    fn forwarded_addresses_count_only_from_trusted_proxies() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let proxy: IpAddr = "127.0.0.1".parse().unwrap();
        // Not proxied: the socket's peer.
        assert_eq!(client_address(local, None, &[]), local);
        // Proxied by an untrusted proxy: neither the proxy (loopback) nor
        // what it claims.
        let untrusted = client_address(local, Some("198.51.100.7"), &[]);
        assert!(untrusted.ip().is_unspecified());
        // A trusted proxy: the right-most address that is not a proxy.
        let trusted = client_address(local, Some("203.0.113.9, 198.51.100.7"), &[proxy]);
        assert_eq!(trusted.ip(), "198.51.100.7".parse::<IpAddr>().unwrap());
        // A trusted proxy forwarding for loopback: loopback.
        assert!(
            client_address(local, Some("127.0.0.1"), &[proxy])
                .ip()
                .is_unspecified()
        );
    }
}
