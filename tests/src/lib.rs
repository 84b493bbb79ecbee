//! Helpers for end-to-end tests: start the real broker on ephemeral
//! loopback ports and talk to it over real TCP and WebSocket connections.
//! Every wait is bounded by [`WAIT`].

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use stomp_codec::{Command, Decoded, Frame, FrameDecoder, StompCodec, Version};
use stompbox::Server;
use stompbox::config::Config;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::codec::Framed;

pub mod tls;

/// A byte stream a client runs over: plain TCP or TLS.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

/// A client's stream, whatever it is.
pub type Stream = Box<dyn Io>;

/// The longest any single wait in a test may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker started for one test.
pub struct TestServer {
    server: Server,
    /// The broker's journal directory, removed when the test ends.
    _data: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a broker on 127.0.0.1:0 (both listeners) with `adjust` applied to the defaults.
    pub async fn start(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data = tempfile::tempdir().expect("a temporary data directory");
        let mut config = Config {
            tcp_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            shutdown_grace_ms: 2000,
            data_dir: data.path().to_path_buf(),
            ..Config::default()
        };
        adjust(&mut config);
        // A test that chose its own directory keeps it.
        let data = (config.data_dir == data.path()).then_some(data);
        TestServer {
            server: Server::start(config).await.expect("broker starts"),
            _data: data,
        }
    }

    /// A broker with the default settings.
    pub async fn default() -> TestServer {
        TestServer::start(|_| {}).await
    }

    /// The STOMP-over-TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.server.tcp_addr()
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.server.http_addr())
    }

    /// The HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.server.http_addr()
    }

    /// The running server.
    pub fn server(&self) -> &Server {
        &self.server
    }

    /// Graceful shutdown.
    pub async fn shutdown(self) {
        tokio::time::timeout(WAIT, self.server.shutdown())
            .await
            .expect("shutdown within the wait limit");
    }
}

enum Link {
    Tcp(Framed<Stream, StompCodec>),
    Ws {
        socket: Box<tokio_tungstenite::WebSocketStream<Stream>>,
        decoder: FrameDecoder,
        buf: BytesMut,
        /// Every WebSocket message received, to check "one frame per message".
        messages: Vec<Vec<u8>>,
    },
}

/// A STOMP client over TCP or WebSocket, for tests.
pub struct Client {
    link: Link,
    /// Frames read while waiting for a receipt, handed out by the next reads.
    pending: std::collections::VecDeque<Frame>,
    /// Heart-beats received so far.
    pub heartbeats: usize,
}

/// Builds a frame from a command and header pairs.
pub fn frame(command: Command, headers: &[(&str, &str)]) -> Frame {
    let mut f = Frame::new(command);
    for (n, v) in headers {
        f = f.header(*n, *v);
    }
    f
}

impl Client {
    /// Opens a TCP connection (no CONNECT yet).
    pub async fn tcp(addr: SocketAddr) -> Client {
        let stream = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connect in time")
            .expect("connect");
        Client::from_tcp(stream)
    }

    /// A client over a TCP connection opened elsewhere (no CONNECT yet).
    pub fn from_tcp(stream: TcpStream) -> Client {
        Client::from_stream(Box::new(stream))
    }

    /// A client over any stream, TLS say (no CONNECT yet).
    pub fn from_stream(stream: Stream) -> Client {
        Client {
            link: Link::Tcp(Framed::new(stream, StompCodec::default())),
            pending: Default::default(),
            heartbeats: 0,
        }
    }

    /// Opens a WebSocket connection offering the STOMP subprotocols (no CONNECT yet).
    /// Returns the subprotocol the server chose too.
    pub async fn ws(url: &str) -> (Client, Option<String>) {
        let request = url.into_client_request().expect("valid url");
        let host = request
            .uri()
            .host()
            .expect("a host")
            .trim_matches(['[', ']'])
            .to_string();
        let port = request.uri().port_u16().expect("a port");
        let stream = tokio::time::timeout(WAIT, TcpStream::connect((host.as_str(), port)))
            .await
            .expect("connect in time")
            .expect("connect");
        Client::ws_over(Box::new(stream), url).await
    }

