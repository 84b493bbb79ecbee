//! What the broker stores and hands out: messages and deliveries.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use stomp_codec::{ByteString, Headers, Version};

use super::memory::Charge;
pub use crate::ids::MessageId;
use crate::ids::{DeliveryTag, SubscriptionId};
use crate::store::JournalPin;
use crate::terms::Terms;

/// A published message. Shared (`Arc`) between every subscriber it goes to;
/// the body is never copied.
#[derive(Debug)]
pub struct Message {
    /// Assigned when the broker accepted the SEND.
    pub id: MessageId,
    /// The destination it was sent to, e.g. `/queue/jobs`.
    pub destination: ByteString,
    /// The SEND's own headers, minus those the broker sets (see `protocol`).
    pub headers: Headers,
    /// The body, shared with the SEND frame's read buffer.
    pub body: Bytes,
    /// Where the message sits in its topic's stream; `None` for queue,
    /// ephemeral and control messages. Boxed: queue messages, which may
    /// wait by the million, do not carry its 40 bytes.
    pub stream: Option<Box<StreamPosition>>,
    /// Sent with `x-ephemeral:true`: delivered live, never kept in history.
    pub ephemeral: bool,
    /// Its bytes in the broker's memory accounting, given back when the
    /// last holder drops it.
    pub charge: Charge,
    /// Set when the message is in the journal: keeps its record's segment
    /// on disk until the message is settled and let go.
    pub journal: Option<JournalPin>,
    /// Its priority, delay and expiry (queue messages; defaults elsewhere).
    pub terms: Terms,
}

impl Message {
    /// A queue message read back from the journal (recovered, or paged
    /// in), charged to `memory`, its record pinned by `pin`; its queue
    /// expires messages after `ttl_ms` (0: never).
    pub fn stored(
        destination: ByteString,
        stored: crate::store::StoredMessage,
        memory: &std::sync::Arc<super::Memory>,
        pin: JournalPin,
        ttl_ms: u64,
    ) -> Message {
        let charge = memory.charge(message_size(&destination, &stored.headers, &stored.body));
        Message {
            terms: Terms::read(&stored.headers, stored.at_ms, ttl_ms),
            id: MessageId::new(stored.id),
            destination,
            headers: stored.headers,
            body: stored.body,
            stream: None,
            ephemeral: false,
            charge,
            journal: Some(pin),
        }
    }

    /// Whether the message is stored in the journal (it survives a restart).
    pub fn is_durable(&self) -> bool {
        self.journal.is_some()
    }
}

/// The size of the SEND frame that carries these parts, as it is on the
/// wire (command, headers, body and NUL): what size limits compare against,
/// so that headers count as much as the body does.
pub fn frame_size(destination: &str, headers: &Headers, body: &[u8]) -> usize {
    let header_bytes: usize = headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    "SEND\ndestination:\n\n\0".len() + destination.len() + header_bytes + body.len()
}

/// Bytes a message of these parts holds in memory: its frame as the
/// allocator rounds it, and a fixed allowance for the structures around it.
/// Calibrated with `stompbox bench memory`: at the memory limit, resident
/// memory was 1.03x the limit with 128-byte bodies and 1.16x with 1 KiB
/// ones before the rounding was counted.
pub fn message_size(destination: &str, headers: &Headers, body: &[u8]) -> usize {
    MESSAGE_OVERHEAD + allocated(frame_size(destination, headers, body))
}

/// What an allocation of `n` bytes takes: allocators serve sizes in
/// classes, four to each doubling (jemalloc's; glibc's waste is similar),
/// so up to a quarter more than asked.
pub(crate) fn allocated(n: usize) -> usize {
    let step = (n.next_power_of_two() / 8).max(16);
    n.div_ceil(step) * step
}

/// What a kept message costs besides its texts and body (the `Message`,
/// its `Arc`, the header list, the queue's slot), roughly.
pub const MESSAGE_OVERHEAD: usize = 384;

