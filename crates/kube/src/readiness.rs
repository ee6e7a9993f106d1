//! Whether what `install` applied runs. istioctl says a component is
//! installed only once its Deployments and DaemonSets are ready, waiting at
//! most `--readiness-timeout` (5 minutes by default), and on timeout names
//! each workload still not ready; so do we.

use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use kube::{Api, Client};
use serde_yaml::Value;

/// istioctl's `--readiness-timeout` default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
const POLL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
#[error("resources not ready after {}s: {}", timeout.as_secs(), pending.join(", "))]
pub struct NotReady {
    pub timeout: Duration,
    /// `Kind/namespace/name (why)`, one per workload not ready.
    pub pending: Vec<String>,
}

/// Waits until every Deployment and DaemonSet among `objects` is ready.
pub async fn wait(client: &Client, objects: &[Value], timeout: Duration) -> Result<(), NotReady> {
    let start = Instant::now();
    loop {
        let mut pending = Vec::new();
        for o in objects {
            let (Some(ns), Some(name)) = (
                o["metadata"]["namespace"].as_str(),
                o["metadata"]["name"].as_str(),
            ) else {
                continue;
            };
            let why = match o["kind"].as_str() {
                Some("Deployment") => {
                    let api: Api<Deployment> = Api::namespaced(client.clone(), ns);
                    match api.get_opt(name).await {
                        Ok(Some(d)) => deployment_not_ready(&d),
                        Ok(None) => Some("not found".to_string()),
                        Err(e) => Some(e.to_string()),
                    }
                }
                Some("DaemonSet") => {
                    let api: Api<DaemonSet> = Api::namespaced(client.clone(), ns);
                    match api.get_opt(name).await {
                        Ok(Some(d)) => daemon_set_not_ready(&d),
                        Ok(None) => Some("not found".to_string()),
                        Err(e) => Some(e.to_string()),
                    }
                }
                _ => continue,
            };
            if let Some(why) = why {
                pending.push(format!(
                    "{}/{ns}/{name} ({why})",
                    o["kind"].as_str().unwrap_or_default()
                ));
            }
        }
        if pending.is_empty() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(NotReady { timeout, pending });
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Why a Deployment is not ready yet: its latest generation seen, all its
/// replicas updated and ready.
pub fn deployment_not_ready(d: &Deployment) -> Option<String> {
    let want = d.spec.replicas.unwrap_or(1);
    let status = d.status.clone().unwrap_or_default();
    if status.observed_generation < d.metadata.generation {
        return Some("its latest spec not yet seen".into());
    }
    let ready = status.ready_replicas.unwrap_or(0);
    let updated = status.updated_replicas.unwrap_or(0);
    (ready < want || updated < want).then(|| format!("{ready} of {want} ready"))
}

/// Why a DaemonSet is not ready yet: every scheduled pod updated and ready.
pub fn daemon_set_not_ready(d: &DaemonSet) -> Option<String> {
    let Some(status) = d.status.as_ref() else {
        return Some("no status yet".into());
    };
    if status.observed_generation < d.metadata.generation {
        return Some("its latest spec not yet seen".into());
    }
    let want = status.desired_number_scheduled;
    let ready = status.number_ready;
    let updated = status.updated_number_scheduled.unwrap_or(0);
    (ready < want || updated < want).then(|| format!("{ready} of {want} ready"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_means_every_replica_updated_and_ready_at_the_latest_generation() {
        let deployment = |generation: i64, observed: i64, ready: i32| -> Deployment {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "istiod", "generation": generation },
                "spec": { "replicas": 1, "selector": {}, "template": {} },
                "status": { "observedGeneration": observed, "readyReplicas": ready,
                            "updatedReplicas": ready },
            }))
            .unwrap()
        };
        assert_eq!(deployment_not_ready(&deployment(2, 2, 1)), None);
        assert_eq!(
            deployment_not_ready(&deployment(2, 2, 0)).as_deref(),
            Some("0 of 1 ready")
        );
        assert!(deployment_not_ready(&deployment(3, 2, 1)).is_some());

        let daemon_set = |desired: i32, ready: i32| -> DaemonSet {
            serde_json::from_value(serde_json::json!({
                "metadata": { "name": "ztunnel", "generation": 1 },
                "spec": { "selector": {}, "template": {} },
                "status": { "observedGeneration": 1, "desiredNumberScheduled": desired,
                            "numberReady": ready, "updatedNumberScheduled": ready,
                            "currentNumberScheduled": desired, "numberMisscheduled": 0 },
            }))
            .unwrap()
        };
        assert_eq!(daemon_set_not_ready(&daemon_set(2, 2)), None);
        assert_eq!(
            daemon_set_not_ready(&daemon_set(2, 1)).as_deref(),
            Some("1 of 2 ready")
        );
    }

    #[test]
    fn the_error_names_each_workload_as_istioctl_does() {
        let e = NotReady {
            timeout: Duration::from_secs(300),
            pending: vec!["Deployment/istio-system/istiod (0 of 1 ready)".into()],
        };
        assert_eq!(
            e.to_string(),
            "resources not ready after 300s: Deployment/istio-system/istiod (0 of 1 ready)"
        );
    }
}
