//! Decode and encode speed for three frame shapes (and the second as a
//! fan-out writes it, from a shared header block), and a memcpy of the
//! largest as the floor that zero-copy decoding should approach; an ACK
//! and a SEND through the decoder a broker configures.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use stomp_codec::{
    Command, Decoded, Frame, FrameDecoder, Version, encode_frame_with_block, encode_header_block,
};

fn cases() -> Vec<(&'static str, Frame)> {
    let send = Frame::new(Command::Send)
        .header("destination", "/queue/bench")
        .header("content-type", "text/plain")
        .header("receipt", "r-42")
        .body(vec![b'x'; 128]);
    let mut message = Frame::new(Command::Message)
        .header("destination", "/topic/chat.general")
        .header("message-id", "T_1234-567890")
        .header("subscription", "sub-0")
        .header("ack", "A-99887766")
        .header("content-type", "application/json");
    for i in 0..3 {
        message = message.header(format!("x-user-{i}"), "some value with: colon");
    }
    let message = message.body(vec![b'm'; 1024]);
    let binary: Vec<u8> = (0..64 * 1024).map(|i| (i * 7 % 256) as u8).collect();
    let large = Frame::new(Command::Send)
        .header("destination", "/queue/blobs")
        .body(binary);
    vec![
        ("a_send_3h_128b", send),
        ("b_message_8h_1k", message),
        ("c_binary_64k", large),
    ]
}

fn wire(frame: &Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    frame
        .encode(Version::V1_2, &mut buf)
        .expect("bench frames are valid");
    buf
}

/// Decodes `frames` with decoders `make_decoder` gives, one benchmark each.
fn bench_decoding(
    c: &mut Criterion,
    frames: Vec<(&'static str, Frame)>,
    make_decoder: impl Fn() -> FrameDecoder,
) {
    let mut group = c.benchmark_group("decode");
    for (name, frame) in frames {
        let bytes = wire(&frame);
        group.throughput(Throughput::Bytes(bytes.len() as u64));
        let mut decoder = make_decoder();
        // The buffer is refilled from a template, as a socket read would, so
        // each iteration decodes from a fresh buffer of the same shape.
        let mut buf = BytesMut::with_capacity(bytes.len());
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                buf.extend_from_slice(&bytes);
                match decoder.decode(&mut buf) {
                    Ok(Some(Decoded::Frame(f))) => black_box(f),
                    other => panic!("bench frame did not decode: {other:?}"),
                }
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    bench_decoding(c, cases(), FrameDecoder::new);
}

/// An ACK and a SEND through the decoder a broker uses (frames up to 64
/// KiB copied out of the read buffer, so a queued message does not pin
/// it): the ACK is read in place, a consumer sends one per message.
fn decode_as_broker(c: &mut Criterion) {
    let ack = Frame::new(Command::Ack).header("id", "1234567");
    let send = cases().swap_remove(0).1;
    bench_decoding(
        c,
        vec![("e_ack_broker", ack), ("f_send_3h_128b_broker", send)],
        || FrameDecoder::new().copy_frames_up_to(64 * 1024),
    );
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    for (name, frame) in cases() {
        group.throughput(Throughput::Bytes(wire(&frame).len() as u64));
        let mut buf = BytesMut::with_capacity(128 * 1024);
        group.bench_function(name, |b| {
            b.iter(|| {
                buf.clear();
                frame
                    .encode(Version::V1_2, &mut buf)
                    .expect("bench frames are valid");
                black_box(&buf);
            })
        });
    }
    group.finish();
}

/// Case (b) as a broker writes it to each subscriber of a fan-out: the
/// message's own headers escaped once into a block, then per receiver only
/// its `subscription` and `ack` and a copy of the block and body.
fn encode_shared(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let frame = &cases()[1].1;
    let own = |(n, _): &(&str, &str)| *n == "subscription" || *n == "ack";
    let all: Vec<(&str, &str)> = frame.headers.iter().collect();
    let shared: Vec<(&str, &str)> = all.iter().copied().filter(|h| !own(h)).collect();
    let mine: Vec<(&str, &str)> = all.iter().copied().filter(own).collect();
    let mut block = BytesMut::new();
    encode_header_block(
        Command::Message,
        shared.iter().copied(),
        frame.body.len(),
        Version::V1_2,
        &mut block,
    )
    .expect("bench frames are valid");
    group.throughput(Throughput::Bytes(wire(frame).len() as u64));
    let mut buf = BytesMut::with_capacity(128 * 1024);
    group.bench_function("d_message_8h_1k_shared_block", |b| {
        b.iter(|| {
            buf.clear();
            encode_frame_with_block(
                Command::Message,
                mine.iter().copied(),
                &block,
                &frame.body,
                Version::V1_2,
                &mut buf,
            )
            .expect("bench frames are valid");
            black_box(&buf);
        })
    });
    group.finish();
}

/// The floor for case (c): copying the same bytes into a reused buffer.
fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    let bytes = wire(&cases()[2].1);
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    let mut buf = BytesMut::with_capacity(bytes.len());
    group.bench_function("c_binary_64k", |b| {
        b.iter(|| {
            buf.clear();
            buf.extend_from_slice(black_box(&bytes));
            black_box(&buf);
        })
    });
    group.finish();
}

criterion_group!(
    benches,
    decode,
    decode_as_broker,
    encode,
    encode_shared,
    memcpy
);
criterion_main!(benches);
