//! istiod-lite's CA signing a client's CSR
//! (`CertificateAuthority::sign`, the body of `CreateCertificate`): the CSR
//! is parsed from PEM, its signature checked, and a leaf issued for the
//! identity the CA decided (never one the CSR asks for).
//!
//! Input: one mode byte, then either DER that the harness wraps in a
//! `CERTIFICATE REQUEST` PEM block (even mode byte: reaches the DER parser
//! quickly), or the PEM text itself (odd mode byte).
//!
//! Properties of an issued chain: it ends with the CA's root; its leaf
//! carries the CSR's public key bits, exactly one SAN (the decided
//! identity's URI) and is not a CA; its key is the CSR's key, algorithm
//! and curve included.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use base64::Engine;
use istiod_lite::ca::CertificateAuthority;
use libfuzzer_sys::fuzz_target;
use mesh_core::{Identity, TrustDomain};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;

struct Ca {
    authority: CertificateAuthority,
    /// Holds the CA's files for the life of the process.
    _dir: tempfile::TempDir,
}

fn ca() -> &'static Ca {
    static CA: OnceLock<Ca> = OnceLock::new();
    CA.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let authority = CertificateAuthority::load_or_generate(dir.path(), TrustDomain::default())
            .expect("a fresh CA");
        Ca {
            authority,
            _dir: dir,
        }
    })
}

fn wrap(der: &[u8]) -> String {
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = body
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
        .collect();
    format!(
        "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
        lines.join("\n")
    )
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let pem = if mode & 1 == 0 {
        wrap(rest)
    } else {
        String::from_utf8_lossy(rest).into_owned()
    };
    let ca = &ca().authority;
    let identity = Identity::new(TrustDomain::default(), "fuzz", "client").expect("identity");
    let Ok(chain) = ca.sign(&pem, &identity, Duration::from_secs(3600)) else {
        return;
    };
    assert_eq!(chain.last().map(String::as_str), Some(ca.root_pem()));
    let (_, leaf_pem) = x509_parser::pem::parse_x509_pem(chain[0].as_bytes()).expect("leaf PEM");
    let leaf = leaf_pem.parse_x509().expect("leaf DER");
    let sans = leaf
        .subject_alternative_name()
        .expect("one SAN extension")
        .expect("a SAN extension");
    assert_eq!(
        sans.value.general_names,
        [GeneralName::URI(&identity.to_string())],
        "the leaf names something else than the decided identity"
    );
    assert!(!leaf.is_ca(), "issued a CA certificate");
    // The CSR as signed: its public key is the leaf's.
    if let Ok((_, csr_pem)) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        && let Ok((_, csr)) = X509CertificationRequest::from_der(&csr_pem.contents)
    {
        let asked = &csr.certification_request_info.subject_pki;
        let issued = leaf.public_key();
        assert_eq!(
            issued.subject_public_key.data, asked.subject_public_key.data,
            "the leaf does not carry the CSR's key"
        );
        // The whole key, algorithm and curve included: the CA refuses a
        // CSR whose signature algorithm names another curve than its key
        // (docs/fuzzing.md F1), which rcgen would otherwise issue for.
        assert_eq!(issued.raw, asked.raw, "the leaf's key is not the CSR's");
    }
});
