//! Where a vote's token is verified (signature, claims, election), on a thread of its own
//! that checks together the tokens that queued while it was busy.
//!
//! Why: the Ed25519 signature is more than half of ingest's CPU per vote (BENCHMARKS.md,
//! "Where ingest's CPU goes per vote"), and checking signatures together costs about half as
//! much per signature from 16 on (`TokenVerifier::verify_many`). A burst is exactly when
//! votes wait together. Nothing waits for a batch to fill: a batch is what queued while the
//! last one ran, so a lone vote is checked at once (one hop to the thread, tens of
//! microseconds), and the request tasks keep parsing and publishing while the thread checks.
//! Deciding per request whether to batch cannot work on one core: a check made on the
//! request's task never overlaps another, so nothing would ever queue.

use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use prometheus::IntCounterVec;
use shared::token::{TokenError, TokenVerifier, VerifiedToken, MAX_BATCH};
use tokio::sync::oneshot;
use uuid::Uuid;

/// Tokens that may queue for the batch thread; more at once are checked on their own task.
const QUEUE: usize = 4096;

type Answer = Result<VerifiedToken, TokenError>;

struct Job {
    token: String,
    election_id: Uuid,
    answer: oneshot::Sender<Answer>,
}

pub struct Tokens {
    verifier: Arc<TokenVerifier>,
    queue: SyncSender<Job>,
    /// Tokens checked, by `how`: `together` (in a batch of two or more) or `alone`.
    checked: IntCounterVec,
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
            checked,
        };
        (tokens, batches)
    }

    /// Verifies `token` for a vote in `election_id`, now.
    pub async fn verify(&self, token: &str, election_id: Uuid) -> Answer {
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
        self.checked.with_label_values(&["alone"]).inc();
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
            let how = if jobs.len() == 1 { "alone" } else { "together" };
            self.checked
                .with_label_values(&[how])
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
        let tenant = TenantId::parse("party-a").unwrap();
        let signer = TokenSigner::generate("a-1", tenant.clone());
        let verifier = TokenVerifier::new().with_key("a-1", tenant, signer.verifying_key());
        let (tokens, batches) = Tokens::new(verifier, counter());
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
        assert_eq!(checked.with_label_values(&["together"]).get(), 10);
        assert_eq!(checked.with_label_values(&["alone"]).get(), 0);
    }

    #[tokio::test]
    async fn a_token_is_checked_on_its_own_task_when_the_batch_thread_is_gone() {
        let tenant = TenantId::parse("party-a").unwrap();
        let signer = TokenSigner::generate("a-1", tenant.clone());
        let verifier = TokenVerifier::new().with_key("a-1", tenant, signer.verifying_key());
        let (tokens, batches) = Tokens::new(verifier, counter());
        drop(batches);
        let election = Uuid::new_v4();
        let now = chrono::Utc::now();
        let (token, _) = signer.issue(election, now, now + Duration::hours(1));
        assert!(tokens.verify(&token, election).await.is_ok());
        assert_eq!(tokens.checked.with_label_values(&["alone"]).get(), 1);
    }
}
