use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use mesh_model::waypoint::BoundService;
use serde_json::{Value, json};

use super::filter::PathEdit;
use super::*;

/// A Service with routes given as `[(name, spec)]`, in list order.
fn service(http: &[(&str, Value)], grpc: &[(&str, Value)]) -> BoundService {
    let named = |routes: &[(&str, Value)]| -> Vec<Value> {
        routes
            .iter()
            .map(|(name, spec)| json!({"namespace": "default", "name": name, "spec": spec}))
            .collect()
    };
    serde_json::from_value(json!({
        "namespace": "default",
        "name": "echo",
        "hostname": "echo.default.svc.cluster.local",
        "httpRoutes": named(http),
        "grpcRoutes": named(grpc),
    }))
    .expect("test service JSON")
}

fn table(http: &[(&str, Value)], grpc: &[(&str, Value)]) -> RouteTable {
    RouteTable::compile(&service(http, grpc), "cluster.local").expect("routes compile")
}

fn compile_err(http: &[(&str, Value)]) -> RouteError {
    RouteTable::compile(&service(http, &[]), "cluster.local").expect_err("must not compile")
}

/// A rule sending `matches` to a backend named `to`, so a test can tell
/// which rule took a request.
fn rule(matches: Value, to: &str) -> Value {
    json!({"matches": matches, "backendRefs": [{"name": to, "port": 80}]})
}

/// A request to `url` (`host/path?query`); `grpc` marks a gRPC request.
struct Req<'a> {
    method: Method,
    url: &'a str,
    headers: &'a [(&'a str, &'a str)],
    grpc: bool,
}

fn get(url: &str) -> Req<'_> {
    Req {
        method: Method::GET,
        url,
        headers: &[],
        grpc: false,
    }
}

/// Which backend the selected rule names, and the matched prefix.
fn route(table: &RouteTable, req: &Req<'_>) -> Option<(String, Option<String>)> {
    let (host, rest) = req
        .url
        .split_once('/')
        .map_or((req.url, "/"), |(h, _)| (h, &req.url[h.len()..]));
    let (path, query) = match rest.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (rest, None),
    };
    let mut headers = HeaderMap::new();
    for (n, v) in req.headers {
        headers.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    let r = RouteRequest {
        method: &req.method,
        host,
        path,
        query,
        headers: &headers,
        grpc: req.grpc,
        port: 80,
    };
    let s = table.select(&r)?;
    let name = s
        .rule
        .backends
        .first()
        .map_or("<none>".to_string(), |b| b.name.clone());
    Some((name, s.matched_prefix.map(String::from)))
}

fn to(table: &RouteTable, req: &Req<'_>) -> Option<String> {
    route(table, req).map(|(name, _)| name)
}

#[test]
fn path_precedence_exact_then_regex_then_longest_prefix() {
    // Written in the reverse of precedence, so list order cannot explain a pass.
    let t = table(
        &[(
            "paths",
            json!({"rules": [
                {"backendRefs": [{"name": "root", "port": 80}]},
                rule(json!([{"path": {"value": "/foo"}}]), "foo"),
                rule(json!([{"path": {"type": "PathPrefix", "value": "/foo/bar/"}}]), "foobar"),
                rule(json!([{"path": {"type": "RegularExpression", "value": "/fo+/baz"}}]), "regex"),
                rule(json!([{"path": {"type": "Exact", "value": "/foo"}}]), "exact"),
            ]}),
        )],
        &[],
    );
    for (url, want, prefix) in [
        ("echo/foo", "exact", None),
        ("echo/foo/", "foo", Some("/foo")),
        ("echo/foo/x", "foo", Some("/foo")),
        ("echo/foo/bar", "foobar", Some("/foo/bar/")),
        ("echo/foo/bar/x", "foobar", Some("/foo/bar/")),
        ("echo/foo/barx", "foo", Some("/foo")),
        ("echo/foo/baz", "regex", None),
        ("echo/fooo/baz", "regex", None),
        // A regex must match the whole path.
        ("echo/foo/baz/x", "foo", Some("/foo")),
        // Prefixes match whole segments.
        ("echo/foobar", "root", Some("/")),
        ("echo/", "root", Some("/")),
        ("echo/other?foo=1", "root", Some("/")),
    ] {
        let got = route(&t, &get(url));
        assert_eq!(
            got,
            Some((want.to_string(), prefix.map(String::from))),
            "{url}"
        );
    }
}

