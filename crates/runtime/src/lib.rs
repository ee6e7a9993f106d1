//! Process lifecycle shared by every binary: draining, readiness, signals,
//! log set-up, and the small HTTP endpoints operators probe (admin, stats on
//! 15020, readiness on 15021).
#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod drain;
pub mod endpoint;
pub mod logging;
pub mod readiness;
pub mod signal;
pub mod socket;
pub mod stats;

pub use prometheus_client;
