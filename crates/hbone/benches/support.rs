//! What the HBONE benches share: an in-memory CA, an HBONE server on loopback
//! that echoes every stream, and a client [`Pool`] for it, wired as ztunnel
//! wires them (real TLS, real HTTP/2, real sockets).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use futures::future::BoxFuture;
use http::HeaderMap;
use mesh_core::Identity;
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::pool::DefaultSocketFactory;
use mesh_hbone::{H2Config, H2Stream, Pool, WorkloadKey, server};
use mesh_tls::{CertificateSource, SecretManager, SecretManagerConfig, WorkloadCertificate};
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use tokio::net::TcpListener;

/// Two workers, as on a small node; the benches share two cores anyway.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Signs a certificate for whatever identity is asked, as istiod's CA does.
struct Ca {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().expect("root key");
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "bench root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).expect("root certificate");
        Self {
            issuer: Issuer::new(params, key),
            root_pem: root.pem(),
        }
    }

    /// The workload's own CSR, signed, as the CA client would receive it.
    fn sign(&self, identity: &Identity) -> Result<WorkloadCertificate, mesh_tls::Error> {
        let csr = mesh_tls::csr::generate(identity)?;
        let mut req = CertificateSigningRequestParams::from_pem(&csr.csr_pem)?;
        req.params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        req.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = req.signed_by(&self.issuer)?;
        WorkloadCertificate::from_pem_chain(
            identity,
            &csr.key_pem,
            &[leaf.pem(), self.root_pem.clone()],
        )
    }
}

impl CertificateSource for Ca {
    fn fetch(
        &self,
        identity: &Identity,
    ) -> BoxFuture<'_, Result<WorkloadCertificate, mesh_tls::Error>> {
        let cert = self.sign(identity);
        Box::pin(async move { cert })
    }
}

/// A client pool for the echo server, and what to ask it for.
pub struct Client {
    pub pool: Pool,
    pub key: WorkloadKey,
    request: ConnectRequest,
}

impl Client {
    /// One CONNECT stream, as ztunnel's outbound opens one per connection.
    pub async fn connect(&self) -> H2Stream {
        self.pool
            .connect(&self.key, &self.request)
            .await
            .expect("HBONE CONNECT to the echo server")
    }
}

fn identity(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .expect("SPIFFE identity")
}

/// Starts the echo server on loopback and returns a pool that reaches it.
/// `config` is used by both sides. Call within the runtime.
pub async fn start(config: H2Config) -> Client {
    let ca = Arc::new(Ca::new());
    let server_id = identity("echo");
    let server_tls = ca
        .sign(&server_id)
        .expect("server certificate")
        .server_config();
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind the HBONE listener");
    let addr = listener.local_addr().expect("listener address");
    let server_config = config.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, config) = (server_tls.clone(), server_config.clone());
            tokio::spawn(async move {
                let Ok((io, _peer)) = server::accept_tls(tcp, tls, &config).await else {
                    return;
                };
                let _ = server::serve(io, &config, std::future::pending(), |connect| {
                    tokio::spawn(async move {
                        if let Ok(stream) = connect.accept(HeaderMap::new()) {
                            echo(stream).await;
                        }
                    });
                })
                .await;
            });
        }
    });

    let certs = SecretManager::new(ca, SecretManagerConfig::default());
    Client {
        pool: Pool::new(certs, config, Arc::new(DefaultSocketFactory)),
        key: WorkloadKey {
            src_id: identity("sleep"),
            dst_id: vec![server_id],
            dst: addr,
            src: IpAddr::V4(Ipv4Addr::LOCALHOST),
        },
        request: ConnectRequest {
            authority: "10.0.0.2:8080".into(),
            headers: HeaderMap::new(),
        },
    }
}

/// Sends back everything received, then ends the stream.
async fn echo(mut stream: H2Stream) {
    while let Ok(Some(chunk)) = stream.read_chunk().await {
        if stream.write_all(chunk).await.is_err() {
            return;
        }
    }
    let _ = stream.finish();
}
