//! The source against kube's mock client: the API server's own JSON for
//! lists (items without their type), watch events, and 404 for CRDs that
//! are not installed.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use mesh_model::manifests::ManifestDir;
use tokio::sync::Notify;

use super::*;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

/// Answers as an API server would: lists from `testdata/`, 404 for the
/// Gateway API (its CRDs are not installed), and watches held open, except
/// the first pod watch, answered with `watch-pods.jsonl` once `release`d.
async fn fake_api_server(mut handle: Handle, release: Arc<Notify>) {
    let mut held = Vec::new();
    let mut pod_watches = 0;
    while let Some((request, send)) = handle.next_request().await {
        assert_eq!(request.method(), http::Method::GET, "the source only reads");
        let path = request.uri().path().to_string();
        let watch = request
            .uri()
            .query()
            .is_some_and(|q| q.contains("watch=true"));
        if path.starts_with("/apis/gateway.networking.k8s.io/") {
            send.send_response(respond(StatusCode::NOT_FOUND, fixture("not-found.json")));
            continue;
        }
        if watch {
            if path == "/api/v1/pods" && pod_watches == 0 {
                pod_watches += 1;
                let release = release.clone();
                tokio::spawn(async move {
                    release.notified().await;
                    send.send_response(respond(StatusCode::OK, fixture("watch-pods.jsonl")));
                });
            } else {
                held.push(send);
            }
            continue;
        }
        let file = match path.as_str() {
            "/api/v1/namespaces" => "namespaces.json",
            "/api/v1/pods" => "pods.json",
            "/api/v1/services" => "services.json",
            "/apis/discovery.k8s.io/v1/endpointslices" => "endpointslices.json",
            "/apis/security.istio.io/v1/authorizationpolicies" => "authorizationpolicies.json",
            "/apis/security.istio.io/v1/peerauthentications" => "empty-peerauthentications.json",
            "/apis/security.istio.io/v1/requestauthentications" => {
                "empty-requestauthentications.json"
            }
            other => panic!("unexpected request for {other}"),
        };
        send.send_response(respond(StatusCode::OK, fixture(file)));
    }
}

fn client() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

/// The listed objects as a manifest directory holds them: JSON files with
/// their type, read by the manifest source.
fn as_manifest_dir() -> Model {
    let dir = tempfile::tempdir().unwrap();
    for (file, api_version, kind) in [
        ("namespaces.json", "v1", "Namespace"),
        ("pods.json", "v1", "Pod"),
        ("services.json", "v1", "Service"),
        (
            "endpointslices.json",
            "discovery.k8s.io/v1",
            "EndpointSlice",
        ),
        (
            "authorizationpolicies.json",
            "security.istio.io/v1",
            "AuthorizationPolicy",
        ),
    ] {
        let list: serde_json::Value = serde_json::from_slice(&fixture(file)).unwrap();
        for (i, item) in list["items"].as_array().unwrap().iter().enumerate() {
            let mut item = item.clone();
            item["apiVersion"] = api_version.into();
            item["kind"] = kind.into();
            std::fs::write(
                dir.path().join(format!("{kind}-{i}.json")),
                serde_json::to_vec(&item).unwrap(),
            )
            .unwrap();
        }
    }
    let mut source = ManifestDir::new(dir.path());
    let report = source.scan().unwrap();
    assert_eq!(
        report.errors.len(),
        1,
        "the typo policy: {:?}",
        report.errors
    );
    source.model()
}

#[tokio::test]
async fn lists_then_follows_watch_events_into_the_model_the_manifest_source_gives() {
    let (client, handle) = client();
    let release = Arc::new(Notify::new());
    let server = tokio::spawn(fake_api_server(handle, release.clone()));

    let (source, model) = KubeSource::start(client, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(model, as_manifest_dir(), "the same objects, the same model");
    assert_eq!(
        model.namespace_labels("shop").unwrap()["istio.io/dataplane-mode"],
        "ambient"
    );
    let pod = &model.pods[&("shop".into(), "web-7d4b9c8f6d-x2k9p".into())];
    assert_eq!(pod.spec.node_name.as_deref(), Some("kind-worker"));
    assert_eq!(pod.service_account(), "web");
    assert!(model.services.contains_key(&("shop".into(), "web".into())));
    let slice = &model.endpoint_slices[&("shop".into(), "web-8xk2p".into())];
    assert_eq!(slice.service_name(), Some("web"));
    assert_eq!(slice.endpoints[0].addresses, ["10.244.1.7"]);
    let policies: Vec<&str> = model
        .authorization_policies
        .keys()
        .map(|(_, n)| n.as_str())
        .collect();
    assert_eq!(policies, ["web-from-shop"], "the invalid one is refused");
    assert!(model.gateways.is_empty() && model.http_routes.is_empty());

    let (models, mut published) = watch::channel(Arc::new(model));
    let (trigger, drain) = mesh_runtime::drain::new();
    let running = tokio::spawn(source.run(models, drain));
    release.notify_one();
    tokio::time::timeout(Duration::from_secs(10), published.changed())
        .await
        .expect("a new model after the watch events")
        .unwrap();
    let model = published.borrow().clone();
    let pods: Vec<&str> = model.pods.keys().map(|(_, n)| n.as_str()).collect();
    assert_eq!(pods, ["web-7d4b9c8f6d-q7w3z"], "one added, one deleted");
    assert_eq!(
        model.pods[&("shop".into(), "web-7d4b9c8f6d-q7w3z".into())]
            .spec
            .node_name
            .as_deref(),
        Some("kind-worker2")
    );

    trigger.start(mesh_runtime::drain::DrainMode::Immediate);
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the source stops on drain")
        .unwrap();
    server.abort();
}

fn pod(name: &str, ip: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": "n"},
        "status": {"podIP": ip},
    }))
    .unwrap()
}

