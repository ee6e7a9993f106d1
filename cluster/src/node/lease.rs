//! The node's `Lease` in `kube-node-lease`, renewed every 10 s as the
//! kubelet does: the node-lifecycle controller marks a node NotReady and
//! evicts its pods when the renewals stop.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;

use super::registration::now_micro;

const NAMESPACE: &str = "kube-node-lease";
const RENEW_EVERY: Duration = Duration::from_secs(10);
const DURATION_SECONDS: i32 = 40;

/// Renews forever; a failed renewal is logged and tried again at the next tick.
pub async fn renew(client: Client, node: String) {
    let leases: Api<Lease> = Api::namespaced(client, NAMESPACE);
    loop {
        if let Err(e) = renew_once(&leases, &node).await {
            tracing::warn!(%node, error = %e, "node lease not renewed");
        }
        tokio::time::sleep(RENEW_EVERY).await;
    }
}

async fn renew_once(leases: &Api<Lease>, node: &str) -> Result<(), kube::Error> {
    let spec = json!({
        "holderIdentity": node,
        "leaseDurationSeconds": DURATION_SECONDS,
        "renewTime": now_micro(),
    });
    let patch = json!({ "spec": spec });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": { "name": node, "namespace": NAMESPACE },
                "spec": spec,
            }))
            .expect("a lease built from literals deserializes");
            leases
                .create(&PostParams::default(), &lease)
                .await
                .map(drop)
        }
        Err(e) => Err(e),
    }
}
