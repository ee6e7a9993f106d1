//! A workload's certificate: the chain the CA issued, its private key, the
//! roots it trusts, and the rustls configs derived from them.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mesh_core::{Identity, TrustDomain};
use rustls::client::Resumption;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::error::Error;
use crate::provider::{TLS_VERSIONS, provider};
use crate::revocation::{PeerCheck, Revocation, Side};
use crate::verifier::{FixedCert, SpiffeClientVerifier, SpiffeServerVerifier};

/// How much longer than requested an issued lifetime may be before
/// renewal is planned by the requested one (or a tenth of it, if more):
/// CAs backdate `notBefore` a little.
pub const LIFETIME_TOLERANCE: Duration = Duration::from_secs(300);

/// The validity window and serial of a certificate, as read from its DER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
    pub serial: String,
    /// When the CA issued a longer lifetime than was asked for: the
    /// lifetime renewal is planned by instead (see [`WorkloadCertificate::asked_for`]).
    pub planned_life: Option<Duration>,
}

impl Validity {
    /// When renewal is due: half-way through the validity window, as Istio does.
    /// A certificate whose window has not begun by `now` is due at once.
    pub fn refresh_at(&self, now: SystemTime) -> SystemTime {
        if self.not_before > now {
            return now;
        }
        let life = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        let life = self.planned_life.map_or(life, |planned| planned.min(life));
        self.not_before + life / 2
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.not_after
    }
}

/// `t` as RFC 3339 (UTC), for messages.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| format!("{t:?}"))
}

/// The roots a proxy trusts: configuration (CA_ROOT_CA), never what a CA's
/// answer says. A root rotation puts both roots in the configured bundle
/// before the new one signs anything.
#[derive(Clone, Debug)]
pub struct TrustedRoots {
    store: Arc<RootCertStore>,
    pems: Vec<String>,
}

impl TrustedRoots {
    /// Every certificate of `pem` (`what` names it in errors).
    pub fn from_pem(pem: &str, what: &str) -> Result<Self, Error> {
        let mut store = RootCertStore::empty();
        for der in parse_certs(pem, what)? {
            store
                .add(der)
                .map_err(|e| Error::InvalidCertificate(format!("{what}: {e}")))?;
        }
        Ok(Self {
            store: Arc::new(store),
            pems: split_pem(pem),
        })
    }
}

/// A certificate issued to one identity, ready to be presented on HBONE.
///
/// Immutable: renewal makes a new one. The server config and the client's
/// certified key are built once here, not per connection.
pub struct WorkloadCertificate {
    identity: Identity,
    chain: Vec<CertificateDer<'static>>,
    roots: Arc<RootCertStore>,
    root_pems: Vec<String>,
    chain_pems: Vec<String>,
    validity: Validity,
    certified: Arc<CertifiedKey>,
    server_config: Arc<ServerConfig>,
    /// The CRLs both ends of HBONE check peers against.
    revocation: Revocation,
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.identity.to_string())
            .field("serial", &self.validity.serial)
            .field("not_after", &self.validity.not_after)
            .finish_non_exhaustive()
    }
}

impl WorkloadCertificate {
    /// Builds a certificate from a CA response (`cert_chain`: leaf first, the
    /// last element holding the root or roots) and the PEM private key.
    ///
    /// The leaf's first SPIFFE URI SAN must be `identity`.
    pub fn from_pem_chain(
        identity: &Identity,
        key_pem: &str,
        cert_chain: &[String],
    ) -> Result<Self, Error> {
        let (roots_pem, chain_pem) = match cert_chain {
            [] => return Err(Error::EmptyChain),
            [_leaf] => return Err(Error::MissingRoot),
            [chain @ .., roots] => (roots, chain),
        };
        let mut chain = Vec::new();
        for (i, pem) in chain_pem.iter().enumerate() {
            chain.extend(parse_certs(pem, &format!("cert_chain[{i}]"))?);
        }
        let root_ders = parse_certs(roots_pem, "the root element of cert_chain")?;
        let mut roots = RootCertStore::empty();
        for der in &root_ders {
            roots
                .add(der.clone())
                .map_err(|e| Error::InvalidCertificate(format!("root certificate: {e}")))?;
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| Error::Pem {
            what: "private key".into(),
            reason: e.to_string(),
        })?;

        let leaf = chain.first().ok_or(Error::EmptyChain)?;
        let issued = leaf_identities(leaf)?;
        match issued.first() {
            Some(first) if first == identity => {}
            other => {
                return Err(Error::IdentityMismatch {
                    requested: identity.clone(),
                    issued: other.map_or_else(|| "no SPIFFE identity".into(), |i| i.to_string()),
                });
            }
        }
        let validity = validity(leaf)?;

        let certified = Arc::new(CertifiedKey::from_der(chain.clone(), key, &provider())?);
        let roots = Arc::new(roots);
        let revocation = Revocation::none();
        let server_config = server_config(identity, &certified, &roots, &revocation)?;

        Ok(Self {
            identity: identity.clone(),
            chain,
            roots,
            root_pems: split_pem(roots_pem),
            chain_pems: chain_pem.to_vec(),
            validity,
            certified,
            server_config,
            revocation,
        })
    }

