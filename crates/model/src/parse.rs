//! One manifest document → one typed object, with errors that name the
//! object and the field.

use std::fmt;

use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::validate;
use super::{GrpcRoute, HttpRoute, Kind, Object, ObjectKey};

/// The namespace of a namespaced object whose manifest names none, as
/// `kubectl apply` assumes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// What a document turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Object(ObjectKey, Box<Object>),
    /// A kind the mesh does not read (a Deployment, a ConfigMap, ...).
    Ignored {
        api_version: String,
        kind: String,
    },
}

/// Why a document was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectError {
    /// The object, when the document got far enough to name it.
    pub object: Option<ObjectKey>,
    /// The field path, e.g. `spec.rules[0].from[0].source`.
    pub field: Option<String>,
    pub problem: String,
}

impl fmt::Display for ObjectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(o) = &self.object {
            write!(f, "{o}: ")?;
        }
        if let Some(field) = &self.field {
            write!(f, "{field}: ")?;
        }
        f.write_str(&self.problem)
    }
}

impl std::error::Error for ObjectError {}

fn header_error(field: &str, problem: &str) -> ObjectError {
    ObjectError {
        object: None,
        field: Some(field.to_string()),
        problem: problem.to_string(),
    }
}

/// Kinds of security.istio.io that exist but are not read (yet).
const KNOWN_SECURITY: [&str; 0] = [];
/// Kinds of the Gateway API that exist but are not read (yet).
const KNOWN_GATEWAY: [&str; 6] = [
    "GatewayClass",
    "TCPRoute",
    "TLSRoute",
    "UDPRoute",
    "ReferenceGrant",
    "BackendTLSPolicy",
];

/// Kubernetes object names: a DNS-1123 subdomain. (Istio relies on this:
/// its generated policy names contain `_`, which no user object can.)
fn dns1123_subdomain(name: &str) -> bool {
    name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Reads one YAML (or JSON) document.
pub fn parse_object(doc: Value) -> Result<Parsed, ObjectError> {
    let text = |v: &Value, field: &str| -> Result<String, ObjectError> {
        match v.get(field) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(_) => Err(header_error(field, "must be a non-empty string")),
            None => Err(header_error(field, "is missing")),
        }
    };
    if !doc.is_mapping() {
        return Err(header_error("", "a manifest must be a mapping"));
    }
    let api_version = text(&doc, "apiVersion")?;
    let kind_name = text(&doc, "kind")?;
    let Some(kind) = Kind::from_type(&api_version, &kind_name) else {
        // In the groups we read, an unknown kind is more likely a typo than
        // something to ignore: refuse it, keeping what was there.
        let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
        let known_elsewhere = match group {
            "security.istio.io" => KNOWN_SECURITY.contains(&kind_name.as_str()),
            "gateway.networking.k8s.io" => KNOWN_GATEWAY.contains(&kind_name.as_str()),
            _ => true,
        };
        if !known_elsewhere {
            return Err(header_error(
                "kind",
                &format!("{kind_name:?} is not a kind of {group}"),
            ));
        }
        return Ok(Parsed::Ignored {
            api_version,
            kind: kind_name,
        });
    };
    let metadata = doc
        .get("metadata")
        .ok_or_else(|| header_error("metadata", "is missing"))?;
    let name = text(metadata, "name").map_err(|mut e| {
        e.field = Some("metadata.name".into());
        e
    })?;
    let namespace = if kind.namespaced() {
        match metadata.get("namespace") {
            None | Some(Value::Null) => DEFAULT_NAMESPACE.to_string(),
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(_) => return Err(header_error("metadata.namespace", "must be a string")),
        }
    } else {
        String::new()
    };
    if !dns1123_subdomain(&name) {
        return Err(ObjectError {
            object: None,
            field: Some("metadata.name".into()),
            problem: format!(
                "{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253)"
            ),
        });
    }
    let key = ObjectKey {
        kind,
        namespace,
        name,
    };
    let in_object = |e: ObjectError| ObjectError {
        object: Some(key.clone()),
        ..e
    };
    let object = match kind {
        Kind::Namespace => Object::Namespace(typed(doc).map_err(in_object)?),
        Kind::Pod => Object::Pod(typed(doc).map_err(in_object)?),
        Kind::Service => Object::Service(typed(doc).map_err(in_object)?),
        Kind::EndpointSlice => Object::EndpointSlice(typed(doc).map_err(in_object)?),
        Kind::AuthorizationPolicy => {
            let ap = typed(doc).map_err(in_object)?;
            validate::authorization_policy(&ap).map_err(in_object)?;
            Object::AuthorizationPolicy(ap)
        }
        Kind::PeerAuthentication => {
            let pa = typed(doc).map_err(in_object)?;
            validate::peer_authentication(&pa).map_err(in_object)?;
            Object::PeerAuthentication(pa)
        }
        Kind::Gateway => {
            let gw = typed(doc).map_err(in_object)?;
            validate::gateway(&gw).map_err(in_object)?;
            Object::Gateway(gw)
        }
        Kind::HttpRoute => {
            let route: HttpRoute = typed(doc).map_err(in_object)?;
            validate::http_route(&route.spec).map_err(in_object)?;
            Object::HttpRoute(route)
        }
        Kind::GrpcRoute => {
            let route: GrpcRoute = typed(doc).map_err(in_object)?;
            validate::grpc_route(&route.spec).map_err(in_object)?;
            Object::GrpcRoute(route)
        }
        Kind::RequestAuthentication => {
            let ra = typed(doc).map_err(in_object)?;
            validate::request_authentication(&ra).map_err(in_object)?;
            Object::RequestAuthentication(ra)
        }
    };
    Ok(Parsed::Object(key, Box::new(object)))
}

/// Deserializes keeping track of where a failure happened.
fn typed<T: DeserializeOwned>(doc: Value) -> Result<T, ObjectError> {
    serde_path_to_error::deserialize(doc).map_err(|e| {
        let path = e.path().to_string();
        ObjectError {
            object: None,
            field: (path != ".").then_some(path),
            problem: e.into_inner().to_string(),
        }
    })
}
