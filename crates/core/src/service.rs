//! What the data plane knows about a service: its VIPs and port mapping.

use crate::address::NetworkAddress;

/// How a service port reaches an endpoint.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PortMapping {
    /// The port clients connect to on the service's VIP.
    pub service_port: u16,
    /// The port the endpoint listens on. On a [`Service`], 0 means a named
    /// port, resolved per endpoint from the workload's own mapping.
    pub target_port: u16,
}

/// A service (primary key `namespace/hostname`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub namespace: String,
    /// The FQDN, e.g. `echo.default.svc.cluster.local`.
    pub hostname: String,
    /// Virtual IPs; empty for a headless service.
    pub vips: Vec<NetworkAddress>,
    pub ports: Vec<PortMapping>,
    /// Extra SPIFFE URIs accepted as the server's identity, beyond the
    /// endpoint's own.
    pub subject_alt_names: Vec<String>,
    /// The waypoint that takes traffic addressed to this service.
    pub waypoint: Option<crate::waypoint::GatewayAddress>,
}

impl Service {
    /// `namespace/hostname`: how workloads name the services they belong to.
    pub fn key(&self) -> String {
        service_key(&self.namespace, &self.hostname)
    }
}

/// The key of the service `hostname` in `namespace`.
pub fn service_key(namespace: &str, hostname: &str) -> String {
    format!("{namespace}/{hostname}")
}
