//! The `/config_dump` sections that describe the mesh as this ztunnel sees
//! it, in the shape Istio's ztunnel uses (camelCase; `protocol` `HBONE` or
//! `TCP`; VIPs as `network/ip`; ports as `{"service": target}`), so tools
//! written for it (`istioctl ztunnel-config`, `ambientctl ztunnel-config`)
//! read ours.
//!
//! Certificates are described by their public parts only: identity, state,
//! and per certificate of the chain its PEM, serial and validity. Private
//! keys never reach this module.

use std::collections::BTreeMap;
use std::time::SystemTime;

use mesh_core::waypoint::{GatewayAddress, GatewayDestination};
use mesh_core::{Authorization, Service, TunnelProtocol, Workload};
use mesh_tls::manager::CertState;
use mesh_xds::ProxyState;
use serde_json::{Map, Value, json};

use crate::proxy::connections::OpenConnection;

pub fn workloads(state: &ProxyState) -> Value {
    let mut list: Vec<_> = state.workloads();
    list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    list.iter().map(|w| workload(w)).collect()
}

fn workload(w: &Workload) -> Value {
    let services: BTreeMap<&str, BTreeMap<String, u16>> = w
        .services
        .iter()
        .map(|(key, ports)| (key.as_str(), port_map(ports)))
        .collect();
    json!({
        "uid": w.uid.to_string(),
        "workloadIps": w.addresses,
        "protocol": match w.tunnel_protocol {
            TunnelProtocol::Hbone => "HBONE",
            TunnelProtocol::None => "TCP",
        },
        "name": w.name,
        "namespace": w.namespace,
        "serviceAccount": w.service_account,
        "trustDomain": w.trust_domain.to_string(),
        "node": w.node,
        "network": w.network.to_string(),
        "services": services,
        "authorizationPolicies": w.authorization_policies,
        "waypoint": w.waypoint.as_ref().map(waypoint),
    })
}

pub fn services(state: &ProxyState) -> Value {
    let mut list = state.services();
    list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let workloads = state.workloads();
    list.iter()
        .map(|s| {
            let key = s.key();
            let endpoints: BTreeMap<String, Value> = workloads
                .iter()
                .filter_map(|w| {
                    let ports = w.services.get(&key)?;
                    Some((
                        w.uid.to_string(),
                        json!({
                            "workloadUid": w.uid.to_string(),
                            "service": key,
                            "port": port_map(ports),
                            "status": "Healthy",
                        }),
                    ))
                })
                .collect();
            service(s, endpoints)
        })
        .collect()
}

fn service(s: &Service, endpoints: BTreeMap<String, Value>) -> Value {
    let vips: Vec<String> = s
        .vips
        .iter()
        .map(|v| format!("{}/{}", v.network, v.address))
        .collect();
    json!({
        "name": s.name,
        "namespace": s.namespace,
        "hostname": s.hostname,
        "vips": vips,
        "ports": port_map(&s.ports),
        "endpoints": endpoints,
        "subjectAltNames": s.subject_alt_names,
        "waypoint": s.waypoint.as_ref().map(waypoint),
    })
}

pub fn policies(state: &ProxyState) -> Value {
    let mut list = state.policies();
    list.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    list.iter().map(|p| policy(p)).collect()
}

fn policy(p: &Authorization) -> Value {
    let mut v = serde_json::to_value(p).unwrap_or(Value::Null);
    // Istio's ztunnel spells these in PascalCase.
    v["scope"] = json!(format!("{:?}", p.scope));
    v["action"] = json!(format!("{:?}", p.action));
    v
}

pub fn certificates(certs: &[(mesh_core::Identity, CertState)]) -> Value {
    certs
        .iter()
        .map(|(id, st)| {
            let (state, chain) = match &st.current {
                Some(c) if !c.validity().is_expired(SystemTime::now()) => {
                    ("Available".to_string(), chain(c))
                }
                Some(c) => ("Unavailable: expired".to_string(), chain(c)),
                None => match &st.last_error {
                    Some(e) => (format!("Unavailable: {e}"), Vec::new()),
                    None => ("Initializing".to_string(), Vec::new()),
                },
            };
            json!({ "identity": id.to_string(), "state": state, "certChain": chain })
        })
        .collect()
}

/// The leaf and intermediates, then the roots: public PEM, serial, window.
fn chain(c: &mesh_tls::WorkloadCertificate) -> Vec<Value> {
    c.chain_pems()
        .iter()
        .chain(c.root_pems())
        .filter_map(|pem| {
            let der = mesh_tls::certificate::parse_certs(pem, "dump")
                .ok()?
                .into_iter()
                .next()?;
            let v = mesh_tls::certificate::validity(&der).ok()?;
            Some(json!({
                "pem": pem,
                "serialNumber": v.serial,
                "validFrom": rfc3339(v.not_before),
                "expirationTime": rfc3339(v.not_after),
            }))
        })
        .collect()
}

fn rfc3339(t: SystemTime) -> String {
    time::OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

fn port_map(ports: &[mesh_core::service::PortMapping]) -> BTreeMap<String, u16> {
    ports
        .iter()
        .map(|p| (p.service_port.to_string(), p.target_port))
        .collect()
}

fn waypoint(g: &GatewayAddress) -> Value {
    let destination = match &g.destination {
        GatewayDestination::Hostname {
            namespace,
            hostname,
        } => format!("{namespace}/{hostname}"),
        GatewayDestination::Address { network, address } => format!("{network}/{address}"),
    };
    json!({ "destination": destination, "hboneMtlsPort": g.hbone_port })
}

/// Adds `connections: {inbound: [..], outbound: [..]}` to the
/// `workloadState` entry of each workload with open connections. In-pod
/// entries are keyed by Kubernetes pod uid and found by namespace and name;
/// other workloads get an entry under their workload uid.
pub fn add_connections(
    states: &mut Map<String, Value>,
    state: &ProxyState,
    open: Vec<OpenConnection>,
) {
    let mut by_workload: BTreeMap<String, (Vec<Value>, Vec<Value>)> = BTreeMap::new();
    for c in open {
        let entry = json!({
            "src": c.src.to_string(),
            "originalDst": c.original_dst.to_string(),
            "actualDst": c.actual_dst.to_string(),
            "protocol": c.protocol.as_str(),
        });
        let lists = by_workload.entry(c.workload.to_string()).or_default();
        if c.inbound {
            &mut lists.0
        } else {
            &mut lists.1
        }
        .push(entry);
    }
    for (uid, (mut inbound, mut outbound)) in by_workload {
        let key = |v: &Value| v.to_string();
        inbound.sort_by_key(key);
        outbound.sort_by_key(key);
        let connections = json!({ "inbound": inbound, "outbound": outbound });
        let workload = state.workload_by_uid(&uid);
        let same_pod = |v: &Value| {
            workload.as_ref().is_some_and(|w| {
                v["name"] == w.name.as_str() && v["namespace"] == w.namespace.as_str()
            })
        };
        if let Some(entry) = states.values_mut().find(|v| same_pod(v)) {
            entry["connections"] = connections;
            continue;
        }
        let mut entry = json!({ "connections": connections });
        if let Some(w) = &workload {
            entry["name"] = w.name.as_str().into();
            entry["namespace"] = w.namespace.as_str().into();
            entry["serviceAccount"] = w.service_account.as_str().into();
        }
        states.insert(uid, entry);
    }
}
