//! The worker's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`). ingest's own behaviour is tested in ingest/tests/it.

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

mod array_literal;
mod blue_green;
mod crash;
mod integrity;
mod support;
mod vote_path;
