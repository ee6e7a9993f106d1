//! istiod-lite: the slim control plane.
//!
//! - [`ca`]: the certificate authority behind `IstioCertificateService`.
//! - [`grpc`]: the TLS listener on 15012 that serves it (and, later, xDS).
//! - [`config`]: every setting, parsed before anything binds.
//! - [`app`]: wiring, used by `main.rs` and by in-process tests.
#![forbid(unsafe_code)]

pub mod app;
pub mod ca;
pub mod config;
pub mod grpc;
