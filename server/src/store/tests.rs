use std::time::Duration;

use bytes::Bytes;
use stomp_codec::Headers;

use super::*;

fn config(dir: &Path) -> JournalConfig {
    JournalConfig {
        dir: dir.to_path_buf(),
        segment_bytes: 64 * 1024,
        max_bytes: 1 << 30,
    }
}

/// Opens the journal with reclaiming on, as the broker does once the
/// recovered messages hold their pins (these tests pin what they keep).
fn open(cfg: &JournalConfig) -> Result<(Arc<Journal>, Recovered), JournalError> {
    let (journal, recovered) = Journal::open(cfg)?;
    journal.start_reclaiming();
    Ok((journal, recovered))
}

fn headers() -> Headers {
    let mut h = Headers::new();
    h.push("content-type", "text/plain");
    h
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn wait(journal: &Journal, c: Completion) {
    block_on(async {
        tokio::time::timeout(Duration::from_secs(10), journal.wait(c))
            .await
            .expect("the journal resolved in time")
            .expect("the write succeeded");
    });
}

#[test]
fn enqueued_minus_settled_is_recovered_in_order() {
    let dir = tempdir();
    let (journal, recovered) = open(&config(&dir)).expect("open");
    assert!(recovered.queues.is_empty());
    let mut pins = Vec::new();
    let mut last = Completion::DONE;
    for id in 10..20 {
        let (c, pin) = journal
            .enqueue(
                "/queue/a",
                id,
                0,
                &headers(),
                format!("body {id}").as_bytes(),
            )
            .expect("room");
        pins.push(pin);
        last = c;
    }
    last = last.and(journal.settle("/queue/a", &[10, 11, 15]));
    wait(&journal, last);
    drop(journal);

    let (journal, recovered) = open(&config(&dir)).expect("reopen");
    assert_eq!(recovered.queues.len(), 1);
    let q = &recovered.queues[0];
    assert_eq!(&*q.name, "/queue/a");
    let ids: Vec<u64> = q.messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![12, 13, 14, 16, 17, 18, 19]);
    let refs: Vec<RecordRef> = q.messages.iter().map(|m| m.record).collect();
    let read = journal.read(&refs, 0);
    let first = read[0].as_ref().expect("the record reads back");
    assert_eq!(first.id, 12);
    assert_eq!(first.body, Bytes::from("body 12"));
    assert_eq!(first.headers.get("content-type"), Some("text/plain"));
    assert!(read.iter().all(|r| r.is_ok()));
    // Numbering resumes past the previous run's reservation.
    assert!(journal.id_ceiling() > 20);
    assert!(recovered.next_id > 19);
}

#[test]
fn a_torn_tail_is_cut_and_everything_before_it_kept() {
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    let mut last = Completion::DONE;
    for id in 1..=5 {
        let (c, pin) = journal
            .enqueue("/queue/t", id, 0, &headers(), b"x")
            .expect("room");
        std::mem::forget(pin);
        last = c;
    }
    wait(&journal, last);
    drop(journal);
    let newest = *segment::list(&dir)
        .expect("list")
        .last()
        .expect("a segment");
    let path = segment::path(&dir, newest);
    // Half of the last record, as a crash mid-write leaves it.
    tear(&path, 10);

    let (journal, recovered) = open(&config(&dir)).expect("reopen after a tear");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4]);
    assert!(recovered.report.torn_bytes > 0);
    // The journal goes on after the cut: new records follow intact ones.
    let (c, pin) = journal
        .enqueue("/queue/t", 99, 0, &headers(), b"after")
        .expect("room");
    std::mem::forget(pin);
    wait(&journal, c);
    drop(journal);
    let (_journal, recovered) = open(&config(&dir)).expect("reopen again");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 99]);
    assert_eq!(recovered.report.torn_bytes, 0);
}

