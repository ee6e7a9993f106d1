//! Waypoints in the network-namespace cluster: clients' traffic to a
//! Service bound to a waypoint goes client → ztunnel → waypoint (L7 policy,
//! routes) → ztunnel → server, all HBONE. Needs root; `cargo xtask e2e`
//! runs it.

use std::time::{Duration, Instant};

use integration::cluster::host::ns_output;
use integration::cluster::{Cluster, GRPC_PORT, HTTP_PORT, PodSpec, TCP_PORT};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const USE_WAYPOINT: (&str, &str) = ("istio.io/use-waypoint", "waypoint");

use integration::cluster::{curl_status as curl, until_reply};

/// Waits until `f` holds for a request (the mesh converging), up to 30 s.
fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `shop` (ambient, using waypoint `shop/waypoint` on node-b), a client on
/// node-a, and servers on node-b.
fn shop() -> Cluster {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("shop", &[AMBIENT, USE_WAYPOINT]);
    c.waypoint("shop", "waypoint", "node-b", None);
    c.pod(PodSpec::new("shop", "client", "node-a"));
    c
}

/// [`shop`] with a server `web` on node-b behind a Service of the same
/// name; returns the Service's VIP too.
fn shop_with_web() -> (Cluster, std::net::Ipv4Addr) {
    let mut c = shop();
    c.pod(PodSpec::new("shop", "web", "node-b"));
    let vip = c.service("shop", "web", "web");
    (c, vip)
}

const GET_ONLY: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: get-only
  namespace: NS
spec:
  targetRefs:
  - {kind: Service, group: \"\", name: web}
  action: ALLOW
  rules:
  - to:
    - operation:
        methods: [GET]
";

#[test]
fn an_l7_policy_at_the_waypoint_allows_get_and_denies_post_and_means_nothing_without_one() {
    let (mut c, vip) = shop_with_web();
    let waypoint_ip = c.get("shop", "waypoint").ip;
    let client = c.get("shop", "client");
    let url = format!("http://{vip}:{HTTP_PORT}/");
    // The request transits the waypoint: the server sees it as the client.
    until_reply(
        "traffic to web flows through the waypoint",
        || curl(client, &[&url]),
        |r| r.body == format!("hello from web, you are {waypoint_ip}\n"),
    );
    c.apply("ap-shop-get-only.yaml", &GET_ONLY.replace("NS", "shop"));
    until_reply(
        "the waypoint denies POST",
        || curl(client, &["-X", "POST", "-d", "x", &url]),
        |r| r.is(403, "RBAC: access denied"),
    );
    curl(client, &[&url]).assert_is(200, &format!("hello from web, you are {waypoint_ip}\n"));
    for _ in 0..5 {
        curl(client, &["-X", "POST", "-d", "x", &url]).assert_status(403);
        curl(client, &[&url]).assert_status(200);
    }

    // The same text where no waypoint is bound: a targetRefs policy is for
    // waypoints only, and ztunnel does not enforce it (user-surface §3.1).
    c.namespace("plain", &[AMBIENT]);
    let plain_client = PodSpec::new("plain", "client", "node-a");
    c.pod(plain_client);
    c.pod(PodSpec::new("plain", "web", "node-b"));
    let plain_vip = c.service("plain", "web", "web");
    c.apply("ap-plain-get-only.yaml", &GET_ONLY.replace("NS", "plain"));
    let plain_client = c.get("plain", "client");
    let plain_ip = plain_client.ip;
    let plain_url = format!("http://{plain_vip}:{HTTP_PORT}/");
    // Over HBONE, not merely answered: until ztunnel knows the Service, a
    // VIP it cannot resolve is passed through in plaintext, which would
    // prove nothing about its policies (issue 31's flake began there).
    let body = c.curl_over_mtls(plain_client, &plain_url, c.get("plain", "web"));
    assert_eq!(body, format!("hello from web, you are {plain_ip}\n"));
    // Time for a policy wrongly sent to ztunnel to arrive.
    std::thread::sleep(Duration::from_millis(500));
    curl(plain_client, &["-X", "POST", "-d", "x", &plain_url]).assert_status(200);
    // Written for ztunnel (no targetRefs), the HTTP rule is dropped and the
    // ALLOW policy allows nothing: connections are reset, no HTTP answer.
    c.apply(
        "ap-plain-get-only.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: get-only, namespace: plain}\nspec:\n  action: ALLOW\n  rules:\n  - to:\n    - operation:\n        methods: [GET]\n",
    );
    until_reply(
        "ztunnel denies every connection to plain/web",
        || curl(plain_client, &[&plain_url]),
        |r| r.status == 0,
    );
    curl(plain_client, &["-X", "POST", "-d", "x", &plain_url]).assert_status(0);
}

fn route(name: &str, body: &str) -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: {name}, port: {HTTP_PORT}}}\n{body}"
    )
}

