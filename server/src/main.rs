//! The `stompbox` binary: configuration, logging, signals.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use stompbox::Server;
use stompbox::config::Config;
use stompbox::outbox::SlowConsumerPolicy;
use stompbox::session::AnonymousAccess;

/// jemalloc rather than the system's allocator: after a backlog of 237k
/// queued messages drained, glibc's malloc kept all 132 MB resident, where
/// jemalloc's background thread gives freed pages back to the system within
/// about ten seconds (measured with `stompbox bench memory`).
#[cfg(target_os = "linux")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A STOMP 1.0/1.1/1.2 broker for real-time chat, over TCP and WebSocket.
///
/// Settings come from built-in defaults, then the config file (--config),
/// then STOMPBOX_* environment variables, then flags.
#[derive(Parser)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    serve: ServeArgs,
}

/// How log lines are written.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the broker (the default).
    Serve(Box<ServeArgs>),
    /// Load-test a STOMP broker (this one or any other) over TCP or WebSocket.
    Bench(Box<stompbox::bench::BenchArgs>),
    /// Read a password from standard input and print its argon2 hash, for
    /// the config's [users] or --user LOGIN:HASH.
    Passwd,
    /// Send a message to any STOMP broker and wait for its RECEIPT.
    Send(Box<stompbox::cli::SendArgs>),
    /// Subscribe on any STOMP broker and print what arrives.
    Subscribe(Box<stompbox::cli::SubscribeArgs>),
    /// Call this broker's management API: overview, connections, list, purge, peek, move-back.
    Admin(Box<stompbox::cli::AdminArgs>),
    /// A do-nothing STOMP relay for benchmarks: what this machine can move
    /// with `stompbox bench` (not a broker: no queues, ids, acks or checks).
    Relay(stompbox::bench::relay::RelayArgs),
}

