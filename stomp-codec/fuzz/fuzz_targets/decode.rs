//! Feeds arbitrary bytes, cut into arbitrary reads, to the decoder under
//! every version and small limits. Checks: no panic; what decodes whole
//! decodes the same when cut; every decoded frame re-encodes and decodes
//! back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stomp_codec::{Decoded, FrameDecoder, Limits, Version};

const SMALL: Limits = Limits {
    max_frame_size: 4096,
    max_body_size: 2048,
    max_headers: 16,
    max_line_length: 256,
};

fn decoder(version: Version, limits: Limits) -> FrameDecoder {
    let mut d = FrameDecoder::with_limits(limits);
    d.set_version(version);
    d
}

/// Decodes chunk by chunk; stops at the first error.
fn run(version: Version, limits: Limits, chunks: &[&[u8]]) -> (Vec<Decoded>, bool) {
    let mut d = decoder(version, limits);
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        loop {
            match d.decode(&mut buf) {
                Ok(Some(item)) => out.push(item),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, input)) = data.split_first() else { return };
    let version = Version::ALL[usize::from(control % 3)];
    let (whole, failed) = run(version, SMALL, &[input]);

    let step = usize::from(control / 3 % 16) + 1;
    let chunks: Vec<&[u8]> = input.chunks(step).collect();
    let (cut, cut_failed) = run(version, SMALL, &chunks);
    assert_eq!(failed, cut_failed, "cutting the input changed whether it fails");
    assert_eq!(whole, cut, "cutting the input changed what it decodes to");

    for item in whole {
        let Decoded::Frame(frame) = item else { continue };
        let mut wire = BytesMut::new();
        if frame.encode(version, &mut wire).is_err() {
            continue;
        }
        // Re-encoding may escape what arrived raw and grow past SMALL.
        let (again, _) = run(version, Limits::default(), &[&wire]);
        let Some(Decoded::Frame(mut back)) = again.into_iter().next() else {
            panic!("a re-encoded frame did not decode");
        };
        let mut original = frame;
        original.headers.remove("content-length");
        back.headers.remove("content-length");
        assert_eq!(back, original);
    }
});
