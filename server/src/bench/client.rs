//! A minimal STOMP 1.2 client for load generation, over TCP or WebSocket,
//! built on the project's codec. Reading and writing are separate halves
//! so producers and consumers can run as independent tasks.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use stomp_codec::{CodecError, Command, Decoded, Frame, FrameDecoder, StompCodec, Version};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::codec::{FramedRead, FramedWrite};

use super::BenchError;

/// Where the broker is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `stomp://host:port` (or `tcp://`).
    Tcp(String),
    /// `ws://host:port/path`.
    Ws(String),
    /// `stomp+ssl://host:port`, trusting the CA given with `--tls-ca`.
    Tls(TlsTarget),
}

/// A TLS broker address and the client configuration to reach it.
#[derive(Debug, Clone)]
pub struct TlsTarget {
    /// `host:port`.
    pub addr: String,
    config: std::sync::Arc<tokio_rustls::rustls::ClientConfig>,
}

impl PartialEq for TlsTarget {
    fn eq(&self, other: &TlsTarget) -> bool {
        self.addr == other.addr && std::sync::Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for TlsTarget {}

/// A client configuration trusting the CA certificates in a PEM file.
fn tls_client(ca: &std::path::Path) -> Result<tokio_rustls::rustls::ClientConfig, BenchError> {
    use rustls_pki_types::pem::PemObject;
    use tokio_rustls::rustls;
    let usage = |why: String| BenchError::Usage(format!("--tls-ca {}: {why}", ca.display()));
    let text = std::fs::read(ca).map_err(|e| usage(e.to_string()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&text) {
        let cert = cert.map_err(|e| usage(format!("not PEM certificates ({e})")))?;
        roots.add(cert).map_err(|e| usage(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(usage("no certificate in it".into()));
    }
    Ok(
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| usage(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth(),
    )
}

impl Target {
    /// Parses `stomp://host:port`, `tcp://host:port` or `ws://host:port/ws`.
    pub fn parse(url: &str) -> Result<Target, BenchError> {
        Target::parse_with(url, None)
    }

    /// Like [`parse`](Self::parse), and `stomp+ssl://host:port` with the
    /// CA file that signed the broker's certificate.
    pub fn parse_with(url: &str, tls_ca: Option<&std::path::Path>) -> Result<Target, BenchError> {
        if let Some(rest) = url.strip_prefix("stomp+ssl://") {
            let Some(ca) = tls_ca else {
                return Err(BenchError::Usage(
                    "stomp+ssl:// needs --tls-ca FILE, the CA certificate that signed the broker's"
                        .into(),
                ));
            };
            let rest = rest.trim_end_matches('/');
            let addr = if rest.contains(':') {
                rest.to_string()
            } else {
                format!("{rest}:61614")
            };
            return Ok(Target::Tls(TlsTarget {
                addr,
                config: std::sync::Arc::new(tls_client(ca)?),
            }));
        }
        if let Some(rest) = url
            .strip_prefix("stomp://")
            .or_else(|| url.strip_prefix("tcp://"))
        {
            let rest = rest.trim_end_matches('/');
            if rest.is_empty() {
                return Err(BenchError::Usage(format!("{url:?} has no host:port")));
            }
            let with_port = if rest.contains(':') {
                rest.to_string()
            } else {
                format!("{rest}:61613")
            };
            return Ok(Target::Tcp(with_port));
        }
        if url.starts_with("ws://") {
            return Ok(Target::Ws(url.to_string()));
        }
        if url.starts_with("wss://") {
            return Err(BenchError::Usage(
                "wss:// is not supported by the load tool; stomp+ssl:// is".into(),
            ));
        }
        Err(BenchError::Usage(format!(
            "{url:?} is not a broker URL: use stomp://host:port or ws://host:port/ws"
        )))
    }

    /// `tcp` or `ws`, for reports.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Tcp(_) => "tcp",
            Target::Ws(_) => "ws",
            Target::Tls(_) => "tls",
        }
    }
}

/// CONNECT headers.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    /// `login`.
    pub login: Option<String>,
    /// `passcode`.
    pub passcode: Option<String>,
    /// `host` (virtual host); `localhost` when not given.
    pub host: Option<String>,
}

type WsStream = WebSocketStream<MaybeTlsStream<TcpStream>>;
type TlsStream = tokio_rustls::client::TlsStream<TcpStream>;

/// The sending half of a connection.
pub enum Writer {
    /// Over TCP.
    Tcp(FramedWrite<OwnedWriteHalf, StompCodec>),
    /// Over TLS.
    Tls(FramedWrite<tokio::io::WriteHalf<TlsStream>, StompCodec>),
    /// Over WebSocket: one frame per message.
    Ws(SplitSink<WsStream, Message>, BytesMut),
}

/// The receiving half of a connection.
pub enum Reader {
    /// Over TCP.
    Tcp(FramedRead<OwnedReadHalf, StompCodec>),
    /// Over TLS.
    Tls(FramedRead<tokio::io::ReadHalf<TlsStream>, StompCodec>),
    /// Over WebSocket.
    Ws(SplitStream<WsStream>, FrameDecoder, BytesMut),
}

const HANDSHAKE: Duration = Duration::from_secs(10);

/// Opens a connection (from `source` when given) and completes CONNECT.
pub async fn connect(
    target: &Target,
    credentials: &Credentials,
    source: Option<IpAddr>,
) -> Result<(Writer, Reader), BenchError> {
    let (mut writer, mut reader) = match target {
        Target::Tcp(addr) => {
            let stream = open_tcp(addr, source).await?;
            let _ = stream.set_nodelay(true);
            let (r, w) = stream.into_split();
            (
                Writer::Tcp(FramedWrite::new(w, StompCodec::default())),
                Reader::Tcp(FramedRead::new(r, StompCodec::default())),
            )
        }
        Target::Tls(target) => {
            let stream = open_tcp(&target.addr, source).await?;
            let _ = stream.set_nodelay(true);
            let host = target
                .addr
                .rsplit_once(':')
                .map_or(target.addr.as_str(), |(h, _)| h)
                .trim_matches(['[', ']']);
            let name = rustls_pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| BenchError::Usage(format!("{host}: {e}")))?;
            let stream = tokio::time::timeout(
                HANDSHAKE,
                tokio_rustls::TlsConnector::from(target.config.clone()).connect(name, stream),
            )
            .await
            .map_err(|_| BenchError::Timeout(format!("TLS handshake with {}", target.addr)))?
            .map_err(|e| BenchError::Connect(format!("TLS with {}: {e}", target.addr)))?;
            let (r, w) = tokio::io::split(stream);
            (
                Writer::Tls(FramedWrite::new(w, StompCodec::default())),
                Reader::Tls(FramedRead::new(r, StompCodec::default())),
            )
        }
        Target::Ws(url) => {
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| BenchError::Usage(format!("invalid URL {url:?}: {e}")))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", http_value("v12.stomp"));
            let host = request
                .uri()
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let stream = open_tcp(&host, source).await?;
            let _ = stream.set_nodelay(true);
            let (ws, _) = tokio::time::timeout(
                HANDSHAKE,
                tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream)),
            )
            .await
            .map_err(|_| BenchError::Timeout(format!("WebSocket handshake with {url}")))?
            .map_err(|e| BenchError::Connect(format!("{url}: {e}")))?;
            let (sink, stream) = ws.split();
            (
                Writer::Ws(sink, BytesMut::new()),
                Reader::Ws(stream, FrameDecoder::new(), BytesMut::new()),
            )
        }
    };
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header(
            "host",
            credentials
                .host
                .clone()
                .unwrap_or_else(|| "localhost".into()),
        )
        .header("heart-beat", "0,0");
    if let Some(login) = &credentials.login {
        connect = connect.header("login", login.as_str());
    }
    if let Some(passcode) = &credentials.passcode {
        connect = connect.header("passcode", passcode.as_str());
    }
    writer.send(connect).await?;
    let reply = tokio::time::timeout(HANDSHAKE, reader.next_frame())
        .await
        .map_err(|_| BenchError::Timeout("no CONNECTED from the broker".into()))??;
    if reply.command != Command::Connected {
        return Err(BenchError::Protocol(format!(
            "expected CONNECTED, got {}",
            reply.command
        )));
    }
    Ok((writer, reader))
}

