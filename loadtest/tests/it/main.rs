//! The harness's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`).

#![allow(
    clippy::too_many_lines,
    reason = "a scenario test reads top to bottom: its steps are the story it tells"
)]

mod dev_keys;
mod oidc_proxy;
mod pages;
mod smoke;
mod support;
