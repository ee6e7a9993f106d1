//! The local mesh as `ambientctl` finds it: what `local-mesh` publishes in
//! `/run/ambient-demo/mesh.json` (its pid, manifest directory, ztunnels and
//! pods, each with the network namespace it lives in).
//!
//! The file is written whole by `local-mesh` (a temporary file, then a
//! rename) whenever a pod comes or goes, and removed when it stops.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the local mesh publishes itself.
pub const DEMO_DIR: &str = "/run/ambient-demo";
const FILE: &str = "mesh.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalMesh {
    /// The `local-mesh` process.
    pub pid: u32,
    /// istiod-lite's `--config-dir`.
    pub manifests: PathBuf,
    /// Where the processes' logs are.
    pub logs: PathBuf,
    pub ztunnels: Vec<LocalZtunnel>,
    pub pods: Vec<LocalPod>,
}

/// One node's ztunnel; its admin endpoint listens inside the node's
/// network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalZtunnel {
    /// `ztunnel-<node>`, as a DaemonSet pod would be called.
    pub name: String,
    pub node: String,
    pub netns: String,
    pub admin: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocalPod {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub netns: String,
    pub ip: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "no local mesh is running ({0} does not exist). Start it with `ambientctl demo up` \
         or `cargo xtask demo`"
    )]
    NotRunning(PathBuf),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not the local mesh's description: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Write(crate::store::StoreError),
    #[error("no ztunnel runs on node {node:?}; the local mesh's nodes are {known}")]
    NoSuchNode { node: String, known: String },
    #[error(
        "{0:?} is neither a ztunnel nor a pod of the local mesh (ztunnels: {1}; pods are \
         given as NAME.NAMESPACE)"
    )]
    NoSuchTarget(String, String),
    #[error("no pod {name} in namespace {namespace} (the local mesh's pods: {known})")]
    NoSuchPod {
        namespace: String,
        name: String,
        known: String,
    },
}

