//! The status writer against kube's mock client.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;

use super::*;

fn key(kind: StatusKind, name: &str) -> StatusKey {
    StatusKey {
        kind,
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn accepted() -> Vec<Condition> {
    vec![Condition {
        type_: "ZtunnelAccepted".into(),
        status: true,
        reason: "Accepted".into(),
        message: "attached to ztunnel".into(),
    }]
}

/// Records each status patch; `gone` answers 404.
async fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    seen: tokio::sync::mpsc::UnboundedSender<(String, Value)>,
) {
    while let Some((request, send)) = handle.next_request().await {
        assert_eq!(request.method(), http::Method::PATCH);
        let path = request.uri().path().to_string();
        let body: Value =
            serde_json::from_slice(&request.into_body().collect_bytes().await.unwrap()).unwrap();
        if path.contains("/gone/") {
            let status = br#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"authorizationpolicies.security.istio.io \"gone\" not found","reason":"NotFound","details":{"name":"gone","group":"security.istio.io","kind":"authorizationpolicies"},"code":404}"#;
            let mut r = Response::new(Body::from(status.to_vec()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            send.send_response(r);
            continue;
        }
        let _ = seen.send((path, body.clone()));
        send.send_response(Response::new(Body::from(
            serde_json::to_vec(&body).unwrap(),
        )));
    }
}

#[tokio::test]
async fn only_changes_are_written_and_withdrawn_conditions_are_emptied() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(fake_api_server(handle, tx));
    let client = Client::new(service, "default");

    let bound = vec![Condition {
        type_: "istio.io/WaypointBound".into(),
        status: true,
        reason: "Bound".into(),
        message: "bound to shop/waypoint".into(),
    }];
    let wanted: Statuses = [
        (key(StatusKind::AuthorizationPolicy, "web-l4"), accepted()),
        (key(StatusKind::Service, "web"), bound.clone()),
        (key(StatusKind::AuthorizationPolicy, "gone"), accepted()),
    ]
    .into();
    let written = write_changes(&client, &Statuses::new(), &wanted).await;
    let mut patches = Vec::new();
    while let Ok(p) = seen.try_recv() {
        patches.push(p);
    }
    let paths: Vec<&str> = patches.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/apis/security.istio.io/v1/namespaces/shop/authorizationpolicies/web-l4/status",
            "/api/v1/namespaces/shop/services/web/status",
        ]
    );
    let ap = &patches[0].1;
    assert_eq!(ap["apiVersion"], "security.istio.io/v1");
    assert_eq!(ap["kind"], "AuthorizationPolicy");
    assert_eq!(ap["status"]["conditions"][0]["type"], "ZtunnelAccepted");
    assert_eq!(ap["status"]["conditions"][0]["status"], "True");
    assert_eq!(
        ap["status"]["conditions"][0]["message"],
        "attached to ztunnel"
    );
    assert_eq!(
        patches[1].1["status"]["conditions"][0]["type"],
        "istio.io/WaypointBound"
    );
    assert_eq!(written.len(), 2, "the deleted policy is forgotten");

    // Nothing changed: nothing written. The Service no longer asks for a
    // waypoint: its condition is withdrawn with an empty list.
    let again = write_changes(&client, &written, &wanted).await;
    assert!(seen.try_recv().is_err());
    let mut fewer = wanted.clone();
    fewer.remove(&key(StatusKind::Service, "web"));
    let after = write_changes(&client, &again, &fewer).await;
    let (path, body) = seen.try_recv().unwrap();
    assert_eq!(path, "/api/v1/namespaces/shop/services/web/status");
    assert_eq!(body["status"]["conditions"], serde_json::json!([]));
    assert!(!after.contains_key(&key(StatusKind::Service, "web")));
}
