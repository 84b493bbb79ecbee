//! How many STOMP connections the broker holds at once.
//!
//! Every connection costs a file descriptor. A broker that simply accepts
//! until the process runs out of them leaves the next clients hanging in
//! the listen backlog with no word of why, and starves the descriptors the
//! broker itself needs (the web page, health checks). With a limit below the
//! open-file limit, one connection too many is accepted, told in an ERROR
//! frame that the broker is full, and closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use stomp_codec::Frame;
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::protocol;
use crate::session::driver::{DriverSettings, Transport, refuse, run_session};

/// The open STOMP connections (TCP and WebSocket together), their limit,
/// and the limit for any one source address.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    max_per_address: usize,
    open: AtomicUsize,
    /// Open connections per source address; an address leaves the map
    /// when its last connection closes, so the map is bounded by `max`.
    per_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One held connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ConnectionSlots>,
    address: IpAddr,
}

/// Why a connection gets no slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// The connection's address holds its share already.
    AddressFull,
}

impl ConnectionSlots {
    /// Room for `max` connections, at most `max_per_address` from one address.
    pub fn new(max: usize, max_per_address: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            max,
            max_per_address: max_per_address.max(1),
            open: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for a connection from `address`, or why there is none.
    pub fn claim(self: &Arc<Self>, address: IpAddr) -> Result<Slot, Refusal> {
        let mut per_address = self.per_address.lock().unwrap_or_else(|e| e.into_inner());
        let held = per_address.get(&address).copied().unwrap_or(0);
        // Claims take the map's lock, so checking then adding is not a race.
        if self.open.load(Ordering::Acquire) >= self.max {
            return Err(Refusal::Full);
        }
        if held >= self.max_per_address {
            return Err(Refusal::AddressFull);
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        per_address.insert(address, held + 1);
        Ok(Slot {
            slots: self.clone(),
            address,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// The limit.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The limit per source address.
    pub fn max_per_address(&self) -> usize {
        self.max_per_address
    }

    /// The ERROR a connection that got no slot is sent.
    pub fn refusal(&self, why: Refusal) -> Frame {
        match why {
            Refusal::Full => protocol::notice_frame(
                "server full, too many connections",
                &format!(
                    "This broker holds at most {} connections and all are in use. \
                     Try again in a moment.",
                    self.max
                ),
            ),
            Refusal::AddressFull => protocol::notice_frame(
                "too many connections from your address",
                &format!(
                    "This broker holds at most {} connections from one address, and yours \
                     has that many open. Close some, or ask the operator to raise \
                     max_connections_per_ip.",
                    self.max_per_address
                ),
            ),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut per_address = self
            .slots
            .per_address
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(held) = per_address.get_mut(&self.address) {
            *held -= 1;
            if *held == 0 {
                per_address.remove(&self.address);
            }
        }
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one new connection, over either transport: its session while
/// `slots` has room, a refusal otherwise.
pub async fn serve<T: Transport>(
    mut transport: T,
    peer: super::Peer,
    slots: Arc<ConnectionSlots>,
    broker: Arc<Broker>,
    settings: Arc<DriverSettings>,
    cancel: CancellationToken,
) {
    let slot = match slots.claim(peer.addr.ip()) {
        Ok(slot) => slot,
        Err(why) => {
            broker.metrics().connection_refused(match why {
                Refusal::Full => crate::metrics::Refused::Full,
                Refusal::AddressFull => crate::metrics::Refused::AddressFull,
            });
            tracing::info!(peer = %peer.addr, ?why, max = slots.max(), max_per_address = slots.max_per_address(), "connection refused");
            return refuse(transport, slots.refusal(why)).await;
        }
    };
    let (metrics_broker, kind) = (broker.clone(), peer.transport);
    metrics_broker.metrics().connection_opened(kind);
    // By reference: each async layer a connection is moved through keeps
    // its own copy of the moved value in the task (see `run_session`).
    run_session(&mut transport, broker, &settings, peer, cancel).await;
    metrics_broker.metrics().connection_closed(kind);
    drop(slot);
}

/// The connection limit that fits an open-file limit: what is left after a
/// reserve for the broker's own descriptors (listeners, the runtime, HTTP
/// requests for the web page and health checks, refusals in progress).
pub fn fitting_open_file_limit(open_files: u64) -> usize {
    let reserve = (open_files / 10).clamp(32, 1024);
    usize::try_from(open_files.saturating_sub(reserve))
        .unwrap_or(usize::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_returned_when_dropped() {
        let slots = ConnectionSlots::new(2, 2);
        let here = IpAddr::from([127, 0, 0, 1]);
        let a = slots.claim(here).expect("first");
        let _b = slots.claim(here).expect("second");
        assert_eq!(slots.claim(here).err(), Some(Refusal::Full));
        assert_eq!(slots.open(), 2);
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(
            slots.claim(here).is_ok(),
            "a freed slot can be claimed again"
        );
    }

    #[test]
    fn one_address_cannot_take_every_slot() {
        let slots = ConnectionSlots::new(3, 2);
        let (one, two) = (IpAddr::from([127, 0, 0, 1]), IpAddr::from([127, 0, 0, 2]));
        let held: Vec<_> = (0..2)
            .map(|_| slots.claim(one).expect("within its share"))
            .collect();
        assert_eq!(slots.claim(one).err(), Some(Refusal::AddressFull));
        let other = slots.claim(two).expect("another address still gets in");
        assert_eq!(slots.claim(two).err(), Some(Refusal::Full));
        drop(held);
        drop(other);
        assert!(
            slots.per_address.lock().unwrap().is_empty(),
            "addresses are forgotten"
        );
    }

    #[test]
    fn the_limit_leaves_a_reserve() {
        assert_eq!(fitting_open_file_limit(1024), 922);
        assert_eq!(fitting_open_file_limit(128), 96);
        assert_eq!(fitting_open_file_limit(20_000), 18_976);
        assert_eq!(fitting_open_file_limit(1_048_576), 1_047_552);
        assert_eq!(fitting_open_file_limit(10), 1);
    }

    #[test]
    fn the_refusal_says_why_and_the_limit() {
        let frame = ConnectionSlots::new(7, 7).refusal(Refusal::Full);
        assert_eq!(
            frame.headers.get("message"),
            Some("server full, too many connections")
        );
        let body = String::from_utf8_lossy(&frame.body);
        assert!(body.contains("at most 7 connections"), "{body}");
    }
}
