//! Table tests for waypoint binding (`user-surface.md` §1.3, §2): YAML as
//! users write it, through `translate`, to each Service's and pod's
//! `waypoint` and each waypoint's configuration.

use mesh_proto::istio::workload::address::Type;
use mesh_proto::istio::workload::{self as wpb, gateway_address::Destination};

use super::super::tests::model_of;
use super::super::{TranslateConfig, Translation, translate};
use crate::model::waypoint::{AppProtocol, PortProtocol, WaypointConfig};

// ------------------------------------------------------------ YAML makers

/// `{k: v, ...}` from pairs.
fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

fn namespace(name: &str, extra: &[(&str, &str)]) -> String {
    let mut l = vec![("istio.io/dataplane-mode", "ambient")];
    l.extend_from_slice(extra);
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {}}}\n---\n",
        labels(&l)
    )
}

/// A waypoint Gateway; `allowed_from` sets `allowedRoutes.namespaces.from`.
fn gateway(ns: &str, name: &str, l: &[(&str, &str)], allowed_from: Option<&str>) -> String {
    let allowed = allowed_from
        .map(|f| format!(", allowedRoutes: {{namespaces: {{from: {f}}}}}"))
        .unwrap_or_default();
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\n\
         metadata: {{name: {name}, namespace: {ns}, labels: {}}}\n\
         spec:\n  gatewayClassName: istio-waypoint\n  \
         listeners: [{{name: mesh, port: 15008, protocol: HBONE{allowed}}}]\n---\n",
        labels(l)
    )
}

/// The Service the waypoint controller creates for a waypoint (what makes
/// it ready), and the waypoint's pod.
fn waypoint_deployment(ns: &str, name: &str, ip_suffix: u8) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, labels: {{gateway.networking.k8s.io/gateway-name: {name}}}}}\n\
         spec: {{clusterIP: 10.96.9.{ip_suffix}, selector: {{gateway.networking.k8s.io/gateway-name: {name}}}, \
         ports: [{{name: status-port, port: 15021}}, {{name: mesh, port: 15008, appProtocol: all}}]}}\n---\n{}",
        pod(
            ns,
            &format!("{name}-pod"),
            &[("gateway.networking.k8s.io/gateway-name", name)],
            &format!("10.0.9.{ip_suffix}"),
        )
    )
}

/// A Service selecting `app: <name>` with an `http` and a `tcp-db` port.
fn service(ns: &str, name: &str, l: &[(&str, &str)], ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}, labels: {}}}\n\
         spec: {{clusterIP: {ip}, selector: {{app: {name}}}, \
         ports: [{{name: http, port: 80, targetPort: 8080}}, {{name: tcp-db, port: 5432}}]}}\n---\n",
        labels(l)
    )
}

fn pod(ns: &str, name: &str, l: &[(&str, &str)], ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {}}}\n\
         spec: {{nodeName: node-a}}\nstatus: {{podIP: {ip}}}\n---\n",
        labels(l)
    )
}

const USE: &str = "istio.io/use-waypoint";
const USE_NS: &str = "istio.io/use-waypoint-namespace";
const FOR: &str = "istio.io/waypoint-for";

/// Namespace `apps` using `waypoint`; the waypoint (of traffic type
/// `waypoint_for`, default when `None`) with its Service; `echo` with its
/// pod and `other` with its pod, unlabelled.
pub(crate) fn apps(waypoint_for: Option<&str>) -> String {
    let gw_labels: Vec<(&str, &str)> = waypoint_for.map(|f| (FOR, f)).into_iter().collect();
    [
        namespace("apps", &[(USE, "waypoint")]),
        gateway("apps", "waypoint", &gw_labels, None),
        waypoint_deployment("apps", "waypoint", 1),
        service("apps", "echo", &[], "10.96.0.10"),
        pod("apps", "echo-1", &[("app", "echo")], "10.0.0.10"),
        service("apps", "other", &[], "10.96.0.11"),
        pod("apps", "other-1", &[("app", "other")], "10.0.0.11"),
    ]
    .concat()
}

