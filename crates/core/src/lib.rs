//! The mesh's domain vocabulary: who a workload is ([`Identity`]), where it is
//! ([`NetworkAddress`]), what the data plane knows about it ([`Workload`],
//! [`Service`]) and who may connect to it ([`Authorization`]).
//!
//! **Architecture Invariant:** this crate does no I/O and knows nothing of
//! tokio, sockets or TLS. It is where wire types become domain types (in
//! [`xds`] only), so that no code past it has to reason about protobuf
//! defaults.
#![forbid(unsafe_code)]

pub mod address;
pub mod authorization;
pub mod duration;
pub mod identity;
pub mod service;
pub mod wait;
pub mod waypoint;
pub mod workload;
pub mod xds;

pub use address::{IpNet, IpNetError, Network, NetworkAddress};
pub use authorization::{
    Action, Authorization, Clause, ConnectionInfo, Decision, DenyReason, Match, Rule, Scope,
    ServiceAccountMatch, StringMatch, dry_run_matches, evaluate,
};
pub use identity::{Identity, IdentityError, TrustDomain};
pub use service::{PortMapping, Service};
pub use waypoint::{GatewayAddress, GatewayDestination};
pub use workload::{TunnelProtocol, Workload, WorkloadTelemetry, WorkloadUid};
pub use xds::{Address, ConversionError};
