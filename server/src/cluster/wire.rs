//! How a message travels through Redis: its headers and body as a STOMP
//! 1.2 SEND frame (the codec the broker already trusts both ways), and
//! on the pub/sub channel, the stream epoch and position Redis gave it
//! in front of that frame.

use bytes::{Bytes, BytesMut};
use stomp_codec::{ByteString, Command, Decoded, FrameDecoder, Headers, Limits, Version};

/// A message as Redis handed it back.
#[derive(Debug)]
pub struct Published {
    /// The topic's cluster-wide stream epoch.
    pub epoch: ByteString,
    /// Its position in the topic's stream; 0 for an ephemeral message.
    pub position: u64,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
}

/// What a payload from Redis could not be read as.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// Not the `epoch\nposition\nframe` shape.
    #[error("malformed cluster payload: {0}")]
    Shape(&'static str),
    /// The frame inside did not decode.
    #[error("malformed frame in a cluster payload: {0}")]
    Frame(String),
}

/// The frame a message is kept and published as.
pub fn encode(headers: &Headers, body: &[u8]) -> Bytes {
    let mut buf = BytesMut::with_capacity(64 + body.len());
    // The broker only relays headers it accepted from a client, which
    // the 1.2 encoder can always write; an error leaves the buffer as
    // it was, and an empty frame is then refused at the other end.
    let _ = stomp_codec::encode_frame(Command::Send, headers.iter(), body, Version::V1_2, &mut buf);
    buf.freeze()
}

/// Reads back a frame written by [`encode`].
pub fn decode(frame: &[u8]) -> Result<(Headers, Bytes), WireError> {
    let mut decoder = FrameDecoder::with_limits(Limits {
        max_frame_size: usize::MAX / 2,
        max_body_size: usize::MAX / 2,
        max_headers: 4096,
        max_line_length: usize::MAX / 2,
    });
    decoder.set_version(Version::V1_2);
    let mut buf = BytesMut::from(frame);
    match decoder.decode(&mut buf) {
        Ok(Some(Decoded::Frame(f))) => {
            let mut headers = f.headers;
            headers.remove("content-length");
            Ok((headers, f.body))
        }
        Ok(_) => Err(WireError::Shape("incomplete frame")),
        Err(e) => Err(WireError::Frame(e.to_string())),
    }
}

/// Reads a pub/sub payload: `epoch`, newline, `position`, newline, frame.
pub fn decode_published(payload: &[u8]) -> Result<Published, WireError> {
    let mut parts = payload.splitn(3, |b| *b == b'\n');
    let epoch = parts.next().ok_or(WireError::Shape("no epoch"))?;
    let position = parts.next().ok_or(WireError::Shape("no position"))?;
    let frame = parts.next().ok_or(WireError::Shape("no frame"))?;
    let epoch = std::str::from_utf8(epoch).map_err(|_| WireError::Shape("epoch not UTF-8"))?;
    let position = std::str::from_utf8(position)
        .ok()
        .and_then(|p| p.parse().ok())
        .ok_or(WireError::Shape("position not a number"))?;
    let (headers, body) = decode(frame)?;
    Ok(Published {
        epoch: ByteString::from(epoch),
        position,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_survives_the_trip() {
        let mut headers = Headers::new();
        headers.push("x-sender", "ann");
        headers.push("odd", "a:b\nc");
        let frame = encode(&headers, b"hi\0there");
        let mut payload = b"e1.7\n42\n".to_vec();
        payload.extend_from_slice(&frame);
        let p = decode_published(&payload).expect("decodes");
        assert_eq!(&*p.epoch, "e1.7");
        assert_eq!(p.position, 42);
        assert_eq!(p.headers.get("odd"), Some("a:b\nc"));
        assert_eq!(p.headers.get("content-length"), None);
        assert_eq!(&p.body[..], b"hi\0there");
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_published(b"").is_err());
        assert!(decode_published(b"e\nx\nSEND\n\n\0").is_err());
        assert!(decode_published(b"e\n1\nnot a frame").is_err());
    }
}
