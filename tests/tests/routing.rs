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
    refused_with(
        &server,
        frame(Command::Send, &[("destination", "/topic/a.*")]).body("x"),
        "wildcard pattern",
    )
    .await;
    refused_with(
        &server,
        frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", "/topic/a..b.#")],
        ),
        "empty segment",
    )
    .await;
    server.shutdown().await;
}

/// A frame from a fresh connection gets an ERROR whose message says `says`.
async fn refused_with(server: &TestServer, f: stomp_codec::Frame, says: &str) {
    let mut c = server.client(Via::Tcp).await;
    c.send(f).await;
    let e = c.expect_error_and_close().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(message.contains(says), "{message}");
}

fn exchanges() -> Vec<stompbox::broker::ExchangeConfig> {
    let text = r##"
[[exchanges]]
name = "payments"
type = "direct"
alternate_exchange = "lost"
bindings = [{ queue = "/queue/pay", key = "pay" }, { queue = "/queue/refund", key = "refund" }]

[[exchanges]]
name = "orders"
type = "topic"
bindings = [
  { queue = "/queue/orders-eu", key = "orders.eu.*" },
  { exchange = "audit", key = "#" },
]

[[exchanges]]
name = "audit"
type = "fanout"
bindings = [{ queue = "/queue/audit-a" }, { queue = "/queue/audit-b" }]

[[exchanges]]
name = "documents"
type = "headers"
bindings = [{ queue = "/queue/pdf-reports", arguments = { x-match = "all", format = "pdf", type = "report" } }]

[[exchanges]]
name = "lost"
type = "fanout"
bindings = [{ queue = "/queue/lost" }]
"##;
    #[derive(serde::Deserialize)]
    struct File {
        exchanges: Vec<stompbox::broker::ExchangeConfig>,
    }
    toml::from_str::<File>(text).expect("valid").exchanges
}

async fn with_exchanges() -> TestServer {
    TestServer::start(|c| c.exchanges = exchanges()).await
}

async fn drain(server: &TestServer, queue: &str, n: usize) -> Vec<stomp_codec::Frame> {
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("d", queue, "auto", &[]).await;
    let got = c.messages(n).await;
    c.expect_nothing(Duration::from_millis(150)).await;
    got
}

#[tokio::test]
async fn each_exchange_type_routes_by_its_rule() {
    let server = with_exchanges().await;
    let mut p = server.client(Via::Tcp).await;
    let sends = [
        ("/exchange/payments/pay", "p1", vec![]),
        ("/exchange/payments/refund", "r1", vec![]),
        (
            "/exchange/payments/other",
            "unbound key: to the alternate",
            vec![],
        ),
        ("/exchange/orders/orders.eu.paid", "o1", vec![]),
        ("/exchange/orders/orders.us.paid", "o2", vec![]),
        (
            "/exchange/documents/any",
            "report",
            vec![("format", "pdf"), ("type", "report")],
        ),
        (
            "/exchange/documents/any",
            "just a pdf",
            vec![("format", "pdf")],
        ),
    ];
    for (i, (dest, text, headers)) in sends.iter().enumerate() {
        let mut f = frame(Command::Send, &[("destination", dest)]).body(text.to_string());
        for (n, v) in headers {
            f = f.header(*n, *v);
        }
        p.send_confirmed(f, &format!("r{i}")).await;
    }
    let bodies = |fs: Vec<stomp_codec::Frame>| fs.iter().map(body).collect::<Vec<_>>();
    assert_eq!(bodies(drain(&server, "/queue/pay", 1).await), ["p1"]);
    assert_eq!(bodies(drain(&server, "/queue/refund", 1).await), ["r1"]);
    assert_eq!(
        bodies(drain(&server, "/queue/lost", 1).await),
        ["unbound key: to the alternate"]
    );
    let eu = drain(&server, "/queue/orders-eu", 1).await;
    assert_eq!(body(&eu[0]), "o1");
    assert_eq!(eu[0].headers.get("x-exchange"), Some("orders"));
    assert_eq!(eu[0].headers.get("x-routing-key"), Some("orders.eu.paid"));
    // orders → audit (exchange to exchange) → both audit queues.
    for q in ["/queue/audit-a", "/queue/audit-b"] {
        assert_eq!(bodies(drain(&server, q, 2).await), ["o1", "o2"]);
    }
    assert_eq!(
        bodies(drain(&server, "/queue/pdf-reports", 1).await),
        ["report"]
    );
    server.shutdown().await;
}

