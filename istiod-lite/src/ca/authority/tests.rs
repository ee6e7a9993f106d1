use std::os::unix::fs::PermissionsExt;

use super::*;

fn td() -> TrustDomain {
    TrustDomain::default()
}

fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

#[test]
fn generates_once_then_reloads_the_same_root() {
    let dir = tempfile::tempdir().unwrap();
    let a = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    let b = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    assert_eq!(a.root_pem(), b.root_pem());
    let mode = fs::metadata(dir.path().join("ca").join(CA_KEY))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
}

#[test]
fn signed_chain_is_leaf_then_root_with_the_decided_identity() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    let csr = mesh_tls::csr::generate(&id("asked-for")).unwrap();
    // The CA puts the identity it decided on, not the one in the CSR.
    let chain = ca
        .sign(&csr.csr_pem, &id("decided"), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(chain.len(), 2);
    assert_eq!(chain[1], ca.root_pem());
    // The chain is accepted by the workload side only for the decided identity.
    let cert = mesh_tls::WorkloadCertificate::from_pem_chain(&id("decided"), &csr.key_pem, &chain)
        .unwrap();
    let v = cert.validity();
    let life = v.not_after.duration_since(v.not_before).unwrap();
    assert!(
        life >= Duration::from_secs(3600)
            && life <= Duration::from_secs(3600) + BACKDATE + Duration::from_secs(2)
    );
    assert!(
        mesh_tls::WorkloadCertificate::from_pem_chain(&id("asked-for"), &csr.key_pem, &chain)
            .is_err()
    );
}

#[test]
fn garbage_csr_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    let err = ca
        .sign("not a csr", &id("a"), Duration::from_secs(60))
        .unwrap_err();
    assert!(matches!(err, CaError::BadCsr(_)), "{err}");
}

/// docs/fuzzing.md F1: a CSR whose signature algorithm names another curve
/// than its key (openssl's default SHA-256 over a P-384 key) would be
/// issued a certificate for the wrong curve; it is refused instead.
#[test]
fn a_csr_whose_key_and_signature_disagree_is_refused() {
    use base64::Engine;
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    // The seeds start with the fuzz target's mode byte, then the DER.
    let pem = |seed: &[u8]| {
        let der = &seed[1..];
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            lines.join("\n")
        )
    };
    for (what, der) in [
        (
            "P-384 key, SHA-256",
            &include_bytes!("../../../../fuzz/seeds/ca_csr/ec-p384.der")[..],
        ),
        (
            "P-256 key, SHA-384",
            &include_bytes!("../../../../fuzz/seeds/ca_csr/ec-p256-sha384.der")[..],
        ),
    ] {
        let err = ca
            .sign(&pem(der), &id("a"), Duration::from_secs(60))
            .expect_err(what);
        assert!(
            matches!(&err, CaError::BadCsr(m) if m.contains("sign the CSR with the hash of its curve")),
            "{what}: {err}"
        );
    }
    // The well-formed one from the same seeds is still signed.
    let good = include_bytes!("../../../../fuzz/seeds/ca_csr/ec-p256.der");
    ca.sign(&pem(good), &id("a"), Duration::from_secs(60))
        .expect("a P-256 key signed with SHA-256");
}

/// Writes an operator-style plug-in directory: a root, an intermediate signed
/// by it that becomes the mesh CA, and the chain.
fn plug_in_dir(key_mode: u32) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "operator root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = Issuer::new(root_params, root_key);

    let int_key = KeyPair::generate().unwrap();
    let mut int_params = CertificateParams::default();
    int_params
        .distinguished_name
        .push(DnType::CommonName, "mesh intermediate");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let int = int_params.signed_by(&int_key, &root_issuer).unwrap();

    fs::write(dir.path().join(CA_CERT), int.pem()).unwrap();
    fs::write(dir.path().join(ROOT_CERT), root.pem()).unwrap();
    fs::write(
        dir.path().join(CERT_CHAIN),
        format!("{}{}", int.pem(), root.pem()),
    )
    .unwrap();
    let key_path = dir.path().join(CA_KEY);
    fs::write(&key_path, int_key.serialize_pem()).unwrap();
    fs::set_permissions(&key_path, fs::Permissions::from_mode(key_mode)).unwrap();
    dir
}

