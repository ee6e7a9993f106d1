//! Which pods are in ambient mode, with the precedence of
//! `../shared/spec/user-surface.md` §1.2.

use super::objects::{Labels, Pod};

pub const DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const AMBIENT: &str = "ambient";
pub const NONE: &str = "none";
/// Set on pods that got an injected sidecar; the sidecar wins.
pub const SIDECAR_STATUS: &str = "sidecar.istio.io/status";

/// Why a pod is or is not enrolled, for logs and `ztunnel-config`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// Pod label `istio.io/dataplane-mode=ambient`.
    PodLabel,
    /// Namespace label, and the pod does not opt out.
    NamespaceLabel,
    /// The namespace is excluded (kube-system by default).
    ExcludedNamespace,
    /// The pod runs a sidecar.
    Sidecar,
    /// Host-network pods share the node's network namespace: nothing to capture.
    HostNetwork,
    /// The node proxy itself.
    Ztunnel,
    /// Pod label `istio.io/dataplane-mode=none` over a namespace enrollment.
    OptedOut,
    /// Neither the pod nor its namespace asks for ambient.
    NotLabelled,
}

impl Enrollment {
    pub fn is_ambient(self) -> bool {
        matches!(self, Enrollment::PodLabel | Enrollment::NamespaceLabel)
    }
}

/// Decides enrollment from the pod, its namespace's labels and the excluded
/// namespaces.
pub fn enrollment(pod: &Pod, namespace_labels: Option<&Labels>, excluded: &[String]) -> Enrollment {
    let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
    if excluded.iter().any(|e| e == ns) {
        return Enrollment::ExcludedNamespace;
    }
    if pod.metadata.annotations.contains_key(SIDECAR_STATUS) {
        return Enrollment::Sidecar;
    }
    if pod.spec.host_network {
        return Enrollment::HostNetwork;
    }
    if pod.metadata.labels.get("app").map(String::as_str) == Some("ztunnel") {
        return Enrollment::Ztunnel;
    }
    match pod.metadata.labels.get(DATAPLANE_MODE).map(String::as_str) {
        Some(AMBIENT) => return Enrollment::PodLabel,
        Some(NONE) => return Enrollment::OptedOut,
        _ => {}
    }
    let ns_mode = namespace_labels.and_then(|l| l.get(DATAPLANE_MODE));
    if ns_mode.map(String::as_str) == Some(AMBIENT) {
        Enrollment::NamespaceLabel
    } else {
        Enrollment::NotLabelled
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::{ObjectMeta, PodSpec, PodStatus};

    fn pod(labels: &[(&str, &str)], annotations: &[(&str, &str)], host_network: bool) -> Pod {
        let map = |kv: &[(&str, &str)]| {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        Pod {
            metadata: ObjectMeta {
                name: "p".into(),
                namespace: Some("apps".into()),
                labels: map(labels),
                annotations: map(annotations),
                ..Default::default()
            },
            spec: PodSpec {
                host_network,
                ..Default::default()
            },
            status: PodStatus::default(),
        }
    }

    fn ns(mode: Option<&str>) -> Labels {
        mode.map(|m| (DATAPLANE_MODE.to_string(), m.to_string()))
            .into_iter()
            .collect()
    }

    #[test]
    fn precedence_table() {
        use Enrollment::*;
        let excluded = vec!["kube-system".to_string()];
        let cases: &[(&str, Pod, Option<Labels>, Enrollment)] = &[
            (
                "pod label enrolls in an unlabelled namespace",
                pod(&[(DATAPLANE_MODE, AMBIENT)], &[], false),
                Some(ns(None)),
                PodLabel,
            ),
            (
                "namespace label enrolls",
                pod(&[], &[], false),
                Some(ns(Some(AMBIENT))),
                NamespaceLabel,
            ),
            (
                "pod none opts out of a namespace enrollment",
                pod(&[(DATAPLANE_MODE, NONE)], &[], false),
                Some(ns(Some(AMBIENT))),
                OptedOut,
            ),
            (
                "nothing labelled",
                pod(&[], &[], false),
                Some(ns(None)),
                NotLabelled,
            ),
            (
                "undeclared namespace",
                pod(&[], &[], false),
                None,
                NotLabelled,
            ),
            (
                "sidecar wins over the pod label",
                pod(
                    &[(DATAPLANE_MODE, AMBIENT)],
                    &[(SIDECAR_STATUS, "{}")],
                    false,
                ),
                Some(ns(Some(AMBIENT))),
                Sidecar,
            ),
            (
                "host network is never captured",
                pod(&[], &[], true),
                Some(ns(Some(AMBIENT))),
                HostNetwork,
            ),
            (
                "ztunnel is never captured",
                pod(&[("app", "ztunnel")], &[], false),
                Some(ns(Some(AMBIENT))),
                Ztunnel,
            ),
            (
                "other namespace values do not enroll",
                pod(&[], &[], false),
                Some(ns(Some("sidecar"))),
                NotLabelled,
            ),
        ];
        for (what, p, labels, want) in cases {
            assert_eq!(enrollment(p, labels.as_ref(), &excluded), *want, "{what}");
        }
        let mut in_kube_system = pod(&[(DATAPLANE_MODE, AMBIENT)], &[], false);
        in_kube_system.metadata.namespace = Some("kube-system".into());
        assert_eq!(
            enrollment(&in_kube_system, None, &excluded),
            ExcludedNamespace
        );
    }
}
