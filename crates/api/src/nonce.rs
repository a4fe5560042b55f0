//! Replay protection: the signature nonces seen per AccessKey, each kept until its request's
//! timestamp leaves the accepted window, so memory is bounded by the request rate and a cap.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use time::OffsetDateTime;

/// Outcome of recording a nonce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NonceOutcome {
    /// The nonce was not seen before and is now recorded.
    Fresh,
    /// The AccessKey already used this nonce within the window.
    Replayed,
    /// The cache contains `capacity` live entries, so the nonce could not be recorded.
    Full,
}

pub(crate) struct NonceCache {
    capacity: usize,
    inner: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    /// Key (`<access key id>\n<nonce>`) to the Unix second after which it may be dropped.
    expiry_by_key: HashMap<Arc<str>, i64>,
    /// The same entries ordered by expiry, so expired ones are found from the front.
    by_expiry: BTreeSet<(i64, Arc<str>)>,
}

impl NonceCache {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Entries::default()),
        }
    }

    /// Records `nonce` for `access_key_id` until `expires_at`, after dropping entries that
    /// expired by `now`.
    pub(crate) fn record(
        &self,
        access_key_id: &str,
        nonce: &str,
        expires_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> NonceOutcome {
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        entries.drop_expired(now.unix_timestamp());

        let key: Arc<str> = Arc::from(format!("{access_key_id}\n{nonce}"));
        if entries.expiry_by_key.contains_key(&key) {
            return NonceOutcome::Replayed;
        }
        if entries.expiry_by_key.len() >= self.capacity {
            return NonceOutcome::Full;
        }
        let expiry = expires_at.unix_timestamp();
        entries.expiry_by_key.insert(key.clone(), expiry);
        entries.by_expiry.insert((expiry, key));
        NonceOutcome::Fresh
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .expiry_by_key
            .len()
    }
}

impl Entries {
    fn drop_expired(&mut self, now: i64) {
        while let Some((expiry, _)) = self.by_expiry.first() {
            if *expiry >= now {
                break;
            }
            if let Some((_, key)) = self.by_expiry.pop_first() {
                self.expiry_by_key.remove(&key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2025-01-01 00:00:00 UTC);

    #[test]
    fn second_use_is_replay() {
        let cache = NonceCache::new(10);
        let expiry = NOW + Duration::minutes(15);
        assert_eq!(cache.record("ak", "n1", expiry, NOW), NonceOutcome::Fresh);
        assert_eq!(
            cache.record("ak", "n1", expiry, NOW),
            NonceOutcome::Replayed
        );
    }

    #[test]
    fn nonces_are_scoped_per_access_key() {
        let cache = NonceCache::new(10);
        let expiry = NOW + Duration::minutes(15);
        assert_eq!(cache.record("ak1", "n", expiry, NOW), NonceOutcome::Fresh);
        assert_eq!(cache.record("ak2", "n", expiry, NOW), NonceOutcome::Fresh);
    }

    #[test]
    fn entries_expire_after_their_window() {
        let cache = NonceCache::new(10);
        let expiry = NOW + Duration::minutes(15);
        assert_eq!(cache.record("ak", "n1", expiry, NOW), NonceOutcome::Fresh);

        let at_expiry = expiry;
        assert_eq!(
            cache.record("ak", "n1", expiry, at_expiry),
            NonceOutcome::Replayed
        );

        let later = expiry + Duration::seconds(1);
        assert_eq!(
            cache.record("ak", "n1", later + Duration::minutes(15), later),
            NonceOutcome::Fresh
        );
        assert_eq!(cache.len(), 1);
    }

    #[test]
    fn full_cache_rejects_until_entries_expire() {
        let cache = NonceCache::new(2);
        let expiry = NOW + Duration::minutes(15);
        assert_eq!(cache.record("ak", "a", expiry, NOW), NonceOutcome::Fresh);
        assert_eq!(cache.record("ak", "b", expiry, NOW), NonceOutcome::Fresh);
        assert_eq!(cache.record("ak", "c", expiry, NOW), NonceOutcome::Full);
        assert_eq!(cache.record("ak", "a", expiry, NOW), NonceOutcome::Replayed);

        let later = expiry + Duration::seconds(1);
        assert_eq!(
            cache.record("ak", "c", later + Duration::minutes(15), later),
            NonceOutcome::Fresh
        );
        assert_eq!(cache.len(), 1);
    }
}
