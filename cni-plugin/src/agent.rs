//! The node agent (`cni-agent`): one per node. It learns pod sandboxes from
//! the CNI plugin, enrollment from the model, captures enrolled pods with
//! in-pod redirection, and hands them to ztunnel over ZDS.
//!
//! - [`config`]: flags and environment;
//! - [`pods`]: the decisions (capture, release, repair), one event at a time;
//! - [`redirect`]: how a pod's traffic reaches ztunnel (nftables or eBPF);
//! - [`zds`]: the server ztunnel connects to;
//! - [`plugin_server`]: the socket the CNI plugin calls;
//! - [`discover`]: finding a pod's namespace by its IP.
//!
//! **Architecture Invariant:** a pod's redirection rules exist only while a
//! ztunnel has acknowledged the pod (or the agent has it in the snapshot it
//! gives every ztunnel that connects), so capture never outlives the
//! agent's intent, and traffic of a captured pod never leaves it in
//! plaintext: with no ztunnel, its connections are refused.

pub mod config;
pub mod discover;
pub mod install;
pub mod metrics;
pub mod plugin_server;
pub mod pods;
pub mod redirect;
pub mod zds;

use std::collections::BTreeMap;
use std::sync::Arc;

use mesh_model::Model;
use mesh_model::manifests::{self, ManifestDir};

use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

pub use config::Config;

use crate::protocol::{AgentReply, PluginEvent};

/// What the agent writes to its status file.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub node: String,
    pub redirection: redirect::RedirectionStatus,
    pub ztunnels_connected: usize,
    pub pods: BTreeMap<String, pods::PodStatus>,
}

/// A running agent.
pub struct Agent {
    drain: DrainTrigger,
    tasks: Vec<JoinHandle<()>>,
}

/// How long a CNI ADD waits for the model to learn of its pod.
const MODEL_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(2);

/// The agent's budget for a CNI ADD, from the request's arrival to the
/// answer: the model's catch-up and ztunnel's acknowledgement included,
/// under the plugin's 10 s (`plugin::client::DEFAULT_AGENT_TIMEOUT`) with
/// room for the reply to travel, so that the agent's answer is the one the
/// runtime sees rather than the plugin's timeout.
const ADD_BUDGET: std::time::Duration = std::time::Duration::from_secs(8);
const _: () = assert!(ADD_BUDGET.as_secs() + 2 <= crate::plugin::DEFAULT_AGENT_TIMEOUT.as_secs());

type PluginRequest = (PluginEvent, oneshot::Sender<AgentReply>);

impl Agent {
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        check_tools(config.redirection)?;
        let redirector =
            redirect::Redirector::new(config.redirection, config.ebpf_object.as_deref());
        if let Some(e) = redirector.startup_error() {
            // Running on lets pods outside the mesh start; enrolled pods
            // are refused with this message rather than run uncaptured.
            error!(redirection = ?config.redirection, error = %e,
                "the redirection cannot capture pods on this node; enrolled pods will be refused");
        }
        let (trigger, watcher) = drain::new();
        let zds = zds::ZdsServer::default();
        let mut tasks = Vec::new();

        let (models_tx, mut models) = watch::channel(Arc::new(Model::default()));
        match config.source()? {
            config::Source::Manifests(manifest_dir) => {
                let mut dir = ManifestDir::new(&manifest_dir);
                let first = dir.scan().map_err(|e| {
                    anyhow::anyhow!(
                        "reading the manifest directory {}: {e}",
                        manifest_dir.display()
                    )
                })?;
                for e in &first.errors {
                    warn!("invalid manifest: {e}");
                }
                models_tx.send_replace(Arc::new(dir.model()));
                tasks.push(tokio::spawn(manifests::watch_dir(
                    dir,
                    config.manifest_poll_interval,
                    models_tx,
                    Default::default(),
                    watcher.clone(),
                )));
            }
            config::Source::Kubernetes(kubeconfig) => {
                let client = mesh_kube::source::connect(
                    kubeconfig.as_deref(),
                    mesh_kube::source::CONNECT_TIMEOUT,
                )
                .await?;
                // Only this node's pods: the agent captures no others.
                let own_pods = format!("spec.nodeName={}", config.node_name);
                let (source, model) = mesh_kube::source::KubeSource::start_selected(
                    client,
                    &mesh_kube::source::ENROLLMENT,
                    Some(&own_pods),
                    mesh_kube::source::SYNC_TIMEOUT,
                )
                .await?;
                models_tx.send_replace(Arc::new(model));
                tasks.push(tokio::spawn(source.run(models_tx, watcher.clone())));
            }
        }
        if let Some(install) = config.install() {
            let entry = install::Entry {
                agent_socket: config.plugin_socket.clone(),
                excluded_namespaces: config.excluded_namespaces.clone(),
            };
            let written =
                install::install(&install.binary, &install.bin_dir, &install.conf_dir, &entry)?;
            info!(config = %written.display(), bin_dir = %install.bin_dir.display(),
                "mesh-cni installed and chained into the node's network config");
        }

