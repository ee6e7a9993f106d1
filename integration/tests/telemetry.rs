//! Observability in the network-namespace cluster: after real traffic
//! between captured pods, the ztunnels' metrics (15020), access logs,
//! readiness (15021) and admin endpoints (15000) say what happened, in
//! Istio's names. Needs root; `cargo xtask e2e` runs it.

use std::collections::BTreeMap;

use integration::cluster::{Cluster, HTTP_PORT, PodSpec};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
const STATS: u16 = 15020;
const READINESS: u16 = 15021;
const ADMIN: u16 = 15000;

/// One series: its name and labels.
#[derive(Debug)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Prometheus text → series (values of our labels hold no `"` or `,`).
fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (head, value) = line.rsplit_once(' ').expect("a sample line");
        let (name, labels) = match head.split_once('{') {
            Some((n, rest)) => (n, rest.trim_end_matches('}')),
            None => (head, ""),
        };
        let labels = labels
            .split("\",")
            .filter(|kv| !kv.is_empty())
            .map(|kv| {
                let (k, v) = kv.split_once("=\"").expect("label=\"value\"");
                (k.to_string(), v.trim_end_matches('"').to_string())
            })
            .collect();
        out.push(Series {
            name: name.to_string(),
            labels,
            value: value.parse().expect("a number"),
        });
    }
    out
}

