//! The CA's authenticator in a cluster, against kube's mock client.

use std::time::Duration;

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::json;

use super::*;

/// Answers every TokenReview: the token of the pod `shop/web-0`, bound but
/// from an API server too old to name the node.
async fn fake_api_server(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>) {
    while let Some((request, send)) = handle.next_request().await {
        let body = request.into_body().collect_bytes().await.unwrap();
        let sent: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["spec"]["token"], "eyJhbGciOiJSUzI1NiJ9.pod-token.sig");
        let reply = json!({
            "kind": "TokenReview",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": null},
            "spec": sent["spec"],
            "status": {
                "authenticated": true,
                "user": {
                    "username": "system:serviceaccount:shop:web",
                    "uid": "7c6d5e4f-3a2b-4c1d-9e8f-7a6b5c4d3e2f",
                    "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"],
                    "extra": {"authentication.kubernetes.io/pod-name": ["web-0"],
                              "authentication.kubernetes.io/pod-uid": ["1f2e3d4c-5b6a-4978-8695-a4b3c2d1e0f9"]}
                },
                "audiences": ["istio-ca"]
            }
        });
        let mut response = Response::new(Body::from(serde_json::to_vec(&reply).unwrap()));
        *response.status_mut() = StatusCode::CREATED;
        send.send_response(response);
    }
}

#[tokio::test]
async fn service_account_tokens_are_reviewed_and_bootstrap_tokens_still_work() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(fake_api_server(handle));
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = Arc::new(TokenIssuer::load_or_generate(dir.path()).unwrap());
    let model: Model = crate::translate::tests::model_of(
        "apiVersion: v1\nkind: Pod\nmetadata: {name: web-0, namespace: shop}\nspec: {nodeName: kind-worker2}\n",
    );
    let (_tx, models) = watch::channel(Arc::new(model));
    let auth = KubeAuthenticator::new(
        TokenReviewer::new(kube::Client::new(service, "default")),
        bootstrap.clone(),
        models,
    );

    let caller = auth
        .authenticate("eyJhbGciOiJSUzI1NiJ9.pod-token.sig")
        .await
        .unwrap();
    assert_eq!(
        caller,
        Caller {
            namespace: "shop".into(),
            service_account: "web".into(),
            node: Some("kind-worker2".into()),
        },
        "the node of the pod the token names"
    );

    let ours = Caller {
        namespace: "istio-system".into(),
        service_account: "ztunnel".into(),
        node: Some("node-a".into()),
    };
    let token = bootstrap.issue(&ours, Duration::from_secs(60));
    assert_eq!(auth.authenticate(&token).await.unwrap(), ours);
    let e = auth.authenticate("v1.forged.sig").await.unwrap_err();
    assert!(
        matches!(e, AuthError::Malformed(_) | AuthError::BadSignature),
        "{e}"
    );
}
