//! Time as the limits see it: injectable, so that tests can cross a minute or a day.

use llm_bridge_core::calendar::{DAY_MS, civil_from_days, days_from_civil};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub trait Clock: Send + Sync {
    /// Now.
    fn now_ms(&self) -> i64;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug, Default, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    /// A clock at `ms`.
    pub fn at(ms: i64) -> Self {
        ManualClock(Arc::new(AtomicI64::new(ms)))
    }

    /// Moves the clock forward.
    pub fn advance_ms(&self, ms: i64) {
        self.0.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock.
    pub fn set_ms(&self, ms: i64) {
        self.0.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// The UTC day number of a time.
pub fn day_of(ms: i64) -> i64 {
    ms.div_euclid(DAY_MS)
}

/// The UTC month (`year * 12 + month - 1`) of a time.
pub fn month_of(ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(day_of(ms));
    y * 12 + m - 1
}

/// Milliseconds until the next UTC midnight.
pub fn ms_to_next_day(ms: i64) -> i64 {
    (day_of(ms) + 1) * DAY_MS - ms
}

/// Milliseconds until the first day of the next UTC month.
pub fn ms_to_next_month(ms: i64) -> i64 {
    let month = month_of(ms) + 1;
    let (y, m) = (month.div_euclid(12), month.rem_euclid(12) + 1);
    days_from_civil(y, m, 1) * DAY_MS - ms
}

/// The first millisecond of the UTC day / month of a time.
pub fn start_of_day(ms: i64) -> i64 {
    day_of(ms) * DAY_MS
}

/// See [`start_of_day`].
pub fn start_of_month(ms: i64) -> i64 {
    let (y, m, _) = civil_from_days(day_of(ms));
    days_from_civil(y, m, 1) * DAY_MS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_and_month_boundaries() {
        // 2026-11-30T23:59:59.999Z
        let t = 1_796_083_199_999;
        assert_eq!(ms_to_next_day(t), 1);
        assert_eq!(ms_to_next_month(t), 1);
        assert_eq!(month_of(t) + 1, month_of(t + 1));
        assert_eq!(start_of_month(t + 1), t + 1);
        assert_eq!(start_of_day(t), t + 1 - DAY_MS);
    }
}
