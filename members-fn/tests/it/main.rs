//! members-fn's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`, with its OIDC provider).

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

mod login;
mod registry;
mod support;
