//! A client cannot be turned against other clients: no frame injection, no
//! silent loss between versions.

use std::net::SocketAddr;

use integration_tests::{Client, TestServer, Via, WAIT, body, frame};
use stomp_codec::Command;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A reader that ends each frame at the first NUL and ignores
/// content-length, as some clients do: what an injected NUL would fool.
struct NaiveReader {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl NaiveReader {
    async fn connect(addr: SocketAddr, connect: &[u8]) -> NaiveReader {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream.write_all(connect).await.expect("write");
        NaiveReader {
            stream,
            buf: Vec::new(),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("write");
    }

    /// The next frame's command line and header lines, split at the first NUL.
    async fn next_frame(&mut self) -> Vec<String> {
        loop {
            if let Some(nul) = self.buf.iter().position(|&b| b == 0) {
                let raw: Vec<u8> = self.buf.drain(..=nul).collect();
                let text = String::from_utf8_lossy(&raw[..nul]).into_owned();
                let text = text.trim_start_matches(['\r', '\n']);
                let head = text.split("\n\n").next().unwrap_or_default();
                return head.lines().map(str::to_string).collect();
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame arrives in time")
                .expect("read");
            assert!(n > 0, "connection closed while a frame was expected");
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }
}

#[tokio::test]
async fn a_nul_in_a_header_cannot_forge_frames_for_other_clients() {
    let server = TestServer::default().await;
    let mut consumer = NaiveReader::connect(
        server.tcp_addr(),
        b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/queue/v\nreceipt:sub\n\n\0",
    )
    .await;
    assert_eq!(consumer.next_frame().await[0], "CONNECTED");
    assert_eq!(consumer.next_frame().await, ["RECEIPT", "receipt-id:sub"]);

    let mut attacker = Client::tcp(server.tcp_addr()).await;
    attacker.connect(&[]).await;
    attacker
        .send_raw(b"SEND\ndestination:/queue/v\nx-a:\0RECEIPT\nreceipt-id:forged-42\n\n\0")
        .await;
    let error = attacker.expect_error_and_close().await;
    let message = error.headers.get("message").unwrap_or_default();
    assert!(message.contains("NUL"), "{message}");
    assert!(!message.contains('\0'), "the ERROR itself carries no NUL");

    // What the consumer reads next is the next real message, nothing forged.
    let mut producer = server.client(Via::Tcp).await;
    producer
        .send_confirmed(
            frame(Command::Send, &[("destination", "/queue/v")]).body("after"),
            "p",
        )
        .await;
    let next = consumer.next_frame().await;
    assert_eq!(next[0], "MESSAGE", "{next:?}");
    consumer.write(b"DISCONNECT\nreceipt:bye\n\n\0").await;
    assert_eq!(consumer.next_frame().await, ["RECEIPT", "receipt-id:bye"]);
    server.shutdown().await;
}

#[tokio::test]
async fn a_nul_in_a_header_over_websocket_is_refused_too() {
    let server = TestServer::default().await;
    let mut attacker = server.client(Via::Ws).await;
    attacker
        .send_raw(b"SEND\ndestination:/queue/v\nx-a:\0RECEIPT\nreceipt-id:forged\n\n\0")
        .await;
    let error = attacker.expect_error_and_close().await;
    assert!(body(&error).contains("NUL"), "{}", body(&error));
    server.shutdown().await;
}

#[tokio::test]
async fn a_1_0_consumer_gets_a_1_2_message_whose_header_it_cannot_carry() {
    let server = TestServer::default().await;
    let mut old = Client::tcp(server.tcp_addr()).await;
    old.send(frame(Command::Connect, &[("host", "localhost")]))
        .await;
    let connected = old.recv().await;
    assert_eq!(connected.headers.get("version"), Some("1.0"));
    old.subscribe("s", "/queue/versions", "client", &[]).await;

    let mut producer = server.client(Via::Tcp).await;
    producer
        .send_confirmed(
            frame(
                Command::Send,
                &[("destination", "/queue/versions"), ("x-note", "two\nlines")],
            )
            .body("hi"),
            "r",
        )
        .await;
    let message = old.recv().await;
    assert_eq!(message.command, Command::Message);
    assert_eq!(body(&message), "hi");
    assert_eq!(message.headers.get("x-note"), None);
    let health = integration_tests::http_get(server.http_addr(), "/health").await;
    assert!(health.contains("\"headers_dropped\":1"), "{health}");
    server.shutdown().await;
}

#[tokio::test]
async fn wrong_passcodes_are_never_echoed_and_each_makes_the_next_wait_longer() {
    let server = TestServer::start(|c| {
        c.users.insert(
            "ana".into(),
            stompbox::security::passwords::hash_for_tests("right-one"),
        );
    })
    .await;
    let mut waits = Vec::new();
    for attempt in 0..3 {
        let mut c = Client::tcp(server.tcp_addr()).await;
        let started = std::time::Instant::now();
        let guess = format!("guess-{attempt}-secret");
        c.send(frame(
            Command::Connect,
            &[
                ("accept-version", "1.2"),
                ("login", "ana"),
                ("passcode", &guess),
            ],
        ))
        .await;
        let error = c.expect_error_and_close().await;
        waits.push(started.elapsed());
        let text = format!("{error:?}{}", body(&error));
        assert!(text.contains("access refused"), "{text}");
        assert!(!text.contains(&guess), "the passcode is echoed: {text}");
    }
    // 100 ms, 200 ms, 400 ms: only lower bounds are asserted, the machine may be slow.
    assert!(
        waits[1] >= std::time::Duration::from_millis(200),
        "{waits:?}"
    );
    assert!(
        waits[2] >= std::time::Duration::from_millis(400),
        "{waits:?}"
    );
    // The right passcode still gets in, and forgives the address.
    let mut c = Client::tcp(server.tcp_addr()).await;
    c.connect(&[("login", "ana"), ("passcode", "right-one")])
        .await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_commit_with_one_bad_send_applies_none_of_them() {
    let server = TestServer::default().await;
    let mut watcher = server.client(Via::Ws).await;
    watcher.subscribe("w", "/queue/atomic", "auto", &[]).await;
    let mut c = server.client(Via::Tcp).await;
    c.send(frame(Command::Begin, &[("transaction", "t")])).await;
    c.send(
        frame(
            Command::Send,
            &[("destination", "/queue/atomic"), ("transaction", "t")],
        )
        .body("first"),
    )
    .await;
    c.send(
        frame(
            Command::Send,
            &[("destination", "/nowhere/x"), ("transaction", "t")],
        )
        .body("bad"),
    )
    .await;
    c.send(frame(Command::Commit, &[("transaction", "t")]))
        .await;
    let error = c.expect_error_and_close().await;
    assert!(
        error
            .headers
            .get("message")
            .unwrap_or_default()
            .contains("unknown destination")
    );
    // The watcher's next message is a later one: "first" never happened.
    let mut p = server.client(Via::Tcp).await;
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/queue/atomic")]).body("later"),
        "l",
    )
    .await;
    assert_eq!(body(&watcher.recv().await), "later");
    server.shutdown().await;
}

#[tokio::test]
async fn a_full_queue_refuses_on_the_receipt_and_the_connection_stays() {
    let server = TestServer::start(|c| {
        c.queues = vec![stompbox::broker::QueuePolicy {
            pattern: "/queue/small".into(),
            max_length: 2,
            max_length_bytes: 0,
            overflow: stompbox::broker::Overflow::RejectPublish,
            ..stompbox::broker::QueuePolicy::unlimited()
        }];
    })
    .await;
    let mut p = server.client(Via::Tcp).await;
    for i in 0..2 {
        let r = format!("r{i}");
        p.send_confirmed(
            frame(Command::Send, &[("destination", "/queue/small")]).body("m"),
            &r,
        )
        .await;
    }
    p.send(
        frame(
            Command::Send,
            &[("destination", "/queue/small"), ("receipt", "full")],
        )
        .body("m"),
    )
    .await;
    let receipt = p.recv().await;
    assert_eq!(receipt.command, Command::Receipt);
    assert_eq!(receipt.headers.get("x-error"), Some("queue-full"));
    // Still connected: a consumer makes room and the next SEND is accepted.
    let mut c = server.client(Via::Ws).await;
    c.subscribe("c", "/queue/small", "auto", &[]).await;
    c.messages(2).await;
    p.send(
        frame(
            Command::Send,
            &[("destination", "/queue/small"), ("receipt", "ok")],
        )
        .body("m"),
    )
    .await;
    let receipt = p.recv().await;
    assert_eq!(receipt.headers.get("receipt-id"), Some("ok"));
    assert_eq!(receipt.headers.get("x-error"), None);
    server.shutdown().await;
}

#[tokio::test]
async fn recovering_from_a_forgotten_topic_reports_a_gap() {
    let server = TestServer::default().await;
    let mut c = server.client(Via::Tcp).await;
    c.subscribe("s", "/topic/plain.swept", "auto", &[]).await;
    for i in 0..3 {
        c.publish("/topic/plain.swept", &format!("m{i}")).await;
    }
    let last = c.messages(3).await.pop().expect("three");
    let epoch = last
        .headers
        .get("x-stream-epoch")
        .unwrap_or_default()
        .to_string();
    c.send_confirmed(frame(Command::Unsubscribe, &[("id", "s")]), "u")
        .await;
    server.server().broker().sweep();
    assert_eq!(
        server.server().broker().destination_count(),
        0,
        "the idle topic is forgotten"
    );
    c.publish("/topic/plain.swept", "after").await;
    c.send(frame(
        Command::Subscribe,
        &[
            ("id", "r"),
            ("destination", "/topic/plain.swept"),
            ("x-since", "3"),
            ("x-since-epoch", &epoch),
        ],
    ))
    .await;
    let marker = c.recv().await;
    assert_eq!(marker.headers.get("x-recovery"), Some("gap"), "{marker:?}");
    server.shutdown().await;
}
