//! The install manifests of `deploy/`, built into the binaries that apply
//! them (`ambientctl install`), and rendered the way `kubectl kustomize`
//! renders our kustomizations: each `resources` entry in order, a directory
//! being its own `kustomization.yaml`. (Ours use nothing else; a field this
//! renderer does not know is refused rather than ignored.)
//!
//! Profiles then adjust the rendered objects: `ambient` as written
//! (nftables redirection), `ambient-ebpf` with eBPF redirection. `hub` and
//! `tag` replace the images' registry and version.

use serde_yaml::Value;

/// Every file of `deploy/` the renderer may read, by path under `deploy/`.
pub const FILES: &[(&str, &str)] = &[
    (
        "base/kustomization.yaml",
        include_str!("../../../deploy/base/kustomization.yaml"),
    ),
    (
        "base/namespace.yaml",
        include_str!("../../../deploy/base/namespace.yaml"),
    ),
    (
        "base/istiod-lite.yaml",
        include_str!("../../../deploy/base/istiod-lite.yaml"),
    ),
    (
        "base/ztunnel.yaml",
        include_str!("../../../deploy/base/ztunnel.yaml"),
    ),
    (
        "base/cni-node.yaml",
        include_str!("../../../deploy/base/cni-node.yaml"),
    ),
    (
        "base/crds/security.istio.io.yaml",
        include_str!("../../../deploy/base/crds/security.istio.io.yaml"),
    ),
];

/// The images we build, by name under the hub.
pub const IMAGES: [&str; 4] = ["istiod-lite", "ztunnel", "cni", "waypoint"];
pub const DEFAULT_HUB: &str = "ambient-mesh";
pub const DEFAULT_TAG: &str = env!("CARGO_PKG_VERSION");

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    /// nftables redirection (the default).
    Ambient,
    /// eBPF redirection (tc and cgroup programs).
    AmbientEbpf,
}

impl Profile {
    pub fn parse(name: &str) -> Result<Self, RenderError> {
        match name {
            "ambient" | "default" => Ok(Profile::Ambient),
            "ambient-ebpf" => Ok(Profile::AmbientEbpf),
            other => Err(RenderError::Profile(other.to_string())),
        }
    }
}

/// What `ambientctl install --set` and `--profile` choose.
#[derive(Clone, Debug)]
pub struct Values {
    pub profile: Profile,
    pub hub: String,
    pub tag: String,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            profile: Profile::Ambient,
            hub: DEFAULT_HUB.into(),
            tag: DEFAULT_TAG.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("deploy/{0} is not part of the built-in manifests")]
    Missing(String),
    #[error("deploy/{file}: {problem}")]
    Invalid { file: String, problem: String },
    #[error("unknown profile {0:?}: ambient (nftables redirection) or ambient-ebpf")]
    Profile(String),
}

fn file(path: &str) -> Result<&'static str, RenderError> {
    FILES
        .iter()
        .find(|(p, _)| *p == path)
        .map(|(_, text)| *text)
        .ok_or_else(|| RenderError::Missing(path.to_string()))
}

/// Normalizes `a/b/../c` to `a/c`.
fn join(dir: &str, rel: &str) -> String {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for p in rel.split('/') {
        match p {
            ".." => {
                parts.pop();
            }
            "." | "" => {}
            p => parts.push(p),
        }
    }
    parts.join("/")
}

/// The objects of the kustomization in `dir` (under `deploy/`), in order.
pub fn kustomize(dir: &str) -> Result<Vec<Value>, RenderError> {
    let path = join(dir, "kustomization.yaml");
    let k: Value = serde_yaml::from_str(file(&path)?).map_err(|e| RenderError::Invalid {
        file: path.clone(),
        problem: e.to_string(),
    })?;
    let invalid = |problem: String| RenderError::Invalid {
        file: path.clone(),
        problem,
    };
    let Value::Mapping(fields) = &k else {
        return Err(invalid("not a mapping".into()));
    };
    for key in fields.keys() {
        let key = key.as_str().unwrap_or_default();
        if !matches!(key, "apiVersion" | "kind" | "resources") {
            return Err(invalid(format!(
                "{key:?} is not supported by this renderer"
            )));
        }
    }
    let mut out = Vec::new();
    for r in k["resources"].as_sequence().into_iter().flatten() {
        let r = r
            .as_str()
            .ok_or_else(|| invalid("a resource that is not a path".into()))?;
        let target = join(dir, r);
        if r.ends_with(".yaml") || r.ends_with(".yml") {
            out.extend(documents(&target)?);
        } else {
            out.extend(kustomize(&target)?);
        }
    }
    Ok(out)
}

fn documents(path: &str) -> Result<Vec<Value>, RenderError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(file(path)?) {
        let v =
            <Value as serde::Deserialize>::deserialize(doc).map_err(|e| RenderError::Invalid {
                file: path.to_string(),
                problem: e.to_string(),
            })?;
        if !v.is_null() {
            out.push(v);
        }
    }
    Ok(out)
}

