//! The mesh's domain vocabulary: who a workload is ([`Identity`]), where it is
//! ([`NetworkAddress`]) and what the data plane knows about it ([`Workload`]).
//!
//! **Architecture Invariant:** this crate does no I/O and knows nothing of
//! tokio, sockets or TLS. It is where wire types become domain types, so that
//! no code past it has to reason about protobuf defaults.
#![forbid(unsafe_code)]

pub mod address;
pub mod duration;
pub mod identity;
pub mod workload;

pub use address::{Network, NetworkAddress};
pub use identity::{Identity, IdentityError, TrustDomain};
pub use workload::{TunnelProtocol, Workload, WorkloadUid};