#[test]
fn routes_split_by_weight_retry_503s_time_out_route_grpc_and_pass_tcp_through() {
    let mut c = shop();
    c.pod(PodSpec::new("shop", "echo-v1", "node-b"));
    c.pod(PodSpec::new("shop", "echo-v2", "node-a"));
    c.pod(
        PodSpec::new("shop", "flaky-bad", "node-b")
            .label("app", "flaky")
            .arg("--http-status", "503"),
    );
    c.pod(PodSpec::new("shop", "flaky-good", "node-a").label("app", "flaky"));
    let echo = c.service("shop", "echo", "echo-v1");
    c.service("shop", "echo-v1", "echo-v1");
    c.service("shop", "echo-v2", "echo-v2");
    let flaky = c.service("shop", "flaky", "flaky");
    let client = c.get("shop", "client");
    let url = format!("http://{echo}:{HTTP_PORT}/");

    // 90/10 over 1000 requests.
    c.apply(
        "route-echo.yaml",
        &route(
            "echo",
            &format!("  rules:\n  - backendRefs:\n    - {{name: echo-v1, port: {HTTP_PORT}, weight: 90}}\n    - {{name: echo-v2, port: {HTTP_PORT}, weight: 10}}\n"),
        ),
    );
    // Both backends must be reachable before counting: each needs its
    // certificate, which the CA issues only once it knows the pod's node.
    let (mut seen_v1, mut seen_v2) = (false, false);
    until("echo-v1 and echo-v2 answer through the route", || {
        let body = curl(client, &[&url]).body;
        seen_v1 |= body.contains("hello from echo-v1");
        seen_v2 |= body.contains("hello from echo-v2");
        seen_v1 && seen_v2
    });
    let urls: Vec<&str> = std::iter::repeat_n(url.as_str(), 100).collect();
    let (mut v1, mut v2) = (0, 0);
    let mut errors = String::new();
    for _ in 0..10 {
        let mut argv = vec!["-sS", "--max-time", "60"];
        argv.extend(&urls);
        let out = ns_output(&client.netns, "curl", &argv);
        let text = String::from_utf8_lossy(&out.stdout);
        v1 += text.matches("hello from echo-v1").count();
        v2 += text.matches("hello from echo-v2").count();
        errors.push_str(&String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(v1 + v2, 1000, "every request answered; curl said: {errors}");
    assert!(
        (850..=950).contains(&v1),
        "90/10 split within ±5%: v1={v1} v2={v2}"
    );

    // Without a retry policy some requests meet the failing endpoint ...
    let flaky_url = format!("http://{flaky}:{HTTP_PORT}/");
    until_reply(
        "flaky answers through the waypoint",
        || curl(client, &[&flaky_url]),
        |r| r.status != 0,
    );
    let failures = (0..30)
        .filter(|_| curl(client, &[&flaky_url]).status == 503)
        .count();
    assert!(failures > 0, "half the endpoints answer 503");
    // ... with one, the retry goes to the other endpoint and succeeds.
    c.apply(
        "route-flaky.yaml",
        &route(
            "flaky",
            &format!("  rules:\n  - backendRefs:\n    - {{name: flaky, port: {HTTP_PORT}}}\n    retry: {{codes: [503], attempts: 1, backoff: 10ms}}\n    timeouts: {{request: 500ms}}\n"),
        ),
    );
    until("the retry policy applies", || {
        (0..10).all(|_| curl(client, &[&flaky_url]).status == 200)
    });
    for _ in 0..30 {
        // A 503 turned into a success.
        curl(client, &[&flaky_url]).assert_status(200);
    }
    // The request timeout: a slow answer becomes 504.
    let started = Instant::now();
    curl(client, &[&format!("{flaky_url}?delay_ms=3000")])
        .assert_is(504, "upstream request timeout");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // gRPC routed by service and method.
    c.apply(
        "grpcroute-echo.yaml",
        &format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: echo-grpc, namespace: shop}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: echo}}\n  rules:\n  - matches:\n    - method: {{service: shop.Echo, method: Hello}}\n    backendRefs:\n    - {{name: echo-v2, port: {GRPC_PORT}}}\n  - backendRefs:\n    - {{name: echo-v1, port: {GRPC_PORT}}}\n"
        ),
    );
    let frame = c.dir.path().join("grpc-empty-request.bin");
    std::fs::write(&frame, [0u8; 5]).expect("write the request frame");
    let grpc = |method: &str| {
        let body = format!("@{}", frame.display());
        curl(
            client,
            &[
                "--http2-prior-knowledge",
                "-H",
                "content-type: application/grpc",
                "-H",
                "te: trailers",
                "--data-binary",
                &body,
                "--output",
                "-",
                &format!("http://{echo}:{GRPC_PORT}/shop.Echo/{method}"),
            ],
        )
    };
    until("the GRPCRoute applies", || {
        grpc("Hello").body.contains("echo-v2 /shop.Echo/Hello")
    });
    for _ in 0..5 {
        let hello = grpc("Hello");
        hello.assert_status(200);
        assert!(hello.body.contains("echo-v2 /shop.Echo/Hello"), "{hello}");
        let goodbye = grpc("Goodbye");
        assert!(
            goodbye.body.contains("echo-v1 /shop.Echo/Goodbye"),
            "{goodbye}"
        );
    }

    // A TCP protocol passes through the waypoint unchanged.
    let waypoint_ip = c.get("shop", "waypoint").ip;
    let data: String = (0..2000)
        .map(|i| format!("line {i} of a non-HTTP protocol\n"))
        .collect();
    let out = c
        .socat(client, &format!("{echo}:{TCP_PORT}"), &data)
        .expect("TCP through the waypoint");
    assert_eq!(out, format!("echo-v1 {waypoint_ip}\n{data}"));
}

