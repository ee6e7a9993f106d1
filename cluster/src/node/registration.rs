//! The node's `Node` object: created as a kubelet registers it, its
//! conditions reported on the status subresource.

use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Node as KubeNode;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use crate::config::{KUBERNETES_VERSION, Node};

/// How often the conditions' heartbeat is refreshed (the kubelet's
/// `nodeStatusReportFrequency`, shortened: the Lease is the liveness signal).
const HEARTBEAT: Duration = Duration::from_secs(60);

/// Creates the `Node`, or finds it already there (a restarted simulator).
pub async fn register(client: &Client, node: &Node) -> anyhow::Result<()> {
    let nodes: Api<KubeNode> = Api::all(client.clone());
    let object: KubeNode = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": node.name,
            "labels": {
                "kubernetes.io/hostname": node.name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
        },
    }))?;
    match nodes.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("registering node {}", node.name)),
    }
}

/// Waits for the controller-manager to give the node its pod range.
pub async fn wait_pod_cidr(
    client: &Client,
    node: &Node,
    bound: Duration,
) -> anyhow::Result<String> {
    let nodes: Api<KubeNode> = Api::all(client.clone());
    let start = Instant::now();
    loop {
        let seen = nodes.get(&node.name).await?;
        if let Some(cidr) = seen.spec.and_then(|s| s.pod_cidr) {
            return Ok(cidr);
        }
        anyhow::ensure!(
            start.elapsed() < bound,
            "node {} got no spec.podCIDR within {bound:?}; the controller-manager allocates it \
             (--allocate-node-cidrs): see its log",
            node.name
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes the node's status: addresses, capacity, version and conditions.
pub async fn report_ready(client: &Client, node: &Node) -> anyhow::Result<()> {
    let now = now_rfc3339();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| {
        json!({
            "type": type_, "status": status, "reason": reason, "message": message,
            "lastHeartbeatTime": now, "lastTransitionTime": now,
        })
    };
    let resources =
        json!({ "cpu": "2", "memory": "8Gi", "pods": "110", "ephemeral-storage": "20Gi" });
    let status = json!({
        "status": {
            "addresses": [
                { "type": "InternalIP", "address": node.ip.to_string() },
                { "type": "Hostname", "address": node.name },
            ],
            "capacity": resources,
            "allocatable": resources,
            "daemonEndpoints": { "kubeletEndpoint": { "Port": 10250 } },
            // The API server then hands exec and port-forward WebSockets to
            // the node as they come, instead of translating them to SPDY.
            "declaredFeatures": ["ExtendWebSocketsToKubelet"],
            "nodeInfo": {
                "kubeletVersion": KUBERNETES_VERSION,
                "kubeProxyVersion": KUBERNETES_VERSION,
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH,
                "containerRuntimeVersion": "mesh-node-simulator://0.1",
                "osImage": "network namespace",
                "kernelVersion": "", "machineID": "", "systemUUID": "", "bootID": "",
            },
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", "True", "KubeletReady", "kubelet is posting ready status"),
            ],
        },
    });
    Api::<KubeNode>::all(client.clone())
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .with_context(|| format!("reporting node {}'s status", node.name))?;
    Ok(())
}

/// Refreshes the conditions every [`HEARTBEAT`]; a failure is logged and
/// retried at the next beat.
pub async fn heartbeat(client: Client, node: Node) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        if let Err(e) = report_ready(&client, &node).await {
            tracing::warn!(node = %node.name, error = %format!("{e:#}"), "node status not reported");
        }
    }
}

/// Now, as Kubernetes writes a `Time` (whole seconds, UTC).
pub fn now_rfc3339() -> String {
    let format =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");
    time::OffsetDateTime::now_utc()
        .format(&format)
        .expect("a UTC time formats")
}

/// Now, as Kubernetes writes a `MicroTime` (six fractional digits, UTC).
pub fn now_micro() -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
    );
    time::OffsetDateTime::now_utc()
        .format(&format)
        .expect("a UTC time formats")
}
