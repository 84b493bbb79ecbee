//! ERROR frames and what they quote: one readable line in `message`, the
//! frame (or unparsed input) at fault in the body, secrets hidden.

use stomp_codec::{ByteString, Command, Frame};

use crate::error::SessionError;

/// The ERROR frame for a client's mistake: a short `message`, then a body
/// that explains and quotes the frame that caused it.
pub fn error_frame(
    error: &SessionError,
    offending: Option<&str>,
    receipt: Option<ByteString>,
) -> Frame {
    let mut body = String::new();
    body.push_str(&error.to_string());
    body.push_str("\n\n");
    body.push_str(error.explanation());
    body.push('\n');
    if let Some(quoted) = offending {
        body.push_str("\nThe frame received:\n-----\n");
        body.push_str(quoted);
        body.push_str("\n-----\n");
    }
    let mut frame = Frame::new(Command::Error)
        .header("message", message_header(&error.to_string()))
        .header("content-type", "text/plain");
    if let SessionError::UnsupportedVersion { .. } = error {
        frame = frame.header("version", "1.0,1.1,1.2");
    }
    if let Some(receipt) = receipt {
        frame = frame.header("receipt-id", receipt);
    }
    frame.body(body)
}

/// An ERROR the broker sends on its own account (shutdown, slow consumer, timeouts).
pub fn notice_frame(message: &str, explanation: &str) -> Frame {
    Frame::new(Command::Error)
        .header("message", message_header(message))
        .header("content-type", "text/plain")
        .body(format!("{message}\n\n{explanation}\n"))
}

/// The `message` header of an ERROR: one line, and ": " written as " - ",
/// because 1.1 and 1.2 escape every colon in a header value as `\c`, which
/// a person reading the frame in telnet should not have to decode. The
/// body keeps the text as it is.
fn message_header(s: &str) -> String {
    one_line(s).replace(": ", " - ")
}

/// Text on a single line, so quoted header values stay readable.
fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// The first line of unparsed input, without its line ending.
pub fn first_line(buf: &[u8]) -> &[u8] {
    let line = buf.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The command and header lines of input that failed to decode, for quoting
/// in an ERROR body, so the line at fault is among them: up to the empty
/// line or the NUL, at most 20 lines of 120 characters each, passcodes
/// hidden. `None` when nothing is pending.
pub fn quote_unparsed(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return None;
    }
    let head = buf.split(|&b| b == 0).next().unwrap_or_default();
    let mut lines = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() || lines.len() == 20 {
            break;
        }
        let text = String::from_utf8_lossy(line);
        let cut: String = text.chars().take(120).collect();
        lines.push(if cut.starts_with("passcode:") {
            "passcode:********".to_string()
        } else {
            cut
        });
    }
    Some(lines.join("\n"))
}

/// The command and header lines of a frame, for quoting in an ERROR body.
/// Values are cut so that a huge header does not make a huge ERROR.
pub fn quote_frame(frame: &Frame) -> String {
    let mut out = String::from(frame.command.as_str());
    for (name, value) in frame.headers.iter().take(20) {
        out.push('\n');
        out.push_str(name);
        out.push(':');
        // A secret is never echoed, not even back to whoever sent it: the
        // ERROR may end up in a log or on a screen.
        if name == "passcode" {
            out.push_str("********");
            continue;
        }
        let cut: String = value.chars().take(120).collect();
        out.push_str(&one_line(&cut));
    }
    if frame.headers.len() > 20 {
        out.push_str("\n…");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unparsed_input_is_quoted_up_to_the_headers_end_with_passcodes_hidden() {
        let quoted = quote_unparsed(
            b"CONNECT\r\nlogin:ana\r\npasscode:secret\r\ndestination /queue/a\r\n\r\nbody\0",
        );
        assert_eq!(
            quoted.as_deref(),
            Some("CONNECT\nlogin:ana\npasscode:********\ndestination /queue/a")
        );
        assert_eq!(quote_unparsed(b""), None);
        let many: Vec<u8> = (0..30)
            .flat_map(|i| format!("h{i}:v\n").into_bytes())
            .collect();
        assert_eq!(quote_unparsed(&many).map(|q| q.lines().count()), Some(20));
        let long = [b'x'; 500];
        assert_eq!(quote_unparsed(&long).map(|q| q.len()), Some(120));
        assert_eq!(first_line(b"SEND\r\ndestination:/q\n"), b"SEND");
    }
}
