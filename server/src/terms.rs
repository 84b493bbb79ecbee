//! The terms a queue message is delivered on, read from its SEND headers:
//! priority, when it may first be delivered, when it expires, and the id
//! that makes a repeated SEND a duplicate. Client vocabulary is reused:
//! JMS/ActiveMQ `priority` and `expires`, RabbitMQ `expiration` and
//! `x-delay`, ActiveMQ `AMQ_SCHEDULED_DELAY`, Artemis `_AMQ_DUPL_ID`.
//!
//! Its own module because three parts read it: the protocol (to refuse bad
//! values before anything is enqueued), the broker (to order, hold back and
//! expire messages) and the journal's recovery (to put recovered messages
//! back in their place).

use stomp_codec::{ByteString, Headers};

/// Priority a message without a `priority` header gets (JMS's default).
pub const DEFAULT_PRIORITY: u8 = 4;

/// Highest priority; levels run from 0 to this.
pub const MAX_PRIORITY: u8 = 9;

/// Longest delay accepted, ms: 2^32 - 1, about 49.7 days (the limit of
/// RabbitMQ's delayed-message plugin, so values that work there work here).
pub const MAX_DELAY_MS: u64 = u32::MAX as u64;

/// Longest deduplication id accepted, bytes.
pub const MAX_DEDUP_ID: usize = 256;

/// Headers that name a delay, in the order they are looked at.
const DELAY_HEADERS: [&str; 2] = ["x-delay", "AMQ_SCHEDULED_DELAY"];

/// Headers that carry a deduplication id.
const DEDUP_HEADERS: [&str; 2] = ["x-dedup-id", "_AMQ_DUPL_ID"];

/// When and in which order a queue message may be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// 0 (lowest) to 9; higher goes first, FIFO within a level.
    pub priority: u8,
    /// When the broker accepted it, ms since the Unix epoch.
    pub at_ms: u64,
    /// Not delivered before this time, ms since the Unix epoch (0: at once).
    pub deliver_at_ms: u64,
    /// Never delivered after this time, ms since the Unix epoch (0: never expires).
    pub expires_at_ms: u64,
}

impl Default for Terms {
    fn default() -> Terms {
        Terms {
            priority: DEFAULT_PRIORITY,
            at_ms: 0,
            deliver_at_ms: 0,
            expires_at_ms: 0,
        }
    }
}

/// A header whose value is out of its accepted range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("header {header} has the value {value:?}; expected {expected}")]
pub struct InvalidTerm {
    /// The header.
    pub header: &'static str,
    /// Its value, cut short.
    pub value: String,
    /// What is accepted.
    pub expected: &'static str,
}

fn invalid(header: &'static str, value: &str, expected: &'static str) -> InvalidTerm {
    InvalidTerm {
        header,
        value: value.chars().take(40).collect(),
        expected,
    }
}

fn number(header: &'static str, value: &str, expected: &'static str) -> Result<u64, InvalidTerm> {
    value
        .trim()
        .parse::<u64>()
        .map_err(|_| invalid(header, value, expected))
}

impl Terms {
    /// The terms of a message accepted at `at_ms` with these headers, on a
    /// queue whose policy expires messages after `ttl_ms` (0: never). Values
    /// that do not parse are ignored here: [`validate`] refused them before.
    pub fn read(headers: &Headers, at_ms: u64, ttl_ms: u64) -> Terms {
        let mut terms = Terms {
            at_ms,
            ..Terms::default()
        };
        let mut expiry = (ttl_ms > 0).then(|| at_ms.saturating_add(ttl_ms));
        let mut earliest = |t: u64| expiry = Some(expiry.map_or(t, |e| e.min(t)));
        for (name, value) in headers.iter() {
            let n = || value.trim().parse::<u64>().ok();
            match name {
                "priority" => {
                    if let Some(p) = n().filter(|p| *p <= u64::from(MAX_PRIORITY)) {
                        terms.priority = p as u8;
                    }
                }
                // ActiveMQ: absolute, and 0 means never.
                "expires" => {
                    if let Some(t) = n().filter(|t| *t > 0) {
                        earliest(t);
                    }
                }
                // RabbitMQ: relative to acceptance.
                "expiration" => {
                    if let Some(ms) = n() {
                        earliest(at_ms.saturating_add(ms));
                    }
                }
                _ if DELAY_HEADERS.contains(&name) && terms.deliver_at_ms == 0 => {
                    if let Some(ms) = n().filter(|ms| *ms > 0 && *ms <= MAX_DELAY_MS) {
                        terms.deliver_at_ms = at_ms.saturating_add(ms);
                    }
                }
                _ => {}
            }
        }
        terms.expires_at_ms = expiry.unwrap_or(0);
        terms
    }

    /// Whether the message has expired at `now_ms`.
    pub fn expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms != 0 && self.expires_at_ms < now_ms
    }

    /// Whether the message waits for its delivery time at `now_ms`.
    pub fn held_back(&self, now_ms: u64) -> bool {
        self.deliver_at_ms > now_ms
    }
}