impl LocalMesh {
    /// The mesh published in `dir`.
    pub fn load(dir: &Path) -> Result<LocalMesh, LocalError> {
        let path = dir.join(FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(LocalError::NotRunning(path));
            }
            Err(source) => return Err(LocalError::Read { path, source }),
        };
        serde_json::from_str(&text).map_err(|source| LocalError::Json { path, source })
    }

    /// Publishes the mesh in `dir` (atomically).
    pub fn save(&self, dir: &Path) -> Result<(), LocalError> {
        let text = serde_json::to_string_pretty(self).expect("plain data serializes");
        crate::store::write_atomic(&dir.join(FILE), &text).map_err(LocalError::Write)
    }

    /// The ztunnel `ztunnel-config` asks: the one named by `target`
    /// (`[pod/]NAME[.NAMESPACE]`: a ztunnel, or an application pod, which
    /// means its node's ztunnel), else the one on `node`, else the first.
    pub fn ztunnel(
        &self,
        target: Option<&str>,
        node: Option<&str>,
    ) -> Result<&LocalZtunnel, LocalError> {
        if let Some(target) = target {
            let name = target.strip_prefix("pod/").unwrap_or(target);
            let (name, namespace) = match name.split_once('.') {
                Some((n, ns)) => (n, Some(ns)),
                None => (name, None),
            };
            if let Some(z) = self
                .ztunnels
                .iter()
                .find(|z| z.name == name && namespace.is_none_or(|ns| ns == "istio-system"))
            {
                return Ok(z);
            }
            let pod = self
                .pods
                .iter()
                .find(|p| p.name == name && namespace.is_none_or(|ns| ns == p.namespace));
            return match pod {
                Some(p) => self.on_node(&p.node),
                None => Err(LocalError::NoSuchTarget(
                    target.to_string(),
                    self.ztunnel_names(),
                )),
            };
        }
        match node {
            Some(node) => self.on_node(node),
            None => self.ztunnels.first().ok_or_else(|| LocalError::NoSuchNode {
                node: "(any)".into(),
                known: "none".into(),
            }),
        }
    }

    fn on_node(&self, node: &str) -> Result<&LocalZtunnel, LocalError> {
        self.ztunnels
            .iter()
            .find(|z| z.node == node)
            .ok_or_else(|| LocalError::NoSuchNode {
                node: node.to_string(),
                known: self
                    .ztunnels
                    .iter()
                    .map(|z| z.node.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    fn ztunnel_names(&self) -> String {
        self.ztunnels
            .iter()
            .map(|z| z.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The pod `NAME[.NAMESPACE]`, `default_namespace` when none is given.
    pub fn pod(&self, spec: &str, default_namespace: &str) -> Result<&LocalPod, LocalError> {
        let (name, namespace) = spec.split_once('.').unwrap_or((spec, default_namespace));
        self.pods
            .iter()
            .find(|p| p.name == name && p.namespace == namespace)
            .ok_or_else(|| LocalError::NoSuchPod {
                namespace: namespace.to_string(),
                name: name.to_string(),
                known: self
                    .pods
                    .iter()
                    .map(|p| format!("{}.{}", p.name, p.namespace))
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mesh() -> LocalMesh {
        let z = |node: &str| LocalZtunnel {
            name: format!("ztunnel-{node}"),
            node: node.into(),
            netns: format!("x-{node}"),
            admin: "127.0.0.1:15000".into(),
        };
        let pod = |name: &str, node: &str| LocalPod {
            namespace: "demo".into(),
            name: name.into(),
            node: node.into(),
            netns: format!("x-demo-{name}"),
            ip: "10.0.0.2".into(),
        };
        LocalMesh {
            pid: 1,
            manifests: "/m".into(),
            logs: "/l".into(),
            ztunnels: vec![z("node-a"), z("node-b")],
            pods: vec![pod("client", "node-a"), pod("db", "node-b")],
        }
    }

    #[test]
    fn a_ztunnel_is_chosen_by_name_pod_node_or_first() {
        let m = mesh();
        assert_eq!(m.ztunnel(None, None).unwrap().node, "node-a");
        assert_eq!(m.ztunnel(None, Some("node-b")).unwrap().node, "node-b");
        assert_eq!(
            m.ztunnel(Some("ztunnel-node-b"), None).unwrap().node,
            "node-b"
        );
        assert_eq!(
            m.ztunnel(Some("pod/ztunnel-node-b.istio-system"), None)
                .unwrap()
                .node,
            "node-b"
        );
        assert_eq!(m.ztunnel(Some("db.demo"), None).unwrap().node, "node-b");
        let e = m.ztunnel(None, Some("node-z")).unwrap_err().to_string();
        assert!(e.contains("node-a, node-b"), "{e}");
        let e = m.ztunnel(Some("web.demo"), None).unwrap_err().to_string();
        assert!(e.contains("ztunnel-node-a, ztunnel-node-b"), "{e}");
    }

    #[test]
    fn pods_default_to_the_given_namespace_and_errors_list_the_known_ones() {
        let m = mesh();
        assert_eq!(m.pod("client", "demo").unwrap().netns, "x-demo-client");
        assert_eq!(m.pod("db.demo", "default").unwrap().node, "node-b");
        let e = m.pod("client", "default").unwrap_err().to_string();
        assert!(e.contains("client.demo, db.demo"), "{e}");
    }

    #[test]
    fn saved_meshes_load_back_and_a_missing_one_says_how_to_start_it() {
        let dir = tempfile::tempdir().unwrap();
        let e = LocalMesh::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("ambientctl demo up"), "{e}");
        mesh().save(dir.path()).unwrap();
        assert_eq!(LocalMesh::load(dir.path()).unwrap(), mesh());
        std::fs::write(dir.path().join(FILE), "{").unwrap();
        let e = LocalMesh::load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("mesh.json"), "{e}");
    }
}
