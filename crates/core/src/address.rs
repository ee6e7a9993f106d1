//! Addresses qualified by the network they live on.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// A network name; the empty string is the default network.
#[derive(
    Clone,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Network(String);

impl Network {
    pub fn new(name: impl Into<String>) -> Self {
        Self(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An IP on a network: the secondary key of workloads and services (`network/ip`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkAddress {
    pub network: Network,
    pub address: IpAddr,
}

impl NetworkAddress {
    pub fn new(network: Network, address: IpAddr) -> Self {
        Self { network, address }
    }
}

impl fmt::Display for NetworkAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.address)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("network address {0:?} is not of the form <network>/<ip>")]
pub struct BadNetworkAddress(String);

impl FromStr for NetworkAddress {
    type Err = BadNetworkAddress;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (network, ip) = s
            .rsplit_once('/')
            .ok_or_else(|| BadNetworkAddress(s.to_string()))?;
        let address = ip.parse().map_err(|_| BadNetworkAddress(s.to_string()))?;
        Ok(Self::new(Network::new(network), address))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_default_network() {
        let a: NetworkAddress = "/10.0.0.1".parse().unwrap();
        assert_eq!(a.network.as_str(), "");
        assert_eq!(a.to_string(), "/10.0.0.1");
        assert!("10.0.0.1".parse::<NetworkAddress>().is_err());
    }
}
