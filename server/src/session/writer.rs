//! The write side of a connection: what the outbox holds, rendered and
//! encoded into one write per batch, in slices so one connection's long
//! backlog does not keep the driver from reading.

use std::time::Duration;

use futures_util::FutureExt;
use tokio::time::timeout;

use super::Session;
use super::driver::{Outgoing, Transport};
use crate::error::CloseReason;
use crate::outbox::{Outbound, Outbox};

pub(super) async fn write<T: Transport>(
    transport: &mut T,
    batch: &[Outgoing],
    limit: Duration,
) -> Result<(), CloseReason> {
    let mut writing = std::pin::pin!(transport.write(batch));
    // Most writes finish at once: only one that has to wait gets a timer
    // (registering and removing one per write cost more than the write's
    // own bookkeeping at low rates).
    let written = match writing.as_mut().now_or_never() {
        Some(done) => Ok(done),
        None => timeout(limit, writing).await,
    };
    match written {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(CloseReason::Io(e.to_string())),
        Err(_) => Err(CloseReason::SlowConsumer),
    }
}

/// Collects what is ready into one batch, so a burst of deliveries costs
/// one write and one flush.
#[derive(Default)]
pub(super) struct BatchWriter {
    items: Vec<Outbound>,
    batch: Vec<Outgoing>,
    /// A heart-beat goes out with the next flush if nothing else does.
    pub(super) heartbeat_due: bool,
}

/// A batch this small is not worth keeping buffers for between writes.
const LIGHT_BATCH: usize = 4;

/// Message bytes encoded into one write at most (a single larger
/// message still goes out whole).
const WRITE_SLICE: usize = 256 * 1024;
/// Slices written before the driver looks at its other events again.
const SLICES_PER_TURN: usize = 8;

impl BatchWriter {
    /// Writes what is queued, in slices of about [`WRITE_SLICE`]; `Ok(true)`
    /// when anything was written.
    pub(super) async fn flush<T: Transport>(
        &mut self,
        transport: &mut T,
        outbox: &Outbox,
        session: &mut Session,
        limit: Duration,
    ) -> Result<bool, CloseReason> {
        let mut wrote = false;
        let mut slices = 0;
        loop {
            let more = outbox.drain_up_to(&mut self.items, WRITE_SLICE);
            for item in self.items.drain(..) {
                let outgoing = match item {
                    Outbound::Frame(frame) => Outgoing::Frame(frame),
                    Outbound::Delivery(delivery) => session.render(delivery),
                };
                session.note_sent(&outgoing);
                self.batch.push(outgoing);
            }
            if self.batch.is_empty() && self.heartbeat_due && !wrote {
                self.batch.push(Outgoing::Heartbeat);
            }
            self.heartbeat_due = false;
            if self.batch.is_empty() {
                return Ok(wrote);
            }
            let result = write(transport, &self.batch, limit).await;
            let light = self.batch.len() <= LIGHT_BATCH;
            self.batch.clear();
            session.settle_written();
            result?;
            wrote = true;
            if !more {
                // Counted frames are added once the outbox is drained: per
                // batch under load, at once for an idle connection.
                session.flush_metrics();
                if light {
                    // A connection that writes a frame now and then (most
                    // are idle) keeps no buffers between writes; a busy
                    // one, writing large batches, keeps them.
                    self.items = Vec::new();
                    self.batch = Vec::new();
                }
                return Ok(true);
            }
            slices += 1;
            if slices == SLICES_PER_TURN {
                // Back to the select, so the client's own frames (ACKs,
                // heart-beats) are read between slices of a long backlog;
                // the outbox is marked ready so the rest follows at once.
                outbox.notify();
                return Ok(true);
            }
        }
    }
}
