//! What each part of the broker takes from the config: heart-beats, memory
//! and journal sizes, frame limits, the driver's and the management API's
//! settings, and the access summary logged at start.

use std::sync::Arc;
use std::time::Duration;

use crate::session::driver::DriverSettings;
use crate::session::{AnonymousAccess, SessionSettings};

use super::{ByteSize, Config, ConfigError};

impl Config {
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
