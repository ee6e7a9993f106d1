//! `up`, `down` and `status`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::config::{Layout, Node, UpArgs};
use crate::{addons, api, control_plane, network, processes};

const API_READY_WAIT: Duration = Duration::from_secs(60);
const NODES_READY_WAIT: Duration = Duration::from_secs(60);
/// CoreDNS scheduled, started and Ready after the nodes are.
const DNS_READY_WAIT: Duration = Duration::from_secs(60);
/// SIGTERM's grace before SIGKILL, at `down`.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// What `up` measured.
#[derive(Debug, Clone)]
pub struct Started {
    /// From the start to the API server's `/readyz`.
    pub api_ready: Duration,
    /// From the start to every node Ready.
    pub nodes_ready: Duration,
    /// From the start to cluster DNS answering (kube-proxy and CoreDNS up).
    pub dns_ready: Duration,
}

/// Brings up the control plane and `args.nodes` nodes, returning once every
/// node is Ready. A state directory left by a dead run is cleaned first;
/// a running cluster is an error. `node_program` is the `cluster` binary,
/// run once per node as `cluster node`.
pub async fn up(layout: &Layout, args: &UpArgs, node_program: &Path) -> anyhow::Result<Started> {
    let count = args.nodes;
    let running: Vec<_> = processes::recorded(layout)
        .into_iter()
        .filter(|p| p.alive())
        .map(|p| p.name)
        .collect();
    if !running.is_empty() {
        bail!(
            "a cluster is already running from {} ({}); `cluster down` stops it",
            layout.state.display(),
            running.join(", ")
        );
    }
    down(layout)?;
    let start = Instant::now();
    let nodes: Vec<Node> = (1..=count).map(Node::new).collect();
    std::fs::create_dir_all(&layout.state)
        .with_context(|| format!("creating {}", layout.state.display()))?;
    control_plane::write_credentials(layout, &nodes)?;
    network::bridge_up().context("creating the cluster bridge")?;
    control_plane::start_etcd(layout)?;
    control_plane::start_apiserver(layout)?;
    let admin = api::client(&layout.kubeconfig("admin")).await?;
    tokio::select! {
        ready = api::wait_ready(&admin, API_READY_WAIT) => ready.with_context(|| {
            format!("see {}", control_plane::log_of(layout, "kube-apiserver"))
        })?,
        exited = watch_exit(layout, "kube-apiserver") => exited?,
    }
    let api_ready = start.elapsed();
    control_plane::grant_network(&admin)
        .await
        .context("granting the nodes' network add-on its role")?;
    control_plane::start_controllers(layout)?;
    for node in &nodes {
        let mut node_args = vec![
            format!("--state={}", layout.state.display()),
            format!("--bin={}", layout.bin.display()),
            "node".to_string(),
            format!("--index={}", node.index),
        ];
        if let Some(seconds) = args.token_refresh {
            node_args.push(format!("--token-refresh={seconds}"));
        }
        processes::spawn(layout, &node.name, node_program, &node_args)?;
    }
    let names: Vec<String> = nodes.iter().map(|n| n.name.clone()).collect();
    api::wait_nodes_ready(&admin, &names, NODES_READY_WAIT)
        .await
        .with_context(|| {
            format!(
                "the nodes' logs are in {}, the controller-manager's is {}",
                layout.logs().display(),
                control_plane::log_of(layout, "kube-controller-manager")
            )
        })?;
    let nodes_ready = start.elapsed();
    for node in &nodes {
        control_plane::start_kube_proxy(layout, node, node_program)?;
    }
    addons::apply(layout, addons::COREDNS).context("applying cluster DNS")?;
    addons::wait_dns(&admin, DNS_READY_WAIT)
        .await
        .with_context(|| {
            format!(
                "the CoreDNS pod's log is under {}",
                layout
                    .state
                    .join("nodes/*/var/log/pods/kube-system_coredns-*")
                    .display()
            )
        })?;
    Ok(Started {
        api_ready,
        nodes_ready,
        dns_ready: start.elapsed(),
    })
}

/// Resolves with an error as soon as `component`'s process is gone.
async fn watch_exit(layout: &Layout, component: &str) -> anyhow::Result<()> {
    loop {
        control_plane::check_alive(layout, component)?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Stops every recorded process, removes the node namespaces and the
/// bridge, and deletes the state directory. Works on what a crashed run
/// left; prints what it removed.
pub fn down(layout: &Layout) -> anyhow::Result<Vec<String>> {
    let mut removed: Vec<String> = processes::stop(&processes::recorded(layout), STOP_GRACE)
        .into_iter()
        .map(|name| format!("process {name}"))
        .collect();
    removed.extend(network::teardown());
    removed.extend(
        crate::node::remove_mount_points(&layout.mount_points())
            .into_iter()
            .map(|p| format!("mount point {p}")),
    );
    if layout.state.exists() {
        std::fs::remove_dir_all(&layout.state)
            .with_context(|| format!("removing {}", layout.state.display()))?;
        removed.push(format!("state directory {}", layout.state.display()));
    }
    Ok(removed)
}

/// One line per process and per node.
pub async fn status(layout: &Layout) -> anyhow::Result<Vec<String>> {
    let recorded = processes::recorded(layout);
    if recorded.is_empty() {
        return Ok(vec![format!("no cluster in {}", layout.state.display())]);
    }
    let mut lines: Vec<String> = recorded
        .iter()
        .map(|p| {
            let state = if p.alive() { "running" } else { "EXITED" };
            format!("{:<26} pid {:<8} {state}", p.name, p.pid)
        })
        .collect();
    let admin = api::client(&layout.kubeconfig("admin")).await?;
    match api::nodes(&admin).await {
        Ok(nodes) => lines.extend(nodes.into_iter().map(|(name, ready)| {
            format!(
                "node {name:<21} {}",
                if ready { "Ready" } else { "NotReady" }
            )
        })),
        Err(e) => lines.push(format!("API server: {e}")),
    }
    Ok(lines)
}
