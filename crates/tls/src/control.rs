//! The TLS channel to the control plane (CA and, later, xDS).
//!
//! Unlike HBONE this is ordinary server authentication: the client checks
//! istiod's certificate against a configured root and a host name, and
//! authenticates itself with a bearer token rather than a certificate.

use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::certificate::parse_certs;
use crate::error::Error;
use crate::provider::{TLS_VERSIONS, provider};

/// Where and how to reach istiod.
#[derive(Clone, Debug)]
pub struct ControlPlaneAddress {
    /// `host:port`, e.g. `istiod.istio-system.svc:15012` or `127.0.0.1:15012`.
    pub address: String,
    /// The name the server certificate must carry; defaults to the host part
    /// of `address` (the `ALT_CA_HOSTNAME` override of ztunnel).
    pub server_name: Option<String>,
    /// PEM of the root(s) that sign istiod's serving certificate.
    pub root_pem: String,
}

impl ControlPlaneAddress {
    fn host(&self) -> &str {
        let addr = self.address.trim_start_matches("https://");
        match addr.rsplit_once(':') {
            Some((host, _)) => host.trim_start_matches('[').trim_end_matches(']'),
            None => addr,
        }
    }
}

/// Builds a lazily connecting gRPC channel to istiod over TLS.
pub fn channel(target: &ControlPlaneAddress) -> Result<Channel, Error> {
    let mut roots = RootCertStore::empty();
    for der in parse_certs(&target.root_pem, "the control plane root")? {
        roots
            .add(der)
            .map_err(|e| Error::InvalidCertificate(format!("control plane root: {e}")))?;
    }
    let mut tls = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(TLS_VERSIONS)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![crate::ALPN_H2.to_vec()];
    let connector = TlsConnector::from(Arc::new(tls));

    let name = target
        .server_name
        .clone()
        .unwrap_or_else(|| target.host().to_string());
    let server_name = ServerName::try_from(name.clone())
        .map_err(|e| Error::InvalidCertificate(format!("server name {name:?}: {e}")))?;
    let address = target.address.trim_start_matches("https://").to_string();

    // TLS is done by our connector, so tonic sees a plain http URI.
    let uri = format!("http://{address}");
    let endpoint = Endpoint::from_shared(uri.clone())
        .map_err(|e| Error::CaUnreachable {
            address: address.clone(),
            reason: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .tcp_keepalive(Some(Duration::from_secs(300)));

    let connect = tower::service_fn(move |_uri: Uri| {
        let connector = connector.clone();
        let server_name = server_name.clone();
        let address = address.clone();
        async move {
            let tcp = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(&address))
                .await
                .map_err(|_| {
                    mesh_core::wait::Wait::ControlPlaneConnect.timed_out();
                    std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                })??;
            tcp.set_nodelay(true)?;
            let tls =
                tokio::time::timeout(Duration::from_secs(10), connector.connect(server_name, tcp))
                    .await
                    .map_err(|_| {
                        mesh_core::wait::Wait::ControlPlaneConnect.timed_out();
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(endpoint.connect_with_connector_lazy(connect))
}
