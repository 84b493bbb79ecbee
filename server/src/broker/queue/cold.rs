//! The packed form of an in-memory message waiting past its queue's memory
//! window: one allocation holding its id, terms, headers and body.
//!
//! A message as the broker hands it out is an `Arc<Message>` with a header
//! list, a rendered id and a body that is a slice of the connection's read
//! buffer: about 670 bytes of resident memory for a 128-byte body (`stompbox
//! bench memory --in-memory`). A durable message past the window waits on
//! disk instead; a non-durable one has nowhere else to go, so it waits
//! packed (about 200 bytes for the same body, see [`COLD_OVERHEAD`]) and is
//! unpacked when consumers near it, a window's worth at a time. Only the
//! backlog's tail pays the copy, and only when it is long.

use std::sync::Arc;

use bytes::Bytes;
use stomp_codec::{ByteString, Headers};

use super::super::memory::Memory;
use super::super::message::{Message, allocated, message_size};
use crate::ids::MessageId;
use crate::terms::Terms;

/// Fixed part: id, expiry, acceptance time, due time (8 bytes each),
/// priority, flags, header count (2 bytes).
const FIXED: usize = 8 * 4 + 1 + 1 + 2;
/// Flag: sent with `x-ephemeral:true`.
const EPHEMERAL: u8 = 1;
/// Flag: its destination differs from the queue's name (a cluster durable
/// subscription's queue shows the topic), so it is stored too.
const OWN_DESTINATION: u8 = 2;

/// What a packed message costs besides its bytes: its slot in the level's
/// queue (a boxed slice) and the room that queue grows by, roughly.
pub(super) const COLD_OVERHEAD: usize = 24;

/// A waiting message, packed. Only fresh, non-durable, unshared messages
/// are packed: nothing else holds a part of them.
#[derive(Debug)]
pub(super) struct Cold(Box<[u8]>);

impl Cold {
    /// Packs `message`, queued in `queue`. Its charge is dropped with it;
    /// the backlog charges [`Cold::charged`] instead.
    pub(super) fn pack(message: &Message, queue: &str) -> Cold {
        let own_destination = *message.destination != *queue;
        let header_bytes: usize = message
            .headers
            .iter()
            .map(|(n, v)| 8 + n.len() + v.len())
            .sum();
        let destination_bytes = if own_destination {
            4 + message.destination.len()
        } else {
            0
        };
        let mut out =
            Vec::with_capacity(FIXED + destination_bytes + header_bytes + message.body.len());
        let t = &message.terms;
        for n in [
            message.id.number(),
            t.expires_at_ms,
            t.at_ms,
            t.deliver_at_ms,
        ] {
            out.extend_from_slice(&n.to_le_bytes());
        }
        out.push(t.priority);
        let mut flags = 0;
        if message.ephemeral {
            flags |= EPHEMERAL;
        }
        if own_destination {
            flags |= OWN_DESTINATION;
        }
        out.push(flags);
        // Header lists are bounded by the frame limits, far below u16::MAX
        // entries and u32::MAX bytes; saturating keeps a bad count harmless.
        let count = u16::try_from(message.headers.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&count.to_le_bytes());
        let text = |s: &str, out: &mut Vec<u8>| {
            let len = u32::try_from(s.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&s.as_bytes()[..len as usize]);
        };
        if own_destination {
            text(&message.destination, &mut out);
        }
        for (name, value) in message.headers.iter().take(usize::from(count)) {
            text(name, &mut out);
            text(value, &mut out);
        }
        out.extend_from_slice(&message.body);
        Cold(out.into_boxed_slice())
    }

    fn word(&self, i: usize) -> u64 {
        let mut n = [0u8; 8];
        n.copy_from_slice(&self.0[i * 8..i * 8 + 8]);
        u64::from_le_bytes(n)
    }

    /// The message's id number.
    pub(super) fn id(&self) -> u64 {
        self.word(0)
    }

    /// When it expires (0: never).
    pub(super) fn expires_at_ms(&self) -> u64 {
        self.word(1)
    }

    /// What it is charged to the broker's memory while packed.
    pub(super) fn charged(&self) -> usize {
        COLD_OVERHEAD + allocated(self.0.len())
    }

