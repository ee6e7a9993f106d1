//! The model → Istio's xDS resources. Pure functions: the same model always
//! gives the same resources (and so the same versions), which is what lets a
//! reconnecting proxy skip everything it already has.

pub mod authorization;
pub mod endpoint_slice;
pub mod peer_authentication;
pub mod waypoint;
pub mod workload;

#[cfg(test)]
pub(crate) mod tests;

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

use mesh_core::TrustDomain;
use mesh_proto::istio::security as spb;
use mesh_proto::istio::workload as wpb;

use crate::model::waypoint::{BoundService, WaypointConfig};
use crate::model::{Kind, Model, ObjectKey, in_namespace, labels_match};
use waypoint::{Binder, Waypoints};

/// Mesh-wide settings the translation needs.
#[derive(Clone, Debug)]
pub struct TranslateConfig {
    pub cluster_id: String,
    pub trust_domain: TrustDomain,
    /// Policies here apply mesh-wide (`istio-system` by default).
    pub root_namespace: String,
    pub network: String,
    pub domain_suffix: String,
    /// Namespaces whose pods are never enrolled.
    pub excluded_namespaces: Vec<String>,
}

impl Default for TranslateConfig {
    fn default() -> Self {
        Self {
            cluster_id: "Kubernetes".into(),
            trust_domain: TrustDomain::default(),
            root_namespace: "istio-system".into(),
            network: String::new(),
            domain_suffix: "cluster.local".into(),
            excluded_namespaces: vec!["kube-system".into()],
        }
    }
}

/// Something the operator should know about one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub object: ObjectKey,
    pub message: String,
}

/// Every resource, by xDS resource name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    pub addresses: BTreeMap<String, wpb::Address>,
    pub authorizations: BTreeMap<String, spb::Authorization>,
    /// Each waypoint's configuration, by `namespace/name`.
    pub waypoints: BTreeMap<String, WaypointConfig>,
    pub warnings: Vec<Warning>,
}