#[test]
fn garbage_after_the_data_is_cut_too() {
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    let (c, pin) = journal
        .enqueue("/queue/g", 1, 0, &headers(), b"x")
        .expect("room");
    std::mem::forget(pin);
    wait(&journal, c);
    drop(journal);
    let newest = *segment::list(&dir)
        .expect("list")
        .last()
        .expect("a segment");
    let path = segment::path(&dir, newest);
    let mut data = std::fs::read(&path).expect("read");
    let end = data_end(&data);
    data[end..end + 100].fill(0xff);
    std::fs::write(&path, data).expect("write");
    let (_journal, recovered) = open(&config(&dir)).expect("reopen");
    assert_eq!(recovered.queues[0].messages.len(), 1);
    assert_eq!(recovered.report.torn_bytes, 100);
}

#[test]
fn settled_segments_are_deleted_and_the_id_reservation_survives() {
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    let ceiling = journal.id_ceiling();
    let body = vec![b'b'; 4000];
    // About 40 segments of 64 KiB, every message settled soon after.
    for id in 1..=600u64 {
        let (_, pin) = journal
            .enqueue("/queue/r", id, 0, &headers(), &body)
            .expect("room");
        drop(pin);
        let c = journal.settle("/queue/r", &[id]);
        if id % 50 == 0 {
            wait(&journal, c);
        }
    }
    let c = journal.settle("/queue/r", &[]);
    wait(&journal, c.and(journal.settle("/queue/r", &[600])));
    // Reclaim runs after each batch: one more batch to let it see the last settles.
    let (c, pin) = journal
        .enqueue("/queue/r", 601, 0, &headers(), b"kept")
        .expect("room");
    wait(&journal, c);
    let segments = segment::list(&dir).expect("list");
    assert!(
        segments.len() <= 2,
        "settled segments were deleted: {segments:?} left"
    );
    assert!(journal.stats().disk_bytes < 3 * 64 * 1024);
    assert_eq!(journal.stats().segments, segments.len() as u64);
    drop(pin);
    drop(journal);
    let (journal, recovered) = open(&config(&dir)).expect("reopen");
    assert!(
        recovered.next_id >= ceiling,
        "ids below {ceiling} are never given again"
    );
    assert!(journal.id_ceiling() > ceiling);
}

#[test]
fn a_full_journal_refuses_and_frees_up_as_messages_settle() {
    let dir = tempdir();
    let mut cfg = config(&dir);
    cfg.max_bytes = 200 * 1024;
    let (journal, _) = open(&cfg).expect("open");
    let body = vec![b'f'; 8000];
    let mut pins = Vec::new();
    let mut refused = None;
    for id in 1..=100u64 {
        match journal.enqueue("/queue/f", id, 0, &headers(), &body) {
            Ok((c, pin)) => {
                pins.push((id, pin));
                wait(&journal, c);
            }
            Err(e) => {
                refused = Some(e);
                break;
            }
        }
    }
    assert!(
        matches!(refused, Some(JournalError::Full { .. })),
        "refused with {refused:?}"
    );
    let ids: Vec<u64> = pins.iter().map(|(id, _)| *id).collect();
    let c = journal.settle("/queue/f", &ids);
    pins.clear();
    wait(&journal, c);
    // The writer deletes the settled segments by itself, without new writes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while journal.stats().disk_bytes >= cfg.max_bytes / 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "settled segments were not reclaimed: {:?}",
            journal.stats()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (c, _pin2) = journal
        .enqueue("/queue/f", 1001, 0, &headers(), &body)
        .expect("room again after reclaim");
    wait(&journal, c);
}

/// Where the written data of a preallocated segment ends: after its last
/// byte that is not zero (records end with their body, here never zero).
fn data_end(data: &[u8]) -> usize {
    data.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1)
}

/// Zeroes the last `n` bytes of a segment's data, as a crash in the middle
/// of writing its last record leaves it (the rest never reached the disk).
fn tear(path: &Path, n: usize) {
    let mut data = std::fs::read(path).expect("read");
    let end = data_end(&data);
    data[end - n..end].fill(0);
    std::fs::write(path, data).expect("write");
}

