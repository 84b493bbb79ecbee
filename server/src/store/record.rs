//! The journal's records and their bytes on disk.
//!
//! Every record is framed as `length: u32 LE`, `crc32: u32 LE` (of the
//! payload), then `length` bytes of payload whose first byte is the kind.
//! A length of zero is never written: it marks the end of the data in a
//! segment (a preallocated or torn tail reads as zeros).

use bytes::{Buf, BufMut, Bytes};
use stomp_codec::{ByteString, Headers};

/// Bytes in front of every payload: its length and its CRC.
pub(crate) const FRAME_HEADER: usize = 8;

/// The largest payload a record may have; anything longer is corruption
/// (frames are limited far below this).
pub(crate) const MAX_PAYLOAD: usize = 1 << 30;

const ENQUEUE: u8 = 1;
const SETTLE: u8 = 2;
const ID_BLOCK: u8 = 3;
const BATCH: u8 = 4;
const TOPIC_APPEND: u8 = 5;
const TOPIC_HEAD: u8 = 6;
const CURSOR: u8 = 7;
const CURSOR_GONE: u8 = 8;
const RETURNED: u8 = 9;
const TOPIC_PURGE: u8 = 10;

/// One fact in the journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A durable message was accepted for `queue`.
    Enqueue {
        /// The queue.
        queue: ByteString,
        /// The message's id number.
        id: u64,
        /// When the broker accepted it, ms since the Unix epoch: its delay
        /// and expiry count from here, across restarts too.
        at_ms: u64,
        /// The SEND's headers as kept by the broker.
        headers: Headers,
        /// The body.
        body: Bytes,
    },
    /// Messages of `queue` are done with (acknowledged or dropped by policy).
    Settle {
        /// The queue.
        queue: ByteString,
        /// Their id numbers.
        ids: Vec<u64>,
    },
    /// Deliveries of these messages of `queue` failed (NACK, ack deadline,
    /// a consumer gone): each adds one to the message's delivery count.
    Returned {
        /// The queue.
        queue: ByteString,
        /// Their id numbers.
        ids: Vec<u64>,
    },
    /// Message ids below `up_to` may be in use: a restarted broker starts
    /// numbering there, so no id is given out twice.
    IdBlock {
        /// The first id not yet reserved.
        up_to: u64,
    },
    /// A message kept in a topic's history (chat rooms' `x-history` and
    /// `x-since` survive a restart under the same epoch).
    TopicAppend {
        /// The topic.
        topic: ByteString,
        /// The topic's stream epoch.
        epoch: ByteString,
        /// The message's position in the stream.
        position: u64,
        /// The message's id number.
        id: u64,
        /// When it was published, milliseconds since the Unix epoch (for the
        /// history's age limit).
        at_ms: u64,
        /// Its headers.
        headers: Headers,
        /// Its body.
        body: Bytes,
    },
    /// A durable topic's stream exists under `epoch` and its next message
    /// gets `next_position`: written when the topic is created and again at
    /// the start of every segment, so a room whose history is empty or was
    /// reclaimed keeps its epoch across restarts.
    TopicHead {
        /// The topic.
        topic: ByteString,
        /// Its stream epoch.
        epoch: ByteString,
        /// The position its next message gets.
        next_position: u64,
    },
    /// A topic's history before `before` (in `epoch`) was purged by an
    /// operator: recovery drops those messages, whose records may remain
    /// in segments kept for other reasons.
    TopicPurge {
        /// The topic.
        topic: ByteString,
        /// Its stream epoch.
        epoch: ByteString,
        /// The first position kept.
        before: u64,
    },
    /// A durable subscription of `topic` has settled everything up to
    /// `position` (written when it is created and as it moves, and again at
    /// the start of every segment).
    Cursor {
        /// The topic.
        topic: ByteString,
        /// The subscription's key (who owns it and its name).
        key: ByteString,
        /// The last settled position.
        position: u64,
    },
    /// A durable subscription was deleted.
    CursorGone {
        /// The topic.
        topic: ByteString,
        /// The subscription's key.
        key: ByteString,
    },
    /// Records that take effect together or not at all (a transaction's
    /// SENDs and ACKs): one CRC covers them all, so a torn write drops
    /// the whole group.
    Batch(Vec<Record>),
}

/// Appends the framed enqueue record for these parts to `dst`, without
/// building a [`Record`] (the body is copied once, here).
pub(crate) fn encode_enqueue(
    dst: &mut Vec<u8>,
    queue: &str,
    id: u64,
    at_ms: u64,
    headers: &Headers,
    body: &[u8],
) {
    frame(dst, |p| {
        p.put_u8(ENQUEUE);
        put_str(p, queue);
        p.put_u64_le(id);
        p.put_u64_le(at_ms);
        put_headers(p, headers);
        p.put_u32_le(body.len() as u32);
        p.put_slice(body);
    });
}

