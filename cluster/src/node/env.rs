//! A container's environment as the kubelet builds it: `envFrom` first
//! (every key of a ConfigMap or Secret, with its prefix), then `env` in
//! order (values, fieldRefs, ConfigMap and Secret keys), later names
//! winning. A missing object or key that is not `optional` keeps the
//! container from starting, with the kubelet's reason.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;

use super::objects::{self, Kind};

/// Why a container cannot start yet: the kubelet's waiting reason.
pub const CONFIG_ERROR: &str = "CreateContainerConfigError";

/// Where the pod runs: its address and its node's.
pub struct Addresses<'a> {
    pub pod_ip: &'a str,
    pub host_ip: &'a str,
}

pub async fn resolve(
    client: &Client,
    pod: &Pod,
    at: &Addresses<'_>,
    c: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mut objects = Objects {
        client,
        ns: &ns,
        read: BTreeMap::new(),
    };
    let mut env: Vec<(String, String)> = Vec::new();
    for from in c.env_from.clone().unwrap_or_default() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data = if let Some(r) = &from.config_map_ref {
            let optional = r.optional.unwrap_or(false);
            objects.get(Kind::ConfigMap, &r.name, optional).await?
        } else if let Some(r) = &from.secret_ref {
            objects
                .get(Kind::Secret, &r.name, r.optional.unwrap_or(false))
                .await?
        } else {
            continue;
        };
        env.extend(data.into_iter().map(|(k, v)| (format!("{prefix}{k}"), v)));
    }
    for var in c.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, None) => String::new(),
            (None, Some(from)) => {
                if let Some(field) = &from.field_ref {
                    field_value(pod, at, &field.field_path).ok_or_else(|| {
                        format!(
                            "env {:?}: fieldRef {:?} is not one the node simulator knows",
                            var.name, field.field_path
                        )
                    })?
                } else if let Some(key) = &from.config_map_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    let data = objects.get(Kind::ConfigMap, &key.name, optional).await?;
                    match data.get(&key.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {ns}/{}",
                                key.key, key.name
                            ));
                        }
                    }
                } else if let Some(key) = &from.secret_key_ref {
                    let optional = key.optional.unwrap_or(false);
                    let data = objects.get(Kind::Secret, &key.name, optional).await?;
                    match data.get(&key.key) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {ns}/{}",
                                key.key, key.name
                            ));
                        }
                    }
                } else {
                    return Err(format!(
                        "env {:?}: a valueFrom the node simulator does not resolve (it resolves fieldRef, configMapKeyRef, secretKeyRef)",
                        var.name
                    ));
                }
            }
        };
        env.retain(|(name, _)| *name != var.name);
        env.push((var.name.clone(), value));
    }
    Ok(env)
}

fn field_value(pod: &Pod, at: &Addresses<'_>, path: &str) -> Option<String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    Some(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => at.pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => at.host_ip.to_string(),
        _ => {
            // metadata.labels['key'] and metadata.annotations['key']
            let (map, key) = path
                .strip_prefix("metadata.labels['")
                .map(|k| (&m.labels, k))
                .or_else(|| {
                    path.strip_prefix("metadata.annotations['")
                        .map(|k| (&m.annotations, k))
                })?;
            let key = key.strip_suffix("']")?;
            map.as_ref()
                .and_then(|m| m.get(key).cloned())
                .unwrap_or_default()
        }
    })
}

/// The ConfigMaps and Secrets one container refers to, each read once.
struct Objects<'a> {
    client: &'a Client,
    ns: &'a str,
    read: BTreeMap<(Kind, String), BTreeMap<String, String>>,
}

impl Objects<'_> {
    async fn get(
        &mut self,
        kind: Kind,
        name: &str,
        optional: bool,
    ) -> Result<BTreeMap<String, String>, String> {
        let key = (kind, name.to_string());
        if let Some(data) = self.read.get(&key) {
            return Ok(data.clone());
        }
        let data: BTreeMap<String, String> =
            objects::data(self.client, self.ns, kind, name, optional)
                .await?
                .into_iter()
                .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
                .collect();
        self.read.insert(key, data.clone());
        Ok(data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_refs_cover_names_addresses_labels_and_annotations() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": { "name": "p", "namespace": "n", "uid": "u",
                          "labels": { "app": "web" }, "annotations": { "a/b": "c" } },
            "spec": { "nodeName": "node-1", "serviceAccountName": "sa", "containers": [] },
        }))
        .unwrap();
        let at = Addresses {
            pod_ip: "10.244.1.5",
            host_ip: "10.210.0.11",
        };
        let get = |path| field_value(&pod, &at, path);
        assert_eq!(get("metadata.name").as_deref(), Some("p"));
        assert_eq!(get("spec.nodeName").as_deref(), Some("node-1"));
        assert_eq!(get("status.podIP").as_deref(), Some("10.244.1.5"));
        assert_eq!(get("metadata.labels['app']").as_deref(), Some("web"));
        assert_eq!(get("metadata.annotations['a/b']").as_deref(), Some("c"));
        assert_eq!(get("metadata.labels['none']").as_deref(), Some(""));
        assert_eq!(get("status.hostIP").as_deref(), Some("10.210.0.11"));
        assert_eq!(get("status.nominatedNodeName"), None);
    }
}
