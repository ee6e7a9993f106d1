//! Waypoints (`user-surface.md` §1.3, §2): which Gateways are waypoints,
//! which Services and pods use them, and what each waypoint is told.
//!
//! A waypoint Gateway is *ready* once its Service (`<gateway name>` in the
//! Gateway's namespace, which the waypoint controller creates) exists: that
//! is when a cluster gives the Gateway `status.addresses`. Until then
//! bindings resolve to no waypoint and traffic flows directly, as in Istio.

use std::collections::BTreeMap;

use mesh_proto::istio::workload as wpb;

use super::{TranslateConfig, Warning, workload::service_hostname};
use crate::model::routes::ParentReference;
pub use crate::model::routes::{GATEWAY_NAME_LABEL, USE_WAYPOINT, USE_WAYPOINT_NAMESPACE};
use crate::model::routes::{TrafficType, WAYPOINT_PORT};
use crate::model::waypoint::{AppProtocol, BoundService, Named, PortProtocol, WaypointConfig};
use crate::model::{
    AuthorizationPolicySpec, Gateway, Kind, Labels, Model, NsName, ObjectKey,
    PolicyTargetReference, RequestAuthenticationSpec, Service,
};

/// A waypoint Gateway, with its address once ready.
#[derive(Debug)]
pub struct Waypoint<'m> {
    pub namespace: &'m str,
    pub name: &'m str,
    pub gateway: &'m Gateway,
    /// `None` until its Service exists.
    pub address: Option<wpb::GatewayAddress>,
}

impl Waypoint<'_> {
    pub fn traffic(&self) -> TrafficType {
        self.gateway.traffic_type()
    }
}

/// Every waypoint Gateway of the model, by `(namespace, name)`.
pub struct Waypoints<'m> {
    by_name: BTreeMap<(&'m str, &'m str), Waypoint<'m>>,
    domain: String,
}

/// Which object asks for a waypoint, for the traffic-type rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binder {
    Service,
    Workload,
}

impl<'m> Waypoints<'m> {
    pub fn new(model: &'m Model, cfg: &TranslateConfig, warnings: &mut Vec<Warning>) -> Self {
        let mut by_name = BTreeMap::new();
        for ((ns, name), gw) in &model.gateways {
            if !gw.is_waypoint() {
                continue;
            }
            let ready = model.services.contains_key(&(ns.clone(), name.clone()));
            if !ready {
                warnings.push(Warning {
                    object: ObjectKey {
                        kind: Kind::Gateway,
                        namespace: ns.clone(),
                        name: name.clone(),
                    },
                    message: format!(
                        "WaypointIsNotReady: no Service {ns}/{name} yet; traffic bound to this waypoint flows directly until it exists"
                    ),
                });
            }
            let address = ready.then(|| wpb::GatewayAddress {
                destination: Some(wpb::gateway_address::Destination::Hostname(
                    wpb::NamespacedHostname {
                        namespace: ns.clone(),
                        hostname: service_hostname(name, ns, &cfg.domain_suffix),
                    },
                )),
                hbone_mtls_port: u32::from(WAYPOINT_PORT),
            });
            by_name.insert(
                (ns.as_str(), name.as_str()),
                Waypoint {
                    namespace: ns,
                    name,
                    gateway: gw,
                    address,
                },
            );
        }
        Self {
            by_name,
            domain: cfg.domain_suffix.clone(),
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Waypoint<'m>> {
        self.by_name.values()
    }

    /// The waypoint an object binds to (§1.3): its own label wins over its
    /// namespace's, `none` means none, `use-waypoint-namespace` on the same
    /// object names the namespace; the waypoint must take the traffic type
    /// and allow other namespaces when it is elsewhere. `Err`: a binding the
    /// user asked for on the object itself that cannot be honoured.
    pub fn bind<'a>(
        &'a self,
        binder: Binder,
        ns: &str,
        labels: &Labels,
        ns_labels: Option<&Labels>,
    ) -> Result<Option<&'a Waypoint<'m>>, String> {
        // Waypoints never get a waypoint themselves.
        if labels.contains_key(GATEWAY_NAME_LABEL) {
            return Ok(None);
        }
        let (source, name, wp_ns) = match labels.get(USE_WAYPOINT) {
            Some(name) => (true, name, labels.get(USE_WAYPOINT_NAMESPACE)),
            None => match ns_labels.and_then(|l| l.get(USE_WAYPOINT)) {
                Some(name) => (
                    false,
                    name,
                    ns_labels.and_then(|l| l.get(USE_WAYPOINT_NAMESPACE)),
                ),
                None => return Ok(None),
            },
        };
        if name == "none" {
            return Ok(None);
        }
        let wp_ns = wp_ns.map_or(ns, String::as_str);
        let Some(wp) = self.lookup(wp_ns, name) else {
            return if source {
                Err(format!("waypoint {wp_ns}/{name} does not exist"))
            } else {
                Ok(None)
            };
        };
        let fits = match binder {
            Binder::Service => wp.traffic().takes_services(),
            Binder::Workload => wp.traffic().takes_workloads(),
        };
        if !fits {
            // Inherited from the namespace: silently no waypoint (Istio).
            return if source {
                Err(format!(
                    "UnsupportedTrafficType: waypoint {wp_ns}/{name} does not take {} traffic",
                    match binder {
                        Binder::Service => "service",
                        Binder::Workload => "workload",
                    }
                ))
            } else {
                Ok(None)
            };
        }
        if wp_ns != ns && !wp.gateway.allows_namespace(ns_labels) {
            return Err(format!(
                "AttachmentDenied: waypoint {wp_ns}/{name} does not allow routes from namespace {ns} (allowedRoutes.namespaces.from)"
            ));
        }
        if wp.address.is_none() {
            return Ok(None);
        }
        Ok(Some(wp))
    }

