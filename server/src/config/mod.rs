//! One `Config`: built-in defaults, overridden by a TOML file, then by
//! `STOMPBOX_*` environment variables, then by command-line flags.

mod derived;
mod validate;
mod values;

pub(crate) use values::listen_address;
pub use values::{ByteSize, resolve_listen_address};

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::broker::{QueuePolicy, TopicPolicy};
use crate::outbox::SlowConsumerPolicy;
use crate::session::driver::DriverSettings;
use crate::session::{AnonymousAccess, SessionSettings};

/// Everything the broker can be told. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// STOMP over TCP.
    #[serde(deserialize_with = "listen_address")]
    pub tcp_listen: SocketAddr,
    /// HTTP: WebSocket at /ws, /health, the web client.
    #[serde(deserialize_with = "listen_address")]
    pub http_listen: SocketAddr,
    /// A folder served at `/` instead of the chat page built into the binary.
    pub web_root: Option<PathBuf>,
    /// Where the chat page gets a token to log in with (a JSON `{"token":
    /// ...}` answer, fetched with the browser's cookies for that site): the
    /// operator's sign-in service. The page then offers "Sign in with your
    /// account" and renews the token before it expires.
    pub chat_token_url: Option<String>,
    /// Run as one node of a cluster on this Redis (`redis://[:password@]host:port[/db]`):
    /// topics are shared by every node using it.
    pub cluster: Option<String>,
    /// In cluster mode, how long a queue message a node took may go
    /// without the node refreshing its claim before other nodes take it
    /// over (the node died): milliseconds.
    pub cluster_claim_idle_ms: u64,
    /// Web page origins (`https://chat.example.com`, or `*`) allowed to open
    /// WebSockets besides the broker's own; programs (no Origin) always are.
    pub allowed_origins: Vec<String>,
    /// Proxies (IP addresses) whose `X-Forwarded-For` names the WebSocket
    /// client, and whose connections to the STOMP listeners may begin with
    /// a PROXY protocol header (v1 or v2) naming it; a forwarded request
    /// from any other address counts as remote (never loopback).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Where the management API listens (only when `management_token_file`
    /// or `management_users` says who may use it).
    #[serde(deserialize_with = "listen_address")]
    pub management_listen: SocketAddr,
    /// A file holding the management API's bearer token (at least 32 bytes).
    pub management_token_file: Option<PathBuf>,
    /// Logins of `[users]` that may use the management API (Basic credentials).
    pub management_users: Vec<String>,
    /// TLS listeners (`[tls]`): STOMP over TLS and HTTPS with `wss://…/ws`.
    pub tls: Option<crate::transport::tls::TlsConfig>,
    /// Tokens (JWT) accepted as CONNECT passcodes (`[tokens]`).
    pub tokens: crate::security::tokens::TokenConfig,
    /// "sx,sy": the heart-beats the server offers and asks for, in ms,
    /// when the client asks for none of its own.
    pub heart_beat: String,
    /// The shortest heart-beat interval granted to a client that asks for
    /// a shorter one, ms.
    pub min_heart_beat_ms: u64,
    /// Milliseconds a new connection has to send CONNECT.
    pub connect_timeout_ms: u64,
    /// Milliseconds one batch of frames may take to write before the client counts as stuck.
    pub write_timeout_ms: u64,
    /// Milliseconds a frame may take to arrive once its first byte has.
    pub frame_timeout_ms: u64,
    /// Largest frame accepted, bytes.
    pub max_frame_size: usize,
    /// Largest body accepted, bytes.
    pub max_body_size: usize,
    /// Most headers in one frame.
    pub max_headers: usize,
    /// Longest command or header line, bytes.
    pub max_line_length: usize,
    /// Unsettled deliveries per subscription without `prefetch-count`.
    pub default_prefetch: usize,
    /// Largest `prefetch-count` honoured.
    pub max_prefetch: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Open transactions per connection.
    pub max_transactions: usize,
    /// Bytes buffered in all of a connection's open transactions.
    pub max_transaction_bytes: usize,
    /// Topic messages waiting for one connection before the slow-consumer policy applies.
    pub max_topic_backlog: usize,
    /// `disconnect` or `drop-new`.
    pub slow_consumer: SlowConsumerPolicy,
    /// Who may connect without login: `loopback`, `always`, `never`.
    pub anonymous: AnonymousAccess,
    /// login = passcode.
    pub users: HashMap<String, String>,
    /// Milliseconds sessions get to finish on shutdown.
    pub shutdown_grace_ms: u64,
    /// STOMP connections (TCP and WebSocket together) held at once; unset:
    /// as many as the open-file limit allows, less a reserve.
    pub max_connections: Option<usize>,
    /// STOMP connections held at once from one source address; unset: half
    /// of `max_connections`.
    pub max_connections_per_ip: Option<usize>,
    /// The memory high watermark: bytes (`"512MiB"`, `"2GB"`, `1000000`) or
    /// a share of the machine's memory (`"40%"`). Above it publishers wait.
    pub memory_limit: ByteSize,
    /// Topic policies (history, size and rate limits) by name pattern; first match wins.
    pub topics: Vec<TopicPolicy>,
    /// Queue policies (length and byte limits, overflow, durability) by name pattern; first match wins.
    pub queues: Vec<QueuePolicy>,
    /// What each login may read, write and configure (`[permissions.LOGIN]`,
    /// `"*"` for everyone else; none: everything is allowed; file only).
    pub permissions: crate::security::permissions::PermissionTable,
    /// Exchanges and their bindings (`[[exchanges]]`; file only).
    pub exchanges: Vec<crate::broker::ExchangeConfig>,
    /// Where the journal of durable messages is kept.
    pub data_dir: PathBuf,
    /// Keep nothing on disk: every message is lost when the broker stops.
    pub in_memory: bool,
    /// Disk the journal may use, bytes or a size like 8GiB; durable SENDs
    /// are refused beyond it.
    pub journal_max_bytes: ByteSize,
    /// Size of one journal segment file.
    pub journal_segment_bytes: ByteSize,
}

