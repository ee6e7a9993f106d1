//! Hand-made TLS clients of a proxy's HBONE port, for tests that present
//! certificates the mesh would not issue (another root, an expired one) or
//! TLS settings it would not use.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use mesh_core::Identity;
use mesh_hbone::H2Config;
use mesh_hbone::client::ConnectRequest;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// A client certificate chain and its key.
pub type ClientCert = (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>);

/// One HBONE CONNECT attempt with a hand-made client TLS config.
pub async fn attempt(
    config: ClientConfig,
    server: SocketAddr,
    authority: SocketAddr,
) -> anyhow::Result<()> {
    let fut = async {
        let tcp = TcpStream::connect(server).await?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()), tcp)
            .await?;
        let conn = mesh_hbone::client::h2_handshake(tls, server, &H2Config::default()).await?;
        let _stream = conn
            .connect(&ConnectRequest {
                authority: authority.to_string(),
                headers: Default::default(),
            })
            .await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(10), fut).await?
}

/// Completes a TLS handshake and reads: what the server said, as text
/// (the alert it sent, when it refused the client).
pub async fn alert_after_handshake(config: ClientConfig, server: SocketAddr) -> String {
    let attempt = async {
        let tcp = TcpStream::connect(server).await?;
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()), tcp)
            .await?;
        let mut buf = [0u8; 64];
        tls.read(&mut buf).await
    };
    match tokio::time::timeout(Duration::from_secs(10), attempt).await {
        Ok(Ok(n)) => format!("read {n} bytes"),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer within 10 s".into(),
    }
}

pub fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

/// A client certificate for `sa` from `ca`, valid in the given window.
pub fn client_cert(
    ca: &istiod_lite::ca::CertificateAuthority,
    sa: &str,
    window: Option<(std::time::SystemTime, std::time::SystemTime)>,
) -> ClientCert {
    client_cert_for(ca, &id(sa), window)
}

/// A client certificate for any `identity` (another trust domain's, say)
/// from `ca`, valid in the given window.
pub fn client_cert_for(
    ca: &istiod_lite::ca::CertificateAuthority,
    identity: &Identity,
    window: Option<(std::time::SystemTime, std::time::SystemTime)>,
) -> ClientCert {
    let csr = mesh_tls::csr::generate(identity).unwrap();
    let chain = match window {
        None => ca
            .sign(&csr.csr_pem, identity, Duration::from_secs(3600))
            .unwrap(),
        Some((nb, na)) => ca.sign_window(&csr.csr_pem, identity, nb, na).unwrap(),
    };
    let certs = chain[..chain.len() - 1]
        .iter()
        .flat_map(|p| mesh_tls::certificate::parse_certs(p, "test").unwrap())
        .collect();
    (
        certs,
        PrivateKeyDer::from_pem_slice(csr.key_pem.as_bytes()).unwrap(),
    )
}

/// The mesh's root, as a client trusts it.
pub fn mesh_roots(ca: &istiod_lite::ca::CertificateAuthority) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for der in mesh_tls::certificate::parse_certs(ca.root_pem(), "root").unwrap() {
        roots.add(der).unwrap();
    }
    Arc::new(roots)
}

/// A TLS 1.3, h2 client config as a mesh proxy's: `cert` (if any) as the
/// client certificate, the server checked against `roots` and `server`.
pub fn mesh_client_config(
    roots: Arc<rustls::RootCertStore>,
    cert: Option<ClientCert>,
    server: Identity,
) -> ClientConfig {
    let provider = mesh_tls::provider::provider();
    let verifier = mesh_tls::verifier::SpiffeServerVerifier::new(
        roots,
        vec![server],
        provider.clone(),
        mesh_tls::Revocation::none(),
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(mesh_tls::provider::TLS_VERSIONS)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![mesh_tls::ALPN_H2.to_vec()];
    config.enable_sni = false;
    config
}