/// Appends a framed settle record.
pub(crate) fn encode_settle(dst: &mut Vec<u8>, queue: &str, ids: &[u64]) {
    encode_ids(dst, SETTLE, queue, ids);
}

/// Appends a framed record of returned deliveries.
pub(crate) fn encode_returned(dst: &mut Vec<u8>, queue: &str, ids: &[u64]) {
    encode_ids(dst, RETURNED, queue, ids);
}

fn encode_ids(dst: &mut Vec<u8>, kind: u8, queue: &str, ids: &[u64]) {
    frame(dst, |p| {
        p.put_u8(kind);
        put_str(p, queue);
        p.put_u32_le(ids.len() as u32);
        for id in ids {
            p.put_u64_le(*id);
        }
    });
}

/// The parts of a topic message to journal.
#[derive(Debug, Clone, Copy)]
pub struct TopicEntry<'a> {
    /// The topic.
    pub topic: &'a str,
    /// Its stream epoch.
    pub epoch: &'a str,
    /// The message's position in the stream.
    pub position: u64,
    /// The message's id number.
    pub id: u64,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: u64,
    /// Its headers.
    pub headers: &'a Headers,
    /// Its body.
    pub body: &'a [u8],
}

/// Appends a framed topic-append record.
pub(crate) fn encode_topic_append(dst: &mut Vec<u8>, e: &TopicEntry<'_>) {
    frame(dst, |p| {
        p.put_u8(TOPIC_APPEND);
        put_str(p, e.topic);
        put_str(p, e.epoch);
        p.put_u64_le(e.position);
        p.put_u64_le(e.id);
        p.put_u64_le(e.at_ms);
        put_headers(p, e.headers);
        p.put_u32_le(e.body.len() as u32);
        p.put_slice(e.body);
    });
}

fn put_headers(p: &mut Vec<u8>, headers: &Headers) {
    p.put_u32_le(headers.len() as u32);
    for (name, value) in headers.iter() {
        put_str(p, name);
        put_str(p, value);
    }
}

fn take_headers(p: &mut Bytes) -> Option<Headers> {
    let count = take_u32(p)? as usize;
    // Each header takes at least 8 bytes: a count beyond that is damage.
    if count > p.len() / 8 {
        return None;
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name = take_str(p)?;
        let value = take_str(p)?;
        headers.push(name, value);
    }
    Some(headers)
}

fn take_body(p: &mut Bytes) -> Option<Bytes> {
    let len = take_u32(p)? as usize;
    (len <= p.len()).then(|| p.split_to(len))
}

/// Appends a framed topic-head record.
pub(crate) fn encode_topic_head(dst: &mut Vec<u8>, topic: &str, epoch: &str, next_position: u64) {
    frame(dst, |p| {
        p.put_u8(TOPIC_HEAD);
        put_str(p, topic);
        put_str(p, epoch);
        p.put_u64_le(next_position);
    });
}

/// Appends a framed history-purge record.
pub(crate) fn encode_topic_purge(dst: &mut Vec<u8>, topic: &str, epoch: &str, before: u64) {
    frame(dst, |p| {
        p.put_u8(TOPIC_PURGE);
        put_str(p, topic);
        put_str(p, epoch);
        p.put_u64_le(before);
    });
}

/// Appends a framed cursor record.
pub(crate) fn encode_cursor(dst: &mut Vec<u8>, topic: &str, key: &str, position: u64) {
    frame(dst, |p| {
        p.put_u8(CURSOR);
        put_str(p, topic);
        put_str(p, key);
        p.put_u64_le(position);
    });
}

/// Appends a framed cursor-gone record.
pub(crate) fn encode_cursor_gone(dst: &mut Vec<u8>, topic: &str, key: &str) {
    frame(dst, |p| {
        p.put_u8(CURSOR_GONE);
        put_str(p, topic);
        put_str(p, key);
    });
}

/// Appends a framed batch record holding `inner`, which is framed records.
pub(crate) fn encode_batch(dst: &mut Vec<u8>, inner: &[u8]) {
    frame(dst, |p| {
        p.put_u8(BATCH);
        p.put_slice(inner);
    });
}

/// Appends a framed id-block record.
pub(crate) fn encode_id_block(dst: &mut Vec<u8>, up_to: u64) {
    frame(dst, |p| {
        p.put_u8(ID_BLOCK);
        p.put_u64_le(up_to);
    });
}