impl Default for Config {
    fn default() -> Config {
        let limits = stomp_codec::Limits::default();
        let session = SessionSettings::default();
        let driver = DriverSettings::default();
        Config {
            tcp_listen: SocketAddr::from(([127, 0, 0, 1], 61613)),
            http_listen: SocketAddr::from(([127, 0, 0, 1], 15674)),
            web_root: None,
            chat_token_url: None,
            cluster: None,
            cluster_claim_idle_ms: 30_000,
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
            tokens: Default::default(),
            management_listen: SocketAddr::from(([127, 0, 0, 1], 15670)),
            management_token_file: None,
            management_users: Vec::new(),
            heart_beat: format!("{},{}", session.heart_beat.0, session.heart_beat.1),
            min_heart_beat_ms: session.min_heart_beat.as_millis() as u64,
            connect_timeout_ms: driver.connect_timeout.as_millis() as u64,
            write_timeout_ms: driver.write_timeout.as_millis() as u64,
            frame_timeout_ms: driver.frame_timeout.as_millis() as u64,
            max_frame_size: limits.max_frame_size,
            max_body_size: limits.max_body_size,
            max_headers: limits.max_headers,
            max_line_length: limits.max_line_length,
            default_prefetch: session.default_prefetch,
            max_prefetch: session.max_prefetch,
            max_subscriptions: session.max_subscriptions,
            max_transactions: session.max_transactions,
            max_transaction_bytes: session.max_transaction_bytes,
            max_topic_backlog: driver.max_topic_backlog,
            slow_consumer: driver.slow_consumer,
            anonymous: session.anonymous,
            users: HashMap::new(),
            shutdown_grace_ms: 5000,
            max_connections: None,
            max_connections_per_ip: None,
            memory_limit: ByteSize::Text("40%".into()),
            topics: vec![TopicPolicy::chat_default()],
            queues: Vec::new(),
            exchanges: Vec::new(),
            permissions: Default::default(),
            data_dir: PathBuf::from("stompbox-data"),
            in_memory: false,
            journal_max_bytes: ByteSize::Text("8GiB".into()),
            journal_segment_bytes: ByteSize::Text("64MiB".into()),
        }
    }
}

