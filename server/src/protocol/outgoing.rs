//! The frames the server sends: MESSAGE (written straight into the output
//! buffer, its shared headers encoded once per fan-out), and RECEIPT.

use std::sync::Arc;

use bytes::BytesMut;
use stomp_codec::{ByteString, Command, EncodeError, Frame, Version, encode_frame};

use crate::broker::{Charge, Delivery, Message};

/// The message as a receiver of `version` can be sent it: `None` when every
/// header can be written as it is (always so for 1.2), otherwise a copy
/// without the headers that version cannot carry (a line break in a 1.0
/// value, a carriage return in 1.1, a colon in a 1.0 name). Dropping them
/// beats the alternative, a message the receiver never gets.
pub fn fit_for_version(message: &Message, version: Version) -> Option<Arc<Message>> {
    let fits = |(name, value): (&str, &str)| {
        stomp_codec::header_encodable(Command::Message, version, name, value)
    };
    if version == Version::V1_2 || message.headers.iter().all(fits) {
        return None;
    }
    Some(Arc::new(Message {
        id: message.id.clone(),
        destination: message.destination.clone(),
        headers: message
            .headers
            .iter_shared()
            .filter(|(n, v)| fits((n, v)))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect(),
        body: message.body.clone(),
        stream: message.stream.clone(),
        ephemeral: message.ephemeral,
        // A copy for one write, dropped right after: the original keeps the charge.
        charge: Charge::none(),
        journal: None,
        terms: message.terms,
    }))
}

/// Writes the MESSAGE for a delivery straight into `dst`, from the shared
/// message and the subscriber's few headers: no `Frame`, no header list and
/// no string is allocated per subscriber. `ack_id` is set when the client
/// must acknowledge. The message's own headers come from the delivery's
/// [`HeaderBlock`](crate::broker::HeaderBlock) when it has one for `version` (encoded by the first of
/// the message's receivers), so a fan-out escapes them once.
pub fn encode_message(
    delivery: &Delivery,
    ack_id: Option<u64>,
    version: Version,
    dst: &mut BytesMut,
) -> Result<(), EncodeError> {
    let message = &delivery.message;
    let mut ack_text = itoa::Buffer::new();
    let mut count_text = itoa::Buffer::new();
    // The delivery's own headers in a small array: a chain of one adapter
    // per optional header cost every header a walk down the whole chain
    // (about 900 instructions a MESSAGE for one more optional header,
    // callgrind on bench queue).
    let mut own: [(&str, &str); 5] = [("", ""); 5];
    let mut n = 0;
    own[n] = ("subscription", delivery.subscription.as_str());
    n += 1;
    if let Some(id) = ack_id {
        own[n] = ("ack", ack_text.format(id));
        n += 1;
    }
    if delivery.redelivered {
        own[n] = ("redelivered", "true");
        n += 1;
    }
    if let Some(count) = delivery.delivery_count {
        own[n] = ("x-delivery-count", count_text.format(count));
        n += 1;
    }
    if delivery.history {
        own[n] = ("x-history", "true");
        n += 1;
    }
    let own = &own[..n];
    if let Some(shared) = &delivery.header_block {
        let block = shared.get_or_encode(version, || {
            let mut position_text = itoa::Buffer::new();
            let (broker, n) = broker_headers(delivery, &mut position_text);
            let headers = broker[..n].iter().copied().chain(message.headers.iter());
            let text: usize = message
                .headers
                .iter()
                .map(|(n, v)| n.len() + v.len() + 2)
                .sum();
            let mut block = BytesMut::with_capacity(160 + text);
            stomp_codec::encode_header_block(
                Command::Message,
                headers,
                message.body.len(),
                version,
                &mut block,
            )
            .ok()
            .map(|()| block.freeze())
        });
        if let Some(block) = block {
            return stomp_codec::encode_frame_with_block(
                Command::Message,
                own.iter().copied(),
                block,
                &message.body,
                version,
                dst,
            );
        }
    }
    let mut position_text = itoa::Buffer::new();
    let (broker, n) = broker_headers(delivery, &mut position_text);
    // In one array, so the sender's headers sit behind a single chain.
    let mut all: [(&str, &str); 10] = [("", ""); 10];
    all[..own.len()].copy_from_slice(own);
    all[own.len()..own.len() + n].copy_from_slice(&broker[..n]);
    let headers = all[..own.len() + n]
        .iter()
        .copied()
        .chain(message.headers.iter());
    encode_frame(Command::Message, headers, &message.body, version, dst)
}

