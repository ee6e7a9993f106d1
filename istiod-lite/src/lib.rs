//! istiod-lite: the slim control plane.
//!
//! - [`ca`]: the certificate authority behind `IstioCertificateService`.
//! - [`model`]: the Kubernetes objects the mesh is made of;
//! - [`source`]: where they come from (a manifest directory today);
//! - [`translate`]: model → Istio's xDS resources (pure functions);
//! - [`xds`]: the delta ADS server that pushes them;
//! - [`status`]: the conditions objects should carry (written in a cluster);
//! - [`jwks`]: fetches the key sets RequestAuthentications name by URL;
//! - [`grpc`]: the TLS listener on 15012 that serves the CA and xDS;
//! - [`config`]: every setting, parsed before anything binds;
//! - [`app`]: wiring, used by `main.rs` and by in-process tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod ca;
pub mod config;
pub mod grpc;
pub mod jwks;
pub mod metrics;
pub mod status;

/// The model lives in its own crate, shared with the CNI node agent.
pub use mesh_model as model;
/// Where the model comes from: every source publishes whole [`model::Model`]
/// snapshots on a watch channel; the translation does not know which source
/// it is reading.
pub mod source {
    pub use mesh_model::manifests::{self, ManifestDir, ManifestError};
}
pub mod translate;
pub mod xds;