fn http_value(s: &'static str) -> tokio_tungstenite::tungstenite::http::HeaderValue {
    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(s)
}

async fn open_tcp(addr: &str, source: Option<IpAddr>) -> Result<TcpStream, BenchError> {
    let resolved: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(|e| BenchError::Connect(format!("{addr}: {e}")))?
        .collect();
    let peer = resolved
        .iter()
        .find(|a| source.is_none_or(|s| s.is_ipv4() == a.is_ipv4()))
        .copied()
        .ok_or_else(|| BenchError::Connect(format!("{addr}: no usable address")))?;
    let socket = if peer.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(|e| BenchError::Connect(format!("{addr}: {e}")))?;
    if let Some(ip) = source {
        // bind() alone would reserve a port per source address whatever the
        // destination, so ports left in TIME_WAIT by an earlier run (or by
        // another broker's run) would run the range out; with this, connect()
        // picks the port by the whole 4-tuple.
        #[cfg(target_os = "linux")]
        if ip.is_ipv4() {
            use nix::sys::socket::{setsockopt, sockopt::IpBindAddressNoPort};
            if let Err(e) = setsockopt(&socket, IpBindAddressNoPort, &true) {
                tracing::debug!(error = %e, "cannot set IP_BIND_ADDRESS_NO_PORT");
            }
        }
        socket
            .bind(SocketAddr::new(ip, 0))
            .map_err(|e| BenchError::Connect(format!("bind to {ip}: {e}")))?;
    }
    tokio::time::timeout(HANDSHAKE, socket.connect(peer))
        .await
        .map_err(|_| BenchError::Timeout(format!("connecting to {addr}")))?
        .map_err(|e| BenchError::Connect(format!("{addr}: {e}")))
}

