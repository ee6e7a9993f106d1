//! Routes to the other nodes' pods, host-gw style: each node's pod range
//! via that node's address on the bridge, kept as nodes come and go.

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::config::Node;
use crate::network;

/// Follows the cluster's nodes until aborted; the watcher retries with back-off.
pub async fn follow(client: Client, me: Node) {
    let nodes: Api<KubeNode> = Api::all(client);
    let stream = watcher(nodes, watcher::Config::default())
        .default_backoff()
        .applied_objects();
    futures::pin_mut!(stream);
    loop {
        match stream.try_next().await {
            Ok(Some(other)) => route_to(&me, &other),
            Ok(None) => return,
            Err(e) => tracing::warn!(error = %e, "watching nodes"),
        }
    }
}

fn route_to(me: &Node, other: &KubeNode) {
    if other.metadata.name.as_deref() == Some(me.name.as_str()) {
        return;
    }
    let Some(cidr) = other.spec.as_ref().and_then(|s| s.pod_cidr.as_deref()) else {
        return;
    };
    let Some(ip) = other
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .and_then(|a| a.iter().find(|a| a.type_ == "InternalIP"))
    else {
        return;
    };
    if let Err(e) = network::pod_route(Some(&me.netns), cidr, &ip.address) {
        tracing::warn!(error = %e, "route to another node's pods");
    }
}
