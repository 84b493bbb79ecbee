//! A topic's records in the journal: its kept messages, its stream's head
//! and epoch, durable subscriptions' cursors, purges and deletion.

use stomp_codec::ByteString;

use super::{
    Completion, Journal, JournalError, JournalPin, RecoveredTopicMessage, TopicEntry, record,
    record_estimate, writer,
};

impl Journal {
    /// Queues a record of a message kept in a topic's history. Called under
    /// the topic's lock, so a topic's records are in position order.
    pub fn topic_append(
        &self,
        entry: &TopicEntry<'_>,
    ) -> Result<(Completion, JournalPin), JournalError> {
        self.check_room()?;
        Ok(self.append_topic(entry))
    }

    /// Writes a kept topic message's record again at the end of the
    /// journal (compaction); never refused. As with
    /// [`re_enqueue`](Self::re_enqueue), the old pin is kept until the
    /// completion is done.
    pub fn re_append_topic(&self, entry: &TopicEntry<'_>) -> (Completion, JournalPin) {
        self.append_topic(entry)
    }

    fn append_topic(&self, entry: &record::TopicEntry<'_>) -> (Completion, JournalPin) {
        let encode = |buf: &mut Vec<u8>| record::encode_topic_append(buf, entry);
        let head = |p: &mut writer::Pending| {
            let next = p
                .topic_heads
                .get(entry.topic)
                .filter(|(epoch, _)| &**epoch == entry.epoch)
                .map_or(0, |(_, next)| *next);
            p.topic_heads.insert(
                ByteString::from(entry.topic),
                (ByteString::from(entry.epoch), next.max(entry.position + 1)),
            );
        };
        if let Some(pin) = self.in_group(encode) {
            self.shared.with_pending(head);
            return (Completion::DONE, pin);
        }
        let appended = self.shared.with_pending(|p| {
            head(p);
            self.shared.append_locked(p, encode)
        });
        self.shared.wake_writer();
        (Completion::after(appended.lsn), appended.pin())
    }

    /// Records that the durable topic `topic` streams under `epoch` from
    /// `next_position` on (a new topic, or one recovered at start).
    pub fn topic_head(&self, topic: &str, epoch: &str, next_position: u64) {
        self.shared.with_pending(|p| {
            p.topic_heads.insert(
                ByteString::from(topic),
                (ByteString::from(epoch), next_position),
            );
            self.shared.append_locked(p, |buf| {
                record::encode_topic_head(buf, topic, epoch, next_position)
            });
        });
        self.shared.wake_writer();
    }

    /// Records a durable subscription's cursor (created, or moved).
    pub fn cursor(&self, topic: &str, key: &str, position: u64) -> Completion {
        let appended = self.shared.with_pending(|p| {
            p.cursors
                .insert((ByteString::from(topic), ByteString::from(key)), position);
            self.shared
                .append_locked(p, |buf| record::encode_cursor(buf, topic, key, position))
        });
        self.shared.wake_writer();
        Completion::after(appended.lsn)
    }

    /// Records that a durable subscription was deleted.
    pub fn cursor_gone(&self, topic: &str, key: &str) -> Completion {
        let appended = self.shared.with_pending(|p| {
            p.cursors
                .remove(&(ByteString::from(topic), ByteString::from(key)));
            self.shared
                .append_locked(p, |buf| record::encode_cursor_gone(buf, topic, key))
        });
        self.shared.wake_writer();
        Completion::after(appended.lsn)
    }

    /// Forgets a topic the broker forgot (nobody used it): its epoch is no
    /// longer carried into new segments, as a topic created again gets a new one.
    pub fn forget_topic(&self, topic: &str) {
        self.shared.with_pending(|p| p.topic_heads.remove(topic));
    }

    /// Records that `topic`'s history before position `before` of `epoch`
    /// was purged; the completion is done once that is on disk. Written
    /// once: reclaiming deletes only a prefix of segments, so the record
    /// outlives every older record it speaks of.
    pub fn purge_topic(&self, topic: &str, epoch: &str, before: u64) -> Completion {
        let appended = self.shared.with_pending(|p| {
            self.shared.append_locked(p, |buf| {
                record::encode_topic_purge(buf, topic, epoch, before)
            })
        });
        self.shared.wake_writer();
        Completion::after(appended.lsn)
    }

    /// Pins a recovered topic message's segment.
    pub fn pin_recovered_topic(&self, message: &RecoveredTopicMessage) -> JournalPin {
        self.pin_segment(
            message.segment,
            record_estimate(&message.headers, &message.body),
        )
    }
}
