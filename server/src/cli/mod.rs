//! `stompbox send` and `stompbox subscribe`: a command-line client for
//! any STOMP broker (this one or another), over TCP, TLS or WebSocket, as
//! `nats pub`/`nats sub` are for NATS. Built on the load tool's client.

use std::io::{Read, Write};
use std::time::Duration;

use clap::{Args, ValueEnum};
use stomp_codec::{Command, Frame};

use crate::bench::client::{Reader, Writer, connect};
use crate::bench::{BenchError, Credentials, Target};

mod admin;
pub use admin::{AdminArgs, AdminCommand, admin};

/// Where and as whom to connect.
#[derive(Args, Debug, Clone)]
pub struct ConnectArgs {
    /// The broker: stomp://host:port, stomp+ssl://host:port (with --tls-ca) or ws://host:port/ws.
    #[arg(long, default_value = "stomp://127.0.0.1:61613", env = "STOMPBOX_URL")]
    pub url: String,
    /// CONNECT login.
    #[arg(long, env = "STOMPBOX_LOGIN")]
    pub login: Option<String>,
    /// CONNECT passcode (or a token); from the environment it stays out of the process list.
    #[arg(long, env = "STOMPBOX_PASSCODE", hide_env_values = true)]
    pub passcode: Option<String>,
    /// CONNECT host (virtual host) [default: localhost].
    #[arg(long)]
    pub host: Option<String>,
    /// PEM CA certificate that signed the broker's, for stomp+ssl://.
    #[arg(long)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// Give up after this many seconds without what is waited for.
    #[arg(long, default_value_t = 30)]
    pub timeout: u64,
}

impl ConnectArgs {
    async fn open(&self) -> Result<(Writer, Reader), BenchError> {
        let target = Target::parse_with(&self.url, self.tls_ca.as_deref())?;
        let credentials = Credentials {
            login: self.login.clone(),
            passcode: self.passcode.clone(),
            host: self.host.clone(),
        };
        connect(&target, &credentials, None).await
    }

    fn limit(&self) -> Duration {
        Duration::from_secs(self.timeout.max(1))
    }
}

/// `stompbox send`.
#[derive(Args, Debug, Clone)]
pub struct SendArgs {
    /// Where to send: /queue/NAME, /topic/NAME, /exchange/NAME/KEY...
    pub destination: String,
    /// The body; `-` reads it from standard input [default: empty].
    pub body: Option<String>,
    /// A header as name:value (repeat).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// `persistent:true`: kept on disk by brokers that can.
    #[arg(long)]
    pub persistent: bool,
    /// Send this many copies.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// At most this many a second [default: as fast as receipts come].
    #[arg(long)]
    pub rate: Option<f64>,
    /// Do not wait for RECEIPTs (the broker's confirmation) [default: wait for each].
    #[arg(long)]
    pub no_receipt: bool,
    /// The connection's options.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

/// How `subscribe` prints what arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Each body on its own line.
    Body,
    /// Whole frames, headers and body, as they arrived.
    Frame,
    /// One JSON object a line: {"headers": {...}, "body": "..."}.
    Json,
}

/// How `subscribe` acknowledges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckArg {
    /// The broker counts a message delivered once written.
    Auto,
    /// Each message is acknowledged after it is printed.
    ClientIndividual,
}

/// `stompbox subscribe`.
#[derive(Args, Debug, Clone)]
pub struct SubscribeArgs {
    /// What to subscribe to.
    pub destination: String,
    /// Acknowledgement mode.
    #[arg(long, value_enum, default_value_t = AckArg::Auto)]
    pub ack: AckArg,
    /// Exit after this many messages, taking no more than that from a queue [default: run until interrupted].
    #[arg(short = 'n', long)]
    pub count: Option<u64>,
    /// How to print each message.
    #[arg(long, value_enum, default_value_t = Output::Body)]
    pub output: Output,
    /// Shorthand for --output json.
    #[arg(long)]
    pub json: bool,
    /// A SUBSCRIBE header as name:value (repeat): selector, prefetch-count...
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// Give up when nothing arrives for this many seconds [default: wait forever].
    #[arg(long)]
    pub idle_timeout: Option<u64>,
    /// The connection's options.
    #[command(flatten)]
    pub connect: ConnectArgs,
}

fn header(spec: &str) -> Result<(String, String), BenchError> {
    match spec.split_once(':') {
        Some((name, value)) if !name.is_empty() => Ok((name.to_string(), value.to_string())),
        _ => Err(BenchError::Usage(format!(
            "-H {spec:?}: a header is name:value"
        ))),
    }
}