    /// This certificate trusting `trusted` instead of the roots the CA's
    /// answer carried, once its own chain verifies to them (as a client
    /// certificate of its trust domain): a CA whose chain ends in another
    /// root, or that appends one, changes nothing a peer is trusted by.
    ///
    /// The chain is verified at a moment within the leaf's validity (now,
    /// or its nearest end): whether it can be used now is decided, and
    /// named, by the certificate manager (an expired or future leaf).
    pub fn trusting(self, trusted: &TrustedRoots) -> Result<Self, Error> {
        use rustls::server::danger::ClientCertVerifier;
        let verifier = SpiffeClientVerifier::new(
            trusted.store.clone(),
            self.identity.trust_domain().clone(),
            provider(),
            Revocation::none(),
        );
        let (leaf, intermediates) = self.chain.split_first().ok_or(Error::EmptyChain)?;
        // Not `clamp`: a hostile answer may end before it begins.
        let (now, v) = (SystemTime::now(), &self.validity);
        let at = if now > v.not_after {
            v.not_after
        } else {
            now.max(v.not_before)
        };
        let at = rustls_pki_types::UnixTime::since_unix_epoch(
            at.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
        );
        verifier
            .verify_client_cert(leaf, intermediates, at)
            .map_err(|e| Error::UntrustedChain {
                identity: self.identity.clone(),
                reason: format!("{}): {e}", self.validity.serial),
            })?;
        let server_config = server_config(
            &self.identity,
            &self.certified,
            &trusted.store,
            &self.revocation,
        )?;
        Ok(Self {
            roots: trusted.store.clone(),
            root_pems: trusted.pems.clone(),
            server_config,
            ..self
        })
    }

    /// This certificate, renewed as if it lived no longer than `requested`
    /// (plus [`LIFETIME_TOLERANCE`]) when the CA issued a longer lifetime:
    /// a CA answering 10 years to a 24-hour request does not stop renewal
    /// for 5 years. The certificate is still presented until renewed;
    /// refusing it would leave the workload without one over a CA setting
    /// (a longer minimum lifetime) that is not wrong in itself.
    pub fn asked_for(mut self, requested: Duration) -> Self {
        let life = self
            .validity
            .not_after
            .duration_since(self.validity.not_before)
            .unwrap_or_default();
        let allowed = requested + LIFETIME_TOLERANCE.max(requested / 10);
        if life > allowed {
            tracing::warn!(
                identity = %self.identity,
                serial = %self.validity.serial,
                issued = ?life,
                requested = ?requested,
                "the CA issued a longer lifetime than requested; renewal is planned by the requested one"
            );
            self.validity.planned_life = Some(requested);
        }
        self
    }

    /// This certificate, its peers checked against `revocation`'s CRLs.
    pub fn with_revocation(self, revocation: Revocation) -> Result<Self, Error> {
        let server_config =
            server_config(&self.identity, &self.certified, &self.roots, &revocation)?;
        Ok(Self {
            server_config,
            revocation,
            ..self
        })
    }

    /// A watch on the peer of a connection this certificate's config is
    /// about to make (`side` is ours): make it before the handshake, hand
    /// it the peer's chain after ([`PeerCheck::revoked`]).
    pub fn peer_check(&self, side: Side) -> PeerCheck {
        self.revocation.peer(side, self.roots.clone(), provider())
    }

    /// When a connection between this certificate and a peer presenting
    /// `peer_chain` stops vouching for new streams: when the first of the
    /// two certificates ends.
    pub fn valid_with(&self, peer_chain: Option<&[CertificateDer<'static>]>) -> SystemTime {
        let peer = peer_chain
            .and_then(|c| c.first())
            .and_then(|leaf| validity(leaf).ok())
            .map(|v| v.not_after);
        let ours = self.validity.not_after;
        peer.map_or(ours, |p| p.min(ours))
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    pub fn validity(&self) -> &Validity {
        &self.validity
    }

    /// The chain presented to peers, leaf first (PEM, one element per certificate).
    pub fn chain_pems(&self) -> &[String] {
        &self.chain_pems
    }

    /// The trusted roots (PEM, one element per certificate).
    pub fn root_pems(&self) -> &[String] {
        &self.root_pems
    }

    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.chain
    }

    pub fn roots(&self) -> &Arc<RootCertStore> {
        &self.roots
    }

    /// The config for the HBONE server (port 15008) of this identity: requires
    /// a client certificate from the same trust domain, offers only `h2`.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server_config.clone()
    }

