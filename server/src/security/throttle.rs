//! Slows down password guessing: each failed login from an address makes
//! that address wait longer for its next refusal (100 ms, doubling up to
//! 10 s). A success, or ten quiet minutes, forgives the address.
//!
//! Addresses are grouped as an attacker would use them: an IPv4 address
//! alone, an IPv6 address by its /64 (one machine usually holds a whole
//! /64). The table is bounded; when it is full, forgiven entries go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The first delay after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(10);
/// How long after its last failure an address is forgiven.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at once (about 64 bytes each).
const MAX_ENTRIES: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Failures {
    count: u32,
    last: Instant,
}

/// Failed logins per address, and the delay they earn. Shared by every session.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: Mutex<HashMap<IpAddr, Failures>>,
}

/// The address a failure counts against: IPv6 by its /64.
fn key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

impl LoginThrottle {
    /// An empty table.
    pub fn new() -> LoginThrottle {
        LoginThrottle::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a failed login from `address`; returns how long to wait before
    /// telling the client.
    pub fn failed(&self, address: IpAddr, now: Instant) -> Duration {
        let mut table = self.lock();
        if table.len() >= MAX_ENTRIES {
            table.retain(|_, f| now.duration_since(f.last) < FORGET_AFTER);
            if table.len() >= MAX_ENTRIES {
                // Still full of recent failures: forget the oldest half
                // rather than stop counting newcomers.
                let mut ages: Vec<Instant> = table.values().map(|f| f.last).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                table.retain(|_, f| f.last > cut);
            }
        }
        let entry = table.entry(key(address)).or_insert(Failures {
            count: 0,
            last: now,
        });
        if now.duration_since(entry.last) >= FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        delay_after(entry.count)
    }

    /// Forgives `address` after a successful login.
    pub fn succeeded(&self, address: IpAddr) {
        let mut table = self.lock();
        if !table.is_empty() {
            table.remove(&key(address));
        }
    }

    /// Addresses with recent failures (for tests and `/health`).
    pub fn tracked(&self) -> usize {
        self.lock().len()
    }
}

/// 100 ms after the first failure, doubling with each, at most 10 s.
fn delay_after(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    (FIRST_DELAY * 2u32.pow(doublings)).min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_doubles_the_wait_up_to_a_limit() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let here = IpAddr::from([10, 0, 0, 1]);
        let waits: Vec<u128> = (0..10)
            .map(|_| throttle.failed(here, now).as_millis())
            .collect();
        assert_eq!(
            waits,
            [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000]
        );
        // Another address is not affected.
        assert_eq!(
            throttle.failed(IpAddr::from([10, 0, 0, 2]), now),
            FIRST_DELAY
        );
    }

    #[test]
    fn success_or_quiet_time_forgives() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let here = IpAddr::from([10, 0, 0, 1]);
        throttle.failed(here, now);
        throttle.failed(here, now);
        throttle.succeeded(here);
        assert_eq!(throttle.failed(here, now), FIRST_DELAY);
        throttle.failed(here, now);
        let later = now + FORGET_AFTER;
        assert_eq!(throttle.failed(here, later), FIRST_DELAY);
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let throttle = LoginThrottle::new();
        let now = Instant::now();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        throttle.failed(a, now);
        assert_eq!(throttle.failed(b, now), FIRST_DELAY * 2);
        assert_eq!(throttle.tracked(), 1);
    }

    #[test]
    fn the_table_stays_bounded() {
        let throttle = LoginThrottle::new();
        let start = Instant::now();
        for i in 0..(MAX_ENTRIES as u32 + 10) {
            let at = start + Duration::from_millis(u64::from(i));
            throttle.failed(IpAddr::from(i.to_be_bytes()), at);
        }
        assert!(throttle.tracked() <= MAX_ENTRIES);
    }
}
