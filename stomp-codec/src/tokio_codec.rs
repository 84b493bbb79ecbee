//! `tokio_util::codec` glue, so a connection is `Framed<TcpStream, StompCodec>`.

use bytes::BytesMut;
use thiserror::Error;

use crate::command::Version;
use crate::decode::{Decoded, FrameDecoder, Limits};
use crate::error::{DecodeError, EncodeError};
use crate::frame::Frame;

/// Decoder and encoder for one connection, sharing its negotiated version.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{Command, Decoded, Frame, StompCodec};
/// use tokio_util::codec::{Decoder, Encoder};
/// let mut codec = StompCodec::default();
/// let mut wire = BytesMut::new();
/// codec.encode(Frame::new(Command::Receipt).header("receipt-id", "1"), &mut wire).unwrap();
/// let decoded = codec.decode(&mut wire).unwrap();
/// assert!(matches!(decoded, Some(Decoded::Frame(f)) if f.headers.get("receipt-id") == Some("1")));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StompCodec {
    decoder: FrameDecoder,
}

impl StompCodec {
    /// A codec with the given decoding limits, speaking 1.2 until told otherwise.
    ///
    /// ```
    /// let codec = stomp_codec::StompCodec::with_limits(stomp_codec::Limits::default());
    /// assert_eq!(codec.version(), stomp_codec::Version::V1_2);
    /// ```
    pub fn with_limits(limits: Limits) -> StompCodec {
        StompCodec {
            decoder: FrameDecoder::with_limits(limits),
        }
    }

    /// A codec around a decoder set up by the caller.
    ///
    /// ```
    /// use stomp_codec::{FrameDecoder, StompCodec};
    /// let codec = StompCodec::with_decoder(FrameDecoder::new().copy_frames_up_to(1024));
    /// assert_eq!(codec.version().as_str(), "1.2");
    /// ```
    pub fn with_decoder(decoder: FrameDecoder) -> StompCodec {
        StompCodec { decoder }
    }

    /// The version used for escaping in both directions.
    ///
    /// ```
    /// assert_eq!(stomp_codec::StompCodec::default().version().as_str(), "1.2");
    /// ```
    pub fn version(&self) -> Version {
        self.decoder.version()
    }

    /// Switches both directions to `version`'s escaping.
    ///
    /// ```
    /// let mut c = stomp_codec::StompCodec::default();
    /// c.set_version(stomp_codec::Version::V1_1);
    /// assert_eq!(c.version(), stomp_codec::Version::V1_1);
    /// ```
    pub fn set_version(&mut self, version: Version) {
        self.decoder.set_version(version);
    }
}

/// Anything that can end a framed STOMP stream.
///
/// ```
/// let e: stomp_codec::CodecError = std::io::Error::other("reset").into();
/// assert!(e.to_string().contains("reset"));
/// ```
#[derive(Debug, Error)]
pub enum CodecError {
    /// The peer sent something that is not STOMP.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A frame could not be written in the session's version.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
}

impl tokio_util::codec::Decoder for StompCodec {
    type Item = Decoded;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Decoded>, CodecError> {
        Ok(self.decoder.decode(src)?)
    }
}

impl tokio_util::codec::Encoder<Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(frame.encode(self.decoder.version(), dst)?)
    }
}

impl tokio_util::codec::Encoder<&Frame> for StompCodec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        Ok(frame.encode(self.decoder.version(), dst)?)
    }
}
