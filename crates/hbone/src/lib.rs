//! HBONE: one HTTP/2 CONNECT stream per user TCP connection, over a pooled
//! mutual-TLS connection to the peer's port 15008.
//!
//! - [`client`] dials one HBONE connection; [`pool`] shares them by
//!   [`pool::WorkloadKey`] with at most 100 streams each.
//! - [`server`] accepts TLS, speaks HTTP/2 and hands each CONNECT to a handler.
//! - [`stream`] is one tunnelled connection; [`copy`] moves bytes between it
//!   and a TCP socket with correct half-close.
//! - [`headers`] builds and reads `baggage`, `forwarded` and `traceparent`.
//!
//! **Architecture Invariant:** this crate knows nothing of workloads,
//! services or policy. Callers decide where to connect and what to allow; it
//! only moves authenticated bytes.
#![forbid(unsafe_code)]

pub mod client;
pub mod config;
pub mod copy;
pub mod error;
pub mod headers;
pub mod pool;
pub mod server;
pub mod stream;

pub use config::H2Config;
pub use error::Error;
pub use pool::{Pool, WorkloadKey};
pub use stream::H2Stream;

/// The port every HBONE server listens on.
pub const HBONE_PORT: u16 = 15008;
