//! Choosing the HTTPRoute rule for a request at the waypoint,
//! [`RouteTable::select`], which runs once per HTTP request routed through a
//! Service's waypoint, before any byte goes upstream.
//!
//! A Service has 10 or 100 rules (HTTPRoutes of 10 rules each, as the
//! Gateway API caps rules per route). Rule `i` matches the path prefix
//! `/svc-<i / 10>` and the header `x-tenant: t<i>`, so a request's path
//! narrows the search to ten rules and its header picks one. `last` asks for
//! the last rule in precedence order; `miss` matches none (a 404): both scan
//! the whole table.

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method};
use mesh_model::waypoint::BoundService;
use serde_json::json;
use waypoint::route::{RouteRequest, RouteTable};

/// `echo`'s routes: `rules` rules, ten per HTTPRoute, each to its backend.
fn table(rules: usize) -> RouteTable {
    let routes: Vec<_> = (0..rules)
        .collect::<Vec<_>>()
        .chunks(10)
        .enumerate()
        .map(|(r, chunk)| {
            let rules: Vec<_> = chunk
                .iter()
                .map(|i| {
                    json!({
                        "matches": [{
                            "path": {"type": "PathPrefix", "value": format!("/svc-{}", i / 10)},
                            "headers": [{"name": "x-tenant", "value": format!("t{i}")}],
                        }],
                        "backendRefs": [{"name": format!("backend-{i}"), "port": 80}],
                    })
                })
                .collect();
            json!({"namespace": "default", "name": format!("route-{r}"), "spec": {"rules": rules}})
        })
        .collect();
    let service: BoundService = serde_json::from_value(json!({
        "namespace": "default",
        "name": "echo",
        "hostname": "echo.default.svc.cluster.local",
        "httpRoutes": routes,
    }))
    .expect("service JSON");
    RouteTable::compile(&service, "cluster.local").expect("routes compile")
}

/// The headers of a typical request, with `x-tenant: <tenant>`.
fn headers(tenant: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("user-agent", HeaderValue::from_static("curl/8.5.0"));
    h.insert("accept", HeaderValue::from_static("*/*"));
    h.insert(
        "x-request-id",
        HeaderValue::from_static("5f2a0c1e-7d1b-4c57"),
    );
    h.insert("x-tenant", HeaderValue::from_str(tenant).unwrap());
    h
}

fn select(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_select");
    for rules in [10, 100] {
        let table = table(rules);
        let last = rules - 1;
        let hit = (
            format!("/svc-{}/items/42", last / 10),
            headers(&format!("t{last}")),
        );
        let miss = ("/other/items/42".to_string(), headers("t0"));
        for (case, (path, headers), want) in [
            ("last", &hit, Some(format!("backend-{last}"))),
            ("miss", &miss, None),
        ] {
            let req = RouteRequest {
                method: &Method::GET,
                host: "echo.default.svc.cluster.local:80",
                path,
                query: Some("page=2&sort=asc"),
                headers,
                grpc: false,
                port: 80,
            };
            let chosen = table.select(&req).map(|s| s.rule.backends[0].name.clone());
            assert_eq!(chosen, want, "{case} with {rules} rules");
            group.bench_function(BenchmarkId::new(case, rules), |b| {
                b.iter(|| table.select(&req));
            });
        }
    }
    group.finish();
}

criterion_group!(benches, select);
criterion_main!(benches);
