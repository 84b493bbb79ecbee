//! A streaming, zero-copy STOMP 1.0/1.1/1.2 frame codec.
//!
//! Bytes go in through [`FrameDecoder::decode`] and come out as
//! [`Decoded::Frame`] or [`Decoded::Heartbeat`]; frames go out through
//! [`Frame::encode`]. Half a frame is not an error: the decoder returns
//! `Ok(None)` and waits for more. Header escaping follows the negotiated
//! [`Version`], and [`Limits`] bound what a peer can make the decoder hold.
//!
//! ```
//! use bytes::BytesMut;
//! use stomp_codec::{Command, Decoded, Frame, FrameDecoder, Version};
//!
//! let mut wire = BytesMut::new();
//! Frame::new(Command::Send)
//!     .header("destination", "/topic/chat.general")
//!     .body("hi all")
//!     .encode(Version::V1_2, &mut wire)
//!     .unwrap();
//!
//! let mut decoder = FrameDecoder::new();
//! match decoder.decode(&mut wire).unwrap() {
//!     Some(Decoded::Frame(frame)) => {
//!         assert_eq!(frame.headers.get("destination"), Some("/topic/chat.general"));
//!         assert_eq!(&frame.body[..], b"hi all");
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! ```
//!
//! # Layout
//! - `command`: [`Command`] and [`Version`].
//! - `headers`: [`Headers`] (ordered, first occurrence wins) and the escaping rules.
//! - `frame`: [`Frame`], the wire shape.
//! - `parse`: the nom rules of the STOMP grammar.
//! - `decode`: [`FrameDecoder`], [`Decoded`], [`Limits`].
//! - `encode`: [`Frame::encode`], and [`encode_frame`] for frames given as parts.
//! - `error`: [`DecodeError`], [`EncodeError`].
//! - `tokio_codec` (feature `tokio`): [`StompCodec`] for `tokio_util::codec::Framed`.

mod command;
mod decode;
mod encode;
mod error;
mod frame;
mod headers;
mod parse;
#[cfg(feature = "tokio")]
mod tokio_codec;

pub use bytes;
pub use bytestring::ByteString;
pub use command::{Command, Version};
pub use decode::{Decoded, FrameDecoder, Limits};
pub use encode::{encode_frame, encode_frame_with_block, encode_header_block, header_encodable};
pub use error::{DecodeError, EncodeError};
pub use frame::Frame;
pub use headers::Headers;
#[cfg(feature = "tokio")]
pub use tokio_codec::{CodecError, StompCodec};
