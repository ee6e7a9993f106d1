//! Table tests: AuthorizationPolicy / PeerAuthentication YAML as users write
//! it, through translation and ztunnel's decoding, to the decision for one
//! connection. One row per line of the semantics tables in
//! `../shared/spec/user-surface.md` §3.1–3.2.

use std::net::SocketAddr;

use mesh_core::{ConnectionInfo, Decision, Identity, Scope};
use mesh_proto::istio::workload::address::Type;

use super::*;
use crate::model::{Parsed, parse_object};

const BASE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: apps, labels: {istio.io/dataplane-mode: ambient}}
---
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: apps, labels: {app: web}}
spec: {nodeName: node-a, serviceAccountName: web}
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata: {name: other, namespace: apps, labels: {app: other}}
spec: {nodeName: node-a}
status: {podIP: 10.0.0.3}
---
apiVersion: v1
kind: Pod
metadata: {name: elsewhere, namespace: shop, labels: {app: web}}
spec: {nodeName: node-b}
status: {podIP: 10.0.1.2}
"#;

pub(crate) fn model_of(yaml: &str) -> Model {
    let mut model = Model::default();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
        if v.is_null() {
            continue;
        }
        match parse_object(v).unwrap_or_else(|e| panic!("test YAML is invalid: {e}")) {
            Parsed::Object(key, object) => model.insert(&key, *object),
            Parsed::Ignored { .. } => {}
        }
    }
    model
}

/// A connection to `pod`'s port from `src` (ip) with `identity`
/// (`ns/sa`, or none for plaintext).
#[derive(Clone, Copy)]
struct Conn<'a> {
    pod: &'a str,
    src: &'a str,
    identity: Option<&'a str>,
    port: u16,
}

const CURL: Conn<'static> = Conn {
    pod: "web",
    src: "10.1.0.5",
    identity: Some("clients/curl"),
    port: 8080,
};

fn decide(extra: &str, conn: &Conn<'_>) -> (Decision, Translation) {
    let t = translate(
        &model_of(&format!("{BASE}\n---\n{extra}")),
        &TranslateConfig::default(),
    );
    let (ns, name) = match conn.pod {
        "elsewhere" => ("shop", "elsewhere"),
        p => ("apps", p),
    };
    let uid = format!("Kubernetes//Pod/{ns}/{name}");
    let Some(Type::Workload(w)) = t.addresses[&uid].r#type.clone() else {
        panic!("{uid} is not a workload");
    };
    let policies: Vec<mesh_core::Authorization> = t
        .authorizations
        .values()
        .map(|p| mesh_core::Authorization::try_from(p).expect("ztunnel accepts what istiod sends"))
        .collect();
    let applicable = policies.iter().filter(|p| match p.scope {
        Scope::Global => true,
        Scope::Namespace => p.namespace == w.namespace,
        Scope::WorkloadSelector => w.authorization_policies.contains(&p.key()),
    });
    let ip = w.addresses[0].clone();
    let dst_ip: std::net::IpAddr = <[u8; 4]>::try_from(ip.as_slice()).unwrap().into();
    let info = ConnectionInfo {
        src: SocketAddr::new(conn.src.parse().unwrap(), 40000),
        dst: SocketAddr::new(dst_ip, conn.port),
        src_identity: conn.identity.map(|id| {
            let (ns, sa) = id.split_once('/').unwrap();
            Identity::new(Default::default(), ns, sa).unwrap()
        }),
    };
    (mesh_core::evaluate(applicable, &info), t)
}

fn policy(ns: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: p, namespace: {ns}}}\nspec: {spec}\n"
    )
}

struct Row {
    what: &'static str,
    yaml: String,
    conn: Conn<'static>,
    allowed: bool,
    /// A fragment of the operator warning, when one is expected.
    warning: Option<&'static str>,
}

fn row(what: &'static str, yaml: String, conn: Conn<'static>, allowed: bool) -> Row {
    Row {
        what,
        yaml,
        conn,
        allowed,
        warning: None,
    }
}

