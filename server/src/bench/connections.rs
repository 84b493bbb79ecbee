//! `connections`: many idle connections held open, and what they cost the broker.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::connect;
use super::{BenchError, Common, Report, progress};

/// `connections` options.
#[derive(Args, Debug, Clone)]
pub struct ConnectionsArgs {
    /// Connections to open and hold.
    #[arg(short = 'm', long, default_value_t = 1000)]
    pub count: usize,
    /// The broker's process id, to measure its memory per connection (Linux /proc).
    #[arg(long)]
    pub pid: Option<u32>,
    /// Seconds to hold the connections once open.
    #[arg(long, default_value_t = 2)]
    pub hold: u64,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    pub concurrency: usize,
    /// Connections per loopback source address (127.0.0.1, then .2, ...): one
    /// address reaches one port from at most its ephemeral port range, about 28,000 by default.
    #[arg(long, default_value_t = 20_000)]
    pub per_source: usize,
}

/// The loopback source address of connection `i`.
fn source_address(i: usize, per_source: usize) -> IpAddr {
    let n = u32::try_from(i / per_source).unwrap_or(u32::MAX - 1) + 1;
    IpAddr::V4(Ipv4Addr::from(
        u32::from(Ipv4Addr::new(127, 0, 0, 0)).saturating_add(n),
    ))
}

/// The resident memory of a process, in KiB.
pub(super) fn rss_kib(pid: u32) -> Result<u64, BenchError> {
    status_kib(pid, "VmRSS")
}

/// The anonymous part of the resident memory (the heap and stacks, not the
/// executable's pages that running code touched), KiB.
pub(super) fn rss_anon_kib(pid: u32) -> Result<u64, BenchError> {
    status_kib(pid, "RssAnon")
}

fn status_kib(pid: u32, field: &str) -> Result<u64, BenchError> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| BenchError::Usage(format!("cannot read the memory of process {pid}: {e}")))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| BenchError::Usage(format!("no {field} for process {pid}")))
}

/// Opens M connections (spread over loopback source addresses when the
/// broker is on loopback, so more than one address's port range fits).
pub async fn connections(common: &Common, args: &ConnectionsArgs) -> Result<Report, BenchError> {
    if args.count == 0 || args.concurrency == 0 || args.per_source == 0 {
        return Err(BenchError::Usage(
            "--count, --concurrency and --per-source must be at least 1".into(),
        ));
    }
    if args.count.div_ceil(args.per_source) > 254 {
        return Err(BenchError::Usage(format!(
            "{} connections at {} per source address need more than 127.0.0.1-254",
            args.count, args.per_source
        )));
    }
    let target = common.target()?;
    let credentials = Arc::new(common.credentials());
    // One descriptor per connection, plus some for everything else.
    let wanted = args.count as u64 + 256;
    let limit = rlimit::increase_nofile_limit(wanted)
        .map_err(|e| BenchError::Usage(format!("cannot raise the open-file limit: {e}")))?;
    if limit < wanted {
        return Err(BenchError::Usage(format!(
            "the open-file limit is {limit}, {wanted} are needed: raise it (ulimit -n) and retry"
        )));
    }
    let loopback = match &target {
        super::Target::Tcp(addr) | super::Target::Tls(super::client::TlsTarget { addr, .. }) => {
            addr.starts_with("127.") || addr.starts_with("localhost")
        }
        super::Target::Ws(url) => url.contains("//127.") || url.contains("//localhost"),
    };
    let before = args.pid.map(rss_kib).transpose()?;
    let bar = progress(common, args.count as u64, "connect");
    let gate = Arc::new(Semaphore::new(args.concurrency));
    let deadline = common.deadline();
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for i in 0..args.count {
        let source = loopback.then(|| source_address(i, args.per_source));
        let target = target.clone();
        let credentials = credentials.clone();
        let gate = gate.clone();
        let bar = bar.clone();
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await;
            let conn = tokio::time::timeout_at(deadline, connect(&target, &credentials, source))
                .await
                .map_err(|_| BenchError::Timeout("connecting".into()))
                .and_then(|r| r);
            bar.inc(1);
            conn
        });
    }
    let mut held = Vec::with_capacity(args.count);
    let mut failed = 0u64;
    let mut first_error = None;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    let open_secs = start.elapsed().as_secs_f64().max(1e-9);
    bar.finish_and_clear();
    // Let the broker settle before reading its memory.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = args.pid.map(rss_kib).transpose()?;
    tokio::time::sleep(Duration::from_secs(args.hold)).await;
    let opened = held.len();
    drop(held);
    if opened == 0 {
        return Err(BenchError::Connect(
            first_error.unwrap_or_else(|| "no connection succeeded".into()),
        ));
    }
    let mut params = serde_json::Map::new();
    params.insert("count".into(), json!(args.count));
    params.insert("concurrency".into(), json!(args.concurrency));
    let sources = if loopback {
        args.count.div_ceil(args.per_source)
    } else {
        1
    };
    let mut results = vec![
        ("opened", opened as f64, "connections"),
        ("failed", failed as f64, "connections"),
        ("connects_per_sec", opened as f64 / open_secs, "conn/s"),
        ("source_addresses", sources as f64, "addresses"),
    ];
    if let (Some(b), Some(a)) = (before, after) {
        results.push(("broker_rss_before_kib", b as f64, "KiB"));
        results.push(("broker_rss_after_kib", a as f64, "KiB"));
        results.push((
            "kib_per_connection",
            a.saturating_sub(b) as f64 / opened as f64,
            "KiB",
        ));
    }
    if let Some(e) = first_error {
        tracing::warn!(failed, first_error = %e, "some connections failed");
    }
    Ok(Report {
        scenario: "connections",
        transport: target.transport(),
        params,
        results,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_spread_over_loopback_addresses_in_blocks() {
        assert_eq!(source_address(0, 100).to_string(), "127.0.0.1");
        assert_eq!(source_address(99, 100).to_string(), "127.0.0.1");
        assert_eq!(source_address(100, 100).to_string(), "127.0.0.2");
        assert_eq!(source_address(100_000, 20_000).to_string(), "127.0.0.6");
    }
}
