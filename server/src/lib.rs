//! Stompbox: a STOMP 1.0/1.1/1.2 broker over TCP and WebSocket.
//!
//! # Layout
//! - [`cli`]: `stompbox send` and `stompbox subscribe`.
//! - [`config`]: one `Config` from defaults, file, environment and flags.
//! - [`ids`]: `SessionId`, `SubscriptionId`, `MessageId`.
//! - [`protocol`]: validated client frames and the frames the server builds.
//! - [`session`]: one connection's protocol state, without sockets; its
//!   [`driver`](session::driver) is the one task per connection.
//! - [`broker`]: destinations (queues, topics) and routing.
//! - [`metrics`]: counters and the `/metrics` exposition.
//! - [`outbox`]: the bounded path from the broker to a connection.
//! - [`security`]: login throttling.
//! - [`transport`]: TCP and WebSocket adapters, and the HTTP router.
//!
//! [`Server::start`] is what `main` and the end-to-end tests call.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod error;
pub mod ids;
pub mod management;
pub mod metrics;
pub mod outbox;
pub mod protocol;
pub mod registry;
pub mod security;
pub mod session;
pub mod store;
pub mod terms;
#[cfg(test)]
mod test_support;
pub mod transport;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, TcpSocket};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::config::{Config, ConfigError};
use crate::store::{Journal, JournalError};
use crate::transport::admission::ConnectionSlots;
use crate::transport::http::{HttpState, router};

/// Why the server could not start.
#[derive(Debug, Error)]
pub enum StartError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener could not bind.
    #[error("cannot listen on {addr} ({what})")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The journal could not be opened.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The TLS certificate, key or CA files are unusable.
    #[error(transparent)]
    Tls(#[from] transport::tls::TlsError),
}

/// Connections the kernel may hold for a listener before it accepts them
/// (capped by `net.core.somaxconn`). When many clients arrive at once (all of
/// them reconnecting after a restart, say), a full queue drops their SYNs
/// and each waits a second to retry: with the 128 `TcpListener::bind` gave, `stompbox
/// bench connections` opening 2,000 overflowed it 126-128 times a run and
/// managed 1,900 conn/s instead of 14,000.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener and reports the address it got (port 0 picks one).
fn bind(addr: SocketAddr, what: &'static str) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { what, addr, source };
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
    .map_err(fail)?;
    // As std's and tokio's own bind do: a restarted broker can listen again
    // while its previous connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true).map_err(fail)?;
    socket.bind(addr).map_err(fail)?;
    let listener = socket.listen(LISTEN_BACKLOG).map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// The configured connection limit, or the one the open-file limit allows.
fn max_connections(config: &Config) -> usize {
    config.max_connections.unwrap_or_else(|| {
        match rlimit::getrlimit(rlimit::Resource::NOFILE) {
            Ok((soft, _hard)) => transport::admission::fitting_open_file_limit(soft),
            // Not knowable here (not Unix, say): no limit of our own.
            Err(_) => usize::MAX,
        }
    })
}

/// How often unused destinations are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// How often the journal is checked for an old segment worth compacting.
const COMPACT_EVERY: Duration = Duration::from_secs(2);

/// Ticks queues whose delayed messages fall due or whose messages
/// expire, when the broker's timers say so, and moves dead letters.
async fn queue_timers(broker: Arc<Broker>, cancel: CancellationToken) {
    // Long enough to cost nothing while idle; a new earlier wake-up
    // interrupts it.
    const IDLE: Duration = Duration::from_secs(3600);
    loop {
        let b = broker.clone();
        // Reads paged messages back at times: off the async workers.
        let next = match tokio::task::spawn_blocking(move || b.run_timers()).await {
            Ok(next) => next,
            Err(e) => {
                tracing::error!(error = %e, "queue timers failed");
                None
            }
        };
        let wait = next.map_or(IDLE, |t| {
            Duration::from_millis(t.saturating_sub(broker.clock().now_ms()))
        });
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = broker.timers().changed() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

/// Keeps the journal's disk use near its live data: when the oldest
/// segment holds back newer ones for the sake of a few live records
/// (a message nobody consumes, a room's old history), those records are
/// written again at the end and the segment goes.
async fn compactor(broker: Arc<Broker>, cancel: CancellationToken) {
    // A segment whose live records are all being delivered cannot be
    // compacted now; it is tried again less and less often, since each try
    // looks at every waiting message.
    let mut wait = COMPACT_EVERY;
    let mut last_fruitless = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let Some(segment) = broker.journal().and_then(|j| j.compaction_candidate()) else {
            wait = COMPACT_EVERY;
            continue;
        };
        let b = broker.clone();
        // Copies bodies under destination locks: off the async workers.
        match tokio::task::spawn_blocking(move || b.compact(segment)).await {
            Ok(0) => {
                wait = if last_fruitless == Some(segment) {
                    (wait * 2).min(Duration::from_secs(64))
                } else {
                    COMPACT_EVERY
                };
                last_fruitless = Some(segment);
            }
            Ok(moved) => {
                tracing::info!(segment, moved, "journal: compacted the oldest segment");
                wait = COMPACT_EVERY;
                last_fruitless = None;
            }
            Err(e) => tracing::error!(error = %e, "journal compaction failed"),
        }
    }
}

/// Serves the router on one listener until `cancel`.
async fn serve_http<L>(listener: L, app: axum::Router, cancel: CancellationToken)
where
    L: axum::serve::Listener<Addr = transport::Peer>,
    transport::Peer:
        for<'a> axum::extract::connect_info::Connected<axum::serve::IncomingStream<'a, L>>,
{
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<transport::Peer>(),
    )
    .with_graceful_shutdown(cancel.cancelled_owned())
    .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "HTTP server failed");
    }
}

