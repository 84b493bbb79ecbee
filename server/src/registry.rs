//! The open connections, as the management API lists them: who, from
//! where, over what, since when, and a way to close each one.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::ids::SessionId;
use crate::metrics::TransportKind;

/// One open connection, as listed.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ConnectionInfo {
    /// The session id (the `session` header of its CONNECTED).
    pub id: u64,
    /// The client's address.
    pub peer: SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// Its login once connected (`(anonymous)` without one).
    pub login: Option<String>,
    /// When it was opened, ms since the Unix epoch.
    pub opened_at_ms: u64,
    /// Frames received from it so far.
    pub frames_in: u64,
    /// Frames sent to it so far.
    pub frames_out: u64,
    /// SENDs received from it so far.
    pub messages_in: u64,
    /// MESSAGEs sent to it so far.
    pub messages_out: u64,
    /// Its subscriptions now.
    pub subscriptions: u64,
}

/// One connection's counters, added to by its session in batches (with
/// the broker's frame counters) and read when connections are listed.
#[derive(Debug, Default)]
pub struct ConnectionCounters {
    /// Frames received.
    pub frames_in: AtomicU64,
    /// Frames sent.
    pub frames_out: AtomicU64,
    /// SENDs received.
    pub messages_in: AtomicU64,
    /// MESSAGEs sent.
    pub messages_out: AtomicU64,
    /// Subscriptions open.
    pub subscriptions: AtomicU64,
}

#[derive(Debug)]
struct Entry {
    info: ConnectionInfo,
    counters: Arc<ConnectionCounters>,
    /// Cancelled to close it from the management API.
    close: CancellationToken,
}

/// Every open connection.
#[derive(Debug, Default)]
pub struct Connections {
    open: Mutex<HashMap<u64, Entry>>,
}

/// Removes a connection from the registry when its session ends.
#[derive(Debug)]
pub struct Registration<'a> {
    connections: &'a Connections,
    id: u64,
    /// Cancelled when an administrator closes the connection.
    pub close: CancellationToken,
    /// The connection's counters, for its session to add to.
    pub counters: Arc<ConnectionCounters>,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
    }
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a connection; it is removed when the registration drops.
    pub fn register(
        &self,
        id: SessionId,
        peer: SocketAddr,
        transport: TransportKind,
    ) -> Registration<'_> {
        let close = CancellationToken::new();
        let counters = Arc::new(ConnectionCounters::default());
        let opened_at_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.lock().insert(
            id.0,
            Entry {
                info: ConnectionInfo {
                    id: id.0,
                    peer,
                    transport: transport.as_str(),
                    login: None,
                    opened_at_ms,
                    frames_in: 0,
                    frames_out: 0,
                    messages_in: 0,
                    messages_out: 0,
                    subscriptions: 0,
                },
                counters: counters.clone(),
                close: close.clone(),
            },
        );
        Registration {
            connections: self,
            id: id.0,
            close,
            counters,
        }
    }

    /// Notes the login a connection authenticated as.
    pub fn logged_in(&self, id: SessionId, login: &str) {
        if let Some(e) = self.lock().get_mut(&id.0) {
            e.info.login = Some(login.to_string());
        }
    }

    /// Every open connection, by id.
    pub fn list(&self) -> Vec<ConnectionInfo> {
        let read = |n: &AtomicU64| n.load(Ordering::Relaxed);
        let mut all: Vec<ConnectionInfo> = self
            .lock()
            .values()
            .map(|e| ConnectionInfo {
                frames_in: read(&e.counters.frames_in),
                frames_out: read(&e.counters.frames_out),
                messages_in: read(&e.counters.messages_in),
                messages_out: read(&e.counters.messages_out),
                subscriptions: read(&e.counters.subscriptions),
                ..e.info.clone()
            })
            .collect();
        all.sort_by_key(|c| c.id);
        all
    }

    /// Asks a connection to close (it gets an ERROR saying an
    /// administrator closed it); false when there is no such connection.
    pub fn close(&self, id: u64) -> bool {
        match self.lock().get(&id) {
            Some(e) => {
                e.close.cancel();
                true
            }
            None => false,
        }
    }

    /// How many are open.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
