//! `stompbox relay`: a do-nothing STOMP relay, the machine's limit for
//! `stompbox bench`. It answers CONNECT, SUBSCRIBE and receipts, and turns
//! each SEND into a MESSAGE for the destination's subscribers (one of them
//! in turn for `/queue/`, every one otherwise) by putting a MESSAGE line
//! and a `subscription` header in front of the SEND's own header lines and
//! body, copied unchanged. It keeps no messages, no ids and no acks, does
//! no escaping, matches destinations by exact name, and writes whatever is
//! ready for a connection in one write. A broker's figure divided by the
//! relay's in the same run is how much of the machine it uses.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::{Bytes, BytesMut};
use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::BenchError;

/// Where the relay listens.
#[derive(Args, Debug, Clone)]
pub struct RelayArgs {
    /// Address to listen on (loopback unless you mean it).
    #[arg(long, default_value = "127.0.0.1:61620")]
    pub listen: SocketAddr,
}

/// One subscription: its connection, its id, and its connection's outbox.
struct Subscriber {
    connection: u64,
    id: Bytes,
    /// Asked for client acks: its MESSAGEs carry an `ack` header (which
    /// the relay ignores when it comes back).
    acks: bool,
    out: mpsc::UnboundedSender<Bytes>,
}

#[derive(Default)]
struct Destination {
    subscribers: Vec<Subscriber>,
    next: AtomicUsize,
}

type Destinations = Arc<RwLock<HashMap<Bytes, Destination>>>;

/// Runs the relay until the process is stopped.
pub async fn relay(args: RelayArgs) -> Result<(), BenchError> {
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(|e| BenchError::Usage(format!("--listen {}: {e}", args.listen)))?;
    let addr = listener
        .local_addr()
        .map_err(|e| BenchError::Io(e.to_string()))?;
    // On standard error, for scripts waiting for the port.
    eprintln!("relay listening on {addr}");
    let destinations: Destinations = Arc::default();
    let connections = AtomicU64::new(0);
    loop {
        let (stream, _) = listener
            .accept()
            .await
            .map_err(|e| BenchError::Io(e.to_string()))?;
        let _ = stream.set_nodelay(true);
        let id = connections.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(connection(stream, id, destinations.clone()));
    }
}

async fn connection(stream: TcpStream, id: u64, destinations: Destinations) {
    let (mut read, mut write) = stream.into_split();
    let (out, mut outbox) = mpsc::unbounded_channel::<Bytes>();
    let writer = tokio::spawn(async move {
        let mut ready = Vec::new();
        let mut batch = Vec::with_capacity(64 * 1024);
        while outbox.recv_many(&mut ready, 4096).await > 0 {
            batch.clear();
            for frame in ready.drain(..) {
                batch.extend_from_slice(&frame);
            }
            if write.write_all(&batch).await.is_err() {
                return;
            }
        }
    });
    let mut buf = BytesMut::with_capacity(64 * 1024);
    'read: loop {
        match read.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        while let Some(frame) = next_frame(&mut buf) {
            if !handle(frame, id, &out, &destinations) {
                break 'read;
            }
        }
        if buf.capacity() - buf.len() < 16 * 1024 {
            buf.reserve(64 * 1024);
        }
    }
    destinations
        .write()
        .unwrap_or_else(|e| e.into_inner())
        .values_mut()
        .for_each(|d| d.subscribers.retain(|s| s.connection != id));
    drop(out);
    let _ = writer.await;
}

/// One frame's bytes, from its command to its NUL, heart-beats skipped.
fn next_frame(buf: &mut BytesMut) -> Option<Bytes> {
    let start = buf.iter().position(|&b| b != b'\n' && b != b'\r')?;
    let _ = buf.split_to(start);
    let head_end = find(buf, b"\n\n")
        .map(|i| i + 2)
        .or_else(|| find(buf, b"\r\n\r\n").map(|i| i + 4))?;
    let length = header(&buf[..head_end], b"content-length")
        .and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<usize>().ok());
    let end = match length {
        Some(n) if buf.len() > head_end + n => head_end + n,
        Some(_) => return None,
        None => head_end + buf[head_end..].iter().position(|&b| b == 0)?,
    };
    Some(buf.split_to(end + 1).freeze())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// A header's raw value, from the lines between the command and the
