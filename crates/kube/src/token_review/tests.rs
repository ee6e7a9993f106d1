//! TokenReview against kube's mock client, answered with the API server's
//! own JSON.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::{Value, json};

use super::*;

/// The API server's answer for each token the tests send.
fn answer(token: &str, spec: &Value) -> Value {
    let status = match token {
        "bound-ztunnel-token" => json!({
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:istio-system:ztunnel",
                "uid": "2b7e9f4c-5a1d-4e3b-9c8f-6d0a1b2c3e4f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:istio-system", "system:authenticated"],
                "extra": {
                    "authentication.kubernetes.io/credential-id": ["JTI=6f0c1b2a-9e8d-4c7b-a6f5-e4d3c2b1a098"],
                    "authentication.kubernetes.io/node-name": ["kind-worker"],
                    "authentication.kubernetes.io/node-uid": ["e1f2a3b4-c5d6-4e7f-8a9b-0c1d2e3f4a5b"],
                    "authentication.kubernetes.io/pod-name": ["ztunnel-7xk2p"],
                    "authentication.kubernetes.io/pod-uid": ["9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"]
                }
            },
            "audiences": ["istio-ca"]
        }),
        "legacy-secret-token" => json!({
            "authenticated": true,
            "user": {
                "username": "system:serviceaccount:shop:web",
                "uid": "7c6d5e4f-3a2b-4c1d-9e8f-7a6b5c4d3e2f",
                "groups": ["system:serviceaccounts", "system:serviceaccounts:shop", "system:authenticated"]
            },
            "audiences": ["istio-ca"]
        }),
        "expired-token" => json!({
            "user": {},
            "error": "[invalid bearer token, service account token has expired]"
        }),
        "apiserver-audience-token" => json!({
            "authenticated": true,
            "user": {"username": "system:serviceaccount:shop:web"},
            "audiences": []
        }),
        "admin-token" => json!({
            "authenticated": true,
            "user": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
            "audiences": ["istio-ca"]
        }),
        other => panic!("unexpected token {other}"),
    };
    json!({
        "kind": "TokenReview",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"creationTimestamp": null},
        "spec": spec,
        "status": status
    })
}

async fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    reviews: Arc<AtomicUsize>,
) {
    while let Some((request, send)) = handle.next_request().await {
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(
            request.uri().path(),
            "/apis/authentication.k8s.io/v1/tokenreviews"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let sent: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(sent["kind"], "TokenReview");
        assert_eq!(sent["spec"]["audiences"], json!(["istio-ca"]));
        reviews.fetch_add(1, Ordering::SeqCst);
        let token = sent["spec"]["token"].as_str().unwrap().to_string();
        let reply = serde_json::to_vec(&answer(&token, &sent["spec"])).unwrap();
        let mut response = Response::new(Body::from(reply));
        *response.status_mut() = StatusCode::CREATED;
        send.send_response(response);
    }
}

#[tokio::test]
async fn tokens_are_reviewed_for_the_istio_ca_audience() {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let reviews = Arc::new(AtomicUsize::new(0));
    tokio::spawn(fake_api_server(handle, reviews.clone()));
    let reviewer = TokenReviewer::new(Client::new(service, "default"));

    let ztunnel = reviewer.review("bound-ztunnel-token").await.unwrap();
    assert_eq!(
        ztunnel,
        Reviewed {
            namespace: "istio-system".into(),
            service_account: "ztunnel".into(),
            pod: Some("ztunnel-7xk2p".into()),
            node: Some("kind-worker".into()),
        }
    );
    // Cached: a second call costs no review.
    assert_eq!(
        reviewer.review("bound-ztunnel-token").await.unwrap(),
        ztunnel
    );
    assert_eq!(reviews.load(Ordering::SeqCst), 1);

    let web = reviewer.review("legacy-secret-token").await.unwrap();
    assert_eq!(
        (web.namespace.as_str(), web.service_account.as_str()),
        ("shop", "web")
    );
    assert_eq!(
        (web.pod, web.node),
        (None, None),
        "a secret token names no pod"
    );

    let e = reviewer.review("expired-token").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "Kubernetes rejected the token: [invalid bearer token, service account token has expired]"
    );
    let e = reviewer
        .review("apiserver-audience-token")
        .await
        .unwrap_err();
    assert!(matches!(e, ReviewError::Audience(_)), "{e}");
    let e = reviewer.review("admin-token").await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "the token belongs to \"kubernetes-admin\", not to a service account"
    );
    assert_eq!(reviews.load(Ordering::SeqCst), 5, "failures are not cached");
}

/// An API server that takes the request and never answers: the review
/// fails (closed) after REVIEW_TIMEOUT instead of holding the caller.
#[tokio::test(start_paused = true)]
async fn a_review_the_api_server_never_answers_fails_after_the_bound() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Some(pending) = handle.next_request().await {
            held.push(pending);
        }
    });
    let reviewer = TokenReviewer::new(Client::new(service, "default"));
    let began = tokio::time::Instant::now();
    let e = tokio::time::timeout(2 * REVIEW_TIMEOUT, reviewer.review("bound-ztunnel-token"))
        .await
        .expect("the review gives up on its own")
        .unwrap_err();
    assert_eq!(began.elapsed(), REVIEW_TIMEOUT);
    assert_eq!(
        e.to_string(),
        "the Kubernetes API server could not review the token: no answer within 10s"
    );
}
