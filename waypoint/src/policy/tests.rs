use std::net::IpAddr;

use http::HeaderMap;
use mesh_model::AuthorizationPolicySpec;
use mesh_model::waypoint::Named;
use serde_json::{Value, json};

use super::*;

/// A policy in `default`, its spec written as a user would in YAML.
fn policy(name: &str, spec: Value) -> Named<AuthorizationPolicySpec> {
    Named {
        namespace: "default".into(),
        name: name.into(),
        spec: serde_json::from_value(spec).expect("a valid spec"),
    }
}

/// An owned request, so tests can tweak it before borrowing attributes.
#[derive(Clone)]
struct Req {
    source_ip: IpAddr,
    principal: Option<String>,
    namespace: Option<String>,
    service_account: Option<String>,
    destination_port: u16,
    http: Option<Http>,
}

#[derive(Clone)]
struct Http {
    host: String,
    method: String,
    path: String,
    headers: HeaderMap,
    jwt: Option<JwtClaims>,
}

impl Req {
    /// From `default/curl` at 10.0.0.1 to port 8080.
    fn tcp() -> Self {
        Self {
            source_ip: "10.0.0.1".parse().unwrap(),
            principal: Some("cluster.local/ns/default/sa/curl".into()),
            namespace: Some("default".into()),
            service_account: Some("curl".into()),
            destination_port: 8080,
            http: None,
        }
    }

    fn http(method: &str, path: &str) -> Self {
        Self {
            http: Some(Http {
                host: "echo.default.svc.cluster.local".into(),
                method: method.into(),
                path: path.into(),
                headers: HeaderMap::new(),
                jwt: None,
            }),
            ..Self::tcp()
        }
    }

    fn get(path: &str) -> Self {
        Self::http("GET", path)
    }

    fn from(mut self, namespace: &str, sa: &str) -> Self {
        self.principal = Some(format!("cluster.local/ns/{namespace}/sa/{sa}"));
        self.namespace = Some(namespace.into());
        self.service_account = Some(sa.into());
        self
    }

    fn anonymous(mut self) -> Self {
        self.principal = None;
        self.namespace = None;
        self.service_account = None;
        self
    }

    fn ip(mut self, ip: &str) -> Self {
        self.source_ip = ip.parse().unwrap();
        self
    }

    fn port(mut self, port: u16) -> Self {
        self.destination_port = port;
        self
    }

    fn host(mut self, host: &str) -> Self {
        self.http.as_mut().unwrap().host = host.into();
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        let headers = &mut self.http.as_mut().unwrap().headers;
        headers.append(name, value.parse().unwrap());
        self
    }

    fn jwt(mut self, sub: &str, claims: Value) -> Self {
        self.http.as_mut().unwrap().jwt = Some(JwtClaims {
            issuer: "https://issuer.example".into(),
            subject: sub.into(),
            audiences: vec!["web".into(), "api".into()],
            presenter: Some("frontend".into()),
            claims,
        });
        self
    }

    fn attrs(&self) -> RequestAttributes<'_> {
        RequestAttributes {
            source_ip: self.source_ip,
            source_principal: self.principal.as_deref(),
            source_namespace: self.namespace.as_deref(),
            source_service_account: self.service_account.as_deref(),
            destination_ip: "10.96.0.10".parse().unwrap(),
            destination_port: self.destination_port,
            http: self.http.as_ref().map(|h| HttpAttributes {
                host: &h.host,
                method: &h.method,
                path: &h.path,
                headers: &h.headers,
                jwt: h.jwt.as_ref(),
            }),
        }
    }
}

fn decide(policies: &[Named<AuthorizationPolicySpec>], req: &Req) -> Decision {
    Policies::new(policies).evaluate(&req.attrs())
}

/// Runs `(request, allowed?)` rows against one set of policies.
#[track_caller]
fn check(policies: &[Named<AuthorizationPolicySpec>], rows: &[(Req, bool)]) {
    let compiled = Policies::new(policies);
    for (i, (req, allowed)) in rows.iter().enumerate() {
        let decision = compiled.evaluate(&req.attrs());
        assert_eq!(decision.is_allowed(), *allowed, "row {i}: {decision:?}");
    }
}

/// An ALLOW policy with one rule.
fn allow(rule: Value) -> Vec<Named<AuthorizationPolicySpec>> {
    vec![policy("allow", json!({"action": "ALLOW", "rules": [rule]}))]
}

