//! ingest's integration tests, one binary (against the local stack: `source infra/local/env.sh`).
//! The elections side they run on is `testkit::elections::Stack`.

mod bad_input;
mod direct_mode;
mod edge;
mod http;
mod internal_api;
mod receipts;
