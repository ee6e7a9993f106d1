//! The node simulator: what a kubelet does for its node, in a network
//! namespace on this machine. It registers its `Node`, renews its `Lease`,
//! reports its conditions, routes to the other nodes' pods, and keeps the
//! network configuration its pods will be wired by.

mod container;
mod dns;
mod enter;
mod env;
mod exec;
mod filesystem;
mod images;
mod kubelet;
mod lease;
mod mounts;
mod objects;
mod pod;
mod pods;
mod portforward;
mod probe;
mod registration;
mod routes;
mod running;
mod volumes;
mod websocket;

pub use enter::{parse_bind, run as enter};
pub use mounts::remove_mount_points;

use std::time::Duration;

use anyhow::Context;
use kube::Client;

use crate::config::{Layout, Node};
use crate::{api, network};

/// How long a new node waits for the controller-manager to give it a pod range.
const POD_CIDR_WAIT: Duration = Duration::from_secs(30);

/// Runs the node until SIGTERM or SIGINT. `token_refresh` caps how long a
/// projected token lives before it is rotated (`up --token-refresh`).
pub async fn run(
    layout: &Layout,
    node: Node,
    token_refresh: Option<Duration>,
) -> anyhow::Result<()> {
    network::node_up(&node).context("wiring the node's network namespace")?;
    let client = api::client(&layout.kubeconfig(&node.name)).await?;
    registration::register(&client, &node).await?;
    let cidr = registration::wait_pod_cidr(&client, &node, POD_CIDR_WAIT).await?;
    network::pod_route(None, &cidr, &node.ip.to_string())
        .context("routing the node's pod range from the host")?;
    write_network_config(layout, &node, &cidr)?;
    registration::report_ready(&client, &node).await?;
    tracing::info!(node = %node.name, pod_cidr = %cidr, "node registered and Ready");

    let network = api::client(&layout.kubeconfig("network")).await?;
    let program = std::env::current_exe().context("finding the cluster binary")?;
    let running = std::sync::Arc::new(running::Running::default());
    let tasks = [
        tokio::spawn(lease::renew(client.clone(), node.name.clone())),
        tokio::spawn(routes::follow(network, node.clone())),
        tokio::spawn(registration::heartbeat(client.clone(), node.clone())),
        tokio::spawn({
            let (layout, node) = (layout.clone(), node.clone());
            let (running, program) = (running.clone(), program.clone());
            async move {
                if let Err(e) = kubelet::serve(layout, node, running, program).await {
                    tracing::error!(error = %format!("{e:#}"), "the kubelet endpoint stopped; kubectl logs and exec will fail");
                }
            }
        }),
        tokio::spawn(pods::follow(
            client.clone(),
            std::sync::Arc::new(pod::Runtime {
                node: node.clone(),
                layout: layout.clone(),
                token_refresh,
                program,
                running,
            }),
        )),
    ];
    wait_for_signal().await;
    for task in tasks {
        task.abort();
    }
    tracing::info!(node = %node.name, "node stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

/// The pod network a cluster's network add-on would install on the node:
/// the reference `bridge` plugin with `host-local` addresses from the
/// node's pod range, as the first conflist of the node's CNI directory.
fn write_network_config(layout: &Layout, node: &Node, cidr: &str) -> anyhow::Result<()> {
    let dir = layout.node_root(node).join("etc/cni/net.d");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let config = serde_json::json!({
        "cniVersion": "1.0.0",
        "name": "cluster",
        "plugins": [{
            "type": "bridge",
            "bridge": "cni0",
            "isGateway": true,
            "ipMasq": false,
            "ipam": {
                "type": "host-local",
                "ranges": [[{ "subnet": cidr }]],
                "routes": [{ "dst": "0.0.0.0/0" }],
                "dataDir": layout.node_root(node).join("var/lib/cni/networks").display().to_string(),
            },
        }],
    });
    let path = dir.join("10-cluster.conflist");
    std::fs::write(&path, serde_json::to_string_pretty(&config)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// For tests and `status`: a client as the node.
pub async fn client(layout: &Layout, node: &Node) -> anyhow::Result<Client> {
    Ok(api::client(&layout.kubeconfig(&node.name)).await?)
}
