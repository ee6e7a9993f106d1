//! Deciding a pod's enrollment without the agent, from the same model and
//! the same rules the agent uses ([`mesh_model::enrollment`]).
//!
//! Used only when the agent is unreachable, to choose between starting a
//! pod (it is outside the mesh: never disturb it) and refusing it (it is in
//! the mesh and would run uncaptured). Whenever the answer is uncertain the
//! decision is [`Undecided`], and the caller refuses the pod.

use std::path::{Path, PathBuf};

use mesh_model::enrollment::{AMBIENT, DATAPLANE_MODE, Enrollment, NONE, enrollment};
use mesh_model::manifests::{ManifestDir, ManifestError};
use mesh_model::{Kind, ObjectKey, ObjectMeta, Pod, PodSpec, PodStatus};
use tracing::warn;

use super::invocation::PodRef;

/// Why enrollment could not be decided locally.
#[derive(Debug, thiserror::Error)]
pub enum Undecided {
    #[error(
        "without `manifestDir` in the network config the plugin cannot decide \
         whether the pod is in the mesh"
    )]
    NoManifestDir,
    #[error("manifestDir {} cannot be read: {error}", .dir.display())]
    ReadDir { dir: PathBuf, error: std::io::Error },
    #[error("a manifest that may define the pod or its namespace is invalid: {0}")]
    BrokenManifest(Box<ManifestError>),
}

/// Decides `pod`'s enrollment from the manifests in `manifest_dir`. A pod
/// the manifests do not list is decided by its namespace's labels alone;
/// a pod in an excluded namespace needs no manifests at all.
pub fn decide(
    pod: &PodRef,
    manifest_dir: Option<&Path>,
    excluded: &[String],
) -> Result<Enrollment, Undecided> {
    let bare = Pod {
        metadata: ObjectMeta {
            name: pod.name.clone(),
            namespace: Some(pod.namespace.clone()),
            ..Default::default()
        },
        spec: PodSpec::default(),
        status: PodStatus::default(),
    };
    if excluded.contains(&pod.namespace) {
        return Ok(enrollment(&bare, None, excluded));
    }
    let dir = manifest_dir.ok_or(Undecided::NoManifestDir)?;
    let mut manifests = ManifestDir::new(dir);
    let report = manifests.scan().map_err(|error| Undecided::ReadDir {
        dir: dir.to_path_buf(),
        error,
    })?;
    for error in report.errors {
        if may_define(&error, pod) {
            return Err(Undecided::BrokenManifest(Box::new(error)));
        }
        warn!("invalid manifest, not about this pod: {error}");
    }
    let model = manifests.model();
    let listed = model.pods.get(&(pod.namespace.clone(), pod.name.clone()));
    Ok(enrollment(
        listed.unwrap_or(&bare),
        model.namespace_labels(&pod.namespace),
        excluded,
    ))
}

/// Whether a broken manifest could be hiding the pod or its namespace: it
/// names one of them, or is too broken to name anything.
fn may_define(error: &ManifestError, pod: &PodRef) -> bool {
    let Some(key) = &error.error.object else {
        return true;
    };
    let namespace = ObjectKey {
        kind: Kind::Namespace,
        namespace: String::new(),
        name: pod.namespace.clone(),
    };
    let this_pod = ObjectKey {
        kind: Kind::Pod,
        namespace: pod.namespace.clone(),
        name: pod.name.clone(),
    };
    *key == namespace || *key == this_pod
}

/// Why a pod is (or is not) in the mesh, for messages.
pub fn describe(e: Enrollment) -> String {
    match e {
        Enrollment::PodLabel => format!("pod label {DATAPLANE_MODE}={AMBIENT}"),
        Enrollment::NamespaceLabel => format!("namespace label {DATAPLANE_MODE}={AMBIENT}"),
        Enrollment::ExcludedNamespace => "its namespace is excluded".into(),
        Enrollment::Sidecar => "it runs a sidecar".into(),
        Enrollment::HostNetwork => "it uses the host network".into(),
        Enrollment::Ztunnel => "it is ztunnel".into(),
        Enrollment::OptedOut => format!("pod label {DATAPLANE_MODE}={NONE}"),
        Enrollment::NotLabelled => {
            format!("neither the pod nor its namespace is labelled {DATAPLANE_MODE}={AMBIENT}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(namespace: &str, name: &str) -> PodRef {
        PodRef {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn dir(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        dir
    }

    const AMBIENT_NS: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: apps\n  \
                              labels:\n    istio.io/dataplane-mode: ambient\n";

    #[test]
    fn excluded_namespaces_need_no_manifests() {
        let excluded = vec!["kube-system".to_string()];
        let got = decide(&pod("kube-system", "coredns"), None, &excluded).unwrap();
        assert_eq!(got, Enrollment::ExcludedNamespace);
        let err = decide(&pod("apps", "web"), None, &excluded).unwrap_err();
        assert!(matches!(err, Undecided::NoManifestDir), "{err}");
    }

    #[test]
    fn unlisted_pods_follow_their_namespace() {
        let d = dir(&[("ns.yaml", AMBIENT_NS)]);
        let got = decide(&pod("apps", "web-7f9c"), Some(d.path()), &[]).unwrap();
        assert_eq!(got, Enrollment::NamespaceLabel);
        let got = decide(&pod("other", "web"), Some(d.path()), &[]).unwrap();
        assert_eq!(got, Enrollment::NotLabelled);
    }

    #[test]
    fn a_broken_manifest_about_the_pod_leaves_it_undecided() {
        let d = dir(&[("ns.yaml", AMBIENT_NS), ("broken.yaml", "kind: [")]);
        let err = decide(&pod("apps", "web"), Some(d.path()), &[]).unwrap_err();
        assert!(matches!(err, Undecided::BrokenManifest(_)), "{err}");
        assert!(err.to_string().contains("broken.yaml"), "{err}");
    }

    #[test]
    fn an_unreadable_dir_is_named() {
        let d = tempfile::tempdir().unwrap();
        let missing = d.path().join("nope");
        let err = decide(&pod("apps", "web"), Some(&missing), &[]).unwrap_err();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
