//! The mesh's Kubernetes side, on kube-rs:
//!
//! - [`ca_secret`]: the self-signed root kept in Secret istio-ca-secret;
//! - [`crds`]: the security.istio.io CRDs, generated from the model's types;
//! - [`deploy`]: the install manifests of `deploy/`, built in and rendered;
//! - [`source`]: the model from the API server (a watcher per kind), the
//!   same model the manifest directory gives;
//! - [`status`]: conditions written back (ZtunnelAccepted, WaypointAccepted,
//!   istio.io/WaypointBound);
//! - [`token_review`]: who a service account token belongs to (the CA's
//!   and xDS's authentication);
//! - [`waypoint`]: the waypoint controller (ServiceAccount, Deployment,
//!   Service per waypoint Gateway, and the Gateway's status).
#![forbid(unsafe_code)]

pub mod ca_secret;
pub mod crds;
pub mod deploy;
pub mod readiness;
pub mod source;
pub mod status;
pub mod token_review;
pub mod waypoint;

pub use kube::Client;
