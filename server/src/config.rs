//! One `Config`: built-in defaults, overridden by a TOML file, then by
//! `STOMPBOX_*` environment variables, then by command-line flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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

/// A size in bytes as people write it: a number of bytes, a number with a
/// unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`), or a percentage of the
/// machine's memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Plain bytes.
    Bytes(u64),
    /// Text to parse.
    Text(String),
}

impl std::str::FromStr for ByteSize {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<ByteSize, Self::Err> {
        Ok(ByteSize::Text(s.to_string()))
    }
}

impl ByteSize {
    /// The size in bytes; a percentage is of `total` (the machine's memory).
    pub fn resolve(&self, setting: &'static str, total: Option<u64>) -> Result<u64, ConfigError> {
        let text = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(t) => t.trim(),
        };
        let invalid = |reason: String| ConfigError::Invalid { setting, reason };
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{text:?} is not a percentage like 40%")))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(invalid(format!("{text:?} must be between 0% and 100%")));
            }
            let total = total.ok_or_else(|| {
                invalid("the machine's memory cannot be read here; give a size like 2GiB".into())
            })?;
            return Ok((total as f64 * p / 100.0) as u64);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| invalid(format!("{text:?} is not a size like 512MiB, 2GB or 40%")))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(invalid(format!(
                    "unknown unit {other:?} in {text:?}; use KiB, MiB, GiB, KB, MB, GB or %"
                )));
            }
        };
        Ok((number * scale as f64) as u64)
    }
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

/// An address to listen on: `IP:PORT`, or `HOST:PORT` with the host
/// resolved (its first IPv4 address, else its first), so `localhost:0` works.
pub fn resolve_listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = "expected host:port, like 127.0.0.1:61613, [::1]:61613 or localhost:61613";
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text:?}: {e} ({expected})"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address ({expected})"))
}

