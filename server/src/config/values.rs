//! Values the config spells as people write them: sizes (`512MiB`, `40%`)
//! and listen addresses (`localhost:0`).

use std::net::SocketAddr;

use serde::Deserialize;

use super::ConfigError;

/// A size in bytes as people write it: a number of bytes, a number with a
/// unit (`KiB`, `MiB`, `GiB`, `KB`, `MB`, `GB`), or a percentage of the
/// machine's memory.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ByteSize {
    /// Plain bytes.
    Bytes(u64),
    /// Text to parse.
    Text(String),
}

impl std::str::FromStr for ByteSize {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<ByteSize, Self::Err> {
        Ok(ByteSize::Text(s.to_string()))
    }
}

impl ByteSize {
    /// The size in bytes; a percentage is of `total` (the machine's memory).
    pub fn resolve(&self, setting: &'static str, total: Option<u64>) -> Result<u64, ConfigError> {
        let text = match self {
            ByteSize::Bytes(n) => return Ok(*n),
            ByteSize::Text(t) => t.trim(),
        };
        let invalid = |reason: String| ConfigError::Invalid { setting, reason };
        if let Some(percent) = text.strip_suffix('%') {
            let p: f64 = percent
                .trim()
                .parse()
                .map_err(|_| invalid(format!("{text:?} is not a percentage like 40%")))?;
            if !(p > 0.0 && p <= 100.0) {
                return Err(invalid(format!("{text:?} must be between 0% and 100%")));
            }
            let total = total.ok_or_else(|| {
                invalid("the machine's memory cannot be read here; give a size like 2GiB".into())
            })?;
            return Ok((total as f64 * p / 100.0) as u64);
        }
        let split = text
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| invalid(format!("{text:?} is not a size like 512MiB, 2GB or 40%")))?;
        let scale: u64 = match unit.trim().to_ascii_lowercase().as_str() {
            "" | "b" => 1,
            "kib" | "k" => 1 << 10,
            "mib" | "m" => 1 << 20,
            "gib" | "g" => 1 << 30,
            "kb" => 1_000,
            "mb" => 1_000_000,
            "gb" => 1_000_000_000,
            other => {
                return Err(invalid(format!(
                    "unknown unit {other:?} in {text:?}; use KiB, MiB, GiB, KB, MB, GB or %"
                )));
            }
        };
        Ok((number * scale as f64) as u64)
    }
}

/// An address to listen on: `IP:PORT`, or `HOST:PORT` with the host
/// resolved (its first IPv4 address, else its first), so `localhost:0` works.
pub fn resolve_listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(addr) = text.parse() {
        return Ok(addr);
    }
    let expected = "expected host:port, like 127.0.0.1:61613, [::1]:61613 or localhost:61613";
    let resolved: Vec<SocketAddr> = std::net::ToSocketAddrs::to_socket_addrs(text)
        .map_err(|e| format!("{text:?}: {e} ({expected})"))?
        .collect();
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| format!("{text:?} resolves to no address ({expected})"))
}

/// Reads a listen address from the config file with [`resolve_listen_address`].
pub(crate) fn listen_address<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    resolve_listen_address(&text).map_err(serde::de::Error::custom)
}
