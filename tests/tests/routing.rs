//! Routing over real sockets: wildcard topic subscriptions.

use std::time::Duration;

use integration_tests::{TestServer, Via, body, frame};
use stomp_codec::Command;

#[tokio::test]
async fn a_wildcard_subscriber_gets_every_matching_topic_in_order() {
    let server = TestServer::default().await;
    let mut rooms = server.client(Via::Ws).await;
    rooms.subscribe("all", "/topic/shop.#", "auto", &[]).await;
    let mut one = server.client(Via::Tcp).await;
    one.subscribe("eu", "/topic/shop.*.eu", "auto", &[]).await;
    let mut p = server.client(Via::Tcp).await;
    for i in 0..20 {
        let dest = if i % 2 == 0 {
            "/topic/shop.orders.eu"
        } else {
            "/topic/shop.orders.us"
        };
        p.send(frame(Command::Send, &[("destination", dest)]).body(format!("{i}")))
            .await;
    }
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/shop")]).body("root"),
        "r",
    )
    .await;
    let all = rooms.messages(21).await;
    let bodies: Vec<String> = all.iter().map(body).collect();
    let expected: Vec<String> = (0..20)
        .map(|i| i.to_string())
        .chain(["root".into()])
        .collect();
    assert_eq!(bodies, expected, "in order, and shop.# matches shop");
    assert_eq!(
        all[1].headers.get("destination"),
        Some("/topic/shop.orders.us"),
        "a MESSAGE names the topic it was published to"
    );
    let eu: Vec<String> = one.messages(10).await.iter().map(body).collect();
    assert_eq!(eu, ["0", "2", "4", "6", "8", "10", "12", "14", "16", "18"]);
    one.expect_nothing(Duration::from_millis(200)).await;
    // Gone with UNSUBSCRIBE.
    rooms
        .send_confirmed(frame(Command::Unsubscribe, &[("id", "all")]), "u")
        .await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/shop.x")]).body("late"),
        "r2",
    )
    .await;
    rooms.expect_nothing(Duration::from_millis(200)).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_send_to_a_pattern_or_a_bad_pattern_is_an_error() {
    let server = TestServer::default().await;
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(Command::Send, &[("destination", "/topic/a.*")]).body("x"))
        .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("wildcard pattern")
    );
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(
        Command::Subscribe,
        &[("id", "s"), ("destination", "/topic/a..b.#")],
    ))
    .await;
    let e = c.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("empty segment")
    );
    server.shutdown().await;
}
