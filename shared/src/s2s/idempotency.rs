//! Idempotent answers: the first answer to an `X-Idempotency-Key`, sent again to its retries.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};

pub(super) struct IdempotentEntry {
    pub(super) fingerprint: [u8; 32],
    pub(super) stored_at: Instant,
    pub(super) answer: Option<(StatusCode, Option<HeaderValue>, Bytes)>,
}

/// Idempotent answers by `(tenant, idempotency key)`, each kept for twice the window after its
/// first request. `order` lists the entries as they were stored, so pruning pops from its front
/// and stops at the first entry still young enough: amortised O(1) per request instead of a scan
/// of every cached answer. A key that was removed (its first attempt failed) and stored again
/// has two records in `order`; the older one no longer matches the entry and only goes away.
#[derive(Default)]
pub(super) struct AnswerCache {
    pub(super) entries: HashMap<(String, String), IdempotentEntry>,
    order: VecDeque<(Instant, (String, String))>,
}

impl AnswerCache {
    /// Forgets the answers stored `retention` or longer before `now`, oldest first.
    pub(super) fn prune(&mut self, now: Instant, retention: Duration) {
        while let Some((stored_at, _)) = self.order.front() {
            if now.saturating_duration_since(*stored_at) < retention {
                break;
            }
            let Some((stored_at, key)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.stored_at == stored_at)
            {
                self.entries.remove(&key);
            }
        }
    }

    pub(super) fn insert(&mut self, key: (String, String), entry: IdempotentEntry) {
        self.order.push_back((entry.stored_at, key.clone()));
        self.entries.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(stored_at: Instant) -> IdempotentEntry {
        IdempotentEntry {
            fingerprint: [0; 32],
            stored_at,
            answer: None,
        }
    }

    fn answer_key(i: usize) -> (String, String) {
        ("party-a".into(), format!("token-{i}"))
    }

    #[test]
    fn answers_are_kept_for_the_retention_and_then_forgotten() {
        let retention = Duration::from_secs(600);
        let start = Instant::now();
        let mut cache = AnswerCache::default();
        for i in 0..15_000 {
            cache.insert(answer_key(i), pending(start));
        }
        cache.insert(answer_key(15_000), pending(start + Duration::from_secs(1)));
        cache.prune(start + Duration::from_millis(599_999), retention);
        assert_eq!(cache.entries.len(), 15_001, "nothing is forgotten early");
        cache.prune(start + retention, retention);
        assert_eq!(cache.entries.len(), 1);
        assert!(cache.entries.contains_key(&answer_key(15_000)));
        assert_eq!(cache.order.len(), 1);
        // A steady stream keeps the cache at what arrives within the retention: one request
        // per 100 ms for 30 minutes.
        for step in 1..=18_000u32 {
            let now = start + retention + Duration::from_millis(u64::from(step) * 100);
            cache.prune(now, retention);
            cache.insert(answer_key(20_000 + step as usize), pending(now));
        }
        assert_eq!(cache.entries.len(), 6_000);
        assert_eq!(cache.order.len(), 6_000);
    }

    #[test]
    fn an_answer_stored_again_after_a_failed_attempt_lives_its_full_retention() {
        let retention = Duration::from_secs(600);
        let start = Instant::now();
        let mut cache = AnswerCache::default();
        // The first attempt failed (its entry was removed); the retry stored it again later.
        cache.insert(answer_key(1), pending(start));
        cache.entries.remove(&answer_key(1));
        let retried = start + Duration::from_secs(30);
        cache.insert(answer_key(1), pending(retried));
        // The first attempt's record expires: the retry's answer stays.
        cache.prune(start + retention, retention);
        assert_eq!(
            cache.entries.get(&answer_key(1)).map(|e| e.stored_at),
            Some(retried)
        );
        cache.prune(retried + retention, retention);
        assert!(cache.entries.is_empty());
        assert!(cache.order.is_empty());
    }
}
