//! Where a vote's token is verified (signature, claims, election): on the request's own task
//! while votes come one by one, in batches on a thread of its own while a burst is on.
//!
//! Why: the Ed25519 signature is more than half of ingest's CPU per vote (BENCHMARKS.md,
//! "Where ingest's CPU goes per vote"), and checking signatures together costs about half as
//! much per signature from 16 on (`TokenVerifier::verify_many`). A burst is exactly when
//! votes wait together. But the hop to another thread costs two wake-ups (about 80 µs of CPU
//! and a millisecond or two of p99 per vote at the meeting rate), so a vote takes it only when
//! more than `BATCH_ABOVE` votes are in flight at this instance. Counting votes in flight, not
//! checks, is what works on one core too: a check made on the request's task never overlaps
//! another, but a burst's votes pile up waiting for their publish. Nothing waits for a batch to
//! fill: a batch is what queued while the last one ran.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use prometheus::IntCounterVec;
use shared::token::{TokenError, TokenVerifier, VerifiedToken, MAX_BATCH};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Tokens that may queue for the batch thread; more at once are checked on their own task.
const QUEUE: usize = 4096;
/// Votes in flight above which tokens go to the batch thread. At the meeting rate (300/s)
/// one or two are in flight; in a burst, hundreds.
pub const BATCH_ABOVE: usize = 8;

type Answer = Result<VerifiedToken, TokenError>;

struct Job {
    token: String,
    election_id: Uuid,
    answer: oneshot::Sender<Answer>,
}

pub struct Tokens {
    verifier: Arc<TokenVerifier>,
    queue: SyncSender<Job>,
    /// Votes being handled at this instance (`vote_started`).
    in_flight: AtomicUsize,
    /// Tokens checked, by `how`: `on_request` (on the request's task) or `in_batch`.
    checked: IntCounterVec,
}

/// One vote in flight, from the handler's start to its answer.
pub struct VoteInFlight<'a>(&'a AtomicUsize);

impl Drop for VoteInFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The batch thread's side: what has queued, checked together.
pub struct Batches {
    verifier: Arc<TokenVerifier>,
    queue: Receiver<Job>,
    checked: IntCounterVec,
}

impl Tokens {
    /// Starts the batch thread; it ends when `Tokens` is dropped.
    pub fn start(verifier: TokenVerifier, checked: IntCounterVec) -> std::io::Result<Self> {
        let (tokens, batches) = Self::new(verifier, checked);
        std::thread::Builder::new()
            .name("token-batches".into())
            .spawn(move || batches.run())?;
        Ok(tokens)
    }

    /// `Tokens` and its batch loop, not started (tests start it when they choose).
    pub fn new(verifier: TokenVerifier, checked: IntCounterVec) -> (Self, Batches) {
        let verifier = Arc::new(verifier);
        let (queue, receiver) = mpsc::sync_channel(QUEUE);
        let batches = Batches {
            verifier: verifier.clone(),
            queue: receiver,
            checked: checked.clone(),
        };
        let tokens = Self {
            verifier,
            queue,
            in_flight: AtomicUsize::new(0),
            checked,
        };
        (tokens, batches)
    }

    /// Counts a vote in flight until the guard is dropped: held by the vote handler for the
    /// whole of a vote, so that `verify` knows whether a burst is on.
    pub fn vote_started(&self) -> VoteInFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        VoteInFlight(&self.in_flight)
    }

    /// Verifies `token` for a vote in `election_id`, now.
    pub async fn verify(&self, token: &str, election_id: Uuid) -> Answer {
        if self.in_flight.load(Ordering::Relaxed) <= BATCH_ABOVE {
            return self.verify_here(token, election_id);
        }
        match self.enqueue(token, election_id) {
            Some(answer) => match answer.await {
                Ok(answer) => answer,
                // The batch thread is gone (it cannot panic on a token, but no vote may
                // depend on it): check it here.
                Err(_) => self.verify_here(token, election_id),
            },
            // More than `QUEUE` tokens waiting: this one is checked on its own task.
            None => self.verify_here(token, election_id),
        }
    }

    fn verify_here(&self, token: &str, election_id: Uuid) -> Answer {
        self.checked.with_label_values(&["on_request"]).inc();
        self.verifier.verify(token, election_id, chrono::Utc::now())
    }

    /// Queues the token for the batch thread; `None` when the queue is full or gone.
    fn enqueue(&self, token: &str, election_id: Uuid) -> Option<oneshot::Receiver<Answer>> {
        let (answer, receiver) = oneshot::channel();
        let job = Job {
            token: token.to_owned(),
            election_id,
            answer,
        };
        match self.queue.try_send(job) {
            Ok(()) => Some(receiver),
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => None,
        }
    }
}

