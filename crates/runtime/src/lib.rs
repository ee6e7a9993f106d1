//! Process lifecycle shared by every binary: draining, readiness, signals and
//! log set-up.
#![forbid(unsafe_code)]

pub mod config;
pub mod drain;
pub mod logging;
pub mod readiness;
pub mod signal;
