//! What a waypoint is told: the configuration istiod-lite sends each
//! waypoint over delta ADS under [`WAYPOINT_CONFIG_TYPE`], one resource per
//! waypoint named `<namespace>/<gateway name>`. The body is this structure
//! as JSON (documented in `docs/waypoint.md`).
//!
//! The control plane does the binding (which Services and workloads use the
//! waypoint, which routes and policies attach to them); the specs travel as
//! users wrote them, and the waypoint compiles them when they arrive.

use serde::{Deserialize, Serialize};

use crate::objects::{AuthorizationPolicySpec, RequestAuthenticationSpec, ServicePort};
use crate::routes::{GrpcRouteSpec, HttpRouteSpec};

/// The type URL of a waypoint's configuration resource (JSON body).
pub const WAYPOINT_CONFIG_TYPE: &str = "type.ambient-mesh.dev/mesh.waypoint.v1.WaypointConfig";

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WaypointConfig {
    /// The waypoint Gateway.
    pub namespace: String,
    pub name: String,
    /// The cluster's DNS suffix (`cluster.local`), for backend host names.
    pub domain_suffix: String,
    /// Policies whose `targetRefs` name this Gateway: every request.
    #[serde(default)]
    pub policies: Vec<Named<AuthorizationPolicySpec>>,
    #[serde(default)]
    pub request_authentications: Vec<Named<RequestAuthenticationSpec>>,
    /// Services whose traffic this waypoint takes.
    #[serde(default)]
    pub services: Vec<BoundService>,
    /// Workloads (xDS uids) whose pod-addressed traffic this waypoint takes.
    #[serde(default)]
    pub workloads: Vec<String>,
}

/// A Service bound to the waypoint, with what attaches to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BoundService {
    pub namespace: String,
    pub name: String,
    pub hostname: String,
    #[serde(default)]
    pub ports: Vec<PortProtocol>,
    /// In precedence order (namespace, then name).
    #[serde(default)]
    pub http_routes: Vec<Named<HttpRouteSpec>>,
    #[serde(default)]
    pub grpc_routes: Vec<Named<GrpcRouteSpec>>,
    #[serde(default)]
    pub policies: Vec<Named<AuthorizationPolicySpec>>,
    #[serde(default)]
    pub request_authentications: Vec<Named<RequestAuthenticationSpec>>,
}

/// An object's spec with its name, for logs and errors.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Named<T> {
    pub namespace: String,
    pub name: String,
    pub spec: T,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortProtocol {
    pub port: u16,
    pub protocol: AppProtocol,
}

/// What a Service port carries, as Istio decides it from `appProtocol`
/// and then the port name.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppProtocol {
    Http,
    Http2,
    Grpc,
    Tcp,
    /// Not declared: the waypoint looks at the first bytes.
    #[default]
    Unspecified,
}

impl AppProtocol {
    /// Istio's protocol selection: `appProtocol`, else the name's prefix
    /// before `-` (`http-web`, `grpc`, `tcp-db`).
    pub fn of(port: &ServicePort) -> Self {
        let pick = |s: &str| -> Option<Self> {
            Some(match s.to_ascii_lowercase().as_str() {
                "http" | "http-web" => Self::Http,
                "http2" | "kubernetes.io/h2c" => Self::Http2,
                "grpc" | "grpc-web" => Self::Grpc,
                "tcp" | "tls" | "https" | "mongo" | "mysql" | "redis" | "kubernetes.io/ws"
                | "kubernetes.io/wss" => Self::Tcp,
                _ => return None,
            })
        };
        if let Some(p) = port.app_protocol.as_deref().and_then(pick) {
            return p;
        }
        port.name
            .as_deref()
            .and_then(|n| pick(n.split('-').next().unwrap_or(n)))
            .unwrap_or_default()
    }

    pub fn is_http(self) -> bool {
        matches!(self, Self::Http | Self::Http2 | Self::Grpc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(name: Option<&str>, app: Option<&str>) -> ServicePort {
        ServicePort {
            name: name.map(String::from),
            port: 80,
            target_port: None,
            protocol: None,
            app_protocol: app.map(String::from),
        }
    }

    #[test]
    fn protocol_comes_from_app_protocol_then_the_name_prefix() {
        assert_eq!(
            AppProtocol::of(&port(Some("http-web"), None)),
            AppProtocol::Http
        );
        assert_eq!(
            AppProtocol::of(&port(Some("grpc"), None)),
            AppProtocol::Grpc
        );
        assert_eq!(
            AppProtocol::of(&port(Some("tcp-db"), None)),
            AppProtocol::Tcp
        );
        assert_eq!(
            AppProtocol::of(&port(Some("web"), None)),
            AppProtocol::Unspecified
        );
        assert_eq!(
            AppProtocol::of(&port(Some("tcp"), Some("http"))),
            AppProtocol::Http
        );
        assert_eq!(
            AppProtocol::of(&port(None, Some("kubernetes.io/h2c"))),
            AppProtocol::Http2
        );
    }

    #[test]
    fn a_config_survives_json() {
        let cfg = WaypointConfig {
            namespace: "default".into(),
            name: "waypoint".into(),
            domain_suffix: "cluster.local".into(),
            services: vec![BoundService {
                namespace: "default".into(),
                name: "echo".into(),
                hostname: "echo.default.svc.cluster.local".into(),
                ports: vec![PortProtocol {
                    port: 80,
                    protocol: AppProtocol::Http,
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let json = serde_json::to_vec(&cfg).unwrap();
        assert_eq!(
            serde_json::from_slice::<WaypointConfig>(&json).unwrap(),
            cfg
        );
    }
}