#[derive(Args, Default)]
struct ServeArgs {
    /// TOML config file; its keys are the long flag names with '_' for '-'.
    #[arg(long, env = "STOMPBOX_CONFIG")]
    config: Option<PathBuf>,
    /// STOMP over TCP address [default: 127.0.0.1:61613].
    #[arg(long, env = "STOMPBOX_TCP_LISTEN", value_parser = stompbox::config::resolve_listen_address)]
    tcp_listen: Option<SocketAddr>,
    /// HTTP address: WebSocket at /ws, /health, web client at / [default: 127.0.0.1:15674].
    #[arg(long, env = "STOMPBOX_HTTP_LISTEN", value_parser = stompbox::config::resolve_listen_address)]
    http_listen: Option<SocketAddr>,
    /// Folder served at / instead of the built-in chat page.
    #[arg(long, env = "STOMPBOX_WEB_ROOT")]
    web_root: Option<PathBuf>,
    /// Where the chat page gets a login token: a URL answering {"token": JWT} with the browser's cookies (needs [tokens]).
    #[arg(long, env = "STOMPBOX_CHAT_TOKEN_URL")]
    chat_token_url: Option<String>,
    /// Run as one node of a cluster on this Redis, like redis://127.0.0.1:6379 (a password in it is better kept in the config file or STOMPBOX_CLUSTER, out of the process list).
    #[arg(long, env = "STOMPBOX_CLUSTER")]
    cluster: Option<String>,
    /// In cluster mode: how long a queue message held by a node may go unrefreshed before other nodes take it over, ms [default: 30000].
    #[arg(long, env = "STOMPBOX_CLUSTER_CLAIM_IDLE_MS")]
    cluster_claim_idle_ms: Option<u64>,
    /// A web page origin allowed to open WebSockets besides the broker's own, like https://chat.example.com, or * for any (repeat, or comma-separated) [default: none].
    #[arg(
        long = "allowed-origin",
        env = "STOMPBOX_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    allowed_origins: Vec<String>,
    /// A proxy's IP address whose X-Forwarded-For (WebSocket) or PROXY protocol header (STOMP listeners) names the client (repeat, or comma-separated); forwarded requests from other addresses count as remote [default: none].
    #[arg(
        long = "trusted-proxy",
        env = "STOMPBOX_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    trusted_proxies: Vec<std::net::IpAddr>,
    /// Heart-beats when the client asks for none, "sx,sy" in ms [default: 10000,10000].
    #[arg(long, env = "STOMPBOX_HEART_BEAT")]
    heart_beat: Option<String>,
    /// Shortest heart-beat interval granted to a client asking for less, ms [default: 1000].
    #[arg(long, env = "STOMPBOX_MIN_HEART_BEAT_MS")]
    min_heart_beat_ms: Option<u64>,
    /// Milliseconds a new connection has to send CONNECT [default: 10000].
    #[arg(long, env = "STOMPBOX_CONNECT_TIMEOUT_MS")]
    connect_timeout_ms: Option<u64>,
    /// Milliseconds a frame may take to arrive once begun (slow senders are closed) [default: 30000].
    #[arg(long, env = "STOMPBOX_FRAME_TIMEOUT_MS")]
    frame_timeout_ms: Option<u64>,
    /// Milliseconds a batch may take to write before the client counts as stuck [default: 30000].
    #[arg(long, env = "STOMPBOX_WRITE_TIMEOUT_MS")]
    write_timeout_ms: Option<u64>,
    /// Largest frame accepted, bytes [default: 4456448].
    #[arg(long, env = "STOMPBOX_MAX_FRAME_SIZE")]
    max_frame_size: Option<usize>,
    /// Largest body accepted, bytes [default: 4194304].
    #[arg(long, env = "STOMPBOX_MAX_BODY_SIZE")]
    max_body_size: Option<usize>,
    /// Most headers in one frame [default: 128].
    #[arg(long, env = "STOMPBOX_MAX_HEADERS")]
    max_headers: Option<usize>,
    /// Longest command or header line, bytes [default: 16384].
    #[arg(long, env = "STOMPBOX_MAX_LINE_LENGTH")]
    max_line_length: Option<usize>,
    /// Unsettled deliveries per subscription without prefetch-count [default: 256].
    #[arg(long, env = "STOMPBOX_DEFAULT_PREFETCH")]
    default_prefetch: Option<usize>,
    /// Largest prefetch-count honoured [default: 10000].
    #[arg(long, env = "STOMPBOX_MAX_PREFETCH")]
    max_prefetch: Option<usize>,
    /// Subscriptions per connection [default: 1024].
    #[arg(long, env = "STOMPBOX_MAX_SUBSCRIPTIONS")]
    max_subscriptions: Option<usize>,
    /// Open transactions per connection [default: 64].
    #[arg(long, env = "STOMPBOX_MAX_TRANSACTIONS")]
    max_transactions: Option<usize>,
    /// Bytes buffered in all of a connection's open transactions [default: 16777216].
    #[arg(long, env = "STOMPBOX_MAX_TRANSACTION_BYTES")]
    max_transaction_bytes: Option<usize>,
    /// Topic messages waiting for one connection before the slow-consumer policy applies [default: 4096].
    #[arg(long, env = "STOMPBOX_MAX_TOPIC_BACKLOG")]
    max_topic_backlog: Option<usize>,
    /// What to do with a slow topic subscriber [default: disconnect].
    #[arg(long, env = "STOMPBOX_SLOW_CONSUMER", value_enum)]
    slow_consumer: Option<SlowConsumerPolicy>,
    /// Who may connect without login [default: loopback].
    #[arg(long, env = "STOMPBOX_ANONYMOUS", value_enum)]
    anonymous: Option<AnonymousAccess>,
    /// A user as LOGIN:HASH, the hash from `stompbox passwd` (plain passwords are refused); repeat for more (environment: separated by ';', as hashes hold commas).
    #[arg(long = "user", env = "STOMPBOX_USERS", value_delimiter = ';')]
    users: Vec<String>,
    /// Milliseconds sessions get to finish on shutdown [default: 5000].
    #[arg(long, env = "STOMPBOX_SHUTDOWN_GRACE_MS")]
    shutdown_grace_ms: Option<u64>,
    /// STOMP connections held at once, TCP and WebSocket together [default: the open-file limit less a reserve].
    #[arg(long, env = "STOMPBOX_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// STOMP connections held at once from one source address [default: half of max-connections].
    #[arg(long, env = "STOMPBOX_MAX_CONNECTIONS_PER_IP")]
    max_connections_per_ip: Option<usize>,
    /// Memory high watermark: bytes, a size like 2GiB, or a share of the machine's memory like 40% [default: 40%].
    #[arg(long, env = "STOMPBOX_MEMORY_LIMIT")]
    memory_limit: Option<stompbox::config::ByteSize>,
    /// Directory of the journal that keeps durable messages across restarts [default: ./stompbox-data].
    #[arg(long, env = "STOMPBOX_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Keep nothing on disk: no message survives a restart (as brokers without a journal do).
    #[arg(long, env = "STOMPBOX_IN_MEMORY")]
    in_memory: bool,
    /// Disk the journal may use: bytes or a size like 8GiB; durable SENDs are refused beyond it [default: 8GiB].
    #[arg(long, env = "STOMPBOX_JOURNAL_MAX_BYTES")]
    journal_max_bytes: Option<stompbox::config::ByteSize>,
    /// Size of one journal segment file: bytes or a size like 64MiB [default: 64MiB].
    #[arg(long, env = "STOMPBOX_JOURNAL_SEGMENT_BYTES")]
    journal_segment_bytes: Option<stompbox::config::ByteSize>,
    /// PEM certificate chain for TLS; with --tls-key, opens STOMP over TLS (--tls-listen) and HTTPS/wss (--https-listen) [default: no TLS].
    #[arg(long, env = "STOMPBOX_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "STOMPBOX_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// PEM CA certificates client certificates are checked against (mutual TLS) [default: none asked for].
    #[arg(long, env = "STOMPBOX_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Refuse TLS clients without a certificate from --tls-client-ca.
    #[arg(long, env = "STOMPBOX_TLS_REQUIRE_CLIENT_CERT")]
    tls_require_client_cert: bool,
    /// A verified client certificate's common name is the login when CONNECT names none (RabbitMQ's ssl_cert_login).
    #[arg(long, env = "STOMPBOX_TLS_CERT_LOGIN")]
    tls_cert_login: bool,
    /// STOMP over TLS address [default: 127.0.0.1:61614].
    #[arg(long, env = "STOMPBOX_TLS_LISTEN", value_parser = stompbox::config::resolve_listen_address)]
    tls_listen: Option<SocketAddr>,
    /// HTTPS address: secure WebSocket at /ws, the chat page at / [default: 127.0.0.1:15673].
    #[arg(long, env = "STOMPBOX_HTTPS_LISTEN", value_parser = stompbox::config::resolve_listen_address)]
    https_listen: Option<SocketAddr>,
    /// File holding the HS256 secret for tokens (JWT) given as the CONNECT passcode [default: no tokens].
    #[arg(long, env = "STOMPBOX_TOKEN_SECRET_FILE")]
    token_secret_file: Option<PathBuf>,
    /// PEM RSA or EC public key for RS256/ES256 tokens.
    #[arg(long, env = "STOMPBOX_TOKEN_PUBLIC_KEY_FILE")]
    token_public_key_file: Option<PathBuf>,
    /// JWKS file of public keys for tokens, picked by kid.
    #[arg(long, env = "STOMPBOX_TOKEN_JWKS_FILE")]
    token_jwks_file: Option<PathBuf>,
    /// Management API address (JSON over HTTP) [default: 127.0.0.1:15670].
    #[arg(long, env = "STOMPBOX_MANAGEMENT_LISTEN", value_parser = stompbox::config::resolve_listen_address)]
    management_listen: Option<SocketAddr>,
    /// File holding the management API's bearer token (at least 32 bytes); the API is off without it or --management-user.
    #[arg(long, env = "STOMPBOX_MANAGEMENT_TOKEN_FILE")]
    management_token_file: Option<PathBuf>,
    /// A login of the configured users allowed to use the management API with its password (repeat, or comma-separated).
    #[arg(
        long = "management-user",
        env = "STOMPBOX_MANAGEMENT_USERS",
        value_delimiter = ','
    )]
    management_users: Vec<String>,
    /// Log lines as plain text or as one JSON object each (for log collectors) [default: text].
    #[arg(long, env = "STOMPBOX_LOG_FORMAT", value_enum)]
    log_format: Option<LogFormat>,
    /// Log filter, e.g. info or stompbox=debug [default: info].
    #[arg(long, env = "STOMPBOX_LOG")]
    log: Option<String>,
}