#[test]
fn plugged_in_intermediate_signs_with_full_chain() {
    let dir = plug_in_dir(0o600);
    let ca = CertificateAuthority::from_dir(dir.path(), td()).unwrap();
    let csr = mesh_tls::csr::generate(&id("a")).unwrap();
    let chain = ca
        .sign(&csr.csr_pem, &id("a"), Duration::from_secs(60))
        .unwrap();
    // leaf, intermediate, root: the root is not repeated from cert-chain.pem.
    assert_eq!(chain.len(), 3);
    assert_eq!(chain[2], ca.root_pem());
    mesh_tls::WorkloadCertificate::from_pem_chain(&id("a"), &csr.key_pem, &chain).unwrap();
}

#[test]
fn plugged_in_key_with_loose_permissions_is_refused() {
    let dir = plug_in_dir(0o644);
    let err = CertificateAuthority::from_dir(dir.path(), td()).unwrap_err();
    assert!(
        matches!(err, CaError::LooseKeyPermissions { mode: 0o644, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("ca-key.pem") && msg.contains("chmod 600"),
        "{msg}"
    );
}

#[test]
fn incomplete_or_mismatched_plug_in_is_refused() {
    let dir = plug_in_dir(0o600);
    fs::remove_file(dir.path().join(CERT_CHAIN)).unwrap();
    let err = CertificateAuthority::from_dir(dir.path(), td()).unwrap_err();
    assert!(
        matches!(
            err,
            CaError::Incomplete {
                missing: CERT_CHAIN,
                ..
            }
        ),
        "{err}"
    );

    let dir = plug_in_dir(0o600);
    let other = KeyPair::generate().unwrap();
    let key_path = dir.path().join(CA_KEY);
    fs::write(&key_path, other.serialize_pem()).unwrap();
    let err = CertificateAuthority::from_dir(dir.path(), td()).unwrap_err();
    assert!(matches!(err, CaError::KeyMismatch { .. }), "{err}");
}

#[test]
fn a_crl_revokes_the_serial_printed_for_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CertificateAuthority::load_or_generate(dir.path(), td()).unwrap();
    let csr = mesh_tls::csr::generate(&id("a")).unwrap();
    let chain = ca
        .sign(&csr.csr_pem, &id("a"), Duration::from_secs(3600))
        .unwrap();
    let cert =
        mesh_tls::WorkloadCertificate::from_pem_chain(&id("a"), &csr.key_pem, &chain).unwrap();
    // As the admin dump prints it: colon-separated hex.
    let serial = cert.validity().serial.clone();
    assert!(serial.contains(':'), "{serial}");

    let pem = ca
        .revocation_list(std::slice::from_ref(&serial), Duration::from_secs(3600))
        .unwrap();
    let set = mesh_tls::revocation::CrlSet::from_pem(pem.as_bytes(), "the CRL").unwrap();
    assert_eq!(set.len(), 1);
    let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
    use x509_parser::prelude::FromDer;
    let (_, crl) =
        x509_parser::revocation_list::CertificateRevocationList::from_der(&der.contents).unwrap();
    let listed: Vec<String> = crl
        .iter_revoked_certificates()
        .map(|r| r.raw_serial_as_string())
        .collect();
    assert_eq!(listed, vec![serial.clone()]);

    // Without colons, the same; an empty list is a valid CRL too.
    ca.revocation_list(&[serial.replace(':', "")], Duration::from_secs(60))
        .unwrap();
    ca.revocation_list(&[], Duration::from_secs(60)).unwrap();
    for bad in ["", "xyz", "abc", "0x12", "+1", "aé0", "a\u{e9}"] {
        let err = ca
            .revocation_list(&[bad.to_string()], Duration::from_secs(60))
            .unwrap_err();
        assert!(matches!(err, CaError::BadSerial(_)), "{bad}: {err}");
    }
}
