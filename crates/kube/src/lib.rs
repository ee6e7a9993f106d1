//! The mesh's Kubernetes side, on kube-rs:
//!
//! - [`source`]: the model from the API server (a watcher per kind), the
//!   same model the manifest directory gives.
#![forbid(unsafe_code)]

pub mod source;

pub use kube::Client;