impl Record {
    /// The framed bytes of this record.
    pub fn encode(&self, dst: &mut Vec<u8>) {
        match self {
            Record::Enqueue {
                queue,
                id,
                at_ms,
                headers,
                body,
            } => encode_enqueue(dst, queue, *id, *at_ms, headers, body),
            Record::Settle { queue, ids } => encode_settle(dst, queue, ids),
            Record::Returned { queue, ids } => encode_returned(dst, queue, ids),
            Record::IdBlock { up_to } => encode_id_block(dst, *up_to),
            Record::TopicAppend {
                topic,
                epoch,
                position,
                id,
                at_ms,
                headers,
                body,
            } => encode_topic_append(
                dst,
                &TopicEntry {
                    topic,
                    epoch,
                    position: *position,
                    id: *id,
                    at_ms: *at_ms,
                    headers,
                    body,
                },
            ),
            Record::TopicHead {
                topic,
                epoch,
                next_position,
            } => encode_topic_head(dst, topic, epoch, *next_position),
            Record::Cursor {
                topic,
                key,
                position,
            } => encode_cursor(dst, topic, key, *position),
            Record::CursorGone { topic, key } => encode_cursor_gone(dst, topic, key),
            Record::TopicPurge {
                topic,
                epoch,
                before,
            } => encode_topic_purge(dst, topic, epoch, *before),
            Record::Batch(records) => {
                let mut inner = Vec::new();
                for r in records {
                    r.encode(&mut inner);
                }
                encode_batch(dst, &inner);
            }
        }
    }
}

