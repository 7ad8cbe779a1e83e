//! Idempotent answers: the first answer to an `X-Idempotency-Key`, sent again to its retries.
//!
//! A request with a key goes through [`Answers::begin`] (replay, refuse, or run), and a request
//! that runs holds an [`InProgress`] marker until [`InProgress::complete`] stores its answer. The
//! marker is a drop guard: a handler that is cancelled (the client hung up and hyper dropped its
//! future) or panics leaves no `in-progress` entry behind, so the client's retry runs at once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::problem::Problem;

/// How long a request that neither finished nor was dropped keeps its key `in-progress`: a
/// handler still running with nobody waiting for it (a hung future, a proxy that kept the
/// connection open). Longer than any run a live attempt can have (the client gives one attempt
/// 2 to 5 s; a handler's own database bounds are a 2 s pool acquire and 5 s per statement), so
/// a retry does not race a first attempt that is still working; far shorter than the 600 s an
/// answer is kept. Cancellations and panics do not wait for it (see [`InProgress`]).
pub const IN_PROGRESS_TTL: Duration = Duration::from_secs(30);

/// `(tenant, idempotency key)`.
type Key = (String, String);

#[derive(Clone)]
struct Answer {
    status: StatusCode,
    content_type: Option<HeaderValue>,
    body: Bytes,
}

impl Answer {
    fn replay(&self) -> Response {
        let mut response = (self.status, self.body.clone()).into_response();
        if let Some(ct) = &self.content_type {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, ct.clone());
        }
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
        response
    }
}

struct Entry {
    fingerprint: [u8; 32],
    stored_at: Instant,
    /// Which request stored the entry, so a marker only ever clears or fills its own.
    attempt: u64,
    /// `None` while the request runs.
    answer: Option<Answer>,
}

/// Entries by key, each kept for the retention after its request began. `order` lists them as
/// they were stored, so pruning pops from its front and stops at the first entry still young
/// enough: amortised O(1) per request instead of a scan. A key stored again (its first attempt
/// failed) has two records in `order`; the older one no longer matches the entry and only goes.
#[derive(Default)]
struct AnswerCache {
    entries: HashMap<Key, Entry>,
    order: VecDeque<(Instant, u64, Key)>,
    next_attempt: u64,
}

impl AnswerCache {
    /// Forgets the entries stored `retention` or longer before `now`, oldest first.
    fn prune(&mut self, now: Instant, retention: Duration) {
        while let Some((stored_at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*stored_at) < retention {
                break;
            }
            let Some((_, attempt, key)) = self.order.pop_front() else {
                break;
            };
            if self
                .entries
                .get(&key)
                .is_some_and(|entry| entry.attempt == attempt)
            {
                self.entries.remove(&key);
            }
        }
    }

    /// Stores an `in-progress` entry; returns its attempt number.
    fn insert(&mut self, key: Key, fingerprint: [u8; 32], stored_at: Instant) -> u64 {
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.order.push_back((stored_at, attempt, key.clone()));
        self.entries.insert(
            key,
            Entry {
                fingerprint,
                stored_at,
                attempt,
                answer: None,
            },
        );
        attempt
    }

    /// The entry `attempt` stored, if it is still the key's entry.
    fn own(&mut self, key: &Key, attempt: u64) -> Option<&mut Entry> {
        self.entries
            .get_mut(key)
            .filter(|entry| entry.attempt == attempt)
    }
}

/// What to do with a request that carries an idempotency key.
pub(super) enum Begin {
    /// Its first request's answer, sent again.
    Replay(Response),
    /// The key belongs to another request, or its first request is still running.
    Refuse(Problem),
    /// Run the handler; the marker stands for it until it completes or is dropped.
    Run(InProgress),
}

/// The idempotent answers of one verifier.
pub(super) struct Answers {
    cache: Mutex<AnswerCache>,
    /// How long an answer is replayed.
    retention: Duration,
    in_progress_ttl: Duration,
}

impl Answers {
    pub(super) fn new(retention: Duration, in_progress_ttl: Duration) -> Self {
        Self {
            cache: Mutex::new(AnswerCache::default()),
            retention,
            in_progress_ttl,
        }
    }

    fn lock(&self) -> MutexGuard<'_, AnswerCache> {
        self.cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn begin(
        self: &Arc<Self>,
        tenant: String,
        key: String,
        fingerprint: [u8; 32],
    ) -> Begin {
        self.begin_at((tenant, key), fingerprint, Instant::now())
    }

    /// [`Self::begin`] at a given instant, so tests can move the clock.
    fn begin_at(self: &Arc<Self>, key: Key, fingerprint: [u8; 32], now: Instant) -> Begin {
        let mut cache = self.lock();
        cache.prune(now, self.retention);
        if let Some(entry) = cache.entries.get(&key) {
            // The same key with another request is a client bug, not a retry.
            if entry.fingerprint != fingerprint {
                return Begin::Refuse(Problem::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "idempotency-key-reused",
                    "Idempotency key reused",
                    "this idempotency key was used for a different request",
                ));
            }
            match &entry.answer {
                Some(answer) => return Begin::Replay(answer.replay()),
                None if now.saturating_duration_since(entry.stored_at) < self.in_progress_ttl => {
                    return Begin::Refuse(Problem::unavailable(
                        "in-progress",
                        "the first request with this idempotency key is still running",
                        1,
                    ))
                }
                // Hung or lost: this request runs instead; the old marker no longer owns the key.
                None => {}
            }
        }
        let attempt = cache.insert(key.clone(), fingerprint, now);
        Begin::Run(InProgress {
            answers: Arc::clone(self),
            key,
            attempt,
            answered: false,
        })
    }
}