impl ServeArgs {
    fn into_config(self) -> Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::from_file(path)?,
            None => Config::default(),
        };
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = self.$field { config.$field = v; } )* };
        }
        set!(
            tcp_listen,
            http_listen,
            heart_beat,
            min_heart_beat_ms,
            connect_timeout_ms,
            write_timeout_ms,
            frame_timeout_ms,
            max_frame_size,
            max_body_size,
            max_headers,
            max_line_length,
            default_prefetch,
            max_prefetch,
            max_subscriptions,
            max_transactions,
            max_transaction_bytes,
            max_topic_backlog,
            slow_consumer,
            anonymous,
            shutdown_grace_ms,
            memory_limit,
            data_dir,
            journal_max_bytes,
            journal_segment_bytes
        );
        if self.in_memory {
            config.in_memory = true;
        }
        if let Some(max) = self.max_connections {
            config.max_connections = Some(max);
        }
        if let Some(max) = self.max_connections_per_ip {
            config.max_connections_per_ip = Some(max);
        }
        if let Some(root) = self.web_root {
            config.web_root = Some(root);
        }
        if let Some(url) = self.chat_token_url {
            config.chat_token_url = Some(url);
        }
        if let Some(url) = self.cluster {
            config.cluster = Some(url);
        }
        if let Some(ms) = self.cluster_claim_idle_ms {
            config.cluster_claim_idle_ms = ms;
        }
        if !self.allowed_origins.is_empty() {
            config.allowed_origins = self.allowed_origins;
        }
        if !self.trusted_proxies.is_empty() {
            config.trusted_proxies = self.trusted_proxies;
        }
        if !self.users.is_empty() {
            config.users = parse_users(&self.users)?;
        }
        if let (Some(cert), Some(key)) = (self.tls_cert, self.tls_key) {
            let tls = config.tls.get_or_insert_with(|| {
                stompbox::transport::tls::TlsConfig::new(cert.clone(), key.clone())
            });
            tls.cert_file = cert;
            tls.key_file = key;
        }
        let tls_flags = self.tls_client_ca.is_some()
            || self.tls_require_client_cert
            || self.tls_cert_login
            || self.tls_listen.is_some()
            || self.https_listen.is_some();
        match &mut config.tls {
            Some(tls) => {
                if let Some(ca) = self.tls_client_ca {
                    tls.client_ca_file = Some(ca);
                }
                tls.require_client_cert |= self.tls_require_client_cert;
                tls.cert_login |= self.tls_cert_login;
                if let Some(addr) = self.tls_listen {
                    tls.stomp_listen = addr;
                }
                if let Some(addr) = self.https_listen {
                    tls.https_listen = addr;
                }
            }
            None if tls_flags => {
                bail!(
                    "TLS flags given without a certificate: add --tls-cert and --tls-key (or [tls] in the config file)"
                )
            }
            None => {}
        }
        if let Some(addr) = self.management_listen {
            config.management_listen = addr;
        }
        if let Some(file) = self.management_token_file {
            config.management_token_file = Some(file);
        }
        if !self.management_users.is_empty() {
            config.management_users = self.management_users;
        }
        if let Some(file) = self.token_secret_file {
            config.tokens.secret_file = Some(file);
        }
        if let Some(file) = self.token_public_key_file {
            config.tokens.public_key_file = Some(file);
        }
        if let Some(file) = self.token_jwks_file {
            config.tokens.jwks_file = Some(file);
        }
        config.validate()?;
        Ok(config)
    }
}

