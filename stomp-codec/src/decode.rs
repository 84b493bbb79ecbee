//! The streaming decoder: bytes in a `BytesMut` to frames and heart-beats.

use bytes::{Buf, Bytes, BytesMut};
use bytestring::ByteString;

use crate::command::{Command, Version};
use crate::error::{DecodeError, quote};
use crate::frame::Frame;
use crate::headers::{Escaping, Headers};
use crate::parse;

/// Hard limits on what the decoder accepts.
///
/// They bound memory per connection: once a frame in progress is over a
/// limit the decoder returns an error instead of waiting for more bytes.
///
/// ```
/// use stomp_codec::Limits;
/// let limits = Limits { max_body_size: 64 * 1024, ..Limits::default() };
/// assert_eq!(limits.max_headers, 128);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Whole frame: command, headers, body and the NUL.
    pub max_frame_size: usize,
    /// The body alone.
    pub max_body_size: usize,
    /// Header lines in one frame.
    pub max_headers: usize,
    /// The command line and each header line, without the EOL.
    pub max_line_length: usize,
}

impl Default for Limits {
    /// 4 MiB bodies, 128 headers of up to 16 KiB: far above chat and RPC
    /// traffic, small enough that a thousand half-sent frames fit in memory.
    fn default() -> Limits {
        Limits {
            max_frame_size: 4 * 1024 * 1024 + 256 * 1024,
            max_body_size: 4 * 1024 * 1024,
            max_headers: 128,
            max_line_length: 16 * 1024,
        }
    }
}

/// What the decoder found at the front of the buffer.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{Decoded, FrameDecoder};
/// let mut buf = BytesMut::from(&b"\r\n"[..]);
/// assert_eq!(FrameDecoder::new().decode(&mut buf).unwrap(), Some(Decoded::Heartbeat));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame.
    Frame(Frame),
    /// One EOL between frames: a heart-beat from the peer.
    Heartbeat,
}

/// A streaming STOMP frame decoder.
///
/// Feed it the connection's read buffer after every read. It returns
/// `Ok(None)` and consumes nothing while a frame is incomplete, and removes
/// exactly one frame or one heart-beat EOL per `Ok(Some(_))`. The body and
/// header texts of a decoded frame share the buffer's memory.
///
/// The decoder carries the negotiated [`Version`], which decides how header
/// escapes are read; call [`FrameDecoder::set_version`] after CONNECTED.
///
/// ```
/// use bytes::BytesMut;
/// use stomp_codec::{Command, Decoded, FrameDecoder};
/// let mut decoder = FrameDecoder::new();
/// let mut buf = BytesMut::from(&b"SEND\ndestination:/queue/a\n\nhel"[..]);
/// assert_eq!(decoder.decode(&mut buf).unwrap(), None); // half a frame: wait
/// buf.extend_from_slice(b"lo\0\n");
/// let Some(Decoded::Frame(frame)) = decoder.decode(&mut buf).unwrap() else { panic!() };
/// assert_eq!(frame.command, Command::Send);
/// assert_eq!(&frame.body[..], b"hello");
/// assert_eq!(decoder.decode(&mut buf).unwrap(), Some(Decoded::Heartbeat));
/// ```
#[derive(Debug, Clone, Default)]
pub struct FrameDecoder {
    version: Version,
    limits: Limits,
    /// The buffer length below which another attempt cannot succeed; spares
    /// re-scanning the headers of a large body on every read.
    needed: usize,
    /// Frames up to this size are copied out of the buffer, not shared.
    copy_up_to: usize,
}

/// Where the parts of a complete, validated frame lie in the buffer.
struct Layout {
    command: Command,
    /// Offsets of the header block (the header lines and their EOLs).
    headers: (usize, usize),
    header_count: usize,
    /// Where the first headers' names and values are, so building the
    /// frame does not scan them again (more headers are rescanned).
    spans: [HeaderSpan; INLINE_SPANS],
    body: (usize, usize),
    /// The frame's length including its NUL.
    total: usize,
}

const INLINE_SPANS: usize = 12;

/// Offsets of one header's name and value in the frame.
#[derive(Debug, Clone, Copy, Default)]
struct HeaderSpan {
    name: (u32, u32),
    value: (u32, u32),
    /// Contains escape sequences to decode.
    escaped: bool,
}