// ------------------------------------------------------------- reading out

fn expected_address(waypoint: &str) -> wpb::GatewayAddress {
    let (ns, name) = waypoint.split_once('/').unwrap();
    wpb::GatewayAddress {
        destination: Some(Destination::Hostname(wpb::NamespacedHostname {
            namespace: ns.to_string(),
            hostname: format!("{name}.{ns}.svc.cluster.local"),
        })),
        hbone_mtls_port: 15008,
    }
}

/// The Service `ns/name`'s xDS resource.
fn service_of<'t>(t: &'t Translation, key: &str) -> &'t wpb::Service {
    let (ns, name) = key.split_once('/').unwrap();
    let k = format!("{ns}/{name}.{ns}.svc.cluster.local");
    match t.addresses.get(&k).and_then(|a| a.r#type.as_ref()) {
        Some(Type::Service(s)) => s,
        other => panic!("{k}: not a service: {other:?}"),
    }
}

fn workload_of<'t>(t: &'t Translation, key: &str) -> &'t wpb::Workload {
    let k = format!("Kubernetes//Pod/{key}");
    match t.addresses.get(&k).and_then(|a| a.r#type.as_ref()) {
        Some(Type::Workload(w)) => w,
        other => panic!("{k}: not a workload: {other:?}"),
    }
}

fn uid(key: &str) -> String {
    format!("Kubernetes//Pod/{key}")
}

/// The waypoint (`ns/name`) whose configuration lists the Service `key`.
fn configs_listing_service(t: &Translation, key: &str) -> Vec<String> {
    let (ns, name) = key.split_once('/').unwrap();
    t.waypoints
        .iter()
        .filter(|(_, c)| {
            c.services
                .iter()
                .any(|s| s.namespace == ns && s.name == name)
        })
        .map(|(k, _)| k.clone())
        .collect()
}

fn configs_listing_workload(t: &Translation, key: &str) -> Vec<String> {
    let uid = uid(key);
    t.waypoints
        .iter()
        .filter(|(_, c)| c.workloads.contains(&uid))
        .map(|(k, _)| k.clone())
        .collect()
}

// ------------------------------------------------------------------ tables

/// One scenario: the model, and which waypoint (`ns/name`, or none) each
/// listed Service and pod ends up with.
struct Case {
    what: &'static str,
    yaml: String,
    services: Vec<(&'static str, Option<&'static str>)>,
    pods: Vec<(&'static str, Option<&'static str>)>,
    /// Fragments the warnings must contain; with none, no warning at all.
    warnings: Vec<&'static str>,
}