impl Batches {
    /// Checks what has queued, in batches of up to `MAX_BATCH`, until every `Tokens` is gone.
    pub fn run(self) {
        while let Ok(first) = self.queue.recv() {
            let mut jobs = vec![first];
            while jobs.len() < MAX_BATCH {
                match self.queue.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
            let answers = {
                let tokens: Vec<(&str, Uuid)> = jobs
                    .iter()
                    .map(|job| (job.token.as_str(), job.election_id))
                    .collect();
                self.verifier.verify_many(&tokens, chrono::Utc::now())
            };
            self.checked
                .with_label_values(&["in_batch"])
                .inc_by(jobs.len() as u64);
            for (job, answer) in jobs.into_iter().zip(answers) {
                // Its request may be gone (client left, timeout): nothing to answer.
                let _ = job.answer.send(answer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;
    use shared::domain::TenantId;
    use shared::token::TokenSigner;

    fn counter() -> IntCounterVec {
        shared::metrics::counter_vec("tokens_checked_total", "test", &["how"])
    }

    #[tokio::test]
    async fn tokens_that_queued_together_are_checked_in_one_batch_and_each_gets_its_answer() {
        let (signer, tokens, batches) = signer_and_tokens();
        let election = Uuid::new_v4();
        let now = chrono::Utc::now();
        let mut queued = Vec::new();
        for i in 0..10 {
            let (mut token, _) = signer.issue(election, now, now + Duration::hours(1));
            if i == 4 {
                // A forged signature among good ones: the batch fails, each is checked alone.
                token.replace_range(token.len() - 3.., "AAA");
            }
            let for_election = if i == 7 { Uuid::new_v4() } else { election };
            queued.push(tokens.enqueue(&token, for_election).unwrap());
        }
        let checked = tokens.checked.clone();
        let thread = std::thread::spawn(move || batches.run());
        let mut answers = Vec::new();
        for answer in queued {
            answers.push(answer.await.unwrap());
        }
        drop(tokens);
        thread.join().unwrap();

        assert_eq!(answers[4].as_ref().err(), Some(&TokenError::BadSignature));
        assert_eq!(answers[7].as_ref().err(), Some(&TokenError::WrongElection));
        assert_eq!(answers.iter().filter(|a| a.is_ok()).count(), 8);
        assert_eq!(checked.with_label_values(&["in_batch"]).get(), 10);
        assert_eq!(checked.with_label_values(&["on_request"]).get(), 0);
    }

    fn signer_and_tokens() -> (TokenSigner, Tokens, Batches) {
        let tenant = TenantId::parse("party-a").unwrap();
        let signer = TokenSigner::generate("a-1", tenant.clone());
        let verifier = TokenVerifier::new().with_key("a-1", tenant, signer.verifying_key());
        let (tokens, batches) = Tokens::new(verifier, counter());
        (signer, tokens, batches)
    }

    #[tokio::test]
    async fn a_vote_among_few_is_checked_on_its_request_and_one_in_a_burst_in_a_batch() {
        let (signer, tokens, batches) = signer_and_tokens();
        let election = Uuid::new_v4();
        let now = chrono::Utc::now();
        let (token, _) = signer.issue(election, now, now + Duration::hours(1));
        // Few votes in flight: answered with the batch thread not running at all.
        let few: Vec<_> = (0..BATCH_ABOVE).map(|_| tokens.vote_started()).collect();
        assert!(tokens.verify(&token, election).await.is_ok());
        assert_eq!(tokens.checked.with_label_values(&["on_request"]).get(), 1);
        // One more in flight: a burst, so the token waits for the batch thread.
        let one_more = tokens.vote_started();
        let thread = {
            let waiting = tokens.verify(&token, election);
            tokio::pin!(waiting);
            assert!(
                tokio::time::timeout(std::time::Duration::from_millis(100), &mut waiting)
                    .await
                    .is_err(),
                "answered without the batch thread"
            );
            let thread = std::thread::spawn(move || batches.run());
            assert!(waiting.await.is_ok());
            thread
        };
        assert_eq!(tokens.checked.with_label_values(&["in_batch"]).get(), 1);
        drop((few, one_more));
        drop(tokens);
        thread.join().unwrap();
    }

    #[tokio::test]
    async fn a_token_is_checked_on_its_own_task_when_the_batch_thread_is_gone() {
        let (signer, tokens, batches) = signer_and_tokens();
        drop(batches);
        let election = Uuid::new_v4();
        let now = chrono::Utc::now();
        let (token, _) = signer.issue(election, now, now + Duration::hours(1));
        let _burst: Vec<_> = (0..=BATCH_ABOVE).map(|_| tokens.vote_started()).collect();
        assert!(tokens.verify(&token, election).await.is_ok());
        assert_eq!(tokens.checked.with_label_values(&["on_request"]).get(), 1);
    }
}
