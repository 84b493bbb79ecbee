//! Checks of a whole config before the broker starts, so a mistake is named
//! at once (setting and reason) instead of surfacing later.

use crate::session::AnonymousAccess;

use super::{Config, ConfigError};

impl Config {
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
}