#[test]
fn with_the_waypoint_gateway_deleted_traffic_flows_directly_within_two_seconds() {
    let (c, vip) = shop_with_web();
    let waypoint_ip = c.get("shop", "waypoint").ip;
    let client = c.get("shop", "client");
    let client_ip = client.ip;
    let url = format!("http://{vip}:{HTTP_PORT}/");
    until_reply(
        "traffic flows through the waypoint",
        || curl(client, &[&url]),
        |r| r.body == format!("hello from web, you are {waypoint_ip}\n"),
    );
    c.delete_gateway("shop", "waypoint");
    let deleted = Instant::now();
    until_reply(
        "traffic flows directly",
        || curl(client, &[&url]),
        |r| r.body == format!("hello from web, you are {client_ip}\n"),
    );
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(2), "direct again after {took:?}");
}

#[test]
fn pod_addressed_traffic_goes_through_a_workload_waypoint_and_its_gateway_policies() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("ops", &[AMBIENT, USE_WAYPOINT]);
    c.waypoint("ops", "waypoint", "node-b", Some("workload"));
    c.pod(PodSpec::new("ops", "client", "node-a"));
    let web_ip = c.pod(PodSpec::new("ops", "web", "node-b")).ip;
    let vip = c.service("ops", "web", "web");
    let waypoint_ip = c.get("ops", "waypoint").ip;
    let client = c.get("ops", "client");
    let client_ip = client.ip;
    until_reply(
        "pod-addressed traffic flows through the waypoint",
        || curl(client, &[&format!("http://{web_ip}:{HTTP_PORT}/")]),
        |r| r.body == format!("hello from web, you are {waypoint_ip}\n"),
    );
    // A workload-only waypoint does not take service-addressed traffic.
    curl(client, &[&format!("http://{vip}:{HTTP_PORT}/")])
        .assert_is(200, &format!("hello from web, you are {client_ip}\n"));
    // Policies that target the waypoint Gateway apply to its workloads.
    c.apply(
        "ap-ops-no-post.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-post, namespace: ops}\nspec:\n  targetRefs:\n  - {kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}\n  action: DENY\n  rules:\n  - to:\n    - operation: {methods: [POST]}\n",
    );
    let url = format!("http://{web_ip}:{HTTP_PORT}/");
    until_reply(
        "the waypoint denies POST to the pod",
        || curl(client, &["-X", "POST", "-d", "x", &url]),
        |r| r.is(403, "RBAC: access denied"),
    );
    curl(client, &[&url]).assert_status(200);
}

/// A P-256 key of an identity provider: signs ES256 tokens and publishes
/// itself as a JSON Web Key Set.
struct Idp {
    kid: &'static str,
    pkcs8: Vec<u8>,
    jwk: serde_json::Value,
}

const ISSUER: &str = "https://idp.shop.example";

impl Idp {
    fn new(kid: &'static str) -> Self {
        use base64::Engine;
        use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let point = pair.public_key().as_ref();
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let jwk = serde_json::json!({
            "kty": "EC", "crv": "P-256", "kid": kid, "alg": "ES256", "use": "sig",
            "x": b64.encode(&point[1..33]), "y": b64.encode(&point[33..65]),
        });
        Self {
            kid,
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
        }
    }