fn parse_users(specs: &[String]) -> Result<HashMap<String, String>> {
    let mut users = HashMap::new();
    for spec in specs {
        let Some((login, hash)) = spec.split_once(':') else {
            bail!("invalid --user: expected login:HASH (make the hash with `stompbox passwd`)");
        };
        if login.is_empty() {
            bail!("invalid --user: the login is empty");
        }
        // The value is never echoed: it may be a password typed by mistake.
        if let Err(why) = stompbox::security::passwords::check(hash) {
            bail!("invalid --user for {login:?}: the value {why}");
        }
        users.insert(login.to_string(), hash.to_string());
    }
    Ok(users)
}

/// `stompbox passwd`: one line from standard input, its hash on standard output.
fn passwd() -> Result<()> {
    use std::io::BufRead;
    if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        eprintln!("password (echoed; pipe it in to keep it off the screen):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        bail!("no password on standard input");
    }
    let hash = stompbox::security::passwords::hash(password).map_err(anyhow::Error::msg)?;
    use std::io::Write;
    writeln!(std::io::stdout(), "{hash}").context("writing the hash")?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One readable line with the chain of causes; no backtrace for a user's mistake.
            eprintln!("stompbox: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Cmd::Serve(args)) => *args,
        Some(Cmd::Bench(bench)) => return run_bench(*bench),
        Some(Cmd::Passwd) => return passwd(),
        Some(Cmd::Send(args)) => return run_client(stompbox::cli::send(*args)),
        Some(Cmd::Subscribe(args)) => return run_client(stompbox::cli::subscribe(*args)),
        Some(Cmd::Admin(args)) => return run_client(stompbox::cli::admin(*args)),
        Some(Cmd::Relay(args)) => return run_relay(args),
        None => cli.serve,
    };
    let log = args.log.clone().unwrap_or_else(|| "info".into());
    let filter = tracing_subscriber::EnvFilter::try_new(&log)
        .with_context(|| format!("invalid --log filter {log:?}"))?;
    let logs = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter);
    match args.log_format.unwrap_or(LogFormat::Text) {
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // Each line one object; a session's peer and login under "span".
        LogFormat::Json => logs.json().with_current_span(true).init(),
    }
    let config = args.into_config()?;
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(serve(config))
}