// Lives on the stack for one call; boxing the layout would cost an
// allocation per frame, which is what the inline spans avoid.
#[allow(clippy::large_enum_variant)]
enum Scan {
    Heartbeat(usize),
    Frame(Layout),
    Incomplete { needed: usize },
}

impl FrameDecoder {
    /// A decoder for STOMP 1.2 with default [`Limits`].
    ///
    /// ```
    /// assert_eq!(stomp_codec::FrameDecoder::new().version(), stomp_codec::Version::V1_2);
    /// ```
    pub fn new() -> FrameDecoder {
        FrameDecoder::default()
    }

    /// A decoder with the given limits.
    ///
    /// ```
    /// use stomp_codec::{FrameDecoder, Limits};
    /// let d = FrameDecoder::with_limits(Limits { max_headers: 8, ..Limits::default() });
    /// assert_eq!(d.limits().max_headers, 8);
    /// ```
    pub fn with_limits(limits: Limits) -> FrameDecoder {
        FrameDecoder {
            limits,
            ..FrameDecoder::default()
        }
    }

    /// Copies frames of up to `bytes` out of the read buffer instead of
    /// sharing it, but for ACK and NACK frames, which are read in place (a
    /// program that keeps one, say in a transaction, copies what it keeps). Sharing costs no copy, but a kept frame then keeps the
    /// allocation it was read into: for a program that keeps many small
    /// frames (a broker's queue backlog), each pins a read-buffer block, and
    /// 1 KiB messages cost 2.2 times their size in resident memory that way.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use stomp_codec::{Decoded, FrameDecoder};
    /// let mut decoder = FrameDecoder::new().copy_frames_up_to(64 * 1024);
    /// let mut buf = BytesMut::from(&b"SEND\n\nhi\0"[..]);
    /// let start = buf.as_ptr() as usize;
    /// let Some(Decoded::Frame(f)) = decoder.decode(&mut buf).unwrap() else { panic!() };
    /// assert_ne!(f.body.as_ptr() as usize, start + 6, "a copy, not a slice of the buffer");
    ///
    /// let mut buf = BytesMut::from(&b"ACK\nid:7\n\n\0"[..]);
    /// let start = buf.as_ptr() as usize;
    /// let Some(Decoded::Frame(f)) = decoder.decode(&mut buf).unwrap() else { panic!() };
    /// let id = f.headers.get("id").unwrap();
    /// assert_eq!(id.as_ptr() as usize, start + 7, "an ACK is read in place");
    /// ```
    pub fn copy_frames_up_to(mut self, bytes: usize) -> FrameDecoder {
        self.copy_up_to = bytes;
        self
    }

    /// The version whose escaping rules apply.
    ///
    /// ```
    /// assert_eq!(stomp_codec::FrameDecoder::new().version().as_str(), "1.2");
    /// ```
    pub fn version(&self) -> Version {
        self.version
    }

