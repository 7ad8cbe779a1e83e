//! events-svc's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`), each on a whole system in this process (`support::World`).

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

mod access;
mod audit_usage;
mod journey;
mod secrecy;
mod support;
mod token_slots;
