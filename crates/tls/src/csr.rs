//! Keys and certificate signing requests, as Istio's workloads send them:
//! ECDSA P-256, empty subject, one URI SAN holding the SPIFFE identity.

use mesh_core::Identity;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, PKCS_ECDSA_P256_SHA256, SanType};

use crate::error::Error;

/// A fresh private key and the CSR that asks for `identity`. A new key is
/// generated for every request, so renewal also rotates the key.
#[derive(Debug)]
pub struct CsrAndKey {
    pub csr_pem: String,
    pub key_pem: String,
}

pub fn generate(identity: &Identity) -> Result<CsrAndKey, Error> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
    let csr = params.serialize_request(&key)?;
    Ok(CsrAndKey {
        csr_pem: csr.pem()?,
        key_pem: key.serialize_pem(),
    })
}