    /// Switches escaping rules, typically once the session's version is agreed.
    ///
    /// ```
    /// use stomp_codec::{FrameDecoder, Version};
    /// let mut d = FrameDecoder::new();
    /// d.set_version(Version::V1_0);
    /// assert_eq!(d.version(), Version::V1_0);
    /// ```
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The limits in force.
    ///
    /// ```
    /// assert_eq!(stomp_codec::FrameDecoder::new().limits(), &stomp_codec::Limits::default());
    /// ```
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes one frame or heart-beat from the front of `buf`.
    ///
    /// `Ok(None)`: more bytes are needed, nothing was consumed. On `Err` the
    /// buffer is left as it was (so the caller can quote the offending
    /// frame), and the stream cannot be resumed.
    ///
    /// ```
    /// use bytes::BytesMut;
    /// use stomp_codec::{Decoded, FrameDecoder};
    /// let mut buf = BytesMut::from(&b"DISCONNECT\nreceipt:77\n\n\0"[..]);
    /// match FrameDecoder::new().decode(&mut buf).unwrap() {
    ///     Some(Decoded::Frame(f)) => assert_eq!(f.headers.get("receipt"), Some("77")),
    ///     other => panic!("{other:?}"),
    /// }
    /// assert!(buf.is_empty());
    /// ```
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        if buf.len() < self.needed {
            return Ok(None);
        }
        match self.scan(buf)? {
            Scan::Incomplete { needed } => {
                self.needed = needed;
                Ok(None)
            }
            Scan::Heartbeat(len) => {
                self.needed = 0;
                buf.advance(len);
                Ok(Some(Decoded::Heartbeat))
            }
            Scan::Frame(layout) => {
                self.needed = 0;
                let copy_up_to = if is_acknowledgement(layout.command) {
                    0
                } else {
                    self.copy_up_to
                };
                let bytes = if pins_too_much(layout.total, buf.capacity(), copy_up_to) {
                    let copy = Bytes::copy_from_slice(&buf[..layout.total]);
                    buf.advance(layout.total);
                    copy
                } else {
                    buf.split_to(layout.total).freeze()
                };
                Ok(Some(Decoded::Frame(self.build(&bytes, &layout))))
            }
        }
    }

    /// Finds and validates the first frame without consuming anything.
    fn scan(&self, buf: &[u8]) -> Result<Scan, DecodeError> {
        let limits = &self.limits;
        match parse::eol(buf) {
            Ok((rest, _)) => return Ok(Scan::Heartbeat(buf.len() - rest.len())),
            Err(nom::Err::Incomplete(_)) => {
                return Ok(Scan::Incomplete {
                    needed: buf.len() + 1,
                });
            }
            Err(_) => {}
        }
        let incomplete = || Scan::Incomplete {
            needed: buf.len() + 1,
        };
        let check_frame = |size: usize| {
            if size > limits.max_frame_size {
                Err(DecodeError::FrameTooLarge {
                    limit: limits.max_frame_size,
                    size,
                })
            } else {
                Ok(())
            }
        };
        let check_line = |size: usize| {
            if size > limits.max_line_length {
                Err(DecodeError::LineTooLong {
                    limit: limits.max_line_length,
                    size,
                })
            } else {
                Ok(())
            }
        };

        let (mut rest, command_line) = match parse::line(buf) {
            Ok(ok) => ok,
            Err(_) => {
                check_line(partial_line_len(buf))?;
                return Ok(incomplete());
            }
        };
        check_line(command_line.len())?;
        let command =
            Command::from_bytes(command_line).ok_or_else(|| DecodeError::UnknownCommand {
                command: quote(command_line),
            })?;
        let escaping = Escaping::for_frame(self.version, command);

        let headers_start = buf.len() - rest.len();
        let mut header_count = 0;
        let mut spans = [HeaderSpan::default(); INLINE_SPANS];
        let mut content_length: Option<usize> = None;
        loop {
            let (after, line) = match parse::line(rest) {
                Ok(ok) => ok,
                Err(_) => {
                    check_line(partial_line_len(rest))?;
                    check_frame(buf.len())?;
                    return Ok(incomplete());
                }
            };
            check_line(line.len())?;
            if line.is_empty() {
                let headers_end = buf.len() - rest.len();
                rest = after;
                let body_start = buf.len() - rest.len();
                return self
                    .scan_body(buf, rest, content_length)
                    .map(|found| match found {
                        None => Scan::Incomplete {
                            needed: content_length
                                .map_or(buf.len() + 1, |len| body_start + len + 1),
                        },
                        Some(body_len) => Scan::Frame(Layout {
                            command,
                            headers: (headers_start, headers_end),
                            header_count,
                            spans,
                            body: (body_start, body_start + body_len),
                            total: body_start + body_len + 1,
                        }),
                    });
            }
            header_count += 1;
            if header_count > limits.max_headers {
                return Err(DecodeError::TooManyHeaders {
                    limit: limits.max_headers,
                });
            }
            let (colon, escaped) = validate_header(line, escaping)?;
            let (name, value) = (&line[..colon], &line[colon + 1..]);
            if content_length.is_none() && name == b"content-length" {
                content_length = Some(parse_content_length(value)?);
            }
            if let Some(span) = spans.get_mut(header_count - 1) {
                // Frames are far below 4 GiB (the limits say so), so u32 offsets fit.
                let start = (buf.len() - rest.len()) as u32;
                *span = HeaderSpan {
                    name: (start, start + colon as u32),
                    value: (start + colon as u32 + 1, start + line.len() as u32),
                    escaped,
                };
            }
            rest = after;
        }
    }

    /// The body's length once it has fully arrived, `None` while it has not.
    fn scan_body(
        &self,
        buf: &[u8],
        body: &[u8],
        content_length: Option<usize>,
    ) -> Result<Option<usize>, DecodeError> {
        let limits = &self.limits;
        let body_start = buf.len() - body.len();
        let too_large = |size: usize| -> Result<(), DecodeError> {
            if size > limits.max_body_size {
                return Err(DecodeError::BodyTooLarge {
                    limit: limits.max_body_size,
                    size,
                });
            }
            if body_start + size + 1 > limits.max_frame_size {
                return Err(DecodeError::FrameTooLarge {
                    limit: limits.max_frame_size,
                    size: body_start + size + 1,
                });
            }
            Ok(())
        };
        match content_length {
            Some(len) => {
                // Checked before waiting, so a client announcing 1 GiB is
                // refused at once instead of being buffered up to the limit.
                too_large(len)?;
                match parse::sized_body(body, len) {
                    Ok((_, b)) => Ok(Some(b.len())),
                    Err(nom::Err::Incomplete(_)) => Ok(None),
                    Err(_) => Err(DecodeError::MissingNul {
                        content_length: len,
                    }),
                }
            }
            None => match parse::nul_terminated_body(body) {
                Ok((_, b)) => {
                    too_large(b.len())?;
                    Ok(Some(b.len()))
                }
                Err(_) => {
                    too_large(body.len())?;
                    Ok(None)
                }
            },
        }
    }

    /// Turns a validated frame's bytes into a [`Frame`] sharing their memory.
    fn build(&self, bytes: &Bytes, layout: &Layout) -> Frame {
        let escaping = Escaping::for_frame(self.version, layout.command);
        let mut headers = Headers::with_capacity(layout.header_count);
        let inline = layout.header_count.min(INLINE_SPANS);
        for span in &layout.spans[..inline] {
            let range = |(a, b): (u32, u32)| a as usize..b as usize;
            let name = match known_name(&bytes[range(span.name)]) {
                Some(known) => ByteString::from_static(known),
                None => text_at(bytes, range(span.name), span.escaped, escaping),
            };
            headers.push(
                name,
                text_at(bytes, range(span.value), span.escaped, escaping),
            );
        }
        // Headers beyond the inline spans: found again by scanning.
        let mut block = &bytes[layout.headers.0..layout.headers.1];
        let mut index = 0;
        while let Ok((rest, line)) = parse::line(block) {
            block = rest;
            index += 1;
            if index <= INLINE_SPANS {
                continue;
            }
            if let Some((name, value)) = parse::header(line) {
                let escaped = escaping != Escaping::None && memchr::memchr(b'\\', line).is_some();
                headers.push(
                    text(bytes, name, escaped, escaping),
                    text(bytes, value, escaped, escaping),
                );
            }
        }
        Frame {
            command: layout.command,
            headers,
            body: bytes.slice(layout.body.0..layout.body.1),
        }
    }
}

