//! The ConfigMaps and Secrets a pod refers to, read as the kubelet reads
//! them for its volumes and its environment: every key with its bytes
//! (`binaryData` and `stringData` included). A missing object is an error
//! naming it, unless the reference is `optional`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Secret,
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        })
    }
}

/// The object's keys and values; empty if it is missing and `optional`.
pub async fn data(
    client: &Client,
    ns: &str,
    kind: Kind,
    name: &str,
    optional: bool,
) -> Result<BTreeMap<String, Vec<u8>>, String> {
    let found = match kind {
        Kind::ConfigMap => Api::<ConfigMap>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map(|o| {
                o.map(|cm| {
                    let mut data: BTreeMap<String, Vec<u8>> = cm
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.into_bytes()))
                        .collect();
                    data.extend(
                        cm.binary_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0)),
                    );
                    data
                })
            }),
        Kind::Secret => Api::<Secret>::namespaced(client.clone(), ns)
            .get_opt(name)
            .await
            .map(|o| {
                o.map(|secret| {
                    let mut data: BTreeMap<String, Vec<u8>> = secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.0))
                        .collect();
                    data.extend(
                        secret
                            .string_data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes())),
                    );
                    data
                })
            }),
    };
    match found {
        Ok(Some(data)) => Ok(data),
        Ok(None) if optional => Ok(BTreeMap::new()),
        Ok(None) => Err(format!("{kind} {ns}/{name} not found")),
        Err(e) => Err(format!("{kind} {ns}/{name}: {e}")),
    }
}