    /// The waypoint Gateway `ns/name` (its Service shares the name).
    pub fn lookup(&self, ns: &str, name: &str) -> Option<&Waypoint<'m>> {
        self.by_name
            .iter()
            .find(|((n, w), _)| *n == ns && *w == name)
            .map(|(_, wp)| wp)
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }
}

fn is_service_ref(r: &PolicyTargetReference, name: &str) -> bool {
    r.kind == "Service" && r.group.as_deref().unwrap_or("").is_empty() && r.name == name
}

fn is_gateway_ref(r: &PolicyTargetReference, name: &str) -> bool {
    r.kind == "Gateway"
        && r.group.as_deref().unwrap_or("gateway.networking.k8s.io") == "gateway.networking.k8s.io"
        && r.name == name
}

/// The objects of `ns` (policies or request authentications) whose
/// `targetRef`/`targetRefs` include one that `hits`, with their specs.
fn targeting<T, S: Clone>(
    objects: &BTreeMap<NsName, T>,
    ns: &str,
    refs: impl Fn(&T) -> (&[PolicyTargetReference], Option<&PolicyTargetReference>),
    spec: impl Fn(&T) -> &S,
    hits: impl Fn(&PolicyTargetReference) -> bool,
) -> Vec<Named<S>> {
    crate::model::in_namespace(objects, ns)
        .filter(|(_, o)| {
            let (many, one) = refs(o);
            many.iter().chain(one).any(&hits)
        })
        .map(|(name, o)| Named {
            namespace: ns.to_string(),
            name: name.to_string(),
            spec: spec(o).clone(),
        })
        .collect()
}

fn policies_targeting(
    model: &Model,
    ns: &str,
    hits: impl Fn(&PolicyTargetReference) -> bool + Copy,
) -> (
    Vec<Named<AuthorizationPolicySpec>>,
    Vec<Named<RequestAuthenticationSpec>>,
) {
    // Waypoints cannot log-only yet: a dry-run policy is left out rather
    // than enforced (see `dry_run_policies_at_waypoints`).
    let policies = targeting(
        &model.authorization_policies,
        ns,
        |ap| match super::authorization::is_dry_run(ap) {
            true => (&[][..], None),
            false => (&ap.spec.target_refs, ap.spec.target_ref.as_ref()),
        },
        |ap| &ap.spec,
        hits,
    );
    let authentications = targeting(
        &model.request_authentications,
        ns,
        |ra| (&ra.spec.target_refs, ra.spec.target_ref.as_ref()),
        |ra| &ra.spec,
        hits,
    );
    (policies, authentications)
}

