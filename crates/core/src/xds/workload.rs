//! `istio.workload.Workload` → [`Workload`].

use std::collections::BTreeMap;

use mesh_proto::istio::workload as xds;

use super::{ConversionError, each, ip, port};
use crate::address::Network;
use crate::identity::{DEFAULT_SERVICE_ACCOUNT, TrustDomain};
use crate::service::PortMapping;
use crate::waypoint::{GatewayAddress, GatewayDestination};
use crate::workload::{TunnelProtocol, Workload, WorkloadTelemetry, WorkloadUid};

/// Fields the domain does not model yet (waypoints, locality, telemetry
/// names, ...) are dropped here.
impl TryFrom<&xds::Workload> for Workload {
    type Error = ConversionError;

    fn try_from(w: &xds::Workload) -> Result<Self, Self::Error> {
        if w.uid.is_empty() {
            return Err(ConversionError::new("uid", "must not be empty"));
        }
        let tunnel_protocol = match xds::TunnelProtocol::try_from(w.tunnel_protocol) {
            Ok(xds::TunnelProtocol::None) => TunnelProtocol::None,
            Ok(xds::TunnelProtocol::Hbone) => TunnelProtocol::Hbone,
            Ok(xds::TunnelProtocol::LegacyIstioMtls) => {
                return Err(ConversionError::new(
                    "tunnel_protocol",
                    "LEGACY_ISTIO_MTLS is not supported; only NONE and HBONE are",
                ));
            }
            Err(_) => {
                return Err(ConversionError::new(
                    "tunnel_protocol",
                    format!("unknown value {}", w.tunnel_protocol),
                ));
            }
        };
        let trust_domain = if w.trust_domain.is_empty() {
            TrustDomain::default()
        } else {
            TrustDomain::new(w.trust_domain.clone())
                .map_err(|e| ConversionError::new("trust_domain", e.to_string()))?
        };
        let service_account = if w.service_account.is_empty() {
            DEFAULT_SERVICE_ACCOUNT.to_string()
        } else {
            w.service_account.clone()
        };
        let services = w
            .services
            .iter()
            .map(|(key, list)| {
                let ports = each("ports", &list.ports, port_mapping)
                    .map_err(|e| e.within(format_args!("services[{key:?}]")))?;
                Ok((key.clone(), ports))
            })
            .collect::<Result<BTreeMap<_, _>, ConversionError>>()?;

        let workload = Workload {
            uid: WorkloadUid::new(w.uid.clone()),
            name: w.name.clone(),
            namespace: w.namespace.clone(),
            addresses: each("addresses", &w.addresses, |a| ip(a))?,
            network: Network::new(w.network.clone()),
            tunnel_protocol,
            trust_domain,
            service_account,
            node: w.node.clone(),
            authorization_policies: w.authorization_policies.clone(),
            services,
            waypoint: w
                .waypoint
                .as_ref()
                .map(gateway_address)
                .transpose()
                .map_err(|e| e.within("waypoint"))?,
            telemetry: WorkloadTelemetry {
                workload_name: w.workload_name.clone(),
                canonical_name: w.canonical_name.clone(),
                canonical_revision: w.canonical_revision.clone(),
                cluster_id: w.cluster_id.clone(),
            },
        };
        // An HBONE workload is reached by its certificate identity, so it
        // must have a valid one; for plain TCP it is never consulted.
        if tunnel_protocol == TunnelProtocol::Hbone {
            workload
                .identity()
                .map_err(|e| ConversionError::new("identity", e.to_string()))?;
        }
        Ok(workload)
    }
}

pub(super) fn port_mapping(p: &xds::Port) -> Result<PortMapping, ConversionError> {
    Ok(PortMapping {
        service_port: port(p.service_port).map_err(|e| e.within("service_port"))?,
        target_port: port(p.target_port).map_err(|e| e.within("target_port"))?,
    })
}

/// `GatewayAddress`: a namespaced hostname or an address, and the HBONE port.
pub(super) fn gateway_address(g: &xds::GatewayAddress) -> Result<GatewayAddress, ConversionError> {
    let destination = match &g.destination {
        Some(xds::gateway_address::Destination::Hostname(h)) => {
            if h.hostname.is_empty() || h.namespace.is_empty() {
                return Err(ConversionError::new(
                    "hostname",
                    "namespace and hostname must both be set",
                ));
            }
            GatewayDestination::Hostname {
                namespace: h.namespace.clone(),
                hostname: h.hostname.clone(),
            }
        }
        Some(xds::gateway_address::Destination::Address(a)) => GatewayDestination::Address {
            network: Network::new(a.network.clone()),
            address: ip(&a.address).map_err(|e| e.within("address"))?,
        },
        None => return Err(ConversionError::new("destination", "must be set")),
    };
    let hbone_port = port(g.hbone_mtls_port).map_err(|e| e.within("hbone_mtls_port"))?;
    if hbone_port == 0 {
        return Err(ConversionError::new("hbone_mtls_port", "must not be 0"));
    }
    Ok(GatewayAddress {
        destination,
        hbone_port,
    })
}
