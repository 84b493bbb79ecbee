//! The management API over real HTTP: who may call it, and each call.

use integration_tests::{TestServer, Via, frame, http_request};
use serde_json::Value;
use stomp_codec::Command;

const TOKEN: &str = "a-management-token-of-at-least-32-bytes";

async fn with_api() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write");
    let server = TestServer::start(|c| {
        c.management_listen = "127.0.0.1:0".parse().expect("addr");
        c.management_token_file = Some(token);
        c.users.insert(
            "ops".into(),
            stompbox::security::passwords::hash_for_tests("ops-password"),
        );
        c.management_users = vec!["ops".into()];
        c.queues = toml::from_str::<toml::Table>(
            r#"queues = [{ pattern = "/queue/work", max_deliveries = 1, dead_letter = "/queue/work.dlq" }]"#,
        )
        .expect("toml")["queues"]
            .clone()
            .try_into()
            .expect("queue policies");
    })
    .await;
    (server, dir)
}

async fn call(server: &TestServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    let auth = format!("Bearer {TOKEN}");
    let (status, text) = http_request(
        server.server().management_addr().expect("the API is on"),
        method,
        path,
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
        ],
        body,
    )
    .await;
    let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, json)
}

#[tokio::test]
async fn calls_need_a_token_or_an_admin_login() {
    let (server, _dir) = with_api().await;
    let addr = server.server().management_addr().expect("on");
    let (status, body) = http_request(addr, "GET", "/api/overview", &[], "").await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("\"error\""), "{body}");
    let (status, _) = http_request(
        addr,
        "GET",
        "/api/overview",
        &[("Authorization", "Bearer wrong")],
        "",
    )
    .await;
    assert_eq!(status, 401);
    // ops:ops-password in Basic.
    let (status, body) = http_request(
        addr,
        "GET",
        "/api/overview",
        &[("Authorization", "Basic b3BzOm9wcy1wYXNzd29yZA==")],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&server, "GET", "/api/overview", "").await;
    assert_eq!(status, 200);
    let (status, body) = call(&server, "GET", "/api/nothing-here", "").await;
    assert_eq!(status, 404, "{body}");
    server.shutdown().await;
}

#[tokio::test]
async fn every_call_over_http() {
    let (server, _dir) = with_api().await;
    let mut c = server.client(Via::Tcp).await;
    for i in 0..3 {
        c.send_confirmed(
            frame(Command::Send, &[("destination", "/queue/jobs")]).body(format!("job {i}")),
            &format!("r{i}"),
        )
        .await;
    }
    let (status, overview) = call(&server, "GET", "/api/overview", "").await;
    assert_eq!(status, 200);
    assert_eq!(overview["connections"], 1);
    assert_eq!(overview["messages_waiting"], 3);

    let (_, list) = call(&server, "GET", "/api/connections", "").await;
    let conn = &list["connections"][0];
    assert_eq!(conn["transport"], "tcp");
    assert_eq!(conn["login"], "(anonymous)");
    let id = conn["id"].as_u64().expect("an id");

    let (_, dests) = call(&server, "GET", "/api/destinations", "").await;
    let jobs = dests["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "/queue/jobs")
        .expect("jobs listed");
    assert_eq!(jobs["messages"], 3);
    assert_eq!(jobs["published"], 3);

    let (status, peeked) = call(&server, "GET", "/api/queues/jobs/messages?count=2", "").await;
    assert_eq!(status, 200);
    assert_eq!(peeked["messages"].as_array().expect("list").len(), 2);
    assert_eq!(peeked["messages"][0]["body"], "job 0");
    let (_, q) = call(&server, "GET", "/api/queues/jobs", "").await;
    assert_eq!(q["messages"], 3, "peeking leaves them");

    let (status, purged) = call(&server, "POST", "/api/queues/jobs/purge", "").await;
    assert_eq!(status, 200);
    assert_eq!(purged["purged"], 3);
    let (status, missing) = call(&server, "POST", "/api/queues/nope/purge", "").await;
    assert_eq!(status, 404);
    assert!(
        missing["error"]
            .as_str()
            .expect("text")
            .contains("/queue/nope")
    );

    // Publish, then a dead letter moved back to where it was first sent.
    let (status, sent) = call(
        &server,
        "POST",
        "/api/publish",
        r#"{"destination": "/queue/work", "body": "w", "headers": {"x-kind": "test"}}"#,
    )
    .await;
    assert_eq!(status, 200, "{sent}");
    c.subscribe("w", "/queue/work", "client-individual", &[])
        .await;
    let m = c.messages(1).await.remove(0);
    assert_eq!(m.headers.get("x-sender"), Some("(management API)"));
    c.send_confirmed(
        frame(Command::Nack, &[("id", m.headers.get("ack").expect("ack"))]),
        "nacked",
    )
    .await;
    c.send_confirmed(frame(Command::Unsubscribe, &[("id", "w")]), "unsub")
        .await;
    let (_, dlq) = call(&server, "GET", "/api/queues/work.dlq", "").await;
    assert_eq!(dlq["messages"], 1, "{dlq}");
    let (status, moved) = call(
        &server,
        "POST",
        "/api/queues/work.dlq/move-back",
        r#"{"count": 10}"#,
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["moved"], 1, "{moved}");
    let (_, back) = call(&server, "GET", "/api/queues/work", "").await;
    assert_eq!(back["messages"], 1, "{back}");
    let (_, dlq) = call(&server, "GET", "/api/queues/work.dlq", "").await;
    assert_eq!(dlq["messages"], 0);

    let (status, bad) = call(
        &server,
        "POST",
        "/api/publish",
        r#"{"body": "no destination"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        bad["error"].as_str().expect("text").contains("destination"),
        "{bad}"
    );

    // Closing a connection: it is told why.
    let (status, _) = call(&server, "DELETE", &format!("/api/connections/{id}"), "").await;
    assert_eq!(status, 200);
    let e = c.expect_error_and_close().await;
    assert_eq!(e.headers.get("message"), Some("closed by an administrator"));
    let (status, _) = call(&server, "DELETE", &format!("/api/connections/{id}"), "").await;
    assert_eq!(status, 404);
    let (status, _) = call(&server, "DELETE", "/api/connections/abc", "").await;
    assert_eq!(status, 400);
    server.shutdown().await;
}