/// The routes (any namespace) whose parents include Service `ns/name`.
fn routes_to<T, S: Clone>(
    routes: &BTreeMap<NsName, T>,
    ns: &str,
    name: &str,
    parents: impl Fn(&T) -> &[ParentReference],
    spec: impl Fn(&T) -> &S,
) -> Vec<Named<S>> {
    routes
        .iter()
        .filter(|((rns, _), r)| {
            parents(r).iter().any(|p| {
                p.is_service() && p.name == name && p.namespace.as_deref().unwrap_or(rns) == ns
            })
        })
        .map(|((rns, rname), r)| Named {
            namespace: rns.clone(),
            name: rname.clone(),
            spec: spec(r).clone(),
        })
        .collect()
}

/// A bound Service with the routes and policies attached to it.
pub fn bound_service(model: &Model, ns: &str, svc: &Service, domain: &str) -> BoundService {
    let name = svc.metadata.name.as_str();
    let http_routes = routes_to(
        &model.http_routes,
        ns,
        name,
        |r| &r.spec.parent_refs,
        |r| &r.spec,
    );
    let grpc_routes = routes_to(
        &model.grpc_routes,
        ns,
        name,
        |r| &r.spec.parent_refs,
        |r| &r.spec,
    );
    let (policies, request_authentications) =
        policies_targeting(model, ns, |r| is_service_ref(r, name));
    BoundService {
        namespace: ns.to_string(),
        name: name.to_string(),
        hostname: service_hostname(name, ns, domain),
        ports: svc
            .spec
            .ports
            .iter()
            .map(|p| PortProtocol {
                port: p.port,
                protocol: AppProtocol::of(p),
            })
            .collect(),
        http_routes,
        grpc_routes,
        policies,
        request_authentications,
    }
}

/// Routes whose parent is a Gateway: waypoints take routes attached to a
/// Service only (for now), so the user is told rather than left guessing.
pub fn unsupported_route_parents(model: &Model) -> Vec<Warning> {
    let http = model
        .http_routes
        .iter()
        .map(|(k, r)| (Kind::HttpRoute, k, &r.spec.parent_refs));
    let grpc = model
        .grpc_routes
        .iter()
        .map(|(k, r)| (Kind::GrpcRoute, k, &r.spec.parent_refs));
    http.chain(grpc)
        .filter(|(_, _, parents)| parents.iter().any(|p| p.is_gateway()))
        .map(|(kind, (ns, name), _)| Warning {
            object: ObjectKey {
                kind,
                namespace: ns.clone(),
                name: name.clone(),
            },
            message: "routes attached to a Gateway are not applied by waypoints yet; attach the route to the Service (parentRefs: [{group: \"\", kind: Service, name: ...}])".into(),
        })
        .collect()
}

/// Dry-run policies with `targetRefs`: waypoints do not evaluate them
/// (they cannot log without enforcing yet), so they have no effect there,
/// and the user is told.
pub fn dry_run_policies_at_waypoints(model: &Model) -> Vec<Warning> {
    model
        .authorization_policies
        .iter()
        .filter(|(_, ap)| {
            super::authorization::is_dry_run(ap)
                && (!ap.spec.target_refs.is_empty() || ap.spec.target_ref.is_some())
        })
        .map(|((ns, name), _)| Warning {
            object: ObjectKey {
                kind: Kind::AuthorizationPolicy,
                namespace: ns.clone(),
                name: name.clone(),
            },
            message: "dry-run is not supported by waypoints yet: this policy is not sent to the waypoint, so it is neither enforced nor logged there".into(),
        })
        .collect()
}

/// The configuration of one waypoint, given what binds to it.
pub fn config(
    model: &Model,
    wp: &Waypoint<'_>,
    domain: &str,
    services: Vec<BoundService>,
    workloads: Vec<String>,
) -> WaypointConfig {
    let ns = wp.namespace;
    let (policies, request_authentications) =
        policies_targeting(model, ns, |r| is_gateway_ref(r, wp.name));
    WaypointConfig {
        namespace: ns.to_string(),
        name: wp.name.to_string(),
        domain_suffix: domain.to_string(),
        policies,
        request_authentications,
        services,
        workloads,
    }
}

#[cfg(test)]
pub(crate) mod tests;
