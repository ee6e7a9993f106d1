//! The mesh as its components know it: Kubernetes-shaped objects, fed by a
//! source (a manifest directory today, the API server later) and read by the
//! control plane's translation to xDS and by the CNI node agent. A [`Model`]
//! is an immutable snapshot; sources publish a new one on every change.
//!
//! - [`objects`]: the Kubernetes and Istio types we read;
//! - [`enrollment`]: which pods are in ambient mode (labels and precedence);
//! - [`manifests`]: the manifest-directory source.
#![forbid(unsafe_code)]

pub mod enrollment;
pub mod manifests;
pub mod objects;
mod parse;
pub mod routes;
mod validate;
pub mod waypoint;

use std::collections::BTreeMap;
use std::fmt;

pub use objects::*;
pub use parse::{ObjectError, Parsed, parse_object};
pub use routes::{Gateway, GrpcRoute, HttpRoute};

/// The kinds the model holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Namespace,
    Pod,
    Service,
    EndpointSlice,
    AuthorizationPolicy,
    PeerAuthentication,
    Gateway,
    HttpRoute,
    GrpcRoute,
    RequestAuthentication,
}

impl Kind {
    /// The kind named by a manifest's `apiVersion` and `kind`, if we read it.
    pub fn from_type(api_version: &str, kind: &str) -> Option<Kind> {
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        Some(match (group, kind) {
            ("", "Namespace") => Kind::Namespace,
            ("", "Pod") => Kind::Pod,
            ("", "Service") => Kind::Service,
            ("discovery.k8s.io", "EndpointSlice") => Kind::EndpointSlice,
            ("security.istio.io", "AuthorizationPolicy") => Kind::AuthorizationPolicy,
            ("security.istio.io", "PeerAuthentication") => Kind::PeerAuthentication,
            ("gateway.networking.k8s.io", "Gateway") => Kind::Gateway,
            ("gateway.networking.k8s.io", "HTTPRoute") => Kind::HttpRoute,
            ("gateway.networking.k8s.io", "GRPCRoute") => Kind::GrpcRoute,
            ("security.istio.io", "RequestAuthentication") => Kind::RequestAuthentication,
            _ => return None,
        })
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Namespace => "Namespace",
            Kind::Pod => "Pod",
            Kind::Service => "Service",
            Kind::EndpointSlice => "EndpointSlice",
            Kind::AuthorizationPolicy => "AuthorizationPolicy",
            Kind::PeerAuthentication => "PeerAuthentication",
            Kind::Gateway => "Gateway",
            Kind::HttpRoute => "HTTPRoute",
            Kind::GrpcRoute => "GRPCRoute",
            Kind::RequestAuthentication => "RequestAuthentication",
        }
    }

    pub fn namespaced(&self) -> bool {
        *self != Kind::Namespace
    }
}

/// Which object: kind, namespace (empty for cluster-scoped kinds), name.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind.as_str(), self.name)
        } else {
            write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
        }
    }
}

/// One object of a kind the model holds.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    Namespace(Namespace),
    Pod(Pod),
    Service(Service),
    EndpointSlice(EndpointSlice),
    AuthorizationPolicy(AuthorizationPolicy),
    PeerAuthentication(PeerAuthentication),
    Gateway(Gateway),
    HttpRoute(HttpRoute),
    GrpcRoute(GrpcRoute),
    RequestAuthentication(RequestAuthentication),
}

/// `(namespace, name)`.
pub type NsName = (String, String);

/// The entries of a by-`(namespace, name)` map that are in `ns`.
pub fn in_namespace<'a, V>(
    map: &'a BTreeMap<NsName, V>,
    ns: &str,
) -> impl Iterator<Item = (&'a str, &'a V)> + 'a {
    let ns = ns.to_string();
    map.range((ns.clone(), String::new())..)
        .take_while(move |((n, _), _)| *n == ns)
        .map(|((_, name), v)| (name.as_str(), v))
}

/// A snapshot of everything the sources know.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Model {
    pub namespaces: BTreeMap<String, Namespace>,
    pub pods: BTreeMap<NsName, Pod>,
    pub services: BTreeMap<NsName, Service>,
    /// The endpoints of Services without a selector, kept by hand (or by
    /// another controller) rather than chosen from pods.
    pub endpoint_slices: BTreeMap<NsName, EndpointSlice>,
    pub authorization_policies: BTreeMap<NsName, AuthorizationPolicy>,
    pub peer_authentications: BTreeMap<NsName, PeerAuthentication>,
    pub gateways: BTreeMap<NsName, Gateway>,
    pub http_routes: BTreeMap<NsName, HttpRoute>,
    pub grpc_routes: BTreeMap<NsName, GrpcRoute>,
    pub request_authentications: BTreeMap<NsName, RequestAuthentication>,
}

impl Model {
    pub fn insert(&mut self, key: &ObjectKey, object: Object) {
        let k = (key.namespace.clone(), key.name.clone());
        match object {
            Object::Namespace(o) => {
                self.namespaces.insert(key.name.clone(), o);
            }
            Object::Pod(o) => {
                self.pods.insert(k, o);
            }
            Object::Service(o) => {
                self.services.insert(k, o);
            }
            Object::EndpointSlice(o) => {
                self.endpoint_slices.insert(k, o);
            }
            Object::AuthorizationPolicy(o) => {
                self.authorization_policies.insert(k, o);
            }
            Object::PeerAuthentication(o) => {
                self.peer_authentications.insert(k, o);
            }
            Object::Gateway(o) => {
                self.gateways.insert(k, o);
            }
            Object::HttpRoute(o) => {
                self.http_routes.insert(k, o);
            }
            Object::GrpcRoute(o) => {
                self.grpc_routes.insert(k, o);
            }
            Object::RequestAuthentication(o) => {
                self.request_authentications.insert(k, o);
            }
        }
    }

    pub fn from_objects<'a>(
        objects: impl IntoIterator<Item = (&'a ObjectKey, &'a Object)>,
    ) -> Self {
        let mut model = Model::default();
        for (key, object) in objects {
            model.insert(key, object.clone());
        }
        model
    }

    /// The labels of namespace `ns` (none if the namespace is not declared).
    pub fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns).map(|n| &n.metadata.labels)
    }
}