async fn within<T>(
    limit: Duration,
    what: &str,
    f: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<T, BenchError> {
    tokio::time::timeout(limit, f)
        .await
        .map_err(|_| BenchError::Timeout(what.to_string()))?
}

/// Sends, and (unless told not to) waits for each RECEIPT; prints a summary
/// line to standard error.
pub async fn send(args: SendArgs) -> Result<(), BenchError> {
    let body = match args.body.as_deref() {
        Some("-") => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|e| BenchError::Io(format!("reading standard input: {e}")))?;
            bytes
        }
        Some(text) => text.as_bytes().to_vec(),
        None => Vec::new(),
    };
    let headers = args
        .headers
        .iter()
        .map(|h| header(h))
        .collect::<Result<Vec<_>, _>>()?;
    if args.rate.is_some_and(|r| !(r.is_finite() && r > 0.0)) {
        return Err(BenchError::Usage("--rate must be a positive number".into()));
    }
    let limit = args.connect.limit();
    let (mut writer, mut reader) = within(limit, "connecting", args.connect.open()).await?;
    let started = tokio::time::Instant::now();
    let gap = args.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    for i in 0..args.count {
        if let Some(gap) = gap {
            tokio::time::sleep_until(started + gap.mul_f64(i as f64)).await;
        }
        let mut frame = Frame::new(Command::Send).header("destination", args.destination.as_str());
        for (name, value) in &headers {
            frame = frame.header(name.as_str(), value.as_str());
        }
        if args.persistent {
            frame = frame.header("persistent", "true");
        }
        let receipt = format!("send-{i}");
        if !args.no_receipt {
            frame = frame.header("receipt", receipt.as_str());
        }
        writer.send(frame.body(body.clone())).await?;
        if !args.no_receipt {
            within(limit, "waiting for the RECEIPT", async {
                loop {
                    let f = reader.next_frame().await?;
                    if f.command == Command::Receipt
                        && f.headers.get("receipt-id") == Some(receipt.as_str())
                    {
                        return match f.headers.get("x-error") {
                            Some(code) => Err(BenchError::Refused(format!(
                                "refused ({code}): {}",
                                f.headers.get("message").unwrap_or_default()
                            ))),
                            None => Ok(()),
                        };
                    }
                }
            })
            .await?;
        }
    }
    let _ = writer.send(Frame::new(Command::Disconnect)).await;
    let confirmed = if args.no_receipt {
        "sent"
    } else {
        "sent and confirmed"
    };
    eprintln!(
        "{} message{} {confirmed} to {}",
        args.count,
        if args.count == 1 { "" } else { "s" },
        args.destination
    );
    Ok(())
}

/// Subscribes and prints what arrives until `--count`, an idle timeout,
/// or the connection ends.
pub async fn subscribe(args: SubscribeArgs) -> Result<(), BenchError> {
    let output = if args.json { Output::Json } else { args.output };
    let limit = args.connect.limit();
    let (mut writer, mut reader) = within(limit, "connecting", args.connect.open()).await?;
    // With --count, exactly that many are taken from a queue: each is
    // acknowledged once printed, and no more than the count are handed
    // out, so what is not printed stays in the queue (with auto acks the
    // broker would count a message delivered once written to us).
    let ack = match args.count {
        Some(_) => AckArg::ClientIndividual,
        None => args.ack,
    };
    let mut frame = Frame::new(Command::Subscribe)
        .header("id", "0")
        .header("destination", args.destination.as_str())
        .header(
            "ack",
            match ack {
                AckArg::Auto => "auto",
                AckArg::ClientIndividual => "client-individual",
            },
        )
        .header("receipt", "subscribed");
    let mut prefetch_given = false;
    for spec in &args.headers {
        let (name, value) = header(spec)?;
        prefetch_given |= name == "prefetch-count";
        frame = frame.header(name, value);
    }
    if let (Some(n), false) = (args.count, prefetch_given) {
        frame = frame.header("prefetch-count", n.to_string());
    }
    writer.send(frame).await?;
    // The RECEIPT says the subscription is in place (or the ERROR why
    // not); messages may come before it, and are kept for printing.
    let mut early = std::collections::VecDeque::new();
    within(limit, "waiting for the subscription's RECEIPT", async {
        loop {
            let f = reader.next_frame().await?;
            if f.command == Command::Receipt {
                return Ok(());
            }
            early.push_back(f);
        }
    })
    .await?;
    let mut stdout = std::io::stdout().lock();
    let mut seen = 0u64;
    while args.count.is_none_or(|n| seen < n) {
        let next = match args.idle_timeout {
            _ if !early.is_empty() => early.pop_front().ok_or(BenchError::Closed),
            Some(secs) => tokio::time::timeout(Duration::from_secs(secs), reader.next_frame())
                .await
                .map_err(|_| BenchError::Timeout(format!("nothing arrived for {secs} s")))?,
            None => reader.next_frame().await,
        };
        let f = match next {
            Err(BenchError::Closed) => break,
            other => other?,
        };
        if f.command != Command::Message {
            continue;
        }
        let written = match output {
            Output::Body => {
                let mut line = f.body.to_vec();
                line.push(b'\n');
                stdout.write_all(&line)
            }
            Output::Frame => {
                let mut text = format!("{}\n", f.command);
                for (name, value) in f.headers.iter() {
                    text.push_str(&format!("{name}:{value}\n"));
                }
                text.push('\n');
                stdout
                    .write_all(text.as_bytes())
                    .and_then(|()| stdout.write_all(&f.body))
                    .and_then(|()| stdout.write_all(b"\n\n"))
            }
            Output::Json => {
                let headers: serde_json::Map<String, serde_json::Value> = f
                    .headers
                    .iter()
                    .map(|(n, v)| (n.to_string(), serde_json::Value::from(v.to_string())))
                    .collect();
                let line = serde_json::json!({
                    "headers": headers,
                    "body": String::from_utf8_lossy(&f.body),
                });
                writeln!(stdout, "{line}")
            }
        };
        written
            .and_then(|()| stdout.flush())
            .map_err(|e| BenchError::Io(format!("writing standard output: {e}")))?;
        if ack == AckArg::ClientIndividual
            && let Some(id) = f.headers.get("ack")
        {
            writer
                .send(Frame::new(Command::Ack).header("id", id))
                .await?;
        }
        seen += 1;
    }
    let _ = writer.send(Frame::new(Command::Disconnect)).await;
    Ok(())
}
