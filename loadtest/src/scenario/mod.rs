//! Scenarios against the running services: the same arrival schedule in queue mode and in
//! direct mode, one after the other in one invocation, then the invariant checks.
//!
//! For each mode: open a fresh election through events-svc, prepare one voting token per vote
//! (bulk path or through members-fn and events-svc), switch the live queue flag as ops and
//! wait until ingest follows (probe votes on a separate election answer 202 in queue mode and
//! 201 in direct mode), warm up, fire the schedule open-loop while polling the tally, wait
//! until every accepted vote is recorded, then check: accepted = recorded, the tally equals
//! what was sent, every receipt says recorded, a replayed token is not counted twice, and the
//! closed election's final (sealed) results agree. The flag is restored at the end.
//!
//! One module per concern: [`probe`] (switching the flag and confirming it), [`poller`] (the
//! tally over time), [`firing`] (one mode's firing of a schedule and its summary),
//! [`invariants`] (the checks), and the scenarios [`votes`], [`stress`] and [`tokens`].

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::fire::RetryPolicy;
use crate::machine::CpuWatch;
use crate::target::Target;

pub mod firing;
pub mod invariants;
pub mod poller;
pub mod probe;
pub mod stress;
pub mod tokens;
pub mod votes;

pub use firing::{fire_votes, prepare, Fired, Firing, ModeRun, Prep, Timeline, WindowsBy};
pub use invariants::Invariants;
pub use probe::Probe;
pub use stress::{stress, StressMode, StressReport, StressSettings, StressStep};
pub use tokens::{tokens, TokensReport};
pub use votes::{votes, VotesReport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Queue,
    Direct,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Queue => "queue",
            Self::Direct => "direct",
        }
    }
    /// The status an accepted vote gets in this mode.
    pub fn accepted_status(self) -> u16 {
        match self {
            Self::Queue => 202,
            Self::Direct => 201,
        }
    }
}

/// Settings every scenario against the running services shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub modes: Vec<Mode>,
    /// Prepare tokens through members-fn dev login and events-svc instead of the bulk path.
    pub via_events: bool,
    /// Logins and token requests in flight at once while preparing through events-svc.
    pub events_concurrency: usize,
    pub policy: RetryPolicy,
    pub max_in_flight: usize,
    /// How long after the spike every accepted vote must be recorded.
    pub drain_timeout: Duration,
    /// Accepted tokens sent again afterwards (they must not count twice).
    pub replays: usize,
    /// At most this many receipts are looked up after the run.
    pub receipt_checks: usize,
    /// Close each election afterwards and check its final (sealed) results.
    pub close: bool,
    pub cpu: CpuWatch,
    pub quiet: bool,
}

impl Default for Common {
    fn default() -> Self {
        Self {
            modes: vec![Mode::Queue, Mode::Direct],
            via_events: false,
            events_concurrency: 8,
            policy: RetryPolicy::default(),
            max_in_flight: 4096,
            drain_timeout: Duration::from_secs(60),
            replays: 10,
            receipt_checks: 5000,
            close: true,
            cpu: CpuWatch::default(),
            quiet: false,
        }
    }
}

/// One invariant or validity check; a failed one makes the run exit non-zero.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

impl Check {
    pub fn new(name: &str, ok: bool, detail: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            ok,
            detail: detail.into(),
        }
    }
}

/// Progress on stderr (hidden when quiet or not a terminal).
#[derive(Debug, Clone, Copy)]
pub struct Ui {
    pub quiet: bool,
}

impl Ui {
    pub fn bar(&self, len: u64, message: impl Into<String>) -> ProgressBar {
        if self.quiet {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len);
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} {msg:<34} [{bar:30}] {pos}/{len} {per_sec:>10} {elapsed_precise}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.into());
        bar.enable_steady_tick(Duration::from_millis(100));
        bar
    }

    pub fn say(&self, line: impl AsRef<str>) {
        if !self.quiet {
            eprintln!("{}", line.as_ref());
        }
    }
}

/// Runs `body` with the queue flag restored afterwards, whatever happens.
pub async fn restoring_flag<T>(
    target: &Target,
    body: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let original = target.queue_mode().await?;
    let outcome = body.await;
    let restored = target.set_queue_mode(original.unwrap_or(true)).await;
    let value = outcome?;
    restored.context("restoring the queue flag")?;
    Ok(value)
}

/// Where reports go by default: `target/loadtest/<scenario>-<UTC timestamp>/`.
pub fn default_out(scenario: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR").unwrap_or_else(|_| "target".into());
    PathBuf::from(target).join("loadtest").join(format!(
        "{scenario}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%SZ")
    ))
}
