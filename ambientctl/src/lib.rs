//! ambientctl: the mesh's CLI, as a library so tests drive it directly.
//!
//! - [`cli`]: the commands and flags (clap);
//! - [`store`]: where objects are read and written: the local mesh's
//!   manifest directory, or ([`cluster`]) a Kubernetes cluster;
//! - [`local`]: the running local mesh as it publishes itself;
//! - [`apply`], [`demo`], [`install`], [`namespace`], [`precheck`], [`waypoint`],
//!   [`ztunnel_config`]: one module per command;
//! - [`table`]: istioctl-style column output.
#![forbid(unsafe_code)]

pub mod apply;
pub mod cli;
pub mod cluster;
pub mod demo;
pub mod install;
pub mod local;
pub mod namespace;
pub mod precheck;
pub mod store;
pub mod table;
pub mod waypoint;
pub mod ztunnel_config;