/// The sum of `name` over the series that carry every label of `want`.
fn sum(series: &[Series], name: &str, want: &[(&str, &str)]) -> f64 {
    series
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            want.iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

fn scrape(c: &Cluster, node: &str) -> (String, Vec<Series>) {
    let (status, body) = c.ztunnel_http(node, "GET", STATS, "/metrics");
    assert_eq!(status, 200, "GET /metrics on {node}: {body}");
    let series = parse(&body);
    (body, series)
}

/// The labels of connections from `client` (node-a) to `server` as each
/// reporter sees them.
fn client_to(server: &str) -> Vec<(&'static str, String)> {
    vec![
        ("source_workload", "client".into()),
        ("source_canonical_service", "client".into()),
        ("source_canonical_revision", "latest".into()),
        ("source_workload_namespace", "apps".into()),
        (
            "source_principal",
            "spiffe://cluster.local/ns/apps/sa/client".into(),
        ),
        ("source_cluster", "Kubernetes".into()),
        ("destination_workload", server.into()),
        ("destination_workload_namespace", "apps".into()),
        (
            "destination_principal",
            format!("spiffe://cluster.local/ns/apps/sa/{server}"),
        ),
        ("request_protocol", "tcp".into()),
        ("connection_security_policy", "mutual_tls".into()),
    ]
}

fn with<'a>(
    base: &'a [(&'static str, String)],
    extra: &[(&'static str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    base.iter()
        .map(|(k, v)| (*k, v.as_str()))
        .chain(extra.iter().copied())
        .collect()
}

#[test]
fn ztunnel_metrics_and_access_logs_describe_the_traffic_in_istios_terms() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("apps", &[AMBIENT]);
    c.pod(PodSpec::new("apps", "client", "node-a"));
    c.pod(PodSpec::new("apps", "remote", "node-b"));
    c.pod(PodSpec::new("apps", "denied", "node-b"));
    c.write_manifest(
        "deny.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-denied, namespace: apps}\nspec:\n  selector: {matchLabels: {app: denied}}\n  action: DENY\n  rules: [{}]\n",
    );
    let vip = c.service("apps", "remote", "remote");
    for name in ["client", "remote", "denied"] {
        let pod = c.get("apps", name);
        c.wait_for(&format!("apps/{name} is captured"), |c| c.captured(pod));
    }
    let client = c.get("apps", "client");
    let remote_url = format!("http://{vip}:{HTTP_PORT}/");
    let denied_url = format!("http://{}:{HTTP_PORT}/", c.get("apps", "denied").ip);
    // Until xDS and the CA have caught up, the client's first connections
    // may pass through in plaintext or be refused: wait for mTLS.
    c.wait_for("the client reaches remote over HBONE", |c| {
        let (_, series) = scrape(c, "node-b");
        c.curl(client, &remote_url).is_ok()
            && sum(
                &series,
                "istio_tcp_connections_closed_total",
                &[
                    ("destination_workload", "remote"),
                    ("connection_security_policy", "mutual_tls"),
                    ("response_flags", "-"),
                ],
            ) > 0.0
    });
    c.wait_for("node-b denies by policy", |c| {
        let refused = c.curl(client, &denied_url).is_err();
        let (_, series) = scrape(c, "node-b");
        refused
            && sum(
                &series,
                "istio_tcp_connections_failed_total",
                &[
                    ("destination_workload", "denied"),
                    ("response_flags", "DENY"),
                ],
            ) > 0.0
    });

    // Readiness, as the DaemonSet's probe asks for it.
    for node in ["node-a", "node-b"] {
        assert_eq!(
            c.ztunnel_http(node, "GET", READINESS, "/healthz/ready"),
            (200, "ready\n".into()),
            "{node}"
        );
    }
    // Access logs at debug for the target `access`, changed while running
    // with `ambientctl zc log` (istioctl's `target:level` form).
    let zc_log = |c: &Cluster, args: &[&str]| {
        let out = std::process::Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", c.node("node-b").netns))
            .arg(c.binary("ambientctl"))
            .args(["ztunnel-config", "log", "--admin", "127.0.0.1:15000"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        zc_log(&c, &["--level", "info,access:debug"]),
        "current log level is info,access=debug\n"
    );
    assert_eq!(zc_log(&c, &[]), "current log level is info,access=debug\n");
    let (status, body) = c.ztunnel_http("node-b", "POST", ADMIN, "/logging?level=nonsense=%3D");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid log filter"), "{body}");

    // Traffic counted from here: N connections through the Service, one
    // to the denied pod.
    let (_, before_a) = scrape(&c, "node-a");
    let (_, before_b) = scrape(&c, "node-b");
    const N: usize = 4;
    let mut response_bytes = 0;
    for _ in 0..N {
        let body = c.curl(client, &remote_url).expect("curl to the service");
        response_bytes += body.len();
    }
    assert!(
        c.curl(client, &denied_url).is_err(),
        "the denied pod answered"
    );

    let to_remote = client_to("remote");
    let via_service = [
        ("destination_service", "remote.apps.svc.cluster.local"),
        ("destination_service_name", "remote"),
        ("destination_service_namespace", "apps"),
    ];
    let mut last = (String::new(), String::new());
    c.wait_for("both ztunnels counted every connection", |c| {
        let (text_a, after_a) = scrape(c, "node-a");
        let (text_b, after_b) = scrape(c, "node-b");
        let delta = |before: &[Series], after: &[Series], name: &str, want: &[(&str, &str)]| {
            sum(after, name, want) - sum(before, name, want)
        };
        let source = with(&to_remote, &[("reporter", "source")]);
        let source: Vec<(&str, &str)> = source.into_iter().chain(via_service).collect();
        let destination = with(&to_remote, &[("reporter", "destination")]);
        let destination: Vec<(&str, &str)> = destination.into_iter().chain(via_service).collect();
        last = (text_a.clone(), text_b.clone());
        let closed = |before, after, labels: &[(&str, &str)]| {
            delta(before, after, "istio_tcp_connections_closed_total", labels)
        };
        if closed(&before_a, &after_a, &source) < N as f64
            || closed(&before_b, &after_b, &destination) < N as f64
        {
            return false;
        }
        for (what, before, after, labels) in [
            ("source", &before_a, &after_a, &source),
            ("destination", &before_b, &after_b, &destination),
        ] {
            for name in [
                "istio_tcp_connections_opened_total",
                "istio_tcp_connections_closed_total",
            ] {
                let mut ok = labels.clone();
                ok.push(("response_flags", "-"));
                assert_eq!(delta(before, after, name, &ok), N as f64, "{what} {name}");
            }
            // The request and the response, counted alike by both ends.
            let sent = delta(before, after, "istio_tcp_sent_bytes_total", labels);
            assert!(
                sent > response_bytes as f64,
                "{what}: {sent} response bytes for {response_bytes} of bodies"
            );
            assert!(delta(before, after, "istio_tcp_received_bytes_total", labels) > 0.0);
        }
        assert_eq!(
            delta(&before_a, &after_a, "istio_tcp_sent_bytes_total", &source),
            delta(
                &before_b,
                &after_b,
                "istio_tcp_sent_bytes_total",
                &destination
            ),
            "both ends count the same response bytes"
        );
        assert_eq!(
            delta(
                &before_a,
                &after_a,
                "istio_tcp_received_bytes_total",
                &source
            ),
            delta(
                &before_b,
                &after_b,
                "istio_tcp_received_bytes_total",
                &destination
            ),
            "both ends count the same request bytes"
        );
        // The denial: DENY at the destination, a failed CONNECT at the source.
        let denied = client_to("denied");
        let refused = with(
            &denied,
            &[("reporter", "destination"), ("response_flags", "DENY")],
        );
        assert_eq!(
            delta(
                &before_b,
                &after_b,
                "istio_tcp_connections_failed_total",
                &refused
            ),
            1.0,
            "DENY at node-b"
        );
        let failed = with(
            &denied,
            &[("reporter", "source"), ("response_flags", "CONNECT")],
        );
        assert_eq!(
            delta(
                &before_a,
                &after_a,
                "istio_tcp_connections_failed_total",
                &failed
            ),
            1.0,
            "CONNECT at node-a"
        );
        true
    });
    let (text_a, text_b) = last;
    assert!(text_a.contains("# TYPE istio_tcp_connections_opened_total counter\n"));
    assert!(text_b.contains("istio_build{component=\"ztunnel\",tag=\""));
    // xDS and the in-pod proxies: node-b serves remote and denied.
    let b = parse(&text_b);
    for url in [
        "type.googleapis.com/istio.workload.Address",
        "type.googleapis.com/istio.security.Authorization",
    ] {
        assert!(
            sum(&b, "istio_xds_message_total", &[("url", url)]) >= 1.0,
            "{url}"
        );
        assert!(
            sum(&b, "istio_xds_message_bytes_total", &[("url", url)]) > 0.0,
            "{url}"
        );
    }
    // The node agent beside it counts the same two pods, captured.
    let (status, agent) = c.ztunnel_http("node-b", "GET", 15014, "/metrics");
    assert_eq!(status, 200, "{agent}");
    let agent = parse(&agent);
    assert_eq!(sum(&agent, "istio_cni_pods", &[("captured", "true")]), 2.0);
    assert_eq!(sum(&agent, "istio_cni_pods", &[("captured", "false")]), 0.0);
    assert_eq!(sum(&agent, "istio_cni_ztunnels_connected", &[]), 1.0);
    assert_eq!(sum(&agent, "istio_cni_redirection_ready", &[]), 1.0);
    // Its certificates, by state and time left (24 h lifetimes).
    assert_eq!(
        sum(&b, "istio_workload_certs", &[("state", "Available")]),
        2.0
    );
    let left = sum(
        &b,
        "istio_workload_cert_expiry_seconds",
        &[("identity", "spiffe://cluster.local/ns/apps/sa/remote")],
    );
    assert!(left > 23.0 * 3600.0 && left <= 24.0 * 3600.0, "{left}");
    assert_eq!(sum(&b, "workload_manager_active_proxy_count", &[]), 2.0);
    assert_eq!(sum(&b, "workload_manager_pending_proxy_count", &[]), 0.0);
    assert_eq!(sum(&b, "workload_manager_proxies_started_total", &[]), 2.0);
    assert_eq!(sum(&b, "workload_manager_proxies_stopped_total", &[]), 0.0);
    // A scraper that asks for OpenMetrics gets it.
    let out = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/var/run/netns/{}", c.node("node-a").netns),
            "curl",
            "-sS",
            "-H",
            "Accept: application/openmetrics-text",
            &format!("http://127.0.0.1:{STATS}/stats/prometheus"),
        ])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).ends_with("# EOF\n"));

    // One access line per connection, with Istio's fields.
    let logs = c.node_logs("node-b");
    let complete: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("connection complete") && l.contains("dst.workload=\"remote\""))
        .collect();
    assert!(complete.len() > N, "{logs}");
    for field in [
        "src.identity=\"spiffe://cluster.local/ns/apps/sa/client\"",
        "src.workload=\"client\"",
        "src.namespace=\"apps\"",
        "dst.identity=\"spiffe://cluster.local/ns/apps/sa/remote\"",
        "dst.service=\"remote.apps.svc.cluster.local\"",
        "direction=\"inbound\"",
        "bytes_sent=",
        "bytes_recv=",
        "duration=",
    ] {
        assert!(
            complete[complete.len() - 1].contains(field),
            "{field} in {}",
            complete[complete.len() - 1]
        );
    }
    assert!(
        logs.contains("connection opened"),
        "debug lines after /logging"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("WARN access: connection failed")
                && l.contains("dst.workload=\"denied\"")
                && l.contains("response_flags=\"DENY\"")),
        "{logs}"
    );
    assert_eq!(zc_log(&c, &["--reset"]), "current log level is info\n");
    assert_eq!(c.ztunnel_http("node-b", "GET", ADMIN, "/logging").0, 405);

    // No endpoint gives away key material.
    for node in ["node-a", "node-b"] {
        for (port, path) in [(ADMIN, "/config_dump"), (STATS, "/metrics"), (ADMIN, "/")] {
            let (status, body) = c.ztunnel_http(node, "GET", port, path);
            assert_eq!(status, 200, "{node} {path}");
            assert!(
                !body.contains("PRIVATE KEY"),
                "{node} {path} holds a private key"
            );
        }
    }
}

