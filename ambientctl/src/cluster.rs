//! A Kubernetes cluster, for the commands that run against one (given
//! `--kubeconfig`, or `KUBECONFIG`): its objects, as [`Objects`] for the
//! namespace and waypoint commands, and port forwarding to a pod, which is
//! how `ztunnel-config` reaches a ztunnel's admin endpoint (on localhost in
//! the ztunnel's pod), as istioctl does.

use std::path::Path;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::Client;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use serde_yaml::Value;

use crate::store::{Doc, Objects, StoreError};

/// Who writes, as the API server records it.
const FIELD_MANAGER: &str = "ambientctl";
/// The label of ztunnel's pods.
const ZTUNNEL_SELECTOR: &str = "app=ztunnel";

pub struct Cluster {
    /// One worker: port forwards run on it while the caller blocks.
    rt: tokio::runtime::Runtime,
    client: Client,
}

fn failed(what: impl Into<String>, error: impl std::fmt::Display) -> StoreError {
    StoreError::Cluster {
        what: what.into(),
        error: error.to_string(),
    }
}

impl Cluster {
    /// The cluster of `kubeconfig`, or of `KUBECONFIG`.
    pub fn connect(kubeconfig: Option<&Path>) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|e| failed("starting a runtime", e))?;
        let client = rt
            .block_on(mesh_kube::source::connect(
                kubeconfig,
                mesh_kube::source::CONNECT_TIMEOUT,
            ))
            .map_err(|e| failed("connecting to the cluster", e))?;
        Ok(Self { rt, client })
    }

    fn api(&self, kind: &str, namespace: Option<&str>) -> Result<Api<DynamicObject>, StoreError> {
        let (resource, namespaced) = resource(kind)?;
        Ok(match namespace {
            Some(ns) if namespaced => Api::namespaced_with(self.client.clone(), ns, &resource),
            _ => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// The ztunnel to ask: the pod `target` names (`[pod/]NAME[.NAMESPACE]`),
    /// or, when that is an application's pod, the ztunnel on its node; the
    /// ztunnel on `node`; else the first. Returns its namespace and name.
    pub fn ztunnel(
        &self,
        target: Option<&str>,
        node: Option<&str>,
    ) -> Result<(String, String), StoreError> {
        self.rt.block_on(async {
            let all: Api<Pod> = Api::all(self.client.clone());
            let ztunnels = all
                .list(&ListParams::default().labels(ZTUNNEL_SELECTOR))
                .await
                .map_err(|e| failed("listing ztunnel pods", e))?;
            let mut ztunnels: Vec<Pod> = ztunnels.items;
            ztunnels.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            let node_of = |p: &Pod| p.spec.as_ref().and_then(|s| s.node_name.clone());
            let mut on_node = node.map(str::to_string);
            if let Some(target) = target {
                let target = target.strip_prefix("pod/").unwrap_or(target);
                let (name, ns) = target.split_once('.').unwrap_or((target, ""));
                if let Some(z) = ztunnels.iter().find(|z| {
                    z.metadata.name.as_deref() == Some(name)
                        && (ns.is_empty() || z.metadata.namespace.as_deref() == Some(ns))
                }) {
                    return Ok(names(z));
                }
                let ns = if ns.is_empty() { "default" } else { ns };
                let pod = Api::<Pod>::namespaced(self.client.clone(), ns)
                    .get_opt(name)
                    .await
                    .map_err(|e| failed(format!("reading pod {ns}/{name}"), e))?
                    .ok_or_else(|| failed(format!("pod {ns}/{name}"), "not found"))?;
                on_node = node_of(&pod);
            }
            ztunnels
                .iter()
                .find(|z| on_node.is_none() || node_of(z) == on_node)
                .map(names)
                .ok_or_else(|| match on_node {
                    Some(n) => failed("finding a ztunnel", format!("no ztunnel pod on node {n}")),
                    None => failed(
                        "finding a ztunnel",
                        format!("no pod labelled {ZTUNNEL_SELECTOR} (is the mesh installed?)"),
                    ),
                })
        })
    }

    /// Forwards a port of this machine's loopback to `port` of the pod, as
    /// `kubectl port-forward` does; returns the local `host:port`. Each
    /// connection made to it is one forwarded stream, for as long as this
    /// `Cluster` lives.
    pub fn forward(&self, namespace: &str, pod: &str, port: u16) -> Result<String, StoreError> {
        let listener = self
            .rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .map_err(|e| failed("binding a local port", e))?;
        let local = listener
            .local_addr()
            .map_err(|e| failed("binding a local port", e))?;
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let pod = pod.to_string();
        self.rt.spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let (pods, pod) = (pods.clone(), pod.clone());
                tokio::spawn(async move {
                    let forwarded = async {
                        let mut forwarder = pods.portforward(&pod, &[port]).await?;
                        let errors = forwarder.take_error(port);
                        let mut stream = forwarder
                            .take_stream(port)
                            .ok_or_else(|| anyhow::anyhow!("no stream for port {port}"))?;
                        let _ = tokio::io::copy_bidirectional(&mut tcp, &mut stream).await;
                        if let Some(error) = errors
                            && let Some(e) = reported_error(error).await
                        {
                            anyhow::bail!(e);
                        }
                        anyhow::Ok(())
                    };
                    if let Err(e) = forwarded.await {
                        eprintln!("port forward to {pod}:{port}: {e:#}");
                    }
                });
            }
        });
        Ok(local.to_string())
    }
}

