//! The management API over real HTTP: who may call it, and each call.

use integration_tests::{TestServer, Via, frame, http_request};
use serde_json::Value;
use stomp_codec::Command;

const TOKEN: &str = "a-management-token-of-at-least-32-bytes";

async fn with_api() -> (TestServer, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("dir");
    (with_api_in(&dir, None).await, dir)
}

/// A broker with the API on, its token file in `dir`, journaling to
/// `data` when given (so a test can start another on the same data).
async fn with_api_in(dir: &tempfile::TempDir, data: Option<&std::path::Path>) -> TestServer {
    let token = dir.path().join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("write");
    TestServer::start(|c| {
        if let Some(data) = data {
            c.data_dir = data.to_path_buf();
        }
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
    .await
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
    // A login the API does not know, and a known one with a wrong password.
    for (who, credentials) in [
        ("nobody:ops-password", "Basic bm9ib2R5Om9wcy1wYXNzd29yZA=="),
        ("ops:wrong", "Basic b3BzOndyb25n"),
        ("malformed", "Basic !!!"),
    ] {
        let (status, body) = http_request(
            addr,
            "GET",
            "/api/overview",
            &[("Authorization", credentials)],
            "",
        )
        .await;
        assert_eq!(status, 401, "{who}: {body}");
        let json: Value = serde_json::from_str(&body).expect("a JSON error");
        assert!(json["error"].is_string(), "{who}: {body}");
        assert!(!body.contains("ops-password"), "{body}");
    }
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
    // Its own counters: 3 SENDs (with receipts) and the CONNECT in; CONNECTED and 3 RECEIPTs out.
    assert_eq!(conn["messages_in"], 3, "{conn}");
    assert_eq!(conn["frames_in"], 4, "{conn}");
    assert_eq!(conn["frames_out"], 4, "{conn}");
    assert_eq!(conn["subscriptions"], 0, "{conn}");
    assert!(
        conn["send_rate"].is_number() && conn["deliver_rate"].is_number(),
        "{conn}"
    );
    assert_eq!(list["rate_interval_secs"], 5);

    let (_, dests) = call(&server, "GET", "/api/destinations", "").await;
    let jobs = dests["queues"]
        .as_array()
        .expect("queues")
        .iter()
        .find(|q| q["name"] == "/queue/jobs")
        .expect("jobs listed");
    assert_eq!(jobs["messages"], 3);
    assert_eq!(jobs["published"], 3);
    assert!(jobs["publish_rate"].is_number(), "{jobs}");
    assert_eq!(jobs["policy"], "*", "the default policy: {jobs}");

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
    let (_, work) = call(&server, "GET", "/api/queues/work", "").await;
    assert_eq!(work["policy"]["pattern"], "/queue/work", "{work}");
    assert_eq!(work["policy"]["max_deliveries"], 1, "{work}");
    assert_eq!(work["policy"]["dead_letter"], "/queue/work.dlq", "{work}");
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

#[tokio::test]
async fn exchanges_and_bindings_are_declared_and_deleted_and_outlive_a_restart() {
    let dir = tempfile::tempdir().expect("dir");
    let data = tempfile::tempdir().expect("data");
    let server = with_api_in(&dir, Some(data.path())).await;
    let (status, body) = call(
        &server,
        "PUT",
        "/api/exchanges/orders",
        r#"{"type": "topic"}"#,
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(
        &server,
        "PUT",
        "/api/exchanges/orders",
        r#"{"type": "topic"}"#,
    )
    .await;
    assert_eq!(
        (status, &body["created"]),
        (200, &Value::from(false)),
        "{body}"
    );
    let (status, body) = call(
        &server,
        "PUT",
        "/api/exchanges/orders",
        r#"{"type": "fanout"}"#,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("text")
            .contains("exists with type topic"),
        "{body}"
    );
    let (status, body) = call(
        &server,
        "PUT",
        "/api/exchanges/orders",
        r#"{"type": "round-robin"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().expect("text").contains("expected"),
        "{body}"
    );
    let (status, body) = call(
        &server,
        "PUT",
        "/api/exchanges/amq.topic",
        r#"{"type": "topic"}"#,
    )
    .await;
    assert!(status == 409 || status == 400, "{status} {body}");

    let bind_eu = r#"{"queue": "/queue/eu", "key": "eu.*"}"#;
    let (status, body) = call(&server, "POST", "/api/exchanges/orders/bindings", bind_eu).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = call(&server, "POST", "/api/exchanges/nope/bindings", bind_eu).await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = call(
        &server,
        "POST",
        "/api/exchanges/orders/bindings",
        r#"{"queue": "/topic/x", "key": "a"}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    // Exchange to exchange, and the loop that would close the circle.
    call(
        &server,
        "PUT",
        "/api/exchanges/audit",
        r#"{"type": "fanout"}"#,
    )
    .await;
    let (status, _) = call(
        &server,
        "POST",
        "/api/exchanges/orders/bindings",
        r##"{"exchange": "audit", "key": "#"}"##,
    )
    .await;
    assert_eq!(status, 201);
    let (status, body) = call(
        &server,
        "POST",
        "/api/exchanges/audit/bindings",
        r#"{"exchange": "orders"}"#,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().expect("text").contains("loop"),
        "{body}"
    );

    let mut c = server.client(Via::Tcp).await;
    c.send_confirmed(
        frame(
            Command::Send,
            &[
                ("destination", "/exchange/orders/eu.paid"),
                ("persistent", "true"),
            ],
        )
        .body("order 1"),
        "routed",
    )
    .await;
    let (_, eu) = call(&server, "GET", "/api/queues/eu", "").await;
    assert_eq!(eu["messages"], 1, "{eu}");
    drop(c);
    server.shutdown().await;

    // The same data directory: the exchanges, their bindings and the message are back.
    let server = with_api_in(&dir, Some(data.path())).await;
    let (status, orders) = call(&server, "GET", "/api/exchanges/orders", "").await;
    assert_eq!(status, 200, "{orders}");
    assert_eq!(orders["type"], "topic");
    assert_eq!(orders["configured"], false);
    assert_eq!(
        orders["bindings"].as_array().expect("list").len(),
        2,
        "{orders}"
    );
    let mut c = server.client(Via::Tcp).await;
    c.send_confirmed(
        frame(
            Command::Send,
            &[("destination", "/exchange/orders/eu.refunded")],
        )
        .body("order 2"),
        "routed again",
    )
    .await;
    let (_, eu) = call(&server, "GET", "/api/queues/eu", "").await;
    assert_eq!(eu["messages"], 2, "{eu}");

    // Unbinding what is not bound, then what is; deleting what is needed.
    let (status, _) = call(
        &server,
        "DELETE",
        "/api/exchanges/orders/bindings",
        r#"{"queue": "/queue/eu", "key": "other"}"#,
    )
    .await;
    assert_eq!(status, 404);
    let (status, body) = call(&server, "DELETE", "/api/exchanges/orders/bindings", bind_eu).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = call(&server, "DELETE", "/api/exchanges/audit", "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["bindings_removed"], 1,
        "orders' binding to audit went too: {body}"
    );
    let (status, body) = call(&server, "DELETE", "/api/exchanges/orders", "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&server, "DELETE", "/api/exchanges/orders", "").await;
    assert_eq!(status, 404);
    c.send(
        frame(
            Command::Send,
            &[
                ("destination", "/exchange/orders/eu.x"),
                ("receipt", "gone"),
            ],
        )
        .body("x"),
    )
    .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("no exchange"),
        "{e:?}"
    );

    // A queue is deleted only when nobody uses it, with what waits in it.
    let mut consumer = server.client(Via::Tcp).await;
    consumer
        .subscribe("q", "/queue/eu", "client-individual", &[])
        .await;
    let (status, body) = call(&server, "DELETE", "/api/queues/eu", "").await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"].as_str().expect("text").contains("1 consumer"),
        "{body}"
    );
    drop(consumer);
    // The consumer's unacknowledged messages go back when its connection ends.
    poll(&server, "/api/queues/eu", |q| {
        q["consumers"] == 0 && q["unacked"] == 0
    })
    .await;
    let (status, deleted) = call(&server, "DELETE", "/api/queues/eu", "").await;
    assert_eq!(status, 200, "{deleted}");
    assert_eq!(deleted["messages"], 2, "{deleted}");
    let (status, _) = call(&server, "GET", "/api/queues/eu", "").await;
    assert_eq!(status, 404);
    let (status, _) = call(&server, "DELETE", "/api/queues/eu", "").await;
    assert_eq!(status, 404);
    drop(c);
    server.shutdown().await;

    // Its durable message does not come back.
    let server = with_api_in(&dir, Some(data.path())).await;
    let (status, body) = call(&server, "GET", "/api/queues/eu", "").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = call(&server, "GET", "/api/exchanges/orders", "").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}

/// Calls GET `path` until `ready` holds for its answer, at most WAIT.
async fn poll(server: &TestServer, path: &str, ready: impl Fn(&Value) -> bool) {
    let deadline = tokio::time::Instant::now() + integration_tests::WAIT;
    loop {
        let (_, answer) = call(server, "GET", path, "").await;
        if ready(&answer) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} never got there: {answer}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_topics_history_is_purged_and_an_unused_topic_deleted() {
    let (server, _dir) = with_api().await;
    let mut c = server.client(Via::Tcp).await;
    for i in 0..3 {
        c.send_confirmed(
            frame(Command::Send, &[("destination", "/topic/chat.noisy")]).body(format!("spam {i}")),
            &format!("s{i}"),
        )
        .await;
    }
    let (status, body) = call(&server, "POST", "/api/topics/chat.noisy/purge", "").await;
    assert_eq!((status, &body["purged"]), (200, &Value::from(3)), "{body}");
    let (status, _) = call(&server, "POST", "/api/topics/chat.nothing/purge", "").await;
    assert_eq!(status, 404);
    // A newcomer asking for history gets none of the purged lines.
    let mut reader = server.client(Via::Ws).await;
    reader
        .subscribe("h", "/topic/chat.noisy", "auto", &[("x-history", "10")])
        .await;
    let marker = reader.recv().await;
    assert_eq!(
        marker.headers.get("x-recovery"),
        Some("complete"),
        "{marker:?}"
    );
    // In use: refused; unused: deleted.
    let (status, body) = call(&server, "DELETE", "/api/topics/chat.noisy", "").await;
    assert_eq!(status, 409, "{body}");
    reader
        .send_confirmed(frame(Command::Unsubscribe, &[("id", "h")]), "gone")
        .await;
    let (status, body) = call(&server, "DELETE", "/api/topics/chat.noisy", "").await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = call(&server, "DELETE", "/api/topics/chat.noisy", "").await;
    assert_eq!(status, 404);
    server.shutdown().await;
}
