//! Tokens: a JWT as the CONNECT passcode over TCP and WebSocket, refused
//! when expired, forged or unsigned, ended at `exp` on an open connection
//! unless renewed by a SEND to `/sys/token`, with permissions from a claim.

use std::time::{SystemTime, UNIX_EPOCH};

use integration_tests::{Client, TestServer, Via, WAIT, frame};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use stomp_codec::Command;
use stompbox::session::AnonymousAccess;

const SECRET: &str = "the-test-secret-of-at-least-thirty-two-bytes";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn token(claims: serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .expect("encode")
}

fn for_login(login: &str, lifetime: u64) -> String {
    token(serde_json::json!({"sub": login, "exp": now() + lifetime}))
}

/// A broker taking tokens signed with [`SECRET`], and nobody without credentials.
async fn with_tokens() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).expect("write");
    let server = TestServer::start(|c| {
        c.tokens.secret_file = Some(secret);
        c.anonymous = AnonymousAccess::Never;
    })
    .await;
    (server, dir)
}

async fn connect_with(server: &TestServer, via: Via, passcode: &str) -> Client {
    let mut c = server.raw_client(via).await;
    c.send(frame(
        Command::Connect,
        &[("accept-version", "1.2"), ("passcode", passcode)],
    ))
    .await;
    c
}

async fn refused(server: &TestServer, passcode: &str, says: &str) {
    let mut c = connect_with(server, Via::Tcp, passcode).await;
    let e = c.expect_error_and_close().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains(says), "{message:?} should say {says:?}");
}

#[tokio::test]
async fn a_token_logs_in_as_its_subject_over_tcp_and_websocket() {
    let (server, _dir) = with_tokens().await;
    let mut ws = connect_with(&server, Via::Ws, &for_login("alice", 60)).await;
    assert_eq!(ws.recv().await.command, Command::Connected);
    ws.subscribe("s", "/topic/room", "auto", &[]).await;
    let mut tcp = connect_with(&server, Via::Tcp, &for_login("bob", 60)).await;
    assert_eq!(tcp.recv().await.command, Command::Connected);
    tcp.send_confirmed(
        frame(
            Command::Send,
            &[("destination", "/topic/room"), ("x-sender", "alice")],
        )
        .body("hi"),
        "r",
    )
    .await;
    let m = ws.messages(1).await.remove(0);
    // The token's sub, whatever the SEND claimed.
    assert_eq!(m.headers.get("x-sender"), Some("bob"), "{m:?}");

    // A login header must be the token's sub.
    let mut c = server.raw_client(Via::Tcp).await;
    c.send(frame(
        Command::Connect,
        &[
            ("accept-version", "1.2"),
            ("login", "mallory"),
            ("passcode", &for_login("bob", 60)),
        ],
    ))
    .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers.get("message").unwrap_or_default().contains("sub"),
        "{e:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn expired_forged_unsigned_and_malformed_tokens_get_no_access() {
    let (server, _dir) = with_tokens().await;
    let expired = token(serde_json::json!({"sub": "alice", "exp": now() - 10}));
    refused(&server, &expired, "token expired").await;
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &serde_json::json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_secret(b"somebody-else's-secret-somebody-else's"),
    )
    .expect("encode");
    refused(&server, &forged, "signature").await;
    // {"alg":"none"} with claims and no signature.
    let unsigned =
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbGljZSIsImV4cCI6OTk5OTk5OTk5OX0.";
    refused(&server, unsigned, "malformed token").await;
    let no_exp = token(serde_json::json!({"sub": "alice"}));
    refused(&server, &no_exp, "exp").await;
    // Not a token at all, and no such user: a wrong passcode.
    refused(&server, "eyJ.broken", "access refused").await;
    // The broker goes on.
    let mut c = connect_with(&server, Via::Tcp, &for_login("alice", 60)).await;
    assert_eq!(c.recv().await.command, Command::Connected);
    server.shutdown().await;
}

