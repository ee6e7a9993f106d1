//! The CA's keys and certificates, and signing.
//!
//! Two ways to get a root, both in Istio's plug-in layout (`ca-cert.pem`,
//! `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`):
//! - generated on first start into `<state dir>/ca/` and reloaded from there;
//! - plugged in from a directory the operator provides (an intermediate
//!   signed by their own root, typically).

use std::fs;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use mesh_core::{Identity, TrustDomain};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams,
    CertificateSigningRequestParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, PublicKeyData, RevokedCertParams, SanType,
    SerialNumber,
};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

pub const CA_CERT: &str = "ca-cert.pem";
pub const CA_KEY: &str = "ca-key.pem";
pub const ROOT_CERT: &str = "root-cert.pem";
pub const CERT_CHAIN: &str = "cert-chain.pem";

/// How far back a new certificate's validity starts, so that peers whose
/// clocks lag a little still accept it.
const BACKDATE: Duration = Duration::from_secs(60);
const ROOT_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is readable by group or others (mode {mode:04o}); the CA key must be private: run `chmod 600 {path}`"
    )]
    LooseKeyPermissions { path: PathBuf, mode: u32 },
    #[error("{path}: {reason}")]
    BadFile { path: PathBuf, reason: String },
    #[error(
        "the CA directory {dir} is incomplete: {missing} is missing (expected {CA_CERT}, {CA_KEY}, {ROOT_CERT}, {CERT_CHAIN})"
    )]
    Incomplete { dir: PathBuf, missing: &'static str },
    #[error("{CA_KEY} does not match the public key of {CA_CERT} in {dir}")]
    KeyMismatch { dir: PathBuf },
    #[error("the CSR could not be parsed or its signature is invalid: {0}")]
    BadCsr(String),
    #[error("signing failed: {0}")]
    Signing(#[from] rcgen::Error),
    #[error(
        "{0:?} is not a serial number: give it in hex, with or without colons (for example 5a:3f:01)"
    )]
    BadSerial(String),
}

/// The signing key and certificates of the mesh CA.
pub struct CertificateAuthority {
    issuer: Issuer<'static, KeyPair>,
    /// Certificates between a leaf and the root, nearest first (starting with
    /// the signing certificate unless it is itself the root).
    intermediates: Vec<String>,
    /// The trusted root(s), as one PEM string.
    root_pem: String,
    trust_domain: TrustDomain,
    source: String,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("source", &self.source)
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// Loads the self-managed root from `<state_dir>/ca`, generating it there
    /// on first start.
    pub fn load_or_generate(state_dir: &Path, trust_domain: TrustDomain) -> Result<Self, CaError> {
        let dir = state_dir.join("ca");
        if !dir.join(CA_KEY).exists() {
            generate_root(&dir, &trust_domain)?;
            tracing::info!(dir = %dir.display(), "generated a new self-signed mesh root");
        }
        Self::from_dir(&dir, trust_domain)
    }

