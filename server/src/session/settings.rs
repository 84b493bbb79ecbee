//! What a session is configured with: the part of the broker's
//! configuration that applies per connection.

use std::collections::HashMap;

/// Who may connect without credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum AnonymousAccess {
    /// Clients on a loopback address (the default).
    Loopback,
    /// Everyone.
    Always,
    /// Nobody: every client must log in.
    Never,
}

/// The part of the configuration sessions need.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    /// `sx,sy`: how often the server sends heart-beats, and wants them, in
    /// ms, when the client asks for none (0 in either turns that direction off).
    pub heart_beat: (u64, u64),
    /// The shortest interval granted to a client that asks for heart-beats.
    pub min_heart_beat: std::time::Duration,
    /// login → passcode. When not empty, credentials given are checked.
    pub users: HashMap<String, String>,
    /// Who may connect without credentials.
    pub anonymous: AnonymousAccess,
    /// Checks tokens given as passcodes; `None` when `[tokens]` has no key.
    pub tokens: Option<std::sync::Arc<crate::security::tokens::TokenVerifier>>,
    /// What each login may read, write and configure (empty: everything).
    pub permissions: crate::security::permissions::PermissionTable,
    /// Unsettled deliveries per subscription when SUBSCRIBE has no `prefetch-count`.
    pub default_prefetch: usize,
    /// The largest `prefetch-count` honoured (0 asks for this).
    pub max_prefetch: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Open transactions per connection.
    pub max_transactions: usize,
    /// Frames buffered in one transaction.
    pub max_transaction_frames: usize,
    /// Bytes buffered in all of a connection's open transactions.
    pub max_transaction_bytes: usize,
}

impl Default for SessionSettings {
    fn default() -> SessionSettings {
        SessionSettings {
            heart_beat: (10_000, 10_000),
            min_heart_beat: std::time::Duration::from_secs(1),
            users: HashMap::new(),
            anonymous: AnonymousAccess::Loopback,
            tokens: None,
            permissions: HashMap::new(),
            default_prefetch: 256,
            max_prefetch: 10_000,
            max_subscriptions: 1024,
            max_transactions: 64,
            max_transaction_frames: 10_000,
            max_transaction_bytes: 16 << 20,
        }
    }
}
