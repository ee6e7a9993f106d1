//! The mesh's Kubernetes side, on kube-rs:
//!
//! - [`source`]: the model from the API server (a watcher per kind), the
//!   same model the manifest directory gives;
//! - [`token_review`]: who a service account token belongs to (the CA's
//!   and xDS's authentication).
#![forbid(unsafe_code)]

pub mod source;
pub mod token_review;

pub use kube::Client;
