//! The one vocabulary every Ekklesia service speaks: configuration, telemetry, metrics,
//! usage counters, the audit log, problems (errors), database pools, voting tokens, receipts, service-to-service signing,
//! Pub/Sub clients and the vote message.

pub mod audit;
pub mod config;
pub mod cors;
pub mod db;
pub mod domain;
pub mod jwks;
pub mod metrics;
pub mod migration_policy;
pub mod openapi;
pub mod ops_view;
pub mod problem;
pub mod pubsub;
pub mod ratelimit;
pub mod receipt;
pub mod s2s;
pub mod service;
pub mod session;
pub mod telemetry;
pub mod token;
pub mod traces;
pub mod usage;
pub mod vote;
pub mod vote_keys;

pub use problem::Problem;