fn check(rows: Vec<Row>) {
    let mut failures = Vec::new();
    for r in rows {
        let (decision, t) = decide(&r.yaml, &r.conn);
        if decision.is_allowed() != r.allowed {
            failures.push(format!("{}: got {decision}", r.what));
        }
        let warning = t
            .warnings
            .iter()
            .map(|w| w.message.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        match r.warning {
            Some(w) if !warning.contains(w) => {
                failures.push(format!("{}: warning {warning:?} lacks {w:?}", r.what))
            }
            None if !warning.is_empty() => {
                failures.push(format!("{}: unexpected warning {warning:?}", r.what))
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

const PLAIN: Conn<'static> = Conn {
    identity: None,
    ..CURL
};
const TO_OTHER: Conn<'static> = Conn {
    pod: "other",
    ..CURL
};
const OTHER_NS_POD: Conn<'static> = Conn {
    pod: "elsewhere",
    ..CURL
};
const PORT_9090: Conn<'static> = Conn { port: 9090, ..CURL };

#[test]
fn evaluation_order_and_empty_forms() {
    check(vec![
        row("no policies: allow", String::new(), CURL, true),
        row(
            "spec: {} is allow-nothing",
            policy("apps", "{}"),
            CURL,
            false,
        ),
        row(
            "rules: [{}] allows all",
            policy("apps", "{rules: [{}]}"),
            CURL,
            true,
        ),
        row(
            "DENY rules: [{}] denies all",
            policy("apps", "{action: DENY, rules: [{}]}"),
            CURL,
            false,
        ),
        row(
            "DENY without rules is a no-op",
            policy("apps", "{action: DENY}"),
            CURL,
            true,
        ),
        row(
            "DENY beats a matching ALLOW",
            format!(
                "{}---\n{}",
                policy("apps", "{rules: [{}]}"),
                policy("apps", "{action: DENY, rules: [{}]}").replace("name: p", "name: d")
            ),
            CURL,
            false,
        ),
        row(
            "ALLOW that does not match denies",
            policy(
                "apps",
                "{rules: [{from: [{source: {principals: [cluster.local/ns/x/sa/y]}}]}]}",
            ),
            CURL,
            false,
        ),
        row(
            "one of two ALLOWs matching allows",
            format!(
                "{}---\n{}",
                policy(
                    "apps",
                    "{rules: [{from: [{source: {principals: [cluster.local/ns/x/sa/y]}}]}]}"
                ),
                policy(
                    "apps",
                    "{rules: [{from: [{source: {namespaces: [clients]}}]}]}"
                )
                .replace("name: p", "name: q")
            ),
            CURL,
            true,
        ),
        Row {
            warning: Some("AUDIT"),
            ..row(
                "AUDIT never affects the decision",
                policy("apps", "{action: AUDIT, rules: [{}]}"),
                CURL,
                true,
            )
        },
        Row {
            warning: Some("CUSTOM"),
            ..row(
                "CUSTOM is not enforced by ztunnel",
                policy(
                    "apps",
                    "{action: CUSTOM, provider: {name: ext}, rules: [{}]}",
                ),
                CURL,
                true,
            )
        },
        row(
            "dry-run DENY only logs",
            policy("apps", "{action: DENY, rules: [{}]}").replace(
                "namespace: apps}",
                "namespace: apps, annotations: {istio.io/dry-run: \"true\"}}",
            ),
            CURL,
            true,
        ),
        row(
            "targetRefs policies belong to the waypoint",
            policy(
                "apps",
                "{targetRefs: [{kind: Service, group: \"\", name: web}], action: DENY, rules: [{}]}",
            ),
            CURL,
            true,
        ),
    ]);
}

#[test]
fn rule_structure() {
    check(vec![
        row(
            "from AND to: both match",
            policy(
                "apps",
                "{rules: [{from: [{source: {namespaces: [clients]}}], to: [{operation: {ports: [\"8080\"]}}]}]}",
            ),
            CURL,
            true,
        ),
        row(
            "from AND to: to fails",
            policy(
                "apps",
                "{rules: [{from: [{source: {namespaces: [clients]}}], to: [{operation: {ports: [\"9090\"]}}]}]}",
            ),
            CURL,
            false,
        ),
        row(
            "sources are OR-ed",
            policy(
                "apps",
                "{rules: [{from: [{source: {namespaces: [x]}}, {source: {namespaces: [clients]}}]}]}",
            ),
            CURL,
            true,
        ),
        row(
            "fields inside a source are AND-ed",
            policy(
                "apps",
                "{rules: [{from: [{source: {namespaces: [clients], ipBlocks: [192.168.0.0/16]}}]}]}",
            ),
            CURL,
            false,
        ),
        row(
            "when conditions are AND-ed",
            policy(
                "apps",
                "{rules: [{when: [{key: source.namespace, values: [clients]}, {key: destination.port, values: [\"9090\"]}]}]}",
            ),
            CURL,
            false,
        ),
        row(
            "values and notValues of one key both apply",
            policy(
                "apps",
                "{rules: [{when: [{key: source.ip, values: [10.1.0.0/16], notValues: [10.1.0.5]}]}]}",
            ),
            CURL,
            false,
        ),
    ]);
}

#[test]
fn string_match_forms() {
    let by = |p: &str| {
        policy(
            "apps",
            &format!("{{rules: [{{from: [{{source: {{principals: [\"{p}\"]}}}}]}}]}}"),
        )
    };
    check(vec![
        row(
            "exact principal",
            by("cluster.local/ns/clients/sa/curl"),
            CURL,
            true,
        ),
        row(
            "exact principal, other sa",
            by("cluster.local/ns/clients/sa/wget"),
            CURL,
            false,
        ),
        row("prefix abc*", by("cluster.local/ns/clients/*"), CURL, true),
        row(
            "prefix abc* miss",
            by("cluster.local/ns/shop/*"),
            CURL,
            false,
        ),
        row("suffix *abc", by("*/sa/curl"), CURL, true),
        row("suffix *abc miss", by("*/sa/wget"), CURL, false),
        row("presence * with an identity", by("*"), CURL, true),
        row("presence * without an identity", by("*"), PLAIN, false),
    ]);
}

#[test]
fn every_l4_attribute() {
    let src = |s: &str| policy("apps", &format!("{{rules: [{{from: [{{source: {s}}}]}}]}}"));
    let to = |s: &str| {
        policy(
            "apps",
            &format!("{{rules: [{{to: [{{operation: {s}}}]}}]}}"),
        )
    };
    let when = |k: &str, field: &str, v: &str| {
        policy(
            "apps",
            &format!("{{rules: [{{when: [{{key: {k}, {field}: [\"{v}\"]}}]}}]}}"),
        )
    };
    check(vec![
        row(
            "principals",
            src("{principals: [cluster.local/ns/clients/sa/curl]}"),
            CURL,
            true,
        ),
        row(
            "notPrincipals",
            src("{notPrincipals: [cluster.local/ns/clients/sa/curl]}"),
            CURL,
            false,
        ),
        row("namespaces", src("{namespaces: [clients]}"), CURL, true),
        row(
            "notNamespaces",
            src("{notNamespaces: [clients]}"),
            CURL,
            false,
        ),
        row(
            "serviceAccounts ns/sa",
            src("{serviceAccounts: [clients/curl]}"),
            CURL,
            true,
        ),
        row(
            "serviceAccounts bare sa is the policy's namespace",
            src("{serviceAccounts: [curl]}"),
            CURL,
            false,
        ),
        row(
            "notServiceAccounts",
            src("{notServiceAccounts: [clients/curl]}"),
            CURL,
            false,
        ),
        row(
            "ipBlocks CIDR",
            src("{ipBlocks: [10.1.0.0/16]}"),
            CURL,
            true,
        ),
        row(
            "ipBlocks single IP",
            src("{ipBlocks: [10.1.0.6]}"),
            CURL,
            false,
        ),
        row(
            "notIpBlocks",
            src("{notIpBlocks: [10.1.0.0/16]}"),
            CURL,
            false,
        ),
        row("ports", to("{ports: [\"8080\"]}"), CURL, true),
        row("ports miss", to("{ports: [\"8080\"]}"), PORT_9090, false),
        row("notPorts", to("{notPorts: [\"8080\"]}"), CURL, false),
        row(
            "when source.ip",
            when("source.ip", "values", "10.1.0.5"),
            CURL,
            true,
        ),
        row(
            "when source.ip notValues",
            when("source.ip", "notValues", "10.1.0.5"),
            CURL,
            false,
        ),
        row(
            "when source.namespace",
            when("source.namespace", "values", "clients"),
            CURL,
            true,
        ),
        row(
            "when source.principal",
            when(
                "source.principal",
                "values",
                "cluster.local/ns/clients/sa/curl",
            ),
            CURL,
            true,
        ),
        row(
            "when destination.ip",
            when("destination.ip", "values", "10.0.0.2"),
            CURL,
            true,
        ),
        row(
            "when destination.ip miss",
            when("destination.ip", "values", "10.0.0.3"),
            CURL,
            false,
        ),
        row(
            "when destination.port",
            when("destination.port", "values", "8080"),
            CURL,
            true,
        ),
        row(
            "when destination.port notValues",
            when("destination.port", "notValues", "8080"),
            CURL,
            false,
        ),
        row(
            "identity matches fail for plaintext",
            src("{namespaces: [clients]}"),
            PLAIN,
            false,
        ),
        row(
            "negated identity matches pass for plaintext",
            src("{notNamespaces: [clients]}"),
            PLAIN,
            true,
        ),
    ]);
}

#[test]
fn scope() {
    let selected = "{selector: {matchLabels: {app: web}}, action: DENY, rules: [{}]}";
    check(vec![
        row(
            "namespace policy applies in its namespace",
            policy("apps", "{action: DENY, rules: [{}]}"),
            TO_OTHER,
            false,
        ),
        row(
            "namespace policy does not apply elsewhere",
            policy("apps", "{action: DENY, rules: [{}]}"),
            OTHER_NS_POD,
            true,
        ),
        row(
            "root namespace policy applies mesh-wide",
            policy("istio-system", "{action: DENY, rules: [{}]}"),
            OTHER_NS_POD,
            false,
        ),
        row(
            "selector policy applies to the selected pod",
            policy("apps", selected),
            CURL,
            false,
        ),
        row(
            "selector policy skips unselected pods",
            policy("apps", selected),
            TO_OTHER,
            true,
        ),
        row(
            "selector policy stays in its namespace",
            policy("apps", selected),
            OTHER_NS_POD,
            true,
        ),
        row(
            "root-namespace selector policy selects in every namespace",
            policy("istio-system", selected),
            OTHER_NS_POD,
            false,
        ),
        row(
            "require-waypoint pattern admits only the waypoint",
            policy(
                "apps",
                "{selector: {matchLabels: {app: web}}, action: ALLOW, rules: [{from: [{source: {principals: [cluster.local/ns/apps/sa/waypoint]}}]}]}",
            ),
            CURL,
            false,
        ),
    ]);
}

#[test]
fn http_attributes_at_ztunnel() {
    let allow_l7 = policy(
        "apps",
        "{rules: [{from: [{source: {namespaces: [clients]}}], to: [{operation: {methods: [GET]}}]}]}",
    );
    let allow_mixed = policy(
        "apps",
        "{rules: [{to: [{operation: {paths: [/admin]}}]}, {from: [{source: {namespaces: [clients]}}]}]}",
    );
    let deny_mixed = policy(
        "apps",
        "{action: DENY, rules: [{from: [{source: {namespaces: [clients]}}], to: [{operation: {ports: [\"8080\"], methods: [POST]}}]}]}",
    );
    let deny_jwt = policy(
        "apps",
        "{action: DENY, rules: [{from: [{source: {notRequestPrincipals: [\"*\"]}}], to: [{operation: {ports: [\"8080\"]}}]}]}",
    );
    let deny_l7_only = policy(
        "apps",
        "{action: DENY, rules: [{from: [{source: {notRequestPrincipals: [\"*\"]}}]}]}",
    );
    let deny_l7_when = policy(
        "apps",
        "{action: DENY, rules: [{when: [{key: \"request.headers[x-token]\", values: [bad]}]}]}",
    );
    let allow_l7_when = policy(
        "apps",
        "{rules: [{when: [{key: \"request.auth.claims[iss]\", values: [me]}]}]}",
    );
    check(vec![
        Row {
            warning: Some(
                "(found: methods). In ambient mode you must use a waypoint proxy to enforce HTTP rules. Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested.",
            ),
            ..row(
                "ALLOW whose only rule has HTTP attributes allows nothing",
                allow_l7,
                CURL,
                false,
            )
        },
        Row {
            warning: Some("Within an ALLOW policy, rules matching HTTP attributes are omitted"),
            ..row("ALLOW keeps its L4-only rules", allow_mixed, CURL, true)
        },
        Row {
            warning: Some(
                "DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested.",
            ),
            ..row(
                "DENY entry mixing L4 and HTTP enforces its L4 part",
                deny_mixed,
                CURL,
                false,
            )
        },
        Row {
            warning: Some(
                "this DENY policy has no enforceable rules at ztunnel and will have no effect",
            ),
            ..row(
                "DENY whose sources are HTTP-only has no effect, whatever its ports",
                deny_jwt,
                CURL,
                true,
            )
        },
        Row {
            warning: Some(
                "(found: notRequestPrincipals). In ambient mode you must use a waypoint proxy to enforce HTTP rules. After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef to enforce this policy.",
            ),
            ..row(
                "DENY with only HTTP attributes has no effect",
                deny_l7_only,
                CURL,
                true,
            )
        },
        Row {
            warning: Some("(found: request.headers[x-token])"),
            ..row(
                "DENY with only an HTTP condition has no effect",
                deny_l7_when,
                CURL,
                true,
            )
        },
        Row {
            warning: Some("(found: request.auth.claims[iss])"),
            ..row(
                "ALLOW with an HTTP condition allows nothing",
                allow_l7_when,
                CURL,
                false,
            )
        },
    ]);
}

fn peer_authn(ns: &str, name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n---\n"
    )
}

#[test]
fn peer_authentication_modes() {
    let port_8080_plain = Conn {
        port: 8080,
        ..PLAIN
    };
    let port_9090_plain = Conn {
        port: 9090,
        ..PLAIN
    };
    check(vec![
        row(
            "default PERMISSIVE accepts plaintext",
            String::new(),
            PLAIN,
            true,
        ),
        row(
            "STRICT refuses plaintext",
            peer_authn("apps", "default", "{mtls: {mode: STRICT}}"),
            PLAIN,
            false,
        ),
        row(
            "STRICT accepts mTLS",
            peer_authn("apps", "default", "{mtls: {mode: STRICT}}"),
            CURL,
            true,
        ),
        row(
            "DISABLE is ignored for HBONE",
            peer_authn("apps", "default", "{mtls: {mode: DISABLE}}"),
            CURL,
            true,
        ),
        row(
            "DISABLE accepts plaintext",
            peer_authn("apps", "default", "{mtls: {mode: DISABLE}}"),
            PLAIN,
            true,
        ),
        row(
            "mesh-wide STRICT",
            peer_authn("istio-system", "default", "{mtls: {mode: STRICT}}"),
            PLAIN,
            false,
        ),
        row(
            "namespace PERMISSIVE overrides mesh STRICT",
            format!(
                "{}{}",
                peer_authn("istio-system", "default", "{mtls: {mode: STRICT}}"),
                peer_authn("apps", "default", "{mtls: {mode: PERMISSIVE}}")
            ),
            PLAIN,
            true,
        ),
        row(
            "workload STRICT overrides namespace PERMISSIVE",
            format!(
                "{}{}",
                peer_authn("apps", "default", "{mtls: {mode: PERMISSIVE}}"),
                peer_authn(
                    "apps",
                    "web",
                    "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}"
                )
            ),
            PLAIN,
            false,
        ),
        row(
            "workload UNSET inherits the namespace",
            format!(
                "{}{}",
                peer_authn("apps", "default", "{mtls: {mode: STRICT}}"),
                peer_authn("apps", "web", "{selector: {matchLabels: {app: web}}}")
            ),
            PLAIN,
            false,
        ),
        row(
            "port-level PERMISSIVE under STRICT accepts plaintext on that port",
            peer_authn(
                "apps",
                "web",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}}",
            ),
            port_8080_plain,
            true,
        ),
        row(
            "port-level PERMISSIVE under STRICT refuses plaintext on other ports",
            peer_authn(
                "apps",
                "web",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}, portLevelMtls: {8080: {mode: PERMISSIVE}}}",
            ),
            port_9090_plain,
            false,
        ),
        row(
            "port-level STRICT under PERMISSIVE refuses plaintext on that port",
            peer_authn(
                "apps",
                "web",
                "{selector: {matchLabels: {app: web}}, portLevelMtls: {9090: {mode: STRICT}}}",
            ),
            port_9090_plain,
            false,
        ),
        row(
            "port-level STRICT under PERMISSIVE accepts plaintext elsewhere",
            peer_authn(
                "apps",
                "web",
                "{selector: {matchLabels: {app: web}}, portLevelMtls: {9090: {mode: STRICT}}}",
            ),
            port_8080_plain,
            true,
        ),
        row(
            "workload PeerAuthentication does not touch other pods",
            peer_authn(
                "apps",
                "web",
                "{selector: {matchLabels: {app: web}}, mtls: {mode: STRICT}}",
            ),
            Conn {
                pod: "other",
                ..PLAIN
            },
            true,
        ),
    ]);
}