/// Whether a frame of `total` bytes should be copied out of a read buffer
/// with `capacity` bytes left rather than shared with it. A shared frame
/// keeps the buffer's whole allocation alive for as long as the frame is
/// kept: a queued 2-byte message pinned a 6.4 MiB buffer that had grown for
/// one large frame. So a frame much smaller than a large buffer is always
/// copied, and frames up to `copy_up_to` bytes are copied whatever the
/// buffer (see [`FrameDecoder::copy_frames_up_to`]).
/// ACK and NACK: a consumer sends one per message, and they are dropped
/// once acted on, so they are read in place (copying each one out was a
/// large part of decoding it). Every other frame may be kept (a SEND in a
/// queue's backlog, a SUBSCRIBE's id and destination for the
/// subscription's life).
fn is_acknowledgement(command: Command) -> bool {
    matches!(command, Command::Ack | Command::Nack)
}

fn pins_too_much(total: usize, capacity: usize, copy_up_to: usize) -> bool {
    const LARGE_BUFFER: usize = 64 * 1024;
    total <= copy_up_to || (capacity > LARGE_BUFFER && total < capacity / 4)
}

/// The length a line being received will have at least, not counting a
/// trailing CR that may turn out to be the first half of its CRLF (so that a
/// line cut before its LF is judged exactly as the whole line would be).
fn partial_line_len(rest: &[u8]) -> usize {
    rest.len() - usize::from(rest.ends_with(b"\r"))
}