    /// The WebSocket handshake over a stream already open (TLS, say).
    pub async fn ws_over(stream: Stream, url: &str) -> (Client, Option<String>) {
        let mut request = url.into_client_request().expect("valid url");
        request.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v10.stomp, v11.stomp, v12.stomp"
                .parse()
                .expect("valid header"),
        );
        let (socket, response) =
            tokio::time::timeout(WAIT, tokio_tungstenite::client_async(request, stream))
                .await
                .expect("connect in time")
                .expect("websocket handshake");
        let protocol = response
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (
            Client {
                link: Link::Ws {
                    socket: Box::new(socket),
                    decoder: FrameDecoder::new(),
                    buf: BytesMut::new(),
                    messages: Vec::new(),
                },
                pending: Default::default(),
                heartbeats: 0,
            },
            protocol,
        )
    }

    /// Sends CONNECT for 1.2 and returns CONNECTED.
    pub async fn connect(&mut self, extra: &[(&str, &str)]) -> Frame {
        let mut f = frame(
            Command::Connect,
            &[("accept-version", "1.2"), ("host", "localhost")],
        );
        for (n, v) in extra {
            f = f.header(*n, *v);
        }
        self.send(f).await;
        let connected = self.recv().await;
        assert_eq!(connected.command, Command::Connected, "{connected:?}");
        connected
    }

    /// A connected 1.2 TCP client.
    pub async fn connected_tcp(addr: SocketAddr) -> Client {
        let mut c = Client::tcp(addr).await;
        c.connect(&[]).await;
        c
    }

    /// A connected 1.2 WebSocket client.
    pub async fn connected_ws(url: &str) -> Client {
        let (mut c, _) = Client::ws(url).await;
        c.connect(&[]).await;
        c
    }

    /// Sends a frame.
    pub async fn send(&mut self, frame: Frame) {
        match &mut self.link {
            Link::Tcp(framed) => framed.send(frame).await.expect("send"),
            Link::Ws { socket, .. } => {
                let mut buf = BytesMut::new();
                frame.encode(Version::V1_2, &mut buf).expect("encodable");
                let text = String::from_utf8(buf.to_vec()).expect("tests send UTF-8 frames");
                socket.send(Message::text(text)).await.expect("send");
            }
        }
    }

    /// Sends raw bytes (as one WebSocket text message over WebSocket).
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        match &mut self.link {
            Link::Tcp(framed) => {
                use tokio::io::AsyncWriteExt;
                framed.get_mut().write_all(bytes).await.expect("send");
            }
            Link::Ws { socket, .. } => {
                let message = match std::str::from_utf8(bytes) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(bytes.to_vec()),
                };
                socket.send(message).await.expect("send");
            }
        }
    }

    /// The next frame or heart-beat; `None` when the connection closed. Bounded by [`WAIT`].
    pub async fn next(&mut self) -> Option<Decoded> {
        self.next_within(WAIT)
            .await
            .expect("something arrives in time")
    }

    /// Like [`next`](Self::next), but `Err(())` on timeout instead of failing.
    #[allow(clippy::result_unit_err)]
    pub async fn next_within(&mut self, limit: Duration) -> Result<Option<Decoded>, ()> {
        if let Some(f) = self.pending.pop_front() {
            return Ok(Some(Decoded::Frame(f)));
        }
        let item = tokio::time::timeout(limit, self.read())
            .await
            .map_err(|_| ())?;
        if matches!(item, Some(Decoded::Heartbeat)) {
            self.heartbeats += 1;
        }
        Ok(item)
    }

    async fn read(&mut self) -> Option<Decoded> {
        match &mut self.link {
            Link::Tcp(framed) => match framed.next().await {
                Some(Ok(item)) => Some(item),
                _ => None,
            },
            Link::Ws {
                socket,
                decoder,
                buf,
                messages,
            } => loop {
                if let Some(item) = decoder.decode(buf).expect("server sends valid frames") {
                    return Some(item);
                }
                match socket.next().await {
                    Some(Ok(Message::Text(t))) => {
                        messages.push(t.as_bytes().to_vec());
                        buf.extend_from_slice(t.as_bytes());
                    }
                    Some(Ok(Message::Binary(b))) => {
                        messages.push(b.to_vec());
                        buf.extend_from_slice(&b);
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return None,
                    Some(Ok(_)) => {}
                }
            },
        }
    }

    /// The next frame, skipping heart-beats; panics if the connection closes.
    pub async fn recv(&mut self) -> Frame {
        loop {
            match self.next().await {
                Some(Decoded::Frame(f)) => return f,
                Some(Decoded::Heartbeat) => continue,
                None => panic!("connection closed while a frame was expected"),
            }
        }
    }

    /// Waits for a RECEIPT with this id. Frames that came before it are
    /// returned, and also kept for the next reads.
    pub async fn until_receipt(&mut self, id: &str) -> Vec<Frame> {
        let mut before = Vec::new();
        loop {
            let item = tokio::time::timeout(WAIT, self.read())
                .await
                .expect("the receipt arrives in time");
            let f = match item {
                Some(Decoded::Frame(f)) => f,
                Some(Decoded::Heartbeat) => {
                    self.heartbeats += 1;
                    continue;
                }
                None => panic!("connection closed while waiting for receipt {id}"),
            };
            if f.command == Command::Receipt && f.headers.get("receipt-id") == Some(id) {
                self.pending.extend(before.iter().cloned());
                return before;
            }
            before.push(f);
        }
    }

    /// Expects an ERROR and then the connection closing.
    pub async fn expect_error_and_close(&mut self) -> Frame {
        let error = self.recv().await;
        assert_eq!(error.command, Command::Error, "{error:?}");
        self.expect_closed().await;
        error
    }

    /// Expects the connection to close (heart-beats aside) within [`WAIT`].
    pub async fn expect_closed(&mut self) {
        loop {
            match self.next().await {
                None => return,
                Some(Decoded::Heartbeat) => continue,
                Some(Decoded::Frame(f)) => panic!("expected the connection to close, got {f:?}"),
            }
        }
    }

    /// WebSocket messages received so far (empty for TCP).
    pub fn ws_messages(&self) -> &[Vec<u8>] {
        match &self.link {
            Link::Tcp(_) => &[],
            Link::Ws { messages, .. } => messages,
        }
    }
}