    fn token(&self, sub: &str) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        header.kid = Some(self.kid.into());
        let exp = jsonwebtoken::get_current_timestamp() + 600;
        let claims = serde_json::json!({ "iss": ISSUER, "sub": sub, "exp": exp });
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).unwrap()
    }

    fn jwks(&self) -> String {
        serde_json::json!({ "keys": [self.jwk] }).to_string()
    }
}

#[test]
fn jwt_keys_fetched_from_a_jwks_uri_authenticate_requests_at_the_waypoint() {
    let (mut c, vip) = shop_with_web();
    let waypoint_ip = c.get("shop", "waypoint").ip;
    let url = format!("http://{vip}:{HTTP_PORT}/");
    until_reply(
        "traffic to web flows through the waypoint",
        || curl(c.get("shop", "client"), &[&url]),
        |r| r.body == format!("hello from web, you are {waypoint_ip}\n"),
    );
    let idp = Idp::new("k1");
    let jwks_uri = c.identity_provider(&idp.jwks());
    c.apply(
        "ra-shop-web.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: RequestAuthentication\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRefs:\n  - {{kind: Service, group: \"\", name: web}}\n  jwtRules:\n  - issuer: {ISSUER}\n    jwksUri: {jwks_uri}\n"
        ),
    );
    c.apply(
        "ap-shop-web-jwt.yaml",
        &format!(
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: require-jwt, namespace: shop}}\nspec:\n  targetRefs:\n  - {{kind: Service, group: \"\", name: web}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        requestPrincipals: [\"{ISSUER}/*\"]\n"
        ),
    );
    let client = c.get("shop", "client");
    let bearer = |t: &str| format!("authorization: Bearer {t}");
    let good = bearer(&idp.token("alice"));
    // No token: authentication passes, the policy wants a principal.
    until_reply(
        "the waypoint requires a request principal",
        || curl(client, &[&url]),
        |r| r.is(403, "RBAC: access denied"),
    );
    until_reply(
        "a token signed by the provider's fetched key is accepted",
        || curl(client, &["-H", &good, &url]),
        |r| r.status == 200,
    );
    // A token from another key of the same issuer is rejected.
    let forged = bearer(&Idp::new("k1").token("mallory"));
    curl(client, &["-H", &forged, &url]).assert_is(401, "Jwt verification fails");
}