#[test]
fn names_follow_istio() {
    let yaml = format!(
        "{}---\n{}apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: apps}}\nspec: {{clusterIP: 10.96.0.10, selector: {{app: web}}, ports: [{{port: 80, targetPort: 8080}}, {{port: 81, targetPort: http}}]}}\n",
        policy("apps", "{selector: {matchLabels: {app: web}}, rules: [{}]}"),
        peer_authn(
            "apps",
            "web",
            "{selector: {matchLabels: {app: web}}, portLevelMtls: {9090: {mode: STRICT}}}"
        ),
    );
    let t = translate(
        &model_of(&format!("{BASE}---\n{yaml}")),
        &TranslateConfig::default(),
    );
    let names: Vec<&str> = t.authorizations.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "apps/converted_peer_authentication_web",
            "apps/p",
            "istio-system/istio_converted_static_strict"
        ]
    );
    assert!(t.addresses.contains_key("apps/web.apps.svc.cluster.local"));
    let Some(Type::Workload(w)) = &t.addresses["Kubernetes//Pod/apps/web"].r#type else {
        panic!("workload expected");
    };
    assert_eq!(
        w.authorization_policies,
        ["apps/p", "apps/converted_peer_authentication_web"]
    );
    assert_eq!(w.tunnel_protocol, wpb::TunnelProtocol::Hbone as i32);
    assert_eq!(w.service_account, "web");
    assert_eq!(w.node, "node-a");
    // A named target port the pod does not declare is left out.
    let ports = &w.services["apps/web.apps.svc.cluster.local"].ports;
    assert_eq!(ports.len(), 1);
    assert_eq!((ports[0].service_port, ports[0].target_port), (80, 8080));
    let Some(Type::Service(s)) = &t.addresses["apps/web.apps.svc.cluster.local"].r#type else {
        panic!("service expected");
    };
    assert_eq!(s.addresses[0].address, vec![10, 96, 0, 10]);
    assert_eq!(
        s.ports[1].target_port, 0,
        "named target ports resolve per endpoint"
    );
    // The pod in an unlabelled namespace is not in the mesh.
    let Some(Type::Workload(e)) = &t.addresses["Kubernetes//Pod/shop/elsewhere"].r#type else {
        panic!("workload expected");
    };
    assert_eq!(e.tunnel_protocol, wpb::TunnelProtocol::None as i32);
}