/// A DENY policy with one rule.
fn deny(rule: Value) -> Vec<Named<AuthorizationPolicySpec>> {
    vec![policy("deny", json!({"action": "DENY", "rules": [rule]}))]
}

fn denied_by(name: &str) -> Decision {
    Decision::Deny {
        policy: Some(name.into()),
    }
}

#[test]
fn no_policies_allow_everything() {
    let p = Policies::new(&[]);
    assert!(p.is_empty());
    assert_eq!(p.evaluate(&Req::get("/").attrs()), Decision::Allow);
    assert_eq!(p.evaluate(&Req::tcp().attrs()), Decision::Allow);
}

#[test]
fn get_only_allow_policy_denies_post() {
    let p = allow(json!({"to": [{"operation": {"methods": ["GET"]}}]}));
    assert_eq!(decide(&p, &Req::get("/")), Decision::Allow);
    assert_eq!(
        decide(&p, &Req::http("POST", "/")),
        Decision::Deny { policy: None }
    );
    // Methods are case-sensitive.
    assert!(!decide(&p, &Req::http("get", "/")).is_allowed());
}

#[test]
fn deny_is_evaluated_before_allow() {
    let mut p = allow(json!({}));
    p.push(policy(
        "no-admin",
        json!({"action": "DENY", "rules": [{"to": [{"operation": {"paths": ["/admin*"]}}]}]}),
    ));
    assert_eq!(
        decide(&p, &Req::get("/admin/users")),
        denied_by("default/no-admin")
    );
    assert_eq!(decide(&p, &Req::get("/public")), Decision::Allow);
}

#[test]
fn allow_nothing_and_empty_rules() {
    let allow_nothing = vec![policy("allow-nothing", json!({}))];
    check(
        &allow_nothing,
        &[(Req::get("/"), false), (Req::tcp(), false)],
    );
    // A DENY without rules denies nothing, and is not an ALLOW policy.
    let deny_nothing = vec![policy("d", json!({"action": "DENY"}))];
    check(&deny_nothing, &[(Req::get("/"), true), (Req::tcp(), true)]);
    check(
        &allow(json!({})),
        &[(Req::get("/"), true), (Req::tcp(), true)],
    );
    check(
        &deny(json!({})),
        &[(Req::get("/"), false), (Req::tcp(), false)],
    );
}

#[test]
fn source_identities() {
    let principals = allow(json!({"from": [{"source": {
        "principals": ["cluster.local/ns/default/sa/curl", "*/sa/admin"]}}]}));
    check(
        &principals,
        &[
            (Req::get("/"), true),
            (Req::get("/").from("ops", "admin"), true),
            (Req::get("/").from("default", "other"), false),
            (Req::get("/").anonymous(), false),
        ],
    );
    let namespaces = allow(json!({"from": [{"source": {"namespaces": ["prod", "test-*"]}}]}));
    check(
        &namespaces,
        &[
            (Req::get("/").from("prod", "a"), true),
            (Req::get("/").from("test-1", "a"), true),
            (Req::get("/").from("staging", "a"), false),
            (Req::get("/").anonymous(), false),
        ],
    );
    // `curl` means the policy's own namespace (`default`).
    let sas = allow(json!({"from": [{"source": {"serviceAccounts": ["curl", "ops/admin"]}}]}));
    check(
        &sas,
        &[
            (Req::get("/"), true),
            (Req::get("/").from("ops", "admin"), true),
            (Req::get("/").from("ops", "curl"), false),
            (Req::get("/").from("default", "admin"), false),
        ],
    );
}

#[test]
fn not_principals_presence_denies_requests_without_identity() {
    let p = deny(json!({"from": [{"source": {"notPrincipals": ["*"]}}]}));
    check(
        &p,
        &[
            (Req::get("/"), true),
            (Req::get("/").anonymous(), false),
            (Req::tcp().anonymous(), false),
        ],
    );
    let p = allow(
        json!({"from": [{"source": {"notPrincipals": ["cluster.local/ns/default/sa/curl"]}}]}),
    );
    check(
        &p,
        &[
            (Req::get("/"), false),
            (Req::get("/").from("default", "other"), true),
        ],
    );
}