/// Checks one header line; returns where its first colon is and whether it
/// has escapes to decode. The common all-ASCII line without escapes needs
/// no UTF-8 validation and no escape decoding.
fn validate_header(line: &[u8], escaping: Escaping) -> Result<(usize, bool), DecodeError> {
    let colon = memchr::memchr(b':', line);
    let ascii = line.is_ascii();
    let backslash = escaping != Escaping::None && memchr::memchr(b'\\', line).is_some();
    // A NUL ends a frame for every reader that does not trust content-length
    // (and for every reader inside a header block), so a NUL relayed in a
    // header would let a sender forge frames in other clients' streams.
    if memchr::memchr(0, line).is_some() {
        return Err(DecodeError::NulInHeader { line: quote(line) });
    }
    let colon = colon.ok_or_else(|| DecodeError::MalformedHeader {
        line: quote(line),
        // No colon in the words: 1.1 and 1.2 escape a colon in the ERROR's
        // message header as \c, which reads badly in a terminal.
        reason: "a header line is a name, a colon and a value",
    })?;
    if colon == 0 {
        return Err(DecodeError::MalformedHeader {
            line: quote(line),
            reason: "the header name is empty",
        });
    }
    if !ascii && std::str::from_utf8(line).is_err() {
        return Err(DecodeError::InvalidUtf8 { line: quote(line) });
    }
    let escaped = backslash && escaping != Escaping::None;
    if escaped {
        for part in [&line[..colon], &line[colon + 1..]] {
            let mut i = 0;
            while let Some(pos) = memchr::memchr(b'\\', &part[i..]) {
                let at = i + pos;
                let letter = part.get(at + 1).copied();
                if letter.and_then(|l| escaping.unescape_byte(l)).is_none() {
                    return Err(DecodeError::InvalidEscape {
                        sequence: quote(&part[at..(at + 2).min(part.len())]),
                        line: quote(line),
                    });
                }
                i = at + 2;
            }
        }
    }
    Ok((colon, escaped))
}

fn parse_content_length(value: &[u8]) -> Result<usize, DecodeError> {
    let bad = || DecodeError::BadContentLength {
        value: quote(value),
    };
    // Some clients pad with spaces; digits only otherwise ("+5", "-1", "0x10" are refused).
    let digits = value.trim_ascii();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .ok_or_else(bad)
}

/// The standard header names, so the common ones cost no reference count
/// on the frame's buffer (each shared slice is an atomic increment and
/// decrement, a measurable part of decoding a small frame).
fn known_name(name: &[u8]) -> Option<&'static str> {
    Some(match name {
        b"destination" => "destination",
        b"content-type" => "content-type",
        b"content-length" => "content-length",
        b"receipt" => "receipt",
        b"receipt-id" => "receipt-id",
        b"id" => "id",
        b"ack" => "ack",
        b"subscription" => "subscription",
        b"message-id" => "message-id",
        b"transaction" => "transaction",
        b"accept-version" => "accept-version",
        b"host" => "host",
        b"login" => "login",
        b"passcode" => "passcode",
        b"heart-beat" => "heart-beat",
        b"version" => "version",
        b"session" => "session",
        b"server" => "server",
        b"message" => "message",
        b"redelivered" => "redelivered",
        b"persistent" => "persistent",
        b"priority" => "priority",
        b"expires" => "expires",
        b"expiration" => "expiration",
        _ => return None,
    })
}

/// A header name or value as shared text: a slice of the frame when it has
/// no escapes (the common case), a fresh string when it had some.
///
/// The slice was validated by `scan`, so the conversions cannot fail; an
/// empty string stands in should that invariant ever break.
fn text_at(
    frame: &Bytes,
    range: std::ops::Range<usize>,
    escaped: bool,
    escaping: Escaping,
) -> ByteString {
    if escaped {
        text(frame, &frame[range], escaped, escaping)
    } else {
        ByteString::try_from(frame.slice(range)).unwrap_or_default()
    }
}

/// Like [`text_at`], for a sub-slice of `frame`.
fn text(frame: &Bytes, raw: &[u8], escaped: bool, escaping: Escaping) -> ByteString {
    if !escaped {
        return ByteString::try_from(frame.slice_ref(raw)).unwrap_or_default();
    }
    let mut out = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b == b'\\' {
            if let Some(decoded) = bytes.next().and_then(|&l| escaping.unescape_byte(l)) {
                out.push(decoded);
            }
        } else {
            out.push(b);
        }
    }
    String::from_utf8(out)
        .map(ByteString::from)
        .unwrap_or_default()
}