/// The `in-progress` marker of one running request. Dropped without an answer stored (the
/// handler failed, was cancelled or panicked), it removes its entry, so a retry runs the
/// handler again instead of waiting for an answer that will never come.
pub(super) struct InProgress {
    answers: Arc<Answers>,
    key: Key,
    attempt: u64,
    answered: bool,
}

impl InProgress {
    /// Keeps the handler's answer for the key's retries. A 5xx or 429 is not an answer: the
    /// marker goes, and the retry does the work again.
    pub(super) fn complete(
        mut self,
        status: StatusCode,
        content_type: Option<&HeaderValue>,
        body: &Bytes,
    ) {
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return;
        }
        let mut cache = self.answers.lock();
        if let Some(entry) = cache.own(&self.key, self.attempt) {
            entry.answer = Some(Answer {
                status,
                content_type: content_type.cloned(),
                body: body.clone(),
            });
            self.answered = true;
        }
    }
}

impl Drop for InProgress {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let mut cache = self.answers.lock();
        if cache
            .own(&self.key, self.attempt)
            .is_some_and(|entry| entry.answer.is_none())
        {
            cache.entries.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer_key(i: usize) -> Key {
        ("party-a".into(), format!("token-{i}"))
    }

    fn answers() -> Arc<Answers> {
        Arc::new(Answers::new(Duration::from_secs(600), IN_PROGRESS_TTL))
    }

    fn run(begin: Begin) -> InProgress {
        match begin {
            Begin::Run(marker) => marker,
            Begin::Replay(_) => panic!("replayed, expected a run"),
            Begin::Refuse(p) => panic!("refused ({}), expected a run", p.slug()),
        }
    }

    fn refused(begin: Begin) -> String {
        match begin {
            Begin::Refuse(p) => p.slug().to_owned(),
            Begin::Replay(_) => panic!("replayed, expected a refusal"),
            Begin::Run(_) => panic!("ran, expected a refusal"),
        }
    }

    fn replayed(begin: Begin) -> Response {
        match begin {
            Begin::Replay(response) => response,
            Begin::Refuse(p) => panic!("refused ({}), expected a replay", p.slug()),
            Begin::Run(_) => panic!("ran, expected a replay"),
        }
    }

    #[test]
    fn answers_are_kept_for_the_retention_and_then_forgotten() {
        let retention = Duration::from_secs(600);
        let start = Instant::now();
        let mut cache = AnswerCache::default();
        for i in 0..15_000 {
            cache.insert(answer_key(i), [0; 32], start);
        }
        cache.insert(answer_key(15_000), [0; 32], start + Duration::from_secs(1));
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
            cache.insert(answer_key(20_000 + step as usize), [0; 32], now);
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
        cache.insert(answer_key(1), [0; 32], start);
        cache.entries.remove(&answer_key(1));
        let retried = start + Duration::from_secs(30);
        cache.insert(answer_key(1), [0; 32], retried);
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

    #[test]
    fn a_marker_dropped_without_an_answer_frees_its_key_at_once() {
        let answers = answers();
        let now = Instant::now();
        let first = run(answers.begin_at(answer_key(1), [1; 32], now));
        assert_eq!(
            refused(answers.begin_at(answer_key(1), [1; 32], now)),
            "in-progress"
        );
        drop(first); // the handler was cancelled or panicked
        let retry = run(answers.begin_at(answer_key(1), [1; 32], now));
        // A failure is not an answer either: the next retry runs too.
        retry.complete(StatusCode::SERVICE_UNAVAILABLE, None, &Bytes::new());
        let last = run(answers.begin_at(answer_key(1), [1; 32], now));
        last.complete(StatusCode::OK, None, &Bytes::from_static(b"done"));
        let replay = replayed(answers.begin_at(answer_key(1), [1; 32], now));
        assert_eq!(replay.status(), StatusCode::OK);
        assert_eq!(
            refused(answers.begin_at(answer_key(1), [2; 32], now)),
            "idempotency-key-reused"
        );
    }

    #[tokio::test]
    async fn a_request_that_never_finishes_blocks_its_key_for_the_ttl_only() {
        let answers = answers();
        let start = Instant::now();
        let hung = run(answers.begin_at(answer_key(1), [1; 32], start));
        let almost = start + IN_PROGRESS_TTL - Duration::from_millis(1);
        assert_eq!(
            refused(answers.begin_at(answer_key(1), [1; 32], almost)),
            "in-progress"
        );
        let retry = run(answers.begin_at(answer_key(1), [1; 32], start + IN_PROGRESS_TTL));
        // The hung request ends late: its answer and its drop leave the retry's entry alone.
        hung.complete(StatusCode::OK, None, &Bytes::from_static(b"late"));
        assert_eq!(
            refused(answers.begin_at(answer_key(1), [1; 32], start + IN_PROGRESS_TTL)),
            "in-progress"
        );
        retry.complete(StatusCode::OK, None, &Bytes::from_static(b"retry"));
        let replay = replayed(answers.begin_at(answer_key(1), [1; 32], start + IN_PROGRESS_TTL));
        let body = axum::body::to_bytes(replay.into_body(), 100).await.unwrap();
        assert_eq!(&body[..], b"retry");
    }
}
