//! Applying one delta-xDS response of 1,000 `istio.workload.Address`
//! resources through ztunnel's handler, [`StateHandler::apply`]: decode each
//! protobuf, convert it to a domain [`Workload`](mesh_core::Workload), and
//! index it in the [`ProxyState`] every connection reads.
//!
//! This is the work a proxy does on start-up and on every reconnect or
//! scale-up of a large namespace; while it runs, the state's write lock is
//! taken once per resource. `new` fills an empty state; `replace` sends the
//! same workloads to a state that already holds them (a rollout).

use std::collections::HashMap;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mesh_proto::istio::workload as wpb;
use mesh_xds::{ADDRESS_TYPE, Handler, ProxyState, StateHandler};
use prost::Message;

const WORKLOADS: usize = 1000;

/// `(name, encoded Address)` of pod `i`: one IP, HBONE, one service port.
fn resource(i: usize) -> (String, Vec<u8>) {
    let uid = format!("Kubernetes//Pod/apps/pod-{i}");
    let workload = wpb::Workload {
        uid: uid.clone(),
        name: format!("pod-{i}"),
        namespace: "apps".into(),
        addresses: vec![vec![10, 1, (i >> 8) as u8, i as u8]],
        tunnel_protocol: wpb::TunnelProtocol::Hbone.into(),
        service_account: format!("sa-{}", i % 10),
        node: format!("node-{}", i % 5),
        services: HashMap::from([(
            format!("apps/svc-{}.apps.svc.cluster.local", i % 50),
            wpb::PortList {
                ports: vec![wpb::Port {
                    service_port: 80,
                    target_port: 8080,
                    app_protocol: wpb::AppProtocol::Http11.into(),
                }],
            },
        )]),
        canonical_name: format!("app-{}", i % 10),
        ..Default::default()
    };
    let address = wpb::Address {
        r#type: Some(wpb::address::Type::Workload(workload)),
    };
    (uid, address.encode_to_vec())
}

/// A fresh state and its handler, as ztunnel builds them (with policies).
fn handler() -> (Arc<ProxyState>, StateHandler) {
    let state = Arc::new(ProxyState::new());
    (state.clone(), StateHandler::new(state, true))
}

fn apply_all(handler: &mut StateHandler, resources: &[(String, Vec<u8>)]) {
    for (name, body) in resources {
        handler
            .apply(ADDRESS_TYPE, name, body)
            .expect("workload applies");
    }
}

fn apply(c: &mut Criterion) {
    let resources: Vec<_> = (0..WORKLOADS).map(resource).collect();

    let (state, mut full) = handler();
    apply_all(&mut full, &resources);
    assert_eq!(state.workloads().len(), WORKLOADS);
    let pod = state
        .workload_by_addr(&Default::default(), "10.1.3.231".parse().unwrap())
        .expect("pod-999 is indexed by address");
    assert_eq!(pod.name, "pod-999");

    let mut group = c.benchmark_group("xds_apply_workloads");
    group.throughput(Throughput::Elements(WORKLOADS as u64));
    // Filled states are dropped outside the measurement; `LargeInput`
    // keeps few of them alive at once.
    group.bench_function("new/1000", |b| {
        b.iter_batched(
            handler,
            |(state, mut h)| {
                apply_all(&mut h, &resources);
                state
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("replace/1000", |b| {
        b.iter(|| apply_all(&mut full, &resources))
    });
    group.finish();
    assert_eq!(state.workloads().len(), WORKLOADS, "replaced, not added");
}

criterion_group!(benches, apply);
criterion_main!(benches);
