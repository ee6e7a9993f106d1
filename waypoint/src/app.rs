//! Wiring: certificates, xDS, the HBONE listener, all under one drain.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mesh_hbone::Pool;
use mesh_hbone::pool::DefaultSocketFactory;
use mesh_runtime::drain::{self, DrainMode, DrainTrigger, accept_loop};
use mesh_runtime::readiness::Ready;
use mesh_runtime::{endpoint, stats};
use mesh_tls::{CaClient, CertificateSource, Revocation, SecretManager, SecretManagerConfig};
use mesh_xds::{ProxyState, XdsClient, XdsClientStats};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::bindings::Bindings;
use crate::config::Config;
use crate::forward::Upstreams;
use crate::metrics::RequestMetrics;
use crate::server::Inputs;
use crate::trace::Tracing;
use crate::xds::WaypointHandler;

pub struct Waypoint {
    pub inbound_addr: SocketAddr,
    /// `/metrics`, when on.
    pub stats_addr: Option<SocketAddr>,
    /// Every metric this waypoint exports.
    pub registry: Arc<Registry>,
    tracing: Option<Arc<Tracing>>,
    pub ready: Ready,
    pub state: Arc<ProxyState>,
    pub bindings: watch::Receiver<Arc<Bindings>>,
    pub xds_stats: Arc<XdsClientStats>,
    drain: DrainTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Waypoint {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let ca = Arc::new(CaClient::new(config.ca.clone()).context("building the CA client")?);
        Self::start_with(config, ca).await
    }

    pub async fn start_with(
        config: Config,
        ca: Arc<dyn CertificateSource>,
    ) -> anyhow::Result<Self> {
        let revocation = Revocation::from_setting(config.crl_path.as_deref())
            .with_context(|| format!("reading the CRLs of {}", crate::config::CRL_PATH))?;
        let certs = SecretManager::new(
            ca,
            SecretManagerConfig {
                revocation: revocation.clone(),
                ..SecretManagerConfig::default()
            },
        );
        certs.prefetch(&config.identity);
        let listener = TcpListener::bind(config.inbound_addr)
            .await
            .with_context(|| format!("binding the HBONE listener {}", config.inbound_addr))?;
        let inbound_addr = listener.local_addr()?;
        let state = Arc::new(ProxyState::new());
        let (bindings_tx, bindings) = watch::channel(Arc::new(Bindings::default()));
        let ready = Ready::new();
        let xds_stats = Arc::new(XdsClientStats::default());
        let name = format!("{}/{}", config.gateway_namespace, config.gateway_name);
        let handler = WaypointHandler::new(state.clone(), name.clone(), bindings_tx);
        let xds = XdsClient::new(config.xds.clone(), handler, &ready, xds_stats.clone());
        let pool = Pool::new(
            certs.clone(),
            config.h2.clone(),
            Arc::new(DefaultSocketFactory),
        );
        let upstreams = Upstreams {
            pool,
            state: state.clone(),
            identity: config.identity.clone(),
            own_ip: config.instance_ip,
            network: config.network.clone(),
        };
        let deadline = config.termination_deadline;
        let stats_listener = match config.stats_addr {
            Some(a) => Some(endpoint::bind("stats", a, crate::config::STATS_ADDR).await?),
            None => None,
        };
        let readiness_listener = match config.readiness_addr {
            Some(a) => Some(endpoint::bind("readiness", a, crate::config::READINESS_ADDR).await?),
            None => None,
        };
        let tracing = match &config.tracing {
            Some(t) => Some(Arc::new(Tracing::start(
                t,
                &format!("{}.{}", config.gateway_name, config.gateway_namespace),
            )?)),
            None => None,
        };
        let admin_listener = match config.admin_addr {
            Some(a) => Some(endpoint::bind("admin", a, crate::config::ADMIN_ADDR).await?),
            None => None,
        };
        let admin = crate::admin::Admin {
            gateway: name.clone(),
            identity: config.identity.to_string(),
            bindings: bindings.clone(),
        };
        let mut registry = Registry::default();
        let metrics = RequestMetrics::new(registry.sub_registry_with_prefix("istio"));
        xds_stats.register(registry.sub_registry_with_prefix("istio"));
        mesh_telemetry::register_build(registry.sub_registry_with_prefix("istio"), "waypoint");
        stats::register_process(&mut registry);
        let registry = Arc::new(registry);
        let inputs = Arc::new(Inputs {
            config,
            certs,
            state: state.clone(),
            bindings: bindings.clone(),
            upstreams,
            metrics,
            tracing: tracing.clone(),
        });
        let (trigger, watcher) = drain::new();
        let mut stats_addr = None;
        let mut tasks = Vec::new();
        let drain = watcher.clone();
        tasks.push(tokio::spawn(revocation.watch(async move {
            drain.signaled().await;
        })));
        if let Some(l) = stats_listener {
            stats_addr = Some(l.local_addr()?);
            tasks.push(tokio::spawn(stats::serve(
                l,
                watcher.clone(),
                registry.clone(),
            )));
        }
        if let Some(l) = admin_listener {
            tasks.push(tokio::spawn(admin.serve(l, watcher.clone())));
        }
        if let Some(l) = readiness_listener {
            tasks.push(tokio::spawn(stats::serve_readiness(
                l,
                watcher.clone(),
                ready.clone(),
            )));
        }
        tasks.extend([
            tokio::spawn(xds.run(watcher.clone())),
            tokio::spawn(accept_loop(
                "hbone",
                listener,
                watcher.clone(),
                deadline,
                move |tcp, peer, drain| crate::server::handle(inputs.clone(), tcp, peer, drain),
            )),
        ]);
        info!(waypoint = %name, %inbound_addr, "waypoint started");
        Ok(Self {
            tracing,
            inbound_addr,
            stats_addr,
            registry,
            ready,
            state,
            bindings,
            xds_stats,
            drain: trigger,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        self.drain.drain(DrainMode::Graceful).await;
        for t in self.tasks {
            let _ = t.await;
        }
        if let Some(t) = self.tracing {
            // The exporter's own thread blocks on the last batch.
            let _ = tokio::task::spawn_blocking(move || t.shutdown()).await;
        }
    }
}
