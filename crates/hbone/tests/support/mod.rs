//! Helpers of the integration tests of this crate.

pub mod wire;
