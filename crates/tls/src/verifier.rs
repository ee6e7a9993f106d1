//! Certificate verifiers for both ends of HBONE.
//!
//! Neither end checks DNS names or IPs: peers are identified by the SPIFFE URI
//! SANs of their leaf certificate, after ordinary chain validation to the
//! mesh's roots.

use std::fmt;
use std::sync::Arc;

use mesh_core::{Identity, TrustDomain};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::server::ClientHello;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, OtherError, RootCertStore,
    SignatureScheme,
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

use crate::certificate::leaf_identity;
use crate::error::Error;
use crate::revocation::{Revocation, Side};

/// Verifies an HBONE server: a valid chain to our roots (server-auth usage)
/// that no CRL in force revokes, and a leaf carrying one of the expected
/// identities.
pub struct SpiffeServerVerifier {
    chain: Chain,
    expected: Vec<Identity>,
}

impl fmt::Debug for SpiffeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeServerVerifier")
            .field("expected", &self.expected)
            .finish_non_exhaustive()
    }
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        expected: Vec<Identity>,
        provider: Arc<CryptoProvider>,
        revocation: Revocation,
    ) -> Self {
        Self {
            chain: Chain {
                roots,
                provider,
                revocation,
            },
            expected,
        }
    }
}

/// The error rustls reports when a peer proves the wrong identity; its text
/// reaches logs, so it names both sides.
#[derive(Debug)]
pub struct WrongIdentity {
    pub expected: Vec<Identity>,
    pub presented: Vec<Identity>,
}

impl fmt::Display for WrongIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |ids: &[Identity]| {
            ids.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "peer presented identity [{}] but one of [{}] was expected",
            list(&self.presented),
            list(&self.expected)
        )
    }
}

impl std::error::Error for WrongIdentity {}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.chain
            .verify(end_entity, intermediates, Side::Client, now)?;
        let presented = leaf_identity(end_entity).map_err(no_identity)?;
        if self.expected.contains(&presented) {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(WrongIdentity {
                    expected: self.expected.clone(),
                    presented: vec![presented],
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}

/// What both verifiers check the same way: the chain to our roots for the
/// peer's usage, with the CRLs in force, and handshake signatures.
struct Chain {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    revocation: Revocation,
}

impl Chain {
    /// `side` is ours: a server verifies a client-auth chain, and the
    /// other way round.
    fn verify(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        side: Side,
        now: UnixTime,
    ) -> Result<(), rustls::Error> {
        self.revocation
            .verify(
                end_entity,
                intermediates,
                &self.roots,
                side,
                now,
                &self.provider,
            )
            .map_err(webpki_error)
    }

    /// Never reached: TLS_VERSIONS is TLS 1.3 only.
    fn tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn webpki_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as E;
    let ce = match e {
        E::BadDer | E::BadDerTime => CertificateError::BadEncoding,
        E::CertExpired { .. } => CertificateError::Expired,
        E::CertNotValidYet { .. } => CertificateError::NotValidYet,
        E::UnknownIssuer => CertificateError::UnknownIssuer,
        E::InvalidSignatureForPublicKey => CertificateError::BadSignature,
        E::CertRevoked => CertificateError::Revoked,
        other => CertificateError::Other(OtherError(Arc::new(other))),
    };
    rustls::Error::InvalidCertificate(ce)
}

/// Verifies an HBONE client: a certificate is required, must chain to our
/// roots (client-auth usage), must not be revoked by a CRL in force, and
/// must carry a SPIFFE identity in our trust domain. Which identities may
/// connect is for authorization policy to decide, later.
pub struct SpiffeClientVerifier {
    chain: Chain,
    trust_domain: TrustDomain,
}

impl fmt::Debug for SpiffeClientVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SpiffeClientVerifier")
            .field("trust_domain", &self.trust_domain)
            .finish_non_exhaustive()
    }
}

impl SpiffeClientVerifier {
    pub fn new(
        roots: Arc<RootCertStore>,
        trust_domain: TrustDomain,
        provider: Arc<CryptoProvider>,
        revocation: Revocation,
    ) -> Self {
        Self {
            chain: Chain {
                roots,
                provider,
                revocation,
            },
            trust_domain,
        }
    }
}

#[derive(Debug)]
struct ForeignTrustDomain {
    expected: TrustDomain,
}

impl fmt::Display for ForeignTrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "client certificate has no SPIFFE identity in trust domain {}",
            self.expected
        )
    }
}

impl std::error::Error for ForeignTrustDomain {}

impl ClientCertVerifier for SpiffeClientVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // Hints only help clients with several certificates; ours have one.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.chain
            .verify(end_entity, intermediates, Side::Server, now)?;
        let id = leaf_identity(end_entity).map_err(no_identity)?;
        if id.trust_domain() == &self.trust_domain {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(CertificateError::Other(
                OtherError(Arc::new(ForeignTrustDomain {
                    expected: self.trust_domain.clone(),
                })),
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.chain.tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.chain.schemes()
    }
}

/// Always presents the same certificate, on either side of a handshake.
#[derive(Debug)]
pub struct FixedCert(pub Arc<CertifiedKey>);

impl rustls::client::ResolvesClientCert for FixedCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

impl rustls::server::ResolvesServerCert for FixedCert {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// The identity of the peer of an established TLS connection: the only URI
/// SAN of its leaf certificate (see [`leaf_identity`]).
pub fn peer_identity(certs: Option<&[CertificateDer<'static>]>) -> Option<Identity> {
    leaf_identity(certs?.first()?).ok()
}

/// A certificate that proves no identity, as rustls reports it (the peer
/// gets a `bad_certificate` alert; the text reaches our logs).
fn no_identity(e: Error) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

#[cfg(test)]
mod tests;
