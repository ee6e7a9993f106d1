//! L4 authorization of one inbound connection, [`ProxyState::authorize`], as
//! ztunnel runs it before accepting every connection (and again for every
//! open connection when policies change): look up the destination workload,
//! gather the policies that apply to it, and evaluate them.
//!
//! Each policy is a namespace-wide ALLOW of one client's principal on the
//! target port; the connection comes from the last client, so every policy
//! is looked at. `elsewhere/100` adds 100 policies of other namespaces that
//! do not apply, to show what holding them costs each decision.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use mesh_core::{
    Action, Authorization, Clause, ConnectionInfo, Decision, DenyReason, Match, Rule, Scope,
    StringMatch, Workload, WorkloadUid,
};
use mesh_xds::ProxyState;
use mesh_xds::state::LocalConfig;

/// A namespace-wide ALLOW for `client`'s principal on port 8080.
fn allow(namespace: &str, client: usize) -> Authorization {
    let principal = Match {
        principals: vec![StringMatch::Exact(format!(
            "cluster.local/ns/{namespace}/sa/client-{client}"
        ))],
        ..Match::default()
    };
    let port = Match {
        destination_ports: vec![8080],
        ..Match::default()
    };
    Authorization {
        name: format!("allow-client-{client}"),
        namespace: namespace.into(),
        scope: Scope::Namespace,
        action: Action::Allow,
        rules: vec![Rule {
            clauses: vec![
                Clause {
                    matches: vec![principal],
                },
                Clause {
                    matches: vec![port],
                },
            ],
        }],
        dry_run: false,
    }
}

/// The state of a node with the destination `echo` and `applicable`
/// policies for it, plus `elsewhere` policies of other namespaces.
fn state(applicable: usize, elsewhere: usize) -> ProxyState {
    let echo: Workload = serde_yaml::from_str(
        "{uid: echo, name: echo, namespace: apps, addresses: [10.0.0.2], \
         tunnelProtocol: HBONE, serviceAccount: echo, node: node-a}",
    )
    .expect("workload");
    let mut policies: Vec<_> = (0..applicable).map(|i| allow("apps", i)).collect();
    policies.extend((0..elsewhere).map(|i| allow(&format!("other-{i}"), i)));
    let state = ProxyState::new();
    state.apply_local(LocalConfig {
        workloads: vec![echo],
        policies,
    });
    state
}

/// A connection from `client-<n>` in `apps` to echo's port 8080.
fn from_client(n: usize) -> ConnectionInfo {
    ConnectionInfo {
        src: "10.0.0.1:40000".parse().unwrap(),
        dst: "10.0.0.2:8080".parse().unwrap(),
        src_identity: Some(
            format!("spiffe://cluster.local/ns/apps/sa/client-{n}")
                .parse()
                .unwrap(),
        ),
    }
}

fn authorize(c: &mut Criterion) {
    let echo = WorkloadUid::new("echo");
    let mut group = c.benchmark_group("authorize");
    for (label, applicable, elsewhere) in [
        ("applicable/1", 1, 0),
        ("applicable/10", 10, 0),
        ("applicable/100", 100, 0),
        ("elsewhere/100", 1, 100),
    ] {
        let state = state(applicable, elsewhere);
        let conn = from_client(applicable - 1);
        assert_eq!(state.authorize(&echo, &conn), Some(Decision::Allow));
        assert_eq!(
            state.authorize(&echo, &from_client(applicable)),
            Some(Decision::Deny(DenyReason::NotAllowed)),
            "a client no policy names is refused"
        );
        group.bench_function(BenchmarkId::from_parameter(label), |b| {
            b.iter(|| state.authorize(&echo, &conn));
        });
    }
    group.finish();
}

criterion_group!(benches, authorize);
criterion_main!(benches);