impl Writer {
    /// Queues a frame without flushing.
    pub async fn feed(&mut self, frame: Frame) -> Result<(), BenchError> {
        match self {
            Writer::Tcp(w) => w.feed(frame).await.map_err(codec_error),
            Writer::Tls(w) => w.feed(frame).await.map_err(codec_error),
            Writer::Ws(sink, buf) => {
                buf.clear();
                frame
                    .encode(Version::V1_2, buf)
                    .map_err(|e| BenchError::Protocol(e.to_string()))?;
                let bytes = buf.split().freeze();
                let message = match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Message::text(text),
                    Err(_) => Message::binary(bytes),
                };
                sink.feed(message)
                    .await
                    .map_err(|e| BenchError::Io(e.to_string()))
            }
        }
    }

    /// Writes out what was fed.
    pub async fn flush(&mut self) -> Result<(), BenchError> {
        match self {
            Writer::Tcp(w) => SinkExt::<Frame>::flush(w).await.map_err(codec_error),
            Writer::Tls(w) => SinkExt::<Frame>::flush(w).await.map_err(codec_error),
            Writer::Ws(sink, _) => sink
                .flush()
                .await
                .map_err(|e| BenchError::Io(e.to_string())),
        }
    }

    /// Feeds and flushes one frame.
    pub async fn send(&mut self, frame: Frame) -> Result<(), BenchError> {
        self.feed(frame).await?;
        self.flush().await
    }
}

impl Reader {
    /// The next frame (heart-beats skipped). An ERROR from the broker is an error.
    pub async fn next_frame(&mut self) -> Result<Frame, BenchError> {
        loop {
            let decoded = match self {
                Reader::Tcp(r) => match r.next().await {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(codec_error(e)),
                    None => return Err(BenchError::Closed),
                },
                Reader::Tls(r) => match r.next().await {
                    Some(Ok(d)) => d,
                    Some(Err(e)) => return Err(codec_error(e)),
                    None => return Err(BenchError::Closed),
                },
                Reader::Ws(stream, decoder, buf) => loop {
                    if let Some(d) = decoder
                        .decode(buf)
                        .map_err(|e| BenchError::Protocol(e.to_string()))?
                    {
                        break d;
                    }
                    match stream.next().await {
                        Some(Ok(Message::Text(t))) => buf.extend_from_slice(t.as_bytes()),
                        Some(Ok(Message::Binary(b))) => buf.extend_from_slice(&b),
                        Some(Ok(Message::Close(_))) | None => return Err(BenchError::Closed),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(BenchError::Io(e.to_string())),
                    }
                },
            };
            match decoded {
                Decoded::Heartbeat => continue,
                Decoded::Frame(f) if f.command == Command::Error => {
                    return Err(BenchError::Broker(
                        f.headers
                            .get("message")
                            .unwrap_or("ERROR without a message")
                            .to_string(),
                    ));
                }
                Decoded::Frame(f) => return Ok(f),
            }
        }
    }
}

fn codec_error(e: CodecError) -> BenchError {
    match e {
        CodecError::Io(e) => BenchError::Io(e.to_string()),
        other => BenchError::Protocol(other.to_string()),
    }
}