/// reliability.md A8. (a) `web` admits only its waypoint's identity, so a
/// client that aims at the pod IP, skipping the waypoint, is refused by
/// ztunnel. (b) Through the waypoint, every spelling of a request gets the
/// decision of its canonical form: paths that hide `/admin` (CVE-2021-31920
/// and Envoy's path-parameter advisories), a Host in another case, a header
/// given twice; and the application receives the path the policy judged.
/// Service accounts with a dot match only themselves (CVE-2026-39350).
#[test]
fn a8_every_spelling_of_a_request_gets_the_canonical_decision_and_the_waypoint_cannot_be_skipped() {
    let (mut c, vip) = shop_with_web();
    let web_ip = c.get("shop", "web").ip;
    let base = format!("http://{vip}:{HTTP_PORT}");
    let client = c.get("shop", "client");
    until_reply(
        "web answers through the waypoint",
        || curl(client, &[&format!("{base}/")]),
        |r| r.status == 200,
    );

    // (a)
    c.apply(
        "ap-shop-waypoint-only.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: waypoint-only, namespace: shop}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/waypoint]}}]\n",
    );
    let client = c.get("shop", "client");
    let direct = format!("http://{web_ip}:{HTTP_PORT}/");
    until_reply(
        "ztunnel refuses the pod IP",
        || curl(client, &[&direct]),
        |r| r.status == 0,
    );
    // Through the waypoint.
    curl(client, &[&format!("{base}/")]).assert_status(200);

    // (b)
    c.apply(
        "ap-shop-no-admin.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: no-admin, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: web}]\n  action: DENY\n  rules:\n  - to: [{operation: {paths: [/admin, /admin/*]}}]\n  - to: [{operation: {hosts: [admin.example]}}]\n  - when: [{key: \"request.headers[x-user]\", values: [mallory]}]\n",
    );
    let client = c.get("shop", "client");
    let status = |path: &str, extra: &[&str]| {
        let url = format!("{base}{path}");
        let mut args = vec!["--path-as-is"];
        args.extend_from_slice(extra);
        args.push(&url);
        curl(client, &args).status
    };
    until("the DENY is in force", || status("/admin", &[]) == 403);
    assert_eq!(status("/public", &[]), 200);
    // (spelling, its headers, canonical path, canonical headers)
    let table: &[(&str, &[&str], &str, &[&str])] = &[
        ("//admin", &[], "/admin", &[]),
        ("/./admin", &[], "/admin", &[]),
        ("/x/../admin", &[], "/admin", &[]),
        ("/%61dmin", &[], "/admin", &[]),
        ("/%2Fadmin", &[], "/admin", &[]),
        ("/%5Cadmin", &[], "/admin", &[]),
        ("/admin;x", &[], "/admin", &[]),
        ("/admin;x/users", &[], "/admin/users", &[]),
        ("/public/..;/admin", &[], "/admin", &[]),
        ("/admin?x=1", &[], "/admin", &[]),
        ("/public//", &[], "/public/", &[]),
        (
            "/",
            &["-H", "Host: ADMIN.example"],
            "/",
            &["-H", "Host: admin.example"],
        ),
        (
            "/",
            &["-H", "Host: Admin.Example:80"],
            "/",
            &["-H", "Host: admin.example"],
        ),
        (
            "/",
            &["-H", "x-user: alice", "-H", "x-user: mallory"],
            "/",
            &["-H", "x-user: mallory"],
        ),
        (
            "/",
            &["-H", "x-user: mallory", "-H", "x-user: alice"],
            "/",
            &["-H", "x-user: mallory"],
        ),
    ];
    for (spelling, headers, canonical, canonical_headers) in table {
        let want = status(canonical, canonical_headers);
        assert_ne!(want, 0, "{canonical} got no answer");
        assert_eq!(
            status(spelling, headers),
            want,
            "{spelling} {headers:?} must be decided as {canonical} {canonical_headers:?}"
        );
    }
    // curl never sends a fragment, nor two Host headers: raw requests,
    // without a half-close (which an HTTP/1 server takes for a hang-up).
    let raw = |request: &str| {
        let script = format!(
            "exec 3<>/dev/tcp/{vip}/{HTTP_PORT}; printf '{request}' >&3; timeout 5 cat <&3"
        );
        let out = ns_output(&client.netns, "bash", &["-c", &script]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let request = |target: &str| {
        raw(&format!(
            "GET {target} HTTP/1.1\\r\\nHost: web\\r\\nConnection: close\\r\\n\\r\\n"
        ))
    };
    assert!(request("/public").starts_with("HTTP/1.1 200"));
    let fragment = request("/admin#x");
    assert!(fragment.starts_with("HTTP/1.1 4"), "{fragment}");
    assert!(!fragment.contains("hello from web"), "{fragment}");
    let two_hosts =
        raw("GET / HTTP/1.1\r\nHost: web\r\nHost: admin.example\r\nConnection: close\r\n\r\n");
    assert!(two_hosts.starts_with("HTTP/1.1 400"), "{two_hosts}");

    // The application receives the path the policy judged.
    let seen = curl(
        client,
        &[
            "--path-as-is",
            "-D",
            "-",
            &format!("{base}/public/..;/x//y;z"),
        ],
    )
    .body;
    assert!(
        seen.to_ascii_lowercase()
            .contains("x-echo-request: get /x/y\r\n"),
        "{seen}"
    );

    // Service accounts `a.b` and `axb`: an ALLOW for `a.b` admits only it.
    for (name, sa) in [("dotted", "a.b"), ("lookalike", "axb")] {
        let mut spec = PodSpec::new("shop", name, "node-a");
        spec.service_account = sa.into();
        c.pod(spec);
    }
    c.pod(PodSpec::new("shop", "vault", "node-b"));
    let vault = c.service("shop", "vault", "vault");
    c.apply(
        "ap-shop-vault.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: vault, namespace: shop}\nspec:\n  targetRefs: [{kind: Service, group: \"\", name: vault}]\n  action: ALLOW\n  rules:\n  - from: [{source: {principals: [cluster.local/ns/shop/sa/a.b]}}]\n",
    );
    let url = format!("http://{vault}:{HTTP_PORT}/");
    let (dotted, lookalike) = (c.get("shop", "dotted"), c.get("shop", "lookalike"));
    until_reply(
        "a.b reaches vault",
        || curl(dotted, &[&url]),
        |r| r.status == 200,
    );
    until_reply(
        "the ALLOW is in force",
        || curl(lookalike, &[&url]),
        |r| r.status == 403,
    );
    for _ in 0..3 {
        curl(dotted, &[&url]).assert_status(200);
        curl(lookalike, &[&url]).assert_status(403);
    }
}
