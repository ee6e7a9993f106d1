//! Wiring: builds the CA and the gRPC server from a [`Config`] and runs them
//! under a drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::ca::service::CaPolicy;
use crate::ca::{CaService, CertificateAuthority, PodIndex, TokenIssuer};
use crate::config::Config;

/// Loads the CA named by the configuration: plugged in, or self-managed.
pub fn load_ca(config: &Config) -> anyhow::Result<CertificateAuthority> {
    Ok(match &config.ca_certs_dir {
        Some(dir) => CertificateAuthority::from_dir(dir, config.trust_domain.clone())
            .with_context(|| format!("loading the plugged-in CA from {}", dir.display()))?,
        None => {
            CertificateAuthority::load_or_generate(&config.state_dir, config.trust_domain.clone())
                .with_context(|| format!("loading the CA from {}", config.state_dir.display()))?
        }
    })
}

/// A running control plane.
pub struct Istiod {
    pub grpc_addr: SocketAddr,
    pub ca: Arc<CertificateAuthority>,
    pub tokens: Arc<TokenIssuer>,
    /// Pods per node, consulted before a node proxy may impersonate.
    pub pods: Arc<PodIndex>,
    drain: DrainTrigger,
    server: JoinHandle<()>,
}

impl Istiod {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let ca = Arc::new(load_ca(&config)?);
        let tokens = Arc::new(TokenIssuer::load_or_generate(&config.state_dir)?);
        let pods = Arc::new(PodIndex::new());
        let (serving_chain, serving_key) = ca.issue_serving(&config.serving_names)?;
        let tls = crate::grpc::server_config(&serving_chain, &serving_key)?;

        let service = CaService::new(
            ca.clone(),
            tokens.clone(),
            pods.clone(),
            CaPolicy {
                default_ttl: config.default_cert_ttl,
                max_ttl: config.max_cert_ttl,
                trusted_node_accounts: config.trusted_node_accounts.clone(),
            },
        );
        let router = tonic::transport::Server::builder()
            .add_service(IstioCertificateServiceServer::new(service));

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC port {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        let (trigger, watcher) = drain::new();
        let server = tokio::spawn(async move {
            let shutdown = {
                let watcher = watcher.clone();
                async move {
                    watcher.signaled().await;
                }
            };
            if let Err(e) = crate::grpc::serve(listener, tls, router, shutdown).await {
                tracing::error!(error = %e, "gRPC server failed");
            }
            drop(watcher);
        });
        info!(%grpc_addr, trust_domain = %config.trust_domain, "istiod-lite serving");
        Ok(Self {
            grpc_addr,
            ca,
            tokens,
            pods,
            drain: trigger,
            server,
        })
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the server.
    pub async fn shutdown(self) {
        self.drain.drain(DrainMode::Graceful).await;
        let _ = self.server.await;
    }
}
