//! worker: drains the vote subscription. Votes are committed in batches by `batch::commit`,
//! acked by `consumer` only after that commit, and closed elections are sealed by `seal`.

pub mod batch;
pub mod configuration;
pub mod consumer;
pub mod seal;
pub mod startup;
pub mod state;
pub mod triage;
