//! Wiring and lifecycle: builds the certificate manager, the HBONE pool and
//! the listeners from a [`Config`], and drains them on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use mesh_hbone::Pool;
use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use mesh_runtime::endpoint;
use mesh_runtime::readiness::Ready;
use mesh_runtime::stats;
use mesh_tls::{CaClient, CertificateSource, Revocation, SecretManager, SecretManagerConfig};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tracing::info;

use crate::config::{CRL_PATH, Config};
use crate::inpod::PodStates;
use crate::inpod::manager::WorkloadManager;
use crate::metrics::{TrafficMetrics, WorkloadManagerMetrics};
use crate::proxy::connections::ConnectionManager;
use crate::proxy::{Listeners, ProxyInputs};
use crate::socket::Sockets;
use crate::state::ProxyState;
use crate::xds::{StateHandler, XdsClient, XdsClientStats};

/// A running ztunnel.
pub struct Ztunnel {
    /// The admin endpoint, when on.
    pub admin_addr: Option<SocketAddr>,
    /// `/metrics` and `/stats/prometheus`, when on.
    pub stats_addr: Option<SocketAddr>,
    /// `/healthz/ready`, when on.
    pub readiness_addr: Option<SocketAddr>,
    /// Every metric this ztunnel exports.
    pub registry: Arc<Registry>,
    /// The node-level outbound listener; `None` in in-pod mode.
    pub outbound_addr: Option<SocketAddr>,
    pub inbound_addrs: Vec<SocketAddr>,
    pub inbound_plaintext_addr: Option<SocketAddr>,
    pub certs: SecretManager,
    pub state: Arc<ProxyState>,
    pub pool: Pool,
    /// Ready once every startup task (the first xDS responses) is done.
    pub ready: Ready,
    pub xds_stats: Arc<XdsClientStats>,
    /// Open, authorized inbound connections.
    pub connections: ConnectionManager,
    /// In-pod mode: the pods the node agent handed over.
    pub pods: Option<PodStates>,
    drain: DrainTrigger,
    tasks: Vec<JoinHandle<()>>,
}

