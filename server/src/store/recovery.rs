//! Rebuilding the broker's durable state from the journal at start.
//!
//! The rules: records are applied in log order; a queue holds what was
//! enqueued minus what was settled; the highest id reservation seen is
//! where numbering resumes. The newest segment may end in a torn write (a
//! crash in the middle of one): it is cut at the first damaged record.
//! Damage in an older segment cannot come from a crash; it is logged as
//! an error and the rest of that segment is skipped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::path::Path;
use std::sync::Arc;

use bytes::{Buf, Bytes};
use stomp_codec::{ByteString, Headers};

use super::record::{self, Read, Record};
use super::segment::{self, LiveCount};

/// A durable queue message found in the journal: where its record is.
/// Its headers and body stay on disk until read (see
/// [`Journal::read`](super::Journal::read)), so recovering a deep backlog
/// does not need its bodies in memory.
#[derive(Debug, Clone, Copy)]
pub struct RecoveredMessage {
    /// Its id number.
    pub id: u64,
    /// Its enqueue record.
    pub record: super::RecordRef,
    /// Its priority (read from its headers), so a message that stays on
    /// disk still waits in its place.
    pub priority: u8,
    /// Not to be delivered before this time, ms since the Unix epoch (0:
    /// at once): a delayed message is read back into memory, where it waits.
    pub deliver_at_ms: u64,
    /// Deliveries of it known to have failed (its delivery count).
    pub returned: u32,
}

/// A deduplication id a queue saw: its enqueue record (the message may be
/// settled since) still on disk.
#[derive(Debug, Clone)]
pub struct RecoveredDedup {
    /// The id.
    pub id: ByteString,
    /// When its message was accepted, ms since the Unix epoch.
    pub at_ms: u64,
    /// The enqueue record that carried it.
    pub record: super::RecordRef,
}

/// One queue's recovered messages, in the order they were accepted.
#[derive(Debug)]
pub struct RecoveredQueue {
    /// The queue's name.
    pub name: ByteString,
    /// Its messages, oldest first.
    pub messages: Vec<RecoveredMessage>,
    /// Deduplication ids of its messages, settled or not, oldest first.
    pub dedup: Vec<RecoveredDedup>,
}

/// A message of a topic's journaled history.
#[derive(Debug)]
pub struct RecoveredTopicMessage {
    /// Its id number.
    pub id: u64,
    /// Its position in the topic's stream.
    pub position: u64,
    /// When it was published, ms since the Unix epoch.
    pub at_ms: u64,
    /// Its headers.
    pub headers: Headers,
    /// Its body.
    pub body: Bytes,
    /// The segment holding its record.
    pub(super) segment: u64,
}

/// A topic's stream as the journal knows it.
#[derive(Debug)]
pub struct RecoveredTopic {
    /// The topic's name.
    pub name: ByteString,
    /// Its stream epoch, kept across restarts.
    pub epoch: ByteString,
    /// The position the next message gets.
    pub next_position: u64,
    /// Its newest history messages, oldest first.
    pub messages: VecDeque<RecoveredTopicMessage>,
    /// Its durable subscriptions: key and last settled position.
    pub durables: Vec<(ByteString, u64)>,
}

/// History messages kept per topic while recovering: far above any
/// sensible `history` policy, so recovery's memory stays bounded.
const MAX_TOPIC_MESSAGES: usize = 65_536;

/// Deduplication ids kept per queue while recovering: the most any
/// queue's window may hold (see `QueuePolicy::dedup_window_ids`).
pub const MAX_DEDUP_IDS: usize = 1_000_000;

/// What a recovery found and did, for the log and `/health`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segment files read.
    pub segments: usize,
    /// Records read intact.
    pub records: u64,
    /// Durable messages still to be delivered.
    pub messages: u64,
    /// Bytes cut from the end of the newest segment (a torn write).
    pub torn_bytes: u64,
    /// Bytes skipped in older segments because they were damaged.
    pub damaged_bytes: u64,
}

/// Everything recovered from the journal's directory.
#[derive(Debug, Default)]
pub struct Recovered {
    /// The queues with messages left.
    pub queues: Vec<RecoveredQueue>,
    /// The topics with journaled history.
    pub topics: Vec<RecoveredTopic>,
    /// The first message id not known to be used.
    pub next_id: u64,
    /// What happened.
    pub report: RecoveryReport,
    /// Segments on disk, with how many recovered messages each holds.
    pub(super) segments: BTreeMap<u64, u64>,
    /// The newest segment and its length after any cut.
    pub(super) last: Option<(u64, u64)>,
    /// Bytes of every segment on disk.
    pub(super) disk_bytes: u64,
}

impl Recovered {
    /// Live counts for the recovered segments, each counting the messages
    /// it holds (the messages' pins add to them when taken).
    pub(super) fn live_counts(&self) -> BTreeMap<u64, Arc<LiveCount>> {
        self.segments
            .keys()
            .map(|n| (*n, Arc::new(LiveCount::default())))
            .collect()
    }
}