/// Reads a listen address from the config file with [`resolve_listen_address`].
pub(crate) fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_listen_address(&text).map_err(serde::de::Error::custom)
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

    /// Parses `heart_beat` as `sx,sy`.
    pub fn heart_beat_ms(&self) -> Result<(u64, u64), ConfigError> {
        let invalid = || ConfigError::Invalid {
            setting: "heart_beat",
            reason: format!(
                "{:?} is not two millisecond counts like 10000,10000",
                self.heart_beat
            ),
        };
        let (sx, sy) = self.heart_beat.split_once(',').ok_or_else(invalid)?;
        Ok((
            sx.trim().parse().map_err(|_| invalid())?,
            sy.trim().parse().map_err(|_| invalid())?,
        ))
    }

    /// Who may use the management API, read from its files; the API is off
    /// when nobody may.
    pub fn management_auth(&self) -> Result<crate::management::ApiAuth, ConfigError> {
        let token = match &self.management_token_file {
            None => None,
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid {
                    setting: "management_token_file",
                    reason: format!("{}: {e}", path.display()),
                })?;
                let token = text.trim().to_string();
                if token.len() < 32 {
                    return Err(ConfigError::Invalid {
                        setting: "management_token_file",
                        reason: format!(
                            "{}: the token is {} bytes; use at least 32 (try: head -c 32 /dev/urandom | base64 > {})",
                            path.display(),
                            token.len(),
                            path.display()
                        ),
                    });
                }
                Some(token)
            }
        };
        let mut users = Vec::new();
        for login in &self.management_users {
            let Some(hash) = self.users.get(login) else {
                return Err(ConfigError::Invalid {
                    setting: "management_users",
                    reason: format!(
                        "{login:?} is not a login of [users] (it needs a password hash there)"
                    ),
                });
            };
            users.push((login.clone(), hash.clone()));
        }
        Ok(crate::management::ApiAuth { token, users })
    }

    /// How clients get in, in a few words, for the start-up banner.
    pub fn access_summary(&self) -> String {
        let mut ways = Vec::new();
        ways.push(match self.anonymous {
            AnonymousAccess::Loopback => "anonymous from loopback".to_string(),
            AnonymousAccess::Always => "anonymous from anywhere".to_string(),
            AnonymousAccess::Never => "no anonymous access".to_string(),
        });
        if !self.users.is_empty() {
            ways.push(format!("{} user(s) with passwords", self.users.len()));
        }
        if self.tokens.secret_file.is_some()
            || self.tokens.public_key_file.is_some()
            || self.tokens.jwks_file.is_some()
        {
            ways.push("tokens (JWT)".into());
        }
        if self.tls.as_ref().is_some_and(|t| t.cert_login) {
            ways.push("client certificates".into());
        }
        if !self.permissions.is_empty() {
            ways.push(format!(
                "permissions for {} login(s)",
                self.permissions.len()
            ));
        }
        ways.join(", ")
    }

    /// [`cluster_claim_idle_ms`](Self::cluster_claim_idle_ms) as a duration.
    pub fn cluster_claim_idle(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.cluster_claim_idle_ms)
    }

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.heart_beat_ms()?;
        self.memory_limit_bytes()?;
        self.journal()?;
        // Read now, so a bad file is named at start rather than at the
        // first handshake or login.
        if let Some(tls) = &self.tls {
            crate::transport::tls::TlsAcceptors::load(tls)?;
        }
        let tokens = crate::security::tokens::TokenVerifier::load(&self.tokens)?;
        self.management_auth()?;
        let cert_login = self.tls.as_ref().is_some_and(|t| t.cert_login);
        if self.anonymous == AnonymousAccess::Never
            && self.users.is_empty()
            && tokens.is_none()
            && !cert_login
        {
            return Err(ConfigError::Invalid {
                setting: "anonymous",
                reason: "\"never\" with no way to log in: nobody could connect. Add [users] (hashes from `stompbox passwd`), [tokens], or tls.cert_login; or allow anonymous clients".into(),
            });
        }
        let positive = [
            ("min_heart_beat_ms", self.min_heart_beat_ms as usize),
            ("frame_timeout_ms", self.frame_timeout_ms as usize),
            ("max_frame_size", self.max_frame_size),
            ("max_body_size", self.max_body_size),
            ("max_headers", self.max_headers),
            ("max_line_length", self.max_line_length),
            ("default_prefetch", self.default_prefetch),
            ("max_prefetch", self.max_prefetch),
            ("max_topic_backlog", self.max_topic_backlog),
            ("max_transaction_bytes", self.max_transaction_bytes),
            ("max_connections", self.max_connections.unwrap_or(1)),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.unwrap_or(1),
            ),
        ];
        for (setting, value) in positive {
            if value == 0 {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "must be greater than 0".into(),
                });
            }
        }
        for topic in &self.topics {
            if !topic.pattern.starts_with("/topic/") && topic.pattern != "*" {
                return Err(ConfigError::Invalid {
                    setting: "topics.pattern",
                    reason: format!("{:?} does not start with /topic/", topic.pattern),
                });
            }
            let valid = |x: f64| x.is_finite() && x >= 0.0;
            if !valid(topic.publish_rate) || !valid(topic.publish_burst) {
                return Err(ConfigError::Invalid {
                    setting: "topics.publish_rate",
                    reason: format!(
                        "rate and burst for {:?} must be non-negative numbers",
                        topic.pattern
                    ),
                });
            }
        }
        for queue in &self.queues {
            if !queue.pattern.starts_with("/queue/") && queue.pattern != "*" {
                return Err(ConfigError::Invalid {
                    setting: "queues.pattern",
                    reason: format!("{:?} does not start with /queue/", queue.pattern),
                });
            }
            queue.check().map_err(|reason| ConfigError::Invalid {
                setting: "queues",
                reason,
            })?;
        }
        let mut logins: Vec<&String> = self.users.keys().collect();
        logins.sort();
        for login in logins {
            crate::security::passwords::check(&self.users[login]).map_err(|why| {
                ConfigError::Invalid {
                    setting: "users",
                    reason: format!("the password of {login:?} {why}"),
                }
            })?;
        }
        crate::security::permissions::validate(&self.permissions).map_err(|reason| {
            ConfigError::Invalid {
                setting: "permissions",
                reason,
            }
        })?;
        if let Some(url) = &self.cluster {
            for one in url.split(',').map(str::trim) {
                if !one.starts_with("redis://") {
                    let shown = crate::cluster::mask_url(one);
                    return Err(ConfigError::Invalid {
                        setting: "cluster",
                        reason: format!(
                            "{shown:?}: expected redis:// URLs like redis://127.0.0.1:6379, several separated by commas"
                        ),
                    });
                }
            }
            if self.cluster_claim_idle_ms < 200 {
                return Err(ConfigError::Invalid {
                    setting: "cluster_claim_idle_ms",
                    reason: format!(
                        "{} ms: at least 200, or live nodes lose messages they hold to the others",
                        self.cluster_claim_idle_ms
                    ),
                });
            }
            crate::cluster::Cluster::new(url, self.cluster_claim_idle()).map_err(|e| {
                ConfigError::Invalid {
                    setting: "cluster",
                    reason: e.to_string(),
                }
            })?;
        }
        if let Some(url) = &self.chat_token_url
            && !(url.starts_with("https://") || url.starts_with("http://") || url.starts_with('/'))
        {
            return Err(ConfigError::Invalid {
                setting: "chat_token_url",
                reason: format!(
                    "{url:?}: expected an http:// or https:// URL, or a path on this site like /auth/token"
                ),
            });
        }
        crate::transport::origin::AllowedOrigins::validate(&self.allowed_origins).map_err(
            |reason| ConfigError::Invalid {
                setting: "allowed_origins",
                reason,
            },
        )?;
        crate::broker::exchange::build(&self.exchanges).map_err(|e| ConfigError::Invalid {
            setting: "exchanges",
            reason: e.to_string(),
        })?;
        if self.max_body_size > self.max_frame_size {
            return Err(ConfigError::Invalid {
                setting: "max_body_size",
                reason: format!(
                    "{} is larger than max_frame_size ({})",
                    self.max_body_size, self.max_frame_size
                ),
            });
        }
        Ok(())
    }

    /// The memory watermark in bytes.
    pub fn memory_limit_bytes(&self) -> Result<u64, ConfigError> {
        let bytes = self
            .memory_limit
            .resolve("memory_limit", crate::broker::memory::system_memory())?;
        if bytes < 1 << 20 {
            return Err(ConfigError::Invalid {
                setting: "memory_limit",
                reason: format!("{bytes} bytes is too small to run a broker; give at least 1MiB"),
            });
        }
        Ok(bytes)
    }

    /// The journal's settings, or `None` when running in memory only.
    pub fn journal(&self) -> Result<Option<crate::store::JournalConfig>, ConfigError> {
        let disk_size = |setting: &'static str, size: &ByteSize| {
            if matches!(size, ByteSize::Text(t) if t.trim().ends_with('%')) {
                return Err(ConfigError::Invalid {
                    setting,
                    reason: "a disk size is given in bytes or like 8GiB, not as a percentage"
                        .into(),
                });
            }
            size.resolve(setting, None)
        };
        let max_bytes = disk_size("journal_max_bytes", &self.journal_max_bytes)?;
        let segment_bytes = disk_size("journal_segment_bytes", &self.journal_segment_bytes)?;
        if !(64 * 1024..=1 << 30).contains(&segment_bytes) {
            return Err(ConfigError::Invalid {
                setting: "journal_segment_bytes",
                reason: format!("{segment_bytes} bytes: give between 64KiB and 1GiB"),
            });
        }
        if max_bytes < 2 * segment_bytes {
            return Err(ConfigError::Invalid {
                setting: "journal_max_bytes",
                reason: format!(
                    "{max_bytes} bytes is less than two segments ({segment_bytes} bytes each)"
                ),
            });
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(ConfigError::Invalid {
                setting: "data_dir",
                reason: "is empty; give a directory, or run with in_memory".into(),
            });
        }
        if self.in_memory {
            return Ok(None);
        }
        Ok(Some(crate::store::JournalConfig {
            dir: self.data_dir.clone(),
            segment_bytes,
            max_bytes,
        }))
    }

    /// The codec limits.
    pub fn limits(&self) -> stomp_codec::Limits {
        stomp_codec::Limits {
            max_frame_size: self.max_frame_size,
            max_body_size: self.max_body_size,
            max_headers: self.max_headers,
            max_line_length: self.max_line_length,
        }
    }

    /// The per-connection settings.
    pub fn driver_settings(&self) -> Result<DriverSettings, ConfigError> {
        Ok(DriverSettings {
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            write_timeout: Duration::from_millis(self.write_timeout_ms),
            frame_timeout: Duration::from_millis(self.frame_timeout_ms),
            max_topic_backlog: self.max_topic_backlog,
            slow_consumer: self.slow_consumer,
            login_throttle: Arc::default(),
            session: Arc::new(SessionSettings {
                heart_beat: self.heart_beat_ms()?,
                min_heart_beat: Duration::from_millis(self.min_heart_beat_ms),
                users: self.users.clone(),
                anonymous: self.anonymous,
                permissions: self.permissions.clone(),
                default_prefetch: self.default_prefetch,
                max_prefetch: self.max_prefetch,
                max_subscriptions: self.max_subscriptions,
                max_transactions: self.max_transactions,
                max_transaction_bytes: self.max_transaction_bytes,
                tokens: crate::security::tokens::TokenVerifier::load(&self.tokens)?.map(Arc::new),
                ..SessionSettings::default()
            }),
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