/// first empty line.
fn header<'a>(frame: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    frame
        .split(|&b| b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(b":"))
}

fn command(frame: &[u8]) -> &[u8] {
    let line = frame.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn receipt(frame: &Bytes, out: &mpsc::UnboundedSender<Bytes>) {
    if let Some(id) = header(frame, b"receipt") {
        let mut r = Vec::with_capacity(id.len() + 24);
        r.extend_from_slice(b"RECEIPT\nreceipt-id:");
        r.extend_from_slice(id);
        r.extend_from_slice(b"\n\n\0");
        let _ = out.send(Bytes::from(r));
    }
}

/// Acts on one frame; false to close the connection.
fn handle(
    frame: Bytes,
    id: u64,
    out: &mpsc::UnboundedSender<Bytes>,
    destinations: &Destinations,
) -> bool {
    match command(&frame) {
        b"SEND" => {
            let Some(destination) = header(&frame, b"destination") else {
                return true;
            };
            let map = destinations.read().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = map.get(destination) {
                let first_line = frame
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(frame.len(), |i| i + 1);
                let rest = &frame[first_line..];
                let deliver = |s: &Subscriber| {
                    let mut m = Vec::with_capacity(rest.len() + s.id.len() + 40);
                    m.extend_from_slice(b"MESSAGE\nsubscription:");
                    m.extend_from_slice(&s.id);
                    m.extend_from_slice(b"\nmessage-id:0\n");
                    if s.acks {
                        m.extend_from_slice(b"ack:0\n");
                    }
                    m.extend_from_slice(rest);
                    let _ = s.out.send(Bytes::from(m));
                };
                if destination.starts_with(b"/queue/") {
                    if !d.subscribers.is_empty() {
                        let i = d.next.fetch_add(1, Ordering::Relaxed) % d.subscribers.len();
                        deliver(&d.subscribers[i]);
                    }
                } else {
                    d.subscribers.iter().for_each(deliver);
                }
            }
            drop(map);
            receipt(&frame, out);
        }
        b"SUBSCRIBE" => {
            let (Some(destination), Some(sub)) =
                (header(&frame, b"destination"), header(&frame, b"id"))
            else {
                return true;
            };
            destinations
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .entry(Bytes::copy_from_slice(destination))
                .or_default()
                .subscribers
                .push(Subscriber {
                    connection: id,
                    id: Bytes::copy_from_slice(sub),
                    acks: header(&frame, b"ack").is_some_and(|a| a != b"auto"),
                    out: out.clone(),
                });
            receipt(&frame, out);
        }
        b"CONNECT" | b"STOMP" => {
            let _ = out.send(Bytes::from_static(
                b"CONNECTED\nversion:1.2\nheart-beat:0,0\nserver:stompbox-relay\n\n\0",
            ));
        }
        b"DISCONNECT" => {
            receipt(&frame, out);
            return false;
        }
        // ACK, NACK, UNSUBSCRIBE and the rest: nothing to do.
        _ => receipt(&frame, out),
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_cut_by_content_length_or_nul_and_heart_beats_skipped() {
        let mut buf = BytesMut::from(
            &b"\n\r\nSEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0SEND\ndestination:/queue/b\n\nhi\0SEND\n"[..],
        );
        let first = next_frame(&mut buf).expect("one");
        assert_eq!(
            &first[..],
            b"SEND\ndestination:/queue/a\ncontent-length:3\n\na\0b\0"
        );
        assert_eq!(header(&first, b"destination"), Some(&b"/queue/a"[..]));
        let second = next_frame(&mut buf).expect("two");
        assert_eq!(&second[..], b"SEND\ndestination:/queue/b\n\nhi\0");
        assert!(next_frame(&mut buf).is_none(), "the third is not complete");
        assert_eq!(&buf[..], b"SEND\n");
    }
}
