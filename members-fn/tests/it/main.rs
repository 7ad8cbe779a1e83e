//! members-fn's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`, with its OIDC provider).

mod log_lines;
mod page_login;
mod login;
mod registry;
mod support;