/// Runs a client command: its failure is one line (from `main`), never a backtrace.
fn run_client(
    command: impl std::future::Future<Output = Result<(), stompbox::bench::BenchError>>,
) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(command)?;
    Ok(())
}

/// The relay on the same multi-threaded runtime as the broker, so the two
/// are measured alike.
fn run_relay(args: stompbox::bench::relay::RelayArgs) -> Result<()> {
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(stompbox::bench::relay::relay(args))?;
    Ok(())
}

fn run_bench(args: stompbox::bench::BenchArgs) -> Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .init();
    tokio::runtime::Runtime::new()
        .context("cannot start the async runtime")?
        .block_on(stompbox::bench::run(args))?;
    Ok(())
}

async fn serve(config: Config) -> Result<()> {
    // Listen for signals before the listeners open, so a SIGTERM that comes
    // right after startup is a graceful shutdown, not the default kill.
    let signals = ShutdownSignals::install()?;
    survive_file_size_limit();
    raise_open_file_limit();
    return_freed_memory();
    let mut signals = signals;
    let server = Server::start(config).await?;
    while let Signal::Reload = signals.wait().await {
        match server.reload_tls() {
            Ok(()) if server.tls_addr().is_some() => {
                tracing::info!(
                    "SIGHUP: TLS certificate and key read again; new connections use them"
                )
            }
            Ok(()) => tracing::info!("SIGHUP: nothing to reload (no [tls])"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: TLS files not reloaded; the certificate in force stays")
            }
        }
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// A journal write past the process's file-size limit (`ulimit -f`) must
/// fail like a full disk (EFBIG: the publishers are told, the broker goes
/// on), not end the process: SIGXFSZ's default action is to terminate it.
/// A handler of our own replaces that; its notices are not needed.
fn survive_file_size_limit() {
    #[cfg(target_os = "linux")]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // SIGXFSZ is 25 on Linux.
        match signal(SignalKind::from_raw(25)) {
            Ok(stream) => drop(stream),
            Err(e) => tracing::warn!(error = %e, "cannot handle SIGXFSZ"),
        }
    }
}

/// Each connection needs a file descriptor, and many systems start
/// programs with a soft limit of 1024 under a much higher hard limit: take
/// what is allowed, as servers do, rather than refuse clients at 1024.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => tracing::debug!(limit, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Starts jemalloc's background thread, which hands freed pages back to
/// the system even while the broker is idle (without it, purging happens
/// only as a side effect of later allocations), and has it do so within
/// about a second, straight away rather than through `MADV_FREE`.
///
/// jemalloc's defaults (10 s to "muzzy", then 10 s more) left a drained
/// backlog resident: pages marked `MADV_FREE` still count in RSS until the
/// kernel is short of memory. Measured with `stompbox bench memory -s 128
/// --drain-rate 0 --settle 10` after a 10,000-message warm-up, RSS 10 s
/// after draining 1M messages: defaults 1.27x the idle figure, these
/// settings 1.18x; after 3M, 4.4x and 1.32x. Queue throughput with
/// client-individual acks (the most allocation churn) did not move: 6
/// alternating runs, medians 332k (muzzy 0 only) and 326k msgs/s.
fn return_freed_memory() {
    #[cfg(target_os = "linux")]
    {
        use tikv_jemalloc_ctl::{Access, AsName};
        // Arenas made from now on take the defaults; those that exist
        // (one per thread that allocated so far) are set one by one.
        let mut names = vec![
            ("arenas.dirty_decay_ms\0".to_string(), DIRTY_DECAY_MS),
            ("arenas.muzzy_decay_ms\0".to_string(), 0),
        ];
        let arenas = tikv_jemalloc_ctl::arenas::narenas::read().unwrap_or(0);
        for i in 0..arenas {
            names.push((format!("arena.{i}.dirty_decay_ms\0"), DIRTY_DECAY_MS));
            names.push((format!("arena.{i}.muzzy_decay_ms\0"), 0));
        }
        for (name, ms) in &names {
            // An arena not made yet answers with an error: it will take
            // the defaults set first.
            let _ = name.as_str().name().write(*ms);
        }
        if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
            tracing::warn!(error = %e, "cannot start the allocator's background thread");
        }
    }
}

