//! ztunnel: the per-node zero-trust tunnel.
//!
//! - [`config`]: every setting, from the environment, validated up front.
//! - [`state`]: the workloads this proxy knows about.
//! - [`proxy`]: the outbound listener (capture → HBONE) and the inbound HBONE
//!   server (→ application).
//! - [`inpod`]: in-pod mode: pods handed over by the node agent (ZDS),
//!   served from inside their network namespaces.
//! - [`socket`]: where sockets are created (ztunnel's namespace or a pod's).
//! - [`app`]: wiring and lifecycle.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod config;
pub mod inpod;
pub mod metrics;
pub mod proxy;
pub mod socket;
/// The delta-xDS client (in `mesh-xds`).
pub use mesh_xds::client as xds;
/// The state xDS feeds (shared with the waypoint, in `mesh-xds`).
pub use mesh_xds::state;
