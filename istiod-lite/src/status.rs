//! Which conditions each object should carry, decided from the model and
//! its translation (pure; `mesh_kube::status` writes them in a cluster).
//!
//! - An AuthorizationPolicy enforced by ztunnel (selector, namespace or
//!   mesh-wide) gets `ZtunnelAccepted`: `Accepted` "attached to ztunnel", or
//!   `UnsupportedValue` with istiod's warning when part of it cannot be
//!   enforced there.
//! - One with `targetRefs` gets `WaypointAccepted`: `Accepted` "bound to
//!   <waypoint>" when a waypoint enforces it, otherwise why not.
//! - A Service that asks for a waypoint (`istio.io/use-waypoint` on it or
//!   its namespace) gets `istio.io/WaypointBound`: bound to which one, or
//!   `WaypointIsNotReady`.

use std::collections::BTreeMap;

use mesh_kube::status::{Condition, StatusKey, StatusKind, Statuses};
use mesh_model::routes::{GATEWAY_NAME_LABEL, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE};
use mesh_model::{Kind, Model};

use crate::translate::Translation;

fn condition(type_: &str, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
    }
}

pub fn desired(model: &Model, t: &Translation) -> Statuses {
    let mut out = Statuses::new();
    // Which waypoints enforce each targetRefs policy, and bind each Service.
    let mut enforced_by: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    let mut bound_to: BTreeMap<(String, String), String> = BTreeMap::new();
    for (waypoint, cfg) in &t.waypoints {
        let services = cfg.services.iter();
        let policies = cfg
            .policies
            .iter()
            .chain(services.clone().flat_map(|s| s.policies.iter()));
        for p in policies {
            let by = enforced_by
                .entry((p.namespace.clone(), p.name.clone()))
                .or_default();
            if !by.contains(waypoint) {
                by.push(waypoint.clone());
            }
        }
        for s in services {
            bound_to.insert((s.namespace.clone(), s.name.clone()), waypoint.clone());
        }
    }
    let warning = |ns: &str, name: &str| {
        t.warnings
            .iter()
            .find(|w| {
                w.object.kind == Kind::AuthorizationPolicy
                    && w.object.namespace == ns
                    && w.object.name == name
            })
            .map(|w| w.message.clone())
    };

    for ((ns, name), ap) in &model.authorization_policies {
        let key = StatusKey {
            kind: StatusKind::AuthorizationPolicy,
            namespace: ns.clone(),
            name: name.clone(),
        };
        let targeted = !ap.spec.target_refs.is_empty() || ap.spec.target_ref.is_some();
        let c = match (targeted, warning(ns, name)) {
            (false, None) => condition("ZtunnelAccepted", true, "Accepted", "attached to ztunnel".into()),
            (false, Some(w)) => condition("ZtunnelAccepted", false, "UnsupportedValue", w),
            (true, Some(w)) => condition("WaypointAccepted", false, "UnsupportedValue", w),
            (true, None) => match enforced_by.get(&(ns.clone(), name.clone())) {
                Some(by) => condition("WaypointAccepted", true, "Accepted", format!("bound to {}", by.join(", "))),
                None => condition(
                    "WaypointAccepted",
                    false,
                    "TargetNotFound",
                    "no waypoint enforces this policy: none of its targets is a waypoint Gateway or a Service bound to one".into(),
                ),
            },
        };
        out.insert(key, vec![c]);
    }

    for ((ns, name), svc) in &model.services {
        // A waypoint's own Service never goes through a waypoint.
        if svc.metadata.labels.contains_key(GATEWAY_NAME_LABEL) {
            continue;
        }
        let ns_labels = model.namespace_labels(ns);
        let label = |k: &str| {
            svc.metadata
                .labels
                .get(k)
                .or_else(|| ns_labels.and_then(|l| l.get(k)))
        };
        let Some(wanted) = label(USE_WAYPOINT).filter(|w| w.as_str() != "none") else {
            continue;
        };
        let wanted_ns = label(USE_WAYPOINT_NAMESPACE).unwrap_or(ns);
        let key = StatusKey {
            kind: StatusKind::Service,
            namespace: ns.clone(),
            name: name.clone(),
        };
        let c = match bound_to.get(&(ns.clone(), name.clone())) {
            Some(waypoint) => condition(
                "istio.io/WaypointBound",
                true,
                "Bound",
                format!("bound to {waypoint}"),
            ),
            None => condition(
                "istio.io/WaypointBound",
                false,
                "WaypointIsNotReady",
                format!(
                    "waypoint {wanted_ns}/{wanted} is not ready: it does not exist, is not programmed, or does not take service traffic"
                ),
            ),
        };
        out.insert(key, vec![c]);
    }
    out
}

#[cfg(test)]
mod tests;
