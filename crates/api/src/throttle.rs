//! Per-AccessKey token buckets behind `Throttling.User`.
//!
//! Buckets exist only for AccessKeys whose signature verified, so their number is bounded by the
//! configured keys. Time comes from the gateway's [`Clock`](crate::Clock); a clock that steps
//! back refills nothing instead of failing.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

pub(crate) struct Throttle {
    rate_per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    refilled_at: OffsetDateTime,
}

impl Throttle {
    /// `rate_per_second` and `burst` must be at least 1; the server settings check that.
    pub(crate) fn new(rate_per_second: u32, burst: u32) -> Self {
        Self {
            rate_per_second: f64::from(rate_per_second.max(1)),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from the bucket of `access_key_id`. Returns `Err` with the milliseconds
    /// until a token is available when the bucket is empty.
    pub(crate) fn acquire(&self, access_key_id: &str, now: OffsetDateTime) -> Result<(), u64> {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets
            .entry(access_key_id.to_owned())
            .or_insert_with(|| Bucket {
                tokens: self.burst,
                refilled_at: now,
            });

        let elapsed = (now - bucket.refilled_at).as_seconds_f64();
        if elapsed > 0.0 {
            bucket.tokens = (bucket.tokens + elapsed * self.rate_per_second).min(self.burst);
            bucket.refilled_at = now;
        }

        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait_seconds = (1.0 - bucket.tokens) / self.rate_per_second;
        // The cast saturates for huge values; at least 1 ms, because SDKs ignore a zero wait.
        Err(((wait_seconds * 1000.0).ceil() as u64).max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    #[test]
    fn burst_then_refill() {
        let throttle = Throttle::new(2, 3);
        for _ in 0..3 {
            assert_eq!(throttle.acquire("ak", NOW), Ok(()));
        }
        assert_eq!(throttle.acquire("ak", NOW), Err(500));

        let later = NOW + Duration::milliseconds(250);
        assert_eq!(throttle.acquire("ak", later), Err(250));

        let refilled = NOW + Duration::milliseconds(500);
        assert_eq!(throttle.acquire("ak", refilled), Ok(()));
        assert!(throttle.acquire("ak", refilled).is_err());
    }

    #[test]
    fn refill_is_capped_at_burst() {
        let throttle = Throttle::new(100, 2);
        assert_eq!(throttle.acquire("ak", NOW), Ok(()));
        let much_later = NOW + Duration::hours(1);
        assert_eq!(throttle.acquire("ak", much_later), Ok(()));
        assert_eq!(throttle.acquire("ak", much_later), Ok(()));
        assert!(throttle.acquire("ak", much_later).is_err());
    }

    #[test]
    fn buckets_are_per_access_key() {
        let throttle = Throttle::new(1, 1);
        assert_eq!(throttle.acquire("ak1", NOW), Ok(()));
        assert!(throttle.acquire("ak1", NOW).is_err());
        assert_eq!(throttle.acquire("ak2", NOW), Ok(()));
    }

    #[test]
    fn clock_stepping_back_does_not_refill() {
        let throttle = Throttle::new(1, 1);
        assert_eq!(throttle.acquire("ak", NOW), Ok(()));
        let earlier = NOW - Duration::minutes(5);
        assert!(throttle.acquire("ak", earlier).is_err());
    }
}
