//! What the end-to-end tests of the real binary share: starting and
//! killing the broker process, a blocking STOMP client, bounded waits.

// Each test file uses its own part of this.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_stompbox");
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The broker process, killed if a test ends early.
pub(crate) struct Broker {
    pub(crate) child: Child,
    pub(crate) port: u16,
    log: Arc<Mutex<String>>,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Broker {
    pub(crate) fn start(data: &Path, extra: &[&str]) -> Broker {
        Broker::start_with(Command::new(BIN), data, extra)
    }

    /// Like [`start`](Self::start), with `cmd` running the binary.
    pub(crate) fn start_with(mut cmd: Command, data: &Path, extra: &[&str]) -> Broker {
        let mut child = cmd
            .args([
                "--tcp-listen",
                "127.0.0.1:0",
                "--http-listen",
                "127.0.0.1:0",
                "--log",
                "info",
            ])
            .arg("--data-dir")
            .arg(data)
            .args(extra)
            .env_remove("STOMPBOX_HEART_BEAT")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the broker starts");
        let stderr = child.stderr.take().expect("piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("tcp_addr=127.0.0.1:").nth(1) {
                        let port: String = rest.chars().take_while(char::is_ascii_digit).collect();
                        let _ = tx.send(port.parse::<u16>().expect("a port"));
                    }
                    let mut log = log.lock().expect("log");
                    log.push_str(&line);
                    log.push('\n');
                }
            });
        }
        let port = rx
            .recv_timeout(WAIT)
            .expect("the broker logs its TCP address");
        Broker { child, port, log }
    }

    /// SIGKILL: no shutdown path runs.
    pub(crate) fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// The HTTP listener's port (WebSocket, /health, /metrics), from the log.
    pub(crate) fn http_port(&self) -> u16 {
        let log = self.log();
        let rest = log
            .split("http_addr=127.0.0.1:")
            .nth(1)
            .expect("the HTTP address in the log");
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u16>()
            .expect("a port")
    }

    /// The management API's port, from the log (`--management-listen 127.0.0.1:0`).
    pub(crate) fn management_port(&self) -> u16 {
        wait_until(|| self.log().contains("management API listening"));
        let log = self.log();
        let line = log
            .lines()
            .find(|l| l.contains("management API listening"))
            .expect("the API's address in the log");
        let rest = line.split("addr=127.0.0.1:").nth(1).expect("an address");
        rest.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u16>()
            .expect("a port")
    }

    pub(crate) fn log(&self) -> String {
        self.log.lock().expect("log").clone()
    }
}

/// A frame as read off the wire.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub(crate) command: String,
    pub(crate) headers: HashMap<String, String>,
    pub(crate) body: String,
}

/// A blocking STOMP 1.2 client over TCP.
pub(crate) struct Client {
    pub(crate) stream: TcpStream,
    pub(crate) buf: Vec<u8>,
    /// Frames read early and put back (see [`Client::unread`]).
    pub(crate) early: std::collections::VecDeque<Frame>,
}

impl Client {
    /// Like [`connect`](Self::connect), `None` when the broker is gone
    /// (killed before this producer got going).
    pub(crate) fn try_connect(port: u16) -> Option<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        stream.set_read_timeout(Some(WAIT)).ok()?;
        let mut c = Client {
            stream,
            buf: Vec::new(),
            early: Default::default(),
        };
        c.stream
            .write_all(b"CONNECT\naccept-version:1.2\nheart-beat:0,0\n\n\0")
            .ok()?;
        (c.read()?.command == "CONNECTED").then_some(c)
    }

    pub(crate) fn connect(port: u16) -> Client {
        Client::connect_with(port, "")
    }

    /// Connects with `extra` header lines in the CONNECT (each ending in `\n`).
    pub(crate) fn connect_with(port: u16, extra: &str) -> Client {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream.set_read_timeout(Some(WAIT)).expect("timeout");
        let mut c = Client {
            stream,
            buf: Vec::new(),
            early: Default::default(),
        };
        c.write(&format!(
            "CONNECT\naccept-version:1.2\nheart-beat:0,0\n{extra}\n\0"
        ));
        let f = c.read().expect("CONNECTED");
        assert_eq!(f.command, "CONNECTED", "{f:?}");
        c
    }

    /// A second handle on the same connection, for reading on another
    /// thread while this one writes.
    #[allow(dead_code)] // Not every test binary that shares this module reads apart.
    pub(crate) fn reader(&self) -> Client {
        Client {
            stream: self.stream.try_clone().expect("clone"),
            buf: Vec::new(),
            early: Default::default(),
        }
    }

    pub(crate) fn write(&mut self, text: &str) {
        self.stream.write_all(text.as_bytes()).expect("write");
    }

    /// Puts frames back, to be read again first, in order: MESSAGEs that
    /// came before a SUBSCRIBE's RECEIPT, for a test reading them after.
    pub(crate) fn unread(&mut self, frames: Vec<Frame>) {
        self.early.extend(frames);
    }

    /// The next frame; `None` when the connection ends.
    pub(crate) fn read(&mut self) -> Option<Frame> {
        if let Some(f) = self.early.pop_front() {
            return Some(f);
        }
        loop {
            while self.buf.first() == Some(&b'\n') || self.buf.first() == Some(&b'\r') {
                self.buf.remove(0);
            }
            if let Some(end) = self.buf.iter().position(|b| *b == 0) {
                let raw: Vec<u8> = self.buf.drain(..=end).collect();
                return Some(parse(&raw[..raw.len() - 1]));
            }
            let mut chunk = [0u8; 16384];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }
}

pub(crate) fn parse(raw: &[u8]) -> Frame {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let command = lines.next().unwrap_or_default().to_string();
    let mut headers = HashMap::new();
    for line in lines {
        if let Some((n, v)) = line.split_once(':') {
            headers
                .entry(n.to_string())
                .or_insert_with(|| v.to_string());
        }
    }
    Frame {
        command,
        headers,
        body: body.to_string(),
    }
}

/// Waits until `done` holds, at most [`WAIT`] (then goes on: the kill
/// comes anyway, and the checks judge what was confirmed).
pub(crate) fn wait_until(done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One management API call over a plain socket; the status and the body.
pub(crate) fn api_call(port: u16, token: &str, method: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("the API");
    s.set_read_timeout(Some(WAIT)).expect("timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\n\r\n"
    )
    .expect("request");
    let mut text = String::new();
    s.read_to_string(&mut text).expect("response");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status");
    let body = text
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, body)
}
