//! The harness's integration tests, one binary (against the local stack: `source
//! infra/local/env.sh`).

mod dev_keys;
mod oidc_proxy;
mod pages;
mod smoke;
mod support;
