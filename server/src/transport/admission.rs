//! How many STOMP connections the broker holds at once.
//!
//! Every connection costs a file descriptor. A broker that simply accepts
//! until the process runs out of them leaves the next clients hanging in
//! the listen backlog with no word of why, and starves the descriptors the
//! broker itself needs (the web page, health checks). With a limit below the
//! open-file limit, one connection too many is accepted, told in an ERROR
//! frame that the broker is full, and closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use stomp_codec::Frame;
use tokio_util::sync::CancellationToken;

use super::tcp::is_loopback;
use crate::broker::Broker;
use crate::protocol;
use crate::session::driver::{DriverSettings, Transport, refuse, run_session};

/// The open STOMP connections (TCP and WebSocket together) and their limit.
#[derive(Debug)]
pub struct ConnectionSlots {
    max: usize,
    open: AtomicUsize,
}

/// One held connection; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<ConnectionSlots>,
}

impl ConnectionSlots {
    /// Room for `max` connections.
    pub fn new(max: usize) -> Arc<ConnectionSlots> {
        Arc::new(ConnectionSlots {
            max,
            open: AtomicUsize::new(0),
        })
    }

    /// A slot, or `None` when all `max` are taken.
    pub fn claim(self: &Arc<Self>) -> Option<Slot> {
        self.open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                (open < self.max).then_some(open + 1)
            })
            .ok()
            .map(|_| Slot {
                slots: self.clone(),
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

    /// The ERROR a connection over the limit gets.
    pub fn refusal(&self) -> Frame {
        protocol::notice_frame(
            "server full, too many connections",
            &format!(
                "This broker holds at most {} connections and all are in use. \
                 Try again in a moment.",
                self.max
            ),
        )
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one new connection, over either transport: its session while
/// `slots` has room, a refusal otherwise.
pub async fn serve<T: Transport>(
    transport: T,
    peer: SocketAddr,
    slots: &Arc<ConnectionSlots>,
    broker: Arc<Broker>,
    settings: &DriverSettings,
    cancel: CancellationToken,
) {
    let Some(slot) = slots.claim() else {
        tracing::debug!(%peer, max = slots.max(), "connection refused: server full");
        return refuse(transport, slots.refusal()).await;
    };
    run_session(transport, broker, settings, is_loopback(&peer), cancel).await;
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
        let slots = ConnectionSlots::new(2);
        let a = slots.claim().expect("first");
        let _b = slots.claim().expect("second");
        assert!(slots.claim().is_none(), "a third is over the limit");
        assert_eq!(slots.open(), 2);
        drop(a);
        assert_eq!(slots.open(), 1);
        assert!(slots.claim().is_some(), "a freed slot can be claimed again");
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
        let frame = ConnectionSlots::new(7).refusal();
        assert_eq!(
            frame.headers.get("message"),
            Some("server full, too many connections")
        );
        let body = String::from_utf8_lossy(&frame.body);
        assert!(body.contains("at most 7 connections"), "{body}");
    }
}
