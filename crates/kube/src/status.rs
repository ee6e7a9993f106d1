//! Status back to users: the conditions istiod-lite writes on the objects
//! it reads, so `kubectl get ... -o yaml` says what became of them:
//! `ZtunnelAccepted` / `WaypointAccepted` on AuthorizationPolicies, and
//! `istio.io/WaypointBound` on Services that asked for a waypoint.
//!
//! istiod-lite decides the conditions (from its translation); this module
//! writes them, by server-side apply on the status subresource (field
//! manager `istiod-lite`), only when they change. A condition that no
//! longer applies is withdrawn by applying an empty list, which removes
//! only what this manager wrote.

use std::collections::BTreeMap;
use std::sync::Arc;

use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use mesh_model::Kind;
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::waypoint::FIELD_MANAGER;

/// What carries the conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum StatusKind {
    AuthorizationPolicy,
    Service,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct StatusKey {
    pub kind: StatusKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Condition {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// Every condition istiod-lite wants written, by object.
pub type Statuses = BTreeMap<StatusKey, Vec<Condition>>;

impl StatusKey {
    fn resource(&self) -> (ApiResource, &'static str) {
        match self.kind {
            StatusKind::AuthorizationPolicy => (
                crate::source::watched(Kind::AuthorizationPolicy).api_resource(),
                "security.istio.io/v1",
            ),
            StatusKind::Service => (crate::source::watched(Kind::Service).api_resource(), "v1"),
        }
    }
}

/// The apply body for `key`'s status.
pub fn body(key: &StatusKey, conditions: &[Condition], now: &str) -> serde_json::Value {
    let (resource, api_version) = key.resource();
    let conditions: Vec<serde_json::Value> = conditions
        .iter()
        .map(|c| {
            json!({
                "type": c.type_,
                "status": if c.status { "True" } else { "False" },
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": now,
            })
        })
        .collect();
    json!({
        "apiVersion": api_version,
        "kind": resource.kind,
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": {"conditions": conditions},
    })
}

/// Writes what changed between `written` and `wanted`; returns what is now
/// written. An object that is gone (404) is simply forgotten.
pub async fn write_changes(client: &Client, written: &Statuses, wanted: &Statuses) -> Statuses {
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    let mut result = written.clone();
    let withdrawn = written
        .keys()
        .filter(|k| !wanted.contains_key(*k))
        .map(|k| (k, &[][..]));
    let changed = wanted
        .iter()
        .filter(|(k, c)| written.get(*k) != Some(*c))
        .map(|(k, c)| (k, c.as_slice()));
    for (key, conditions) in withdrawn.chain(changed).collect::<Vec<_>>() {
        let (resource, _) = key.resource();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &resource);
        let patch = body(key, conditions, &now);
        match api
            .patch_status(&key.name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => {
                debug!(object = %format!("{:?} {}/{}", key.kind, key.namespace, key.name), "status written");
                if conditions.is_empty() {
                    result.remove(key);
                } else {
                    result.insert(key.clone(), conditions.to_vec());
                }
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                result.remove(key);
            }
            Err(e) => {
                // Left as it was: the next change retries.
                warn!(object = %format!("{:?} {}/{}", key.kind, key.namespace, key.name), error = %e,
                    "writing status failed");
            }
        }
    }
    result
}

/// Writes every change of `wanted` until it closes; what failed to be
/// written is tried again every [`RETRY`].
pub async fn run(client: Client, mut wanted: watch::Receiver<Arc<Statuses>>) {
    let mut written = Statuses::new();
    loop {
        let now = wanted.borrow_and_update().clone();
        written = write_changes(&client, &written, &now).await;
        tokio::select! {
            changed = wanted.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(RETRY), if written != *now => {}
        }
    }
}

/// How soon a status that could not be written is tried again.
pub const RETRY: std::time::Duration = std::time::Duration::from_secs(30);

#[cfg(test)]
mod tests;
