//! The worker's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`). ingest's own behaviour is tested in ingest/tests/it.

mod array_literal;
mod blue_green;
mod crash;
mod integrity;
mod support;
mod vote_path;
