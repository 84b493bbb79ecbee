//! nom rules for the STOMP 1.2 grammar, one function per rule.
//!
//! These rules only find where things are; limits, escapes and UTF-8 are
//! checked by the decoder, which knows the configuration and the version.
//! They are streaming parsers: `Err::Incomplete` means "the line or body has
//! not fully arrived yet", never a syntax error.

use nom::branch::alt;
use nom::bytes::streaming::{tag, take, take_until};
use nom::sequence::terminated;
use nom::{IResult, Parser};

/// `EOL = [CR] LF`
pub(crate) fn eol(input: &[u8]) -> IResult<&[u8], &[u8]> {
    alt((tag(&b"\r\n"[..]), tag(&b"\n"[..]))).parse(input)
}

/// The text of one `command EOL` or `header EOL` line, without the EOL.
///
/// The LF is searched for rather than `[CR] LF` so that a CR inside the
/// line (legal in 1.0 values) does not end it; a CR right before the LF
/// belongs to the EOL. Equivalent to
/// `terminated(take_till(|b| b == b'\n'), tag("\n"))`, but the search is
/// memchr's vectorised one: lines are scanned on every frame, and the
/// byte-at-a-time `take_till` was most of the decoder's time.
pub(crate) fn line(input: &[u8]) -> IResult<&[u8], &[u8]> {
    match memchr::memchr(b'\n', input) {
        Some(at) => {
            let text = &input[..at];
            Ok((&input[at + 1..], text.strip_suffix(b"\r").unwrap_or(text)))
        }
        None => Err(nom::Err::Incomplete(nom::Needed::new(1))),
    }
}

/// `header = header-name ":" header-value`, split at the first colon.
///
/// The 1.2 grammar forbids a colon in a value, but 1.0 clients send
/// unescaped ones (`server:Apache/1.0`-style values, URLs), and splitting at
/// the first colon reads both correctly. Returns `None` when there is no
/// colon; the name may be empty (the caller rejects that with a clear error).
pub(crate) fn header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let result: IResult<&[u8], &[u8]> = nom::bytes::complete::take_till(|b| b == b':').parse(line);
    match result {
        Ok((rest, name)) if !rest.is_empty() => Some((name, &rest[1..])),
        _ => None,
    }
}

/// `*OCTET NULL` when `content-length` gives the body's size: exactly
/// `len` octets (NULs allowed), then the NUL.
///
/// `Err::Error` means the octet after the body is not NUL.
pub(crate) fn sized_body(input: &[u8], len: usize) -> IResult<&[u8], &[u8]> {
    terminated(take(len), tag(&b"\0"[..])).parse(input)
}

/// `*OCTET NULL` without `content-length`: everything up to the first NUL.
pub(crate) fn nul_terminated_body(input: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(take_until(&b"\0"[..]), tag(&b"\0"[..])).parse(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eol_accepts_lf_and_crlf_and_waits_on_cr() {
        assert_eq!(eol(b"\nX").unwrap().0, b"X");
        assert_eq!(eol(b"\r\nX").unwrap().0, b"X");
        assert!(matches!(eol(b"\r"), Err(nom::Err::Incomplete(_))));
        assert!(matches!(eol(b""), Err(nom::Err::Incomplete(_))));
        assert!(matches!(eol(b"S"), Err(nom::Err::Error(_))));
    }

    #[test]
    fn line_strips_one_trailing_cr_only() {
        assert_eq!(line(b"SEND\r\nrest").unwrap(), (&b"rest"[..], &b"SEND"[..]));
        assert_eq!(line(b"a\rb\n").unwrap().1, b"a\rb");
        assert!(matches!(line(b"SEN"), Err(nom::Err::Incomplete(_))));
    }

    #[test]
    fn header_splits_at_first_colon() {
        assert_eq!(header(b"a:b:c"), Some((&b"a"[..], &b"b:c"[..])));
        assert_eq!(header(b"a:"), Some((&b"a"[..], &b""[..])));
        assert_eq!(header(b":v"), Some((&b""[..], &b"v"[..])));
        assert_eq!(header(b"novalue"), None);
    }

    #[test]
    fn bodies() {
        assert_eq!(
            sized_body(b"a\0b\0\n", 3).unwrap(),
            (&b"\n"[..], &b"a\0b"[..])
        );
        assert!(matches!(sized_body(b"abcX", 3), Err(nom::Err::Error(_))));
        assert!(matches!(sized_body(b"ab", 3), Err(nom::Err::Incomplete(_))));
        assert_eq!(nul_terminated_body(b"hi\0").unwrap().1, b"hi");
        assert!(matches!(
            nul_terminated_body(b"hi"),
            Err(nom::Err::Incomplete(_))
        ));
    }
}