/// A pod whose `spec.nodeName` is a list: the parser refuses it.
fn broken_pod(name: &str) -> DynamicObject {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"nodeName": ["n1", "n2"]},
    }))
    .unwrap()
}

const PODS: Watched = watched(Kind::Pod);

#[test]
fn a_relist_replaces_the_kind_and_a_bad_object_keeps_its_last_good_version() {
    let mut objects = KubeObjects::default();
    assert_eq!(PODS.kind, Kind::Pod);
    assert!(!objects.apply(&PODS, Event::Init).0);
    objects.apply(&PODS, Event::InitApply(pod("a", "10.0.0.1")));
    objects.apply(&PODS, Event::InitApply(pod("b", "10.0.0.2")));
    assert!(
        objects.model().pods.is_empty(),
        "nothing until the list is complete"
    );
    assert!(objects.apply(&PODS, Event::InitDone).0);
    assert_eq!(objects.model().pods.len(), 2);
    assert!(!objects.synced(), "the other kinds are not listed yet");

    // The same object again changes nothing; a broken update is refused
    // and the last good version stays.
    assert!(!objects.apply(&PODS, Event::Apply(pod("a", "10.0.0.1"))).0);
    let (changed, rejected) = objects.apply(&PODS, Event::Apply(broken_pod("a")));
    assert!(!changed);
    assert_eq!(rejected.len(), 1);
    let message = rejected[0].to_string();
    assert!(
        message.starts_with("Pod shop/a: ") && message.ends_with("keeping its last good version"),
        "{message}"
    );
    assert!(message.contains("nodeName"), "{message}");
    assert_eq!(
        objects.model().pods[&("shop".into(), "a".into())]
            .spec
            .node_name
            .as_deref(),
        Some("n")
    );

    // A re-list after a broken watch: b is gone, c is new.
    objects.apply(&PODS, Event::Init);
    objects.apply(&PODS, Event::InitApply(pod("a", "10.0.0.1")));
    objects.apply(&PODS, Event::InitApply(pod("c", "10.0.0.3")));
    assert!(objects.apply(&PODS, Event::InitDone).0);
    let names: Vec<String> = objects
        .model()
        .pods
        .keys()
        .map(|(_, n)| n.clone())
        .collect();
    assert_eq!(names, ["a", "c"]);

    // A kind whose CRD is absent counts as listed and empty.
    for w in &WATCHED[2..] {
        objects.absent(w.kind);
    }
    assert!(!objects.synced());
    objects.absent(Kind::Namespace);
    assert!(objects.synced());
}

#[tokio::test]
async fn a_kubeconfig_pointing_nowhere_fails_at_once_naming_the_server() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: gone\n  cluster: {{server: \"https://127.0.0.1:{port}\"}}\ncontexts:\n- name: gone\n  context: {{cluster: gone, user: u}}\ncurrent-context: gone\nusers:\n- name: u\n  user: {{token: abc}}\n"
        ),
    )
    .unwrap();
    let started = std::time::Instant::now();
    let e = connect(Some(&path), Duration::from_secs(10))
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    assert!(
        e.starts_with(&format!(
            "cannot reach the Kubernetes API server at https://127.0.0.1:{port}"
        )),
        "{e}"
    );

    std::fs::write(&path, "clusters: [").unwrap();
    let e = connect(Some(&path), Duration::from_secs(10))
        .await
        .err()
        .expect("an error")
        .to_string();
    assert!(e.starts_with("reading the kubeconfig"), "{e}");
}

#[tokio::test]
async fn the_node_agent_lists_only_its_nodes_pods() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let queries = tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut held = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let query = request.uri().query().unwrap_or_default().to_string();
            let path = request.uri().path().to_string();
            if query.contains("watch=true") {
                held.push(send);
                continue;
            }
            seen.push((path.clone(), query));
            let file = if path == "/api/v1/pods" {
                "pods.json"
            } else {
                "namespaces.json"
            };
            send.send_response(respond(StatusCode::OK, fixture(file)));
            if seen.len() == 2 {
                return seen;
            }
        }
        seen
    });
    let (_source, model) = KubeSource::start_selected(
        Client::new(service, "default"),
        &ENROLLMENT,
        Some("spec.nodeName=kind-worker"),
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(model.pods.len(), 1);
    assert!(
        model.authorization_policies.is_empty(),
        "only the kinds asked for"
    );
    let seen = queries.await.unwrap();
    let pods = seen.iter().find(|(p, _)| p == "/api/v1/pods").unwrap();
    assert!(
        pods.1.contains("fieldSelector=spec.nodeName%3Dkind-worker"),
        "{}",
        pods.1
    );
    let namespaces = seen
        .iter()
        .find(|(p, _)| p == "/api/v1/namespaces")
        .unwrap();
    assert!(!namespaces.1.contains("fieldSelector"), "{}", namespaces.1);
}