#[tokio::test]
async fn a_token_that_expires_ends_the_connection_and_a_renewed_one_keeps_it() {
    let (server, _dir) = with_tokens().await;
    let exp = now() + 2;
    let short = token(serde_json::json!({"sub": "alice", "exp": exp}));
    let mut ending = connect_with(&server, Via::Ws, &short).await;
    assert_eq!(ending.recv().await.command, Command::Connected);
    let mut renewed = connect_with(&server, Via::Tcp, &short).await;
    assert_eq!(renewed.recv().await.command, Command::Connected);

    // A token for someone else is refused on the receipt; the connection stays.
    renewed
        .send(
            frame(
                Command::Send,
                &[("destination", "/sys/token"), ("receipt", "other")],
            )
            .body(for_login("bob", 60)),
        )
        .await;
    let r = renewed.recv().await;
    assert_eq!(r.command, Command::Receipt, "{r:?}");
    assert_eq!(r.headers.get("x-error"), Some("token-refused"), "{r:?}");
    // A fresh token for the same login moves exp.
    renewed
        .send(
            frame(
                Command::Send,
                &[("destination", "/sys/token"), ("receipt", "fresh")],
            )
            .body(for_login("alice", 60)),
        )
        .await;
    let r = renewed.recv().await;
    assert_eq!(r.command, Command::Receipt, "{r:?}");
    assert_eq!(r.headers.get("x-error"), None, "{r:?}");

    // At exp the first connection is told and closed.
    let e = tokio::time::timeout(WAIT, ending.expect_error_and_close())
        .await
        .expect("closed at exp");
    assert_eq!(e.headers.get("message"), Some("token expired"), "{e:?}");
    assert!(now() >= exp, "closed before exp");
    // The renewed one is open past the first token's exp.
    renewed.subscribe("s", "/topic/after", "auto", &[]).await;
    renewed.publish("/topic/after", "still here").await;
    assert_eq!(
        integration_tests::body(&renewed.messages(1).await[0]),
        "still here"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_permissions_claim_limits_what_the_connection_may_do() {
    let (server, _dir) = with_tokens().await;
    let reader = token(serde_json::json!({
        "sub": "viewer", "exp": now() + 60,
        "permissions": {"read": ["/topic/public.*"], "write": []}
    }));
    let mut c = connect_with(&server, Via::Tcp, &reader).await;
    assert_eq!(c.recv().await.command, Command::Connected);
    c.subscribe("ok", "/topic/public.news", "auto", &[]).await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "no"),
            ("destination", "/topic/secret"),
            ("receipt", "r"),
        ],
    ))
    .await;
    let r = c.recv().await;
    assert_eq!(r.headers.get("x-error"), Some("access-refused"), "{r:?}");
    c.send(frame(Command::Send, &[("destination", "/topic/public.news")]).body("x"))
        .await;
    let e = c.expect_error_and_close().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("access refused") && message.contains("write"),
        "{message}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_user_destination_reaches_every_tab_of_that_login_and_no_one_else() {
    let (server, _dir) = with_tokens().await;
    let mut tabs = Vec::new();
    for _ in 0..2 {
        let mut tab = connect_with(&server, Via::Ws, &for_login("ana", 60)).await;
        assert_eq!(tab.recv().await.command, Command::Connected);
        tab.subscribe("dm", "/user/inbox", "auto", &[]).await;
        tabs.push(tab);
    }
    let mut other = connect_with(&server, Via::Ws, &for_login("carl", 60)).await;
    assert_eq!(other.recv().await.command, Command::Connected);
    other.subscribe("dm", "/user/inbox", "auto", &[]).await;
    let mut bob = connect_with(&server, Via::Tcp, &for_login("bob", 60)).await;
    assert_eq!(bob.recv().await.command, Command::Connected);
    bob.send_confirmed(
        frame(Command::Send, &[("destination", "/user/ana/inbox")]).body("for ana"),
        "dm",
    )
    .await;
    for tab in &mut tabs {
        let m = tab.messages(1).await.remove(0);
        assert_eq!(integration_tests::body(&m), "for ana");
        assert_eq!(m.headers.get("x-sender"), Some("bob"));
    }
    // carl's inbox is his own: the message for ana never reaches it.
    bob.send_confirmed(
        frame(Command::Send, &[("destination", "/user/carl/inbox")]).body("for carl"),
        "dm2",
    )
    .await;
    assert_eq!(
        integration_tests::body(&other.messages(1).await[0]),
        "for carl"
    );
    server.shutdown().await;
}