impl Ztunnel {
    /// Starts with the CA client and the state named by `config`.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let state = Arc::new(ProxyState::new());
        if let Some(path) = &config.local_xds_path {
            state.apply_local(ProxyState::load_file(path)?);
        }
        let ca = Arc::new(CaClient::new(config.ca.clone()).context("building the CA client")?);
        Self::start_with(config, state, ca).await
    }

    /// Starts with a given state and certificate source.
    pub async fn start_with(
        config: Config,
        state: Arc<ProxyState>,
        ca: Arc<dyn CertificateSource>,
    ) -> anyhow::Result<Self> {
        let revocation = Revocation::from_setting(config.crl_path.as_deref())
            .with_context(|| format!("reading the CRLs of {CRL_PATH}"))?;
        let certs = SecretManager::new(
            ca,
            SecretManagerConfig {
                revocation: revocation.clone(),
                ..SecretManagerConfig::default()
            },
        );
        let pool = Pool::new(certs.clone(), config.h2.clone(), Arc::new(Sockets::Host));

        // Warm up the certificates of this node's workloads.
        for w in state.workloads() {
            if w.node == config.node_name
                && let Ok(id) = w.identity()
            {
                certs.prefetch(&id);
            }
        }

        // In in-pod mode every listener lives inside a pod; none at node level.
        let host = if config.inpod.is_none() {
            Some(bind_host_listeners(&config).await?)
        } else {
            None
        };
        let bind = |what, addr: Option<SocketAddr>, setting| async move {
            match addr {
                Some(a) => endpoint::bind(what, a, setting).await.map(Some),
                None => Ok(None),
            }
        };
        let admin_listener = bind("admin", config.admin_addr, crate::config::ADMIN_ADDR).await?;
        let stats_listener = bind("stats", config.stats_addr, crate::config::STATS_ADDR).await?;
        let readiness_listener = bind(
            "readiness",
            config.readiness_addr,
            crate::config::READINESS_ADDR,
        )
        .await?;
        let mut registry = Registry::default();
        let metrics = TrafficMetrics::new(registry.sub_registry_with_prefix("istio"));
        mesh_telemetry::register_build(registry.sub_registry_with_prefix("istio"), "ztunnel");
        crate::metrics::register_crl_rejections(
            registry.sub_registry_with_prefix("istio"),
            &revocation,
        );
        stats::register_process(&mut registry);
        registry.register_collector(Box::new(crate::metrics::CertificateCollector(
            certs.clone(),
        )));
        let manager_metrics = config
            .inpod
            .is_some()
            .then(|| WorkloadManagerMetrics::new(&mut registry));
        let ready = Ready::new();
        let xds_stats = Arc::new(XdsClientStats::default());
        xds_stats.register(registry.sub_registry_with_prefix("istio"));
        let xds = config.xds.clone().map(|c| {
            let handler = StateHandler::new(state.clone(), true);
            XdsClient::new(c, handler, &ready, xds_stats.clone())
        });
        let connections = ConnectionManager::default();

        let inputs = Arc::new(ProxyInputs {
            config: Arc::new(config),
            state: state.clone(),
            certs: certs.clone(),
            pool: pool.clone(),
            connections: connections.clone(),
            sockets: Sockets::Host,
            metrics,
        });
        let (trigger, watcher) = drain::new();
        let mut tasks = Vec::new();
        if let Some(client) = xds {
            tasks.push(tokio::spawn(client.run(watcher.clone())));
        }
        tasks.push(tokio::spawn(
            connections
                .clone()
                .watch_policies(state.clone(), watcher.clone()),
        ));
        let drain = watcher.clone();
        tasks.push(tokio::spawn(revocation.watch(async move {
            drain.signaled().await;
        })));
        let (mut outbound_addr, mut inbound_addrs, mut inbound_plaintext_addr) =
            (None, vec![], None);
        if let Some(host) = host {
            outbound_addr = Some(host.outbound.local_addr()?);
            inbound_addrs = host
                .inbound
                .iter()
                .map(|l| l.local_addr())
                .collect::<Result<_, _>>()?;
            inbound_plaintext_addr = host
                .plaintext
                .as_ref()
                .map(|l| l.local_addr())
                .transpose()?;
            tasks.extend(host.serve(&inputs, &watcher));
        }
        let mut pods = None;
        if let Some(inpod) = inputs.config.inpod.clone() {
            let manager = WorkloadManager::new(
                inputs.clone(),
                inpod.clone(),
                &ready,
                manager_metrics.clone().unwrap_or_default(),
            );
            pods = Some(manager.states());
            tasks.push(tokio::spawn(crate::inpod::client::run(
                manager,
                inpod.uds,
                watcher.clone(),
            )));
        }
        let registry = Arc::new(registry);
        let mut stats_addr = None;
        if let Some(listener) = stats_listener {
            stats_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(stats::serve(
                listener,
                watcher.clone(),
                registry.clone(),
            )));
        }
        let mut readiness_addr = None;
        if let Some(listener) = readiness_listener {
            readiness_addr = Some(listener.local_addr()?);
            tasks.push(tokio::spawn(stats::serve_readiness(
                listener,
                watcher.clone(),
                ready.clone(),
            )));
        }
        let mut admin_addr = None;
        if let Some(listener) = admin_listener {
            admin_addr = Some(listener.local_addr()?);
            let admin = crate::admin::Admin {
                config: inputs.config.clone(),
                pods: pods.clone(),
                state: state.clone(),
                certs: certs.clone(),
                connections: connections.clone(),
            };
            tasks.push(tokio::spawn(admin.serve(listener, watcher.clone())));
        }
        drop(watcher);
        info!(?outbound_addr, ?admin_addr, ?inbound_addrs, inpod = inputs.config.inpod.is_some(), node = %inputs.config.node_name, "ztunnel started");
        Ok(Self {
            admin_addr,
            stats_addr,
            readiness_addr,
            registry,
            outbound_addr,
            inbound_addrs,
            inbound_plaintext_addr,
            certs,
            state,
            pool,
            ready,
            xds_stats,
            connections,
            pods,
            drain: trigger,
            tasks,
        })
    }

    /// Stops accepting, gives open connections the termination deadline, and
    /// returns when everything has finished.
    pub async fn shutdown(self) {
        self.drain.drain(DrainMode::Graceful).await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Binds the node-level listeners (not in-pod mode).
async fn bind_host_listeners(config: &Config) -> anyhow::Result<Listeners> {
    let outbound = TcpListener::bind(config.outbound_addr)
        .await
        .with_context(|| format!("binding the outbound listener {}", config.outbound_addr))?;
    let mut inbound = Vec::new();
    for addr in &config.inbound_addrs {
        let l = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the HBONE listener {addr}"))?;
        inbound.push(l);
    }
    let plaintext = match config.inbound_plaintext_addr {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding the plaintext inbound listener {addr}"))?,
        ),
        None => None,
    };
    Ok(Listeners {
        outbound,
        inbound,
        plaintext,
    })
}
