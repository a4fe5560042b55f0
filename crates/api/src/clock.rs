//! The wall clock the gateway reads for the timestamp window, nonce expiry and throttling.

use std::sync::{Mutex, PoisonError};

use time::macros::format_description;
use time::{Duration, OffsetDateTime, UtcOffset};

/// Source of the current time, injectable so tests can run at the fixed times of signature
/// test vectors.
pub trait Clock: Send + Sync + 'static {
    /// Returns the current time. Only the instant matters, not the offset.
    fn now(&self) -> OffsetDateTime;
}

/// The system's UTC wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that stays at the time it was set to until [`ManualClock::set`] or
/// [`ManualClock::advance`] moves it.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<OffsetDateTime>,
}

impl ManualClock {
    pub fn new(now: OffsetDateTime) -> Self {
        Self {
            now: Mutex::new(now),
        }
    }

    pub fn set(&self, now: OffsetDateTime) {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner) = now;
    }

    /// Moves the clock by `by`, which may be negative.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.saturating_add(by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> OffsetDateTime {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Formats `at` in UTC as `YYYY-MM-DDThh:mm:ssZ`, the form of `Timestamp` and `x-acs-date`.
pub fn format_utc(at: OffsetDateTime) -> String {
    let format = format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    at.to_offset(UtcOffset::UTC)
        .format(format)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let clock = ManualClock::new(datetime!(2025-01-01 00:00:00 UTC));
        assert_eq!(clock.now(), datetime!(2025-01-01 00:00:00 UTC));

        clock.advance(Duration::minutes(16));
        assert_eq!(clock.now(), datetime!(2025-01-01 00:16:00 UTC));

        clock.set(datetime!(2024-12-31 23:00:00 UTC));
        assert_eq!(clock.now(), datetime!(2024-12-31 23:00:00 UTC));
    }

    #[test]
    fn format_utc_converts_offsets() {
        assert_eq!(
            format_utc(datetime!(2025-01-01 08:00:05 +08:00)),
            "2025-01-01T00:00:05Z"
        );
    }
}
