//! The local cluster against the real components (root; built by
//! `cargo xtask cluster build`). Run them with `cargo xtask cluster test`:
//! one cluster at a time, since the bridge and namespace names are the
//! host's.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::ListParams;
use mesh_cluster::config::{BRIDGE, Layout, Node, UpArgs};
use mesh_cluster::{api, host, lifecycle, processes};

fn layout(dir: &Path) -> Layout {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Layout::new(&dir.join("state"), &root.join("target/cluster/bin"))
}

fn node_program() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cluster"))
}

/// Removes the cluster also when an assertion fails.
struct Down(Layout);
impl Drop for Down {
    fn drop(&mut self) {
        let _ = lifecycle::down(&self.0);
    }
}

/// The HTTP status curl gets for `url` (empty when it gets none), from the
/// host or from inside `netns`.
fn http_code(netns: Option<&str>, url: &str) -> String {
    let curl = [
        "curl",
        "-sk",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "2",
        url,
    ];
    match netns {
        Some(netns) => {
            let mut args = vec!["netns", "exec", netns];
            args.extend(curl);
            host::run("ip", &args)
        }
        None => host::run(curl[0], &curl[1..]),
    }
    .unwrap_or_default()
}

fn netns_names() -> Vec<String> {
    host::ip(&["netns", "list"])
        .unwrap()
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(String::from))
        .collect()
}

fn assert_nothing_left(layout: &Layout) {
    let left: Vec<String> = netns_names()
        .into_iter()
        .filter(|n| n.starts_with("kc-"))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(host::ip(&["link", "show", BRIDGE]).is_err(), "bridge left");
    assert!(!layout.state.exists(), "state directory left");
}

/// A cluster of `nodes` in a temporary state directory, removed when the
/// guard goes (before the directory).
async fn up(nodes: u8) -> (tempfile::TempDir, Layout, Down) {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let guard = Down(layout.clone());
    lifecycle::up(&layout, &UpArgs::nodes(nodes), &node_program())
        .await
        .unwrap();
    (dir, layout, guard)
}

