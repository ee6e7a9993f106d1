//! The endpoints of Services without a selector: Kubernetes leaves them to
//! whoever writes the Service's EndpointSlices (an operator pointing a
//! Service at a database outside the cluster, another controller). An
//! endpoint that is one of our pods adds the Service to that pod's
//! workload; any other address becomes a workload of its own, without a
//! tunnel (nothing of ours runs there to terminate HBONE).

use std::net::IpAddr;

use mesh_proto::istio::workload as pb;

use super::TranslateConfig;
use super::workload::ip_bytes;
use crate::model::{Endpoint, EndpointSlice, Service};

/// Whether the slice holds addresses (and not host names).
pub fn has_addresses(slice: &EndpointSlice) -> bool {
    matches!(slice.address_type.as_str(), "IPv4" | "IPv6")
}

/// Service port → the slice's port of the same name. A Service port the
/// slice does not list has no endpoint here, as in Kubernetes.
pub fn ports(svc: &Service, slice: &EndpointSlice) -> pb::PortList {
    let ports = svc
        .spec
        .ports
        .iter()
        .filter_map(|p| {
            let name = p.name.as_deref().unwrap_or_default();
            let target = slice
                .ports
                .iter()
                .find(|sp| sp.name.as_deref().unwrap_or_default() == name)?
                .port?;
            Some(pb::Port {
                service_port: u32::from(p.port),
                target_port: u32::from(target),
                app_protocol: 0,
            })
        })
        .collect();
    pb::PortList { ports }
}

/// The pod an endpoint names, if it names one.
pub fn target_pod(endpoint: &Endpoint) -> Option<&str> {
    endpoint
        .target_ref
        .as_ref()
        .filter(|r| r.kind == "Pod" && !r.name.is_empty())
        .map(|r| r.name.as_str())
}

/// A workload for one address of a slice that is not a pod of ours.
pub struct SliceEndpoint<'a> {
    pub namespace: &'a str,
    pub slice: &'a str,
    pub service: &'a str,
    /// `<namespace>/<hostname>`, the key of `Workload.services`.
    pub service_key: &'a str,
    pub ports: &'a pb::PortList,
}

impl SliceEndpoint<'_> {
    pub fn workload(&self, endpoint: &Endpoint, ip: IpAddr, cfg: &TranslateConfig) -> pb::Workload {
        let ns = self.namespace;
        pb::Workload {
            uid: format!(
                "{}/discovery.k8s.io/EndpointSlice/{ns}/{}/{ip}",
                cfg.cluster_id, self.slice
            ),
            name: self.slice.to_string(),
            namespace: ns.to_string(),
            addresses: vec![ip_bytes(ip)],
            network: cfg.network.clone(),
            tunnel_protocol: pb::TunnelProtocol::None as i32,
            trust_domain: cfg.trust_domain.to_string(),
            node: endpoint.node_name.clone().unwrap_or_default(),
            canonical_name: self.service.to_string(),
            canonical_revision: "latest".into(),
            workload_type: pb::WorkloadType::Pod as i32,
            workload_name: self.service.to_string(),
            services: [(self.service_key.to_string(), self.ports.clone())].into(),
            status: if endpoint.conditions.ready == Some(false) {
                pb::WorkloadStatus::Unhealthy
            } else {
                pb::WorkloadStatus::Healthy
            } as i32,
            cluster_id: cfg.cluster_id.clone(),
            ..Default::default()
        }
    }
}
