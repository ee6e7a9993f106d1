//! Where a waypoint is: Istio's `GatewayAddress` as the data plane uses it.

use std::fmt;
use std::net::IpAddr;

use crate::address::Network;

/// A waypoint (or gateway) to send traffic through, reached with HBONE.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GatewayAddress {
    pub destination: GatewayDestination,
    /// The port that accepts HBONE (15008).
    pub hbone_port: u16,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum GatewayDestination {
    /// The waypoint's Service (preferred by istiod): its endpoints are the
    /// waypoint's pods. `namespace/hostname` is the service key.
    Hostname { namespace: String, hostname: String },
    /// One address.
    Address { network: Network, address: IpAddr },
}

impl fmt::Display for GatewayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.destination {
            GatewayDestination::Hostname {
                namespace,
                hostname,
            } => {
                write!(f, "{namespace}/{hostname}:{}", self.hbone_port)
            }
            GatewayDestination::Address { address, .. } => {
                write!(
                    f,
                    "{}",
                    std::net::SocketAddr::new(*address, self.hbone_port)
                )
            }
        }
    }
}
