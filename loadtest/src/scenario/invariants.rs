//! The checks after a mode's run, each a function that returns its own [`Check`]: the answers
//! match the mode, accepted = recorded, no tally while the election is open, one distinct
//! receipt per accepted vote, receipts say recorded, a replayed token is not counted twice, and
//! the closed election's final (sealed) results agree with what was sent.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use indicatif::ProgressBar;
use shared::domain::Results;
use tokio::time::Instant;
use uuid::Uuid;

use super::{Check, Common, Mode};
use crate::fire::{self, Answer, Votes};
use crate::target::Target;

/// One mode's election and how to reach it, for the checks.
pub struct Invariants<'a> {
    pub target: &'a Target,
    pub common: &'a Common,
    pub http: &'a reqwest::Client,
    pub mode: Mode,
    pub election: Uuid,
}

impl Invariants<'_> {
    /// The checks after a mode's run. `tokens` are the run's tokens by index.
    pub async fn check(&self, answers: &[Answer], tokens: &[String]) -> anyhow::Result<Vec<Check>> {
        let accepted: Vec<&Answer> = answers.iter().filter(|a| a.ok()).collect();
        let mut checks = vec![answers_match_mode(self.mode, &accepted)];
        let results = self.target.results(self.election).await?;
        let goal = accepted.len() as i64;
        checks.push(accepted_equals_recorded(
            &results,
            goal,
            self.common.drain_timeout,
        ));
        // The tally is checked against what was sent once the election is sealed (below);
        // while it is open nobody may see one.
        checks.push(no_tally_while_open(&results));
        let receipts: Vec<&str> = accepted.iter().filter_map(|a| a.kept.as_deref()).collect();
        checks.push(receipts_distinct(&receipts, accepted.len()));
        checks.push(self.receipts_recorded(&receipts).await);
        let replay: Vec<&Answer> = accepted.iter().copied().take(self.common.replays).collect();
        if !replay.is_empty() {
            checks.push(
                self.replays_not_counted(&replay, tokens, results.total, goal)
                    .await?,
            );
        }
        if self.common.close {
            checks.push(
                self.final_results_agree(goal, sent_tally(&accepted))
                    .await?,
            );
        }
        Ok(checks)
    }

    async fn receipts_recorded(&self, receipts: &[&str]) -> Check {
        let sample: Vec<&str> = receipts
            .iter()
            .copied()
            .take(self.common.receipt_checks)
            .collect();
        let statuses: Vec<anyhow::Result<(u16, String)>> =
            futures::stream::iter(sample.iter().map(|r| self.target.receipt(r)))
                .buffer_unordered(16)
                .collect()
                .await;
        let not_recorded = statuses
            .iter()
            .filter(|s| !matches!(s, Ok((200, status)) if status == "recorded"))
            .count();
        Check::new(
            "receipts say recorded",
            not_recorded == 0,
            format!(
                "{} of {} receipts looked up say recorded",
                sample.len() - not_recorded,
                sample.len()
            ),
        )
    }

    /// Replays: the same tokens again, with fresh Idempotency-Keys (not a client retry): each
    /// is a submission of its own, refused at once in direct mode, rejected by the worker in
    /// queue mode under its own receipt. `total_before` is the tally's total before them.
    async fn replays_not_counted(
        &self,
        replay: &[&Answer],
        tokens: &[String],
        total_before: i64,
        goal: i64,
    ) -> anyhow::Result<Check> {
        let mode = self.mode;
        let rejected_before = self.target.worker_votes("token_already_used").await;
        let again = self.send_again(replay, tokens).await;
        let (expect, what) = match mode {
            Mode::Queue => (202, "202 with a receipt of their own"),
            Mode::Direct => (409, "409 token already used"),
        };
        let as_expected = again
            .iter()
            .filter(|b| {
                b.status == expect
                    && (mode == Mode::Direct
                        || (b.kept.is_some()
                            && b.kept.as_deref() != replay[b.index].kept.as_deref()))
            })
            .count();
        if mode == Mode::Queue {
            self.wait_for_rejections(rejected_before, as_expected).await;
        }
        let after = self.target.results(self.election).await?;
        let rejected = self.replays_rejected(&again).await;
        let receipts_ok = mode == Mode::Direct || rejected == replay.len();
        Ok(Check::new(
            "no token counted twice",
            after.total == goal && as_expected == replay.len() && receipts_ok,
            format!(
                "{} accepted tokens sent again: {as_expected} answered {what}{}; ballots {} → {}",
                replay.len(),
                if mode == Mode::Queue {
                    format!(", {rejected} of their receipts say rejected")
                } else {
                    String::new()
                },
                total_before,
                after.total
            ),
        ))
    }

    /// Sends the tokens of `replay` again, all at once.
    async fn send_again(&self, replay: &[&Answer], tokens: &[String]) -> Vec<Answer> {
        let shot = Arc::new(Votes::new(
            &self.target.ingest_url,
            self.election,
            replay.iter().map(|a| tokens[a.index].clone()).collect(),
        ));
        fire::fire(
            self.http,
            shot,
            &vec![Duration::ZERO; replay.len()],
            &self.common.policy,
            self.common.max_in_flight,
            Instant::now(),
            &ProgressBar::hidden(),
        )
        .await
    }

    /// In queue mode the worker must see and reject the replays before the tally means
    /// anything; its counter says when (without it, wait a little).
    async fn wait_for_rejections(&self, rejected_before: Option<f64>, replays: usize) {
        let Some(before) = rejected_before else {
            tokio::time::sleep(Duration::from_secs(3)).await;
            return;
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            let now = self
                .target
                .worker_votes("token_already_used")
                .await
                .unwrap_or(before);
            if now - before >= replays as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How many replays' own receipts say they were not counted (queue mode).
    async fn replays_rejected(&self, again: &[Answer]) -> usize {
        let mut rejected = 0;
        for b in again {
            if let (Mode::Queue, Some(receipt)) = (self.mode, b.kept.as_deref()) {
                if matches!(self.target.receipt(receipt).await, Ok((200, s)) if s == "rejected") {
                    rejected += 1;
                }
            }
        }
        rejected
    }

    /// Closes the election and waits (up to a minute) for its final, sealed results.
    async fn final_results_agree(
        &self,
        goal: i64,
        sent_tally: BTreeMap<String, i64>,
    ) -> anyhow::Result<Check> {
        self.target.close_election(self.election).await?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let final_results = loop {
            let r = self.target.results_via_events(self.election).await?;
            if r.is_final || Instant::now() > deadline {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        Ok(Check::new(
            "final results after the close agree",
            final_results.is_final
                && final_results.total == goal
                && final_results.tally == sent_tally,
            format!(
                "final: {}, {} ballots, tally {:?}",
                final_results.is_final, final_results.total, final_results.tally
            ),
        ))
    }
}

fn answers_match_mode(mode: Mode, accepted: &[&Answer]) -> Check {
    let expected = mode.accepted_status();
    let wrong_mode = accepted.iter().filter(|a| a.status != expected).count();
    Check::new(
        "answers match the mode",
        wrong_mode == 0,
        format!(
            "{} accepted votes answered {expected} ({wrong_mode} answered otherwise)",
            accepted.len() - wrong_mode
        ),
    )
}

fn accepted_equals_recorded(results: &Results, goal: i64, drain_timeout: Duration) -> Check {
    Check::new(
        "accepted = recorded",
        results.total == goal,
        format!(
            "{} accepted, {} ballots recorded (after waiting up to {} s)",
            goal,
            results.total,
            drain_timeout.as_secs()
        ),
    )
}

fn no_tally_while_open(results: &Results) -> Check {
    Check::new(
        "no tally while the election is open",
        results.tally.is_empty() && !results.is_final,
        format!("tally {:?}, final {}", results.tally, results.is_final),
    )
}

fn receipts_distinct(receipts: &[&str], accepted: usize) -> Check {
    let distinct: HashSet<&str> = receipts.iter().copied().collect();
    Check::new(
        "one receipt per accepted vote, all distinct",
        receipts.len() == accepted && distinct.len() == receipts.len(),
        format!(
            "{} receipts, {} distinct, {} accepted",
            receipts.len(),
            distinct.len(),
            accepted
        ),
    )
}

/// The tally the accepted votes should make, every option included.
fn sent_tally(accepted: &[&Answer]) -> BTreeMap<String, i64> {
    let mut sent: BTreeMap<String, i64> =
        crate::OPTIONS.iter().map(|o| (o.to_string(), 0)).collect();
    for a in accepted {
        *sent
            .entry(crate::OPTIONS[crate::choice_of(a.index)].to_owned())
            .or_default() += 1;
    }
    sent
}
