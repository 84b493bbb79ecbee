//! Property tests: encode-then-decode is the identity, and the way a byte
//! stream is cut into reads never changes what is decoded.

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use stomp_codec::{Command, Decoded, Frame, FrameDecoder, Headers, Version};

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(Command::ALL.to_vec())
}

/// Text rich in the characters escaping exists for.
fn text(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            4 => prop::char::range('a', 'z'),
            1 => Just(':'),
            1 => Just('\\'),
            1 => Just('\n'),
            1 => Just('\r'),
            1 => Just(' '),
            1 => Just('é'),
            1 => Just('\u{0}'),
        ],
        min..12,
    )
    .prop_map(|chars| chars.into_iter().collect())
}

/// Replaces what `version` cannot carry for `command`, so that every generated
/// frame is encodable (what is not encodable is covered by the unit tests).
fn carryable(s: &str, is_name: bool, version: Version, command: Command) -> String {
    let raw = version == Version::V1_0 || command.is_unescaped();
    s.chars()
        .map(|c| match c {
            '\u{0}' => '0',
            '\n' if raw => 'n',
            '\r' if raw || version == Version::V1_1 => 'r',
            ':' if raw && is_name => 'c',
            other => other,
        })
        .collect()
}

fn frame_for(version: Version) -> impl Strategy<Value = Frame> {
    (
        command(),
        prop::collection::vec((text(1), text(0)), 0..20),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(move |(command, headers, body)| {
            let headers: Headers = headers
                .into_iter()
                .map(|(n, v)| {
                    let n = carryable(&n, true, version, command);
                    let n = if n == "content-length" {
                        "x".to_string()
                    } else {
                        n
                    };
                    (n, carryable(&v, false, version, command))
                })
                .collect();
            Frame {
                command,
                headers,
                body: Bytes::from(body),
            }
        })
}

fn decode_stream(decoder: &mut FrameDecoder, chunks: &[&[u8]]) -> Vec<Decoded> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(item) = decoder.decode(&mut buf).expect("valid stream") {
            out.push(item);
        }
    }
    assert!(buf.is_empty());
    out
}

/// Headers as a hostile sender might make them: any of the bytes that
/// matter to framing, in names and values, unfiltered.
fn hostile_headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop::collection::vec((text(1), text(0)), 0..8)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Whatever headers a frame carries, what the encoder writes (when it
    /// writes anything) is one frame to a receiver of every version: its
    /// header block holds no NUL, and no decoder reads two frames or a
    /// header the sender did not write.
    #[test]
    fn no_written_frame_splits_in_two(
        headers in hostile_headers(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        command in command(),
        writer in version(),
    ) {
        let frame = Frame {
            command,
            headers: headers.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect(),
            body: Bytes::from(body),
        };
        let mut wire = BytesMut::new();
        if frame.encode(writer, &mut wire).is_err() {
            prop_assert!(wire.is_empty(), "a refused frame writes nothing");
            return Ok(());
        }
        let header_block = wire.windows(2).position(|w| w == b"\n\n").expect("a blank line");
        prop_assert!(!wire[..header_block].contains(&0), "NUL in the header block");
        // A reader that ends the frame at the first NUL unless content-length says otherwise.
        let body_start = header_block + 2;
        let first_nul = body_start + wire[body_start..].iter().position(|&b| b == 0).expect("a NUL");
        if !frame.body.contains(&0) {
            prop_assert_eq!(first_nul, wire.len() - 1, "the first NUL ends the frame");
        }
        for reader in Version::ALL {
            let mut decoder = FrameDecoder::new();
            decoder.set_version(reader);
            let mut buf = wire.clone();
            if let Ok(Some(Decoded::Frame(read))) = decoder.decode(&mut buf) {
                prop_assert!(buf.is_empty(), "{} bytes left over for a {} reader", buf.len(), reader);
                let expected = frame.headers.iter().filter(|(n, _)| *n != "content-length").count()
                    + usize::from(!frame.body.is_empty());
                prop_assert_eq!(read.headers.len(), expected);
            }
        }
    }

    #[test]
    fn encode_then_decode_is_identity((version, frame) in version().prop_flat_map(|v| (Just(v), frame_for(v)))) {
        let mut wire = BytesMut::new();
        frame.encode(version, &mut wire).expect("carryable frame");
        let mut decoder = FrameDecoder::new();
        decoder.set_version(version);
        let decoded = decode_stream(&mut decoder, &[&wire]);
        prop_assert_eq!(decoded.len(), 1);
        let Decoded::Frame(mut back) = decoded.into_iter().next().unwrap() else {
            panic!("expected a frame");
        };
        if !frame.body.is_empty() {
            let len = frame.body.len().to_string();
            prop_assert_eq!(back.headers.get("content-length"), Some(len.as_str()));
            back.headers.remove("content-length");
        }
        prop_assert_eq!(back, frame);
    }

    #[test]
    fn any_cut_of_a_stream_decodes_the_same(
        frames in prop::collection::vec(frame_for(Version::V1_2), 1..5),
        heartbeats in prop::collection::vec(prop_oneof![Just(&b""[..]), Just(&b"\n"[..]), Just(&b"\r\n"[..])], 5),
        mut cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut wire = BytesMut::new();
        for (i, frame) in frames.iter().enumerate() {
            wire.extend_from_slice(heartbeats[i % heartbeats.len()]);
            frame.encode(Version::V1_2, &mut wire).expect("carryable frame");
        }
        let whole = decode_stream(&mut FrameDecoder::new(), &[&wire]);

        let mut points: Vec<usize> = cuts.drain(..).map(|c| c.index(wire.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for p in points {
            chunks.push(&wire[start..p]);
            start = p;
        }
        chunks.push(&wire[start..]);
        let pieces = decode_stream(&mut FrameDecoder::new(), &chunks);
        prop_assert_eq!(pieces, whole);
    }

    #[test]
    fn one_byte_at_a_time_decodes_the_same(frame in frame_for(Version::V1_2)) {
        let mut wire = BytesMut::new();
        frame.encode(Version::V1_2, &mut wire).expect("carryable frame");
        wire.extend_from_slice(b"\r\n");
        let whole = decode_stream(&mut FrameDecoder::new(), &[&wire]);
        let bytes: Vec<&[u8]> = wire.chunks(1).collect();
        prop_assert_eq!(decode_stream(&mut FrameDecoder::new(), &bytes), whole);
    }

    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..512), v in version()) {
        let mut decoder = FrameDecoder::new();
        decoder.set_version(v);
        let mut buf = BytesMut::from(&input[..]);
        while let Ok(Some(_)) = decoder.decode(&mut buf) {}
    }
}