/// Everything being rebuilt.
#[derive(Default)]
struct State {
    queues: HashMap<ByteString, QueueState>,
    topics: HashMap<ByteString, RecoveredTopic>,
}

#[derive(Default)]
struct QueueState {
    /// By message id: the order they were accepted in (ids are given out in
    /// order, and a compacted record, written again later, keeps its place).
    messages: BTreeMap<u64, RecoveredMessage>,
    /// Deduplication ids seen, by message id (a compacted copy replaces
    /// the older record).
    dedup: BTreeMap<u64, RecoveredDedup>,
}

/// Reads every segment in `dir` and rebuilds the durable state. Cuts a
/// torn tail off the newest segment on disk.
pub(super) fn recover(dir: &Path) -> io::Result<Recovered> {
    let numbers = segment::list(dir)?;
    let mut state = State::default();
    let mut out = Recovered {
        next_id: 1,
        ..Recovered::default()
    };
    let newest = numbers.last().copied();
    for number in numbers {
        let path = segment::path(dir, number);
        let data = Bytes::from(std::fs::read(&path)?);
        let file_len = data.len() as u64;
        out.report.segments += 1;
        let mut rest = data.clone();
        let mut end = 0u64;
        let mut damage = None;
        loop {
            match record::read(&rest) {
                Read::End => break,
                Read::Damaged(why) => {
                    damage = Some(why);
                    break;
                }
                Read::Record(Record::Batch(_), used) => {
                    // Its records one by one, each with its own place, so
                    // a message of a transaction can be read back alone.
                    out.report.records += 1;
                    let mut inner = rest.slice(record::FRAME_HEADER + 1..used);
                    let mut at = end + record::FRAME_HEADER as u64 + 1;
                    while let Read::Record(r, n) = record::read(&inner) {
                        let place = super::RecordRef {
                            segment: number,
                            offset: at,
                            size: n as u64,
                        };
                        apply(&mut state, &mut out.next_id, r, place);
                        inner.advance(n);
                        at += n as u64;
                    }
                    rest.advance(used);
                    end += used as u64;
                }
                Read::Record(r, used) => {
                    out.report.records += 1;
                    let place = super::RecordRef {
                        segment: number,
                        offset: end,
                        size: used as u64,
                    };
                    apply(&mut state, &mut out.next_id, r, place);
                    rest.advance(used);
                    end += used as u64;
                }
            }
        }
        if let Some(why) = damage {
            let lost = file_len - end;
            if Some(number) == newest {
                tracing::warn!(
                    segment = %path.display(),
                    offset = end,
                    reason = why,
                    "journal: torn write at the end of the newest segment cut off (a crash during a write; nothing in it had been confirmed)"
                );
                // Zeros from the cut on (the file keeps its preallocated
                // length), so new records follow the intact ones.
                let file = std::fs::OpenOptions::new().write(true).open(&path)?;
                file.set_len(end)?;
                file.set_len(file_len)?;
                file.sync_all()?;
                out.report.torn_bytes += torn_length(&data, end);
            } else {
                tracing::error!(
                    segment = %path.display(),
                    offset = end,
                    bytes = lost,
                    reason = why,
                    "journal: damaged record in an older segment; the rest of this segment is skipped (disk or file damage, or a write that failed)"
                );
                out.report.damaged_bytes += lost;
            }
        }
        out.disk_bytes += file_len;
        out.segments.insert(number, 0);
        if Some(number) == newest {
            // Where the data ends: the next record goes there.
            out.last = Some((number, end));
        }
    }
    let State { mut queues, topics } = state;
    let mut topics: Vec<RecoveredTopic> = topics.into_values().collect();
    topics.sort_by(|a, b| a.name.cmp(&b.name));
    for t in &mut topics {
        // Compaction writes kept messages again: in position order, the
        // copy in the newest segment kept.
        t.messages
            .make_contiguous()
            .sort_by_key(|m| (m.position, std::cmp::Reverse(m.segment)));
        let mut seen = None;
        t.messages.retain(|m| {
            let fresh = seen != Some(m.position);
            seen = Some(m.position);
            fresh
        });
    }
    for t in &topics {
        for m in &t.messages {
            *out.segments.entry(m.segment).or_default() += 1;
        }
    }
    out.topics = topics;
    let mut names: Vec<ByteString> = queues.keys().cloned().collect();
    names.sort();
    for name in names {
        let Some(q) = queues.remove(&name) else {
            continue;
        };
        if q.messages.is_empty() && q.dedup.is_empty() {
            continue;
        }
        let messages: Vec<RecoveredMessage> = q.messages.into_values().collect();
        for m in &messages {
            *out.segments.entry(m.record.segment).or_default() += 1;
        }
        let mut dedup: Vec<RecoveredDedup> = q.dedup.into_values().collect();
        dedup.sort_by_key(|d| d.at_ms);
        for d in &dedup {
            *out.segments.entry(d.record.segment).or_default() += 1;
        }
        out.report.messages += messages.len() as u64;
        out.queues.push(RecoveredQueue {
            name,
            messages,
            dedup,
        });
    }
    Ok(out)
}

