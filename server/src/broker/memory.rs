//! The broker's memory in bytes: what messages, transactions and partly
//! received frames hold, against one high watermark (`memory_limit`).
//!
//! Every holder of bytes takes a [`Charge`]; dropping it gives the bytes
//! back. A message carries one charge however many queues, outboxes and
//! histories share it, so the count is of bytes alive, not of references.
//! At [`HIGH_MARK`] of the limit the alarm is raised: sessions stop reading
//! from connections that publish (TCP pushes back on them) until memory
//! falls below [`LOW_MARK`] of that, while consumers keep draining, as
//! RabbitMQ's memory alarm does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// The alarm rises at this fraction of the limit. What is accounted is
/// messages, transactions and large partial frames; the rest of the
/// process (allocator slack and freed pages not yet returned, small
/// buffers, the program) takes the remainder: with the alarm at the full
/// limit, resident memory reached 1.12x the limit in `scripts/soak-memory.sh`'s
/// mixed run, so the margin is taken here rather than past the limit.
pub const HIGH_MARK: f64 = 0.95;

/// The alarm clears below this fraction of where it rose, so publishers
/// are not woken and blocked again for every message a consumer takes.
pub const LOW_MARK: f64 = 0.9;

/// Bytes held by the broker, against its limit.
#[derive(Debug)]
pub struct Memory {
    used: AtomicUsize,
    limit: usize,
    high: usize,
    low: usize,
    alarm: AtomicBool,
    /// How many times the alarm was raised since start.
    alarms: AtomicU64,
    cleared: Notify,
}

impl Memory {
    /// Accounting against `limit` bytes.
    pub fn new(limit: usize) -> Arc<Memory> {
        Arc::new(Memory {
            used: AtomicUsize::new(0),
            limit,
            high: (limit as f64 * HIGH_MARK) as usize,
            low: (limit as f64 * HIGH_MARK * LOW_MARK) as usize,
            alarm: AtomicBool::new(false),
            alarms: AtomicU64::new(0),
            cleared: Notify::new(),
        })
    }

    /// Accounting with no practical limit (tests, tools).
    pub fn unlimited() -> Arc<Memory> {
        Memory::new(usize::MAX)
    }

    /// Takes `bytes` for something about to be held.
    pub fn charge(self: &Arc<Self>, bytes: usize) -> Charge {
        let mut charge = Charge {
            memory: Some(self.clone()),
            bytes: 0,
        };
        charge.set(bytes);
        charge
    }

    fn add(&self, bytes: usize) {
        let used = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if used > self.high && !self.alarm.swap(true, Ordering::AcqRel) {
            self.alarms.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                used,
                limit = self.limit,
                "memory alarm: above memory_limit; publishers are blocked until consumers drain"
            );
        }
    }

    fn sub(&self, bytes: usize) {
        let used = self.used.fetch_sub(bytes, Ordering::Relaxed) - bytes;
        if used < self.low
            && self.alarm.load(Ordering::Acquire)
            && self.alarm.swap(false, Ordering::AcqRel)
        {
            tracing::info!(
                used,
                limit = self.limit,
                "memory alarm cleared; publishers resume"
            );
            self.cleared.notify_waiters();
        }
    }

    /// Whether the alarm is up: publishers must wait.
    pub fn alarm(&self) -> bool {
        self.alarm.load(Ordering::Acquire)
    }

    /// Resolves once the alarm is down (at once if it is).
    pub async fn cleared(&self) {
        loop {
            // Registered before the check, so a clearing in between is not missed.
            let cleared = self.cleared.notified();
            if !self.alarm() {
                return;
            }
            cleared.await;
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// The watermark.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// How many times the alarm went up since start.
    pub fn alarms(&self) -> u64 {
        self.alarms.load(Ordering::Relaxed)
    }
}

/// Bytes taken from a [`Memory`]; given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    memory: Option<Arc<Memory>>,
    bytes: usize,
}

impl Charge {
    /// A charge against nothing (for values the broker does not keep).
    pub fn none() -> Charge {
        Charge::default()
    }

    /// Changes what this charge holds to `bytes`.
    pub fn set(&mut self, bytes: usize) {
        let Some(memory) = &self.memory else {
            return;
        };
        if bytes > self.bytes {
            memory.add(bytes - self.bytes);
        } else if bytes < self.bytes {
            memory.sub(self.bytes - bytes);
        }
        self.bytes = bytes;
    }

    /// The bytes held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.set(0);
    }
}

/// The machine's memory in bytes, or that of the control group the broker
/// runs in when it is smaller (a container's limit); `None` when neither
/// can be read.
pub fn system_memory() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok();
    let total = meminfo.as_deref().and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kib| kib * 1024)
    });
    let cgroup = [
        "/sys/fs/cgroup/memory.max",
        "/sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]
    .iter()
    .find_map(|p| std::fs::read_to_string(p).ok())
    .and_then(|v| v.trim().parse::<u64>().ok());
    match (total, cgroup) {
        (Some(t), Some(c)) => Some(t.min(c)),
        (t, c) => t.or(c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_add_up_and_are_given_back() {
        let memory = Memory::new(1000);
        let a = memory.charge(300);
        let mut b = memory.charge(200);
        assert_eq!(memory.used(), 500);
        b.set(50);
        assert_eq!(memory.used(), 350);
        drop(a);
        drop(b);
        assert_eq!(memory.used(), 0);
    }

    #[test]
    fn the_alarm_rises_above_the_limit_and_clears_below_the_low_mark() {
        let memory = Memory::new(1000);
        let a = memory.charge(600);
        let b = memory.charge(500);
        assert!(memory.alarm());
        assert_eq!(memory.alarms(), 1);
        drop(b);
        assert!(!memory.alarm(), "600 is below the low mark of 855");
        let c = memory.charge(450);
        assert!(memory.alarm(), "1050 is above the high mark of 950");
        let d = memory.charge(0);
        drop(d);
        let mut a = a;
        a.set(480);
        assert!(memory.alarm(), "930 is still above the low mark of 855");
        a.set(400);
        assert!(!memory.alarm(), "850 clears it");
        drop(c);
        assert_eq!(memory.alarms(), 2);
    }

    #[tokio::test]
    async fn waiters_wake_when_the_alarm_clears() {
        let memory = Memory::new(100);
        let big = memory.charge(200);
        let waiter = {
            let memory = memory.clone();
            tokio::spawn(async move { memory.cleared().await })
        };
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(big);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .expect("woken")
            .expect("no panic");
    }
}