/// A message's place in a topic's stream. Positions count up from 1 per
/// topic; the epoch changes whenever the broker starts, so a client can tell
/// a position of a previous run from one of this run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPosition {
    /// The broker run.
    pub epoch: ByteString,
    /// The position in the topic's stream.
    pub position: u64,
}

/// How a subscription acknowledges what it receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered counts as acknowledged.
    Auto,
    /// ACK of a message acknowledges it and every earlier one of the subscription.
    Client,
    /// ACK and NACK cover exactly one message.
    ClientIndividual,
}

impl AckMode {
    /// Parses the SUBSCRIBE `ack` header; absent means `auto`.
    pub fn parse(value: Option<&str>) -> Option<AckMode> {
        match value {
            None | Some("auto") => Some(AckMode::Auto),
            Some("client") => Some(AckMode::Client),
            Some("client-individual") => Some(AckMode::ClientIndividual),
            Some(_) => None,
        }
    }

    /// Whether the client must ACK.
    pub fn needs_ack(self) -> bool {
        self != AckMode::Auto
    }
}

/// One message on its way to one subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The client's subscription id.
    pub subscription: SubscriptionId,
    /// The message, shared with other deliveries of it.
    pub message: Arc<Message>,
    /// Set when the message was delivered before and came back unacknowledged.
    pub redelivered: bool,
    /// The subscription's ack mode at the time of delivery.
    pub ack: AckMode,
    /// Names a queue delivery for settling through the broker; `None` for
    /// a topic's, which have nothing to give back.
    pub tag: Option<DeliveryTag>,
    /// Replayed from history on SUBSCRIBE rather than live.
    pub history: bool,
    /// A broker notice (recovery result, presence event): never acknowledged.
    pub control: bool,
    /// A queue delivery's count of earlier failed deliveries
    /// (`x-delivery-count`); `None` for topic deliveries.
    pub delivery_count: Option<u32>,
    /// Taken back unless acknowledged within this many ms (0: no deadline).
    pub ack_timeout_ms: u32,
    /// The message's own headers escaped once for all of its receivers:
    /// set by a fan-out to more than one subscriber, shared by its
    /// deliveries; `None` where each delivery is encoded whole.
    pub header_block: Option<Arc<HeaderBlock>>,
}

impl Delivery {
    /// A topic's live delivery of `message` to a subscription: nothing to
    /// settle, never seen before, encoded whole. Callers set what differs
    /// (history, a control notice, a shared header block).
    pub fn topic(subscription: SubscriptionId, message: Arc<Message>, ack: AckMode) -> Delivery {
        Delivery {
            subscription,
            message,
            redelivered: false,
            ack,
            tag: None,
            history: false,
            control: false,
            delivery_count: None,
            ack_timeout_ms: 0,
            header_block: None,
        }
    }
}

/// A message's own header lines (id, destination, stream position, the
/// sender's headers, content-length, the blank line) encoded once for the
/// STOMP version of the first receiver written, so that each further
/// receiver of that version is only written its own few headers and a
/// copy. A receiver of another version encodes the message whole.
#[derive(Debug, Default)]
pub struct HeaderBlock(OnceLock<Option<(Version, Bytes)>>);

impl HeaderBlock {
    /// The block for `version`: encoded by `encode` if nobody did yet;
    /// `None` when it was encoded for another version, or could not be
    /// (`encode` returned `None`).
    pub fn get_or_encode(
        &self,
        version: Version,
        encode: impl FnOnce() -> Option<Bytes>,
    ) -> Option<&[u8]> {
        let (encoded_for, block) = self
            .0
            .get_or_init(|| encode().map(|block| (version, block)))
            .as_ref()?;
        (*encoded_for == version).then_some(&**block)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_rounded_as_allocators_round_them() {
        assert_eq!(allocated(1), 16);
        assert_eq!(allocated(200), 224);
        assert_eq!(allocated(1084), 1280);
        assert_eq!(allocated(1024), 1024);
        assert_eq!(allocated(5000), 5120);
    }
}
