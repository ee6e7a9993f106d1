//! Wiring: builds the CA and the gRPC server from a [`Config`] and runs them
//! under a drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::AggregatedDiscoveryServiceServer;
use mesh_proto::istio::v1::auth::istio_certificate_service_server::IstioCertificateServiceServer;
use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use mesh_runtime::{endpoint, stats};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::ca::kubernetes::KubeAuthenticator;
use crate::ca::service::CaPolicy;
use crate::ca::token::Authenticator;
use crate::ca::{CaService, CertificateAuthority, PodIndex, TokenIssuer};
use crate::config::Config;
use crate::jwks::JwksResolver;
use crate::metrics::Metrics;
use crate::model::Model;
use crate::source::manifests::{self, ErrorLog, ManifestDir};
use crate::xds::{self, AdsService, ResourceSet, XdsStats};
use mesh_kube::token_review::TokenReviewer;

/// The longest a shutdown waits for the drain: in-flight CA calls and the
/// xDS streams end well within it (a push to a proxy that stopped reading
/// gives up at the drain's start); past it, istiod-lite stops anyway.
pub const SHUTDOWN_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

use mesh_proto::xds::MAX_MESSAGE_SIZE;

/// Keeps the CA's pods-per-node index in step with the model's pods, so a
/// node proxy may fetch certificates for the pods scheduled on its node.
fn pod_index_sync(pods: Arc<PodIndex>) -> impl FnMut(&Model) + Send {
    let mut known: Vec<(String, String, String)> = Vec::new();
    move |model: &Model| {
        let now: Vec<(String, String, String)> = model
            .pods
            .iter()
            .filter_map(|((ns, _), p)| {
                let node = p.spec.node_name.clone()?;
                Some((node, ns.clone(), p.service_account().to_string()))
            })
            .collect();
        for (node, ns, sa) in &known {
            pods.remove_pod(node, ns, sa);
        }
        for (node, ns, sa) in &now {
            pods.add_pod(node, ns, sa);
        }
        known = now;
    }
}

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
    /// `/metrics`, when on.
    pub monitoring_addr: Option<SocketAddr>,
    /// Every metric istiod-lite exports.
    pub registry: Arc<Registry>,
    pub ca: Arc<CertificateAuthority>,
    pub tokens: Arc<TokenIssuer>,
    /// Pods per node, consulted before a node proxy may impersonate.
    pub pods: Arc<PodIndex>,
    /// The latest resource set pushed to proxies.
    pub resources: watch::Receiver<Arc<ResourceSet>>,
    /// Problems in the manifest directory, newest per file.
    pub manifest_errors: ErrorLog,
    pub xds_stats: Arc<XdsStats>,
    resources_tx: watch::Sender<Arc<ResourceSet>>,
    drain: DrainTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Istiod {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        // In a cluster: the API server first (a wrong address fails here,
        // at once), and the self-signed root kept in a Secret there.
        let own_namespace =
            std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "istio-system".into());
        let kube_client = match &config.kubernetes {
            Some(kube) => Some(
                mesh_kube::source::connect(
                    kube.kubeconfig.as_deref(),
                    mesh_kube::source::CONNECT_TIMEOUT,
                )
                .await?,
            ),
            None => None,
        };
        if let (Some(client), None) = (&kube_client, &config.ca_certs_dir) {
            let (state_dir, td) = (config.state_dir.clone(), config.trust_domain.clone());
            mesh_kube::ca_secret::sync_ca_dir(
                client,
                &own_namespace,
                &config.state_dir.join("ca"),
                || {
                    CertificateAuthority::load_or_generate(&state_dir, td)
                        .map(|_| ())
                        .map_err(|e| e.to_string())
                },
            )
            .await?;
        }
        let ca = Arc::new(load_ca(&config)?);
        let tokens = Arc::new(TokenIssuer::load_or_generate(&config.state_dir)?);
        let pods = Arc::new(PodIndex::new());
        let (serving_chain, serving_key) = ca.issue_serving(&config.serving_names)?;
        let tls = crate::grpc::server_config(&serving_chain, &serving_key)?;

        let (trigger, watcher) = drain::new();
        let mut tasks = Vec::new();

        // The model: read the manifest directory once before serving, so
        // the first proxies get the whole mesh, then follow its changes.
        let (models_tx, mut models) = watch::channel(Arc::new(Model::default()));
        let manifest_errors = ErrorLog::default();
        // Who calls the CA and xDS: bootstrap tokens, and in a cluster also
        // service account tokens the API server reviews.
        let mut auth: Arc<dyn Authenticator> = tokens.clone();
        // In a cluster: the conditions to write back on objects.
        let mut statuses = None;
        if let Some(dir) = &config.config_dir {
            let mut source = ManifestDir::new(dir);
            let report = source
                .scan()
                .with_context(|| format!("reading the manifest directory {}", dir.display()))?;
            manifests::publish(&source, report, &models_tx, &manifest_errors);
            tasks.push(tokio::spawn(manifests::watch_dir(
                source,
                config.config_poll_interval,
                models_tx.clone(),
                manifest_errors.clone(),
                watcher.clone(),
            )));
        } else if let (Some(kube), Some(client)) = (&config.kubernetes, kube_client.clone()) {
            auth = Arc::new(KubeAuthenticator::new(
                TokenReviewer::new(client.clone()),
                tokens.clone(),
                models.clone(),
            ));
            let (source, model) = mesh_kube::source::KubeSource::start(
                client.clone(),
                mesh_kube::source::SYNC_TIMEOUT,
            )
            .await?;
            models_tx.send_replace(Arc::new(model));
            // ztunnel and other pods of our namespace verify us with it.
            mesh_kube::waypoint::publish_root_cert(&client, &own_namespace, ca.root_pem()).await?;
            let settings = mesh_kube::waypoint::WaypointSettings {
                image: kube.waypoint_image.clone(),
                istiod_address: kube.istiod_address.clone(),
                root_cert_pem: ca.root_pem().to_string(),
                cluster_id: config.translate.cluster_id.clone(),
                trust_domain: config.translate.trust_domain.to_string(),
                domain_suffix: config.translate.domain_suffix.clone(),
            };
            let (status_tx, status_rx) = watch::channel(Arc::new(Default::default()));
            statuses = Some(status_tx);
            tasks.push(tokio::spawn(mesh_kube::status::run(
                client.clone(),
                status_rx,
            )));
            let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
            let drained = watcher.clone();
            tasks.push(tokio::spawn(async move {
                drained.signaled().await;
                let _ = stop_tx.send(());
            }));
            tasks.push(tokio::spawn(mesh_kube::waypoint::run(
                client,
                settings,
                async {
                    let _ = stop_rx.await;
                },
            )));
            tasks.push(tokio::spawn(source.run(models_tx.clone(), watcher.clone())));
        } else {
            info!("no --config-dir or --kubernetes: serving an empty mesh");
        }
        let mut registry = Registry::default();
        let metrics = Metrics::new(
            &mut registry,
            config.config_dir.is_some().then(|| manifest_errors.clone()),
        );
        let registry = Arc::new(registry);
        let service = CaService::new(
            ca.clone(),
            auth.clone(),
            pods.clone(),
            CaPolicy {
                default_ttl: config.default_cert_ttl,
                max_ttl: config.max_cert_ttl,
                trusted_node_accounts: config.trusted_node_accounts.clone(),
            },
            metrics.clone(),
        );
        let initial = models.borrow_and_update().clone();
        let mut sync = pod_index_sync(pods.clone());
        sync(&initial);
        let jwks = JwksResolver::new(config.jwks_refresh_interval);
        let first = xds::resource_set(
            &initial,
            &config.translate,
            &jwks.snapshot(),
            1,
            statuses.is_some(),
        );
        for w in first.warnings {
            warn!(object = %w.object, "{}", w.message);
        }
        jwks.want(first.jwks_uris);
        if let (Some(tx), Some(wanted)) = (&statuses, first.statuses) {
            tx.send_replace(Arc::new(wanted));
        }
        tasks.push(tokio::spawn(jwks.clone().run(watcher.clone())));
        let (resources_tx, resources) = watch::channel(Arc::new(first.set));
        tasks.push(tokio::spawn(xds::generate(
            models,
            config.translate.clone(),
            xds::Outputs {
                resources: resources_tx.clone(),
                statuses,
                metrics: metrics.clone(),
            },
            sync,
            jwks,
            watcher.clone(),
        )));
        drop(models_tx);

        let xds_stats = Arc::new(XdsStats::default());
        let ads = AdsService::new(
            auth,
            resources.clone(),
            watcher.clone(),
            xds_stats.clone(),
            metrics.clone(),
        );
        let mut monitoring_addr = None;
        if let Some(addr) = config.monitoring_addr {
            let listener =
                endpoint::bind("monitoring", addr, crate::config::ENV_MONITORING_ADDR).await?;
            monitoring_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(stats::serve(
                listener,
                watcher.clone(),
                registry.clone(),
            )));
        }
        // A proxy whose node died without a word is found by an
        // unanswered PING, and its stream ends (it would be counted, and
        // pushed to, for as long as the socket lasts otherwise).
        let router = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(crate::grpc::KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(crate::grpc::KEEPALIVE_TIMEOUT))
            .add_service(IstioCertificateServiceServer::new(service))
            .add_service(
                AggregatedDiscoveryServiceServer::new(ads)
                    .max_decoding_message_size(MAX_MESSAGE_SIZE)
                    .max_encoding_message_size(MAX_MESSAGE_SIZE),
            );

        let listener = TcpListener::bind(config.grpc_addr)
            .await
            .with_context(|| format!("binding the gRPC port {}", config.grpc_addr))?;
        let grpc_addr = listener.local_addr()?;
        tasks.push(tokio::spawn(async move {
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
        }));
        info!(%grpc_addr, trust_domain = %config.trust_domain, "istiod-lite serving");
        Ok(Self {
            grpc_addr,
            monitoring_addr,
            registry,
            ca,
            tokens,
            pods,
            resources,
            manifest_errors,
            xds_stats,
            resources_tx,
            drain: trigger,
            tasks,
        })
    }

    /// Pushes `set` to every proxy in place of the translated resources,
    /// until the next model change. This is how tests play a control plane
    /// that sends garbage; nothing else calls it.
    pub fn publish(&self, set: ResourceSet) {
        self.resources_tx.send_replace(Arc::new(set));
    }

    /// Stops accepting, lets in-flight calls finish, and waits for the
    /// server, at most [`SHUTDOWN_DEADLINE`].
    pub async fn shutdown(self) {
        let tasks = self.tasks;
        let drained = async {
            self.drain.drain(DrainMode::Graceful).await;
            for t in tasks {
                let _ = t.await;
            }
        };
        if tokio::time::timeout(SHUTDOWN_DEADLINE, drained)
            .await
            .is_err()
        {
            warn!(after = ?SHUTDOWN_DEADLINE, "the drain did not end in time; stopping anyway");
        }
    }
}