/// A running broker.
pub struct Server {
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    management_addr: Option<SocketAddr>,
    /// With TLS: where STOMP over TLS and HTTPS listen, and the certificates.
    tls: Option<(SocketAddr, SocketAddr, Arc<transport::tls::TlsAcceptors>)>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    listeners: Vec<JoinHandle<()>>,
    grace: Duration,
    broker: Arc<Broker>,
    /// In cluster mode: the token that stops the cluster's tasks, and them.
    cluster: Option<(CancellationToken, Vec<JoinHandle<()>>)>,
}

impl Server {
    /// Binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let settings = Arc::new(config.driver_settings()?);
        let limits = config.limits();
        let memory_limit = config.memory_limit_bytes()?;
        tracing::info!(bytes = memory_limit, "memory limit");
        let memory = broker::Memory::new(usize::try_from(memory_limit).unwrap_or(usize::MAX));
        let broker = match config.journal()? {
            None => {
                tracing::warn!("running in memory only: no message survives a restart");
                Broker::configured(config.topics.clone(), config.queues.clone(), memory)
            }
            Some(journal_config) => {
                let (journal, recovered) = Journal::open(&journal_config)?;
                let r = &recovered.report;
                tracing::info!(
                    dir = %journal_config.dir.display(),
                    segments = r.segments,
                    records = r.records,
                    messages = r.messages,
                    torn_bytes = r.torn_bytes,
                    "journal recovered"
                );
                Broker::durable(
                    config.topics.clone(),
                    config.queues.clone(),
                    memory,
                    journal,
                    recovered,
                )
            }
        };
        // Checked by `validate` above.
        let exchanges =
            broker::exchanges::Exchanges::new(&config.exchanges, broker.journal().map(|j| j.dir()))
                .map_err(|e| config::ConfigError::Invalid {
                    setting: "exchanges",
                    reason: e.to_string(),
                })?;
        let mut broker = broker.with_exchanges(exchanges);
        let mut cluster = None;
        if let Some(url) = &config.cluster {
            // Checked by `validate` above.
            let link =
                crate::cluster::Cluster::new(url, config.cluster_claim_idle()).map_err(|e| {
                    config::ConfigError::Invalid {
                        setting: "cluster",
                        reason: e.to_string(),
                    }
                })?;
            broker = broker.with_cluster(link.clone());
            cluster = Some(link);
        }
        let broker = Arc::new(broker);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();

        let (tcp, tcp_addr) = bind(config.tcp_listen, "STOMP over TCP")?;
        let (http, http_addr) = bind(config.http_listen, "HTTP and WebSocket")?;
        let tls = match &config.tls {
            None => None,
            Some(tls_config) => {
                let acceptors = transport::tls::TlsAcceptors::load(tls_config)?;
                let (stomp, stomp_addr) = bind(tls_config.stomp_listen, "STOMP over TLS")?;
                let (https, https_addr) =
                    bind(tls_config.https_listen, "HTTPS and secure WebSocket")?;
                Some((acceptors, stomp, stomp_addr, https, https_addr))
            }
        };

