//! xDS resources as ztunnel receives them from the control plane.
//!
//! The same bytes are decoded three ways:
//! - as an `istio.workload.Address` and converted by
//!   `TryFrom<&Address> for mesh_core::Address`;
//! - as an `istio.security.Authorization` and converted by
//!   `TryFrom<&Authorization> for mesh_core::Authorization`;
//! - as a whole `DeltaDiscoveryResponse`, whose resources go through
//!   `mesh_xds::StateHandler` (`Handler::apply` / `remove`, the code the
//!   xDS client runs per resource) into a fresh `ProxyState`, as
//!   `XdsClient::handle` does: bodies of another type are refused, then
//!   removals, then `answered`.
//!
//! Properties: a resource that applied is found by its key (uid, service
//! key, policy key) and by each of its addresses right away; a removed
//! workload or policy is gone; every address index entry points to a
//! workload that is in the state and has that address. Then each workload
//! is authorized against a connection from another, which must not panic.
#![no_main]

use std::net::SocketAddr;
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use mesh_core::{Address, Authorization, ConnectionInfo, NetworkAddress};
use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryResponse;
use mesh_proto::istio::security as spb;
use mesh_proto::istio::workload as wpb;
use mesh_xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE, Handler, ProxyState, StateHandler};
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(proto) = wpb::Address::decode(data) {
        let _ = Address::try_from(&proto);
    }
    if let Ok(proto) = spb::Authorization::decode(data) {
        let _ = Authorization::try_from(&proto);
    }
    if let Ok(response) = DeltaDiscoveryResponse::decode(data) {
        apply(&response);
    }
});

fn apply(response: &DeltaDiscoveryResponse) {
    let kind = match response.type_url.as_str() {
        ADDRESS_TYPE => ADDRESS_TYPE,
        AUTHORIZATION_TYPE => AUTHORIZATION_TYPE,
        // The client NACKs a type it did not ask for without reading it.
        _ => return,
    };
    let state = Arc::new(ProxyState::new());
    let mut handler = StateHandler::new(state.clone(), true);
    for resource in &response.resources {
        let Some(any) = &resource.resource else {
            continue;
        };
        if any.type_url != kind {
            continue;
        }
        if handler.apply(kind, &resource.name, &any.value).is_ok() {
            applied(&state, kind, &any.value);
        }
    }
    for name in &response.removed_resources {
        let had_workload = state.workload_by_uid(name).is_some();
        handler.remove(kind, name);
        if kind == ADDRESS_TYPE {
            assert!(
                state.workload_by_uid(name).is_none(),
                "{name:?} still there"
            );
            if !had_workload {
                assert!(state.service(name).is_none(), "{name:?} still there");
            }
        } else {
            assert!(state.policy_by_key(name).is_none(), "{name:?} still there");
        }
    }
    handler.answered(kind);
    indexes_are_consistent(&state);
    authorize_everything(&state);
}

/// A resource that `apply` accepted is visible under its keys at once.
fn applied(state: &ProxyState, kind: &str, body: &[u8]) {
    if kind == AUTHORIZATION_TYPE {
        let proto = spb::Authorization::decode(body).expect("it applied");
        let policy = Authorization::try_from(&proto).expect("it applied");
        let held = state.policy_by_key(&policy.key()).expect("policy applied");
        assert_eq!(*held, policy);
        return;
    }
    let proto = wpb::Address::decode(body).expect("it applied");
    match Address::try_from(&proto).expect("it applied") {
        Address::Workload(w) => {
            let held = state.workload_by_uid(w.uid.as_str()).expect("workload");
            assert_eq!(*held, w);
            for ip in &w.addresses {
                let by_addr = state.workload_by_addr(&w.network, *ip).expect("indexed");
                assert!(Arc::ptr_eq(&by_addr, &held), "{ip} points elsewhere");
            }
        }
        Address::Service(s) => {
            let held = state.service(&s.key()).expect("service applied");
            assert_eq!(*held, s);
            for NetworkAddress { network, address } in &s.vips {
                let by_vip = state.service_by_vip(network, *address).expect("indexed");
                assert!(Arc::ptr_eq(&by_vip, &held), "{address} points elsewhere");
            }
        }
    }
}

fn indexes_are_consistent(state: &ProxyState) {
    for w in state.workloads() {
        for ip in &w.addresses {
            if let Some(found) = state.workload_by_addr(&w.network, *ip) {
                assert!(
                    found.addresses.contains(ip),
                    "{ip} indexes a workload without it"
                );
                assert_eq!(found.network, w.network);
                let live = state.workload_by_uid(found.uid.as_str());
                assert!(
                    live.is_some_and(|l| Arc::ptr_eq(&l, &found)),
                    "{ip} indexes a workload that is gone"
                );
            }
        }
    }
    for s in state.services() {
        for vip in &s.vips {
            if let Some(found) = state.service_by_vip(&vip.network, vip.address) {
                assert!(
                    found.vips.contains(vip),
                    "{vip:?} indexes a service without it"
                );
                let live = state.service(&found.key());
                assert!(
                    live.is_some_and(|l| Arc::ptr_eq(&l, &found)),
                    "{vip:?} indexes a service that is gone"
                );
            }
        }
        for port in &s.ports {
            let _ = state.endpoints(&s, port.service_port);
        }
    }
}

/// At most this many workloads on each side, so that a large input stays
/// a fast one.
const AUTHORIZED: usize = 16;

fn authorize_everything(state: &ProxyState) {
    let mut workloads = state.workloads();
    // Sorted, so that the same input authorizes the same pairs each run.
    workloads.sort_by(|a, b| a.uid.as_str().cmp(b.uid.as_str()));
    workloads.truncate(AUTHORIZED);
    for dst in &workloads {
        let Some(dst_ip) = dst.addresses.first() else {
            continue;
        };
        for src in &workloads {
            let src_ip = src.addresses.first().copied().unwrap_or(*dst_ip);
            let conn = ConnectionInfo {
                src: SocketAddr::new(src_ip, 40000),
                dst: SocketAddr::new(*dst_ip, 8080),
                src_identity: src.identity().ok(),
            };
            let _ = state.authorize(&dst.uid, &conn);
        }
    }
}