#[test]
fn ip_blocks_and_ports() {
    let p = allow(json!({
        "from": [{"source": {"ipBlocks": ["10.0.0.0/8"], "notIpBlocks": ["10.9.0.0/16"]}}],
        "to": [{"operation": {"ports": ["8080", "9090"]}}],
    }));
    check(
        &p,
        &[
            (Req::tcp(), true),
            (Req::tcp().ip("::ffff:10.0.0.7"), true),
            (Req::tcp().ip("10.9.1.1"), false),
            (Req::tcp().ip("192.168.0.1"), false),
            (Req::tcp().port(9090), true),
            (Req::tcp().port(80), false),
        ],
    );
    let remote = allow(json!({"from": [{"source": {"remoteIpBlocks": ["10.0.0.1"]}}]}));
    check(
        &remote,
        &[(Req::get("/"), true), (Req::get("/").ip("10.0.0.2"), false)],
    );
}

#[test]
fn hosts_match_case_insensitively_with_or_without_port() {
    let p = allow(json!({"to": [{"operation": {
        "hosts": ["echo.default.svc.cluster.local", "*.example.com"],
        "notHosts": ["secret.example.com"]}}]}));
    check(
        &p,
        &[
            (Req::get("/"), true),
            (
                Req::get("/").host("Echo.Default.svc.cluster.local:8080"),
                true,
            ),
            (Req::get("/").host("api.EXAMPLE.com"), true),
            (Req::get("/").host("api.example.com:443"), true),
            (Req::get("/").host("secret.example.com:443"), false),
            (Req::get("/").host("other.default.svc.cluster.local"), false),
        ],
    );
    let v6 = allow(json!({"to": [{"operation": {"hosts": ["[fd00::1]"]}}]}));
    check(
        &v6,
        &[
            (Req::get("/").host("[fd00::1]:80"), true),
            (Req::get("/").host("[fd00::2]:80"), false),
        ],
    );
}

#[test]
fn path_patterns_and_templates() {
    let p = allow(json!({"to": [{"operation": {"paths": [
        "/exact", "/static/*", "*.png", "/api/{*}/items", "/files/{**}"]}}]}));
    check(
        &p,
        &[
            (Req::get("/exact"), true),
            (Req::get("/exact/"), false),
            (Req::get("/static/app.js"), true),
            (Req::get("/img/logo.png"), true),
            (Req::get("/api/42/items"), true),
            (Req::get("/api//items"), false),
            (Req::get("/api/42/7/items"), false),
            (Req::get("/api/42/items/x"), false),
            (Req::get("/files/"), true),
            (Req::get("/files/a/b/c"), true),
            (Req::get("/files"), false),
            (Req::get("/filesystem"), false),
        ],
    );
    let not_paths = allow(json!({"to": [{"operation": {"notPaths": ["/private/{**}"]}}]}));
    check(
        &not_paths,
        &[(Req::get("/private/x"), false), (Req::get("/public"), true)],
    );
    // A template that is not whole segments matches nothing (fail closed).
    let bad = allow(json!({"to": [{"operation": {"paths": ["/a{*}"]}}]}));
    check(
        &bad,
        &[(Req::get("/ab"), false), (Req::get("/a{*}"), false)],
    );
    let presence = allow(json!({"to": [{"operation": {"paths": ["*"]}}]}));
    check(&presence, &[(Req::get("/"), true)]);
}

/// Normalized paths are a fixed point, and hold none of the spellings
/// normalization removes, for every mix of the tricky pieces.
#[test]
fn normalized_paths_are_canonical_and_stable() {
    use rand::{Rng, SeedableRng};
    const PIECES: &[&str] = &[
        "/", "/", ".", "..", ";", ";x=1", "%2F", "%2f", "%5C", "\\", "a", "%61", "%3B", "%25",
        "%2E", "%2e%2E", "?", "#", "~", "%7E", "%20",
    ];
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    for _ in 0..20_000 {
        let n = rng.random_range(1..12);
        let mut raw = String::from("/");
        for _ in 0..n {
            raw.push_str(PIECES[rng.random_range(0..PIECES.len())]);
        }
        let Ok(path) = normalize_path(&raw) else {
            panic!("{raw:?} was refused");
        };
        assert!(path.starts_with('/'), "{raw:?} -> {path:?}");
        assert!(
            !path.contains("//") && !path.contains(';') && !path.contains('\\'),
            "{raw:?} -> {path:?}"
        );
        assert!(
            !path.split('/').any(|s| s == "." || s == ".."),
            "{raw:?} -> {path:?}"
        );
        assert_eq!(
            normalize_path(&path).as_deref(),
            Ok(path.as_str()),
            "{raw:?}"
        );
    }
}

