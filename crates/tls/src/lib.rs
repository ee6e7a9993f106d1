//! TLS for the mesh, on one crypto stack (rustls with ring).
//!
//! - [`provider`]: the restricted crypto provider (TLS 1.3, AES-GCM only).
//! - [`certificate`]: a workload's certificate chain and key, and the rustls
//!   configs built from it for HBONE.
//! - [`verifier`]: SPIFFE-aware certificate verifiers for both ends of HBONE.
//! - [`csr`]: key and CSR generation.
//! - [`caclient`] and [`control`]: talking to istiod's `IstioCertificateService`.
//! - [`manager`]: one certificate per identity, fetched on demand and renewed.
//! - [`revocation`]: the CRLs in force, checked in handshakes and against
//!   open connections.
//!
//! **Architecture Invariant:** no other crate builds a rustls config for the
//! data plane; they ask a [`WorkloadCertificate`] for one, so the protocol
//! versions, suites, ALPN and verifiers cannot drift between callers.
#![forbid(unsafe_code)]

pub mod caclient;
pub mod certificate;
pub mod clock;
pub mod control;
pub mod csr;
pub mod error;
pub mod manager;
pub mod provider;
pub mod revocation;
#[cfg(test)]
mod testing;
pub mod verifier;

pub use caclient::{AuthSource, CaClient, CertificateSource};
pub use certificate::WorkloadCertificate;
pub use error::Error;
pub use manager::{SecretManager, SecretManagerConfig};
pub use revocation::Revocation;

/// The only application protocol HBONE speaks.
pub const ALPN_H2: &[u8] = b"h2";
