//! Waiting for a condition instead of sleeping: poll it until it holds, with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`eventually`] polls.
pub const POLL: Duration = Duration::from_millis(100);

/// What a condition may return: `bool`, `Option<T>` (holds when `Some`) or `Result<T, E>`
/// (holds when `Ok`; the last `Err` says how far it got when time ran out).
pub trait Condition {
    type Value;
    fn holds(self) -> Result<Self::Value, String>;
}

impl Condition for bool {
    type Value = ();
    fn holds(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Condition for Option<T> {
    type Value = T;
    fn holds(self) -> Result<T, String> {
        self.ok_or_else(|| "none yet".into())
    }
}

impl<T, E: std::fmt::Display> Condition for Result<T, E> {
    type Value = T;
    fn holds(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// The condition did not hold within the time given.
#[derive(Debug)]
pub struct TimedOut {
    pub within: Duration,
    /// What the condition said the last time it was polled.
    pub last: String,
}

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "not within {:?} (last: {})", self.within, self.last)
    }
}

impl std::error::Error for TimedOut {}

/// Polls `condition` every 100 ms until it holds; its value, or [`TimedOut`] after `within`.
///
/// ```ignore
/// eventually(Duration::from_secs(30), || async { stack.ballot_count(e).await == 10 })
///     .await
///     .expect("every vote recorded");
/// ```
pub async fn eventually<C, F>(
    within: Duration,
    condition: C,
) -> Result<<F::Output as Condition>::Value, TimedOut>
where
    C: FnMut() -> F,
    F: Future,
    F::Output: Condition,
{
    eventually_every(within, POLL, condition).await
}

/// [`eventually`], polling every `every` (for a moment a test must not miss).
pub async fn eventually_every<C, F>(
    within: Duration,
    every: Duration,
    mut condition: C,
) -> Result<<F::Output as Condition>::Value, TimedOut>
where
    C: FnMut() -> F,
    F: Future,
    F::Output: Condition,
{
    let deadline = Instant::now() + within;
    loop {
        let last = match condition().await.holds() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(TimedOut { within, last });
        }
        // The poll interval is the only pause: it never decides a test's outcome.
        tokio::time::sleep(every).await;
    }
}
