//! Durable storage: an append-only journal of segment files.
//!
//! Why a log and not an embedded database: queue traffic is
//! append-then-delete-soon, and a log pays nothing for the delete (a
//! settle record, then whole segments are dropped once nothing in them
//! matters). Records are framed with a length and a CRC
//! (`record.rs`); one thread writes and syncs them in groups
//! (`writer.rs`); `recovery.rs` rebuilds the queues at start and
//! `paging.rs` reads paged-out messages back; `topics.rs` writes a topic's
//! records, and `completion.rs` says when a write is safe.

mod completion;
mod paging;
mod record;
mod recovery;
mod segment;
mod topics;
mod writer;

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use stomp_codec::Headers;
use tokio::sync::watch;

pub use completion::Completion;
pub use paging::{RecordRef, StoredMessage};
pub use record::{Record, TopicEntry};
pub use recovery::{
    MAX_DEDUP_IDS, Recovered, RecoveredDedup, RecoveredMessage, RecoveredQueue, RecoveredTopic,
    RecoveredTopicMessage, RecoveryReport,
};
pub use segment::JournalPin;
pub use writer::Lsn;

use writer::Shared;

/// What can go wrong with the journal.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The data directory could not be used.
    #[error("journal directory {dir}: {source}")]
    Directory {
        /// The directory.
        dir: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// Another broker is using the directory.
    #[error(
        "journal directory {dir} is in use by another stompbox process (its lock file {lock} is held); give each broker its own data_dir"
    )]
    Locked {
        /// The directory.
        dir: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// The journal reached its configured size.
    #[error(
        "the journal is full ({used} of {limit} bytes on disk): durable messages are refused until consumers catch up"
    )]
    Full {
        /// Bytes in use.
        used: u64,
        /// The limit.
        limit: u64,
    },
    /// A write or sync failed (for example, the disk is full).
    #[error("the message could not be written to disk; it was not stored durably")]
    WriteFailed,
}

/// Where and how large the journal is.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The directory holding the segment files.
    pub dir: PathBuf,
    /// A segment is closed and a new one begun past this size.
    pub segment_bytes: u64,
    /// Durable writes are refused while the segments take this much.
    pub max_bytes: u64,
}

/// A snapshot of the journal's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    /// Bytes of segment files on disk.
    pub disk_bytes: u64,
    /// The configured limit.
    pub max_bytes: u64,
    /// Segment files on disk.
    pub segments: u64,
    /// Syncs done (one per group of records).
    pub syncs: u64,
    /// Records written.
    pub records: u64,
    /// Bytes written.
    pub bytes_written: u64,
    /// Batches whose write failed.
    pub failed_writes: u64,
}

thread_local! {
    /// The atomic group being built on this thread (see [`Journal::atomic`]).
    static GROUP: RefCell<Option<Group>> = const { RefCell::new(None) };
}

/// Records collected by [`Journal::atomic`] to be written as one.
struct Group {
    /// Which journal the group is for.
    journal: usize,
    /// The framed records, in order.
    bytes: Vec<u8>,
    /// What the group's messages pin: the segment being filled when the
    /// group began. The batch may land in a later segment; pinning an
    /// older one is safe, since segments are only deleted oldest first.
    live: Arc<segment::LiveCount>,
    segment: u64,
}

/// About what a message's record takes, for recovered messages whose
/// record size was not kept.
fn record_estimate(headers: &Headers, body: &[u8]) -> u64 {
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 8).sum();
    (64 + header_bytes + body.len()) as u64
}

/// Ids reserved at a time: one synced record per this many messages.
const ID_BLOCK: u64 = 1 << 20;

/// The journal. Cheap to share; every method is safe from any thread.
#[derive(Debug)]
pub struct Journal {
    shared: Arc<Shared>,
    max_bytes: u64,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Held open with an exclusive lock while the journal is open, so two
    /// brokers never write one directory; let go by [`close`](Self::close).
    lock: Mutex<Option<std::fs::File>>,
    /// Serialises id reservations (rare: one per [`ID_BLOCK`] ids).
    reserving: Mutex<()>,
}

