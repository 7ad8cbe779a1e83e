//! ingest: the public vote path. A vote is verified (`routes::ballots`, its token by `tokens`), then published to
//! Pub/Sub by `publisher` (queue mode) or committed by `ballot_box` (direct mode). It also serves the elections
//! side's internal API (`routes::internal`) and receipt look-ups (`routes::receipts`).

pub mod ballot_box;
pub mod configuration;
pub mod definitions;
pub mod error;
pub mod ledger;
pub mod publisher;
pub mod queue_mode;
pub mod routes;
pub mod startup;
pub mod state;
pub mod tokens;