/// The error the node reported for a forwarded port, if it did.
async fn reported_error(
    error: impl std::future::Future<Output = Option<String>>,
) -> Option<String> {
    tokio::time::timeout(std::time::Duration::from_millis(100), error)
        .await
        .ok()
        .flatten()
}

fn names(p: &Pod) -> (String, String) {
    (
        p.metadata.namespace.clone().unwrap_or_default(),
        p.metadata.name.clone().unwrap_or_default(),
    )
}

/// The API resource of the kinds these commands touch, and whether it is
/// namespaced.
fn resource(kind: &str) -> Result<(ApiResource, bool), StoreError> {
    match kind {
        "Namespace" => Ok((ApiResource::erase::<Namespace>(&()), false)),
        "Gateway" => Ok((
            ApiResource::from_gvk_with_plural(
                &GroupVersionKind::gvk("gateway.networking.k8s.io", "v1", "Gateway"),
                "gateways",
            ),
            true,
        )),
        other => Err(failed(
            format!("kind {other}"),
            "not handled by ambientctl on a cluster; use kubectl",
        )),
    }
}

fn doc(object: &DynamicObject, resource: &ApiResource) -> Result<Doc, StoreError> {
    let value = serde_yaml::to_value(object).map_err(|e| failed("reading an object", e))?;
    let path = match &object.metadata.namespace {
        Some(ns) => format!(
            "{}/namespaces/{ns}/{}/{}",
            resource.api_version,
            resource.plural,
            object.metadata.name.as_deref().unwrap_or_default()
        ),
        None => format!(
            "{}/{}/{}",
            resource.api_version,
            resource.plural,
            object.metadata.name.as_deref().unwrap_or_default()
        ),
    };
    let mut object = value;
    // DynamicObject leaves out apiVersion and kind when they were not set.
    if let Value::Mapping(m) = &mut object {
        m.insert("apiVersion".into(), resource.api_version.clone().into());
        m.insert("kind".into(), resource.kind.clone().into());
    }
    Ok(Doc {
        file: path.into(),
        index: 0,
        object,
    })
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl Objects for Cluster {
    fn list(&self, kind: &str) -> Result<Vec<Doc>, StoreError> {
        let (resource, _) = resource(kind)?;
        let api = self.api(kind, None)?;
        let listed = self.rt.block_on(api.list(&ListParams::default()));
        match listed {
            Ok(list) => list.items.iter().map(|o| doc(o, &resource)).collect(),
            // The kind's CRD is not installed: there are none.
            Err(e) if not_found(&e) => Ok(Vec::new()),
            Err(e) => Err(failed(format!("listing {kind}s"), e)),
        }
    }

    fn get(&self, kind: &str, namespace: &str, name: &str) -> Result<Option<Doc>, StoreError> {
        let (resource, _) = resource(kind)?;
        let api = self.api(kind, Some(namespace))?;
        match self.rt.block_on(api.get_opt(name)) {
            Ok(found) => found.map(|o| doc(&o, &resource)).transpose(),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(failed(format!("reading {kind} {namespace}/{name}"), e)),
        }
    }

    fn apply(&self, object: Value) -> Result<(), StoreError> {
        let mut object: DynamicObject =
            serde_yaml::from_value(object).map_err(|e| failed("an object to write", e))?;
        let kind = object
            .types
            .as_ref()
            .map(|t| t.kind.clone())
            .unwrap_or_default();
        let name = object.metadata.name.clone().unwrap_or_default();
        let namespace = object.metadata.namespace.clone().unwrap_or_default();
        let api = self.api(&kind, Some(&namespace))?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.rt.block_on(async {
            let current = api
                .get_opt(&name)
                .await
                .map_err(|e| failed(format!("reading {kind} {name}"), e))?;
            let written = match current {
                // Replaced whole: a label left out is removed.
                Some(current) => {
                    object.metadata.resource_version = current.metadata.resource_version;
                    object.metadata.managed_fields = None;
                    api.replace(&name, &params, &object).await
                }
                None => {
                    object.metadata.resource_version = None;
                    api.create(&params, &object).await
                }
            };
            written
                .map(|_| ())
                .map_err(|e| failed(format!("writing {kind} {name}"), e))
        })
    }

    fn delete(&self, kind: &str, namespace: &str, name: &str) -> Result<bool, StoreError> {
        let api = self.api(kind, Some(namespace))?;
        match self.rt.block_on(api.delete(name, &DeleteParams::default())) {
            Ok(_) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(failed(format!("deleting {kind} {namespace}/{name}"), e)),
        }
    }
}