/// istiod-lite's `/metrics` (15014, on the underlay).
fn scrape_istiod(c: &Cluster) -> Vec<Series> {
    let url = format!("http://{}:15014/metrics", integration::cluster::LAN_IP);
    let out =
        integration::cluster::host::ns_output(&c.lan, "curl", &["-sS", "--max-time", "5", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("# TYPE pilot_xds gauge"), "{text}");
    assert!(!text.contains("PRIVATE KEY"));
    parse(&text)
}

#[test]
fn istiod_metrics_count_proxies_pushes_certificates_and_config_errors() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("apps", &[AMBIENT]);
    c.pod(PodSpec::new("apps", "client", "node-a"));
    let client = c.get("apps", "client");
    c.wait_for("apps/client is captured", |c| c.captured(client));
    // The pod's arrival is a change pushed to both ztunnels; its
    // certificate is asked for once its ztunnel serves it.
    c.wait_for("the pod is pushed and its certificate issued", |c| {
        let m = scrape_istiod(c);
        sum(&m, "pilot_proxy_convergence_time_count", &[]) >= 2.0
            && sum(&m, "citadel_server_success_cert_issuance_count_total", &[]) >= 1.0
    });
    let m = scrape_istiod(&c);
    assert_eq!(sum(&m, "pilot_xds", &[]), 2.0, "one stream per ztunnel");
    assert!(sum(&m, "pilot_xds_pushes_total", &[("type", "address")]) >= 4.0);
    assert!(sum(&m, "pilot_xds_pushes_total", &[("type", "authorization")]) >= 2.0);
    assert_eq!(sum(&m, "pilot_total_xds_rejects_total", &[]), 0.0);
    assert!(
        sum(&m, "pilot_proxy_convergence_time_count", &[]) >= 1.0,
        "pushes after a change: {:?}",
        m.iter()
            .filter(|s| s.name.starts_with("pilot"))
            .collect::<Vec<_>>()
    );
    assert!(sum(&m, "citadel_server_csr_count_total", &[]) >= 1.0);
    assert_eq!(
        sum(&m, "citadel_server_authentication_failure_count_total", &[]),
        0.0
    );
    assert_eq!(sum(&m, "istiod_lite_config_errors", &[]), 0.0);
    assert_eq!(sum(&m, "istio_build", &[("component", "istiod")]), 1.0);

    // A manifest with a typo is refused, and counted until it is fixed.
    c.write_manifest(
        "typo.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: apps}\nspec: {rules: [{from: [{source: {principal: [x]}}]}]}\n",
    );
    c.wait_for("the refused manifest is counted", |c| {
        sum(&scrape_istiod(c), "istiod_lite_config_errors", &[]) == 1.0
    });
    std::fs::remove_file(c.manifests().join("typo.yaml")).unwrap();
    c.wait_for("and no longer once removed", |c| {
        sum(&scrape_istiod(c), "istiod_lite_config_errors", &[]) == 0.0
    });
}