#[test]
fn path_normalization() {
    let ok = [
        ("/", "/"),
        ("/a/./b/../c", "/a/c"),
        ("/a/b/..", "/a/"),
        ("/a/b/.", "/a/b/"),
        ("/../../a", "/a"),
        ("/%41%62c", "/Abc"),
        ("/a/%2e%2E/b", "/b"),
        ("/%7euser", "/~user"),
        ("/a%20b%3f", "/a%20b%3F"),
        ("/a?x=/../b", "/a"),
        ("/a#/../b", "/a"),
        // Slashes merged, encoded ones decoded first, backslashes too.
        ("/a//b", "/a/b"),
        ("//admin", "/admin"),
        ("/a%2Fb", "/a/b"),
        ("/a%2fb", "/a/b"),
        ("/%2F%2Fadmin", "/admin"),
        ("/a%5cb", "/a/b"),
        ("/a\\b", "/a/b"),
        ("/x/%2E%2E%2Fadmin", "/admin"),
        // Parameters go, before dot segments are removed.
        ("/admin;x", "/admin"),
        ("/admin;x=1;y/list;z", "/admin/list"),
        ("/public/..;/admin", "/admin"),
        ("/;x/admin", "/admin"),
        ("/a%3Bb", "/a%3Bb"),
    ];
    for (raw, want) in ok {
        assert_eq!(normalize_path(raw).as_deref(), Ok(want), "{raw}");
    }
    let bad = ["a/b", "*", "", "/a%4", "/a%zz"];
    for raw in bad {
        assert!(normalize_path(raw).is_err(), "{raw} should be rejected");
    }
    assert!(matches!(
        normalize_path("/x%4"),
        Err(PathError::BadPercentEncoding { at: 2, .. })
    ));
}

#[test]
fn when_request_headers() {
    let p = allow(json!({"when": [
        {"key": "request.headers[X-Env]", "values": ["prod*"], "notValues": ["prod-legacy"]}]}));
    check(
        &p,
        &[
            (Req::get("/").header("x-env", "prod-eu"), true),
            (Req::get("/").header("x-env", "dev"), false),
            (
                Req::get("/").header("x-env", "dev").header("x-env", "prod"),
                true,
            ),
            (
                Req::get("/")
                    .header("x-env", "prod")
                    .header("x-env", "prod-legacy"),
                false,
            ),
            (Req::get("/"), false),
        ],
    );
    // Presence (`*`) needs a non-empty value.
    let present = allow(json!({"when": [{"key": "request.headers[x-token]", "values": ["*"]}]}));
    check(
        &present,
        &[
            (Req::get("/").header("x-token", "t"), true),
            (Req::get("/").header("x-token", ""), false),
            (Req::get("/"), false),
        ],
    );
    let host =
        allow(json!({"when": [{"key": "request.headers[:authority]", "values": ["echo.*"]}]}));
    check(
        &host,
        &[(Req::get("/"), true), (Req::get("/").host("other"), false)],
    );
}

#[test]
fn when_jwt_claims() {
    let claims = json!({
        "groups": ["dev", "admin"],
        "org": {"team": "payments", "level": 3},
        "email_verified": true,
    });
    let rows = |key: &str, values: Value| -> Vec<Named<AuthorizationPolicySpec>> {
        allow(json!({"when": [{"key": key, "values": values}]}))
    };
    let req = Req::get("/").jwt("alice", claims);
    check(
        &rows("request.auth.claims[groups]", json!(["admin"])),
        &[(req.clone(), true)],
    );
    check(
        &rows("request.auth.claims[groups]", json!(["ops"])),
        &[(req.clone(), false)],
    );
    check(
        &rows("request.auth.claims[org][team]", json!(["pay*"])),
        &[(req.clone(), true)],
    );
    check(
        &rows("request.auth.claims[org][level]", json!(["3"])),
        &[(req.clone(), true)],
    );
    check(
        &rows("request.auth.claims[org][missing]", json!(["*"])),
        &[(req.clone(), false)],
    );
    check(
        &rows("request.auth.claims[email_verified]", json!(["true"])),
        &[(req.clone(), true)],
    );
    check(
        &rows("request.auth.audiences", json!(["api"])),
        &[(req.clone(), true)],
    );
    check(
        &rows("request.auth.presenter", json!(["frontend"])),
        &[(req.clone(), true)],
    );
    check(
        &rows(
            "request.auth.principal",
            json!(["https://issuer.example/alice"]),
        ),
        &[(req.clone(), true), (Req::get("/"), false)],
    );
    let not =
        allow(json!({"when": [{"key": "request.auth.claims[groups]", "notValues": ["admin"]}]}));
    check(&not, &[(req, false), (Req::get("/"), true)]);
}