/// The whole install for `values`: `deploy/base`, adjusted.
pub fn render(values: &Values) -> Result<Vec<Value>, RenderError> {
    let mut objects = kustomize("base")?;
    for o in &mut objects {
        for container in containers(o) {
            if let Some(image) = container.get("image").and_then(Value::as_str) {
                container["image"] = retag(image, values).into();
            }
            // The image istiod-lite's waypoint controller deploys.
            set_env(
                container,
                "WAYPOINT_IMAGE",
                &format!("{}/waypoint:{}", values.hub, values.tag),
            );
            if values.profile == Profile::AmbientEbpf {
                for name in ["INPOD_REDIRECTION", "REDIRECTION"] {
                    set_env(container, name, "ebpf");
                }
            }
        }
    }
    Ok(objects)
}

/// The containers of a workload object (read with `get_mut`: indexing a
/// YAML mapping mutably would add the keys it looks for).
fn containers(o: &mut Value) -> Vec<&mut Value> {
    let found = o
        .get_mut("spec")
        .and_then(|s| s.get_mut("template"))
        .and_then(|t| t.get_mut("spec"))
        .and_then(|s| s.get_mut("containers"))
        .and_then(Value::as_sequence_mut);
    match found {
        Some(c) => c.iter_mut().collect(),
        None => Vec::new(),
    }
}

/// `ambient-mesh/ztunnel:0.1.0` → `<hub>/ztunnel:<tag>`, for our images.
fn retag(image: &str, values: &Values) -> String {
    let name = image.rsplit_once('/').map_or(image, |(_, n)| n);
    let name = name.split(':').next().unwrap_or(name);
    if IMAGES.contains(&name) {
        format!("{}/{name}:{}", values.hub, values.tag)
    } else {
        image.to_string()
    }
}

fn set_env(container: &mut Value, name: &str, value: &str) {
    let env = container.get_mut("env").and_then(Value::as_sequence_mut);
    for e in env.into_iter().flatten() {
        if e["name"] == name {
            e["value"] = value.into();
        }
    }
}

/// Which part of the mesh an object belongs to, for `install`'s report.
pub fn component(o: &Value) -> &'static str {
    if o["kind"] == "CustomResourceDefinition" || o["kind"] == "Namespace" {
        return "Istio core";
    }
    match o["metadata"]["labels"]["app"].as_str() {
        Some("istiod") => "Istiod",
        Some("istio-cni-node") => "CNI",
        Some("ztunnel") => "Ztunnel",
        _ => "Other",
    }
}

/// Where the API server serves each kind the manifests hold.
fn plural(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "Namespace" => "namespaces",
        "ServiceAccount" => "serviceaccounts",
        "Service" => "services",
        "ConfigMap" => "configmaps",
        "ClusterRole" => "clusterroles",
        "ClusterRoleBinding" => "clusterrolebindings",
        "Role" => "roles",
        "RoleBinding" => "rolebindings",
        "Deployment" => "deployments",
        "DaemonSet" => "daemonsets",
        "CustomResourceDefinition" => "customresourcedefinitions",
        _ => return None,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{kind} {name}: this installer does not know where the API server serves it")]
    UnknownKind { kind: String, name: String },
    #[error("applying {kind} {name}: {error}")]
    Api {
        kind: String,
        name: String,
        error: String,
    },
}

/// Server-side applies `objects` in order (field manager `manager`),
/// calling `done` after the last object of each component.
pub async fn apply(
    client: &kube::Client,
    objects: &[Value],
    manager: &str,
    mut done: impl FnMut(&'static str),
) -> Result<(), ApplyError> {
    use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
    let params = PatchParams::apply(manager).force();
    for (i, o) in objects.iter().enumerate() {
        let kind = o["kind"].as_str().unwrap_or_default().to_string();
        let name = o["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let api_version = o["apiVersion"].as_str().unwrap_or_default();
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let Some(plural) = plural(&kind) else {
            return Err(ApplyError::UnknownKind { kind, name });
        };
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk(group, version, &kind),
            plural,
        );
        let api: Api<DynamicObject> = match o["metadata"]["namespace"].as_str() {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        api.patch(&name, &params, &Patch::Apply(o))
            .await
            .map_err(|e| ApplyError::Api {
                kind: kind.clone(),
                name: name.clone(),
                error: e.to_string(),
            })?;
        let this = component(o);
        if objects
            .get(i + 1)
            .is_none_or(|next| component(next) != this)
        {
            done(this);
        }
    }
    Ok(())
}

/// The rendered objects as one YAML stream.
pub fn to_yaml(objects: &[Value]) -> String {
    let mut out = String::new();
    for o in objects {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(o).unwrap_or_default());
    }
    out
}

#[cfg(test)]
mod tests;