/// A configuration that cannot be used, naming the setting.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// The `[tls]` files are unusable.
    #[error(transparent)]
    Tls(#[from] crate::transport::tls::TlsError),
    /// The `[tokens]` settings are unusable.
    #[error(transparent)]
    Tokens(#[from] crate::security::tokens::TokenConfigError),
    /// A setting has a value that cannot work.
    #[error("invalid setting {setting}: {reason}")]
    Invalid {
        /// The setting's name.
        setting: &'static str,
        /// Why.
        reason: String,
    },
}

impl Config {
    /// Reads a TOML file; settings it lacks keep their defaults.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        let gib = 1u64 << 30;
        let read = |t: &str| ByteSize::Text(t.into()).resolve("memory_limit", Some(10 * gib));
        assert_eq!(read("512MiB").unwrap(), 512 << 20);
        assert_eq!(read("2GB").unwrap(), 2_000_000_000);
        assert_eq!(read("1.5GiB").unwrap(), 3 * gib / 2);
        assert_eq!(read("40%").unwrap(), 4 * gib);
        assert_eq!(read("1000").unwrap(), 1000);
        assert_eq!(ByteSize::Bytes(7).resolve("x", None).unwrap(), 7);
        for bad in ["lots", "12 parsecs", "140%", "0%", "-5MiB"] {
            let err = read(bad).expect_err(bad).to_string();
            assert!(err.contains("memory_limit"), "{err}");
        }
        let err = ByteSize::Text("40%".into())
            .resolve("memory_limit", None)
            .unwrap_err();
        assert!(err.to_string().contains("cannot be read"), "{err}");
    }

    #[test]
    fn queue_policies_and_memory_limit_read_from_toml() {
        let config: Config = toml::from_str(
            r#"
            memory_limit = "1GiB"
            [[queues]]
            pattern = "/queue/jobs.*"
            max_length = 1000
            max_length_bytes = 10485760
            overflow = "drop-head"
            "#,
        )
        .expect("valid");
        assert_eq!(config.memory_limit_bytes().unwrap(), 1 << 30);
        assert_eq!(config.queues[0].max_length, 1000);
        assert_eq!(config.queues[0].overflow, crate::broker::Overflow::DropHead);
        config.validate().expect("valid");
        let bad: Result<Config, _> =
            toml::from_str("[[queues]]\npattern = \"/queue/a\"\noverflow = \"explode\"\n");
        assert!(bad.is_err());
        let wrong = Config {
            queues: vec![crate::broker::QueuePolicy {
                pattern: "/topic/x".into(),
                ..crate::broker::QueuePolicy::unlimited()
            }],
            ..Config::default()
        };
        assert!(
            wrong
                .validate()
                .unwrap_err()
                .to_string()
                .contains("queues.pattern")
        );
    }

    #[test]
    fn cluster_settings_are_checked_and_a_password_never_shows() {
        let with = |url: &str, idle: u64| Config {
            cluster: Some(url.into()),
            cluster_claim_idle_ms: idle,
            ..Config::default()
        };
        with("redis://127.0.0.1:6379,redis://127.0.0.1:6380", 30_000)
            .validate()
            .expect("valid");
        for bad in ["http://127.0.0.1:6379", "redis://a:1,localhost:6379", ""] {
            let err = with(bad, 30_000).validate().expect_err(bad).to_string();
            assert!(err.contains("cluster") && err.contains("redis://"), "{err}");
        }
        let err = with("rediss://:s3cret@h:1", 30_000)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("s3cret"), "{err}");
        let err = with("redis://127.0.0.1:6379", 50)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cluster_claim_idle_ms") && err.contains("200"),
            "{err}"
        );
    }

    #[test]
    fn a_tiny_memory_limit_is_refused() {
        let config = Config {
            memory_limit: ByteSize::Bytes(1000),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
