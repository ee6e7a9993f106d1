//! The waypoint controller against kube's mock client: the objects it
//! applies and the status it writes, checked request by request.

use http::{Request, Response, StatusCode};
use kube::client::Body;
use serde_json::Value;

use super::*;

fn settings() -> WaypointSettings {
    WaypointSettings {
        image: "ambient-mesh/waypoint:0.1.0".into(),
        istiod_address: "istiod.istio-system.svc:15012".into(),
        root_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        cluster_id: "Kubernetes".into(),
        trust_domain: "cluster.local".into(),
        domain_suffix: "cluster.local".into(),
    }
}

fn gateway(edit: impl FnOnce(&mut Value)) -> DynamicObject {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/gateway-waypoint.json"
    );
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    serde_json::from_value(v).unwrap()
}

/// One request the controller made: method, path, query, body.
#[derive(Debug)]
struct Seen {
    method: http::Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// Answers apply patches as the API server would: the object back, with
/// a cluster IP given to a Service.
async fn fake_api_server(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    seen: tokio::sync::mpsc::UnboundedSender<Seen>,
) {
    while let Some((request, send)) = handle.next_request().await {
        let (parts, body) = request.into_parts();
        let body: Value = serde_json::from_slice(&body.collect_bytes().await.unwrap()).unwrap();
        let mut answer = body.clone();
        if answer["kind"] == "Service" {
            answer["spec"]["clusterIP"] = "10.96.200.7".into();
            answer["spec"]["clusterIPs"] = serde_json::json!(["10.96.200.7"]);
        }
        answer["metadata"]["resourceVersion"] = "2310".into();
        let _ = seen.send(Seen {
            method: parts.method.clone(),
            path: parts.uri.path().to_string(),
            query: parts.uri.query().unwrap_or_default().to_string(),
            content_type: parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
            body,
        });
        let mut response = Response::new(Body::from(serde_json::to_vec(&answer).unwrap()));
        *response.status_mut() = StatusCode::OK;
        send.send_response(response);
    }
}

fn mock() -> (Client, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(fake_api_server(handle, tx));
    (Client::new(service, "default"), rx)
}

fn drain(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let mut all = Vec::new();
    while let Ok(s) = rx.try_recv() {
        all.push(s);
    }
    all
}

#[tokio::test]
async fn a_waypoint_gateway_gets_its_objects_then_programmed_status() {
    let (client, mut seen) = mock();
    reconcile(&client, &gateway(|_| {}), &settings())
        .await
        .unwrap();
    let seen = drain(&mut seen);
    let paths: Vec<&str> = seen.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop/configmaps/istio-ca-root-cert",
            "/api/v1/namespaces/shop/serviceaccounts/waypoint",
            "/apis/apps/v1/namespaces/shop/deployments/waypoint",
            "/api/v1/namespaces/shop/services/waypoint",
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint/status",
        ]
    );
    for s in &seen {
        assert_eq!(s.method, http::Method::PATCH);
        assert_eq!(
            s.content_type, "application/apply-patch+yaml",
            "server-side apply"
        );
        assert!(s.query.contains("fieldManager=istiod-lite") && s.query.contains("force=true"));
    }

    // Owned by the Gateway, so Kubernetes deletes them with it.
    for s in &seen[1..4] {
        let owner = &s.body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Gateway");
        assert_eq!(owner["name"], "waypoint");
        assert_eq!(owner["uid"], "c4d5e6f7-a8b9-4c0d-9e1f-2a3b4c5d6e7f");
        assert_eq!(owner["controller"], true);
    }
    let deployment = &seen[2].body;
    assert_eq!(deployment["kind"], "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(pod["metadata"]["labels"]["istio.io/dataplane-mode"], "none");
    assert_eq!(
        pod["metadata"]["labels"]["gateway.networking.k8s.io/gateway-name"],
        "waypoint"
    );
    assert_eq!(pod["spec"]["serviceAccountName"], "waypoint");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["image"], "ambient-mesh/waypoint:0.1.0");
    let env: BTreeMap<&str, &Value> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap(), e))
        .collect();
    assert_eq!(env["GATEWAY_NAME"]["value"], "waypoint");
    assert_eq!(env["CA_ADDRESS"]["value"], "istiod.istio-system.svc:15012");
    assert_eq!(
        env["INSTANCE_IP"]["valueFrom"]["fieldRef"]["fieldPath"],
        "status.podIP"
    );
    let token = &pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(token["audience"], "istio-ca");
    let service = &seen[3].body;
    assert_eq!(service["spec"]["ports"][0]["port"], 15008);
    assert_eq!(service["spec"]["ports"][0]["appProtocol"], "all");
    assert!(
        seen[0].body["data"]["root-cert.pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );

    let status = &seen[4].body["status"];
    assert_eq!(status["addresses"][0]["value"], "10.96.200.7");
    let programmed = &status["conditions"][1];
    assert_eq!(programmed["type"], "Programmed");
    assert_eq!(programmed["status"], "True");
    assert_eq!(
        programmed["message"],
        "Resource programmed, assigned to service(s) waypoint.shop.svc.cluster.local:15008"
    );
    assert_eq!(programmed["observedGeneration"], 1);
}

#[tokio::test]
async fn an_invalid_waypoint_is_refused_in_its_status_and_nothing_is_deployed() {
    let (client, mut seen) = mock();
    let two_listeners = gateway(|g| {
        g["spec"]["listeners"]
            .as_array_mut()
            .unwrap()
            .push(serde_json::json!({"name": "http", "port": 80, "protocol": "HTTP"}));
    });
    reconcile(&client, &two_listeners, &settings())
        .await
        .unwrap();
    let seen = drain(&mut seen);
    assert_eq!(seen.len(), 1, "only the status: {seen:?}");
    assert!(seen[0].path.ends_with("/gateways/waypoint/status"));
    let accepted = &seen[0].body["status"]["conditions"][0];
    assert_eq!(accepted["status"], "False");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("Expected a single listener on port 15008 with protocol \"HBONE\""),
        "{accepted}"
    );

    let (client, mut seen) = mock();
    let ingress = gateway(|g| g["spec"]["gatewayClassName"] = "istio".into());
    reconcile(&client, &ingress, &settings()).await.unwrap();
    assert!(drain(&mut seen).is_empty(), "other classes are not ours");
}

#[tokio::test]
async fn an_unchanged_status_is_not_written_again() {
    let (client, mut seen) = mock();
    reconcile(&client, &gateway(|_| {}), &settings())
        .await
        .unwrap();
    let first = drain(&mut seen);
    let written = first.last().unwrap().body["status"].clone();

    // The Gateway as the API server now has it: our status, as written.
    let (client, mut seen) = mock();
    let current = gateway(|g| g["status"] = written.clone());
    reconcile(&client, &current, &settings()).await.unwrap();
    let again = drain(&mut seen);
    assert_eq!(
        again.len(),
        4,
        "the objects are applied (a no-op), the status is not"
    );
    assert!(again.iter().all(|s| !s.path.ends_with("/status")));

    // A new generation changes observedGeneration: written, with the
    // unchanged conditions keeping their transition time.
    let (client, mut seen) = mock();
    let newer = gateway(|g| {
        g["status"] = written.clone();
        g["metadata"]["generation"] = 2.into();
    });
    reconcile(&client, &newer, &settings()).await.unwrap();
    let third = drain(&mut seen);
    let status = &third.last().unwrap().body["status"];
    assert_eq!(status["conditions"][1]["observedGeneration"], 2);
    assert_eq!(
        status["conditions"][1]["lastTransitionTime"],
        written["conditions"][1]["lastTransitionTime"]
    );
}