#[test]
fn no_match_is_none_and_no_routes_serves_no_port() {
    let t = table(
        &[(
            "r",
            json!({"rules": [rule(json!([{"path": {"value": "/foo/"}}]), "foo")]}),
        )],
        &[],
    );
    assert!(t.serves_port(80));
    assert_eq!(to(&t, &get("echo/foo")).as_deref(), Some("foo"));
    assert_eq!(to(&t, &get("echo/foobar")), None);
    assert_eq!(to(&t, &get("echo/")), None);

    let empty = table(&[], &[]);
    assert!(!empty.serves_port(80));
    assert_eq!(to(&empty, &get("echo/")), None);
    // A route without rules is attached: requests get a 404, not the Service.
    assert!(table(&[("r", json!({}))], &[]).serves_port(80));
}

#[test]
fn method_beats_headers_beat_query_params() {
    let t = table(
        &[(
            "r",
            json!({"rules": [
                rule(json!([{"path": {"value": "/"}}]), "default"),
                rule(json!([{"queryParams": [{"type": "RegularExpression", "name": "v", "value": "2|3"}]}]), "v23"),
                rule(json!([{"headers": [{"name": "X-Env", "value": "canary"}]}]), "canary"),
                rule(json!([{"method": "POST"}]), "post"),
                rule(json!([{"headers": [{"name": "x-a", "value": "1"}],
                             "queryParams": [{"name": "b", "value": "2"}]}]), "both"),
            ]}),
        )],
        &[],
    );
    let post = |url| Req {
        method: Method::POST,
        ..get(url)
    };
    let cases: &[(Req<'_>, &str)] = &[
        (
            Req {
                headers: &[("x-env", "canary")],
                ..get("echo/")
            },
            "canary",
        ),
        // Header names are case-insensitive, values are not.
        (
            Req {
                headers: &[("X-ENV", "canary")],
                ..get("echo/")
            },
            "canary",
        ),
        (
            Req {
                headers: &[("x-env", "Canary")],
                ..get("echo/")
            },
            "default",
        ),
        (
            Req {
                headers: &[("x-env", "canary")],
                ..post("echo/")
            },
            "post",
        ),
        (post("echo/?v=2"), "post"),
        (
            Req {
                headers: &[("x-env", "canary")],
                ..get("echo/?v=2")
            },
            "canary",
        ),
        (get("echo/?v=3"), "v23"),
        (get("echo/?a=1&v=%32"), "v23"),
        (get("echo/?v=23"), "default"),
        (get("echo/?v=4&v=3"), "default"),
        // Query parameter names are case-sensitive.
        (get("echo/?V=3"), "default"),
        // Conditions of one match entry all have to hold.
        (
            Req {
                headers: &[("x-a", "1")],
                ..get("echo/?b=2")
            },
            "both",
        ),
        (
            Req {
                headers: &[("x-a", "1")],
                ..get("echo/?b=3")
            },
            "default",
        ),
        (get("echo/?b=2"), "default"),
    ];
    for (req, want) in cases {
        assert_eq!(
            to(&t, req).as_deref(),
            Some(*want),
            "{} {} {:?}",
            req.method,
            req.url,
            req.headers
        );
    }
}

#[test]
fn header_regex_is_a_full_match_and_repeats_are_joined() {
    let t = table(
        &[(
            "r",
            json!({"rules": [
                rule(json!([{"headers": [{"type": "RegularExpression", "name": "x-v", "value": "ab"}]}]), "ab"),
                rule(json!([{"headers": [{"name": "x-v", "value": "1,2"}]}]), "joined"),
            ]}),
        )],
        &[],
    );
    let with = |headers| Req {
        headers,
        ..get("echo/")
    };
    assert_eq!(to(&t, &with(&[("x-v", "ab")])).as_deref(), Some("ab"));
    assert_eq!(to(&t, &with(&[("x-v", "xaby")])), None);
    assert_eq!(
        to(&t, &with(&[("x-v", "1"), ("x-v", "2")])).as_deref(),
        Some("joined")
    );
    assert_eq!(to(&t, &with(&[])), None);
}

#[test]
fn equal_matches_go_to_the_first_route_then_rule() {
    let t = table(
        &[
            (
                "a",
                json!({"rules": [rule(json!([{"path": {"value": "/x"}}]), "a1"), rule(json!([]), "a2")]}),
            ),
            (
                "b",
                json!({"rules": [rule(json!([{"path": {"value": "/x/"}}]), "b1")]}),
            ),
        ],
        &[],
    );
    assert_eq!(to(&t, &get("echo/x/y")).as_deref(), Some("a1"));
    assert_eq!(to(&t, &get("echo/z")).as_deref(), Some("a2"));
    let s = t.select(&RouteRequest {
        method: &Method::GET,
        host: "echo",
        path: "/x",
        query: None,
        headers: &HeaderMap::new(),
        grpc: false,
        port: 80,
    });
    assert_eq!(s.map(|s| s.rule.route.as_str()), Some("default/a"));
}

#[test]
fn hostnames_limit_a_route() {
    let t = table(
        &[
            (
                "wild",
                json!({"hostnames": ["*.Example.com"], "rules": [rule(json!([]), "wild")]}),
            ),
            (
                "svc",
                json!({"hostnames": ["echo.default.svc.cluster.local"], "rules": [rule(json!([]), "svc")]}),
            ),
        ],
        &[],
    );
    for (host, want) in [
        ("a.example.com", Some("wild")),
        ("a.b.EXAMPLE.com:8080", Some("wild")),
        ("example.com", None),
        ("aexample.com", None),
        ("echo.default.svc.cluster.local", Some("svc")),
        ("Echo.Default.svc.cluster.local.:80", Some("svc")),
        ("echo", None),
        ("[::1]:80", None),
    ] {
        let url = format!("{host}/");
        assert_eq!(to(&t, &get(&url)).as_deref(), want, "{host}");
    }
    assert!(matches!(
        RouteTable::compile(
            &service(&[("r", json!({"hostnames": ["*"]}))], &[]),
            "cluster.local"
        ),
        Err(RouteError::Unsupported { .. })
    ));
}

#[test]
fn grpc_routes_by_service_and_method_first_for_grpc_requests() {
    let method = |type_: &str, service: Option<&str>, method: Option<&str>| json!([{"method": {"type": type_, "service": service, "method": method}}]);
    let t = table(
        &[(
            "http",
            json!({"rules": [
                rule(json!([{"path": {"type": "Exact", "value": "/pkg.Echo/Say"}}]), "http-exact"),
                rule(json!([]), "http"),
            ]}),
        )],
        &[(
            "grpc",
            json!({"rules": [
                rule(json!([{"headers": [{"name": "x-env", "value": "canary"}]}]), "hdr"),
                rule(method("RegularExpression", Some(r"pkg\..*"), None), "regex"),
                rule(method("Exact", None, Some("Ping")), "ping"),
                rule(method("Exact", Some("pkg.Echo"), None), "echo"),
                rule(method("Exact", Some("pkg.Echo"), Some("Say")), "say"),
            ]}),
        )],
    );
    let grpc = |url| Req {
        method: Method::POST,
        grpc: true,
        ..get(url)
    };
    let cases: &[(Req<'_>, &str)] = &[
        (grpc("echo/pkg.Echo/Say"), "say"),
        (grpc("echo/pkg.Echo/Other"), "echo"),
        (grpc("echo/pkg.Other/Ping"), "ping"),
        (grpc("echo/pkg.Other/X"), "regex"),
        (
            Req {
                headers: &[("x-env", "canary")],
                ..grpc("echo/pkg.Other/X")
            },
            "regex",
        ),
        (
            Req {
                headers: &[("x-env", "canary")],
                ..grpc("echo/zzz.Other/X")
            },
            "hdr",
        ),
        // No GRPCRoute rule takes it: HTTPRoutes are next.
        (grpc("echo/zzz.Other/X"), "http"),
        (grpc("echo/pkg.Echo"), "http"),
        // Not gRPC: GRPCRoutes are not considered at all.
        (
            Req {
                grpc: false,
                ..grpc("echo/pkg.Echo/Say")
            },
            "http-exact",
        ),
        (
            Req {
                grpc: false,
                headers: &[("x-env", "canary")],
                ..grpc("echo/zzz.Other/X")
            },
            "http",
        ),
    ];
    for (req, want) in cases {
        assert_eq!(
            to(&t, req).as_deref(),
            Some(*want),
            "grpc={} {} {:?}",
            req.grpc,
            req.url,
            req.headers
        );
    }
    let s = route(&t, &grpc("echo/pkg.Echo/Say")).unwrap();
    assert_eq!(s.1, None, "gRPC matches have no prefix");
}

fn backends(weights: &[Option<u32>]) -> Rule {
    let refs: Vec<Value> = weights
        .iter()
        .enumerate()
        .map(|(i, w)| json!({"name": format!("b{i}"), "port": 80, "weight": w}))
        .collect();
    let t = table(&[("r", json!({"rules": [{"backendRefs": refs}]}))], &[]);
    t.rules[0].clone()
}

/// How often each backend is picked over `n` rolls spread evenly over `u32`.
fn sweep(rule: &Rule, n: u64) -> Vec<u64> {
    let mut counts = vec![0; rule.backends.len()];
    for i in 0..n {
        let roll = u32::try_from(i * (1u64 << 32) / n).unwrap();
        let b = rule.pick_backend(roll).expect("some backend has weight");
        counts[rule.backends.iter().position(|x| x == b).unwrap()] += 1;
    }
    counts
}

#[test]
fn weighted_pick_follows_the_weights() {
    let counts = sweep(&backends(&[Some(90), Some(10)]), 10_000);
    assert!((8_900..=9_100).contains(&counts[0]), "{counts:?}");
    assert!((900..=1_100).contains(&counts[1]), "{counts:?}");

    // Absent weights are 1 each.
    let counts = sweep(&backends(&[None, None, None, None]), 10_000);
    assert!(
        counts.iter().all(|c| (2_400..=2_600).contains(c)),
        "{counts:?}"
    );
}

#[test]
fn each_backend_owns_a_contiguous_share_of_the_rolls() {
    // 90/10: the first backend owns rolls below 0.9 * 2^32, the second the rest.
    let rule = backends(&[Some(90), Some(10)]);
    let edge = u32::try_from((1u64 << 32) * 9 / 10).unwrap();
    for (roll, want) in [
        (0, "b0"),
        (edge - 1, "b0"),
        (edge + 1, "b1"),
        (u32::MAX, "b1"),
    ] {
        let got = rule.pick_backend(roll).map(|b| b.name.as_str());
        assert_eq!(got, Some(want), "roll {roll}");
    }
}

#[test]
fn weight_zero_is_never_picked() {
    let rule = backends(&[Some(0), Some(1), Some(0), Some(3), Some(0)]);
    let counts = sweep(&rule, 10_000);
    assert_eq!((counts[0], counts[2], counts[4]), (0, 0, 0), "{counts:?}");
    assert!((2_400..=2_600).contains(&counts[1]), "{counts:?}");
    for roll in [0, 1, u32::MAX / 2, u32::MAX - 1, u32::MAX] {
        assert!(
            rule.pick_backend(roll).is_some_and(|b| b.weight > 0),
            "{roll}"
        );
    }
    assert_eq!(backends(&[Some(0), Some(0)]).pick_backend(7), None);
    // A rule without backendRefs keeps no backends: the caller answers 500.
    let none = backends(&[]);
    assert!(none.backends.is_empty());
    assert_eq!(none.pick_backend(0), None);
}

#[test]
fn backend_hosts_default_to_the_route_namespace() {
    let t = RouteTable::compile(
        &service(
            &[(
                "r",
                json!({"rules": [{"backendRefs": [
                    {"name": "a", "port": 8080},
                    {"name": "b", "namespace": "other", "port": 9090, "weight": 5},
                ]}]}),
            )],
            &[],
        ),
        "corp.internal",
    )
    .unwrap();
    let hosts: Vec<_> = t.rules[0]
        .backends
        .iter()
        .map(|b| (b.namespace.as_str(), b.hostname.as_str(), b.port, b.weight))
        .collect();
    assert_eq!(
        hosts,
        [
            ("default", "a.default.svc.corp.internal", 8080, 1),
            ("other", "b.other.svc.corp.internal", 9090, 5)
        ]
    );
}

/// The first filter of the only rule of a route with `filters`.
fn filter(filters: Value) -> Filter {
    let t = table(&[("r", json!({"rules": [{"filters": filters}]}))], &[]);
    t.rules[0].filters[0].clone()
}

fn redirect(spec: Value) -> Redirect {
    match filter(json!([{"type": "RequestRedirect", "requestRedirect": spec}])) {
        Filter::Redirect(r) => r,
        other => panic!("not a redirect: {other:?}"),
    }
}

#[test]
fn redirect_locations() {
    let full = |p: &str| json!({"type": "ReplaceFullPath", "replaceFullPath": p});
    let prefix = |p: &str| json!({"type": "ReplacePrefixMatch", "replacePrefixMatch": p});
    // (filter, request scheme, port, path-and-query, matched prefix, status, Location)
    let cases = [
        (
            json!({}),
            "http",
            Some(80),
            "/a?b=1",
            None,
            302,
            "http://echo/a?b=1",
        ),
        (json!({}), "http", None, "/a", None, 302, "http://echo/a"),
        (
            json!({}),
            "http",
            Some(8080),
            "/a",
            None,
            302,
            "http://echo:8080/a",
        ),
        (
            json!({"scheme": "https"}),
            "http",
            Some(80),
            "/a?b=1",
            None,
            302,
            "https://echo/a?b=1",
        ),
        // A new scheme without a port goes to that scheme's port, not the request's.
        (
            json!({"scheme": "http"}),
            "https",
            Some(8443),
            "/a",
            None,
            302,
            "http://echo/a",
        ),
        (
            json!({"scheme": "https", "port": 443}),
            "http",
            Some(80),
            "/a",
            None,
            302,
            "https://echo/a",
        ),
        (
            json!({"scheme": "https", "port": 8443}),
            "http",
            Some(80),
            "/",
            None,
            302,
            "https://echo:8443/",
        ),
        (
            json!({"port": 8443}),
            "http",
            None,
            "/a",
            None,
            302,
            "http://echo:8443/a",
        ),
        (
            json!({"port": 80}),
            "http",
            Some(9000),
            "/a",
            None,
            302,
            "http://echo/a",
        ),
        (
            json!({"hostname": "new.example", "statusCode": 301}),
            "http",
            Some(8080),
            "/a",
            None,
            301,
            "http://new.example:8080/a",
        ),
        (
            json!({"path": full("/new")}),
            "http",
            None,
            "/old/x?q=1",
            Some("/old"),
            302,
            "http://echo/new?q=1",
        ),
        (
            json!({"path": prefix("/new")}),
            "http",
            None,
            "/old/x?q=1",
            Some("/old"),
            302,
            "http://echo/new/x?q=1",
        ),
        (
            json!({"path": prefix("/")}),
            "http",
            None,
            "/old/x",
            Some("/old"),
            302,
            "http://echo/x",
        ),
        (
            json!({"path": prefix("/")}),
            "http",
            None,
            "/old",
            Some("/old/"),
            302,
            "http://echo/",
        ),
    ];
    for (spec, scheme, port, pq, matched, status, want) in cases {
        let r = redirect(spec.clone());
        let got = r.location(scheme, "echo", port, pq, matched);
        assert_eq!(
            got,
            (StatusCode::from_u16(status).unwrap(), want.to_string()),
            "{spec} {scheme} {port:?} {pq}"
        );
    }
    assert_eq!(
        redirect(json!({}))
            .location("http", "::1", Some(8080), "/", None)
            .1,
        "http://[::1]:8080/"
    );
}

#[test]
fn redirect_through_select_uses_the_matched_prefix() {
    let t = table(
        &[(
            "r",
            json!({"rules": [{
                "matches": [{"path": {"value": "/old/"}}],
                "filters": [{"type": "RequestRedirect", "requestRedirect":
                    {"path": {"type": "ReplacePrefixMatch", "replacePrefixMatch": "/new"}}}],
            }]}),
        )],
        &[],
    );
    let req = RouteRequest {
        method: &Method::GET,
        host: "echo",
        path: "/old/x/y",
        query: Some("z=1"),
        headers: &HeaderMap::new(),
        grpc: false,
        port: 80,
    };
    let s = t.select(&req).unwrap();
    let Filter::Redirect(r) = &s.rule.filters[0] else {
        panic!("{:?}", s.rule.filters)
    };
    let (status, location) = r.location("http", "echo", Some(80), "/old/x/y?z=1", s.matched_prefix);
    assert_eq!(
        (status, location.as_str()),
        (StatusCode::FOUND, "http://echo/new/x/y?z=1")
    );
}

#[test]
fn rewrite_prefix_follows_the_gateway_api_table() {
    // (request path, matched prefix, replacement, result), from the
    // HTTPPathModifier documentation.
    for (path, matched, replacement, want) in [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/old/x", "/old", "/", "/x"),
        ("/a/b", "/", "/api", "/api/a/b"),
    ] {
        let rw = Rewrite {
            hostname: None,
            path: Some(PathEdit::Prefix(replacement.into())),
        };
        assert_eq!(
            rw.apply(path, None, Some(matched)),
            (None, want.to_string()),
            "{path} {matched} {replacement}"
        );
    }
}

#[test]
fn rewrite_host_and_full_path_keep_the_query() {
    let rw = match filter(json!([{"type": "URLRewrite", "urlRewrite": {
        "hostname": "other.example",
        "path": {"type": "ReplaceFullPath", "replaceFullPath": "/v2/all"},
    }}])) {
        Filter::Rewrite(r) => r,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        rw.apply("/v1/x", Some("a=1&b"), Some("/v1")),
        (Some("other.example".into()), "/v2/all?a=1&b".into())
    );
    let host_only = Rewrite {
        hostname: Some("h".into()),
        path: None,
    };
    assert_eq!(
        host_only.apply("/p", None, None),
        (Some("h".into()), "/p".into())
    );
    // No prefix matched (an Exact match): the replacement goes in front.
    let prefix = Rewrite {
        hostname: None,
        path: Some(PathEdit::Prefix("/api".into())),
    };
    assert_eq!(
        prefix.apply("/x", Some("q"), None),
        (None, "/api/x?q".into())
    );
}

#[test]
fn header_edit_sets_adds_and_removes() {
    let Filter::RequestHeaders(edit) = filter(
        json!([{"type": "RequestHeaderModifier", "requestHeaderModifier": {
            "set": [{"name": "X-Set", "value": "new"}],
            "add": [{"name": "X-Add", "value": "two"}],
            "remove": ["X-Gone"],
        }}]),
    ) else {
        panic!("not a request header edit")
    };
    let mut headers = HeaderMap::new();
    headers.append("x-set", HeaderValue::from_static("old1"));
    headers.append("x-set", HeaderValue::from_static("old2"));
    headers.append("x-add", HeaderValue::from_static("one"));
    headers.append("x-gone", HeaderValue::from_static("bye"));
    headers.append("x-keep", HeaderValue::from_static("k"));
    edit.apply(&mut headers);
    let all = |n: &str| {
        headers
            .get_all(n)
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(all("x-set"), ["new"]);
    assert_eq!(all("x-add"), ["one", "two"]);
    assert!(all("x-gone").is_empty());
    assert_eq!(all("x-keep"), ["k"]);

    let response = filter(
        json!([{"type": "ResponseHeaderModifier", "responseHeaderModifier": {"remove": ["a"]}}]),
    );
    assert!(matches!(response, Filter::ResponseHeaders(_)));
}

#[test]
fn bad_headers_regexes_and_durations_are_errors_not_panics() {
    let bad_name = json!({"rules": [{"filters": [{"type": "RequestHeaderModifier",
        "requestHeaderModifier": {"set": [{"name": "bad name", "value": "v"}]}}]}]});
    assert!(matches!(
        compile_err(&[("r", bad_name)]),
        RouteError::Header { what: "name", .. }
    ));
    let bad_value = json!({"rules": [{"filters": [{"type": "RequestHeaderModifier",
        "requestHeaderModifier": {"add": [{"name": "x", "value": "a\nb"}]}}]}]});
    assert!(matches!(
        compile_err(&[("r", bad_value)]),
        RouteError::Header { what: "value", .. }
    ));
    let bad_regex =
        json!({"rules": [{"matches": [{"path": {"type": "RegularExpression", "value": "(("}}]}]});
    let err = compile_err(&[("r", bad_regex)]);
    assert!(matches!(err, RouteError::Regex { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("HTTPRoute default/r spec.rules[0].matches[0].path.value:"),
        "{err}"
    );
    let bad_duration = json!({"rules": [{"timeouts": {"request": "1d"}}]});
    assert!(matches!(
        compile_err(&[("r", bad_duration)]),
        RouteError::Duration { .. }
    ));
    let bad_filter = json!({"rules": [{"filters": [{"type": "CORS"}]}]});
    assert!(matches!(
        compile_err(&[("r", bad_filter)]),
        RouteError::Unsupported { .. }
    ));
}

#[test]
fn mirror_fractions() {
    let mirror = |extra: Value| {
        let mut spec = json!({"backendRef": {"name": "shadow", "port": 80}});
        spec.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        filter(json!([{"type": "RequestMirror", "requestMirror": spec}]))
    };
    for (extra, num, den) in [
        (json!({}), 100, 100),
        (json!({"percent": 25}), 25, 100),
        (json!({"percent": 0}), 0, 100),
        (
            json!({"fraction": {"numerator": 1, "denominator": 3}}),
            1,
            3,
        ),
        (json!({"fraction": {"numerator": 5}}), 5, 100),
    ] {
        let f = mirror(extra.clone());
        let Filter::Mirror {
            backend,
            numerator,
            denominator,
        } = &f
        else {
            panic!("{f:?}")
        };
        assert_eq!((*numerator, *denominator), (num, den), "{extra}");
        assert_eq!(backend.hostname, "shadow.default.svc.cluster.local");
        let hits = (0..10_000u64)
            .filter(|i| f.mirrors(u32::try_from(i * (1 << 32) / 10_000).unwrap()))
            .count();
        let want = 10_000 * u64::from(num) / u64::from(den);
        assert!(
            hits.abs_diff(want as usize) <= 10,
            "{extra}: {hits} of 10000, want {want}"
        );
    }
    assert!(mirror(json!({})).mirrors(u32::MAX));
    assert!(!mirror(json!({"percent": 0})).mirrors(0));
    assert!(!Filter::RequestHeaders(HeaderEdit::default()).mirrors(0));
    let too_much = json!({"rules": [{"filters": [{"type": "RequestMirror", "requestMirror":
        {"backendRef": {"name": "s", "port": 80}, "fraction": {"numerator": 4, "denominator": 3}}}]}]});
    assert!(matches!(
        compile_err(&[("r", too_much)]),
        RouteError::Unsupported { .. }
    ));
}

#[test]
fn timeouts_and_retry_are_parsed() {
    let t = table(
        &[(
            "r",
            json!({"rules": [
                {"timeouts": {"request": "10s", "backendRequest": "1s500ms"},
                 "retry": {"codes": [503, 504], "attempts": 3, "backoff": "100ms"}},
                {"timeouts": {"request": "0s"}, "retry": {}},
                {},
            ]}),
        )],
        &[("g", json!({"rules": [{}]}))],
    );
    let r = &t.rules[0];
    assert_eq!(r.request_timeout, Some(Duration::from_secs(10)));
    assert_eq!(r.backend_request_timeout, Some(Duration::from_millis(1500)));
    assert_eq!(
        r.retry,
        Some(Retry {
            codes: vec![503, 504],
            attempts: 3,
            backoff: Some(Duration::from_millis(100))
        })
    );
    let r = &t.rules[1];
    assert_eq!(
        (r.request_timeout, r.backend_request_timeout),
        (None, None),
        "0s disables the timeout"
    );
    assert_eq!(
        r.retry,
        Some(Retry {
            codes: vec![],
            attempts: 1,
            backoff: None
        })
    );
    assert_eq!(
        (t.rules[2].request_timeout, &t.rules[2].retry),
        (None, &None)
    );
    let g = &t.rules[3];
    assert_eq!(
        (g.request_timeout, g.backend_request_timeout, &g.retry),
        (None, None, &None)
    );
}

#[test]
fn a_parent_ref_with_a_port_attaches_the_route_to_that_port_only() {
    let parent =
        |port: Value| json!({"group": "", "kind": "Service", "name": "echo", "port": port});
    let t = table(
        &[(
            "http-only",
            json!({"parentRefs": [parent(json!(80))], "rules": [rule(json!([]), "on-80")]}),
        )],
        &[],
    );
    assert!(t.serves_port(80));
    assert!(!t.serves_port(8080), "no route names 8080: plain balancing");
    let headers = HeaderMap::new();
    let req = |port| RouteRequest {
        method: &Method::GET,
        host: "echo",
        path: "/",
        query: None,
        headers: &headers,
        grpc: false,
        port,
    };
    let on = |port| {
        let r = req(port);
        t.select(&r).map(|s| s.rule.backends[0].name.clone())
    };
    assert_eq!(on(80).as_deref(), Some("on-80"));
    assert_eq!(on(8080), None);

    // Without a port the parentRef takes every port.
    let all = table(
        &[(
            "all",
            json!({"parentRefs": [parent(Value::Null)], "rules": [rule(json!([]), "any")]}),
        )],
        &[],
    );
    assert!(all.serves_port(80) && all.serves_port(8080));
}
