//! Ekklesia's load-test harness and demo client (the `loadtest` binary is a thin CLI over it).
//!
//! - [`target`]: the running services as a voter, an admin and the events side see them
//!   (election set-up, voting tokens through the bulk path or through events-svc, the queue
//!   flag, results, receipts), over [`http`], reading their metrics with [`prometheus`];
//! - [`schedule`] and [`fire`]: open-loop arrival schedules and the engine that sends them,
//!   measuring every request from its *scheduled* send time (no coordinated omission),
//!   honouring `Retry-After` with a bounded number of client retries;
//! - [`scenario`]: `meeting`, `burst`, `custom`, `stress` and `tokens` against the running
//!   services, each mode side by side, with the invariant checks;
//! - [`soak`]: a meeting-like pattern for half an hour (trickle, bursts, logins, results
//!   reads, both modes) with the checks after every burst, memory, CPU and database growth;
//! - [`drain`] and [`ceiling`]: the `drain` scenario on a fresh database and a fresh topic
//!   (end-to-end worker vs an ack-only consumer vs the batch writer alone vs raw SQL);
//! - [`report`] and [`chart`]: JSON, Markdown and SVG reports.

pub mod ceiling;
pub mod chart;
pub mod drain;
pub mod fire;
pub mod http;
pub mod journey;
pub mod keys;
pub mod machine;
pub mod ops;
pub mod prometheus;
pub mod report;
pub mod scenario;
pub mod schedule;
pub mod soak;
pub mod stats;
pub mod target;

/// The ballot options of every election the harness creates.
pub const OPTIONS: [&str; 3] = ["yes", "no", "abstain"];

/// The choice of vote number `i` (a fixed, uneven mix, so a tally mix-up shows).
pub fn choice_of(i: usize) -> usize {
    [0, 0, 1, 2, 0][i % 5]
}