    /// The message again, charged to `memory`. Header texts and the body
    /// are slices of the packed bytes, not copies.
    pub(super) fn unpack(self, queue: &ByteString, memory: &Arc<Memory>) -> Message {
        let id = self.id();
        let (expires, at, due) = (self.word(1), self.word(2), self.word(3));
        let data = Bytes::from(self.0);
        let priority = data[32];
        let flags = data[33];
        let count = u16::from_le_bytes([data[34], data[35]]);
        let mut at_byte = FIXED;
        // The bytes were written by `pack` from valid texts; a short or
        // invalid piece (which cannot happen) reads as empty, not a panic.
        let mut text = || {
            let len = data
                .get(at_byte..at_byte + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                .unwrap_or(0);
            let start = (at_byte + 4).min(data.len());
            let end = (start + len).min(data.len());
            at_byte = end;
            ByteString::try_from(data.slice(start..end)).unwrap_or_default()
        };
        let destination = if flags & OWN_DESTINATION != 0 {
            text()
        } else {
            queue.clone()
        };
        let mut headers = Headers::with_capacity(usize::from(count));
        for _ in 0..count {
            let name = text();
            let value = text();
            headers.push(name, value);
        }
        let body = data.slice(at_byte.min(data.len())..);
        let charge = memory.charge(message_size(&destination, &headers, &body));
        Message {
            id: MessageId::new(id),
            destination,
            headers,
            body,
            stream: None,
            ephemeral: flags & EPHEMERAL != 0,
            charge,
            journal: None,
            terms: Terms {
                priority,
                at_ms: at,
                deliver_at_ms: due,
                expires_at_ms: expires,
            },
        }
    }

    /// An unpacked copy, left packed here (for looking at, not delivering:
    /// it is charged to nothing).
    pub(super) fn copy(&self, queue: &ByteString) -> Message {
        let mut message = Cold(self.0.clone()).unpack(queue, &Memory::unlimited());
        message.charge = super::super::memory::Charge::none();
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::memory::Charge;

    fn message(destination: &str, headers: &[(&str, &str)], body: &[u8]) -> Message {
        let mut h = Headers::new();
        for (n, v) in headers {
            h.push(n.to_string(), v.to_string());
        }
        Message {
            id: MessageId::new(42),
            destination: ByteString::from(destination),
            headers: h,
            body: Bytes::copy_from_slice(body),
            stream: None,
            ephemeral: false,
            charge: Charge::none(),
            journal: None,
            terms: Terms {
                priority: 7,
                at_ms: 1_000,
                deliver_at_ms: 0,
                expires_at_ms: 5_000,
            },
        }
    }

    #[test]
    fn a_packed_message_comes_back_as_it_was() {
        let queue = ByteString::from("/queue/jobs");
        let m = message(
            "/queue/jobs",
            &[
                ("x-sender", "ann"),
                ("content-type", "text/plain"),
                ("empty", ""),
            ],
            b"hello \0 world",
        );
        let cold = Cold::pack(&m, &queue);
        assert_eq!(cold.id(), 42);
        assert_eq!(cold.expires_at_ms(), 5_000);
        let memory = Memory::new(1 << 20);
        let back = cold.unpack(&queue, &memory);
        assert_eq!(back.id.as_str(), "m-42");
        assert_eq!(&*back.destination, "/queue/jobs");
        assert_eq!(back.headers.get("x-sender"), Some("ann"));
        assert_eq!(back.headers.get("content-type"), Some("text/plain"));
        assert_eq!(back.headers.get("empty"), Some(""));
        assert_eq!(back.headers.len(), 3);
        assert_eq!(&back.body[..], b"hello \0 world");
        assert_eq!(back.terms, m.terms);
        assert!(!back.ephemeral);
        assert!(memory.used() > 0, "the unpacked message is charged again");
        drop(back);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn a_destination_other_than_the_queue_is_kept() {
        let queue = ByteString::from("/queue/stompbox.durable.ab:/topic/t");
        let mut m = message("/topic/t", &[], b"");
        m.ephemeral = true;
        let cold = Cold::pack(&m, &queue);
        let back = cold.copy(&queue);
        assert_eq!(&*back.destination, "/topic/t");
        assert!(back.headers.is_empty());
        assert!(back.body.is_empty());
        assert!(back.ephemeral);
        assert_eq!(back.charge.bytes(), 0);
    }

    #[test]
    fn packing_takes_much_less_than_the_message_did() {
        let queue = ByteString::from("/queue/jobs");
        let m = message("/queue/jobs", &[("x-sender", "guest")], &[7u8; 128]);
        let cold = Cold::pack(&m, &queue);
        // Fixed part, one header, the body: 36 + 21 + 128 bytes.
        assert_eq!(cold.0.len(), 185);
        assert!(cold.charged() < 250, "{}", cold.charged());
    }
}
