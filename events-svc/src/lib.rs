//! Ekklesia events-svc: elections, one anonymous voting token per member, results (turnout
//! before the seal, tally after).
//!
//! Admins create, open and close elections (`routes::elections`); every change reaches the
//! elections side over signed service-to-service calls (`elections_side`) before it is
//! committed here. Members get one voting token per election (`routes::tokens`), taken from the
//! election's token slots (`slots`). Callers are
//! identified by members-fn's session tokens (`auth`).

pub mod auth;
pub mod configuration;
pub mod elections_side;
pub mod error;
pub mod limits;
pub mod pages;
pub mod routes;
pub mod slots;
pub mod startup;
pub mod state;

pub use configuration::Settings;
pub use startup::Application;