    /// A config for an HBONE client presenting this identity to a server that
    /// must prove one of `expected` identities. No SNI, no resumption.
    pub fn client_config(&self, expected: Vec<Identity>) -> Result<ClientConfig, Error> {
        let provider = provider();
        let verifier = SpiffeServerVerifier::new(
            self.roots.clone(),
            expected,
            provider.clone(),
            self.revocation.clone(),
        );
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(TLS_VERSIONS)?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_client_cert_resolver(Arc::new(FixedCert(self.certified.clone())));
        config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
        config.enable_sni = false;
        config.resumption = Resumption::disabled();
        Ok(config)
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        self.identity.trust_domain()
    }
}

/// The HBONE server (port 15008) config of `identity`: a client
/// certificate from the same trust domain is required, only `h2` offered.
fn server_config(
    identity: &Identity,
    certified: &Arc<CertifiedKey>,
    roots: &Arc<RootCertStore>,
    revocation: &Revocation,
) -> Result<Arc<ServerConfig>, Error> {
    let provider = provider();
    let client_verifier = SpiffeClientVerifier::new(
        roots.clone(),
        identity.trust_domain().clone(),
        provider.clone(),
        revocation.clone(),
    );
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(TLS_VERSIONS)?
        .with_client_cert_verifier(Arc::new(client_verifier))
        .with_cert_resolver(Arc::new(FixedCert(certified.clone())));
    config.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    // Tickets and session caches only help resumption, which HBONE clients never use.
    config.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// Parses every certificate in a PEM string.
pub fn parse_certs(pem: &str, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem {
            what: what.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::Pem {
            what: what.to_string(),
            reason: "no CERTIFICATE block".into(),
        });
    }
    Ok(certs)
}

/// Splits a PEM string that may hold several certificates into one string each.
fn split_pem(pem: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in pem.lines() {
        cur.push_str(line);
        cur.push('\n');
        if line.starts_with("-----END") {
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// The SPIFFE identities in a certificate's URI SANs, in order. URIs that are
/// not well-formed SPIFFE identities are skipped.
pub fn leaf_identities(der: &CertificateDer<'_>) -> Result<Vec<Identity>, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name
                && let Ok(id) = uri.parse::<Identity>()
            {
                out.push(id);
            }
        }
    }
    Ok(out)
}

/// The one identity a peer's certificate proves: its only URI SAN, which
/// must be a well-formed SPIFFE identity. A certificate with no URI SAN,
/// with several (say one of ours and one of a foreign trust domain), or
/// with one that is not SPIFFE proves none, so it is never taken for any
/// of them (reliability.md §5.1 M5).
pub fn leaf_identity(der: &CertificateDer<'_>) -> Result<Identity, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    let mut uris = Vec::new();
    if let Some(san) = cert
        .subject_alternative_name()
        .map_err(|e| Error::InvalidCertificate(format!("its SAN extension: {e}")))?
    {
        for name in &san.value.general_names {
            if let x509_parser::extensions::GeneralName::URI(uri) = name {
                uris.push(*uri);
            }
        }
    }
    match uris.as_slice() {
        [] => Err(Error::InvalidCertificate(
            "the certificate has no URI SAN, where a workload's SPIFFE identity goes".into(),
        )),
        [uri] => uri.parse().map_err(|e| {
            Error::InvalidCertificate(format!("its URI SAN {uri:?} is not a SPIFFE identity: {e}"))
        }),
        many => Err(Error::InvalidCertificate(format!(
            "the certificate has {} URI SANs ({}); a workload certificate carries exactly one",
            many.len(),
            many.iter()
                .map(|u| format!("{u:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Reads the validity window and serial number of a certificate.
pub fn validity(der: &CertificateDer<'_>) -> Result<Validity, Error> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| Error::InvalidCertificate(e.to_string()))?;
    let v = cert.validity();
    let to_system = |t: x509_parser::time::ASN1Time| {
        let secs = t.timestamp();
        if secs < 0 {
            UNIX_EPOCH
        } else {
            UNIX_EPOCH + Duration::from_secs(secs as u64)
        }
    };
    Ok(Validity {
        not_before: to_system(v.not_before),
        not_after: to_system(v.not_after),
        serial: cert.tbs_certificate.raw_serial_as_string(),
        planned_life: None,
    })
}