/// Which transport a test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// STOMP over TCP.
    Tcp,
    /// STOMP over WebSocket at /ws.
    Ws,
}

impl TestServer {
    /// A connected 1.2 client over `via`.
    pub async fn client(&self, via: Via) -> Client {
        match via {
            Via::Tcp => Client::connected_tcp(self.tcp_addr()).await,
            Via::Ws => Client::connected_ws(&self.ws_url()).await,
        }
    }

    /// An unconnected client over `via`.
    pub async fn raw_client(&self, via: Via) -> Client {
        match via {
            Via::Tcp => Client::tcp(self.tcp_addr()).await,
            Via::Ws => Client::ws(&self.ws_url()).await.0,
        }
    }
}

impl Client {
    /// SUBSCRIBE and wait for its receipt, so the subscription is active.
    pub async fn subscribe(
        &mut self,
        id: &str,
        destination: &str,
        ack: &str,
        extra: &[(&str, &str)],
    ) {
        let receipt = format!("sub-{id}");
        let mut f = frame(
            Command::Subscribe,
            &[
                ("id", id),
                ("destination", destination),
                ("ack", ack),
                ("receipt", &receipt),
            ],
        );
        for (n, v) in extra {
            f = f.header(*n, *v);
        }
        self.send(f).await;
        let before = self.until_receipt(&receipt).await;
        assert!(before.is_empty() || before.iter().all(|f| f.command == Command::Message));
    }

    /// SEND a text body.
    pub async fn publish(&mut self, destination: &str, body: &str) {
        self.send(frame(Command::Send, &[("destination", destination)]).body(body.to_string()))
            .await;
    }

    /// Sends a frame with a receipt and waits for it.
    pub async fn send_confirmed(&mut self, frame: Frame, receipt: &str) -> Vec<Frame> {
        self.send(frame.header("receipt", receipt)).await;
        self.until_receipt(receipt).await
    }

    /// Receives `n` MESSAGE frames (heart-beats skipped).
    pub async fn messages(&mut self, n: usize) -> Vec<Frame> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let f = self.recv().await;
            assert_eq!(f.command, Command::Message, "{f:?}");
            out.push(f);
        }
        out
    }

    /// Asserts nothing but heart-beats arrives for `quiet`.
    pub async fn expect_nothing(&mut self, quiet: Duration) {
        let deadline = tokio::time::Instant::now() + quiet;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return;
            }
            match self.next_within(left).await {
                Err(()) => return,
                Ok(Some(Decoded::Heartbeat)) => continue,
                Ok(other) => panic!("expected silence, got {other:?}"),
            }
        }
    }
}

/// A plain HTTP/1.1 GET of `path`, the whole response as text. Bounded by [`WAIT`].
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut response))
        .await
        .expect("the response arrives in time")
        .expect("read");
    response
}

/// The body as text.
pub fn body(frame: &Frame) -> String {
    String::from_utf8_lossy(&frame.body).into_owned()
}

/// An HTTP/1.1 request with `Connection: close`: the status code and the
/// body. Bounded by [`WAIT`].
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    s.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut response))
        .await
        .expect("the response arrives in time")
        .expect("read");
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}
