//! One `Config`: built-in defaults, overridden by a TOML file, then by
//! `STOMPBOX_*` environment variables, then by command-line flags.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

use crate::broker::TopicPolicy;
use crate::outbox::SlowConsumerPolicy;
use crate::session::driver::DriverSettings;
use crate::session::{AnonymousAccess, SessionSettings};

/// Everything the broker can be told. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// STOMP over TCP.
    pub tcp_listen: SocketAddr,
    /// HTTP: WebSocket at /ws, /health, the web client.
    pub http_listen: SocketAddr,
    /// A folder served at `/` instead of the chat page built into the binary.
    pub web_root: Option<PathBuf>,
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
    /// Topic policies (history, size and rate limits) by name pattern; first match wins.
    pub topics: Vec<TopicPolicy>,
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
            heart_beat: format!("{},{}", session.heart_beat.0, session.heart_beat.1),
            min_heart_beat_ms: session.min_heart_beat.as_millis() as u64,
            connect_timeout_ms: driver.connect_timeout.as_millis() as u64,
            write_timeout_ms: driver.write_timeout.as_millis() as u64,
            max_frame_size: limits.max_frame_size,
            max_body_size: limits.max_body_size,
            max_headers: limits.max_headers,
            max_line_length: limits.max_line_length,
            default_prefetch: session.default_prefetch,
            max_prefetch: session.max_prefetch,
            max_subscriptions: session.max_subscriptions,
            max_transactions: session.max_transactions,
            max_topic_backlog: driver.max_topic_backlog,
            slow_consumer: driver.slow_consumer,
            anonymous: session.anonymous,
            users: HashMap::new(),
            shutdown_grace_ms: 5000,
            max_connections: None,
            max_connections_per_ip: None,
            topics: vec![TopicPolicy::chat_default()],
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

    /// Checks the settings fit together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.heart_beat_ms()?;
        let positive = [
            ("min_heart_beat_ms", self.min_heart_beat_ms as usize),
            ("max_frame_size", self.max_frame_size),
            ("max_body_size", self.max_body_size),
            ("max_headers", self.max_headers),
            ("max_line_length", self.max_line_length),
            ("default_prefetch", self.default_prefetch),
            ("max_prefetch", self.max_prefetch),
            ("max_topic_backlog", self.max_topic_backlog),
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
            max_topic_backlog: self.max_topic_backlog,
            slow_consumer: self.slow_consumer,
            login_throttle: Arc::default(),
            session: Arc::new(SessionSettings {
                heart_beat: self.heart_beat_ms()?,
                min_heart_beat: Duration::from_millis(self.min_heart_beat_ms),
                users: self.users.clone(),
                anonymous: self.anonymous,
                default_prefetch: self.default_prefetch,
                max_prefetch: self.max_prefetch,
                max_subscriptions: self.max_subscriptions,
                max_transactions: self.max_transactions,
                ..SessionSettings::default()
            }),
        })
    }
}
