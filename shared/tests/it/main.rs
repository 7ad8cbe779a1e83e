//! shared's integration tests, one binary (against the local stack: `source infra/local/env.sh`).

mod audit;
mod foundation;
mod usage_report;
