//! Reading enqueue records back: the bodies of paged-out queue messages
//! (a deep backlog waits on disk, not in memory) and of recovered ones.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use super::record::{self, Read, Record};
use super::segment;

/// Where a record is in the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef {
    /// Its segment.
    pub segment: u64,
    /// Where it starts in the segment.
    pub offset: u64,
    /// Its size, framing included.
    pub size: u64,
}

/// A queue message read back from its enqueue record.
#[derive(Debug)]
pub struct StoredMessage {
    /// The message's id number.
    pub id: u64,
    /// When the broker accepted it, ms since the Unix epoch.
    pub at_ms: u64,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
}

/// Spans read in one go at most; records further apart are read apart.
const MAX_SPAN: u64 = 16 << 20;

/// Reads the enqueue records at `refs`, in order. A record that cannot
/// be read (a write that failed, damage) comes back as an error in its place.
pub(super) fn read_enqueues(dir: &Path, refs: &[RecordRef]) -> Vec<io::Result<StoredMessage>> {
    let mut out = Vec::with_capacity(refs.len());
    let mut i = 0;
    while i < refs.len() {
        // A run of records of one segment, close enough to read as one span.
        let first = refs[i];
        let mut j = i + 1;
        let mut end = first.offset + first.size;
        let mut start = first.offset;
        while j < refs.len()
            && refs[j].segment == first.segment
            && refs[j].offset.max(end) - refs[j].offset.min(start) <= MAX_SPAN
        {
            start = start.min(refs[j].offset);
            end = end.max(refs[j].offset + refs[j].size);
            j += 1;
        }
        match read_span(dir, first.segment, start, end) {
            Ok(span) => {
                for r in &refs[i..j] {
                    let at = (r.offset - start) as usize;
                    out.push(parse(span.slice(at..at + r.size as usize)));
                }
            }
            Err(e) => {
                for _ in i..j {
                    out.push(Err(io::Error::new(e.kind(), e.to_string())));
                }
            }
        }
        i = j;
    }
    out
}

fn read_span(dir: &Path, segment_number: u64, start: u64, end: u64) -> io::Result<Bytes> {
    let file = File::open(segment::path(dir, segment_number))?;
    let mut buf = vec![0; (end - start) as usize];
    file.read_exact_at(&mut buf, start)?;
    Ok(Bytes::from(buf))
}

fn parse(data: Bytes) -> io::Result<StoredMessage> {
    match record::read(&data) {
        Read::Record(
            Record::Enqueue {
                id,
                at_ms,
                headers,
                body,
                ..
            },
            _,
        ) => Ok(StoredMessage {
            id,
            at_ms,
            // Own allocations: slices would keep the whole span alive.
            headers: headers
                .iter()
                .map(|(n, v)| (ByteString::from(n), ByteString::from(v)))
                .collect(),
            body: Bytes::copy_from_slice(&body),
        }),
        Read::Record(..) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "not an enqueue record",
        )),
        Read::End | Read::Damaged(_) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a damaged or missing record",
        )),
    }
}