        let max = max_connections(&config);
        // Half by default: generous (a whole office behind one NAT address
        // gets in), yet no single address can lock everyone else out.
        let per_address = config.max_connections_per_ip.unwrap_or((max / 2).max(1));
        let slots = ConnectionSlots::new(max, per_address);
        tracing::info!(max, per_address, "connection limits");
        let trusted_proxies = Arc::new(config.trusted_proxies.clone());
        let tcp_task = tokio::spawn(transport::tcp::serve(
            tcp,
            transport::tcp::Edge {
                tls: None,
                trusted_proxies: trusted_proxies.clone(),
            },
            broker.clone(),
            settings.clone(),
            limits,
            slots.clone(),
            cancel.clone(),
            tracker.clone(),
        ));
        let management_auth = config.management_auth()?;
        let mut management_addr = None;
        let mut management_listener = None;
        let mut allowed_origins = config.allowed_origins.clone();
        if management_auth.is_configured() {
            let (listener, addr) = bind(config.management_listen, "the management API")?;
            // The admin page's STOMP console opens /ws from the API's origin.
            allowed_origins.push(format!("http://{addr}"));
            management_listener = Some(listener);
            management_addr = Some(addr);
        }
        let app = router(
            HttpState {
                broker: broker.clone(),
                settings: settings.clone(),
                limits,
                cancel: cancel.clone(),
                tracker: tracker.clone(),
                slots: slots.clone(),
                origins: Arc::new(transport::origin::AllowedOrigins::new(allowed_origins)),
                trusted_proxies: trusted_proxies.clone(),
                page_config: serde_json::json!({ "token_url": config.chat_token_url })
                    .to_string()
                    .into(),
            },
            config.web_root.clone(),
        );
        let http_task = tokio::spawn(serve_http(
            transport::listener::PlainListener(http),
            app.clone(),
            cancel.clone(),
        ));
        let mut tls_addrs = None;
        let mut tls_tasks = Vec::new();
        if let Some((acceptors, stomp, stomp_addr, https, https_addr)) = tls {
            tls_tasks.push(tokio::spawn(transport::tcp::serve(
                stomp,
                transport::tcp::Edge {
                    tls: Some(acceptors.clone()),
                    trusted_proxies: trusted_proxies.clone(),
                },
                broker.clone(),
                settings.clone(),
                limits,
                slots.clone(),
                cancel.clone(),
                tracker.clone(),
            )));
            let https = transport::listener::TlsListener::start(
                https,
                acceptors.clone(),
                settings.connect_timeout,
                cancel.clone(),
            )
            .map_err(|source| StartError::Bind {
                what: "HTTPS and secure WebSocket",
                addr: https_addr,
                source,
            })?;
            tls_tasks.push(tokio::spawn(serve_http(https, app, cancel.clone())));
            tracing::info!(%stomp_addr, "STOMP over TLS listening");
            tracing::info!(%https_addr, "HTTPS listening: secure WebSocket at wss://{https_addr}/ws");
            tls_addrs = Some((stomp_addr, https_addr, acceptors));
        }
        // Forget unused destinations once a minute.
        let sweeper = {
            let broker = broker.clone();
            let cancel = cancel.clone();
            tokio::spawn(async move {
                // The first sweep a period after start: nothing is unused yet.
                let mut every = tokio::time::interval_at(
                    tokio::time::Instant::now() + SWEEP_EVERY,
                    SWEEP_EVERY,
                );
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = every.tick() => {
                            let removed = broker.sweep();
                            if removed > 0 {
                                tracing::debug!(removed, "unused destinations forgotten");
                            }
                        }
                    }
                }
            })
        };
        let mut management_task = None;
        match (management_listener, management_addr) {
            (Some(listener), Some(addr)) => {
                management_task = Some(tokio::spawn(management::serve(
                    listener,
                    management::router(
                        broker.clone(),
                        management_auth,
                        format!("ws://{http_addr}/ws"),
                    ),
                    cancel.clone(),
                )));
                tracing::info!(%addr, "management API listening at http://{addr}/api/overview, admin page at http://{addr}/admin");
            }
            _ => tracing::info!(
                "management API off: set management_token_file or management_users to use it"
            ),
        }
        let mut listeners = vec![
            tcp_task,
            http_task,
            sweeper,
            tokio::spawn(queue_timers(broker.clone(), cancel.clone())),
        ];
        listeners.extend(tls_tasks);
        listeners.extend(management_task);
        if broker.journal().is_some() {
            listeners.push(tokio::spawn(compactor(broker.clone(), cancel.clone())));
        }
        let mut cluster_part = String::new();
        let cluster_cancel = CancellationToken::new();
        let mut cluster_tasks = Vec::new();
        if let Some(cluster) = &cluster {
            // Its own token: the cluster's tasks outlive the sessions at
            // shutdown, to carry their last requests and leave cleanly.
            cluster_tasks = cluster.run(broker.clone(), cluster_cancel.clone());
            // A node that starts beside its Redis should be whole when it
            // says ready; one whose Redis is down still serves queues.
            let up = cluster.wait_up(Duration::from_secs(5)).await;
            cluster_part = format!(
                "; cluster node on Redis {} ({})",
                cluster.shown(),
                if up {
                    "connected"
                } else {
                    "unreachable: retrying, topic messages refused until then"
                }
            );
        }
        tracing::info!(%tcp_addr, "STOMP over TCP listening");
        tracing::info!(%http_addr, "HTTP listening: WebSocket at ws://{http_addr}/ws, health at /health, metrics at /metrics");
        // One line that says what this broker is, for whoever reads the log first.
        let tls_part = tls_addrs.as_ref().map_or(String::new(), |(s, h, _)| {
            format!(", stomp+ssl://{s}, wss://{h}/ws")
        });
        let data = match broker.journal() {
            Some(j) => format!("journal in {}", j.dir().display()),
            None => "in memory only (nothing survives a restart)".into(),
        };
        tracing::info!(
            "stompbox {} ready: stomp://{tcp_addr}, ws://{http_addr}/ws{tls_part}; access: {}; {data}{cluster_part}; at most {max} connections ({per_address} per address), memory limit {} MiB",
            env!("CARGO_PKG_VERSION"),
            config.access_summary(),
            memory_limit >> 20,
        );
        Ok(Server {
            tcp_addr,
            http_addr,
            management_addr,
            tls: tls_addrs,
            cancel,
            tracker,
            listeners,
            grace: Duration::from_millis(config.shutdown_grace_ms),
            broker,
            cluster: cluster.map(|_| (cluster_cancel, cluster_tasks)),
        })
    }

    /// Where STOMP over TCP listens.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Where HTTP (and WebSocket at `/ws`) listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the management API listens, when it is on.
    pub fn management_addr(&self) -> Option<SocketAddr> {
        self.management_addr
    }

    /// Where STOMP over TLS listens, when TLS is configured.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.0)
    }

    /// Where HTTPS (and `wss://…/ws`) listens, when TLS is configured.
    pub fn https_addr(&self) -> Option<SocketAddr> {
        self.tls.as_ref().map(|t| t.1)
    }

    /// Reads the TLS certificate and key files again (on SIGHUP): new
    /// handshakes use them, open connections go on. Without TLS, nothing.
    pub fn reload_tls(&self) -> Result<(), transport::tls::TlsError> {
        match &self.tls {
            Some((_, _, acceptors)) => acceptors.reload(),
            None => Ok(()),
        }
    }

    /// The broker, for inspection.
    pub fn broker(&self) -> &Arc<Broker> {
        &self.broker
    }

    /// Stops accepting, tells every session to close (each sends an ERROR
    /// and flushes), and waits for them up to the grace period.
    pub async fn shutdown(self) {
        let deadline = tokio::time::Instant::now() + self.grace;
        self.cancel.cancel();
        // The HTTP server waits for its open connections (browsers keep
        // some alive); past the grace period they are dropped.
        for task in self.listeners {
            let abort = task.abort_handle();
            if tokio::time::timeout_at(deadline, task).await.is_err() {
                tracing::warn!("a listener did not stop within the grace period");
                abort.abort();
            }
        }
        self.tracker.close();
        if tokio::time::timeout_at(deadline, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                remaining = self.tracker.len(),
                "sessions still open after the grace period"
            );
        }
        if let (Some((stop, tasks)), Some(cluster)) = (self.cluster, self.broker.cluster()) {
            cluster.leave(&self.broker, Duration::from_secs(5)).await;
            stop.cancel();
            for task in tasks {
                let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
            }
        }
        if let Some(journal) = self.broker.journal().cloned() {
            // Everything accepted is written before the process ends.
            let _ = tokio::task::spawn_blocking(move || journal.close()).await;
        }
        tracing::info!("stopped");
    }
}
