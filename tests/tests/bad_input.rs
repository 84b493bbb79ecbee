//! Every kind of bad input gets an ERROR (with a message, an explanation
//! quoting the offending frame, and receipt-id when asked) and a close, and
//! the broker goes on serving everyone else.

use integration_tests::{Client, TestServer, Via, frame};
use stomp_codec::Command;

struct Case {
    name: &'static str,
    /// Sent after CONNECT unless `before_connect`.
    bytes: &'static [u8],
    before_connect: bool,
    message_contains: &'static str,
    quoted: &'static str,
    receipt: Option<&'static str>,
}

const CASES: &[Case] = &[
    Case { name: "frame before CONNECT", bytes: b"SEND\ndestination:/queue/a\n\nhi\0", before_connect: true, message_contains: "not connected", quoted: "SEND", receipt: None },
    Case { name: "unknown command", bytes: b"PUBLISH\n\n\0", before_connect: false, message_contains: "unknown command", quoted: "PUBLISH", receipt: None },
    Case { name: "lower-case command", bytes: b"send\ndestination:/queue/a\n\n\0", before_connect: false, message_contains: "unknown command", quoted: "send", receipt: None },
    Case { name: "malformed header", bytes: b"SEND\ndestination /queue/a\n\n\0", before_connect: false, message_contains: "malformed header", quoted: "SEND", receipt: None },
    Case { name: "missing required header", bytes: b"SEND\nreceipt:r-7\n\nhi\0", before_connect: false, message_contains: "'destination'", quoted: "SEND", receipt: Some("r-7") },
    Case { name: "undefined escape", bytes: b"SEND\ndestination:/queue/a\nx:a\\tb\n\n\0", before_connect: false, message_contains: "undefined escape", quoted: "SEND", receipt: None },
    Case { name: "frame over the size limit", bytes: b"SEND\ndestination:/queue/a\ncontent-length:999999\n\n", before_connect: false, message_contains: "too large", quoted: "SEND", receipt: None },
    Case { name: "ACK of an unknown id", bytes: b"ACK\nid:does-not-exist\nreceipt:r-8\n\n\0", before_connect: false, message_contains: "awaiting acknowledgement", quoted: "ACK", receipt: Some("r-8") },
    Case { name: "subscription id reused", bytes: b"SUBSCRIBE\nid:1\ndestination:/queue/a\n\n\0SUBSCRIBE\nid:1\ndestination:/topic/b\n\n\0", before_connect: false, message_contains: "already in use", quoted: "SUBSCRIBE", receipt: None },
    Case { name: "commit of an unknown transaction", bytes: b"COMMIT\ntransaction:nope\nreceipt:r-9\n\n\0", before_connect: false, message_contains: "no open transaction", quoted: "COMMIT", receipt: Some("r-9") },
    Case { name: "unknown destination type", bytes: b"SEND\ndestination:/exchange-nope/a\n\n\0", before_connect: false, message_contains: "unknown destination", quoted: "SEND", receipt: None },
    Case { name: "bad content-length", bytes: b"SEND\ndestination:/queue/a\ncontent-length:ten\n\n\0", before_connect: false, message_contains: "content-length", quoted: "SEND", receipt: None },
    Case { name: "server frame from a client", bytes: b"MESSAGE\ndestination:/queue/a\n\n\0", before_connect: false, message_contains: "server sends", quoted: "MESSAGE", receipt: None },
];

async fn every_bad_input(via: Via) {
    let server = TestServer::start(|c| {
        c.max_frame_size = 64 * 1024;
        c.max_body_size = 32 * 1024;
    })
    .await;
    // A bystander with a queued message and a live subscription.
    let mut bystander = server.client(via).await;
    bystander
        .subscribe("watch", "/topic/bystander", "auto", &[])
        .await;
    let mut producer = server.client(via).await;
    producer.publish("/queue/kept", "still here").await;

    for case in CASES {
        let mut c = server.raw_client(via).await;
        if !case.before_connect {
            c.connect(&[]).await;
        }
        c.send_raw(case.bytes).await;
        let error = c.expect_error_and_close().await;
        let message = error.headers.get("message").unwrap_or_default();
        assert!(
            message.contains(case.message_contains),
            "{}: message {message:?}",
            case.name
        );
        let text = String::from_utf8_lossy(&error.body);
        assert!(
            text.contains(&format!("-----\n{}", case.quoted)),
            "{}: body {text}",
            case.name
        );
        assert_eq!(
            error.headers.get("receipt-id"),
            case.receipt,
            "{}",
            case.name
        );
    }

    // Nothing else was affected.
    producer.publish("/topic/bystander", "ping").await;
    assert_eq!(integration_tests::body(&bystander.recv().await), "ping");
    let mut fresh = server.client(via).await;
    fresh.subscribe("0", "/queue/kept", "auto", &[]).await;
    assert_eq!(integration_tests::body(&fresh.recv().await), "still here");
    server.shutdown().await;
}

#[tokio::test]
async fn every_bad_input_over_tcp() {
    every_bad_input(Via::Tcp).await;
}

#[tokio::test]
async fn every_bad_input_over_websocket() {
    every_bad_input(Via::Ws).await;
}

#[tokio::test]
async fn no_connect_in_time_is_closed() {
    let server = TestServer::start(|c| c.connect_timeout_ms = 200).await;
    let mut c = Client::tcp(server.tcp_addr()).await;
    let error = c.expect_error_and_close().await;
    assert_eq!(
        error.headers.get("message"),
        Some("no CONNECT received in time")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn unsupported_version_lists_the_supported_ones() {
    let server = TestServer::default().await;
    let mut c = Client::tcp(server.tcp_addr()).await;
    c.send(frame(
        Command::Connect,
        &[("accept-version", "2.0,3.1"), ("host", "x")],
    ))
    .await;
    let error = c.expect_error_and_close().await;
    assert_eq!(error.headers.get("version"), Some("1.0,1.1,1.2"));
    server.shutdown().await;
}

#[tokio::test]
async fn login_is_checked_when_users_are_configured() {
    let server = TestServer::start(|c| {
        c.users.insert(
            "ana".into(),
            stompbox::security::passwords::hash_for_tests("s3cret"),
        );
    })
    .await;
    let mut good = Client::tcp(server.tcp_addr()).await;
    good.connect(&[("login", "ana"), ("passcode", "s3cret")])
        .await;
    let mut bad = Client::tcp(server.tcp_addr()).await;
    bad.send(frame(
        Command::Connect,
        &[
            ("accept-version", "1.2"),
            ("login", "ana"),
            ("passcode", "guess"),
        ],
    ))
    .await;
    let error = bad.expect_error_and_close().await;
    assert!(
        error
            .headers
            .get("message")
            .unwrap()
            .contains("wrong login or passcode")
    );
    server.shutdown().await;
}
