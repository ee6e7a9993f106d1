//! Addresses qualified by the network they live on, and IP prefixes.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
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

/// The one form of an address read from a socket. A dual-stack (`[::]`)
/// socket reports an IPv4 peer as `::ffff:a.b.c.d`; workloads, policies and
/// logs know it as `a.b.c.d`, so the mapped form is turned back into IPv4
/// at the socket boundary, in every component (`mesh_runtime::socket`).
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// An IP prefix (CIDR), such as `10.0.0.0/8`; a single host is a full-length
/// prefix (`10.1.2.3/32`).
///
/// Host bits are cleared at construction (`10.1.2.3/8` becomes `10.0.0.0/8`),
/// so two values naming the same set of addresses compare equal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpNet {
    addr: IpAddr,
    prefix_len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpNetError {
    #[error("{0:?} is not an IP address or an <ip>/<prefix length> CIDR")]
    Malformed(String),
    #[error("prefix length {prefix_len} is longer than the {max} bits of {addr}")]
    PrefixTooLong {
        addr: IpAddr,
        prefix_len: u8,
        max: u8,
    },
}

impl IpNet {
    /// The prefix of `prefix_len` bits containing `addr`.
    pub fn new(addr: IpAddr, prefix_len: u8) -> Result<Self, IpNetError> {
        let max = max_prefix_len(addr);
        if prefix_len > max {
            return Err(IpNetError::PrefixTooLong {
                addr,
                prefix_len,
                max,
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => IpAddr::V4((u32::from(a) & v4_mask(prefix_len)).into()),
            IpAddr::V6(a) => IpAddr::V6((u128::from(a) & v6_mask(prefix_len)).into()),
        };
        Ok(Self { addr, prefix_len })
    }

    /// The prefix holding exactly `addr`.
    pub fn host(addr: IpAddr) -> Self {
        Self {
            addr,
            prefix_len: max_prefix_len(addr),
        }
    }

    /// The first address of the prefix (host bits cleared).
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// Whether `ip` lies in the prefix.
    ///
    /// IPv4 and IPv6 prefixes never contain each other's addresses, but an
    /// IPv4-mapped IPv6 address (`::ffff:10.1.2.3`, what a dual-stack socket
    /// reports for an IPv4 peer) is treated as the IPv4 address it carries.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix_len) == u32::from(net)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix_len) == u128::from(net)
            }
            _ => false,
        }
    }
}

/// 32 for IPv4, 128 for IPv6.
pub fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn v4_mask(prefix_len: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix_len))
        .unwrap_or(0)
}

fn v6_mask(prefix_len: u8) -> u128 {
    u128::MAX
        .checked_shl(128 - u32::from(prefix_len))
        .unwrap_or(0)
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix_len)
    }
}

/// Accepts a bare address (a host) or `<ip>/<prefix length>`.
impl FromStr for IpNet {
    type Err = IpNetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let malformed = || IpNetError::Malformed(s.to_string());
        match s.split_once('/') {
            None => Ok(Self::host(s.parse().map_err(|_| malformed())?)),
            Some((addr, len)) => {
                let addr = addr.parse().map_err(|_| malformed())?;
                let len = len.parse().map_err(|_| malformed())?;
                Self::new(addr, len)
            }
        }
    }
}

impl serde::Serialize for IpNet {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for IpNet {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn mapped_ipv4_becomes_ipv4_and_nothing_else_changes() {
        let sock = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(canonical(sock("[::ffff:10.1.2.3]:80")), sock("10.1.2.3:80"));
        for unchanged in [
            "10.1.2.3:80",
            "[2001:db8::1]:80",
            "[::1]:80",
            "[::a01:203]:80",
        ] {
            assert_eq!(canonical(sock(unchanged)), sock(unchanged));
        }
    }

    #[test]
    fn parses_default_network() {
        let a: NetworkAddress = "/10.0.0.1".parse().unwrap();
        assert_eq!(a.network.as_str(), "");
        assert_eq!(a.to_string(), "/10.0.0.1");
        assert!("10.0.0.1".parse::<NetworkAddress>().is_err());
    }

    #[test]
    fn ip_net_parses_hosts_and_prefixes() {
        assert_eq!(net("10.1.2.3").to_string(), "10.1.2.3/32");
        assert_eq!(net("10.0.0.0/8").to_string(), "10.0.0.0/8");
        assert_eq!(net("10.1.2.3/8"), net("10.0.0.0/8"));
        assert_eq!(net("2001:db8::1").to_string(), "2001:db8::1/128");
        assert_eq!(net("2001:db8::1/32").to_string(), "2001:db8::/32");
        assert_eq!(net("0.0.0.0/0").prefix_len(), 0);
        for bad in [
            "",
            "10.0.0.0/",
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad:?} should not parse");
        }
        assert_eq!(
            IpNet::new(ip("10.0.0.0"), 33),
            Err(IpNetError::PrefixTooLong {
                addr: ip("10.0.0.0"),
                prefix_len: 33,
                max: 32
            })
        );
    }

    #[test]
    fn ip_net_contains() {
        assert!(net("10.0.0.0/8").contains(ip("10.255.0.1")));
        assert!(!net("10.0.0.0/8").contains(ip("11.0.0.1")));
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(net("0.0.0.0/0").contains(ip("192.0.2.1")));
        assert!(!net("0.0.0.0/0").contains(ip("2001:db8::1")));
        assert!(!net("::/0").contains(ip("192.0.2.1")));
        assert!(net("2001:db8::/32").contains(ip("2001:db8:1::1")));
        assert!(!net("2001:db8::/32").contains(ip("2001:db9::1")));
    }

    #[test]
    fn ip_net_treats_v4_mapped_peers_as_v4() {
        assert!(net("10.0.0.0/8").contains(ip("::ffff:10.1.2.3")));
        assert!(!net("10.0.0.0/8").contains(ip("::ffff:11.1.2.3")));
    }

    #[test]
    fn ip_net_serde_is_a_string() {
        let n = net("10.0.0.0/8");
        assert_eq!(serde_json::to_string(&n).unwrap(), "\"10.0.0.0/8\"");
        assert_eq!(
            serde_json::from_str::<IpNet>("\"10.1.2.3\"").unwrap(),
            net("10.1.2.3/32")
        );
        assert!(serde_json::from_str::<IpNet>("\"10.0.0.0/40\"").is_err());
    }
}