#[tokio::test]
async fn subscribing_to_an_exchange_binds_a_private_queue_for_the_subscription() {
    let server = with_exchanges().await;
    let mut eu = server.client(Via::Ws).await;
    eu.subscribe(
        "s",
        "/exchange/orders/orders.eu.#",
        "client-individual",
        &[],
    )
    .await;
    // ★ A headers binding from SUBSCRIBE headers.
    let mut pdf = server.client(Via::Tcp).await;
    pdf.subscribe(
        "h",
        "/exchange/documents",
        "auto",
        &[
            ("x-match", "any"),
            ("x-bind-format", "pdf"),
            ("x-bind-type", "invoice"),
        ],
    )
    .await;
    let mut p = server.client(Via::Tcp).await;
    for (dest, text, header) in [
        ("/exchange/orders/orders.eu", "eu root", None),
        ("/exchange/orders/orders.us.x", "us", None),
        ("/exchange/orders/orders.eu.a.b", "eu deep", None),
        (
            "/exchange/documents/k",
            "an invoice",
            Some(("type", "invoice")),
        ),
        ("/exchange/documents/k", "a zip", Some(("format", "zip"))),
    ] {
        let mut f = frame(Command::Send, &[("destination", dest)]).body(text);
        if let Some((n, v)) = header {
            f = f.header(n, v);
        }
        p.send_confirmed(f, text).await;
    }
    let got: Vec<String> = eu.messages(2).await.iter().map(body).collect();
    assert_eq!(got, ["eu root", "eu deep"]);
    assert_eq!(body(&pdf.messages(1).await[0]), "an invoice");
    pdf.expect_nothing(Duration::from_millis(150)).await;
    // Its binding and queue go with the subscription.
    eu.send_confirmed(frame(Command::Unsubscribe, &[("id", "s")]), "u")
        .await;
    let before = integration_tests::http_get(server.http_addr(), "/health").await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/exchange/documents/k")]).body("nobody"),
        "n",
    )
    .await;
    p.send_confirmed(
        frame(
            Command::Send,
            &[("destination", "/exchange/orders/orders.eu.x")],
        )
        .body("only audit now"),
        "o",
    )
    .await;
    eu.expect_nothing(Duration::from_millis(150)).await;
    // "a zip" found no binding either.
    assert!(before.contains("\"unroutable\":1"), "{before}");
    let after = integration_tests::http_get(server.http_addr(), "/health").await;
    assert!(after.contains("\"unroutable\":2"), "{after}");
    server.shutdown().await;
}

#[tokio::test]
async fn mandatory_unroutable_sends_are_refused_on_the_receipt() {
    let server = with_exchanges().await;
    let mut p = server.client(Via::Tcp).await;
    p.send(
        frame(
            Command::Send,
            &[
                ("destination", "/exchange/documents/x"),
                ("mandatory", "true"),
                ("receipt", "m"),
            ],
        )
        .body("no binding takes this"),
    )
    .await;
    let r = p.recv().await;
    assert_eq!(r.command, Command::Receipt);
    assert_eq!(r.headers.get("x-error"), Some("unroutable"));
    // The connection goes on; an unknown exchange is an ERROR.
    p.send(frame(Command::Send, &[("destination", "/exchange/nope/k")]).body("x"))
        .await;
    let e = p.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("no exchange")
    );
    refused_with(
        &server,
        frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", "/exchange/orders/a..b")],
        ),
        "empty segment",
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn rabbitmq_aliases_reach_the_same_destinations() {
    let server = with_exchanges().await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("q", "/amq/queue/jobs", "auto", &[]).await;
    c.subscribe("t", "/exchange/amq.topic/news.*", "auto", &[])
        .await;
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/queue/jobs")]).body("job"),
        "1",
    )
    .await;
    p.send_confirmed(
        frame(
            Command::Send,
            &[("destination", "/exchange/amq.topic/news.eu")],
        )
        .body("news"),
        "2",
    )
    .await;
    let mut got: Vec<String> = c.messages(2).await.iter().map(body).collect();
    got.sort();
    assert_eq!(got, ["job", "news"]);
    server.shutdown().await;
}

