//! The server side of the WebSocket opening handshake (RFC 6455 section
//! 4.2) on an HTTP/1.1 request.
//!
//! Done here rather than by axum's `WebSocketUpgrade` so the upgraded
//! socket can be wrapped (see [`ReadAhead`](super::read_ahead::ReadAhead))
//! before tungstenite takes it.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper::upgrade::{OnUpgrade, Upgraded};
use thiserror::Error;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// Why a request to the WebSocket endpoint is not a usable handshake.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not an upgrade to WebSocket at all (a browser tab opened on `/ws`, say).
    #[error("this is a WebSocket endpoint: connect with a WebSocket client (STOMP over ws://…/ws)")]
    NotWebSocket,
    /// A WebSocket version other than 13.
    #[error("unsupported WebSocket version {0:?}: only 13 is spoken")]
    Version(String),
    /// No or an invalid `Sec-WebSocket-Key`.
    #[error("missing or invalid Sec-WebSocket-Key header")]
    Key,
    /// The HTTP connection cannot be taken over (HTTP/2, for one).
    #[error("this HTTP connection cannot be upgraded to a WebSocket")]
    NotUpgradable,
}

impl IntoResponse for HandshakeError {
    fn into_response(self) -> Response {
        let mut response = (self.status(), format!("{self}\n")).into_response();
        if matches!(self, HandshakeError::Version(_)) {
            response.headers_mut().insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        response
    }
}

impl HandshakeError {
    fn status(&self) -> StatusCode {
        match self {
            HandshakeError::NotWebSocket | HandshakeError::Version(_) => {
                StatusCode::UPGRADE_REQUIRED
            }
            HandshakeError::Key | HandshakeError::NotUpgradable => StatusCode::BAD_REQUEST,
        }
    }
}

/// An accepted handshake: the response to send, and the socket once sent.
#[derive(Debug)]
pub struct Handshake {
    accept: String,
    protocol: Option<&'static str>,
    on_upgrade: OnUpgrade,
}

impl Handshake {
    /// Checks `request` and picks the first of `protocols` (most preferred
    /// first) that the client offers, if any.
    pub fn accept(
        request: &mut Request<Body>,
        protocols: &[&'static str],
    ) -> Result<Handshake, HandshakeError> {
        let headers = request.headers();
        if !has_token(headers, header::UPGRADE, "websocket")
            || !has_token(headers, header::CONNECTION, "upgrade")
        {
            return Err(HandshakeError::NotWebSocket);
        }
        let version = headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default();
        if version.trim() != "13" {
            return Err(HandshakeError::Version(version));
        }
        // The key is 16 random bytes in base64: 24 characters.
        let key = headers
            .get(header::SEC_WEBSOCKET_KEY)
            .filter(|k| k.len() == 24)
            .ok_or(HandshakeError::Key)?;
        let accept = derive_accept_key(key.as_bytes());
        let protocol = protocols
            .iter()
            .find(|p| has_token(headers, header::SEC_WEBSOCKET_PROTOCOL, p))
            .copied();
        let on_upgrade = request
            .extensions_mut()
            .remove::<OnUpgrade>()
            .ok_or(HandshakeError::NotUpgradable)?;
        Ok(Handshake {
            accept,
            protocol,
            on_upgrade,
        })
    }

    /// The `101 Switching Protocols` response; `upgrade` then waits for
    /// it to be sent and returns the socket. `None` if the upgrade failed
    /// (the client went away first).
    pub fn respond(self) -> (Response, impl Future<Output = Option<Upgraded>>) {
        let mut response = Response::new(Body::empty());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Ok(accept) = HeaderValue::from_str(&self.accept) {
            headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
        }
        if let Some(protocol) = self.protocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(protocol),
            );
        }
        let on_upgrade = self.on_upgrade;
        (response, async move {
            match on_upgrade.await {
                Ok(upgraded) => Some(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "WebSocket upgrade failed");
                    None
                }
            }
        })
    }
}

/// Whether any `name` header lists `token` (comma-separated, any case).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|value| {
        value
            .to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> Request<Body> {
        let mut builder = Request::get("/ws");
        for (n, v) in headers {
            builder = builder.header(*n, *v);
        }
        builder.body(Body::empty()).expect("valid request")
    }

    const GOOD: [(&str, &str); 4] = [
        ("upgrade", "websocket"),
        ("connection", "keep-alive, Upgrade"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[test]
    fn checks_come_before_the_upgrade() {
        // The request has no OnUpgrade (it is not from a connection), so a
        // request that passes every check ends at NotUpgradable.
        assert_eq!(
            Handshake::accept(&mut request(&GOOD), &["v12.stomp"]).err(),
            Some(HandshakeError::NotUpgradable)
        );
        assert_eq!(
            Handshake::accept(&mut request(&GOOD[1..]), &[]).err(),
            Some(HandshakeError::NotWebSocket)
        );
        let mut old = GOOD;
        old[2] = ("sec-websocket-version", "8");
        assert_eq!(
            Handshake::accept(&mut request(&old), &[]).err(),
            Some(HandshakeError::Version("8".into()))
        );
        assert_eq!(
            Handshake::accept(&mut request(&GOOD[..3]), &[]).err(),
            Some(HandshakeError::Key)
        );
    }

    #[test]
    fn tokens_are_matched_whole_and_in_any_case() {
        let headers = request(&[("sec-websocket-protocol", "v10.stomp, V11.STOMP")])
            .headers()
            .clone();
        assert!(has_token(
            &headers,
            header::SEC_WEBSOCKET_PROTOCOL,
            "v11.stomp"
        ));
        assert!(!has_token(
            &headers,
            header::SEC_WEBSOCKET_PROTOCOL,
            "v12.stomp"
        ));
        assert!(!has_token(&headers, header::SEC_WEBSOCKET_PROTOCOL, "v10"));
    }

    #[test]
    fn the_accept_key_is_the_rfc_example() {
        // RFC 6455 section 1.3.
        assert_eq!(
            derive_accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }
}