    /// Loads a CA from a directory in Istio's plug-in layout.
    pub fn from_dir(dir: &Path, trust_domain: TrustDomain) -> Result<Self, CaError> {
        for name in [CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN] {
            if !dir.join(name).exists() {
                return Err(CaError::Incomplete {
                    dir: dir.to_path_buf(),
                    missing: name,
                });
            }
        }
        let key_path = dir.join(CA_KEY);
        check_private(&key_path)?;
        let key_pem = read(&key_path)?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| CaError::BadFile {
            path: key_path.clone(),
            reason: format!("not a usable private key: {e}"),
        })?;
        let cert_path = dir.join(CA_CERT);
        let cert_pem = read(&cert_path)?;
        let cert_der = first_cert(&cert_path, &cert_pem)?;
        let (_, parsed) =
            x509_parser::parse_x509_certificate(&cert_der).map_err(|e| CaError::BadFile {
                path: cert_path.clone(),
                reason: e.to_string(),
            })?;
        if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
            return Err(CaError::KeyMismatch {
                dir: dir.to_path_buf(),
            });
        }
        let root_path = dir.join(ROOT_CERT);
        let root_pem = read(&root_path)?;
        let root_ders = all_certs(&root_path, &root_pem)?;
        let chain_path = dir.join(CERT_CHAIN);
        let chain_pem = read(&chain_path)?;
        let chain_ders = all_certs(&chain_path, &chain_pem)?;

        // Between leaf and root: the signing cert, then the rest of the chain,
        // never repeating a root or the signing cert.
        let mut intermediates = Vec::new();
        if !root_ders.contains(&cert_der) {
            intermediates.push(to_pem(&cert_der));
        }
        for der in chain_ders {
            if der != cert_der && !root_ders.contains(&der) {
                intermediates.push(to_pem(&der));
            }
        }
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key).map_err(|e| CaError::BadFile {
            path: cert_path,
            reason: format!("not a usable CA certificate: {e}"),
        })?;
        Ok(Self {
            issuer,
            intermediates,
            root_pem: normalize(&root_pem),
            trust_domain,
            source: dir.display().to_string(),
        })
    }

    /// The PEM of the trusted root(s), what workloads put in their trust store.
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    /// Signs `csr_pem` for `identity`, valid for `ttl` from now. Only the CSR's
    /// public key is used; the SAN is the identity decided by the caller.
    /// Returns the chain: leaf, intermediates, root(s) last.
    pub fn sign(
        &self,
        csr_pem: &str,
        identity: &Identity,
        ttl: Duration,
    ) -> Result<Vec<String>, CaError> {
        let now = SystemTime::now();
        // Short-lived certificates get a proportionally short backdate, or
        // their half-life (the renewal point) would already be in the past.
        let backdate = BACKDATE.min(ttl / 10);
        self.sign_window(csr_pem, identity, now - backdate, now + ttl)
    }

    /// As [`sign`](Self::sign) with an explicit validity window.
    pub fn sign_window(
        &self,
        csr_pem: &str,
        identity: &Identity,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> Result<Vec<String>, CaError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| CaError::BadCsr(e.to_string()))?;
        refuse_mismatched_key(&csr, csr_pem)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        csr.params = params;
        let leaf = csr.signed_by(&self.issuer)?;
        Ok(self.chain_for(leaf.pem()))
    }

    /// A serving certificate for istiod itself (DNS names and IPs), with its key.
    pub fn issue_serving(&self, names: &[String]) -> Result<(Vec<String>, String), CaError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::new(names.to_vec())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "istiod-lite");
        let now = SystemTime::now();
        params.not_before = (now - BACKDATE).into();
        params.not_after = (now + Duration::from_secs(365 * 24 * 3600)).into();
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(serial());
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer)?;
        Ok((self.chain_for(cert.pem()), key.serialize_pem()))
    }

    /// A CRL signed by this CA revoking `serials` (hex, colons allowed),
    /// valid until `next_update` from now, as PEM. Its number is the time
    /// of issue, so that each new list supersedes the last.
    pub fn revocation_list(
        &self,
        serials: &[String],
        next_update: Duration,
    ) -> Result<String, CaError> {
        let now = SystemTime::now();
        let revoked_certs = serials
            .iter()
            .map(|s| {
                Ok(RevokedCertParams {
                    serial_number: parse_serial(s)?,
                    revocation_time: now.into(),
                    reason_code: None,
                    invalidity_date: None,
                })
            })
            .collect::<Result<Vec<_>, CaError>>()?;
        let number = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let crl = CertificateRevocationListParams {
            this_update: (now - BACKDATE).into(),
            next_update: (now + next_update.max(Duration::from_secs(1))).into(),
            crl_number: SerialNumber::from(number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)?;
        Ok(crl.pem()?)
    }

    fn chain_for(&self, leaf_pem: String) -> Vec<String> {
        let mut chain = Vec::with_capacity(self.intermediates.len() + 2);
        chain.push(leaf_pem);
        chain.extend(self.intermediates.iter().cloned());
        chain.push(self.root_pem.clone());
        chain
    }
}