#[tokio::test]
async fn request_reply_through_a_temp_queue() {
    let server = TestServer::default().await;
    let mut service = server.client(Via::Ws).await;
    service
        .subscribe("rpc", "/queue/rpc.add", "auto", &[])
        .await;
    let mut asker = server.client(Via::Tcp).await;
    asker
        .send_confirmed(
            frame(
                Command::Send,
                &[
                    ("destination", "/queue/rpc.add"),
                    ("reply-to", "/temp-queue/answers"),
                ],
            )
            .body("2+3"),
            "q",
        )
        .await;
    let request = service.messages(1).await.remove(0);
    let reply_to = request
        .headers
        .get("reply-to")
        .expect("reply-to")
        .to_string();
    assert!(
        reply_to.starts_with("/queue/stompbox.temp."),
        "rewritten to a broker-wide name: {reply_to}"
    );
    service
        .send_confirmed(
            frame(Command::Send, &[("destination", &reply_to)]).body("5"),
            "a",
        )
        .await;
    let answer = asker.messages(1).await.remove(0);
    assert_eq!(body(&answer), "5");
    assert_eq!(
        answer.headers.get("subscription"),
        Some("/temp-queue/answers")
    );
    // Nobody else may read it.
    let mut snoop = server.client(Via::Tcp).await;
    snoop
        .send(frame(
            Command::Subscribe,
            &[("id", "s"), ("destination", &reply_to)],
        ))
        .await;
    let e = snoop.expect_error_and_close().await;
    assert!(
        e.headers
            .get("message")
            .unwrap_or_default()
            .contains("private to the broker")
    );
    // Gone with its connection: a late reply is dropped and counted, and
    // refused on the receipt when it says mandatory.
    asker
        .send_confirmed(frame(Command::Disconnect, &[]), "bye")
        .await;
    service
        .send_confirmed(
            frame(Command::Send, &[("destination", &reply_to)]).body("late"),
            "l",
        )
        .await;
    service
        .send(
            frame(
                Command::Send,
                &[
                    ("destination", &reply_to),
                    ("mandatory", "true"),
                    ("receipt", "m"),
                ],
            )
            .body("late"),
        )
        .await;
    let r = service.recv().await;
    assert_eq!(r.headers.get("x-error"), Some("unroutable"), "{r:?}");
    let health = integration_tests::http_get(server.http_addr(), "/health").await;
    assert!(health.contains("\"unroutable\":2"), "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn selectors_pick_messages_and_do_not_block_a_queue() {
    let server = TestServer::default().await;
    let mut eu = server.client(Via::Tcp).await;
    eu.subscribe(
        "s",
        "/queue/sel.orders",
        "client-individual",
        &[("selector", "region = 'eu' AND amount > 100")],
    )
    .await;
    let mut p = server.client(Via::Tcp).await;
    // The head of the queue is for nobody yet: it must not hold back the rest.
    for (i, (region, amount)) in [("us", "500"), ("eu", "50"), ("eu", "150"), ("eu", "900")]
        .iter()
        .enumerate()
    {
        p.send_confirmed(
            frame(
                Command::Send,
                &[
                    ("destination", "/queue/sel.orders"),
                    ("region", region),
                    ("amount", amount),
                ],
            )
            .body(format!("{region}-{amount}")),
            &format!("r{i}"),
        )
        .await;
    }
    let got: Vec<String> = eu.messages(2).await.iter().map(body).collect();
    assert_eq!(got, ["eu-150", "eu-900"]);
    eu.expect_nothing(Duration::from_millis(150)).await;
    // A consumer without a selector takes what is left, in order.
    let mut rest = server.client(Via::Ws).await;
    rest.subscribe("r", "/queue/sel.orders", "auto", &[]).await;
    let left: Vec<String> = rest.messages(2).await.iter().map(body).collect();
    assert_eq!(left, ["us-500", "eu-50"]);

    // Topics and wildcard subscriptions filter the same way.
    let mut watcher = server.client(Via::Tcp).await;
    watcher
        .subscribe(
            "w",
            "/topic/sel.*",
            "auto",
            &[("selector", "level IN ('error', 'fatal')")],
        )
        .await;
    for level in ["info", "error", "debug", "fatal"] {
        p.send(
            frame(
                Command::Send,
                &[("destination", "/topic/sel.app"), ("level", level)],
            )
            .body(level),
        )
        .await;
    }
    let got: Vec<String> = watcher.messages(2).await.iter().map(body).collect();
    assert_eq!(got, ["error", "fatal"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_bad_selector_is_an_error_that_points_at_the_problem() {
    let server = TestServer::default().await;
    let subscribe = |selector: &str| {
        frame(
            Command::Subscribe,
            &[
                ("id", "s"),
                ("destination", "/queue/x"),
                ("selector", selector),
            ],
        )
    };
    refused_with(&server, subscribe("region = 'eu' AND"), "position 17").await;
    let long = format!("a = '{}'", "x".repeat(5000));
    refused_with(&server, subscribe(&long), "4096").await;
    server.shutdown().await;
}