#[test]
fn translation_is_deterministic() {
    let m = model_of(&format!("{BASE}---\n{}", policy("apps", "{rules: [{}]}")));
    let cfg = TranslateConfig::default();
    assert_eq!(translate(&m, &cfg), translate(&m, &cfg));
}

#[test]
fn every_http_attribute_is_recognised() {
    let op = |f: &str, v: &str| format!("{{rules: [{{to: [{{operation: {{{f}: [\"{v}\"]}}}}]}}]}}");
    let src = |f: &str, v: &str| format!("{{rules: [{{from: [{{source: {{{f}: [\"{v}\"]}}}}]}}]}}");
    let cases = [
        ("hosts", op("hosts", "a.example")),
        ("notHosts", op("notHosts", "a.example")),
        ("methods", op("methods", "GET")),
        ("notMethods", op("notMethods", "GET")),
        ("paths", op("paths", "/a")),
        ("notPaths", op("notPaths", "/a")),
        ("requestPrincipals", src("requestPrincipals", "iss/sub")),
        (
            "notRequestPrincipals",
            src("notRequestPrincipals", "iss/sub"),
        ),
        ("remoteIpBlocks", src("remoteIpBlocks", "10.0.0.0/8")),
        ("notRemoteIpBlocks", src("notRemoteIpBlocks", "10.0.0.0/8")),
    ];
    let mut failures = Vec::new();
    for (attr, spec) in cases {
        let (decision, t) = decide(&policy("apps", &spec), &CURL);
        if decision.is_allowed() {
            failures.push(format!(
                "ALLOW with only {attr} must allow nothing at ztunnel"
            ));
        }
        if !t
            .warnings
            .iter()
            .any(|w| w.message.contains(&format!("(found: {attr})")))
        {
            failures.push(format!("{attr}: no warning naming it: {:?}", t.warnings));
        }
        let deny = spec.replacen('{', "{action: DENY, ", 1);
        let (decision, _) = decide(&policy("apps", &deny), &CURL);
        if !decision.is_allowed() {
            failures.push(format!(
                "DENY with only {attr} must have no effect at ztunnel"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn services_without_a_selector_take_their_endpoints_from_endpoint_slices() {
    let yaml = r#"
apiVersion: v1
kind: Service
metadata: {name: db, namespace: apps}
spec: {clusterIP: 10.96.0.20, ports: [{name: pg, port: 5432}, {name: admin, port: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-manual, namespace: apps, labels: {kubernetes.io/service-name: db}}
addressType: IPv4
ports: [{name: pg, port: 15432}]
endpoints:
- addresses: [192.168.7.10]
  nodeName: node-b
- addresses: [192.168.7.11]
  conditions: {ready: false}
- addresses: [10.0.0.3]
  targetRef: {kind: Pod, name: other}
- addresses: [not-an-ip]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: db-names, namespace: apps, labels: {kubernetes.io/service-name: db}}
addressType: FQDN
endpoints: [{addresses: [db.example.com]}]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: apps}
spec: {clusterIP: 10.96.0.10, selector: {app: web}, ports: [{port: 80}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abcde, namespace: apps, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{port: 80}]
endpoints: [{addresses: [10.0.0.2], targetRef: {kind: Pod, name: web}}]
"#;
    let t = translate(
        &model_of(&format!("{BASE}---\n{yaml}")),
        &TranslateConfig::default(),
    );
    let workload = |uid: &str| match &t.addresses[uid].r#type {
        Some(Type::Workload(w)) => w.clone(),
        _ => panic!("{uid}: workload expected"),
    };
    let db = "apps/db.apps.svc.cluster.local";
    let outside = workload("Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-manual/192.168.7.10");
    assert_eq!(outside.addresses, [vec![192, 168, 7, 10]]);
    assert_eq!(outside.tunnel_protocol, wpb::TunnelProtocol::None as i32);
    assert_eq!(outside.node, "node-b");
    assert_eq!(outside.status, wpb::WorkloadStatus::Healthy as i32);
    let ports: Vec<(u32, u32)> = outside.services[db]
        .ports
        .iter()
        .map(|p| (p.service_port, p.target_port))
        .collect();
    assert_eq!(ports, [(5432, 15432)], "admin has no port in the slice");
    let unready = workload("Kubernetes/discovery.k8s.io/EndpointSlice/apps/db-manual/192.168.7.11");
    assert_eq!(unready.status, wpb::WorkloadStatus::Unhealthy as i32);
    // An endpoint that is our pod adds the Service to the pod's workload.
    let other = workload("Kubernetes//Pod/apps/other");
    assert!(other.services.contains_key(db));
    // Host names are not addresses; a bad address is named in a warning.
    assert!(!t.addresses.keys().any(|k| k.contains("db-names")));
    assert!(
        t.warnings
            .iter()
            .any(|w| w.object.name == "db-manual" && w.message.contains("\"not-an-ip\""))
    );
    // A selector Service's own slice adds nothing: its pods already say it.
    assert_eq!(
        workload("Kubernetes//Pod/apps/web").services.len(),
        1,
        "web is an endpoint of web once"
    );
    assert!(!t.addresses.keys().any(|k| k.contains("web-abcde")));
}
