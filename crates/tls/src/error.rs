//! Errors of the TLS layer, each worded for the operator who reads it.

use mesh_core::Identity;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the CA returned an empty certificate chain")]
    EmptyChain,
    #[error("the CA returned a leaf without a root; a chain must end with the root certificate(s)")]
    MissingRoot,
    #[error("requested a certificate for {requested} but the CA issued one for {issued}")]
    IdentityMismatch { requested: Identity, issued: String },
    #[error("invalid certificate: {0}")]
    InvalidCertificate(String),
    #[error("invalid PEM in {what}: {reason}")]
    Pem { what: String, reason: String },
    #[error("TLS configuration error: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("generating a key or CSR failed: {0}")]
    Csr(#[from] rcgen::Error),
    #[error("the CA refused the certificate request for {identity}: {code:?}: {message}")]
    CaRefused {
        identity: Identity,
        code: tonic::Code,
        message: String,
    },
    #[error(
        "cannot reach the CA at {address}: {reason} (is istiod-lite running, and does the CA root match?)"
    )]
    CaUnreachable { address: String, reason: String },
    #[error("cannot read the CA authentication token from {path}: {source}")]
    Token {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// `reason` starts with the certificate's serial.
    #[error(
        "the CA issued {identity} a certificate that cannot be used (serial {reason}; it was \
         refused and the current one, if any, stays in use"
    )]
    Unusable {
        identity: Identity,
        why: Unusable,
        reason: String,
    },
    /// `reason` starts with the certificate's serial.
    #[error(
        "the CA issued {identity} a certificate that does not verify to the configured roots \
         (CA_ROOT_CA) (serial {reason}; it was refused and the current one, if any, stays in use"
    )]
    UntrustedChain { identity: Identity, reason: String },
    #[error("the certificate for {0} has expired and renewal has not succeeded yet")]
    Expired(Identity),
    #[error("certificate for {identity} unavailable: {reason}")]
    Unavailable { identity: Identity, reason: String },
    #[error("cannot read the CRL file {path} (CRL_PATH): {source}")]
    CrlFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bug: {0}")]
    Bug(String),
}

/// Why an issued certificate cannot be used now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unusable {
    Expired,
    NotYetValid,
}

impl Error {
    /// A short, stable name for what went wrong with a certificate request:
    /// the `outcome` label of `istio_workload_cert_requests_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Error::CaUnreachable { .. } | Error::Token { .. } => "ca_unreachable",
            Error::CaRefused { .. } => "ca_refused",
            Error::IdentityMismatch { .. } => "identity_mismatch",
            Error::UntrustedChain { .. } => "untrusted_chain",
            Error::Unusable {
                why: Unusable::Expired,
                ..
            } => "expired",
            Error::Unusable {
                why: Unusable::NotYetValid,
                ..
            } => "not_yet_valid",
            Error::EmptyChain
            | Error::MissingRoot
            | Error::InvalidCertificate(_)
            | Error::Pem { .. } => "malformed",
            _ => "other",
        }
    }
}
