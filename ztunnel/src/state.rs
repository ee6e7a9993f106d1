//! What this proxy knows about the mesh's workloads.
//!
//! Today the source is a local file (`LOCAL_XDS_PATH`); xDS feeds the same
//! store later. One writer, many readers.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use mesh_core::{Network, NetworkAddress, Workload};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: serde_yaml::Error,
    },
    #[error("{path}: workload {uid}: {reason}")]
    Invalid {
        path: String,
        uid: String,
        reason: String,
    },
}

/// The file format of `LOCAL_XDS_PATH`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalConfig {
    #[serde(default)]
    pub workloads: Vec<Workload>,
}

/// Workloads by uid and by network address.
#[derive(Debug, Default)]
pub struct ProxyState {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    by_uid: HashMap<String, Arc<Workload>>,
    by_addr: HashMap<NetworkAddress, Arc<Workload>>,
}

impl ProxyState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads and validates a local config file; nothing is applied if any
    /// workload in it is invalid.
    pub fn load_file(path: &Path) -> Result<Vec<Workload>, StateError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| StateError::Read {
            path: p.clone(),
            source,
        })?;
        let config: LocalConfig =
            serde_yaml::from_str(&text).map_err(|source| StateError::Parse {
                path: p.clone(),
                source,
            })?;
        for w in &config.workloads {
            w.identity().map_err(|e| StateError::Invalid {
                path: p.clone(),
                uid: w.uid.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(config.workloads)
    }

    /// Adds or replaces a workload (by uid).
    pub fn insert(&self, workload: Workload) {
        let w = Arc::new(workload);
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = inner.by_uid.insert(w.uid.to_string(), w.clone()) {
            for ip in &old.addresses {
                inner
                    .by_addr
                    .remove(&NetworkAddress::new(old.network.clone(), *ip));
            }
        }
        for ip in &w.addresses {
            inner
                .by_addr
                .insert(NetworkAddress::new(w.network.clone(), *ip), w.clone());
        }
    }

    pub fn workload_by_addr(&self, network: &Network, ip: IpAddr) -> Option<Arc<Workload>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner
            .by_addr
            .get(&NetworkAddress::new(network.clone(), ip))
            .cloned()
    }

    pub fn workloads(&self) -> Vec<Arc<Workload>> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        inner.by_uid.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_indexes_by_address() {
        let dir = std::env::temp_dir().join(format!("zt-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("local.yaml");
        std::fs::write(
            &file,
            "workloads:\n- uid: Kubernetes//Pod/default/sleep\n  name: sleep\n  namespace: default\n  addresses: [10.0.0.1]\n  tunnelProtocol: HBONE\n  serviceAccount: sleep\n  node: node-a\n",
        )
        .unwrap();
        let state = ProxyState::new();
        for w in ProxyState::load_file(&file).unwrap() {
            state.insert(w);
        }
        let w = state
            .workload_by_addr(&Network::default(), "10.0.0.1".parse().unwrap())
            .unwrap();
        assert_eq!(
            w.identity().unwrap().to_string(),
            "spiffe://cluster.local/ns/default/sa/sleep"
        );
        std::fs::write(
            &file,
            "workloads:\n- uid: x\n  name: a\n  namespace: default\n  bogus: 1\n",
        )
        .unwrap();
        let err = ProxyState::load_file(&file).unwrap_err().to_string();
        assert!(err.contains("local.yaml") && err.contains("bogus"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_shipped_example_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/local-workloads.yaml");
        let workloads = ProxyState::load_file(&path).unwrap();
        assert_eq!(workloads.len(), 2);
    }
}