        // Bound before returning, so a ztunnel started next finds it.
        let zds_listener = zds::ZdsServer::listen(&config.zds_socket).map_err(|e| {
            anyhow::anyhow!(
                "listening for ztunnel at {}: {e}",
                config.zds_socket.display()
            )
        })?;
        tasks.push(tokio::spawn(
            zds.clone().serve(zds_listener, watcher.clone()),
        ));

        let (plugin_tx, mut plugin_rx) = mpsc::channel::<PluginRequest>(64);
        let plugin_listener = plugin_server::bind(&config.plugin_socket)?;
        tasks.push(tokio::spawn(plugin_server::serve(
            plugin_listener,
            plugin_tx,
            watcher.clone(),
        )));

        let latest = metrics::Latest::default();
        if let Some(addr) = config.monitoring()? {
            let listener =
                mesh_runtime::endpoint::bind("monitoring", addr, "MONITORING_ADDR").await?;
            let mut registry = prometheus_client::registry::Registry::default();
            registry.register_collector(Box::new(metrics::StatusCollector(latest.clone())));
            mesh_runtime::stats::register_process(&mut registry);
            mesh_telemetry::register_build(registry.sub_registry_with_prefix("istio"), "istio-cni");
            let registry = Arc::new(registry);
            tasks.push(tokio::spawn(mesh_runtime::stats::serve(
                listener,
                watcher.clone(),
                registry.clone(),
            )));
        }
        let mut pods = pods::Pods::new(config.clone(), redirector, zds.clone());
        let status_file = config.status_file.clone();
        let interval = config.reconcile_interval;
        let watcher_main = watcher.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let model: Arc<Model> = models.borrow_and_update().clone();
            pods.model_changed(model).await;
            zds.open();
            loop {
                tokio::select! {
                    Some((event, reply)) = plugin_rx.recv() => {
                        let answer_by = tokio::time::Instant::now() + ADD_BUDGET;
                        // The API object exists before its sandbox; give a
                        // model that lags behind it a moment to catch up, so
                        // the pod is handed over with its real identity.
                        let key = (event.pod_namespace.clone(), event.pod_name.clone());
                        let known = models.borrow().pods.contains_key(&key);
                        if event.command == crate::protocol::Command::Add && !known {
                            let wait = async {
                                models.wait_for(|m| m.pods.contains_key(&key)).await.is_ok()
                            };
                            let _caught_up = tokio::time::timeout(MODEL_CATCH_UP, wait).await;
                            let model = models.borrow_and_update().clone();
                            pods.model_changed(model).await;
                        }
                        let answer = pods.plugin_event(event, answer_by).await;
                        let _ = reply.send(answer);
                    }
                    Ok(()) = models.changed() => {
                        let model = models.borrow_and_update().clone();
                        pods.model_changed(model).await;
                    }
                    _ = tick.tick() => pods.reconcile().await,
                    _ = watcher_main.signaled() => break,
                }
                let status = Status {
                    node: pods.node().to_string(),
                    redirection: pods.redirection(),
                    ztunnels_connected: zds.connected(),
                    pods: pods.status(),
                };
                if let Some(path) = &status_file {
                    write_status(path, &status);
                }
                *latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(status);
            }
            // Captured pods keep their rules: traffic stays captured (and
            // fails closed) while the agent is away, as upgrades need.
            info!("node agent stopping; pods stay captured");
        }));
        drop(watcher);
        info!(node = %config.node_name, redirection = ?config.redirection, "node agent started");
        Ok(Self {
            drain: trigger,
            tasks,
        })
    }

    pub async fn shutdown(self) {
        self.drain.drain(DrainMode::Graceful).await;
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn write_status(path: &std::path::Path, status: &Status) {
    let Ok(json) = serde_json::to_vec_pretty(status) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if let Err(e) = std::fs::write(&tmp, json).and_then(|()| std::fs::rename(&tmp, path)) {
        warn!(path = %path.display(), error = %e, "cannot write the status file");
    }
}

/// The agent is useless without the tools its redirection runs; say so at
/// start, not at the first pod.
fn check_tools(mode: config::Redirection) -> anyhow::Result<()> {
    let tools: &[(&str, [&str; 1])] = match mode {
        config::Redirection::Nftables => &[("nft", ["--version"]), ("ip", ["-V"])],
        config::Redirection::Ebpf => &[("tc", ["-V"]), ("ip", ["-V"])],
    };
    for (tool, args) in tools {
        let ok = std::process::Command::new(tool)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !ok {
            anyhow::bail!(
                "`{tool}` is not available; the {mode:?} redirection needs it (apt-get install nftables iproute2)"
            );
        }
    }
    Ok(())
}
