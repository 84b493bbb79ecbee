//! Helpers shared by the unit tests.

use stomp_codec::{ByteString, Headers};

/// Headers from (name, value) pairs.
pub(crate) fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (ByteString::from(*n), ByteString::from(*v)))
        .collect()
}