#[test]
fn when_l4_keys() {
    let p = allow(json!({"when": [
        {"key": "source.ip", "values": ["10.0.0.0/24"]},
        {"key": "destination.port", "notValues": ["9090"]},
        {"key": "source.namespace", "values": ["default"]},
        {"key": "source.serviceAccount", "values": ["curl"]},
        {"key": "destination.ip", "values": ["10.96.0.0/12"]},
    ]}));
    check(
        &p,
        &[
            (Req::tcp(), true),
            (Req::get("/"), true),
            (Req::tcp().ip("10.0.1.1"), false),
            (Req::tcp().port(9090), false),
            (Req::tcp().from("default", "other"), false),
        ],
    );
    // No SNI is ever seen: values never match.
    let sni = allow(json!({"when": [{"key": "connection.sni", "values": ["*"]}]}));
    check(&sni, &[(Req::get("/"), false)]);
}

#[test]
fn request_principals_need_a_jwt() {
    let p =
        allow(json!({"from": [{"source": {"requestPrincipals": ["https://issuer.example/*"]}}]}));
    check(
        &p,
        &[
            (Req::get("/").jwt("bob", json!({})), true),
            (Req::get("/"), false),
        ],
    );
    let require_jwt = deny(json!({"from": [{"source": {"notRequestPrincipals": ["*"]}}]}));
    check(
        &require_jwt,
        &[
            (Req::get("/").jwt("bob", json!({})), true),
            (Req::get("/"), false),
        ],
    );
}

#[test]
fn http_attributes_on_tcp_fail_closed() {
    let get_only = allow(json!({"to": [{"operation": {"methods": ["GET"]}}]}));
    assert_eq!(
        decide(&get_only, &Req::tcp()),
        Decision::Deny { policy: None }
    );
    // DENY on TCP: the HTTP field counts as matching, the L4 field still applies.
    let deny_get = deny(json!({"to": [{"operation": {"methods": ["GET"], "ports": ["8080"]}}]}));
    assert_eq!(decide(&deny_get, &Req::tcp()), denied_by("default/deny"));
    check(
        &deny_get,
        &[
            (Req::tcp().port(9090), true),
            (Req::http("POST", "/"), true),
        ],
    );
    // An ALLOW rule with any HTTP attribute is dropped whole for TCP, even
    // if another of its entries is pure L4.
    let mixed = allow(json!({"to": [
        {"operation": {"paths": ["/x"]}}, {"operation": {"ports": ["8080"]}}]}));
    check(&mixed, &[(Req::tcp(), false), (Req::get("/y"), true)]);
    let header = deny(json!({"when": [{"key": "request.headers[x-a]", "values": ["1"]}]}));
    check(&header, &[(Req::tcp(), false), (Req::get("/"), true)]);
    // remoteIpBlocks is evaluated at L4 here.
    let remote = allow(json!({"from": [{"source": {"remoteIpBlocks": ["10.0.0.0/8"]}}]}));
    check(&remote, &[(Req::tcp(), true)]);
}

#[test]
fn unsupported_condition_keys_fail_closed() {
    let key = "experimental.envoy.filters.network.mysql_proxy[db.table]";
    let a = allow(json!({"when": [{"key": key, "values": ["[update]"]}]}));
    check(&a, &[(Req::get("/"), false)]);
    let d = deny(json!({"when": [{"key": key, "values": ["[update]"]}]}));
    check(&d, &[(Req::get("/"), false)]);
}

#[test]
fn custom_fails_closed_and_audit_is_ignored() {
    let custom = vec![
        policy("allow-all", json!({"rules": [{}]})),
        policy(
            "ext",
            json!({"action": "CUSTOM", "provider": {"name": "opa"}, "rules": [{}]}),
        ),
    ];
    let p = Policies::new(&custom);
    assert!(!p.is_empty());
    assert_eq!(p.evaluate(&Req::get("/").attrs()), denied_by("default/ext"));
    assert_eq!(p.evaluate(&Req::tcp().attrs()), denied_by("default/ext"));

    let audit_only = vec![policy("audit", json!({"action": "AUDIT", "rules": [{}]}))];
    assert!(Policies::new(&audit_only).is_empty());
    assert_eq!(decide(&audit_only, &Req::get("/")), Decision::Allow);
    let mut with_allow = allow(json!({"to": [{"operation": {"methods": ["GET"]}}]}));
    with_allow.extend(audit_only);
    check(
        &with_allow,
        &[(Req::get("/"), true), (Req::http("POST", "/"), false)],
    );
}
