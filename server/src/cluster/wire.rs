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

/// A queue message packed for a [`Bundle`]: the header count, each
/// header's name and value each after its length (4 bytes, big-endian),
/// then the body. Unlike a frame it needs no escaping one way and no
/// parsing the other: the receiving node slices headers out of it.
pub fn pack(headers: &Headers, body: &[u8]) -> Bytes {
    let size: usize = headers.iter().map(|(n, v)| 8 + n.len() + v.len()).sum();
    let mut buf = BytesMut::with_capacity(4 + size + body.len());
    buf.extend_from_slice(&len32(headers.len()).to_be_bytes());
    for (name, value) in headers.iter() {
        for text in [name, value] {
            buf.extend_from_slice(&len32(text.len()).to_be_bytes());
            buf.extend_from_slice(text.as_bytes());
        }
    }
    buf.extend_from_slice(body);
    buf.freeze()
}

/// A length as 4 bytes: what the broker relays is bounded by its frame
/// limit, far below 4 GiB.
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Reads back a message written by [`pack`]; headers and body are slices
/// of `packed`, not copies.
pub fn unpack(packed: &Bytes) -> Result<(Headers, Bytes), WireError> {
    let mut at = 0;
    let mut take = |n: usize| -> Result<Bytes, WireError> {
        let end = at + n;
        if end > packed.len() {
            return Err(WireError::Shape("truncated message"));
        }
        let out = packed.slice(at..end);
        at = end;
        Ok(out)
    };
    let count = u32_at(&take(4)?) as usize;
    let mut headers = Headers::with_capacity(count.min(64));
    for _ in 0..count {
        let name = take(4).map(|n| u32_at(&n) as usize).and_then(&mut take)?;
        let value = take(4).map(|n| u32_at(&n) as usize).and_then(&mut take)?;
        let text =
            |b: Bytes| ByteString::try_from(b).map_err(|_| WireError::Shape("a header not UTF-8"));
        headers.push(text(name)?, text(value)?);
    }
    Ok((headers, packed.slice(at..)))
}

fn u32_at(b: &[u8]) -> u32 {
    let mut n = [0u8; 4];
    n.copy_from_slice(&b[..4]);
    u32::from_be_bytes(n)
}

/// Several queue messages as one stream entry: for each, its packed
/// length (4 bytes, big-endian), its acceptance time in ms (8 bytes),
/// then the message as [`pack`] wrote it. One entry for a run of SENDs
/// lets Redis add, hand out and acknowledge them once.
#[derive(Debug, Default)]
pub struct Bundle {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Bundle {
    /// An empty bundle with room for `bytes` of packed messages.
    pub fn with_capacity(count: usize, bytes: usize) -> Bundle {
        Bundle {
            bytes: Vec::with_capacity(bytes + 12 * count),
            ends: Vec::with_capacity(count),
        }
    }

    /// Adds a message written by [`pack`], accepted at `at_ms`.
    pub fn push(&mut self, at_ms: u64, packed: &[u8]) {
        let len = len32(packed.len());
        self.bytes.extend_from_slice(&len.to_be_bytes());
        self.bytes.extend_from_slice(&at_ms.to_be_bytes());
        self.bytes
            .extend_from_slice(&packed[..packed.len().min(len as usize)]);
        self.ends.push(self.bytes.len());
    }

    /// How many messages it holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The entry's value.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where each message ends in [`bytes`](Self::bytes): a prefix up to
    /// one of them is a bundle of the first messages.
    pub fn ends(&self) -> &[usize] {
        &self.ends
    }
}

/// Reads a [`Bundle`] back: each message's acceptance time and packed
/// form (slices of `bytes`, not copies).
pub fn unbundle(bytes: &Bytes) -> Result<Vec<(u64, Bytes)>, WireError> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        let head = bytes
            .get(at..at + 12)
            .ok_or(WireError::Shape("truncated bundle header"))?;
        let mut len = [0u8; 4];
        len.copy_from_slice(&head[..4]);
        let mut time = [0u8; 8];
        time.copy_from_slice(&head[4..]);
        let start = at + 12;
        let end = start
            .checked_add(u32::from_be_bytes(len) as usize)
            .filter(|end| *end <= bytes.len())
            .ok_or(WireError::Shape("truncated bundle frame"))?;
        out.push((u64::from_be_bytes(time), bytes.slice(start..end)));
        at = end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_reads_back_as_its_messages_and_any_prefix_at_an_end_too() {
        let mut bundle = Bundle::default();
        let frames: Vec<Bytes> = (0..3)
            .map(|i| {
                let mut headers = Headers::new();
                headers.push("n", i.to_string());
                pack(&headers, format!("body {i}").as_bytes())
            })
            .collect();
        for (i, f) in frames.iter().enumerate() {
            bundle.push(1000 + i as u64, f);
        }
        assert_eq!(bundle.len(), 3);
        let all = Bytes::copy_from_slice(bundle.bytes());
        let read = unbundle(&all).expect("reads");
        assert_eq!(read.len(), 3);
        for (i, (at, frame)) in read.iter().enumerate() {
            assert_eq!(*at, 1000 + i as u64);
            assert_eq!(frame, &frames[i]);
            let (headers, body) = unpack(frame).expect("unpacks");
            assert_eq!(headers.get("n"), Some(i.to_string().as_str()));
            assert_eq!(&body[..], format!("body {i}").as_bytes());
        }
        let two = all.slice(..bundle.ends()[1]);
        assert_eq!(unbundle(&two).expect("reads").len(), 2);
        assert!(unbundle(&Bytes::new()).expect("reads").is_empty());
    }

    #[test]
    fn a_packed_message_unpacks_as_it_was_and_a_cut_one_is_an_error() {
        let mut headers = Headers::new();
        headers.push("destination", "/queue/a");
        headers.push("odd", "a:b\nc\\d");
        headers.push("empty", "");
        headers.push("x", "1");
        headers.push("x", "2");
        let packed = pack(&headers, b"hi\0there");
        let (back, body) = unpack(&packed).expect("unpacks");
        assert_eq!(back, headers);
        assert_eq!(&body[..], b"hi\0there");
        let (none, empty) = unpack(&pack(&Headers::new(), b"")).expect("unpacks");
        assert!(none.is_empty() && empty.is_empty());
        for cut in 0..packed.len() - b"hi\0there".len() {
            assert!(unpack(&packed.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut bad = packed.to_vec();
        bad[4..8].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(unpack(&Bytes::from(bad)).is_err());
    }

    #[test]
    fn a_cut_bundle_is_an_error_not_a_panic() {
        let mut bundle = Bundle::default();
        bundle.push(1, b"SEND\n\n\0");
        let bytes = Bytes::copy_from_slice(bundle.bytes());
        for cut in 1..bytes.len() {
            assert!(unbundle(&bytes.slice(..cut)).is_err(), "cut at {cut}");
        }
        let mut huge = bytes.to_vec();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(unbundle(&Bytes::from(huge)).is_err());
    }

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
