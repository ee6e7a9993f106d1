//! `istio.workload.Service` → [`Service`].

use mesh_proto::istio::workload as xds;

use super::workload::{gateway_address, port_mapping};
use super::{ConversionError, each, ip};
use crate::address::{Network, NetworkAddress, max_prefix_len};
use crate::service::Service;

/// Fields the domain does not model yet (waypoints, load balancing, ...) are
/// dropped here.
impl TryFrom<&xds::Service> for Service {
    type Error = ConversionError;

    fn try_from(s: &xds::Service) -> Result<Self, Self::Error> {
        if s.hostname.is_empty() {
            // Half of the primary key `namespace/hostname`.
            return Err(ConversionError::new("hostname", "must not be empty"));
        }
        Ok(Self {
            name: s.name.clone(),
            namespace: s.namespace.clone(),
            hostname: s.hostname.clone(),
            vips: each("addresses", &s.addresses, vip)?,
            ports: each("ports", &s.ports, port_mapping)?,
            subject_alt_names: s.subject_alt_names.clone(),
            waypoint: s
                .waypoint
                .as_ref()
                .map(gateway_address)
                .transpose()
                .map_err(|e| e.within("waypoint"))?,
        })
    }
}

fn vip(a: &xds::NetworkAddress) -> Result<NetworkAddress, ConversionError> {
    let address = ip(&a.address).map_err(|e| e.within("address"))?;
    match a.length {
        None => {}
        Some(len) if len == u32::from(max_prefix_len(address)) => {}
        // Accepting a CIDR VIP as its first address would route traffic for
        // the whole range to nothing; refusing it is at least visible.
        Some(len) => {
            return Err(ConversionError::new(
                "length",
                format!("CIDR VIPs (/{len}) are not supported; only host addresses are"),
            ));
        }
    }
    Ok(NetworkAddress::new(
        Network::new(a.network.clone()),
        address,
    ))
}