async fn eventually(what: &str, bound: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < bound, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn up_gives_ready_nodes_with_leases_and_routes_and_down_removes_it_all() {
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let guard = Down(layout.clone());
    let started = lifecycle::up(&layout, &UpArgs::nodes(2), &node_program())
        .await
        .unwrap();
    eprintln!("up: {started:?}");

    let admin = api::client(&layout.kubeconfig("admin")).await.unwrap();
    let nodes = api::nodes(&admin).await.unwrap();
    assert_eq!(
        nodes,
        vec![("node-1".to_string(), true), ("node-2".to_string(), true)]
    );
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "kube-node-lease");
    let held: Vec<String> = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|l| l.spec.as_ref()?.holder_identity.clone())
        .collect();
    assert_eq!(held, vec!["node-1", "node-2"]);

    // Each node routes the other's pod range via the other's address.
    let (one, two) = (Node::new(1), Node::new(2));
    eventually(
        "node-1 routes to node-2's pods",
        Duration::from_secs(10),
        || {
            host::ip_in(&one.netns, &["route"])
                .unwrap()
                .lines()
                .any(|l| l.starts_with("10.244.") && l.contains(&format!("via {}", two.ip)))
        },
    )
    .await;
    // The API server is reachable from inside a node, as pods will need.
    let reach = http_code(Some(&one.netns), "https://10.210.0.1:6443/readyz");
    // `/readyz` is open to anonymous clients (system:public-info-viewer).
    assert_eq!(reach, "200", "the API server answered from inside node-1");
    // And through its Service VIP: kube-proxy's nftables rules in the node.
    eventually(
        "the kubernetes Service answers from node-2",
        Duration::from_secs(10),
        || http_code(Some(&two.netns), "https://10.96.0.1/readyz") == "200",
    )
    .await;
    let tables = host::run(
        "ip",
        &["netns", "exec", &two.netns, "nft", "list", "tables"],
    )
    .unwrap();
    assert!(tables.contains("table ip kube-proxy"), "{tables}");

    drop(guard);
    assert_nothing_left(&layout);
    let running: Vec<_> = processes::recorded(&layout)
        .into_iter()
        .filter(|p| p.alive())
        .collect();
    assert!(running.is_empty(), "{running:?}");
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn down_removes_what_a_dead_run_left_and_up_refuses_to_start_twice() {
    let (_dir, layout, _guard) = up(1).await;

    let again = lifecycle::up(&layout, &UpArgs::nodes(1), &node_program())
        .await
        .unwrap_err();
    assert!(
        format!("{again:#}").contains("already running"),
        "{again:#}"
    );

    // A crash: every process killed at once, nothing cleaned.
    let recorded = processes::recorded(&layout);
    let names: Vec<&str> = recorded.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kube-proxy-node-1",
            "kube-scheduler",
            "node-1"
        ]
    );
    for p in &recorded {
        host::run("kill", &["-9", &p.pid.to_string()]).unwrap();
    }
    eventually("the processes die", Duration::from_secs(5), || {
        recorded.iter().all(|p| !p.alive())
    })
    .await;
    assert!(netns_names().iter().any(|n| n == "kc-node-1"));

    let removed = lifecycle::down(&layout).unwrap();
    assert!(
        removed.iter().any(|r| r == "network namespace kc-node-1"),
        "{removed:?}"
    );
    assert_nothing_left(&layout);
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn a_pod_is_scheduled_wired_by_the_nodes_cni_config_reached_and_deleted_gracefully() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{DeleteParams, PostParams};

    let (_dir, layout, _guard) = up(2).await;
    let admin = api::client(&layout.kubeconfig("admin")).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(admin, "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "web" },
        "spec": { "containers": [{
            "name": "web", "image": "busybox",
            "command": ["python3", "-m", "http.server", "8080"],
        }]},
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();

    // Scheduled by the real scheduler, run by that node's simulator.
    let start = Instant::now();
    let (node, ip) = loop {
        let seen = pods.get("web").await.unwrap();
        let status = seen.status.clone().unwrap_or_default();
        if status.phase.as_deref() == Some("Running") {
            break (
                seen.spec.unwrap().node_name.unwrap(),
                status.pod_ip.unwrap(),
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "not Running: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        ip.starts_with("10.244."),
        "an address from the node's range: {ip}"
    );
    let other = if node == "node-1" {
        Node::new(2)
    } else {
        Node::new(1)
    };
    let sandbox = netns_names()
        .into_iter()
        .find(|n| n.starts_with(&format!("kc-{node}-")))
        .expect("the pod's network namespace");

    // Reached from the other node, over the routes between nodes.
    let url = format!("http://{ip}:8080/");
    eventually(
        "the pod answers from the other node",
        Duration::from_secs(10),
        || http_code(Some(&other.netns), &url) == "200",
    )
    .await;

    // `kubectl logs`: the API server proxies pods/log to the node's
    // kubelet endpoint (mutual TLS under the cluster CA).
    let params = kube::api::LogParams {
        tail_lines: Some(1),
        ..Default::default()
    };
    let start = Instant::now();
    let logged = loop {
        let logged = pods.logs("web", &params).await.unwrap_or_default();
        if logged.contains("\"GET / HTTP/1.1\" 200") {
            break logged;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the request not in the pod's log: {logged:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(logged.lines().count(), 1, "tailLines=1: {logged}");

    // Graceful deletion: the process stopped, CNI DEL run, the namespace
    // removed, then the object deleted by the node.
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    let start = Instant::now();
    while pods.get_opt("web").await.unwrap().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(35),
            "the pod object stayed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(!netns_names().contains(&sandbox), "{sandbox} left behind");
    let left = host::run("pgrep", &["-f", "http.server 8080"]).unwrap_or_default();
    assert!(
        left.trim().is_empty(),
        "the pod's process is still running: {left}"
    );
}

/// A pod from JSON, created, and a way to read it back.
async fn create_pod(
    layout: &Layout,
    spec: serde_json::Value,
) -> Api<k8s_openapi::api::core::v1::Pod> {
    let admin = api::client(&layout.kubeconfig("admin")).await.unwrap();
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(admin, "default");
    pods.create(
        &kube::api::PostParams::default(),
        &serde_json::from_value(spec).unwrap(),
    )
    .await
    .unwrap();
    pods
}

async fn until_status(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    name: &str,
    what: &str,
    bound: Duration,
    check: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let pod = pods.get(name).await.unwrap();
        let status = serde_json::to_value(pod.status.unwrap_or_default()).unwrap();
        if check(&status) {
            return status;
        }
        assert!(
            start.elapsed() < bound,
            "{name}: {what} not within {bound:?}; status {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn pod_ready(status: &serde_json::Value) -> bool {
    status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn readiness_and_liveness_follow_their_probes_and_a_failing_container_restarts_with_back_off()
{
    let (dir, layout, _guard) = up(1).await;
    let site = dir.path().join("site");
    std::fs::create_dir_all(&site).unwrap();

    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "web" },
            "spec": { "containers": [{
                "name": "web", "image": "busybox",
                "command": ["python3", "-m", "http.server", "8080"],
                "workingDir": site.display().to_string(),
                "ports": [{ "name": "http", "containerPort": 8080 }],
                "readinessProbe": { "httpGet": { "path": "/ready", "port": "http" },
                                    "periodSeconds": 1, "failureThreshold": 1 },
            }]},
        }),
    )
    .await;
    let status = until_status(&pods, "web", "Running", Duration::from_secs(20), |s| {
        s["phase"] == "Running"
    })
    .await;
    assert!(
        !pod_ready(&status),
        "ready before the probe passed: {status:#}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = pods.get("web").await.unwrap().status.unwrap();
    assert!(
        !pod_ready(&serde_json::to_value(status).unwrap()),
        "the probe gets 404, so not Ready"
    );
    std::fs::write(site.join("ready"), "ok").unwrap();
    until_status(&pods, "web", "Ready", Duration::from_secs(10), pod_ready).await;
    std::fs::remove_file(site.join("ready")).unwrap();
    until_status(
        &pods,
        "web",
        "not Ready again",
        Duration::from_secs(10),
        |s| !pod_ready(s),
    )
    .await;

    // restartPolicy Always: restarted after the back-off (10 s first).
    let pods = create_pod(&layout, serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "crash" },
        "spec": { "containers": [{ "name": "crash", "image": "busybox", "command": ["sh", "-c", "exit 3"] }]},
    }))
    .await;
    let waiting = until_status(
        &pods,
        "crash",
        "CrashLoopBackOff",
        Duration::from_secs(20),
        |s| s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff",
    )
    .await;
    assert_eq!(
        waiting["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        3
    );
    assert_eq!(
        waiting["containerStatuses"][0]["restartCount"], 0,
        "not before the back-off"
    );
    let restarted = Instant::now();
    until_status(&pods, "crash", "a restart", Duration::from_secs(30), |s| {
        s["containerStatuses"][0]["restartCount"].as_i64() >= Some(1)
    })
    .await;
    assert!(
        restarted.elapsed() >= Duration::from_secs(5),
        "restarted without back-off"
    );

    // A liveness probe failing twice: killed (137) and restarted.
    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "stale" },
            "spec": { "containers": [{
                "name": "stale", "image": "busybox",
                "command": ["python3", "-m", "http.server", "8082"],
                "workingDir": site.display().to_string(),
                "livenessProbe": { "httpGet": { "path": "/alive", "port": 8082 },
                                   "periodSeconds": 1, "failureThreshold": 2 },
            }]},
        }),
    )
    .await;
    let restarted = until_status(
        &pods,
        "stale",
        "a restart after the liveness probe failed",
        Duration::from_secs(40),
        |s| s["containerStatuses"][0]["restartCount"].as_i64() >= Some(1),
    )
    .await;
    assert_eq!(
        restarted["containerStatuses"][0]["lastState"]["terminated"]["exitCode"],
        137
    );

    // restartPolicy Never and exit 0: Succeeded, not restarted.
    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "once" },
            "spec": { "restartPolicy": "Never",
                      "containers": [{ "name": "once", "image": "busybox", "command": ["true"] }]},
        }),
    )
    .await;
    let done = until_status(&pods, "once", "Succeeded", Duration::from_secs(20), |s| {
        s["phase"] == "Succeeded"
    })
    .await;
    assert_eq!(done["containerStatuses"][0]["restartCount"], 0);
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn host_network_pods_share_the_node_and_a_changed_cni_config_is_what_the_next_pod_gets() {
    let (_dir, layout, _guard) = up(1).await;
    let node = Node::new(1);

    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "on-host" },
            "spec": { "hostNetwork": true, "containers": [{
                "name": "web", "image": "busybox",
                "command": ["python3", "-m", "http.server", "8081"],
            }]},
        }),
    )
    .await;
    let status = until_status(&pods, "on-host", "Running", Duration::from_secs(20), |s| {
        s["phase"] == "Running"
    })
    .await;
    assert_eq!(status["podIP"], node.ip.to_string());
    let url = format!("http://{}:8081/", node.ip);
    eventually(
        "the host-network pod answers on the node's address",
        Duration::from_secs(10),
        || http_code(None, &url) == "200",
    )
    .await;

    // A network config list that sorts first, written after the node
    // started: the next pod is wired by it (addresses from .200 up).
    let net_d = layout.node_root(&node).join("etc/cni/net.d");
    let current: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(net_d.join("10-cluster.conflist")).unwrap())
            .unwrap();
    let subnet = current["plugins"][0]["ipam"]["ranges"][0][0]["subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let start = subnet.replace(".0/24", ".200");
    let mut changed = current.clone();
    changed["plugins"][0]["ipam"]["ranges"][0][0]["rangeStart"] = serde_json::json!(start);
    std::fs::write(net_d.join("00-changed.conflist"), changed.to_string()).unwrap();
    let pods = create_pod(&layout, serde_json::json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "after" },
        "spec": { "containers": [{ "name": "sleep", "image": "busybox", "command": ["sleep", "infinity"] }]},
    }))
    .await;
    let status = until_status(&pods, "after", "Running", Duration::from_secs(20), |s| {
        s["phase"] == "Running"
    })
    .await;
    assert_eq!(status["podIP"], start, "wired by the changed config");
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn volumes_and_env_come_from_the_api_as_kubernetes_gives_them_and_tokens_rotate() {
    use k8s_openapi::api::authentication::v1::TokenReview;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let dir = tempfile::tempdir().unwrap();
    let layout = layout(dir.path());
    let _guard = Down(layout.clone());
    let args = UpArgs {
        nodes: 1,
        token_refresh: Some(3),
    };
    lifecycle::up(&layout, &args, &node_program())
        .await
        .unwrap();
    let admin = api::client(&layout.kubeconfig("admin")).await.unwrap();
    let post = kube::api::PostParams::default();
    let config: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "settings" }, "data": { "greeting": "hello", "unused": "x" },
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(admin.clone(), "default")
        .create(&post, &config)
        .await
        .unwrap();
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": { "name": "creds" }, "stringData": { "password": "s3cret" },
    }))
    .unwrap();
    Api::<Secret>::namespaced(admin.clone(), "default")
        .create(&post, &secret)
        .await
        .unwrap();

    // Mount points that exist nowhere on this machine: made, then removed by down.
    let script = "while true; do \
        cat /etc/kc-test/settings/conf/greeting.txt /etc/kc-test/creds/password > /kc-test-scratch/seen; \
        ls /etc/kc-test/settings > /kc-test-scratch/settings-files; \
        ls /var/run/secrets/kubernetes.io/serviceaccount > /kc-test-scratch/sa-files; \
        cp /var/run/secrets/tokens/istio-token /kc-test-scratch/token.new && mv /kc-test-scratch/token.new /kc-test-scratch/token; \
        touch /etc/kc-test/creds/written 2>/dev/null && echo yes > /kc-test-scratch/secret-writable || echo no > /kc-test-scratch/secret-writable; \
        echo from-the-pod > /kc-test-host/written; \
        echo \"$GREETING $PASSWORD $CFG_unused $POD\" > /kc-test-scratch/env; \
        sleep 1; done";
    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "reader", "labels": { "app": "reader-app" } },
            "spec": {
                "containers": [{
                    "name": "reader", "image": "busybox", "command": ["sh", "-c", script],
                    "envFrom": [{ "prefix": "CFG_", "configMapRef": { "name": "settings" } }],
                    "env": [
                        { "name": "GREETING", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "greeting" } } },
                        { "name": "PASSWORD", "valueFrom": { "secretKeyRef": { "name": "creds", "key": "password" } } },
                        { "name": "POD", "valueFrom": { "fieldRef": { "fieldPath": "metadata.labels['app']" } } },
                    ],
                    "volumeMounts": [
                        { "name": "settings", "mountPath": "/etc/kc-test/settings" },
                        { "name": "creds", "mountPath": "/etc/kc-test/creds" },
                        { "name": "istio-token", "mountPath": "/var/run/secrets/tokens" },
                        { "name": "scratch", "mountPath": "/kc-test-scratch" },
                        { "name": "host", "mountPath": "/kc-test-host" },
                    ],
                }],
                "volumes": [
                    { "name": "settings", "configMap": { "name": "settings",
                        "items": [{ "key": "greeting", "path": "conf/greeting.txt" }] } },
                    { "name": "creds", "secret": { "secretName": "creds" } },
                    { "name": "istio-token", "projected": { "sources": [{ "serviceAccountToken": {
                        "audience": "istio-ca", "expirationSeconds": 600, "path": "istio-token" } }] } },
                    { "name": "scratch", "emptyDir": {} },
                    { "name": "host", "hostPath": { "path": "/var/run/kc-test", "type": "DirectoryOrCreate" } },
                ],
            },
        }),
    )
    .await;
    until_status(&pods, "reader", "Running", Duration::from_secs(30), |s| {
        s["phase"] == "Running"
    })
    .await;
    let uid = pods.get("reader").await.unwrap().metadata.uid.unwrap();
    let node_root = layout.node_root(&Node::new(1));
    let pod_dir = node_root.join("var/lib/kubelet/pods").join(&uid);
    let scratch = pod_dir.join("volumes/scratch");
    let read = |name: &str| std::fs::read_to_string(scratch.join(name)).unwrap_or_default();
    eventually(
        "the container read its volumes",
        Duration::from_secs(20),
        || !read("token").is_empty() && !read("sa-files").is_empty(),
    )
    .await;
    assert_eq!(read("seen"), "hellos3cret", "ConfigMap item and Secret key");
    assert_eq!(read("settings-files"), "conf\n", "only the item asked for");
    assert_eq!(
        read("sa-files"),
        "ca.crt\nnamespace\ntoken\n",
        "the API server's kube-api-access volume"
    );
    assert_eq!(
        read("secret-writable"),
        "no\n",
        "Secret volumes are read-only"
    );
    assert_eq!(
        read("env"),
        "hello s3cret x reader-app\n",
        "env from the API"
    );
    // hostPath: the node's own /var/run/kc-test, not the machine's.
    assert_eq!(
        std::fs::read_to_string(node_root.join("var/run/kc-test/written")).unwrap(),
        "from-the-pod\n"
    );
    // The machine has only the empty mount point of the node's view.
    assert!(!Path::new("/var/run/kc-test/written").exists());
    // Nothing of the pod's mounts shows on the machine.
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains("kc-test"), "{mounts}");

    // The token is the API's, for the audience asked, bound to the pod,
    // and rotated (here every 3 s).
    let review = |token: String| {
        let admin = admin.clone();
        async move {
            let review: TokenReview = serde_json::from_value(serde_json::json!({
                "spec": { "token": token, "audiences": ["istio-ca"] },
            }))
            .unwrap();
            let reviewed = Api::<TokenReview>::all(admin)
                .create(&kube::api::PostParams::default(), &review)
                .await
                .unwrap();
            serde_json::to_value(reviewed.status.unwrap()).unwrap()
        }
    };
    let first = read("token");
    let status = review(first.clone()).await;
    assert_eq!(status["authenticated"], true, "{status:#}");
    assert_eq!(
        status["user"]["username"],
        "system:serviceaccount:default:default"
    );
    assert_eq!(
        status["user"]["extra"]["authentication.kubernetes.io/pod-name"][0],
        "reader"
    );
    eventually("the token rotated", Duration::from_secs(20), || {
        let now = read("token");
        !now.is_empty() && now != first
    })
    .await;
    let status = review(read("token")).await;
    assert_eq!(status["authenticated"], true, "{status:#}");

    // A key that is not there keeps the container from starting, named.
    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "unconfigured" },
            "spec": { "containers": [{ "name": "c", "image": "busybox", "command": ["true"],
                "env": [{ "name": "X", "valueFrom": { "configMapKeyRef": { "name": "settings", "key": "absent" } } }],
            }]},
        }),
    )
    .await;
    let waiting = until_status(
        &pods,
        "unconfigured",
        "a config error",
        Duration::from_secs(20),
        |s| s["containerStatuses"][0]["state"]["waiting"]["reason"] == "CreateContainerConfigError",
    )
    .await;
    assert_eq!(
        waiting["containerStatuses"][0]["state"]["waiting"]["message"],
        "couldn't find key absent in ConfigMap default/settings"
    );

    // Deleted: its volumes go with it; down removes the mount points made.
    pods.delete("reader", &kube::api::DeleteParams::default())
        .await
        .unwrap();
    eventually(
        "the pod's directory removed",
        Duration::from_secs(40),
        || !pod_dir.exists(),
    )
    .await;
    lifecycle::down(&layout).unwrap();
    for made in [
        "/etc/kc-test",
        "/kc-test-scratch",
        "/kc-test-host",
        "/var/run/kc-test",
    ] {
        assert!(!Path::new(made).exists(), "{made} left behind");
    }
}