impl Journal {
    /// Opens (creating if needed) the journal in `config.dir`, recovers
    /// what it holds and starts the writer.
    pub fn open(config: &JournalConfig) -> Result<(Arc<Journal>, Recovered), JournalError> {
        let dir_error = |source| JournalError::Directory {
            dir: config.dir.clone(),
            source,
        };
        std::fs::create_dir_all(&config.dir).map_err(dir_error)?;
        let lock_path = config.dir.join("stompbox.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(dir_error)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(JournalError::Locked {
                    dir: config.dir.clone(),
                    lock: lock_path,
                });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(dir_error(e)),
        }
        let recovered = recovery::recover(&config.dir).map_err(dir_error)?;
        let (segment, len) = match recovered.last {
            // Full: begin the next one.
            Some((n, len)) if len >= config.segment_bytes => (n + 1, 0),
            Some((n, len)) => (n, len),
            None => (1, 0),
        };
        let shared = Arc::new(Shared::new(
            config.dir.clone(),
            config.segment_bytes.max(4096),
            segment,
            len,
            recovered.live_counts(),
            recovered.next_id,
        ));
        shared
            .counters
            .disk_bytes
            .store(recovered.disk_bytes, Ordering::Relaxed);
        shared
            .counters
            .segments
            .store(recovered.segments.len() as u64, Ordering::Relaxed);
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("journal-writer".into())
                .spawn(move || writer::run(shared, segment))
                .map_err(dir_error)?
        };
        let journal = Arc::new(Journal {
            shared,
            max_bytes: config.max_bytes,
            writer: Mutex::new(Some(writer)),
            lock: Mutex::new(Some(lock)),
            reserving: Mutex::new(()),
        });
        // Numbering resumes past every id a previous run may have used.
        journal.reserve_ids(recovered.next_id)?;
        Ok((journal, recovered))
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// Queues an enqueue record for a durable message of `queue`. The pin
    /// keeps its segment on disk while the message lives.
    pub fn enqueue(
        &self,
        queue: &str,
        id: u64,
        at_ms: u64,
        headers: &Headers,
        body: &[u8],
    ) -> Result<(Completion, JournalPin), JournalError> {
        self.check_room()?;
        Ok(self.append_enqueue(queue, id, at_ms, headers, body))
    }

    /// Writes a waiting message's record again at the end of the journal,
    /// so the old segment holding it can go (compaction). Not refused when
    /// the journal is full: compaction is how a full journal frees space.
    /// The old pin must be kept until the completion is done: the old
    /// segment may go once it is dropped.
    pub fn re_enqueue(
        &self,
        queue: &str,
        id: u64,
        at_ms: u64,
        headers: &Headers,
        body: &[u8],
    ) -> (Completion, JournalPin) {
        self.append_enqueue(queue, id, at_ms, headers, body)
    }

    /// Blocks the calling thread until `completion` has an outcome.
    pub fn wait_blocking(&self, completion: Completion) {
        if let Some(lsn) = completion.lsn() {
            self.shared.wait_blocking(lsn);
        }
    }

    fn append_enqueue(
        &self,
        queue: &str,
        id: u64,
        at_ms: u64,
        headers: &Headers,
        body: &[u8],
    ) -> (Completion, JournalPin) {
        let encode =
            |buf: &mut Vec<u8>| record::encode_enqueue(buf, queue, id, at_ms, headers, body);
        if let Some(pin) = self.in_group(encode) {
            return (Completion::DONE, pin);
        }
        let appended = self.shared.append(encode);
        (Completion::after(appended.lsn), appended.pin())
    }

    /// The oldest segment, when it holds back at least two newer ones and
    /// little of it is still live: worth re-appending its live records.
    pub fn compaction_candidate(&self) -> Option<u64> {
        let segment_bytes = self.shared.segment_bytes;
        self.shared
            .with_pending(|p| p.compaction_candidate(segment_bytes, 2))
    }

    /// Runs `f` with every record this journal is given on this thread
    /// collected and written as one batch record, which recovery applies
    /// whole or not at all. Returns `f`'s result and the batch's
    /// completion. Nested calls join the outer group.
    pub fn atomic<R>(&self, f: impl FnOnce() -> R) -> (R, Completion) {
        let me = self as *const Journal as usize;
        let nested = GROUP.with(|g| g.borrow().as_ref().is_some_and(|g| g.journal == me));
        if nested {
            return (f(), Completion::DONE);
        }
        let (live, segment) = self.shared.with_pending(|p| {
            let segment = p.current_segment();
            (p.live_of(segment), segment)
        });
        GROUP.with(|g| {
            *g.borrow_mut() = Some(Group {
                journal: me,
                bytes: Vec::new(),
                live,
                segment,
            })
        });
        let result = f();
        let group = GROUP.with(|g| g.borrow_mut().take());
        let completion = match group {
            Some(group) if !group.bytes.is_empty() => {
                let appended = self
                    .shared
                    .append(|buf| record::encode_batch(buf, &group.bytes));
                Completion::after(appended.lsn)
            }
            _ => Completion::DONE,
        };
        (result, completion)
    }

    /// Encodes into this thread's open group for this journal, if there is
    /// one, and returns the record's pin.
    fn in_group(&self, encode: impl FnOnce(&mut Vec<u8>)) -> Option<JournalPin> {
        let me = self as *const Journal as usize;
        GROUP.with(|g| {
            let mut g = g.borrow_mut();
            let group = g.as_mut().filter(|g| g.journal == me)?;
            let before = group.bytes.len();
            encode(&mut group.bytes);
            let size = (group.bytes.len() - before) as u64;
            Some(JournalPin::new(
                &group.live,
                group.segment,
                segment::UNKNOWN_OFFSET,
                size,
            ))
        })
    }

    /// Pins a recovered queue message's record.
    pub fn pin_recovered(&self, message: &RecoveredMessage) -> JournalPin {
        self.pin_record(message.record)
    }

    /// Pins a recovered record (a message's, or a deduplication id's).
    pub fn pin_record(&self, r: RecordRef) -> JournalPin {
        let live = self.shared.with_pending(|p| p.live_of(r.segment));
        let offset = u32::try_from(r.offset).unwrap_or(segment::UNKNOWN_OFFSET);
        JournalPin::new(&live, r.segment, offset, r.size)
    }

    /// Reads queue messages back from their enqueue records, in order.
    /// Waits (one sync at most) for records not yet on disk.
    pub fn read(&self, refs: &[RecordRef], written_by: Lsn) -> Vec<io::Result<StoredMessage>> {
        if self.shared.resolved_now() < written_by {
            self.shared.wait_blocking(written_by);
        }
        paging::read_enqueues(&self.shared.dir, refs)
    }

    fn pin_segment(&self, segment: u64, bytes: u64) -> JournalPin {
        let live = self.shared.with_pending(|p| p.live_of(segment));
        JournalPin::new(&live, segment, segment::UNKNOWN_OFFSET, bytes)
    }

    /// Queues a settle record: these messages of `queue` are done with.
    pub fn settle(&self, queue: &str, ids: &[u64]) -> Completion {
        if ids.is_empty() {
            return Completion::DONE;
        }
        let encode = |buf: &mut Vec<u8>| record::encode_settle(buf, queue, ids);
        if self.in_group(encode).is_some() {
            return Completion::DONE;
        }
        Completion::after(self.shared.append(encode).lsn)
    }

    /// Queues a record of failed deliveries of these messages of `queue`
    /// (each adds one to its delivery count after a restart). Nobody
    /// waits for it: a count lost in a crash only makes the message's
    /// next delivery look like an earlier one.
    pub fn returned(&self, queue: &str, ids: &[u64]) {
        if ids.is_empty() {
            return;
        }
        let encode = |buf: &mut Vec<u8>| record::encode_returned(buf, queue, ids);
        if self.in_group(encode).is_none() {
            self.shared.append(encode);
        }
    }

    /// Makes sure ids below `up_to` are reserved on disk, blocking the
    /// calling thread for one sync when they are not yet.
    pub fn reserve_ids(&self, up_to: u64) -> Result<(), JournalError> {
        let _one = self.reserving.lock().unwrap_or_else(|e| e.into_inner());
        if up_to < self.id_ceiling() {
            return Ok(());
        }
        let ceiling = up_to.saturating_add(ID_BLOCK);
        let lsn = self.shared.with_pending(|p| {
            self.shared
                .append_locked(p, |buf| record::encode_id_block(buf, ceiling))
                .lsn
        });
        self.shared.wake_writer();
        self.shared.wait_blocking(lsn);
        if self.shared.failed(lsn) {
            return Err(JournalError::WriteFailed);
        }
        self.shared.with_pending(|p| p.id_ceiling = ceiling);
        Ok(())
    }

    /// Lets the writer delete settled segments. Called once the recovered
    /// messages hold their pins (until then every segment looks unused).
    pub fn start_reclaiming(&self) {
        self.shared.reclaiming.store(true, Ordering::Release);
    }

    /// Ids below this are reserved.
    pub fn id_ceiling(&self) -> u64 {
        self.shared.with_pending(|p| p.id_ceiling)
    }

    /// Whether the journal has room for more durable messages now.
    pub fn check_room(&self) -> Result<(), JournalError> {
        let used =
            self.shared.counters.disk_bytes.load(Ordering::Relaxed) + self.shared.queued_bytes();
        if used >= self.max_bytes {
            return Err(JournalError::Full {
                used,
                limit: self.max_bytes,
            });
        }
        Ok(())
    }

    /// Follows the highest LSN with an outcome; changes after every sync.
    pub fn resolved(&self) -> watch::Receiver<Lsn> {
        self.shared.resolved()
    }

    /// `None` while `completion` waits for a sync; then whether it succeeded.
    pub fn outcome(&self, completion: Completion) -> Option<Result<(), JournalError>> {
        let Some(lsn) = completion.lsn() else {
            return Some(Ok(()));
        };
        if self.shared.resolved_now() < lsn {
            return None;
        }
        Some(if self.shared.failed(lsn) {
            Err(JournalError::WriteFailed)
        } else {
            Ok(())
        })
    }

    /// Waits until `completion` has an outcome, and returns it.
    pub async fn wait(&self, completion: Completion) -> Result<(), JournalError> {
        let mut resolved = self.resolved();
        loop {
            if let Some(outcome) = self.outcome(completion) {
                return outcome;
            }
            if resolved.changed().await.is_err() {
                return Err(JournalError::WriteFailed);
            }
        }
    }

    /// The counters.
    pub fn stats(&self) -> JournalStats {
        let c = &self.shared.counters;
        JournalStats {
            disk_bytes: c.disk_bytes.load(Ordering::Relaxed),
            max_bytes: self.max_bytes,
            segments: c.segments.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            records: c.records.load(Ordering::Relaxed),
            bytes_written: c.bytes_written.load(Ordering::Relaxed),
            failed_writes: c.failed_writes.load(Ordering::Relaxed),
        }
    }

    /// Writes what is queued, then stops the writer. Idempotent.
    pub fn close(&self) {
        self.shared.close();
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = handle
            && handle.join().is_err()
        {
            tracing::error!("journal writer panicked");
        }
        // Everything is written: another broker may open the directory now.
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}

impl Drop for Journal {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests;