/// Headers copied into their own allocations: slices would keep the
/// whole segment's buffer alive as long as the message.
fn own_headers(headers: &Headers) -> Headers {
    headers
        .iter()
        .map(|(n, v)| (ByteString::from(n), ByteString::from(v)))
        .collect()
}

/// The topic being rebuilt, under `epoch`: a topic forgotten and created
/// again in an earlier run has a new epoch, and its newer stream replaces
/// the older (an empty epoch, from a cursor record alone, takes any).
fn topic_of(state: &mut State, topic: ByteString, epoch: ByteString) -> &mut RecoveredTopic {
    let t = state
        .topics
        .entry(topic.clone())
        .or_insert_with(|| RecoveredTopic {
            name: topic,
            epoch: epoch.clone(),
            next_position: 1,
            messages: VecDeque::new(),
            durables: Vec::new(),
        });
    if t.epoch != epoch && !epoch.is_empty() {
        t.epoch = epoch;
        t.messages.clear();
        t.next_position = 1;
    }
    t
}

/// How many bytes of damage follow `end`: up to the last byte that is not
/// zero (a preallocated segment is zeros after its data).
fn torn_length(data: &Bytes, end: u64) -> u64 {
    let tail = &data[end as usize..];
    tail.iter()
        .rposition(|b| *b != 0)
        .map_or(0, |i| i as u64 + 1)
}

fn apply(state: &mut State, next_id: &mut u64, record: Record, place: super::RecordRef) {
    let segment = place.segment;
    match record {
        Record::Enqueue {
            queue,
            id,
            at_ms,
            headers,
            ..
        } => {
            *next_id = (*next_id).max(id + 1);
            let q = state.queues.entry(queue).or_default();
            if let Some(dedup) = crate::terms::dedup_id(&headers) {
                q.dedup.insert(
                    id,
                    RecoveredDedup {
                        id: ByteString::from(&**dedup),
                        at_ms,
                        record: place,
                    },
                );
                if q.dedup.len() > MAX_DEDUP_IDS {
                    q.dedup.pop_first();
                }
            }
            // A second record of the same id is a compaction's copy: the
            // newer one (in the newer segment) replaces the older, and
            // keeps the count of failed deliveries.
            let returned = q.messages.get(&id).map_or(0, |m| m.returned);
            let terms = crate::terms::Terms::read(&headers, at_ms, 0);
            q.messages.insert(
                id,
                RecoveredMessage {
                    id,
                    record: place,
                    priority: terms.priority,
                    deliver_at_ms: terms.deliver_at_ms,
                    returned,
                },
            );
        }
        Record::Settle { queue, ids } => {
            if let Some(q) = state.queues.get_mut(&queue) {
                for id in ids {
                    q.messages.remove(&id);
                }
            }
        }
        Record::Returned { queue, ids } => {
            if let Some(q) = state.queues.get_mut(&queue) {
                for id in ids {
                    if let Some(m) = q.messages.get_mut(&id) {
                        m.returned = m.returned.saturating_add(1);
                    }
                }
            }
        }
        Record::IdBlock { up_to } => *next_id = (*next_id).max(up_to),
        Record::TopicAppend {
            topic,
            epoch,
            position,
            id,
            at_ms,
            headers,
            body,
        } => {
            *next_id = (*next_id).max(id + 1);
            let t = topic_of(state, topic, epoch);
            t.next_position = t.next_position.max(position + 1);
            if t.messages.len() == MAX_TOPIC_MESSAGES {
                t.messages.pop_front();
            }
            t.messages.push_back(RecoveredTopicMessage {
                id,
                position,
                at_ms,
                headers: own_headers(&headers),
                body: Bytes::copy_from_slice(&body),
                segment,
            });
        }
        Record::TopicHead {
            topic,
            epoch,
            next_position,
        } => {
            let t = topic_of(state, topic, epoch);
            t.next_position = t.next_position.max(next_position);
        }
        Record::Cursor {
            topic,
            key,
            position,
        } => {
            let t = topic_of(state, topic, ByteString::new());
            match t.durables.iter_mut().find(|(k, _)| *k == key) {
                Some((_, p)) => *p = position,
                None => t.durables.push((key, position)),
            }
        }
        Record::TopicPurge {
            topic,
            epoch,
            before,
        } => {
            let t = topic_of(state, topic, epoch);
            t.messages.retain(|m| m.position >= before);
        }
        Record::CursorGone { topic, key } => {
            if let Some(t) = state.topics.get_mut(&topic) {
                t.durables.retain(|(k, _)| *k != key);
            }
        }
        Record::Batch(records) => {
            // Not reached: batches are taken apart where they are read.
            for r in records {
                apply(state, next_id, r, place);
            }
        }
    }
}
