//! The waypoint: an L7 proxy for the Services and workloads bound to one
//! waypoint Gateway (`istio-waypoint`). HBONE in on 15008, L7 policy and
//! Gateway API routing, HBONE out with its own identity.
//!
//! - [`config`]: environment → [`config::Config`];
//! - [`xds`], [`bindings`]: the configuration istiod-lite pushes, compiled;
//! - [`server`]: the HBONE listener; [`target`] resolves the original
//!   destination; [`sniff`] decides HTTP or TCP;
//! - [`http`], [`tcp`]: the two handlers; [`route`] and [`policy`] decide,
//!   after [`jwt`] has verified any token (RequestAuthentication);
//!   [`forward`] connects upstream;
//! - [`metrics`]: Istio's request metrics and the access log; [`trace`]:
//!   spans over OTLP; [`admin`]: `/config_dump`, `/logging`,
//!   `/quitquitquit`.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod bindings;
pub mod config;
pub mod forward;
pub mod http;
pub mod jwt;
pub mod metrics;
pub mod policy;
pub mod route;
pub mod server;
pub mod sniff;
pub mod target;
pub mod tcp;
pub mod trace;
pub mod xds;
