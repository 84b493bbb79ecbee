//! Who may call the API: a bearer token compared in constant time, or
//! Basic credentials checked with argon2 off the async workers; failures
//! are slowed per address like STOMP logins.

use std::net::SocketAddr;

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{ApiState, error};
use crate::security::passwords;

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

pub(super) async fn authorize(
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
