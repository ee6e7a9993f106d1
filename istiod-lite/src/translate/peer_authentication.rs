//! PeerAuthentication → the DENY policies ztunnel enforces
//! (`dataplane.md` §7.6): STRICT means "deny connections without a peer
//! identity". HBONE between ambient pods is always mTLS, so DISABLE and
//! PERMISSIVE only mean "also accept plaintext".

use std::collections::BTreeSet;

use mesh_proto::istio::security as pb;

use super::authorization::string_match;
use crate::model::{Labels, Model, MtlsMode, PeerAuthentication, in_namespace};

/// Name of the static policy every STRICT workload lists.
pub const STATIC_STRICT: &str = "istio_converted_static_strict";
/// Prefix of the per-PeerAuthentication policies for port-level modes.
pub const CONVERTED_PREFIX: &str = "converted_peer_authentication_";

fn deny_without_identity(extra: pb::Match) -> pb::Rule {
    pb::Rule {
        clauses: vec![pb::Clause {
            matches: vec![pb::Match {
                not_principals: vec![string_match("*")],
                ..extra
            }],
        }],
    }
}

/// `<root>/istio_converted_static_strict`: DENY when there is no identity.
pub fn static_strict(root_namespace: &str) -> pb::Authorization {
    pb::Authorization {
        name: STATIC_STRICT.into(),
        namespace: root_namespace.into(),
        scope: pb::Scope::WorkloadSelector as i32,
        action: pb::Action::Deny as i32,
        rules: vec![deny_without_identity(pb::Match::default())],
        dry_run: false,
        extensions: vec![],
    }
}

/// The policies that carry mTLS settings for one workload.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadMtls {
    /// Keys to list in `Workload.authorization_policies`.
    pub keys: Vec<String>,
    /// A converted port-level policy to publish (shared by every workload
    /// the same PeerAuthentication selects).
    pub policy: Option<pb::Authorization>,
}

fn mode(pa: &PeerAuthentication) -> MtlsMode {
    pa.spec.mtls.as_ref().map(|m| m.mode).unwrap_or_default()
}

/// The oldest wins in Istio; without creation times, the first by name.
/// A selector with no labels counts as none (namespace or mesh level).
fn selects_workloads(pa: &PeerAuthentication) -> bool {
    pa.spec
        .selector
        .as_ref()
        .is_some_and(|s| !s.match_labels.is_empty())
}

fn first_without_selector<'a>(model: &'a Model, ns: &str) -> Option<&'a PeerAuthentication> {
    in_namespace(&model.peer_authentications, ns)
        .map(|(_, pa)| pa)
        .find(|pa| !selects_workloads(pa))
}

/// Decides mTLS for a pod in `ns` with `labels`: workload, then namespace,
/// then mesh (root namespace) level; unset everywhere means PERMISSIVE.
pub fn for_workload(
    model: &Model,
    ns: &str,
    labels: &Labels,
    root_namespace: &str,
) -> WorkloadMtls {
    let workload = in_namespace(&model.peer_authentications, ns)
        // Selector policies in the root namespace are ignored, as in Istio.
        .filter(|_| ns != root_namespace)
        .find(|(_, pa)| {
            selects_workloads(pa) && pa.spec.selector.as_ref().is_some_and(|s| s.matches(labels))
        });
    let inherited = [
        first_without_selector(model, ns),
        first_without_selector(model, root_namespace),
    ]
    .into_iter()
    .flatten()
    .map(mode)
    .find(|m| *m != MtlsMode::Unset)
    .unwrap_or(MtlsMode::Permissive);
    let base = workload
        .map(|(_, pa)| mode(pa))
        .filter(|m| *m != MtlsMode::Unset)
        .unwrap_or(inherited);
    let static_key = format!("{root_namespace}/{STATIC_STRICT}");

    let Some((pa_name, pa)) = workload.filter(|(_, pa)| !pa.spec.port_level_mtls.is_empty()) else {
        return WorkloadMtls {
            keys: (base == MtlsMode::Strict)
                .then_some(static_key)
                .into_iter()
                .collect(),
            policy: None,
        };
    };
    let mut strict = BTreeSet::new();
    let mut relaxed = BTreeSet::new();
    for (port, m) in &pa.spec.port_level_mtls {
        match m.mode {
            MtlsMode::Strict => strict.insert(u32::from(*port)),
            MtlsMode::Permissive | MtlsMode::Disable => relaxed.insert(u32::from(*port)),
            MtlsMode::Unset => false,
        };
    }
    let rule = if base == MtlsMode::Strict {
        if relaxed.is_empty() {
            return WorkloadMtls {
                keys: vec![static_key],
                policy: None,
            };
        }
        deny_without_identity(pb::Match {
            not_destination_ports: relaxed.into_iter().collect(),
            ..Default::default()
        })
    } else {
        if strict.is_empty() {
            return WorkloadMtls::default();
        }
        deny_without_identity(pb::Match {
            destination_ports: strict.into_iter().collect(),
            ..Default::default()
        })
    };
    let name = format!("{CONVERTED_PREFIX}{pa_name}");
    WorkloadMtls {
        keys: vec![format!("{ns}/{name}")],
        policy: Some(pb::Authorization {
            name,
            namespace: ns.to_string(),
            scope: pb::Scope::WorkloadSelector as i32,
            action: pb::Action::Deny as i32,
            rules: vec![rule],
            dry_run: false,
            extensions: vec![],
        }),
    }
}
