//! `stompbox bench`: a load tool for any STOMP broker (this one, RabbitMQ,
//! ActiveMQ, ...), over TCP or WebSocket. Every scenario is bounded in
//! message count and time, checks that every message arrived exactly once,
//! and prints a human summary, or one JSON line with `--json`.

pub mod client;
pub mod connections;
pub mod latency;
pub mod memory;
pub mod relay;
pub mod report;
pub mod throughput;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use thiserror::Error;

pub use client::{Credentials, Target};
pub use report::Report;

/// Why a run failed.
#[derive(Debug, Error)]
pub enum BenchError {
    /// The command line does not make sense.
    #[error("{0}")]
    Usage(String),
    /// The broker could not be reached.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// Something took longer than the run's bounds allow.
    #[error("timed out: {0}")]
    Timeout(String),
    /// The broker sent an ERROR frame.
    #[error("the broker sent ERROR: {0}")]
    Broker(String),
    /// The broker refused a frame on its RECEIPT (`x-error`).
    #[error("the broker refused it: {0}")]
    Refused(String),
    /// The management API answered with an error.
    #[error("the management API said: {0}")]
    Api(String),
    /// The broker sent something unexpected.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// The broker closed a connection.
    #[error("the broker closed a connection")]
    Closed,
    /// A socket failed.
    #[error("i/o error: {0}")]
    Io(String),
    /// Messages went missing or arrived twice.
    #[error("{0}")]
    Incomplete(String),
}

/// Options every scenario takes.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The broker: stomp://host:port, stomp+ssl://host:port (with --tls-ca) or ws://host:port/ws.
    #[arg(long, default_value = "stomp://127.0.0.1:61613", global = true)]
    pub url: String,
    /// Where consumers and subscribers connect instead (repeat: spread
    /// over them in turn), e.g. other nodes of a cluster [default: --url].
    #[arg(long = "receive-url", global = true)]
    pub receive_urls: Vec<String>,
    /// PEM CA certificate that signed the broker's, for stomp+ssl://.
    #[arg(long, global = true)]
    pub tls_ca: Option<std::path::PathBuf>,
    /// CONNECT login.
    #[arg(long, global = true)]
    pub login: Option<String>,
    /// CONNECT passcode.
    #[arg(long, global = true)]
    pub passcode: Option<String>,
    /// CONNECT host (virtual host) [default: localhost].
    #[arg(long, global = true)]
    pub host: Option<String>,
    /// Print one JSON line instead of the human summary.
    #[arg(long, global = true)]
    pub json: bool,
    /// Give up after this many seconds, reporting what is missing.
    #[arg(long, default_value_t = 120, global = true)]
    pub timeout: u64,
}

impl Common {
    fn target(&self) -> Result<Target, BenchError> {
        Target::parse_with(&self.url, self.tls_ca.as_deref())
    }

    /// Where the `i`th consumer or subscriber connects.
    fn receive_target(&self, i: usize) -> Result<Target, BenchError> {
        match self.receive_urls.len() {
            0 => self.target(),
            n => Target::parse_with(&self.receive_urls[i % n], self.tls_ca.as_deref()),
        }
    }

    fn credentials(&self) -> Credentials {
        Credentials {
            login: self.login.clone(),
            passcode: self.passcode.clone(),
            host: self.host.clone(),
        }
    }

    fn deadline(&self) -> tokio::time::Instant {
        tokio::time::Instant::now() + Duration::from_secs(self.timeout)
    }
}

/// How queue consumers acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AckArg {
    /// No ACK frames.
    Auto,
    /// One ACK per message.
    ClientIndividual,
}

/// The scenarios.
#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// P producers and C consumers on one queue: end-to-end msgs/s, each message exactly once.
    Queue(throughput::QueueArgs),
    /// One publisher, K subscribers on one topic: delivered msgs/s, every copy accounted for.
    Fanout(throughput::FanoutArgs),
    /// A fixed publish rate to one subscriber: latency percentiles.
    Latency(latency::LatencyArgs),
    /// M idle connections held open: how many succeed, how fast, broker memory per connection.
    Connections(connections::ConnectionsArgs),
    /// R rooms of U users each sending at a rate: delivery latency and completeness.
    Chat(latency::ChatArgs),
    /// Producers fill a queue past the broker's limits while a bystander does round trips: RSS, refusals, bystander latency.
    Memory(memory::MemoryArgs),
}

/// `stompbox bench ...`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

/// Runs a scenario and prints its report.
pub async fn run(args: BenchArgs) -> Result<Report, BenchError> {
    let common = &args.common;
    let report = match &args.scenario {
        Scenario::Queue(a) => throughput::queue(common, a).await?,
        Scenario::Fanout(a) => throughput::fanout(common, a).await?,
        Scenario::Latency(a) => latency::latency(common, a).await?,
        Scenario::Connections(a) => connections::connections(common, a).await?,
        Scenario::Chat(a) => latency::chat(common, a).await?,
        Scenario::Memory(a) => memory::memory(common, a).await?,
    };
    report.print(common.json);
    Ok(report)
}

/// Keeps a producer's connection open until the run is over (its task is
/// aborted then): some brokers drop the unflushed work of a closed producer.
async fn hold_open<T>(connection: T) -> Result<(), BenchError> {
    std::future::pending::<()>().await;
    drop(connection);
    Ok(())
}

/// A destination name no other run uses.
fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    format!(
        "{prefix}-{now}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// A progress bar on stderr (drawn only on a terminal, never with --json).
fn progress(common: &Common, total: u64, what: &str) -> Arc<indicatif::ProgressBar> {
    let bar = if common.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::with_draw_target(
            Some(total),
            indicatif::ProgressDrawTarget::stderr(),
        )
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{msg:>10} [{bar:40}] {pos}/{len} ({per_sec}, {elapsed})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what.to_string());
    Arc::new(bar)
}

/// Bodies carry "TAG:A:B:" then padding, so they stay text (WebSocket text
/// frames) and any broker passes them through.
fn body(tag: char, a: u64, b: u64, size: usize) -> bytes::Bytes {
    let mut s = format!("{tag}:{a}:{b}:");
    if s.len() < size {
        s.extend(std::iter::repeat_n('x', size - s.len()));
    }
    bytes::Bytes::from(s)
}

/// Reads the two numbers back from a body made by [`body`].
fn parse_body(body: &[u8], tag: u8) -> Option<(u64, u64)> {
    let mut parts = body.splitn(4, |&b| b == b':');
    if parts.next()? != [tag] {
        return None;
    }
    let a = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    let b = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
    Some((a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip_and_pad() {
        let b = body('S', 3, 99, 64);
        assert_eq!(b.len(), 64);
        assert_eq!(parse_body(&b, b'S'), Some((3, 99)));
        assert_eq!(parse_body(&b, b'T'), None);
        assert_eq!(parse_body(b"garbage", b'S'), None);
    }

    #[test]
    fn targets() {
        assert_eq!(
            Target::parse("stomp://localhost").unwrap(),
            Target::Tcp("localhost:61613".into())
        );
        assert_eq!(
            Target::parse("tcp://1.2.3.4:1").unwrap(),
            Target::Tcp("1.2.3.4:1".into())
        );
        assert_eq!(
            Target::parse("ws://h:1/ws").unwrap(),
            Target::Ws("ws://h:1/ws".into())
        );
        assert!(Target::parse("http://h").is_err());
        assert!(Target::parse("wss://h").is_err());
    }
}