/// A fresh directory, removed when the guard drops.
struct TempDir(tempfile::TempDir);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        self.0.path()
    }
}

fn tempdir() -> TempDir {
    TempDir(tempfile::tempdir().expect("temp dir"))
}

#[test]
fn an_atomic_group_is_recovered_whole_or_not_at_all() {
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    let (c, pin) = journal
        .enqueue("/queue/tx", 1, 0, &headers(), b"before")
        .expect("room");
    std::mem::forget(pin);
    wait(&journal, c);
    let (pins, completion) = journal.atomic(|| {
        let mut pins = Vec::new();
        for id in 2..=4 {
            let (c, pin) = journal
                .enqueue("/queue/tx", id, 0, &headers(), b"in the transaction")
                .expect("room");
            // Inside a group nothing is written yet: the group's completion counts.
            assert_eq!(c, Completion::DONE);
            pins.push(pin);
        }
        assert_eq!(journal.settle("/queue/tx", &[1]), Completion::DONE);
        pins
    });
    assert!(completion.lsn().is_some());
    wait(&journal, completion);
    drop(pins);
    drop(journal);

    let (journal, recovered) = open(&config(&dir)).expect("reopen");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![2, 3, 4], "the whole group took effect");
    drop(journal);

    // The same group torn by a crash: none of it.
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    let (c, pin) = journal
        .enqueue("/queue/tx", 1, 0, &headers(), b"before")
        .expect("room");
    std::mem::forget(pin);
    wait(&journal, c);
    let (_pins, completion) = journal.atomic(|| {
        let pins: Vec<JournalPin> = (2..=4)
            .map(|id| {
                journal
                    .enqueue("/queue/tx", id, 0, &headers(), b"in the transaction")
                    .expect("room")
                    .1
            })
            .collect();
        let _ = journal.settle("/queue/tx", &[1]);
        pins
    });
    wait(&journal, completion);
    std::mem::forget(_pins);
    drop(journal);
    let newest = *segment::list(&dir)
        .expect("list")
        .last()
        .expect("a segment");
    let path = segment::path(&dir, newest);
    // Cut inside the batch: its last inner record is half there.
    tear(&path, 3);
    let (_journal, recovered) = open(&config(&dir)).expect("reopen");
    let ids: Vec<u64> = recovered.queues[0].messages.iter().map(|m| m.id).collect();
    assert_eq!(ids, vec![1], "nothing of the torn group took effect");
}

#[test]
fn purged_history_stays_purged_though_its_records_remain() {
    let dir = tempdir();
    let (journal, _) = open(&config(&dir)).expect("open");
    // A waiting queue message keeps the segment, and the purged history's
    // records in it, on disk.
    let (_, keep) = journal
        .enqueue("/queue/waits", 1, 0, &headers(), b"waiting")
        .expect("room");
    let append = |position: u64| {
        journal
            .topic_append(&TopicEntry {
                topic: "/topic/chat.x",
                epoch: "e.1",
                position,
                id: 100 + position,
                at_ms: 0,
                headers: &headers(),
                body: format!("line {position}").as_bytes(),
            })
            .expect("room")
    };
    let pins: Vec<_> = (1..=10).map(|p| append(p).1).collect();
    wait(&journal, journal.purge_topic("/topic/chat.x", "e.1", 11));
    drop(pins);
    let (c, after) = append(11);
    wait(&journal, c);
    drop((keep, after));
    drop(journal);
    let (_, recovered) = open(&config(&dir)).expect("reopen");
    let topic = recovered
        .topics
        .iter()
        .find(|t| &*t.name == "/topic/chat.x")
        .expect("the topic is known");
    let positions: Vec<u64> = topic.messages.iter().map(|m| m.position).collect();
    assert_eq!(positions, [11], "only what came after the purge");
    assert_eq!(recovered.queues.len(), 1, "the waiting message too");
}