/// `kubectl` of the cluster, as the admin.
fn kubectl(layout: &Layout, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(layout.bin.join("kubectl"))
        .arg(format!(
            "--kubeconfig={}",
            layout.kubeconfig("admin").display()
        ))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[tokio::test]
#[ignore = "needs root and the components: cargo xtask cluster test"]
async fn kubectl_exec_runs_in_the_container_and_port_forward_reaches_the_pods_localhost() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_dir, layout, _guard) = up(1).await;
    // A server on the pod's localhost only: no one outside the pod's
    // network namespace reaches it but through the node.
    let pods = create_pod(
        &layout,
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": { "name": "shell" },
            "spec": { "containers": [{
                "name": "web", "image": "busybox", "workingDir": "/data",
                "command": ["python3", "-m", "http.server", "--bind", "127.0.0.1", "8081"],
                "env": [{ "name": "GREETING", "value": "hello from the container" }],
                "volumeMounts": [{ "name": "data", "mountPath": "/data" }],
            }],
            "volumes": [{ "name": "data", "emptyDir": {} }]},
        }),
    )
    .await;
    until_status(&pods, "shell", "Running", Duration::from_secs(20), |s| {
        s["phase"] == "Running"
    })
    .await;

    // The container's environment, working directory, mounts and network
    // namespace; the command's output streams and exit code.
    let script = "echo $GREETING; pwd; touch made-here; echo to-stderr >&2; \
                  curl -s -o /dev/null -w '%{http_code}\\n' http://127.0.0.1:8081/; exit 4";
    let out = kubectl(&layout, &["exec", "shell", "--", "sh", "-c", script], "");
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "hello from the container\n/data\n200\n"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("to-stderr"));
    let listed = kubectl(&layout, &["exec", "shell", "--", "ls", "/data"], "");
    assert_eq!(String::from_utf8_lossy(&listed.stdout), "made-here\n");
    // Standard input, to its end.
    let out = kubectl(
        &layout,
        &["exec", "-i", "shell", "--", "wc", "-l"],
        "one\ntwo\n",
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2", "{out:?}");
    // A container that is not there.
    let out = kubectl(&layout, &["exec", "shell", "-c", "other", "--", "true"], "");
    assert!(!out.status.success());

    // Port forwarding over the API server's WebSocket.
    let mut forwarder = pods.portforward("shell", &[8081]).await.unwrap();
    let mut stream = forwarder.take_stream(8081).unwrap();
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut answer))
        .await
        .expect("the forwarded connection answers and ends")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(
        answer.contains("made-here"),
        "the pod's /data listed: {answer}"
    );
    // The node closed the WebSocket when the pod's side ended, as the
    // kubelet does; kube-rs's last close-of-stream then finds it closed,
    // so join's result says nothing here.
    drop(stream);
    let _ = forwarder.join().await;
}
