//! Segment files and the count of live records each one holds.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The file name of segment `number`: fixed width, so names sort in order.
pub(crate) fn file_name(number: u64) -> String {
    format!("{number:016}.seg")
}

/// The path of segment `number` in `dir`.
pub(crate) fn path(dir: &Path, number: u64) -> PathBuf {
    dir.join(file_name(number))
}

/// The segments in `dir`, oldest first. Files that are not segments are
/// left alone.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut numbers = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name
            .strip_suffix(".seg")
            .filter(|n| n.len() == 16)
            .and_then(|n| n.parse::<u64>().ok())
        {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

/// How many records of one segment still matter (messages not yet
/// settled), and their bytes. A segment may be deleted once the count is
/// zero for it and for every older segment; one whose live bytes are few
/// is worth compacting.
#[derive(Debug, Default)]
pub(crate) struct LiveCount {
    records: AtomicU64,
    bytes: AtomicU64,
}

impl LiveCount {
    pub(crate) fn get(&self) -> u64 {
        self.records.load(Ordering::Acquire)
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }
}

/// Offset of a record whose place is not known (inside a group that is
/// written as one batch): such a record cannot be read back alone.
pub(crate) const UNKNOWN_OFFSET: u32 = u32::MAX;

/// Keeps a record's segment on disk while the record matters. Held by the
/// message the record describes, or, for a paged-out message, by the
/// queue in its place; dropping it (the message was settled and let go)
/// lets the segment be reclaimed. It also says where the record is, so a
/// paged-out message can be read back. Small on purpose: a deep paged
/// backlog costs one of these per message.
#[derive(Debug)]
pub struct JournalPin {
    live: Arc<LiveCount>,
    segment: u32,
    offset: u32,
    bytes: u32,
}

impl JournalPin {
    pub(crate) fn new(live: &Arc<LiveCount>, segment: u64, offset: u32, bytes: u64) -> JournalPin {
        let bytes = u32::try_from(bytes).unwrap_or(u32::MAX);
        live.records.fetch_add(1, Ordering::AcqRel);
        live.bytes.fetch_add(u64::from(bytes), Ordering::AcqRel);
        JournalPin {
            live: live.clone(),
            segment: u32::try_from(segment).unwrap_or(u32::MAX),
            offset,
            bytes,
        }
    }

    /// The segment holding the record.
    pub fn segment(&self) -> u64 {
        u64::from(self.segment)
    }

    /// Where the record starts in its segment, when known.
    pub(crate) fn offset(&self) -> Option<u64> {
        (self.offset != UNKNOWN_OFFSET).then_some(u64::from(self.offset))
    }

    /// The record's size, framing included.
    pub fn bytes(&self) -> u64 {
        u64::from(self.bytes)
    }

    /// Where the record is, when it can be read back on its own.
    pub fn record(&self) -> Option<super::RecordRef> {
        self.offset().map(|offset| super::RecordRef {
            segment: self.segment(),
            offset,
            size: self.bytes(),
        })
    }

    /// Whether the record can be read back on its own (it is not inside a
    /// batch), so the message it describes can be paged out.
    pub fn readable(&self) -> bool {
        self.offset != UNKNOWN_OFFSET
    }
}

/// Another holder of the same record: the segment stays while any pin of
/// it does (a queue's deduplication window keeps a settled message's
/// record this way, so the id is still known after a restart).
impl Clone for JournalPin {
    fn clone(&self) -> JournalPin {
        self.live.records.fetch_add(1, Ordering::AcqRel);
        self.live
            .bytes
            .fetch_add(u64::from(self.bytes), Ordering::AcqRel);
        JournalPin {
            live: self.live.clone(),
            segment: self.segment,
            offset: self.offset,
            bytes: self.bytes,
        }
    }
}

impl Drop for JournalPin {
    fn drop(&mut self) {
        self.live
            .bytes
            .fetch_sub(u64::from(self.bytes), Ordering::AcqRel);
        self.live.records.fetch_sub(1, Ordering::AcqRel);
    }
}
