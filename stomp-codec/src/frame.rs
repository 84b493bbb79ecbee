//! The wire shape of a frame: command, headers, body. No protocol semantics.

use bytes::Bytes;
use bytestring::ByteString;

use crate::command::Command;
use crate::headers::Headers;

/// One STOMP frame.
///
/// The body is [`Bytes`]: a decoded body is a slice of the read buffer, and
/// a broker can hand the same body to many subscribers without copying it.
///
/// ```
/// use stomp_codec::{Command, Frame};
/// let frame = Frame::new(Command::Send)
///     .header("destination", "/queue/a")
///     .body("hello");
/// assert_eq!(frame.headers.get("destination"), Some("/queue/a"));
/// assert_eq!(&frame.body[..], b"hello");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command line.
    pub command: Command,
    /// Headers in wire order.
    pub headers: Headers,
    /// The body; empty for frames without one.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and an empty body.
    ///
    /// ```
    /// let f = stomp_codec::Frame::new(stomp_codec::Command::Disconnect);
    /// assert!(f.headers.is_empty() && f.body.is_empty());
    /// ```
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Builder: appends a header.
    ///
    /// ```
    /// use stomp_codec::{Command, Frame};
    /// let f = Frame::new(Command::Subscribe).header("id", "0");
    /// assert_eq!(f.headers.get("id"), Some("0"));
    /// ```
    pub fn header(mut self, name: impl Into<ByteString>, value: impl Into<ByteString>) -> Frame {
        self.headers.push(name, value);
        self
    }

    /// Builder: sets the body.
    ///
    /// ```
    /// use stomp_codec::{Command, Frame};
    /// let f = Frame::new(Command::Send).body(vec![0u8, 1, 2]);
    /// assert_eq!(f.body.len(), 3);
    /// ```
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }
}