/// Refuses a SEND whose delivery terms are out of range, naming the header
/// and what it accepts. Nothing of such a SEND is enqueued.
pub fn validate(headers: &Headers) -> Result<(), InvalidTerm> {
    for (name, value) in headers.iter() {
        match name {
            "priority" => {
                const EXPECTED: &str = "an integer from 0 (lowest) to 9 (highest); 4 by default";
                if number("priority", value, EXPECTED)? > u64::from(MAX_PRIORITY) {
                    return Err(invalid("priority", value, EXPECTED));
                }
            }
            "expires" => {
                number(
                    "expires",
                    value,
                    "a time in milliseconds since the Unix epoch (0: never expires)",
                )?;
            }
            "expiration" => {
                number(
                    "expiration",
                    value,
                    "a non-negative number of milliseconds the message may wait",
                )?;
            }
            "x-delay" | "AMQ_SCHEDULED_DELAY" => {
                let header = if name == "x-delay" {
                    "x-delay"
                } else {
                    "AMQ_SCHEDULED_DELAY"
                };
                const EXPECTED: &str = "milliseconds from 0 to 4294967295 (about 49 days)";
                if number(header, value, EXPECTED)? > MAX_DELAY_MS {
                    return Err(invalid(header, value, EXPECTED));
                }
            }
            "x-dedup-id" | "_AMQ_DUPL_ID" => {
                let header = if name == "x-dedup-id" {
                    "x-dedup-id"
                } else {
                    "_AMQ_DUPL_ID"
                };
                if value.is_empty() || value.len() > MAX_DEDUP_ID {
                    return Err(invalid(
                        header,
                        value,
                        "a non-empty id of at most 256 bytes",
                    ));
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// The SEND's deduplication id, if it has one.
pub fn dedup_id(headers: &Headers) -> Option<&ByteString> {
    headers
        .iter_shared()
        .find(|(n, _)| DEDUP_HEADERS.contains(&n.as_ref()))
        .map(|(_, v)| v)
}

/// Parses an ack timeout (`x-ack-timeout` on SUBSCRIBE): 1 ms up to a day.
pub fn ack_timeout(value: &str) -> Result<std::time::Duration, InvalidTerm> {
    const EXPECTED: &str = "milliseconds from 1 to 86400000 (a day)";
    match number("x-ack-timeout", value, EXPECTED)? {
        ms @ 1..=86_400_000 => Ok(std::time::Duration::from_millis(ms)),
        _ => Err(invalid("x-ack-timeout", value, EXPECTED)),
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::headers;

    #[test]
    fn defaults_without_headers() {
        let t = Terms::read(&headers(&[]), 1000, 0);
        assert_eq!(t.priority, 4);
        assert_eq!((t.deliver_at_ms, t.expires_at_ms), (0, 0));
        assert!(!t.expired(u64::MAX));
    }

    #[test]
    fn earliest_expiry_of_header_and_policy_wins() {
        let t = Terms::read(&headers(&[("expiration", "500")]), 1000, 2000);
        assert_eq!(t.expires_at_ms, 1500);
        let t = Terms::read(&headers(&[("expires", "1200")]), 1000, 0);
        assert_eq!(t.expires_at_ms, 1200);
        let t = Terms::read(&headers(&[("expires", "0")]), 1000, 100);
        assert_eq!(t.expires_at_ms, 1100);
        assert!(t.expired(1101) && !t.expired(1100));
    }

    #[test]
    fn delay_and_priority() {
        let t = Terms::read(
            &headers(&[("AMQ_SCHEDULED_DELAY", "250"), ("priority", "9")]),
            1000,
            0,
        );
        assert_eq!((t.priority, t.deliver_at_ms), (9, 1250));
        assert!(t.held_back(1249) && !t.held_back(1250));
    }

    #[test]
    fn bad_values_name_the_header_and_range() {
        for (name, value) in [
            ("priority", "99"),
            ("priority", "high"),
            ("x-delay", "-5"),
            ("x-delay", "4294967296"),
            ("expires", "soon"),
            ("expiration", "-1"),
            ("x-dedup-id", ""),
        ] {
            let e = validate(&headers(&[(name, value)])).unwrap_err();
            assert_eq!(e.header, name);
            assert!(e.to_string().contains(name), "{e}");
        }
        assert!(validate(&headers(&[("priority", "0"), ("x-delay", "0")])).is_ok());
        assert!(ack_timeout("0").is_err());
        assert_eq!(ack_timeout("1500").unwrap().as_millis(), 1500);
    }

    #[test]
    fn dedup_id_from_either_header() {
        assert_eq!(
            dedup_id(&headers(&[("_AMQ_DUPL_ID", "a1")])).map(|v| v.to_string()),
            Some("a1".to_string())
        );
        assert!(dedup_id(&headers(&[("x-other", "a1")])).is_none());
    }
}
