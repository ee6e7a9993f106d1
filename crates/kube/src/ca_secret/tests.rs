//! The CA Secret against kube's mock client.

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

const PATH: &str = "/api/v1/namespaces/istio-system/secrets";

fn secret_json(marker: &str) -> Value {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "kind": "Secret", "apiVersion": "v1",
        "metadata": {"name": "istio-ca-secret", "namespace": "istio-system",
            "uid": "0e1d2c3b-4a59-4687-9a8b-7c6d5e4f3a2b", "resourceVersion": "811",
            "creationTimestamp": "2026-11-20T09:15:00Z"},
        "data": {
            "ca-cert.pem": b64(&format!("CA CERT {marker}")),
            "ca-key.pem": b64(&format!("CA KEY {marker}")),
            "root-cert.pem": b64(&format!("ROOT {marker}")),
            "cert-chain.pem": b64(&format!("CHAIN {marker}")),
        },
        "type": "istio.io/ca-root"
    })
}

fn not_found() -> Vec<u8> {
    serde_json::to_vec(
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "secrets \"istio-ca-secret\" not found", "reason": "NotFound",
        "details": {"name": "istio-ca-secret", "kind": "secrets"}, "code": 404}),
    )
    .unwrap()
}

fn respond(status: StatusCode, body: Vec<u8>) -> Response<Body> {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r
}

/// Plays one scenario: `exists` (the Secret is there), `absent` (created
/// by us), `race` (absent, then another istiod-lite creates it first).
async fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    scenario: &'static str,
    created: tokio::sync::mpsc::UnboundedSender<Value>,
) {
    let mut gets = 0;
    while let Some((request, send)) = handle.next_request().await {
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        match (method.as_str(), scenario) {
            ("GET", "exists") => send.send_response(respond(
                StatusCode::OK,
                serde_json::to_vec(&secret_json("theirs")).unwrap(),
            )),
            ("GET", "race") if gets > 0 => send.send_response(respond(
                StatusCode::OK,
                serde_json::to_vec(&secret_json("winner")).unwrap(),
            )),
            ("GET", _) => send.send_response(respond(StatusCode::NOT_FOUND, not_found())),
            ("POST", _) => {
                assert_eq!(path, PATH);
                let body: Value =
                    serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap())
                        .unwrap();
                let _ = created.send(body.clone());
                if scenario == "race" {
                    let conflict = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                        "message": "secrets \"istio-ca-secret\" already exists", "reason": "AlreadyExists", "code": 409});
                    send.send_response(respond(
                        StatusCode::CONFLICT,
                        serde_json::to_vec(&conflict).unwrap(),
                    ));
                } else {
                    send.send_response(respond(
                        StatusCode::CREATED,
                        serde_json::to_vec(&body).unwrap(),
                    ));
                }
            }
            other => panic!("unexpected {other:?} {path}"),
        }
        if method == http::Method::GET {
            gets += 1;
        }
    }
}

async fn run(scenario: &'static str, dir: &Path) -> (Result<(), CaSecretError>, Vec<Value>, bool) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(fake_api_server(handle, scenario, tx));
    let client = Client::new(service, "default");
    let mut generated = false;
    let result = sync_ca_dir(&client, "istio-system", dir, || {
        generated = true;
        std::fs::create_dir_all(dir).unwrap();
        for f in FILES {
            std::fs::write(dir.join(f), format!("ours {f}")).unwrap();
        }
        Ok(())
    })
    .await;
    let mut created = Vec::new();
    while let Ok(c) = rx.try_recv() {
        created.push(c);
    }
    (result, created, generated)
}

#[tokio::test]
async fn a_kept_root_is_used_a_missing_one_is_made_and_stored_and_a_race_is_lost_gracefully() {
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca");

    let (result, created, generated) = run("exists", &ca).await;
    result.unwrap();
    assert!(!generated && created.is_empty());
    assert_eq!(
        std::fs::read_to_string(ca.join("ca-key.pem")).unwrap(),
        "CA KEY theirs"
    );
    let mode = std::fs::metadata(ca.join("ca-key.pem"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the key is private");

    let fresh = dir.path().join("fresh");
    let (result, created, generated) = run("absent", &fresh).await;
    result.unwrap();
    assert!(generated);
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["type"], "istio.io/ca-root");
    let key = created[0]["data"]["ca-key.pem"].as_str().unwrap();
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(key)
            .unwrap(),
        b"ours ca-key.pem"
    );

    let raced = dir.path().join("raced");
    let (result, created, _) = run("race", &raced).await;
    result.unwrap();
    assert_eq!(created.len(), 1, "we tried");
    assert_eq!(
        std::fs::read_to_string(raced.join("root-cert.pem")).unwrap(),
        "ROOT winner",
        "the first istiod-lite's root is the mesh's"
    );
}

#[tokio::test]
async fn an_incomplete_secret_is_refused_by_name() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        while let Some((_, send)) = handle.next_request().await {
            let mut s = secret_json("x");
            s["data"].as_object_mut().unwrap().remove("cert-chain.pem");
            send.send_response(respond(StatusCode::OK, serde_json::to_vec(&s).unwrap()));
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let e = sync_ca_dir(
        &Client::new(service, "default"),
        "istio-system",
        dir.path(),
        || unreachable!("a Secret exists"),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(e.contains("has no cert-chain.pem"), "{e}");
}