/// How long freed pages stay with the allocator for reuse before they go
/// back to the system, ms.
#[cfg(target_os = "linux")]
const DIRTY_DECAY_MS: isize = 1000;

/// SIGINT (Ctrl+C) and, on Unix, SIGTERM stop the broker; SIGHUP reloads
/// the TLS certificate (rather than end the process, its default).
struct ShutdownSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
    #[cfg(unix)]
    hangup: tokio::signal::unix::Signal,
}

/// What a signal asks for.
enum Signal {
    Stop,
    Reload,
}

impl ShutdownSignals {
    #[cfg(unix)]
    fn install() -> Result<ShutdownSignals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(ShutdownSignals {
            interrupt: signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?,
            terminate: signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?,
            hangup: signal(SignalKind::hangup()).context("cannot listen for SIGHUP")?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> Result<ShutdownSignals> {
        Ok(ShutdownSignals {})
    }

    #[cfg(unix)]
    async fn wait(&mut self) -> Signal {
        tokio::select! {
            _ = self.interrupt.recv() => Signal::Stop,
            _ = self.terminate.recv() => Signal::Stop,
            _ = self.hangup.recv() => Signal::Reload,
        }
    }

    #[cfg(not(unix))]
    async fn wait(&mut self) -> Signal {
        let _ = tokio::signal::ctrl_c().await;
        Signal::Stop
    }
}
