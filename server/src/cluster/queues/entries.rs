//! Reading a queue's stream entries as Redis returns them: bundles of
//! packed messages (`wire::Bundle`), or single SEND frames (a durable
//! subscription's), and the settled members a claimed entry comes with.

use bytes::Bytes;
use redis::Value;

use crate::cluster::wire;

/// How many entries to ask for to fill `credit` messages, entries
/// holding `per_entry` messages on average lately.
pub(super) fn entries_for(credit: usize, per_entry: f64) -> usize {
    ((credit as f64 / per_entry.max(1.0)).ceil() as usize).clamp(1, credit.max(1))
}

/// The indexes in a claimed entry's settled members (`"0,3,4"`).
pub(super) fn settled_members(value: &Value) -> Vec<u32> {
    let text = match value {
        Value::BulkString(b) => std::str::from_utf8(b).unwrap_or(""),
        Value::SimpleString(s) => s.as_str(),
        _ => "",
    };
    text.split(',').filter_map(|i| i.parse().ok()).collect()
}

/// A stream entry's field: its name and value.
pub(super) type Field = (Vec<u8>, Vec<u8>);

/// An entry `[id, [field, value, ...]]` as its number and fields (the
/// values taken, not copied).
pub(super) fn entry_of(entry: Value) -> Option<(u64, Vec<Field>)> {
    let Value::Array(parts) = entry else {
        return None;
    };
    let [id, Value::Array(flat)] = <[Value; 2]>::try_from(parts).ok()? else {
        return None;
    };
    let id = match &id {
        Value::BulkString(b) => std::str::from_utf8(b).ok()?,
        Value::SimpleString(s) => s.as_str(),
        _ => return None,
    };
    let n = id.strip_prefix("0-")?.parse().ok()?;
    let mut fields = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(k), Some(v)) = (flat.next(), flat.next()) {
        if let (Value::BulkString(k), Value::BulkString(v)) = (k, v) {
            fields.push((k, v));
        }
    }
    Some((n, fields))
}

/// A message of an entry, as it was written there.
pub(super) enum Stored {
    /// In a bundle (`wire::pack`).
    Packed(Bytes),
    /// Alone, as a SEND frame (`wire::encode`): a durable subscription's.
    Frame(Bytes),
}

impl Stored {
    pub(super) fn read(&self) -> Result<(stomp_codec::Headers, Bytes), wire::WireError> {
        match self {
            Stored::Packed(b) => wire::unpack(b),
            Stored::Frame(b) => wire::decode(b),
        }
    }
}

/// An entry's messages, each with its acceptance time: a bundle (`b`),
/// or one message (`f` and `t`, as a durable subscription's are added).
pub(super) fn read_entry(fields: Vec<Field>) -> Result<Vec<(u64, Stored)>, wire::WireError> {
    let mut bundle = None;
    let mut frame = None;
    let mut at_ms = 0;
    for (k, v) in fields {
        match &k[..] {
            b"b" => bundle = Some(Bytes::from(v)),
            b"f" => frame = Some(Bytes::from(v)),
            b"t" => {
                at_ms = std::str::from_utf8(&v)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0)
            }
            _ => {}
        }
    }
    if let Some(bundle) = bundle {
        let messages = wire::unbundle(&bundle)?;
        return Ok(messages
            .into_iter()
            .map(|(at, m)| (at, Stored::Packed(m)))
            .collect());
    }
    let frame = frame.ok_or(wire::WireError::Shape("no frame"))?;
    Ok(vec![(at_ms, Stored::Frame(frame))])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ask_for_about_the_entries_credit_fills() {
        assert_eq!(entries_for(100, 1.0), 100);
        assert_eq!(entries_for(100, 30.0), 4);
        assert_eq!(entries_for(1, 30.0), 1);
        assert_eq!(entries_for(0, 0.0), 1);
    }

    #[test]
    fn settled_members_read_back_and_garbage_is_skipped() {
        assert_eq!(
            settled_members(&Value::BulkString(b"0,3,x,4".to_vec())),
            vec![0, 3, 4]
        );
        assert!(settled_members(&Value::BulkString(Vec::new())).is_empty());
        assert!(settled_members(&Value::Nil).is_empty());
    }
}
