//! Transport details: telnet-style input, WebSocket framing, slow consumers,
//! many connections, shutdown, HTTP endpoints.

use std::time::Duration;

use integration_tests::{Client, TestServer, WAIT, body, frame, http_get};
use stomp_codec::{Command, Decoded, FrameDecoder};
use stompbox::broker::Destination;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn telnet_session_with_crlf_and_nul() {
    let server = TestServer::default().await;
    let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
    // What a person types: CRLF line endings, blank line, Ctrl+@ (NUL), Enter.
    s.write_all(b"CONNECT\r\naccept-version:1.2\r\nhost:localhost\r\n\r\n\x00\r\n")
        .await
        .unwrap();
    s.write_all(b"SUBSCRIBE\r\nid:0\r\ndestination:/topic/chat\r\n\r\n\x00\r\n")
        .await
        .unwrap();
    s.write_all(b"SEND\r\ndestination:/topic/chat\r\n\r\nhello from telnet\x00\r\n")
        .await
        .unwrap();
    let mut text = Vec::new();
    let mut chunk = [0u8; 4096];
    while !String::from_utf8_lossy(&text).contains("hello from telnet") {
        let n = tokio::time::timeout(WAIT, s.read(&mut chunk))
            .await
            .unwrap()
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&text));
        text.extend_from_slice(&chunk[..n]);
    }
    let text = String::from_utf8_lossy(&text);
    assert!(text.starts_with("CONNECTED\nversion:1.2\n"), "{text}");
    assert!(text.contains("MESSAGE\nsubscription:0\n"), "{text}");
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_negotiates_stomp_subprotocol() {
    let server = TestServer::default().await;
    let (_c, protocol) = Client::ws(&server.ws_url()).await;
    assert_eq!(protocol.as_deref(), Some("v12.stomp"));
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_frames_in_one_message_and_split_over_many() {
    let server = TestServer::default().await;
    let mut sub = Client::connected_ws(&server.ws_url()).await;
    sub.subscribe("0", "/queue/ws-split", "auto", &[]).await;
    let (mut c, _) = Client::ws(&server.ws_url()).await;
    // Several frames in one message.
    c.send_raw(
        b"CONNECT\naccept-version:1.2\nhost:x\n\n\0SEND\ndestination:/queue/ws-split\n\none\0SEND\ndestination:/queue/ws-split\n\ntwo\0",
    )
    .await;
    assert_eq!(c.recv().await.command, Command::Connected);
    // One 40 KiB frame split into 16 KiB messages, as @stomp/stompjs does.
    let big = "x".repeat(40 * 1024);
    let raw = format!(
        "SEND\ndestination:/queue/ws-split\ncontent-length:{}\n\n{big}\0",
        big.len()
    );
    for piece in raw.as_bytes().chunks(16 * 1024) {
        c.send_raw(piece).await;
    }
    let got = sub.messages(3).await;
    assert_eq!(body(&got[0]), "one");
    assert_eq!(body(&got[1]), "two");
    assert_eq!(got[2].body.len(), big.len());
    // The server sent exactly one frame per WebSocket message.
    for message in sub.ws_messages() {
        let mut buf = bytes::BytesMut::from(&message[..]);
        let mut decoder = FrameDecoder::new();
        let first = decoder.decode(&mut buf).unwrap();
        assert!(matches!(
            first,
            Some(Decoded::Frame(_)) | Some(Decoded::Heartbeat)
        ));
        assert!(buf.is_empty(), "more than one frame in a message");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn websocket_binary_bodies_round_trip() {
    let server = TestServer::default().await;
    let mut sub = Client::connected_ws(&server.ws_url()).await;
    sub.subscribe("0", "/topic/bin", "auto", &[]).await;
    let mut p = Client::connected_tcp(server.tcp_addr()).await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
    p.send(frame(Command::Send, &[("destination", "/topic/bin")]).body(payload.clone()))
        .await;
    assert_eq!(&sub.recv().await.body[..], &payload[..]);
    server.shutdown().await;
}

#[tokio::test]
async fn slow_topic_subscriber_is_disconnected_and_others_are_unaffected() {
    let server = TestServer::start(|c| {
        c.max_topic_backlog = 64;
        c.write_timeout_ms = 1000;
    })
    .await;
    // A subscriber that never reads.
    let mut slow = TcpStream::connect(server.tcp_addr()).await.unwrap();
    slow.write_all(b"CONNECT\naccept-version:1.2\n\n\0SUBSCRIBE\nid:0\ndestination:/topic/firehose\nreceipt:s\n\n\0")
        .await
        .unwrap();
    let mut fast = Client::connected_tcp(server.tcp_addr()).await;
    fast.subscribe("0", "/topic/firehose", "auto", &[]).await;
    // Let the slow subscription's receipt come back before publishing.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut publisher = Client::connected_tcp(server.tcp_addr()).await;
    let body = "z".repeat(16 * 1024);
    let count = 1500; // ~24 MiB: more than loopback socket buffers hold.
    // In steps the fast reader keeps up with, however loaded the machine:
    // it never falls behind, the subscriber that never reads does.
    for _ in 0..count / 30 {
        for _ in 0..30 {
            publisher.publish("/topic/firehose", &body).await;
        }
        let got = fast.messages(30).await;
        assert!(got.iter().all(|m| m.body.len() == 16 * 1024));
    }

    // The slow connection was closed: reading it now ends in EOF.
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0usize;
    let closed = tokio::time::timeout(WAIT, async {
        loop {
            match slow.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the slow subscriber was not disconnected");
    assert!(
        total < count * body.len(),
        "the slow subscriber got everything: {total}"
    );
    // The broker carries on.
    fast.subscribe("1", "/queue/after-slow", "auto", &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn slow_queue_consumer_leaves_messages_in_the_queue() {
    let server = TestServer::default().await;
    let mut c = Client::connected_tcp(server.tcp_addr()).await;
    c.subscribe(
        "0",
        "/queue/backlog",
        "client-individual",
        &[("prefetch-count", "10")],
    )
    .await;
    let mut p = Client::connected_tcp(server.tcp_addr()).await;
    for i in 0..100 {
        p.publish("/queue/backlog", &i.to_string()).await;
    }
    p.send_confirmed(
        frame(Command::Send, &[("destination", "/topic/x")]),
        "flushed",
    )
    .await;
    let got = c.messages(10).await;
    c.expect_nothing(Duration::from_millis(200)).await;
    let Ok(Destination::Queue(q)) = server.server().broker().destination("/queue/backlog") else {
        panic!("queue exists");
    };
    assert_eq!(q.depth(), 90, "undelivered messages stay in the queue");
    // Acking one lets exactly one more through.
    c.send(frame(
        Command::Ack,
        &[("id", got[0].headers.get("ack").unwrap())],
    ))
    .await;
    assert_eq!(body(&c.recv().await), "10");
    server.shutdown().await;
}

#[tokio::test]
async fn a_thousand_connections_exchange_messages_with_nothing_lost() {
    let server = TestServer::default().await;
    let addr = server.tcp_addr();
    let n = 1000;
    let per = 5;
    let mut clients = Vec::with_capacity(n);
    for i in 0..n {
        let mut c = Client::connected_tcp(addr).await;
        c.subscribe("in", &format!("/queue/inbox-{i}"), "client-individual", &[])
            .await;
        clients.push(c);
    }
    // Everyone sends to the next one, all at once.
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, mut c)| {
            tokio::spawn(async move {
                let to = format!("/queue/inbox-{}", (i + 1) % n);
                for k in 0..per {
                    c.publish(&to, &format!("{i}:{k}")).await;
                }
                let got = c.messages(per).await;
                let from = (i + n - 1) % n;
                let bodies: Vec<String> = got.iter().map(body).collect();
                let expected: Vec<String> = (0..per).map(|k| format!("{from}:{k}")).collect();
                assert_eq!(bodies, expected);
                for m in &got {
                    c.send(frame(
                        Command::Ack,
                        &[("id", m.headers.get("ack").unwrap())],
                    ))
                    .await;
                }
                c.send_confirmed(frame(Command::Disconnect, &[]), "bye")
                    .await;
            })
        })
        .collect();
    for t in tasks {
        tokio::time::timeout(WAIT * 3, t)
            .await
            .expect("in time")
            .expect("no panic");
    }
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_clients_with_an_error() {
    let server = TestServer::default().await;
    let mut tcp = Client::connected_tcp(server.tcp_addr()).await;
    let mut ws = Client::connected_ws(&server.ws_url()).await;
    server.shutdown().await;
    for c in [&mut tcp, &mut ws] {
        let error = c.expect_error_and_close().await;
        assert_eq!(error.headers.get("message"), Some("server shutting down"));
    }
}

#[tokio::test]
async fn health_endpoint() {
    let server = TestServer::default().await;
    let response = http_get(server.http_addr(), "/health").await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    assert!(response.contains("\"memory_limit\":"), "{response}");
    server.shutdown().await;
}

#[tokio::test]
async fn error_message_header_reads_plainly_in_telnet() {
    let server = TestServer::default().await;
    let mut s = TcpStream::connect(server.tcp_addr()).await.unwrap();
    s.write_all(b"CONNECT\r\naccept-version:1.2\r\n\r\n\x00\r\nsend\r\n\r\n\x00\r\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut text))
        .await
        .unwrap()
        .unwrap();
    // No "\c" escapes to decode by eye; the body keeps the original wording.
    assert!(
        text.contains("\nmessage:malformed frame - unknown command \"send\""),
        "{text}"
    );
    assert!(
        text.contains("\nmalformed frame: unknown command \"send\""),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn plain_http_on_the_websocket_endpoint_is_told_what_to_do() {
    let server = TestServer::default().await;
    let response = http_get(server.http_addr(), "/ws").await;
    assert!(response.starts_with("HTTP/1.1 426"), "{response}");
    assert!(
        response.contains("this is a WebSocket endpoint"),
        "{response}"
    );
    server.shutdown().await;
}

/// A WebSocket handshake as a browser sends it, with `origin`; the HTTP status.
async fn ws_handshake_status(server: &TestServer, origin: Option<&str>) -> u16 {
    let mut stream = TcpStream::connect(server.http_addr())
        .await
        .expect("connect");
    let host = server.http_addr().to_string();
    let mut request = format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n"
    );
    if let Some(origin) = origin {
        request.push_str(&format!("Origin: {origin}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    head.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status line: {head}"))
}

#[tokio::test]
async fn only_the_brokers_own_page_and_allowed_origins_open_websockets() {
    let server = TestServer::default().await;
    let own = format!("http://{}", server.http_addr());
    assert_eq!(
        ws_handshake_status(&server, None).await,
        101,
        "a program, no Origin"
    );
    assert_eq!(
        ws_handshake_status(&server, Some(&own)).await,
        101,
        "the broker's own page"
    );
    assert_eq!(
        ws_handshake_status(&server, Some("http://evil.example")).await,
        403
    );
    assert_eq!(ws_handshake_status(&server, Some("null")).await, 403);
    server.shutdown().await;

    let server =
        TestServer::start(|c| c.allowed_origins = vec!["https://chat.example.com".into()]).await;
    assert_eq!(
        ws_handshake_status(&server, Some("https://chat.example.com")).await,
        101
    );
    assert_eq!(
        ws_handshake_status(&server, Some("https://other.example.com")).await,
        403
    );
    server.shutdown().await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// A WebSocket STOMP CONNECT (anonymous) sent as if through a proxy that
/// added `X-Forwarded-For`; the first frame's command, and the socket.
async fn anonymous_connect_forwarded(server: &TestServer, forwarded_for: &str) -> (String, Ws) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = server.ws_url().into_client_request().expect("a request");
    request.headers_mut().insert(
        "X-Forwarded-For",
        forwarded_for.parse().expect("a header value"),
    );
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        "v12.stomp".parse().expect("a header value"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("upgraded");
    ws.send(Message::text("CONNECT\naccept-version:1.2\nhost:x\n\n\0"))
        .await
        .expect("sent");
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an answer in time")
            .expect("a message")
            .expect("readable");
        let text = msg.into_text().expect("text").to_string();
        if !text.trim().is_empty() {
            return (text.lines().next().unwrap_or_default().to_string(), ws);
        }
    }
}

#[tokio::test]
async fn a_proxy_on_the_same_host_does_not_make_its_clients_loopback() {
    let server = TestServer::default().await;
    // Forwarded by a proxy that is not trusted: remote, so no anonymous access.
    assert_eq!(
        anonymous_connect_forwarded(&server, "198.51.100.7").await.0,
        "ERROR"
    );
    server.shutdown().await;
    // Trusted: each client is its forwarded address (one connection per
    // address allowed here, and two clients both get in); untrusted, they
    // are one unknown address.
    for (trusted, second) in [(true, "CONNECTED"), (false, "ERROR")] {
        let server = TestServer::start(|c| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
            }
            c.anonymous = stompbox::session::AnonymousAccess::Always;
            c.max_connections_per_ip = Some(1);
        })
        .await;
        let (first, _held) = anonymous_connect_forwarded(&server, "198.51.100.7").await;
        assert_eq!(first, "CONNECTED");
        let (other, _) = anonymous_connect_forwarded(&server, "203.0.113.9").await;
        assert_eq!(other, second, "trusted proxy: {trusted}");
        server.shutdown().await;
    }
}

/// CONNECT over TCP after `header`; the reply's command and message header.
async fn connect_after(addr: std::net::SocketAddr, header: &[u8]) -> (Command, String, Client) {
    let mut c = Client::tcp(addr).await;
    c.send_raw(header).await;
    c.send(frame(Command::Connect, &[("accept-version", "1.2")]))
        .await;
    let reply = c.recv().await;
    let message = reply.headers.get("message").unwrap_or_default().to_string();
    (reply.command, message, c)
}

#[tokio::test]
async fn a_proxy_protocol_header_names_the_client_only_from_a_trusted_proxy() {
    let v1 = b"PROXY TCP4 203.0.113.9 127.0.0.1 40000 61613\r\n".to_vec();
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[198, 51, 100, 7, 127, 0, 0, 1, 0x9c, 0x40, 0xf0, 0x0d]);
    let trusting = TestServer::start(|c| {
        c.trusted_proxies = vec!["127.0.0.1".parse().expect("an address")];
    })
    .await;
    for header in [&v1, &v2] {
        // The named client is remote: anonymous access (loopback only) is refused.
        let (command, message, _) = connect_after(trusting.tcp_addr(), header).await;
        assert_eq!(command, Command::Error);
        assert!(message.contains("loopback only"), "{message}");
    }
    // The proxy's own connection without a header, and a LOCAL one, stay loopback.
    let (command, _, _) = connect_after(trusting.tcp_addr(), b"").await;
    assert_eq!(command, Command::Connected);
    let local = b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00";
    let (command, _, _) = connect_after(trusting.tcp_addr(), local).await;
    assert_eq!(command, Command::Connected);
    trusting.shutdown().await;

    // Not a trusted proxy: the header is just bad STOMP, and claims nothing.
    let server = TestServer::default().await;
    let (command, message, _) = connect_after(server.tcp_addr(), &v1).await;
    assert_eq!(command, Command::Error);
    assert!(!message.contains("loopback only"), "{message}");
    let mut c = Client::connected_tcp(server.tcp_addr()).await;
    c.subscribe("s", "/topic/fine", "auto", &[]).await;
    server.shutdown().await;
}

#[tokio::test]
async fn a_person_typing_connect_gets_longer_than_a_silent_socket() {
    let server = TestServer::start(|c| c.connect_timeout_ms = 300).await;
    // Silent: closed after the configured limit, told how long it was.
    let mut silent = Client::tcp(server.tcp_addr()).await;
    let e = silent.expect_error_and_close().await;
    assert_eq!(
        e.headers.get("message"),
        Some("no CONNECT received in time")
    );
    let body = integration_tests::body(&e);
    assert!(body.contains("0.3 s") && body.contains("60 s"), "{body}");
    // Typing, slowly: still open well past the limit, then connected.
    let mut typist = Client::tcp(server.tcp_addr()).await;
    typist.send_raw(b"CONN").await;
    typist
        .expect_nothing(std::time::Duration::from_millis(1200))
        .await;
    typist.send_raw(b"ECT\naccept-version:1.2\n\n\0").await;
    assert_eq!(typist.recv().await.command, Command::Connected);
    server.shutdown().await;
}

#[tokio::test]
async fn typing_mistakes_are_named_and_the_error_says_how_to_start_again() {
    let server = TestServer::default().await;
    let mut c = Client::connected_tcp(server.tcp_addr()).await;
    c.send_raw(b"\x0cSUBSCRIBE\nid:1\ndestination:/topic/a\n\n\0")
        .await;
    let e = c.expect_error_and_close().await;
    let message = e.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("Ctrl+L (form feed) at position 1"),
        "{message}"
    );
    assert!(!message.contains("upper-case"), "{message}");
    let body = integration_tests::body(&e);
    assert!(
        body.contains("reconnect and type:\n\nCONNECT\naccept-version:1.2"),
        "{body}"
    );

    // A header line without a colon: named, and nothing in the message
    // header that a terminal would show as \c.
    let mut raw = tokio::net::TcpStream::connect(server.tcp_addr())
        .await
        .expect("connect");
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raw.write_all(b"CONNECT\naccept-version:1.2\n\n\0SEND\ndestination /queue/a\n\nhi\0")
        .await
        .expect("write");
    let mut text = Vec::new();
    let _ = tokio::time::timeout(integration_tests::WAIT, raw.read_to_end(&mut text)).await;
    let text = String::from_utf8_lossy(&text);
    let header = text
        .lines()
        .find(|l| l.starts_with("message:malformed"))
        .unwrap_or_else(|| panic!("no message header in {text}"));
    assert!(
        header.contains("destination /queue/a") && !header.contains("\\c"),
        "{header}"
    );
    // The quoted frame shows the line at fault, not only the command.
    assert!(
        text.contains("-----\nSEND\ndestination /queue/a\n-----"),
        "{text}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_chat_policy_refusal_names_the_policy_and_its_setting() {
    let server = TestServer::default().await;
    let mut c = Client::connected_tcp(server.tcp_addr()).await;
    c.send(
        frame(
            Command::Send,
            &[("destination", "/topic/chat.general"), ("receipt", "big")],
        )
        .body("x".repeat(20_000)),
    )
    .await;
    let r = c.recv().await;
    assert_eq!(r.headers.get("x-error"), Some("too-large"), "{r:?}");
    let message = r.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("max_message_size") && message.contains("/topic/chat.*"),
        "{message}"
    );
    server.shutdown().await;
}