/// The headers every receiver of the delivery's message gets alike, that
/// the broker sets (id, destination, stream position), in an array with
/// its length; the sender's follow them.
fn broker_headers<'a>(
    delivery: &'a Delivery,
    position_text: &'a mut itoa::Buffer,
) -> ([(&'a str, &'a str); 5], usize) {
    let message = &delivery.message;
    let mut broker: [(&str, &str); 5] = [("", ""); 5];
    broker[0] = ("message-id", message.id.as_str());
    broker[1] = ("destination", &*message.destination);
    let mut n = 2;
    if let Some(s) = &message.stream {
        broker[n] = ("x-stream-epoch", &s.epoch);
        broker[n + 1] = ("x-stream-position", position_text.format(s.position));
        n += 2;
    }
    // Durable by the queue's policy without the SEND saying so: the
    // receiver learns it as RabbitMQ's and ActiveMQ's clients expect.
    // (Queue deliveries only, which never share a block.)
    if delivery.tag.as_ref().is_some_and(|t| t.durable) && !message.headers.contains("persistent") {
        broker[n] = ("persistent", "true");
        n += 1;
    }
    (broker, n)
}

/// A RECEIPT for the frame that carried `receipt`.
pub fn receipt_frame(receipt: ByteString) -> Frame {
    Frame::new(Command::Receipt).header("receipt-id", receipt)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::AckMode;
    use crate::ids::SubscriptionId;
    use bytes::Bytes;

    fn topic_delivery(
        message: &Arc<Message>,
        subscription: &str,
        block: Option<Arc<crate::broker::HeaderBlock>>,
    ) -> Delivery {
        Delivery {
            history: true,
            header_block: block,
            ..Delivery::topic(
                SubscriptionId::from(subscription),
                message.clone(),
                AckMode::Client,
            )
        }
    }

    fn topic_message(headers: &[(&str, &str)]) -> Arc<Message> {
        Arc::new(Message {
            id: crate::ids::MessageId::new(7),
            destination: ByteString::from("/topic/t"),
            headers: headers.iter().copied().collect(),
            body: Bytes::from_static(b"hello"),
            stream: Some(Box::new(crate::broker::StreamPosition {
                epoch: ByteString::from("e1"),
                position: 3,
            })),
            ephemeral: false,
            charge: Charge::none(),
            journal: None,
            terms: Default::default(),
        })
    }

    /// Encodes the message for each (version, subscription, ack id) in
    /// turn, sharing `block`, and checks each frame against the one
    /// encoded without a block.
    fn same_as_alone(
        message: &Arc<Message>,
        block: &Arc<crate::broker::HeaderBlock>,
        versions: &[Version],
    ) {
        for &version in versions {
            for (subscription, ack_id) in [("s:1", Some(1)), ("two", None), ("three", Some(9))] {
                let alone = topic_delivery(message, subscription, None);
                let mut expected = BytesMut::new();
                let alone_result = encode_message(&alone, ack_id, version, &mut expected);
                let shared = topic_delivery(message, subscription, Some(block.clone()));
                let mut got = BytesMut::new();
                let shared_result = encode_message(&shared, ack_id, version, &mut got);
                let context = format!("{version} {subscription}");
                assert_eq!(shared_result.is_ok(), alone_result.is_ok(), "{context}");
                assert_eq!(got, expected, "{context}");
            }
        }
    }

    #[test]
    fn receivers_sharing_a_header_block_get_the_frame_each_would_get_alone() {
        // Texts each version escapes differently, and one 1.0 cannot carry.
        let message = topic_message(&[
            ("x-colon", "a:b"),
            ("x-lf", "two\nlines"),
            ("x-back", "c\\d"),
        ]);
        // The first receiver's version (1.2) keeps the block; the others
        // encode whole.
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_2, Version::V1_1, Version::V1_0],
        );
        let kept = block.get_or_encode(Version::V1_2, || unreachable!());
        assert!(kept.is_some_and(|b| b.starts_with(b"message-id:") && b.ends_with(b"\n\n")));
        assert_eq!(block.get_or_encode(Version::V1_1, || unreachable!()), None);
        // A first receiver that cannot take a header leaves the block empty,
        // and the rest are encoded whole.
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_0, Version::V1_2, Version::V1_1],
        );
        assert_eq!(block.get_or_encode(Version::V1_2, || unreachable!()), None);
        // 1.1 first, with headers it can carry.
        let message = topic_message(&[("x-colon", "a:b"), ("x-back", "c\\d")]);
        let block = Arc::new(crate::broker::HeaderBlock::default());
        same_as_alone(
            &message,
            &block,
            &[Version::V1_1, Version::V1_0, Version::V1_2],
        );
        assert!(
            block
                .get_or_encode(Version::V1_1, || unreachable!())
                .is_some()
        );
    }
}
