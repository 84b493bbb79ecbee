//! Typed errors. Needing more input is not an error: the decoder returns `Ok(None)`.

use thiserror::Error;

/// Why a byte stream is not a valid STOMP frame.
///
/// Every variant says what was wrong in words a person can read, so a server
/// can put [`DecodeError`]'s `Display` straight into an ERROR frame. After an
/// error the stream cannot be resynchronised; close the connection.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{DecodeError, FrameDecoder};
/// let mut buf = BytesMut::from(&b"send\n\n\0"[..]);
/// let err = FrameDecoder::new().decode(&mut buf).unwrap_err();
/// assert!(matches!(err, DecodeError::UnknownCommand { .. }));
/// assert_eq!(err.to_string(), "unknown command \"send\" (commands are upper-case, e.g. SEND)");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// The frame (command, headers, body and NUL) is larger than allowed.
    #[error("frame too large: {size} bytes is over the limit of {limit} bytes by {}", size - limit)]
    FrameTooLarge {
        /// The configured limit.
        limit: usize,
        /// The frame's size, or as much of it as had arrived.
        size: usize,
    },
    /// The body is larger than allowed.
    #[error("body too large: {size} bytes is over the limit of {limit} bytes by {}", size - limit)]
    BodyTooLarge {
        /// The configured limit.
        limit: usize,
        /// The body's declared size, or as much of it as had arrived.
        size: usize,
    },
    /// More header lines than allowed.
    #[error("too many headers: more than the limit of {limit}")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// A command or header line is longer than allowed.
    #[error("line too long: {size} bytes is over the limit of {limit} bytes by {}", size - limit)]
    LineTooLong {
        /// The configured limit.
        limit: usize,
        /// The line's length, or as much of it as had arrived.
        size: usize,
    },
    /// The command line is not one of the STOMP commands.
    #[error("{}", unknown_command(command))]
    UnknownCommand {
        /// The command line as received (lossily decoded, shortened).
        command: String,
    },
    /// A header line without a colon, or with an empty name.
    #[error("malformed header {line:?}: {reason}")]
    MalformedHeader {
        /// The header line as received (lossily decoded, shortened).
        line: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A NUL byte in a header line. NUL ends a frame, so it may appear only
    /// in a body (with `content-length`).
    #[error(
        "header line {line:?} contains a NUL byte, which ends a frame (NUL may appear only in a body sent with content-length)"
    )]
    NulInHeader {
        /// The header line as received (lossily decoded, shortened).
        line: String,
    },
    /// A backslash followed by a letter the negotiated version does not define.
    #[error("undefined escape sequence {sequence:?} in header {line:?}")]
    InvalidEscape {
        /// The two-byte escape sequence (or a lone backslash at the end).
        sequence: String,
        /// The header line it appeared in.
        line: String,
    },
    /// The command or a header is not valid UTF-8.
    #[error("header line {line:?} is not valid UTF-8")]
    InvalidUtf8 {
        /// The line, lossily decoded.
        line: String,
    },
    /// `content-length` is not a non-negative decimal integer.
    #[error("invalid content-length {value:?}: expected a decimal number of bytes")]
    BadContentLength {
        /// The header value as received.
        value: String,
    },
    /// The byte after `content-length` bytes of body is not NUL.
    #[error(
        "missing NUL after a body of {content_length} bytes (content-length is wrong or the frame is truncated)"
    )]
    MissingNul {
        /// The declared body length.
        content_length: usize,
    },
}

/// Why a frame cannot be written for the chosen version.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{Command, EncodeError, Frame, Version};
/// let frame = Frame::new(Command::Send).header("x", "two\nlines");
/// let err = frame.encode(Version::V1_0, &mut BytesMut::new()).unwrap_err();
/// assert!(matches!(err, EncodeError::Unencodable { .. }));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    /// A header holds a byte the version cannot escape (e.g. a newline in STOMP 1.0).
    #[error(
        "header {name:?} cannot be written in STOMP {version}: it contains {byte:?}, which this version cannot escape"
    )]
    Unencodable {
        /// The header's name.
        name: String,
        /// The version in use.
        version: crate::Version,
        /// The offending character.
        byte: char,
    },
    /// A header with an empty name.
    #[error("a header name must not be empty")]
    EmptyHeaderName,
    /// A header holds a NUL byte, which ends a frame in every version:
    /// written as it is, it would let the rest of the header be read as
    /// a frame of its own.
    #[error("header {name:?} contains a NUL byte, which no STOMP version can carry in a header")]
    NulInHeader {
        /// The header's name (shortened).
        name: String,
    },
}

/// Cuts text quoted in an error so a hostile 1 MiB line does not end up in a log line.
pub(crate) fn quote(bytes: &[u8]) -> String {
    const MAX: usize = 80;
    let cut = &bytes[..bytes.len().min(MAX)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if bytes.len() > MAX {
        s.push('…');
    }
    s
}

/// What is wrong with a command line, in words a person at a terminal can
/// act on: a control character typed by mistake is named, with where it is.
fn unknown_command(command: &str) -> String {
    if let Some((at, c)) = command.chars().enumerate().find(|(_, c)| c.is_control()) {
        let name = match c {
            '\u{c}' => "Ctrl+L (form feed)".to_string(),
            '\u{8}' => "Ctrl+H (backspace)".to_string(),
            '\t' => "a tab".to_string(),
            '\u{1b}' => "Esc".to_string(),
            '\u{7f}' => "Delete".to_string(),
            c if (c as u32) < 0x20 => {
                format!("Ctrl+{} (U+{:04X})", char::from(b'@' + c as u8), c as u32)
            }
            c => format!("U+{:04X}", c as u32),
        };
        let rest: String = command.chars().filter(|c| !c.is_control()).collect();
        return format!(
            "unknown command - the control character {name} at position {} of {rest:?} (type the command alone on its line, e.g. SEND)",
            at + 1
        );
    }
    if command.chars().any(|c| c.is_ascii_lowercase()) {
        return format!(
            "unknown command {command:?} (commands are upper-case, e.g. {})",
            command.to_ascii_uppercase()
        );
    }
    format!(
        "unknown command {command:?} (the commands are CONNECT, STOMP, SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT and DISCONNECT)"
    )
}
