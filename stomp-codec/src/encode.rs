//! Writing frames: escaping per version, content-length, the NUL.

use bytes::BytesMut;

use crate::command::{Command, Version};
use crate::error::EncodeError;
use crate::frame::Frame;
use crate::headers::Escaping;

impl Frame {
    /// Appends this frame's wire form to `dst`, escaped for `version`.
    ///
    /// Adds `content-length` whenever the body is not empty, so that binary
    /// bodies containing NUL survive; any `content-length` header already in
    /// the frame is replaced by the true length rather than trusted. The body
    /// is copied once, into `dst`. On error nothing is written.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use stomp_codec::{Command, Frame, Version};
    /// let mut out = BytesMut::new();
    /// Frame::new(Command::Send)
    ///     .header("destination", "/queue/a")
    ///     .header("note", "a:b")
    ///     .body("hi")
    ///     .encode(Version::V1_2, &mut out)
    ///     .unwrap();
    /// assert_eq!(&out[..], b"SEND\ndestination:/queue/a\nnote:a\\cb\ncontent-length:2\n\nhi\0");
    /// ```
    pub fn encode(&self, version: Version, dst: &mut BytesMut) -> Result<(), EncodeError> {
        encode_frame(self.command, self.headers.iter(), &self.body, version, dst)
    }
}

/// Appends a frame given as parts, without building a [`Frame`]: what a
/// broker uses to write one MESSAGE per subscriber from shared parts, with
/// no allocation per subscriber. Same rules as [`Frame::encode`]; the
/// headers are walked twice (check, then write), hence `Clone`.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{Command, Version, encode_frame};
/// let mut out = BytesMut::new();
/// let headers = [("subscription", "0"), ("message-id", "m-1"), ("destination", "/topic/a")];
/// encode_frame(Command::Message, headers, b"hi", Version::V1_2, &mut out).unwrap();
/// assert_eq!(
///     &out[..],
///     b"MESSAGE\nsubscription:0\nmessage-id:m-1\ndestination:/topic/a\ncontent-length:2\n\nhi\0"
/// );
/// ```
pub fn encode_frame<'a, H>(
    command: Command,
    headers: H,
    body: &[u8],
    version: Version,
    dst: &mut BytesMut,
) -> Result<(), EncodeError>
where
    H: IntoIterator<Item = (&'a str, &'a str)>,
    H::IntoIter: Clone,
{
    let headers = headers.into_iter();
    let escaping = Escaping::for_frame(version, command);
    let mut headers_len = 0;
    for (name, value) in headers.clone() {
        if name.is_empty() {
            return Err(EncodeError::EmptyHeaderName);
        }
        check_encodable(name, true, escaping, version)?;
        check_encodable(value, false, escaping, version)?;
        headers_len += name.len() + value.len() + 2;
    }
    // 32 covers the command's EOL, "content-length:" + 20 digits + EOL, the blank line and NUL.
    dst.reserve(command.as_str().len() + headers_len + 32 + body.len());
    dst.extend_from_slice(command.as_str().as_bytes());
    dst.extend_from_slice(b"\n");
    for (name, value) in headers {
        if name == "content-length" {
            continue;
        }
        write_escaped(dst, name.as_bytes(), escaping);
        dst.extend_from_slice(b":");
        write_escaped(dst, value.as_bytes(), escaping);
        dst.extend_from_slice(b"\n");
    }
    if !body.is_empty() {
        dst.extend_from_slice(b"content-length:");
        dst.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        dst.extend_from_slice(b"\n");
    }
    dst.extend_from_slice(b"\n");
    dst.extend_from_slice(body);
    dst.extend_from_slice(b"\0");
    Ok(())
}

/// Whether a header can be written in a frame of `command` for `version`
/// exactly as it is: what a broker asks before relaying a header from a
/// sender of one version to a receiver of another.
///
/// ```
/// use stomp_codec::{Command, Version, header_encodable};
/// assert!(header_encodable(Command::Message, Version::V1_2, "note", "two\nlines"));
/// assert!(!header_encodable(Command::Message, Version::V1_0, "note", "two\nlines"));
/// assert!(!header_encodable(Command::Message, Version::V1_1, "note", "a\rb"));
/// assert!(!header_encodable(Command::Message, Version::V1_2, "note", "a\0b"));
/// ```
pub fn header_encodable(command: Command, version: Version, name: &str, value: &str) -> bool {
    let escaping = Escaping::for_frame(version, command);
    !name.is_empty()
        && check_encodable(name, true, escaping, version).is_ok()
        && check_encodable(value, false, escaping, version).is_ok()
}

/// Refuses bytes that would change the frame's structure and that the
/// scheme cannot escape: NUL in every version (it ends the frame), LF and
/// CR (CR is only escapable in 1.2), and a colon in a name (a colon in a
/// value is read back correctly because lines split at the first colon).
#[inline]
fn check_encodable(
    text: &str,
    is_name: bool,
    escaping: Escaping,
    version: Version,
) -> Result<(), EncodeError> {
    // The bytes that can be written neither raw nor escaped. Plain loops:
    // headers are short, and this runs for every header of every frame.
    let bytes = text.as_bytes();
    let at = match (escaping, is_name) {
        (Escaping::V1_2, _) => bytes.iter().position(|&b| b == 0),
        (Escaping::V1_1, _) => bytes.iter().position(|&b| b == 0 || b == b'\r'),
        (Escaping::None, false) => bytes.iter().position(|&b| matches!(b, 0 | b'\r' | b'\n')),
        (Escaping::None, true) => bytes
            .iter()
            .position(|&b| matches!(b, 0 | b'\r' | b'\n' | b':')),
    };
    let bad = at.map(|i| bytes[i]);
    match bad {
        None => Ok(()),
        Some(0) => Err(EncodeError::NulInHeader {
            name: text.chars().take(80).collect(),
        }),
        Some(b) => Err(EncodeError::Unencodable {
            name: text.chars().take(80).collect(),
            version,
            byte: b as char,
        }),
    }
}

fn write_escaped(dst: &mut BytesMut, text: &[u8], escaping: Escaping) {
    if escaping == Escaping::None
        || !text
            .iter()
            .any(|&b| matches!(b, b'\n' | b'\r' | b':' | b'\\'))
    {
        dst.extend_from_slice(text);
        return;
    }
    for &b in text {
        match escaping.escape_letter(b) {
            Some(letter) => dst.extend_from_slice(&[b'\\', letter]),
            None => dst.extend_from_slice(&[b]),
        }
    }
}
