//! The PROXY protocol (HAProxy's, versions 1 and 2) on the STOMP
//! listeners: a TCP load balancer in front of the broker begins each
//! connection with a header naming the client's real address, which then
//! counts for anonymous loopback access, connection limits per address and
//! the login throttle.
//!
//! Only connections from `trusted_proxies` are read for a header; anyone
//! else's first bytes are STOMP (or TLS), so no client can claim an address
//! by sending a header itself. From a trusted proxy the header is optional
//! (a health check without one is taken as coming from the proxy).
//!
//! Read byte by byte where its length is not known up front: once per
//! connection, and nothing past the header is consumed, so the bytes after
//! it reach the TLS handshake or the STOMP decoder untouched.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The v2 header's first twelve bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (the protocol's own limit).
const V1_MAX: usize = 107;

/// The largest v2 address block taken (TLVs included): more is not a proxy
/// we know.
const V2_MAX: usize = 1024;

fn invalid(why: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("PROXY header: {why}"))
}

/// Reads a PROXY header if the connection starts with one: the client's
/// address it names, or `None` (no header, or one for a local connection
/// such as the proxy's own health check).
pub async fn read_header(
    stream: &mut TcpStream,
    within: Duration,
) -> io::Result<Option<SocketAddr>> {
    tokio::time::timeout(within, read(stream))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no PROXY header in time"))?
}

async fn read(stream: &mut TcpStream) -> io::Result<Option<SocketAddr>> {
    let mut first = [0u8; 1];
    if stream.peek(&mut first).await? == 0 {
        return Ok(None);
    }
    match first[0] {
        b'P' => {
            let mut line = Vec::with_capacity(V1_MAX);
            while !line.ends_with(b"\r\n") {
                if line.len() == V1_MAX {
                    return Err(invalid("a version 1 line longer than 107 bytes"));
                }
                line.push(stream.read_u8().await?);
            }
            parse_v1(&line[..line.len() - 2])
        }
        b'\r' => {
            let mut head = [0u8; 16];
            stream.read_exact(&mut head).await?;
            if head[..12] != V2_SIGNATURE {
                return Err(invalid("neither STOMP nor a version 2 signature"));
            }
            let len = usize::from(u16::from_be_bytes([head[14], head[15]]));
            if len > V2_MAX {
                return Err(invalid("a version 2 address block over 1 KiB"));
            }
            let mut block = vec![0u8; len];
            stream.read_exact(&mut block).await?;
            parse_v2(head[12], head[13], &block)
        }
        _ => Ok(None),
    }
}

/// `PROXY TCP4 src dst sport dport`, `PROXY TCP6 …` or `PROXY UNKNOWN …`.
fn parse_v1(line: &[u8]) -> io::Result<Option<SocketAddr>> {
    let line = std::str::from_utf8(line).map_err(|_| invalid("not ASCII"))?;
    let mut parts = line.split(' ');
    if parts.next() != Some("PROXY") {
        return Err(invalid("a line that does not start with PROXY"));
    }
    match parts.next() {
        Some("UNKNOWN") => Ok(None),
        Some(family @ ("TCP4" | "TCP6")) => {
            let fields: Vec<&str> = parts.collect();
            let [src, _dst, sport, _dport] = fields[..] else {
                return Err(invalid("expected source, destination and two ports"));
            };
            let ip: IpAddr = src.parse().map_err(|_| invalid("a bad source address"))?;
            if ip.is_ipv4() != (family == "TCP4") {
                return Err(invalid("an address of the other family"));
            }
            let port: u16 = sport.parse().map_err(|_| invalid("a bad source port"))?;
            Ok(Some(SocketAddr::new(ip, port)))
        }
        _ => Err(invalid(
            "an unknown protocol (expected TCP4, TCP6 or UNKNOWN)",
        )),
    }
}

/// The version 2 binary form: version and command, family, addresses.
fn parse_v2(version_command: u8, family: u8, block: &[u8]) -> io::Result<Option<SocketAddr>> {
    if version_command >> 4 != 2 {
        return Err(invalid("version 2 signature with another version"));
    }
    match version_command & 0x0f {
        // LOCAL: the proxy speaking for itself.
        0 => return Ok(None),
        1 => {}
        _ => return Err(invalid("an unknown version 2 command")),
    }
    let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 if block.len() >= 12 => {
            let ip = Ipv4Addr::new(block[0], block[1], block[2], block[3]);
            Ok(Some(SocketAddr::new(ip.into(), port(8))))
        }
        0x21 if block.len() >= 36 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&block[..16]);
            Ok(Some(SocketAddr::new(
                Ipv6Addr::from(octets).into(),
                port(32),
            )))
        }
        0x11 | 0x21 => Err(invalid("an address block too short for its family")),
        // UDP, Unix sockets, unspecified: no client address to take.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_lines() {
        assert_eq!(
            parse_v1(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 61613").expect("ok"),
            Some("203.0.113.7:51234".parse().expect("addr"))
        );
        assert_eq!(
            parse_v1(b"PROXY TCP6 2001:db8::1 2001:db8::2 4000 61613").expect("ok"),
            Some("[2001:db8::1]:4000".parse().expect("addr"))
        );
        assert_eq!(parse_v1(b"PROXY UNKNOWN").expect("ok"), None);
        for bad in [
            &b"PROXY TCP4 nonsense 192.0.2.1 1 2"[..],
            b"PROXY TCP4 2001:db8::1 192.0.2.1 1 2",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2",
            b"PROXY TCP4 1.2.3.4",
        ] {
            assert!(parse_v1(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn version_2_blocks() {
        let mut v4 = vec![203, 0, 113, 7, 192, 0, 2, 1];
        v4.extend_from_slice(&51234u16.to_be_bytes());
        v4.extend_from_slice(&61613u16.to_be_bytes());
        assert_eq!(
            parse_v2(0x21, 0x11, &v4).expect("ok"),
            Some("203.0.113.7:51234".parse().expect("addr"))
        );
        assert_eq!(parse_v2(0x20, 0x00, &[]).expect("local"), None);
        assert!(parse_v2(0x21, 0x11, &v4[..6]).is_err());
        assert!(parse_v2(0x11, 0x11, &v4).is_err());
    }

    #[tokio::test]
    async fn a_header_is_read_and_what_follows_is_left() {
        use tokio::io::AsyncWriteExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let client = tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(b"PROXY TCP4 198.51.100.9 127.0.0.1 40000 61613\r\nCONNECT\n\n\0")
                .await
                .expect("write");
            s
        });
        let (mut stream, _) = listener.accept().await.expect("accept");
        let _client = client.await.expect("client");
        let got = read_header(&mut stream, Duration::from_secs(5))
            .await
            .expect("read");
        assert_eq!(got, Some("198.51.100.9:40000".parse().expect("addr")));
        let mut rest = [0u8; 10];
        stream.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"CONNECT\n\n\0");
    }
}
