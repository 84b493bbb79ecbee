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

/// Keeps a record's segment on disk while the record matters. Held by the
/// message the record describes; dropping it (the message was settled and
/// let go) lets the segment be reclaimed.
#[derive(Debug)]
pub struct JournalPin {
    live: Arc<LiveCount>,
    segment: u64,
    bytes: u64,
}

impl JournalPin {
    pub(crate) fn new(live: &Arc<LiveCount>, segment: u64, bytes: u64) -> JournalPin {
        live.records.fetch_add(1, Ordering::AcqRel);
        live.bytes.fetch_add(bytes, Ordering::AcqRel);
        JournalPin {
            live: live.clone(),
            segment,
            bytes,
        }
    }

    /// The segment holding the record.
    pub fn segment(&self) -> u64 {
        self.segment
    }
}

impl Drop for JournalPin {
    fn drop(&mut self) {
        self.live.bytes.fetch_sub(self.bytes, Ordering::AcqRel);
        self.live.records.fetch_sub(1, Ordering::AcqRel);
    }
}
