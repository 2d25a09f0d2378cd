//! Time and id sources. Aggregates never read the clock: the runtime reads these and
//! hands the values in through the command context, so replays are deterministic.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

/// A source of the current time.
pub trait Clock: Send + Sync {
    /// The current time, truncated to microseconds (the precision of the wire format).
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }
}

/// A clock that moves only when told to; for tests of deadlines and timers.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self {
            now: Mutex::new(truncate_to_micros(start)),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: TimeDelta) {
        let mut now = self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *now = truncate_to_micros(*now + by);
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = truncate_to_micros(to);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self
            .now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Drops sub-microsecond precision, which the wire format does not carry.
pub fn truncate_to_micros(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// A source of unique ids for events and commands.
pub trait IdGenerator: Send + Sync {
    /// A new id.
    fn new_id(&self) -> Uuid;
}

/// Random, time-ordered UUID v7 ids.
#[derive(Debug, Clone, Copy, Default)]
pub struct UuidV7;

impl IdGenerator for UuidV7 {
    fn new_id(&self) -> Uuid {
        Uuid::now_v7()
    }
}

/// Deterministic ids (`00000000-0000-7000-8000-000000000001`, `...2`, ...), for tests.
#[derive(Debug, Default)]
pub struct SequentialIds {
    next: AtomicU64,
}

impl SequentialIds {
    /// Ids counting up from 1.
    pub fn new() -> Self {
        Self::default()
    }
}

impl IdGenerator for SequentialIds {
    fn new_id(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        // Version 7 and RFC 4122 variant bits set, the counter in the low 62 bits.
        Uuid::from_u128((0x7000u128 << 64) | (0x8000_0000_0000_0000u128) | u128::from(n))
    }
}

/// An id derived deterministically from a parent id and a name, so the same inputs always
/// give the same id (for command ids of saga steps and ids minted inside aggregates).
///
/// It is a UUID v8 holding the first 122 bits of SHA-256 over `parent || name`.
pub fn derived_id(parent: Uuid, name: &str) -> Uuid {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(parent.as_bytes());
    h.update(name.as_bytes());
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequential_ids_are_distinct_and_ordered() {
        let ids = SequentialIds::new();
        let a = ids.new_id();
        let b = ids.new_id();
        assert!(a < b);
        assert_eq!(a.get_version_num(), 7);
    }

    #[test]
    fn derived_ids_are_stable_and_depend_on_both_inputs() {
        let p = Uuid::from_u128(42);
        assert_eq!(derived_id(p, "debit#1"), derived_id(p, "debit#1"));
        assert_ne!(derived_id(p, "debit#1"), derived_id(p, "debit#2"));
        assert_ne!(derived_id(p, "x"), derived_id(Uuid::from_u128(43), "x"));
        assert_eq!(derived_id(p, "x").get_version_num(), 8);
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).expect("valid");
        let clock = ManualClock::new(start);
        assert_eq!(clock.now(), start);
        clock.advance(TimeDelta::seconds(5));
        assert_eq!(clock.now(), start + TimeDelta::seconds(5));
    }
}
