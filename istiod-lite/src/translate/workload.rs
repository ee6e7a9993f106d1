//! Pods and Services → `istio.workload.Address` (Workload and Service), with
//! the names and fields of `dataplane.md` §3.5–3.6.

use std::collections::HashMap;
use std::net::IpAddr;

use mesh_proto::istio::workload as pb;

use super::TranslateConfig;
use crate::model::enrollment::enrollment;
use crate::model::{IntOrString, Pod, Service};

/// `<name>.<namespace>.svc.<domain>`.
pub fn service_hostname(name: &str, ns: &str, domain: &str) -> String {
    format!("{name}.{ns}.svc.{domain}")
}

/// The 4 or 16 raw bytes the protos carry for an IP.
pub fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(a) => a.octets().to_vec(),
        IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The pod's IPs, or the text that did not parse.
pub fn pod_ips(pod: &Pod) -> Result<Vec<IpAddr>, String> {
    let mut texts: Vec<&str> = pod.status.pod_ips.iter().map(|p| p.ip.as_str()).collect();
    if texts.is_empty() {
        texts.extend(pod.status.pod_ip.as_deref());
    }
    texts
        .into_iter()
        .map(|t| t.parse().map_err(|_| t.to_string()))
        .collect()
}

/// The Service's VIPs (none for headless Services).
pub fn service_ips(svc: &Service) -> Result<Vec<IpAddr>, String> {
    let mut texts: Vec<&str> = svc.spec.cluster_ips.iter().map(String::as_str).collect();
    if texts.is_empty() {
        texts.extend(svc.spec.cluster_ip.as_deref());
    }
    texts
        .into_iter()
        .filter(|t| !t.is_empty() && *t != "None")
        .map(|t| t.parse().map_err(|_| t.to_string()))
        .collect()
}

/// The Workload for a pod. `policies` are the selector-based policy keys.
pub fn pod_workload(
    pod: &Pod,
    ns: &str,
    ips: &[IpAddr],
    services: &HashMap<String, pb::PortList>,
    policies: Vec<String>,
    ns_labels: Option<&crate::model::Labels>,
    cfg: &TranslateConfig,
) -> pb::Workload {
    let labels = &pod.metadata.labels;
    let name = &pod.metadata.name;
    let ambient = enrollment(pod, ns_labels, &cfg.excluded_namespaces).is_ambient();
    let (workload_type, workload_name) = workload_owner(pod);
    let ready = !pod
        .status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "False");
    pb::Workload {
        uid: mesh_core::WorkloadUid::for_pod(&cfg.cluster_id, ns, name).to_string(),
        name: name.clone(),
        namespace: ns.to_string(),
        addresses: ips.iter().copied().map(ip_bytes).collect(),
        network: cfg.network.clone(),
        tunnel_protocol: if ambient {
            pb::TunnelProtocol::Hbone
        } else {
            pb::TunnelProtocol::None
        } as i32,
        trust_domain: cfg.trust_domain.to_string(),
        service_account: pod.service_account().to_string(),
        node: pod.spec.node_name.clone().unwrap_or_default(),
        canonical_name: first_label(
            labels,
            &[
                "service.istio.io/canonical-name",
                "app.kubernetes.io/name",
                "app",
            ],
        )
        .unwrap_or_else(|| workload_name.clone()),
        canonical_revision: first_label(
            labels,
            &[
                "service.istio.io/canonical-revision",
                "app.kubernetes.io/version",
                "version",
            ],
        )
        .unwrap_or_else(|| "latest".into()),
        workload_type: workload_type as i32,
        workload_name,
        services: services.clone(),
        authorization_policies: policies,
        status: if ready {
            pb::WorkloadStatus::Healthy
        } else {
            pb::WorkloadStatus::Unhealthy
        } as i32,
        cluster_id: cfg.cluster_id.clone(),
        network_mode: if pod.spec.host_network {
            pb::NetworkMode::HostNetwork
        } else {
            pb::NetworkMode::Standard
        } as i32,
        ..Default::default()
    }
}

fn first_label(labels: &crate::model::Labels, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| labels.get(*k).cloned())
}

/// The owning controller, as istiod names it: a ReplicaSet `web-5d4f8`
/// belongs to Deployment `web`; a bare pod is its own workload.
fn workload_owner(pod: &Pod) -> (pb::WorkloadType, String) {
    match pod.metadata.owner_references.first() {
        Some(o) if o.kind == "ReplicaSet" => {
            let deployment = o.name.rsplit_once('-').map_or(o.name.as_str(), |(d, _)| d);
            (pb::WorkloadType::Deployment, deployment.to_string())
        }
        Some(o) if o.kind == "Job" => (pb::WorkloadType::Job, o.name.clone()),
        Some(o) if o.kind == "CronJob" => (pb::WorkloadType::Cronjob, o.name.clone()),
        Some(o) if !o.name.is_empty() => (pb::WorkloadType::Deployment, o.name.clone()),
        _ => (pb::WorkloadType::Pod, pod.metadata.name.clone()),
    }
}

/// Service port → target port for one endpoint pod; a named target port is
/// looked up in the pod's containers (and dropped when the pod lacks it).
pub fn endpoint_ports(svc: &Service, pod: &Pod) -> pb::PortList {
    let ports = svc
        .spec
        .ports
        .iter()
        .filter_map(|p| {
            let target = match &p.target_port {
                None => p.port,
                Some(IntOrString::Int(n)) => *n,
                Some(IntOrString::String(name)) => pod
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| &c.ports)
                    .find(|cp| cp.name.as_deref() == Some(name))
                    .map(|cp| cp.container_port)?,
            };
            Some(pb::Port {
                service_port: u32::from(p.port),
                target_port: u32::from(target),
                app_protocol: 0,
            })
        })
        .collect();
    pb::PortList { ports }
}

/// The Service resource. A named target port is 0 here and resolved per
/// endpoint through `Workload.services`.
pub fn service(svc: &Service, ns: &str, ips: &[IpAddr], cfg: &TranslateConfig) -> pb::Service {
    let name = &svc.metadata.name;
    pb::Service {
        name: name.clone(),
        namespace: ns.to_string(),
        hostname: service_hostname(name, ns, &cfg.domain_suffix),
        addresses: ips
            .iter()
            .map(|ip| pb::NetworkAddress {
                network: cfg.network.clone(),
                address: ip_bytes(*ip),
                length: None,
            })
            .collect(),
        ports: svc
            .spec
            .ports
            .iter()
            .map(|p| pb::Port {
                service_port: u32::from(p.port),
                target_port: match &p.target_port {
                    None => u32::from(p.port),
                    Some(IntOrString::Int(n)) => u32::from(*n),
                    Some(IntOrString::String(_)) => 0,
                },
                app_protocol: 0,
            })
            .collect(),
        ..Default::default()
    }
}
