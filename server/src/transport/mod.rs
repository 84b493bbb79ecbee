//! Thin adapters between sockets and [`run_session`](crate::session::driver::run_session).

pub mod admission;
pub mod http;
pub mod read_ahead;
pub mod tcp;
pub mod web;
pub mod ws;
pub mod ws_handshake;

/// The first line of unparsed input, shortened, for quoting in an ERROR body.
fn first_line(buf: &[u8]) -> Option<String> {
    if buf.is_empty() {
        return None;
    }
    let end = memchr_lf(buf).unwrap_or(buf.len()).min(120);
    let line = String::from_utf8_lossy(&buf[..end]);
    Some(line.trim_end_matches('\r').to_string())
}

fn memchr_lf(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}