pub fn translate(model: &Model, cfg: &TranslateConfig) -> Translation {
    let mut out = Translation::default();
    let key = |kind, ns: &str, name: &str| ObjectKey {
        kind,
        namespace: ns.to_string(),
        name: name.to_string(),
    };

    // Authorization policies, remembering the selector-based ones.
    let mut selector_policies = Vec::new();
    for ((ns, name), ap) in &model.authorization_policies {
        let converted = authorization::convert(ap, ns, name, &cfg.root_namespace);
        if let Some(message) = converted.warning {
            out.warnings.push(Warning {
                object: key(Kind::AuthorizationPolicy, ns, name),
                message,
            });
        }
        if let Some(policy) = converted.policy {
            if let Some(selector) = &ap.spec.selector {
                selector_policies.push((ns.as_str(), selector, format!("{ns}/{name}")));
            }
            out.authorizations.insert(format!("{ns}/{name}"), policy);
        }
    }
    let strict = peer_authentication::static_strict(&cfg.root_namespace);
    out.authorizations
        .insert(format!("{}/{}", strict.namespace, strict.name), strict);

    let waypoints = Waypoints::new(model, cfg, &mut out.warnings);
    let mut bound_services: BTreeMap<(String, String), Vec<BoundService>> = BTreeMap::new();
    let mut bound_workloads: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();

    // Services, and the endpoints each selects.
    let mut endpoints: HashMap<(String, String), HashMap<String, wpb::PortList>> = HashMap::new();
    for ((ns, name), svc) in &model.services {
        let ips = match workload::service_ips(svc) {
            Ok(ips) => ips,
            Err(bad) => {
                out.warnings.push(Warning {
                    object: key(Kind::Service, ns, name),
                    message: format!(
                        "spec.clusterIP {bad:?} is not an IP; the Service is not published"
                    ),
                });
                continue;
            }
        };
        let mut resource = workload::service(svc, ns, &ips, cfg);
        // A waypoint's own Service never goes through a waypoint.
        let binding = match waypoints.lookup(ns, name) {
            Some(_) => Ok(None),
            None => waypoints.bind(
                Binder::Service,
                ns,
                &svc.metadata.labels,
                model.namespace_labels(ns),
            ),
        };
        match binding {
            Ok(Some(wp)) => {
                resource.waypoint = wp.address.clone();
                bound_services
                    .entry((wp.namespace.to_string(), wp.name.to_string()))
                    .or_default()
                    .push(waypoint::bound_service(model, ns, svc, &cfg.domain_suffix));
            }
            Ok(None) => {}
            Err(message) => out.warnings.push(Warning {
                object: key(Kind::Service, ns, name),
                message,
            }),
        }
        let svc_key = format!("{ns}/{}", resource.hostname);
        if !svc.spec.selector.is_empty() {
            let selects = in_namespace(&model.pods, ns)
                .filter(|(_, pod)| labels_match(&svc.spec.selector, &pod.metadata.labels));
            for (pod_name, pod) in selects {
                endpoints
                    .entry((ns.clone(), pod_name.to_string()))
                    .or_default()
                    .insert(svc_key.clone(), workload::endpoint_ports(svc, pod));
            }
        }
        out.addresses.insert(
            svc_key,
            wpb::Address {
                r#type: Some(wpb::address::Type::Service(resource)),
            },
        );
    }

    // Endpoints of Services without a selector, from their slices (a
    // selector Service's own slices would only repeat what its pods say).
    for ((ns, slice_name), slice) in &model.endpoint_slices {
        let Some(svc_name) = slice.service_name() else {
            continue;
        };
        let Some(svc) = model.services.get(&(ns.clone(), svc_name.to_string())) else {
            continue;
        };
        if !svc.spec.selector.is_empty() || !endpoint_slice::has_addresses(slice) {
            continue;
        }
        let service_key = format!(
            "{ns}/{}",
            workload::service_hostname(svc_name, ns, &cfg.domain_suffix)
        );
        let ports = endpoint_slice::ports(svc, slice);
        let each = endpoint_slice::SliceEndpoint {
            namespace: ns,
            slice: slice_name,
            service: svc_name,
            service_key: &service_key,
            ports: &ports,
        };
        for endpoint in &slice.endpoints {
            if let Some(pod) = endpoint_slice::target_pod(endpoint)
                && model.pods.contains_key(&(ns.clone(), pod.to_string()))
            {
                endpoints
                    .entry((ns.clone(), pod.to_string()))
                    .or_default()
                    .insert(service_key.clone(), ports.clone());
                continue;
            }
            for address in &endpoint.addresses {
                let Ok(ip) = address.parse::<IpAddr>() else {
                    out.warnings.push(Warning {
                        object: key(Kind::EndpointSlice, ns, slice_name),
                        message: format!(
                            "endpoint address {address:?} is not an IP; it is not published"
                        ),
                    });
                    continue;
                };
                let w = each.workload(endpoint, ip, cfg);
                out.addresses.insert(
                    w.uid.clone(),
                    wpb::Address {
                        r#type: Some(wpb::address::Type::Workload(w)),
                    },
                );
            }
        }
    }

    // Pods.
    let mut converted_pa = BTreeMap::new();
    for ((ns, name), pod) in &model.pods {
        // Finished pods give their IP back (it may be reused by another
        // pod); host-network pods have the node's IP, never indexed.
        let finished = matches!(pod.status.phase.as_deref(), Some("Succeeded" | "Failed"));
        if finished || pod.spec.host_network {
            continue;
        }
        let ips = match workload::pod_ips(pod) {
            Ok(ips) if !ips.is_empty() => ips,
            Ok(_) => continue, // not scheduled yet: nothing to address
            Err(bad) => {
                out.warnings.push(Warning {
                    object: key(Kind::Pod, ns, name),
                    message: format!("status.podIP {bad:?} is not an IP; the pod is not published"),
                });
                continue;
            }
        };
        let labels = &pod.metadata.labels;
        let mut policies: Vec<String> = selector_policies
            .iter()
            .filter(|(pns, sel, _)| {
                (*pns == ns || *pns == cfg.root_namespace) && sel.matches(labels)
            })
            .map(|(_, _, k)| k.clone())
            .collect();
        let mtls = peer_authentication::for_workload(model, ns, labels, &cfg.root_namespace);
        policies.extend(mtls.keys);
        if let Some(p) = mtls.policy {
            converted_pa.insert(format!("{}/{}", p.namespace, p.name), p);
        }
        let mut pod = pod.clone();
        pod.metadata.namespace = Some(ns.clone());
        let services = endpoints
            .remove(&(ns.clone(), name.clone()))
            .unwrap_or_default();
        let mut w = workload::pod_workload(
            &pod,
            ns,
            &ips,
            &services,
            policies,
            model.namespace_labels(ns),
            cfg,
        );
        match waypoints.bind(Binder::Workload, ns, labels, model.namespace_labels(ns)) {
            Ok(Some(wp)) => {
                w.waypoint = wp.address.clone();
                bound_workloads
                    .entry((wp.namespace.to_string(), wp.name.to_string()))
                    .or_default()
                    .push(w.uid.clone());
            }
            Ok(None) => {}
            Err(message) => out.warnings.push(Warning {
                object: key(Kind::Pod, ns, name),
                message,
            }),
        }
        out.addresses.insert(
            w.uid.clone(),
            wpb::Address {
                r#type: Some(wpb::address::Type::Workload(w)),
            },
        );
    }
    out.authorizations.extend(converted_pa);

    out.warnings
        .extend(waypoint::unsupported_route_parents(model));
    out.warnings
        .extend(waypoint::dry_run_policies_at_waypoints(model));
    for wp in waypoints.iter() {
        let k = (wp.namespace.to_string(), wp.name.to_string());
        let config = waypoint::config(
            model,
            wp,
            waypoints.domain(),
            bound_services.remove(&k).unwrap_or_default(),
            bound_workloads.remove(&k).unwrap_or_default(),
        );
        out.waypoints.insert(format!("{}/{}", k.0, k.1), config);
    }
    out
}