fn check(cases: Vec<Case>) {
    let mut failures = Vec::new();
    for c in cases {
        let t = translate(&model_of(&c.yaml), &TranslateConfig::default());
        let what = c.what;
        for (svc, want) in &c.services {
            let got = service_of(&t, svc).waypoint.clone();
            let want_addr = want.map(expected_address);
            if got != want_addr {
                failures.push(format!(
                    "{what}: service {svc}: waypoint {got:?}, want {want_addr:?}"
                ));
            }
            let listed = configs_listing_service(&t, svc);
            let want_listed: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            if listed != want_listed {
                failures.push(format!(
                    "{what}: service {svc} is listed by waypoints {listed:?}, want {want_listed:?}"
                ));
            }
        }
        for (p, want) in &c.pods {
            let got = workload_of(&t, p).waypoint.clone();
            let want_addr = want.map(expected_address);
            if got != want_addr {
                failures.push(format!(
                    "{what}: pod {p}: waypoint {got:?}, want {want_addr:?}"
                ));
            }
            let listed = configs_listing_workload(&t, p);
            let want_listed: Vec<String> = want.iter().map(|w| w.to_string()).collect();
            if listed != want_listed {
                failures.push(format!(
                    "{what}: pod {p} is listed by waypoints {listed:?}, want {want_listed:?}"
                ));
            }
        }
        let warnings: Vec<&str> = t.warnings.iter().map(|w| w.message.as_str()).collect();
        if c.warnings.is_empty() && !warnings.is_empty() {
            failures.push(format!("{what}: unexpected warnings {warnings:?}"));
        }
        for w in &c.warnings {
            if !warnings.iter().any(|m| m.contains(w)) {
                failures.push(format!(
                    "{what}: no warning containing {w:?} in {warnings:?}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn case(what: &'static str, yaml: String) -> Case {
    Case {
        what,
        yaml,
        services: Vec::new(),
        pods: Vec::new(),
        warnings: Vec::new(),
    }
}

// ------------------------------------------------------------------- tests

#[test]
fn namespace_label_binds_services_to_a_ready_waypoint() {
    let t = translate(&model_of(&apps(None)), &TranslateConfig::default());
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);

    let echo = service_of(&t, "apps/echo");
    assert_eq!(
        echo.waypoint,
        Some(wpb::GatewayAddress {
            destination: Some(Destination::Hostname(wpb::NamespacedHostname {
                namespace: "apps".into(),
                hostname: "waypoint.apps.svc.cluster.local".into(),
            })),
            hbone_mtls_port: 15008,
        })
    );
    assert!(service_of(&t, "apps/other").waypoint.is_some());
    assert_eq!(
        service_of(&t, "apps/waypoint").waypoint,
        None,
        "a waypoint's own Service never uses a waypoint"
    );
    // Default traffic type `service`: pods inherit nothing, silently.
    for p in ["apps/echo-1", "apps/other-1", "apps/waypoint-pod"] {
        assert_eq!(workload_of(&t, p).waypoint, None, "{p}");
    }

    assert_eq!(t.waypoints.keys().collect::<Vec<_>>(), ["apps/waypoint"]);
    let cfg = &t.waypoints["apps/waypoint"];
    assert_eq!(
        (
            cfg.namespace.as_str(),
            cfg.name.as_str(),
            cfg.domain_suffix.as_str()
        ),
        ("apps", "waypoint", "cluster.local")
    );
    assert!(cfg.workloads.is_empty(), "{:?}", cfg.workloads);
    assert!(cfg.policies.is_empty() && cfg.request_authentications.is_empty());
    let names: Vec<&str> = cfg.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["echo", "other"]);
    let bound = &cfg.services[0];
    assert_eq!(bound.namespace, "apps");
    assert_eq!(bound.hostname, "echo.apps.svc.cluster.local");
    assert_eq!(
        bound.ports,
        [
            PortProtocol {
                port: 80,
                protocol: AppProtocol::Http
            },
            PortProtocol {
                port: 5432,
                protocol: AppProtocol::Tcp
            },
        ]
    );
    assert!(bound.http_routes.is_empty() && bound.grpc_routes.is_empty());
    assert!(bound.policies.is_empty() && bound.request_authentications.is_empty());
}

#[test]
fn readiness_and_precedence() {
    let not_ready = [
        namespace("apps", &[(USE, "waypoint")]),
        gateway("apps", "waypoint", &[], None),
        service("apps", "echo", &[], "10.96.0.10"),
        service("apps", "other", &[(USE, "waypoint")], "10.96.0.11"),
    ]
    .concat();
    check(vec![
        Case {
            services: vec![
                ("apps/echo", Some("apps/waypoint")),
                ("apps/other", Some("apps/waypoint")),
                ("apps/waypoint", None),
            ],
            pods: vec![("apps/echo-1", None), ("apps/waypoint-pod", None)],
            ..case("ready waypoint from the namespace label", apps(None))
        },
        Case {
            services: vec![("apps/echo", None), ("apps/other", None)],
            warnings: vec!["WaypointIsNotReady"],
            ..case("no Service for the Gateway: traffic flows directly", not_ready)
        },
        Case {
            services: vec![("apps/echo", None), ("apps/other", Some("apps/waypoint"))],
            ..case(
                "use-waypoint: none on the Service overrides the namespace",
                apps(None).replace(
                    "metadata: {name: echo, namespace: apps, labels: {}}",
                    "metadata: {name: echo, namespace: apps, labels: {istio.io/use-waypoint: none}}",
                ),
            )
        },
        Case {
            services: vec![("apps/echo", Some("apps/second")), ("apps/other", Some("apps/waypoint"))],
            ..case(
                "the Service's own label wins over the namespace's",
                [
                    apps(None).replace(
                        "metadata: {name: echo, namespace: apps, labels: {}}",
                        "metadata: {name: echo, namespace: apps, labels: {istio.io/use-waypoint: second}}",
                    ),
                    gateway("apps", "second", &[], None),
                    waypoint_deployment("apps", "second", 2),
                ]
                .concat(),
            )
        },
        Case {
            services: vec![("apps/echo", Some("apps/waypoint")), ("apps/other", None)],
            ..case(
                "a Service label alone, namespace unlabelled",
                [
                    namespace("apps", &[]),
                    gateway("apps", "waypoint", &[], None),
                    waypoint_deployment("apps", "waypoint", 1),
                    service("apps", "echo", &[(USE, "waypoint")], "10.96.0.10"),
                    service("apps", "other", &[], "10.96.0.11"),
                ]
                .concat(),
            )
        },
        Case {
            services: vec![("apps/echo", None)],
            ..case(
                "no label anywhere: no waypoint",
                [
                    namespace("apps", &[]),
                    gateway("apps", "waypoint", &[], None),
                    waypoint_deployment("apps", "waypoint", 1),
                    service("apps", "echo", &[], "10.96.0.10"),
                ]
                .concat(),
            )
        },
    ]);
}

#[test]
fn traffic_types() {
    let pod_labelled = [
        namespace("apps", &[]),
        gateway("apps", "waypoint", &[], None),
        waypoint_deployment("apps", "waypoint", 1),
        service("apps", "echo", &[], "10.96.0.10"),
        pod(
            "apps",
            "echo-1",
            &[("app", "echo"), (USE, "waypoint")],
            "10.0.0.10",
        ),
        pod("apps", "other-1", &[("app", "other")], "10.0.0.11"),
    ]
    .concat();
    let service_labelled_workload_waypoint = [
        namespace("apps", &[]),
        gateway("apps", "waypoint", &[(FOR, "workload")], None),
        waypoint_deployment("apps", "waypoint", 1),
        service("apps", "echo", &[(USE, "waypoint")], "10.96.0.10"),
    ]
    .concat();
    check(vec![
        Case {
            services: vec![("apps/echo", Some("apps/waypoint"))],
            pods: vec![("apps/echo-1", None), ("apps/other-1", None)],
            ..case("explicit service: services only", apps(Some("service")))
        },
        Case {
            services: vec![
                ("apps/echo", None),
                ("apps/other", None),
                ("apps/waypoint", None),
            ],
            pods: vec![
                ("apps/echo-1", Some("apps/waypoint")),
                ("apps/other-1", Some("apps/waypoint")),
                ("apps/waypoint-pod", None),
            ],
            ..case(
                "workload: pods only, services silently none",
                apps(Some("workload")),
            )
        },
        Case {
            services: vec![
                ("apps/echo", Some("apps/waypoint")),
                ("apps/other", Some("apps/waypoint")),
                ("apps/waypoint", None),
            ],
            pods: vec![
                ("apps/echo-1", Some("apps/waypoint")),
                ("apps/other-1", Some("apps/waypoint")),
                ("apps/waypoint-pod", None),
            ],
            ..case("all: services and pods", apps(Some("all")))
        },
        Case {
            services: vec![("apps/echo", None), ("apps/other", None)],
            pods: vec![("apps/echo-1", None), ("apps/other-1", None)],
            ..case("none: nothing, silently", apps(Some("none")))
        },
        Case {
            services: vec![("apps/echo", None)],
            pods: vec![("apps/echo-1", None), ("apps/other-1", None)],
            warnings: vec!["UnsupportedTrafficType"],
            ..case("a pod labelled with a service-only waypoint", pod_labelled)
        },
        Case {
            services: vec![("apps/echo", None)],
            warnings: vec!["UnsupportedTrafficType"],
            ..case(
                "a Service labelled with a workload-only waypoint",
                service_labelled_workload_waypoint,
            )
        },
    ]);
}

#[test]
fn cross_namespace_waypoints() {
    let infra = |from: Option<&str>| {
        [
            namespace("infra", &[]),
            gateway("infra", "waypoint", &[], from),
            waypoint_deployment("infra", "waypoint", 1),
        ]
        .concat()
    };
    let labelled_service = |from: Option<&str>| {
        [
            infra(from),
            namespace("apps", &[]),
            service(
                "apps",
                "echo",
                &[(USE, "waypoint"), (USE_NS, "infra")],
                "10.96.0.10",
            ),
            service("apps", "other", &[], "10.96.0.11"),
        ]
        .concat()
    };
    let labelled_namespace = |from: Option<&str>| {
        [
            infra(from),
            namespace("apps", &[(USE, "waypoint"), (USE_NS, "infra")]),
            service("apps", "echo", &[], "10.96.0.10"),
        ]
        .concat()
    };
    check(vec![
        Case {
            services: vec![("apps/echo", None), ("apps/other", None)],
            warnings: vec!["AttachmentDenied"],
            ..case("no allowedRoutes: denied", labelled_service(None))
        },
        Case {
            services: vec![("apps/echo", None)],
            warnings: vec!["AttachmentDenied"],
            ..case("from: Same: denied", labelled_service(Some("Same")))
        },
        Case {
            services: vec![("apps/echo", Some("infra/waypoint")), ("apps/other", None)],
            ..case("from: All: allowed", labelled_service(Some("All")))
        },
        Case {
            services: vec![("apps/echo", Some("infra/waypoint")), ("apps/other", None)],
            ..case(
                "from: Selector matching the namespace: allowed",
                labelled_service(Some(
                    "Selector, selector: {matchLabels: {istio.io/dataplane-mode: ambient}}",
                )),
            )
        },
        Case {
            services: vec![("apps/echo", None)],
            warnings: vec!["AttachmentDenied"],
            ..case(
                "from: Selector not matching the namespace: denied",
                labelled_service(Some("Selector, selector: {matchLabels: {team: billing}}")),
            )
        },
        Case {
            services: vec![("apps/echo", None)],
            warnings: vec!["AttachmentDenied"],
            ..case(
                "namespace labels, no allowedRoutes: denied",
                labelled_namespace(None),
            )
        },
        Case {
            services: vec![("apps/echo", Some("infra/waypoint"))],
            ..case(
                "namespace labels, from: All: allowed",
                labelled_namespace(Some("All")),
            )
        },
        Case {
            services: vec![("apps/echo", None)],
            ..case(
                "use-waypoint-namespace without use-waypoint means nothing",
                [
                    infra(Some("All")),
                    namespace("apps", &[]),
                    service("apps", "echo", &[(USE_NS, "infra")], "10.96.0.10"),
                ]
                .concat(),
            )
        },
    ]);

    // The bound Service keeps its own namespace and host in the config.
    let t = translate(
        &model_of(&labelled_service(Some("All"))),
        &TranslateConfig::default(),
    );
    let cfg = &t.waypoints["infra/waypoint"];
    assert_eq!(cfg.services.len(), 1);
    assert_eq!(cfg.services[0].namespace, "apps");
    assert_eq!(cfg.services[0].hostname, "echo.apps.svc.cluster.local");
}

#[test]
fn waypoint_and_gateway_pods_never_get_a_waypoint() {
    let yaml = [
        apps(Some("all")),
        pod(
            "apps",
            "ingress-1",
            &[("gateway.networking.k8s.io/gateway-name", "ingress")],
            "10.0.0.20",
        ),
        pod(
            "apps",
            "labelled-gw-1",
            &[
                ("gateway.networking.k8s.io/gateway-name", "ingress"),
                (USE, "waypoint"),
            ],
            "10.0.0.21",
        ),
    ]
    .concat();
    check(vec![Case {
        services: vec![
            ("apps/waypoint", None),
            ("apps/echo", Some("apps/waypoint")),
        ],
        pods: vec![
            ("apps/waypoint-pod", None),
            ("apps/ingress-1", None),
            ("apps/labelled-gw-1", None),
            ("apps/echo-1", Some("apps/waypoint")),
        ],
        ..case("gateway-name label: never bound, no warning", yaml)
    }]);
}

pub(crate) const ATTACHED: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: echo-route, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{path: {type: PathPrefix, value: /v2}}]
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: other-route, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: other}]
  rules: [{backendRefs: [{name: other, port: 80}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo-grpc, namespace: apps}
spec:
  parentRefs: [{group: "", kind: Service, name: echo}]
  rules:
  - matches: [{method: {service: echo.Echo, method: Say}}]
    backendRefs: [{name: echo, port: 80}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-l7, namespace: apps}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  rules: [{to: [{operation: {methods: [GET]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: gw-policy, namespace: apps}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{to: [{operation: {paths: [/admin]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: echo-elsewhere, namespace: shop}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: l4, namespace: apps}
spec:
  selector: {matchLabels: {app: echo}}
  rules: [{from: [{source: {namespaces: [apps]}}]}]
---
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: echo-jwt, namespace: apps}
spec:
  targetRefs: [{kind: Service, group: "", name: echo}]
  jwtRules: [{issuer: https://issuer.example}]
"#;

#[test]
fn routes_and_policies_attach_to_the_bound_service_or_the_gateway() {
    let t = translate(
        &model_of(&format!("{}{ATTACHED}", apps(None))),
        &TranslateConfig::default(),
    );
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let cfg = &t.waypoints["apps/waypoint"];
    let svc = |name: &str| {
        cfg.services
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} is not bound: {cfg:?}"))
    };
    let names = |v: Vec<(&str, &str)>| -> Vec<String> {
        v.into_iter().map(|(ns, n)| format!("{ns}/{n}")).collect()
    };

    let echo = svc("echo");
    assert_eq!(
        names(
            echo.http_routes
                .iter()
                .map(|r| (r.namespace.as_str(), r.name.as_str()))
                .collect()
        ),
        ["apps/echo-route"]
    );
    assert_eq!(
        echo.http_routes[0].spec.rules[0].backend_refs[0].port,
        Some(80),
        "the spec travels as written"
    );
    assert_eq!(
        names(
            echo.grpc_routes
                .iter()
                .map(|r| (r.namespace.as_str(), r.name.as_str()))
                .collect()
        ),
        ["apps/echo-grpc"]
    );
    assert_eq!(
        names(
            echo.policies
                .iter()
                .map(|p| (p.namespace.as_str(), p.name.as_str()))
                .collect()
        ),
        ["apps/echo-l7"],
        "only the policy targeting this Service, in its namespace"
    );
    assert_eq!(
        names(
            echo.request_authentications
                .iter()
                .map(|p| (p.namespace.as_str(), p.name.as_str()))
                .collect()
        ),
        ["apps/echo-jwt"]
    );

    let other = svc("other");
    assert_eq!(
        names(
            other
                .http_routes
                .iter()
                .map(|r| (r.namespace.as_str(), r.name.as_str()))
                .collect()
        ),
        ["apps/other-route"]
    );
    assert!(other.grpc_routes.is_empty() && other.policies.is_empty());
    assert!(other.request_authentications.is_empty());

    assert_eq!(
        names(
            cfg.policies
                .iter()
                .map(|p| (p.namespace.as_str(), p.name.as_str()))
                .collect()
        ),
        ["apps/gw-policy"]
    );
    assert!(cfg.request_authentications.is_empty());

    // targetRefs policies belong to waypoints: none goes to ztunnel, while a
    // selector policy still does.
    for not_sent in ["apps/echo-l7", "apps/gw-policy", "shop/echo-elsewhere"] {
        assert!(
            !t.authorizations.contains_key(not_sent),
            "{not_sent} sent to ztunnel"
        );
    }
    assert!(t.authorizations.contains_key("apps/l4"));
}

#[test]
fn gateway_policies_need_the_gateway_group_and_name() {
    let policy = |name: &str, target: &str| {
        format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
             metadata: {{name: {name}, namespace: apps}}\nspec: {{targetRefs: [{target}]}}\n---\n"
        )
    };
    let yaml = [
        apps(None),
        policy("default-group", "{kind: Gateway, name: waypoint}"),
        policy("core-group", "{kind: Gateway, group: \"\", name: waypoint}"),
        policy(
            "other-name",
            "{kind: Gateway, group: gateway.networking.k8s.io, name: second}",
        ),
        policy(
            "service-named-waypoint",
            "{kind: Service, group: \"\", name: waypoint}",
        ),
        policy("default-group", "{kind: Gateway, name: waypoint}").replace(
            "name: default-group,",
            "name: dry-run, annotations: {istio.io/dry-run: \"true\"},",
        ),
    ]
    .concat();
    let t = translate(&model_of(&yaml), &TranslateConfig::default());
    let warned: Vec<&str> = t.warnings.iter().map(|w| w.object.name.as_str()).collect();
    assert_eq!(warned, ["dry-run"], "{:?}", t.warnings);
    assert!(t.warnings[0].message.contains("not sent to the waypoint"));
    let got: Vec<&str> = t.waypoints["apps/waypoint"]
        .policies
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(got, ["default-group"]);
}

#[test]
fn waypoint_configs_are_deterministic() {
    let yaml = [
        apps(Some("all")),
        ATTACHED.to_string(),
        "\n---\n".to_string(),
        gateway("apps", "second", &[(FOR, "all")], None),
        waypoint_deployment("apps", "second", 2),
        service("apps", "third", &[(USE, "second")], "10.96.0.12"),
        pod(
            "apps",
            "third-1",
            &[("app", "third"), (USE, "second")],
            "10.0.0.12",
        ),
    ]
    .concat();
    let cfg = TranslateConfig::default();
    let model = model_of(&yaml);
    let a = translate(&model, &cfg);
    let b = translate(&model, &cfg);
    assert_eq!(a.waypoints, b.waypoints);
    assert_eq!(a, b);

    // The same objects in reverse document order: the same configuration.
    let mut docs: Vec<&str> = yaml.split("\n---\n").collect();
    docs.reverse();
    let reversed = translate(&model_of(&docs.join("\n---\n")), &cfg);
    assert_eq!(a.waypoints, reversed.waypoints);

    // And it is not trivially empty.
    let second: &WaypointConfig = &a.waypoints["apps/second"];
    assert_eq!(second.services.len(), 1);
    assert_eq!(second.workloads, [uid("apps/third-1")]);
    let first = &a.waypoints["apps/waypoint"];
    assert_eq!(first.services.len(), 2);
    assert_eq!(first.workloads, [uid("apps/echo-1"), uid("apps/other-1")]);
}
