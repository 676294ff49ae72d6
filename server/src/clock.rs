//! Time as a dependency: the server asks a [`Clock`], so tests can move time instead of sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use time::OffsetDateTime;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time in UTC.
    fn now(&self) -> OffsetDateTime;
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that only moves when told to. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    /// A manual clock starting at `start`.
    pub fn new(start: OffsetDateTime) -> Self {
        Self { millis: Arc::new(AtomicI64::new(to_millis(start))) }
    }

    /// A manual clock starting at the real current time.
    pub fn starting_now() -> Self {
        Self::new(OffsetDateTime::now_utc())
    }

    /// Moves the clock forward (or backward, with a negative duration).
    pub fn advance(&self, by: time::Duration) {
        let delta = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.millis.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        from_millis(self.millis.load(Ordering::SeqCst))
    }
}

/// Unix milliseconds, the representation of time in the database.
pub fn to_millis(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

/// The inverse of [`to_millis`]; out-of-range values clamp to the Unix epoch.
pub fn from_millis(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// The system clock shifted by an offset that can be moved: time flows as usual, and tests
/// can jump ahead (or back) without sleeping. Cloning shares the offset.
#[derive(Debug, Clone, Default)]
pub struct OffsetClock {
    offset_millis: Arc<AtomicI64>,
}

impl OffsetClock {
    /// A clock equal to the system clock.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward (or backward, with a negative duration).
    pub fn advance(&self, by: time::Duration) {
        let delta = i64::try_from(by.whole_milliseconds()).unwrap_or(i64::MAX);
        self.offset_millis.fetch_add(delta, Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> OffsetDateTime {
        from_millis(to_millis(OffsetDateTime::now_utc()) + self.offset_millis.load(Ordering::SeqCst))
    }
}