/// Writes the length and CRC in front of what `payload` writes.
fn frame(dst: &mut Vec<u8>, payload: impl FnOnce(&mut Vec<u8>)) {
    let start = dst.len();
    dst.extend_from_slice(&[0; FRAME_HEADER]);
    payload(dst);
    let len = (dst.len() - start - FRAME_HEADER) as u32;
    let crc = crc32fast::hash(&dst[start + FRAME_HEADER..]);
    dst[start..start + 4].copy_from_slice(&len.to_le_bytes());
    dst[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_str(p: &mut Vec<u8>, s: &str) {
    p.put_u32_le(s.len() as u32);
    p.put_slice(s.as_bytes());
}

/// What reading one framed record at the start of some bytes found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Read {
    /// A whole, intact record and the bytes it took.
    Record(Record, usize),
    /// Zeros where the next length would be: the end of the written data.
    End,
    /// A record cut short, a CRC that does not match, or a payload that does
    /// not parse: what a crash in the middle of a write leaves.
    Damaged(&'static str),
}

/// Reads the framed record at the start of `data`.
pub(crate) fn read(data: &Bytes) -> Read {
    if data.len() < FRAME_HEADER {
        return if data.iter().all(|b| *b == 0) {
            Read::End
        } else {
            Read::Damaged("a record header cut short")
        };
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let crc = u32::from_le_bytes([data[4], data[5], data[6], data[7]]);
    if len == 0 {
        return if crc == 0 {
            Read::End
        } else {
            Read::Damaged("a record of length zero")
        };
    }
    if len > MAX_PAYLOAD || FRAME_HEADER + len > data.len() {
        return Read::Damaged("a record longer than the data left");
    }
    let payload = data.slice(FRAME_HEADER..FRAME_HEADER + len);
    if crc32fast::hash(&payload) != crc {
        return Read::Damaged("a record whose checksum does not match");
    }
    match parse(payload) {
        Some(record) => Read::Record(record, FRAME_HEADER + len),
        None => Read::Damaged("a record that does not parse"),
    }
}

/// Parses a payload whose CRC matched. `None` for a kind or shape this
/// version does not know.
fn parse(mut p: Bytes) -> Option<Record> {
    let kind = take_u8(&mut p)?;
    let record = match kind {
        ENQUEUE => {
            let queue = take_str(&mut p)?;
            let id = take_u64(&mut p)?;
            let at_ms = take_u64(&mut p)?;
            let headers = take_headers(&mut p)?;
            let body = take_body(&mut p)?;
            Record::Enqueue {
                queue,
                id,
                at_ms,
                headers,
                body,
            }
        }
        SETTLE | RETURNED => {
            let queue = take_str(&mut p)?;
            let count = take_u32(&mut p)? as usize;
            if count > p.len() / 8 {
                return None;
            }
            let ids = (0..count).map(|_| p.get_u64_le()).collect();
            if kind == SETTLE {
                Record::Settle { queue, ids }
            } else {
                Record::Returned { queue, ids }
            }
        }
        ID_BLOCK => Record::IdBlock {
            up_to: take_u64(&mut p)?,
        },
        TOPIC_APPEND => Record::TopicAppend {
            topic: take_str(&mut p)?,
            epoch: take_str(&mut p)?,
            position: take_u64(&mut p)?,
            id: take_u64(&mut p)?,
            at_ms: take_u64(&mut p)?,
            headers: take_headers(&mut p)?,
            body: take_body(&mut p)?,
        },
        TOPIC_HEAD => Record::TopicHead {
            topic: take_str(&mut p)?,
            epoch: take_str(&mut p)?,
            next_position: take_u64(&mut p)?,
        },
        CURSOR => Record::Cursor {
            topic: take_str(&mut p)?,
            key: take_str(&mut p)?,
            position: take_u64(&mut p)?,
        },
        CURSOR_GONE => Record::CursorGone {
            topic: take_str(&mut p)?,
            key: take_str(&mut p)?,
        },
        TOPIC_PURGE => Record::TopicPurge {
            topic: take_str(&mut p)?,
            epoch: take_str(&mut p)?,
            before: take_u64(&mut p)?,
        },
        BATCH => {
            let mut records = Vec::new();
            while !p.is_empty() {
                match read(&p) {
                    Read::Record(Record::Batch(_), _) => return None,
                    Read::Record(r, used) => {
                        records.push(r);
                        p.advance(used);
                    }
                    Read::End | Read::Damaged(_) => return None,
                }
            }
            Record::Batch(records)
        }
        _ => return None,
    };
    p.is_empty().then_some(record)
}

fn take_u8(p: &mut Bytes) -> Option<u8> {
    (!p.is_empty()).then(|| p.get_u8())
}

fn take_u32(p: &mut Bytes) -> Option<u32> {
    (p.len() >= 4).then(|| p.get_u32_le())
}

fn take_u64(p: &mut Bytes) -> Option<u64> {
    (p.len() >= 8).then(|| p.get_u64_le())
}

fn take_str(p: &mut Bytes) -> Option<ByteString> {
    let len = take_u32(p)? as usize;
    if len > p.len() {
        return None;
    }
    ByteString::try_from(p.split_to(len)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        let mut headers = Headers::new();
        headers.push("content-type", "text/plain");
        headers.push("x-colon", "a:b");
        vec![
            Record::Enqueue {
                queue: "/queue/jobs".into(),
                id: 42,
                at_ms: 1_700_000_000_123,
                headers,
                body: Bytes::from_static(b"hello\0world"),
            },
            Record::Settle {
                queue: "/queue/jobs".into(),
                ids: vec![42, 43],
            },
            Record::Returned {
                queue: "/queue/jobs".into(),
                ids: vec![43],
            },
            Record::IdBlock { up_to: 1 << 20 },
            Record::TopicAppend {
                topic: "/topic/chat.x".into(),
                epoch: "abc.1".into(),
                position: 9,
                id: 77,
                at_ms: 1_700_000_000_000,
                headers: Headers::new(),
                body: Bytes::from_static(b"hi"),
            },
            Record::TopicHead {
                topic: "/topic/chat.empty".into(),
                epoch: "abc.2".into(),
                next_position: 1,
            },
            Record::Cursor {
                topic: "/topic/prices".into(),
                key: "ana\napp\nticker".into(),
                position: 12,
            },
            Record::CursorGone {
                topic: "/topic/prices".into(),
                key: "ana\napp\nticker".into(),
            },
            Record::TopicPurge {
                topic: "/topic/chat.x".into(),
                epoch: "abc.1".into(),
                before: 10,
            },
            Record::Batch(vec![
                Record::Settle {
                    queue: "/queue/a".into(),
                    ids: vec![1],
                },
                Record::IdBlock { up_to: 7 },
            ]),
        ]
    }

    #[test]
    fn records_read_back_as_written() {
        let mut buf = Vec::new();
        for r in sample() {
            r.encode(&mut buf);
        }
        let mut data = Bytes::from(buf);
        for expected in sample() {
            match read(&data) {
                Read::Record(r, used) => {
                    assert_eq!(r, expected);
                    data.advance(used);
                }
                other => panic!("expected a record, read {other:?}"),
            }
        }
        assert_eq!(read(&data), Read::End);
        assert_eq!(read(&Bytes::from_static(&[0; 64])), Read::End);
    }

    #[test]
    fn any_cut_or_flipped_byte_is_damage_not_a_record() {
        let mut buf = Vec::new();
        sample()[0].encode(&mut buf);
        for cut in 1..buf.len() {
            let data = Bytes::copy_from_slice(&buf[..cut]);
            assert!(
                matches!(read(&data), Read::Damaged(_)),
                "cut at {cut} read as {:?}",
                read(&data)
            );
        }
        for i in 0..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(
                !matches!(read(&Bytes::from(bad)), Read::Record(..)),
                "a flip at byte {i} still read as a record"
            );
        }
    }
}
