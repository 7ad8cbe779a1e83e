//! Ekklesia members-fn: login and membership.
//!
//! A person logs in at the identity provider (OIDC, authorization code with PKCE, the login
//! started and remembered by members-fn, `attempts`); members-fn verifies the result (`oidc`),
//! finds the person's membership in the registry (`registry`, keyed by the Icelandic national
//! id, `national_id`) and hands out a short-lived session token that events-svc verifies with
//! the keys at `/.well-known/jwks.json`.

pub mod attempts;
pub mod configuration;
pub mod error;
pub mod hand_back;
pub mod national_id;
pub mod oidc;
pub mod registry;
pub mod routes;
pub mod startup;
pub mod state;

pub use configuration::Settings;
pub use startup::Application;