/// rcgen takes the key's algorithm from the CSR's signature algorithm, so a
/// P-384 key in a CSR signed with ECDSA-SHA256 would be issued as a P-256
/// key: a certificate that verifies but fails every handshake (found by
/// the `ca_csr` fuzz target; docs/fuzzing.md F1). Such a CSR is refused,
/// and the client is told why.
fn refuse_mismatched_key(
    csr: &CertificateSigningRequestParams,
    csr_pem: &str,
) -> Result<(), CaError> {
    use x509_parser::prelude::FromDer;
    let unreadable = |e: String| CaError::BadCsr(format!("reading the CSR: {e}"));
    let (_, pem) = x509_parser::pem::parse_x509_pem(csr_pem.as_bytes())
        .map_err(|e| unreadable(e.to_string()))?;
    let (_, asked) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .map_err(|e| unreadable(e.to_string()))?;
    let issued = csr.public_key.subject_public_key_info();
    if issued != asked.certification_request_info.subject_pki.raw {
        return Err(CaError::BadCsr(
            "the CSR's key and its signature algorithm do not match; sign the CSR with the hash \
             of its curve (ECDSA P-256 with SHA-256, as Istio's proxies do)"
                .into(),
        ));
    }
    Ok(())
}

/// A serial number as tools print it: hex, colons optional.
fn parse_serial(text: &str) -> Result<SerialNumber, CaError> {
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    let bad = || CaError::BadSerial(text.to_string());
    if hex.is_empty()
        || !hex.len().is_multiple_of(2)
        || hex.len() > 40
        || !hex.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(bad());
    }
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| bad()))
        .collect::<Result<Vec<u8>, _>>()?;
    Ok(SerialNumber::from_slice(&bytes))
}

fn serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand_bytes();
    bytes[0] &= 0x7f; // keep it positive
    bytes[0] |= 0x01; // and of full length
    SerialNumber::from_slice(&bytes)
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use ring::rand::{SecureRandom, SystemRandom};
    let mut out = [0u8; N];
    SystemRandom::new()
        .fill(&mut out)
        .expect("the system random source is available");
    out
}

fn generate_root(dir: &Path, trust_domain: &TrustDomain) -> Result<(), CaError> {
    fs::create_dir_all(dir).map_err(|source| CaError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::OrganizationName, trust_domain.as_str());
    params
        .distinguished_name
        .push(DnType::CommonName, "istiod-lite mesh root");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + ROOT_LIFETIME).into();
    params.serial_number = Some(serial());
    let cert = params.self_signed(&key)?;
    write_private(&dir.join(CA_KEY), &key.serialize_pem())?;
    for name in [CA_CERT, ROOT_CERT, CERT_CHAIN] {
        let path = dir.join(name);
        fs::write(&path, cert.pem()).map_err(|source| CaError::Io { path, source })?;
    }
    Ok(())
}

fn check_private(path: &Path) -> Result<(), CaError> {
    let meta = fs::metadata(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CaError::LooseKeyPermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Writes a file readable only by its owner, from its creation on.
pub fn write_private(path: &Path, contents: &str) -> Result<(), CaError> {
    use std::io::Write;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| CaError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    f.write_all(contents.as_bytes())
        .map_err(|source| CaError::Io {
            path: path.to_path_buf(),
            source,
        })
}

fn read(path: &Path) -> Result<String, CaError> {
    fs::read_to_string(path).map_err(|source| CaError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn all_certs(path: &Path, pem: &str) -> Result<Vec<CertificateDer<'static>>, CaError> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| CaError::BadFile {
            path: path.to_path_buf(),
            reason: format!("invalid PEM: {e}"),
        })?;
    if certs.is_empty() {
        return Err(CaError::BadFile {
            path: path.to_path_buf(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

fn first_cert(path: &Path, pem: &str) -> Result<CertificateDer<'static>, CaError> {
    Ok(all_certs(path, pem)?.remove(0))
}

fn to_pem(der: &CertificateDer<'_>) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(line).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

fn normalize(pem: &str) -> String {
    let mut s = pem.trim_end().to_string();
    s.push('\n');
    s
}

#[cfg(test)]
mod tests;
