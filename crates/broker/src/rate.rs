//! A token bucket for the rate limits of an instance: new connections per instance and PUBLISH
//! packets per connection.

use std::time::Instant;

/// Allows `rate` events per second on average and bursts of up to `rate` events, one second's
/// worth. A rate of 0 allows everything.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    rate: u32,
    /// Events that may happen now, up to `rate`; fractions accumulate between events.
    tokens: f64,
    refilled_at: Instant,
}

impl RateLimiter {
    /// Creates a limiter that starts with a full bucket at `now`.
    pub(crate) fn new(rate: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            rate,
            tokens: f64::from(rate),
            refilled_at: now,
        }
    }

    /// Takes one token at `now`, returning `false` when the rate is exceeded.
    pub(crate) fn try_acquire(&mut self, now: Instant) -> bool {
        if self.rate == 0 {
            return true;
        }
        let elapsed = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        let capacity = f64::from(self.rate);
        self.tokens = (self.tokens + elapsed * capacity).min(capacity);
        self.refilled_at = now.max(self.refilled_at);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn burst_of_one_second_then_refill() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(10, now);
        let allowed = (0..15).filter(|_| limiter.try_acquire(now)).count();
        assert_eq!(allowed, 10);
        assert!(!limiter.try_acquire(now + Duration::from_millis(50)));
        assert!(limiter.try_acquire(now + Duration::from_millis(100)));
        assert!(!limiter.try_acquire(now + Duration::from_millis(100)));
    }

    #[test]
    fn idle_time_refills_only_to_capacity() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(5, now);
        let later = now + Duration::from_secs(3600);
        let allowed = (0..20).filter(|_| limiter.try_acquire(later)).count();
        assert_eq!(allowed, 5);
    }

    #[test]
    fn zero_rate_allows_everything() {
        let now = Instant::now();
        let mut limiter = RateLimiter::new(0, now);
        assert!((0..10_000).all(|_| limiter.try_acquire(now)));
    }

    #[test]
    fn earlier_time_does_not_refill() {
        let now = Instant::now() + Duration::from_secs(10);
        let mut limiter = RateLimiter::new(1, now);
        assert!(limiter.try_acquire(now));
        assert!(!limiter.try_acquire(now - Duration::from_secs(5)));
        assert!(!limiter.try_acquire(now));
    }
}
