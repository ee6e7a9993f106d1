//! The cluster's certificates, made once per `up`: a cluster CA, the API
//! server's serving certificate, a client certificate for each component
//! (its Kubernetes user and groups are the subject's CN and O, as the API
//! server's client-certificate authenticator reads them) and the key pair
//! that signs service-account tokens.

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A year: the cluster lives for hours, but a laptop's suspended demo
/// should not find its certificates expired.
const LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Clocks of the components are the same clock; an hour covers a rounding.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("making the certificate for {what}")]
    Make {
        what: String,
        #[source]
        source: rcgen::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Who a client certificate says its holder is.
#[derive(Debug, Clone)]
pub struct Subject {
    /// The file stem: `admin` gives `admin.crt` and `admin.key`.
    pub file: String,
    /// The Kubernetes user name.
    pub user: String,
    /// The Kubernetes groups.
    pub groups: Vec<String>,
}

impl Subject {
    pub fn new(file: &str, user: &str, groups: &[&str]) -> Self {
        Self {
            file: file.to_string(),
            user: user.to_string(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }
}

/// The cluster CA, able to sign more certificates.
pub struct Authority {
    dir: PathBuf,
    issuer: Issuer<'static, KeyPair>,
}

impl Authority {
    /// A new CA written to `dir/ca.crt` and `dir/ca.key`.
    pub fn create(dir: &Path) -> Result<Self, PkiError> {
        let make = |source| PkiError::Make {
            what: "the cluster CA".into(),
            source,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(make)?;
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "mesh local cluster CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params);
        let cert = params.self_signed(&key).map_err(make)?;
        write(&dir.join("ca.crt"), &cert.pem())?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The API server's serving certificate, for the names and addresses
    /// a client may use: loopback, the cluster bridge, the `kubernetes`
    /// Service's VIP and its DNS names.
    pub fn serving(&self, file: &str, dns: &[&str], ips: &[Ipv4Addr]) -> Result<(), PkiError> {
        let mut names: Vec<SanType> = Vec::new();
        for name in dns {
            names.push(SanType::DnsName((*name).try_into().map_err(|source| {
                PkiError::Make {
                    what: format!("{file} (DNS name {name})"),
                    source,
                }
            })?));
        }
        names.extend(ips.iter().map(|ip| SanType::IpAddress((*ip).into())));
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, file);
        params.subject_alt_names = names;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(file, params)
    }

    /// A client certificate for `subject`.
    pub fn client(&self, subject: &Subject) -> Result<(), PkiError> {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, subject.user.as_str());
        for group in &subject.groups {
            params
                .distinguished_name
                .push(DnType::OrganizationName, group.as_str());
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(&subject.file, params)
    }

    fn sign(&self, file: &str, mut params: CertificateParams) -> Result<(), PkiError> {
        let make = |source| PkiError::Make {
            what: file.to_string(),
            source,
        };
        validity(&mut params);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(make)?;
        let cert = params.signed_by(&key, &self.issuer).map_err(make)?;
        write(&self.dir.join(format!("{file}.crt")), &cert.pem())?;
        write_private(&self.dir.join(format!("{file}.key")), &key.serialize_pem())
    }
}

/// The service-account token signing key (`sa.key`) and its public half
/// (`sa.pub`), which the API server checks tokens with.
pub fn service_account_keys(dir: &Path) -> Result<(), PkiError> {
    let key =
        KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|source| PkiError::Make {
            what: "the service-account signing key".into(),
            source,
        })?;
    write_private(&dir.join("sa.key"), &key.serialize_pem())?;
    write(&dir.join("sa.pub"), &key.public_key_pem())
}

fn validity(params: &mut CertificateParams) {
    let now = SystemTime::now();
    params.not_before = (now - BACKDATE).into();
    params.not_after = (now + LIFETIME).into();
}

fn write(path: &Path, contents: &str) -> Result<(), PkiError> {
    fs::write(path, contents).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// A private key: readable by its owner only.
fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::os::unix::fs::PermissionsExt;
    write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).map_err(|source| PkiError::Write {
        path: path.to_path_buf(),
        source,
    })
}
