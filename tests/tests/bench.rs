//! `stompbox bench` against the real broker: every scenario, small, over
//! TCP and WebSocket, accounts for every message; failures are clear.

use clap::Parser;
use integration_tests::TestServer;
use stompbox::bench::{BenchArgs, BenchError, Report, run};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

async fn bench(args: &[&str]) -> Result<Report, BenchError> {
    let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
        .expect("valid arguments");
    run(cli.bench).await
}

async fn urls(server: &TestServer) -> [String; 2] {
    [format!("stomp://{}", server.tcp_addr()), server.ws_url()]
}

#[tokio::test]
async fn queue_counts_every_message_once() {
    let server = TestServer::default().await;
    for url in urls(&server).await {
        for ack in ["auto", "client-individual"] {
            let r = bench(&[
                "--json",
                "--url",
                &url,
                "--timeout",
                "30",
                "queue",
                "-n",
                "2000",
                "-p",
                "2",
                "-c",
                "3",
                "--ack",
                ack,
            ])
            .await
            .expect("queue run");
            assert_eq!(r.get("received"), Some(2000.0));
            assert_eq!(r.get("missing"), Some(0.0));
            assert!(r.get("msgs_per_sec").unwrap() > 0.0);
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn fanout_latency_and_chat_complete() {
    let server = TestServer::default().await;
    for url in urls(&server).await {
        let r = bench(&["--json", "--url", &url, "fanout", "-k", "5", "-n", "200"])
            .await
            .expect("fanout");
        assert_eq!(r.get("delivered"), Some(1000.0));
        let r = bench(&["--json", "--url", &url, "latency", "-r", "200", "-t", "1"])
            .await
            .expect("latency");
        assert_eq!(r.get("received"), Some(200.0));
        assert!(r.get("p50_us").unwrap() <= r.get("p99_us").unwrap());
        let r = bench(&[
            "--json", "--url", &url, "chat", "--rooms", "2", "--users", "3", "--rate", "5", "-t",
            "1",
        ])
        .await
        .expect("chat");
        assert_eq!(r.get("delivered"), Some(2.0 * 3.0 * 3.0 * 5.0));
    }
    server.shutdown().await;
}

#[tokio::test]
async fn connections_are_held_and_counted() {
    let server = TestServer::default().await;
    let pid = std::process::id().to_string();
    for url in urls(&server).await {
        // 100 per source address: 127.0.0.1, .2 and .3 all connect.
        let r = bench(&[
            "--json",
            "--url",
            &url,
            "connections",
            "-m",
            "300",
            "--per-source",
            "100",
            "--hold",
            "0",
            "--pid",
            &pid,
        ])
        .await
        .expect("connections");
        assert_eq!(r.get("opened"), Some(300.0), "{url}");
        assert_eq!(r.get("failed"), Some(0.0), "{url}");
        assert_eq!(r.get("source_addresses"), Some(3.0), "{url}");
        assert!(r.get("kib_per_connection").is_some());
    }
    server.shutdown().await;
}

#[tokio::test]
async fn unreachable_broker_is_a_clear_error() {
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let err = bench(&["--url", &format!("stomp://{free}"), "queue", "-n", "10"])
        .await
        .unwrap_err();
    assert!(matches!(err, BenchError::Connect(_)), "{err}");
    let err = bench(&["--url", "http://nope", "queue"]).await.unwrap_err();
    assert!(err.to_string().contains("stomp://host:port"), "{err}");
}

#[tokio::test]
async fn a_broker_that_refuses_is_reported() {
    let server = TestServer::start(|c| {
        c.users.insert(
            "ana".into(),
            stompbox::security::passwords::hash_for_tests("secret"),
        );
        c.anonymous = stompbox::session::AnonymousAccess::Never;
    })
    .await;
    let url = format!("stomp://{}", server.tcp_addr());
    let err = bench(&[
        "--url",
        &url,
        "--login",
        "ana",
        "--passcode",
        "wrong",
        "queue",
        "-n",
        "10",
    ])
    .await
    .unwrap_err();
    assert!(
        matches!(err, BenchError::Broker(ref m) if m.contains("access refused")),
        "{err}"
    );
    let ok = bench(&[
        "--json",
        "--url",
        &url,
        "--login",
        "ana",
        "--passcode",
        "secret",
        "queue",
        "-n",
        "10",
    ])
    .await;
    assert!(ok.is_ok());
    server.shutdown().await;
}
