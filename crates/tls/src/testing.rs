//! A throwaway CA for the unit tests of the verifiers and of revocation.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose,
    RevokedCertParams, SanType, SerialNumber,
};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

pub const GOOD: &str = "spiffe://cluster.local/ns/default/sa/sleep";

pub struct Root {
    pub issuer: Issuer<'static, KeyPair>,
    pub roots: Arc<RootCertStore>,
}

pub const ROOT_NAME: &str = "test root";

/// A self-signed root that signs certificates and CRLs.
pub fn root() -> Root {
    root_named(ROOT_NAME)
}

/// As [`root`], with another name (and always another key).
pub fn root_named(name: &str) -> Root {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params
        .distinguished_name
        .push(DnType::OrganizationName, name);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let cert = params.self_signed(&key).unwrap();
    let mut roots = RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    Root {
        issuer: Issuer::new(params, key),
        roots: Arc::new(roots),
    }
}

/// A leaf signed by `root` with exactly these SANs, for both ends of TLS
/// (as the mesh CA issues them).
pub fn leaf(root: &Root, sans: Vec<SanType>) -> CertificateDer<'static> {
    leaf_for(
        root,
        sans,
        vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
    )
}

/// A leaf signed by `root` with exactly these SANs and extended key usages.
pub fn leaf_for(
    root: &Root,
    sans: Vec<SanType>,
    usages: Vec<ExtendedKeyUsagePurpose>,
) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![]).unwrap();
    params.subject_alt_names = sans;
    params.extended_key_usages = usages;
    params.signed_by(&key, &root.issuer).unwrap().der().clone()
}

pub fn uri(s: &str) -> SanType {
    SanType::URI(s.try_into().unwrap())
}

/// A CRL from `root` revoking `certs` (PEM).
pub fn crl(root: &Root, certs: &[&CertificateDer<'_>]) -> String {
    let now = SystemTime::now();
    let revoked_certs = certs
        .iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
            RevokedCertParams {
                serial_number: SerialNumber::from_slice(cert.tbs_certificate.raw_serial()),
                revocation_time: now.into(),
                reason_code: None,
                invalidity_date: None,
            }
        })
        .collect();
    CertificateRevocationListParams {
        this_update: (now - Duration::from_secs(60)).into(),
        next_update: (now + Duration::from_secs(3600)).into(),
        crl_number: SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs,
        key_identifier_method: KeyIdMethod::Sha256,
    }
    .signed_by(&root.issuer)
    .unwrap()
    .pem()
    .unwrap()
}
