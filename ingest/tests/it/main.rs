//! ingest's integration tests, one binary (against the local stack: `source infra/local/env.sh`).
//! The elections side they run on is `testkit::elections::Stack`.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

mod bad_input;
mod direct_mode;
mod edge;
mod http;
mod internal_api;
mod receipts;