#[test]
fn quitquitquit_drains_ztunnel_as_sigterm_does() {
    let mut c = Cluster::start(&["node-a"]);
    assert_eq!(
        c.ztunnel_http("node-a", "GET", ADMIN, "/quitquitquit").0,
        405
    );
    let (status, body) = c.ztunnel_http("node-a", "POST", ADMIN, "/quitquitquit");
    assert_eq!((status, body.as_str()), (200, "OK\n"));
    c.wait_for("ztunnel exits", |c| {
        c.ztunnel_http("node-a", "GET", READINESS, "/healthz/ready")
            .0
            == 0
    });
    assert!(c.ztunnel_exited("node-a"), "{}", c.node_logs("node-a"));
    let logs = c.node_logs("node-a");
    assert!(
        logs.lines()
            .any(|l| l.contains("draining") && l.contains("\"/quitquitquit\"")),
        "{logs}"
    );
    c.start_ztunnel("node-a");
    c.wait_for("a new ztunnel is ready", |c| {
        c.ztunnel_http("node-a", "GET", READINESS, "/healthz/ready")
            .0
            == 200
    });
}

/// `scrape` for a pod's own endpoint (a waypoint's 15020).
fn scrape_pod(pod: &integration::cluster::Pod) -> Vec<Series> {
    let out = integration::cluster::host::ns_output(
        &pod.netns,
        "curl",
        &[
            "-sS",
            "--max-time",
            "5",
            &format!("http://127.0.0.1:{STATS}/stats/prometheus"),
        ],
    );
    parse(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn waypoint_metrics_count_requests_by_code_and_flag_with_istios_labels() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("shop", &[AMBIENT, ("istio.io/use-waypoint", "waypoint")]);
    c.waypoint("shop", "waypoint", "node-b", None);
    c.pod(PodSpec::new("shop", "client", "node-a"));
    c.pod(PodSpec::new("shop", "web", "node-b"));
    let vip = c.service("shop", "web", "web");
    c.apply(
        "get-only.yaml",
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: get-only, namespace: shop}\nspec:\n  targetRefs:\n  - {kind: Service, group: \"\", name: web}\n  action: ALLOW\n  rules:\n  - to:\n    - operation: {methods: [GET]}\n",
    );
    let client = c.get("shop", "client");
    let waypoint = c.get("shop", "waypoint");
    let url = format!("http://{vip}:{HTTP_PORT}/");
    // Through the waypoint once xDS has bound it: web then sees the
    // waypoint as its client.
    let waypoint_ip = c.get("shop", "waypoint").ip;
    c.wait_for("web answers through the waypoint", |_| {
        integration::cluster::curl_status(client, &[&url])
            .is(200, &format!("hello from web, you are {waypoint_ip}\n"))
    });
    c.wait_for("the waypoint denies POST", |_| {
        integration::cluster::curl_status(client, &["-X", "POST", "-d", "x", &url]).status == 403
    });
    let out = integration::cluster::host::ns_output(
        &waypoint.netns,
        "curl",
        &[
            "-sS",
            &format!("http://127.0.0.1:{READINESS}/healthz/ready"),
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ready\n");

    let before = scrape_pod(waypoint);
    const GETS: usize = 3;
    const POSTS: usize = 2;
    let mut body_bytes = 0;
    for _ in 0..GETS {
        let reply = integration::cluster::curl_status(client, &[&url]);
        reply.assert_status(200);
        body_bytes += reply.body.len();
    }
    for _ in 0..POSTS {
        integration::cluster::curl_status(client, &["-X", "POST", "-d", "x", &url])
            .assert_status(403);
    }
    let after = scrape_pod(waypoint);
    let common = [
        ("reporter", "waypoint"),
        ("source_workload", "client"),
        ("source_workload_namespace", "shop"),
        (
            "source_principal",
            "spiffe://cluster.local/ns/shop/sa/client",
        ),
        ("destination_service", "web.shop.svc.cluster.local"),
        ("destination_service_name", "web"),
        ("destination_service_namespace", "shop"),
        ("request_protocol", "http"),
        ("connection_security_policy", "mutual_tls"),
    ];
    let delta = |name: &str, extra: &[(&str, &str)]| {
        let want: Vec<(&str, &str)> = common.iter().chain(extra).copied().collect();
        sum(&after, name, &want) - sum(&before, name, &want)
    };
    let ok = [
        ("response_code", "200"),
        ("response_flags", "-"),
        ("destination_workload", "web"),
        (
            "destination_principal",
            "spiffe://cluster.local/ns/shop/sa/web",
        ),
    ];
    let denied = [("response_code", "403"), ("response_flags", "RBAC")];
    assert_eq!(
        delta("istio_requests_total", &ok),
        GETS as f64,
        "{after:#?}"
    );
    assert_eq!(delta("istio_requests_total", &denied), POSTS as f64);
    assert_eq!(
        delta("istio_request_duration_milliseconds_count", &ok),
        GETS as f64
    );
    assert_eq!(delta("istio_response_bytes_sum", &ok), body_bytes as f64);
    assert_eq!(
        delta("istio_request_bytes_sum", &denied),
        0.0,
        "denied before the body was read"
    );

    // Its admin endpoint, as ztunnel's: the configuration in force, the log
    // filter; no key material here or in the metrics.
    let admin = |method: &str, path: &str| {
        let out = integration::cluster::host::ns_output(
            &waypoint.netns,
            "curl",
            &[
                "-sS",
                "-X",
                method,
                &format!("http://127.0.0.1:{ADMIN}{path}"),
            ],
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let dump: serde_json::Value = serde_json::from_str(&admin("GET", "/config_dump")).unwrap();
    assert_eq!(dump["gateway"], "shop/waypoint");
    assert_eq!(
        dump["config"]["services"][0]["hostname"], "web.shop.svc.cluster.local",
        "{dump}"
    );
    assert_eq!(
        admin("POST", "/logging?level=info"),
        "current log level is info\n"
    );
    let metrics = integration::cluster::host::ns_output(
        &waypoint.netns,
        "curl",
        &["-sS", &format!("http://127.0.0.1:{STATS}/metrics")],
    );
    for body in [
        dump.to_string(),
        String::from_utf8_lossy(&metrics.stdout).to_string(),
    ] {
        assert!(!body.contains("PRIVATE KEY"));
    }

    let log = c.app_log(waypoint);
    assert!(
        log.lines().any(|l| l.contains("access: request complete")
            && l.contains("response_code=403")
            && l.contains("response_flags=\"RBAC\"")
            && l.contains("src.identity=\"spiffe://cluster.local/ns/shop/sa/client\"")),
        "{log}"
    );
}

/// A span as the collector received it.
#[derive(Clone, Debug)]
struct ReceivedSpan {
    service: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    name: String,
    status_code: Option<i64>,
}

/// An OTLP/gRPC trace receiver, as an OpenTelemetry collector is.
struct Collector(std::sync::Arc<std::sync::Mutex<Vec<ReceivedSpan>>>);

#[tonic::async_trait]
impl opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceService
    for Collector
{
    async fn export(
        &self,
        request: tonic::Request<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
        >,
    ) -> Result<
        tonic::Response<
            opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse,
        >,
        tonic::Status,
    > {
        use opentelemetry_proto::tonic::common::v1::any_value::Value;
        let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
        let mut seen = self.0.lock().unwrap();
        for rs in request.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    Value::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                let status_code = span
                    .attributes
                    .iter()
                    .find(|a| a.key == "http.response.status_code")
                    .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                        Value::IntValue(i) => Some(*i),
                        _ => None,
                    });
                seen.push(ReceivedSpan {
                    service: service.clone(),
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    name: span.name,
                    status_code,
                });
            }
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

#[test]
fn the_waypoint_exports_a_span_per_request_continuing_the_clients_trace() {
    use integration::cluster::LAN_IP;
    use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::TraceServiceServer;

    let mut c = Cluster::start(&["node-a", "node-b"]);
    // The collector listens on the underlay, beside istiod-lite.
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = c.underlay_listener();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let listener = {
        let _guard = rt.enter();
        tokio::net::TcpListener::from_std(listener).unwrap()
    };
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(Collector(spans.clone())))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    c.waypoint_env = vec![
        (
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://{LAN_IP}:{port}"),
        ),
        // Only requests that arrive sampled are traced.
        ("TRACING_SAMPLING", "0".into()),
        ("TRACING_BATCH_DELAY", "100ms".into()),
    ];
    c.namespace("shop", &[AMBIENT, ("istio.io/use-waypoint", "waypoint")]);
    c.waypoint("shop", "waypoint", "node-b", None);
    c.pod(PodSpec::new("shop", "client", "node-a"));
    c.pod(PodSpec::new("shop", "web", "node-b"));
    let vip = c.service("shop", "web", "web");
    let client = c.get("shop", "client");
    let url = format!("http://{vip}:{HTTP_PORT}/");
    // Through the waypoint once xDS has bound it: web then sees the
    // waypoint as its client.
    let waypoint_ip = c.get("shop", "waypoint").ip;
    c.wait_for("web answers through the waypoint", |_| {
        integration::cluster::curl_status(client, &[&url])
            .is(200, &format!("hello from web, you are {waypoint_ip}\n"))
    });

    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let out = integration::cluster::host::ns_output(
        &client.netns,
        "curl",
        &[
            "-sS",
            "-D",
            "-",
            "-H",
            &format!("traceparent: 00-{trace_id}-{client_span}-01"),
            &url,
        ],
    );
    let response = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // What web received: the same trace, with the waypoint's span as parent.
    let echoed = response
        .lines()
        .find_map(|l| l.strip_prefix("x-echo-traceparent: "))
        .unwrap_or_else(|| panic!("no traceparent reached web: {response}"))
        .trim()
        .to_string();
    let parts: Vec<&str> = echoed.split('-').collect();
    assert_eq!(
        (parts[0], parts[1], parts[3]),
        ("00", trace_id, "01"),
        "{echoed}"
    );
    assert_ne!(
        parts[2], client_span,
        "the waypoint's own span is the parent"
    );

    c.wait_for("the collector received the waypoint's span", |_| {
        spans.lock().unwrap().iter().any(|s| s.trace_id == trace_id)
    });
    let all = spans.lock().unwrap().clone();
    let ours: Vec<&ReceivedSpan> = all.iter().filter(|s| s.trace_id == trace_id).collect();
    assert_eq!(ours.len(), 1, "one span per request: {all:#?}");
    let s = ours[0];
    assert_eq!(s.parent_span_id, client_span);
    assert_eq!(s.span_id, parts[2], "the span web was told about");
    assert_eq!(s.service, "waypoint.shop");
    assert_eq!(s.name, "GET /");
    assert_eq!(s.status_code, Some(200));
    // Unsampled requests (no traceparent, sampling 0%) make no spans.
    assert!(
        all.iter().all(|s| s.trace_id == trace_id),
        "requests without a sampled traceparent were traced: {all:#?}"
    );
    let log = c.app_log(c.get("shop", "waypoint"));
    assert!(
        log.lines()
            .any(|l| l.contains("request complete")
                && l.contains(&format!("trace_id=\"{trace_id}\""))),
        "{log}"
    );
}

/// Every metric name the components export, as a scraper sees it.
fn exported_names() -> std::collections::BTreeSet<String> {
    use mesh_telemetry::{Reporter, ResponseFlags, SecurityPolicy, TrafficLabels};
    use prometheus_client::registry::Registry;
    // A family with no series is not written at all: each gets one.
    let mut r = Registry::default();
    let istio = r.sub_registry_with_prefix("istio");
    let traffic = ztunnel::metrics::TrafficMetrics::new(istio);
    ztunnel::metrics::ConnectionResult::new(
        traffic,
        TrafficLabels::new(Reporter::Destination, SecurityPolicy::MutualTls),
        Default::default(),
    )
    .failed(ResponseFlags::Deny, &"counted");
    let xds = ztunnel::xds::XdsClientStats::default();
    xds.register(istio);
    xds.terminated("Complete");
    xds.received("type.googleapis.com/istio.workload.Address", 1);
    mesh_telemetry::register_build(istio, "ztunnel");
    let requests = waypoint::metrics::RequestMetrics::new(istio);
    let peer: mesh_core::Identity = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
    let record =
        waypoint::metrics::RequestRecord::new(requests, &peer, None, "10.0.0.1:1".parse().unwrap());
    waypoint::metrics::Recorded::wrap(
        waypoint::http::local(http::StatusCode::OK, ""),
        std::sync::Arc::new(record),
    );
    ztunnel::metrics::WorkloadManagerMetrics::new(&mut r);
    let control = istiod_lite::metrics::Metrics::new(&mut r, None);
    let address = istiod_lite::metrics::TypeLabel::of("type.googleapis.com/istio.workload.Address");
    control.pushes.get_or_create(&address).inc();
    control.rejects.get_or_create(&address).inc();
    control.connected(true);
    r.register_collector(Box::new(mesh_runtime::stats::ProcessCollector));
    let text = mesh_runtime::stats::encode(&r);
    let mut names = std::collections::BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for s in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{s}"));
                }
            }
            _ => {
                names.insert(name.to_string());
            }
        }
    }
    names
}

#[test]
fn the_dashboards_query_only_metrics_that_exist() {
    let exported = exported_names();
    assert!(
        exported.contains("istio_tcp_connections_opened_total"),
        "{exported:?}"
    );
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/dashboards");
    for name in ["ztunnel.json", "waypoint.json"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let d: serde_json::Value = serde_json::from_str(&text).unwrap();
        let panels = d["panels"].as_array().unwrap();
        assert!(panels.len() >= 6, "{name}");
        for p in panels {
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {} has no query", p["title"]);
            for t in targets {
                let expr = t["expr"].as_str().unwrap();
                let used: Vec<&str> = expr
                    .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .filter(|w| {
                        [
                            "istio_",
                            "workload_manager_",
                            "process_",
                            "pilot_",
                            "citadel_",
                        ]
                        .iter()
                        .any(|p| w.starts_with(p))
                    })
                    .collect();
                assert!(!used.is_empty(), "{name}: `{expr}` reads no metric of ours");
                for m in used {
                    assert!(
                        exported.contains(m),
                        "{name}: `{expr}` reads {m}, which nothing exports"
                    );
                }
            }
        }
    }
}
