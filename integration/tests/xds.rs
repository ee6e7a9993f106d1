//! The delta-xDS protocol between istiod-lite and ztunnel: what each side
//! does with versions, ACKs and NACKs, against a real peer on the other end.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::Stream;
use integration::{Mesh, wait_until};
use istiod_lite::ca::Caller;
use istiod_lite::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use mesh_proto::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, Resource,
};
use mesh_proto::istio::security as spb;
use mesh_proto::istio::workload as wpb;
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use ztunnel::config as zc;

fn any(type_url: &str, name: &str, m: &impl Message) -> Resource {
    Resource {
        name: name.to_string(),
        version: "v1".into(),
        resource: Some(prost_types::Any {
            type_url: type_url.to_string(),
            value: m.encode_to_vec(),
        }),
        ..Default::default()
    }
}

fn workload(name: &str, address: Vec<u8>) -> wpb::Address {
    wpb::Address {
        r#type: Some(wpb::address::Type::Workload(wpb::Workload {
            uid: format!("Kubernetes//Pod/apps/{name}"),
            name: name.into(),
            namespace: "apps".into(),
            addresses: vec![address],
            tunnel_protocol: wpb::TunnelProtocol::Hbone as i32,
            service_account: name.into(),
            node: "node-a".into(),
            ..Default::default()
        })),
    }
}

/// A control plane that answers each first request with fixed resources
/// and reports every ACK/NACK it gets.
struct FakeControlPlane {
    responses: HashMap<String, Vec<Resource>>,
    replies: mpsc::UnboundedSender<DeltaDiscoveryRequest>,
}

type Out = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for FakeControlPlane {
    type DeltaAggregatedResourcesStream = Out;

    async fn delta_aggregated_resources(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Out>, Status> {
        let mut requests = request.into_inner();
        let (tx, rx) = mpsc::channel(8);
        let responses = self.responses.clone();
        let replies = self.replies.clone();
        tokio::spawn(async move {
            let mut nonce = 0;
            while let Ok(Some(req)) = requests.message().await {
                if !req.response_nonce.is_empty() {
                    let _ = replies.send(req);
                    continue;
                }
                // Types without an entry are never answered.
                let Some(resources) = responses.get(&req.type_url).cloned() else {
                    continue;
                };
                nonce += 1;
                let resp = DeltaDiscoveryResponse {
                    type_url: req.type_url.clone(),
                    nonce: format!("n{nonce}"),
                    resources,
                    ..Default::default()
                };
                if tx.send(Ok(resp)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// A ztunnel on node-a whose xDS is a [`FakeControlPlane`] (TLS from the
/// mesh CA), and the channel of its ACKs and NACKs.
async fn ztunnel_on_fake(
    mesh: &Mesh,
    responses: HashMap<String, Vec<Resource>>,
) -> (
    ztunnel::app::Ztunnel,
    mpsc::UnboundedReceiver<DeltaDiscoveryRequest>,
) {
    let (replies_tx, replies) = mpsc::unbounded_channel();
    let (chain, key) = mesh
        .istiod()
        .ca
        .issue_serving(&["127.0.0.1".to_string()])
        .unwrap();
    let tls = istiod_lite::grpc::server_config(&chain, &key).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fake_addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder().add_service(
        AggregatedDiscoveryServiceServer::new(FakeControlPlane {
            responses,
            replies: replies_tx,
        }),
    );
    tokio::spawn(istiod_lite::grpc::serve(
        listener,
        tls,
        router,
        std::future::pending(),
    ));
    let mut env = mesh.ztunnel_env("node-a", &[mesh.subnet.ip(2)]);
    env.insert(zc::XDS_ADDRESS.into(), fake_addr.to_string());
    (mesh.ztunnel_unready("node-a", &[], env).await, replies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_waits_for_both_types() {
    let mesh = Mesh::start().await;
    let responses = HashMap::from([(ADDRESS_TYPE.to_string(), vec![])]);
    let (z, mut replies) = ztunnel_on_fake(&mesh, responses).await;
    let ack = tokio::time::timeout(Duration::from_secs(10), replies.recv())
        .await
        .expect("the Address response is answered")
        .unwrap();
    assert_eq!(ack.type_url, ADDRESS_TYPE);
    assert!(ack.error_detail.is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!z.ready.is_ready());
    assert_eq!(z.ready.pending(), [format!("xds {AUTHORIZATION_TYPE}")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_resource_is_nacked_by_name_while_the_others_apply() {
    let mesh = Mesh::start().await;
    let good_ip = mesh.subnet.ip(2);
    let std::net::IpAddr::V4(v4) = good_ip else {
        unreachable!()
    };
    let policy = spb::Authorization {
        name: "p".into(),
        namespace: "apps".into(),
        scope: spb::Scope::Namespace as i32,
        ..Default::default()
    };
    let responses = HashMap::from([
        (
            ADDRESS_TYPE.to_string(),
            vec![
                any(
                    ADDRESS_TYPE,
                    "Kubernetes//Pod/apps/good",
                    &workload("good", v4.octets().to_vec()),
                ),
                any(
                    ADDRESS_TYPE,
                    "Kubernetes//Pod/apps/bad",
                    &workload("bad", vec![10, 0, 0, 1, 9]),
                ),
                Resource {
                    name: "garbage".into(),
                    resource: Some(prost_types::Any {
                        type_url: ADDRESS_TYPE.into(),
                        value: vec![0xff, 0xff, 0xff],
                    }),
                    ..Default::default()
                },
            ],
        ),
        (
            AUTHORIZATION_TYPE.to_string(),
            vec![any(AUTHORIZATION_TYPE, "apps/p", &policy)],
        ),
    ]);
    let (z, mut replies) = ztunnel_on_fake(&mesh, responses).await;
    wait_until("ztunnel is ready", || z.ready.is_ready()).await;

    let mut by_type = HashMap::new();
    while by_type.len() < 2 {
        let r = tokio::time::timeout(Duration::from_secs(10), replies.recv())
            .await
            .expect("a reply")
            .expect("channel open");
        by_type.insert(r.type_url.clone(), r);
    }
    let nack = by_type[ADDRESS_TYPE]
        .error_detail
        .as_ref()
        .expect("Address response NACKed");
    assert!(
        nack.message
            .contains("Kubernetes//Pod/apps/bad: workload.addresses[0]"),
        "{}",
        nack.message
    );
    assert!(
        nack.message.contains("garbage: cannot decode"),
        "{}",
        nack.message
    );
    assert!(!nack.message.contains("apps/good"), "{}", nack.message);
    assert!(
        by_type[AUTHORIZATION_TYPE].error_detail.is_none(),
        "Authorization ACKed"
    );
    assert!(
        z.state
            .workload_by_uid("Kubernetes//Pod/apps/good")
            .is_some(),
        "good workload applied"
    );
    assert!(
        z.state
            .workload_by_uid("Kubernetes//Pod/apps/bad")
            .is_none()
    );
    assert!(z.state.policy_by_key("apps/p").is_some());
    assert_eq!(z.xds_stats.resources_rejected.load(Ordering::Relaxed), 2);
}

async fn ads_client(mesh: &Mesh) -> AggregatedDiscoveryServiceClient<tonic::transport::Channel> {
    let channel = mesh_tls::control::channel(&mesh_tls::control::ControlPlaneAddress {
        address: mesh.istiod().grpc_addr.to_string(),
        server_name: None,
        root_pem: mesh.istiod().ca.root_pem().to_string(),
    })
    .unwrap();
    AggregatedDiscoveryServiceClient::new(channel)
}

/// A ztunnel's first request for `type_url`.
fn subscription(type_url: &str) -> DeltaDiscoveryRequest {
    DeltaDiscoveryRequest {
        type_url: type_url.into(),
        node: Some(mesh_proto::envoy::config::core::v3::Node {
            id: "ztunnel~1.1.1.1~test.istio-system~istio-system.svc.cluster.local".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn bearer<T>(mesh: &Mesh, body: T) -> Request<T> {
    let token = mesh.istiod().tokens.issue(
        &Caller {
            namespace: "istio-system".into(),
            service_account: "ztunnel".into(),
            node: Some("node-a".into()),
        },
        Duration::from_secs(600),
    );
    let mut r = Request::new(body);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_sends_only_what_the_client_lacks_and_logs_nacks() {
    let mesh = Mesh::start().await;
    let pods: String = (2..5)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: apps}}\nspec: {{nodeName: n}}\nstatus: {{podIP: {}}}\n---\n",
                mesh.subnet.ip(i)
            )
        })
        .collect();
    mesh.write_manifest("pods.yaml", &pods);
    wait_until("istiod reads the pods", || {
        mesh.istiod().resources.borrow().by_type[ADDRESS_TYPE].len() == 3
    })
    .await;
    let current = mesh.istiod().resources.borrow().clone();
    let addresses = &current.by_type[ADDRESS_TYPE];
    let version_of = |n: &str| addresses[n].version.clone();

    // The client already holds p2 at its current version, p3 at an old one,
    // and a pod that no longer exists.
    let held = HashMap::from([
        (
            "Kubernetes//Pod/apps/p2".to_string(),
            version_of("Kubernetes//Pod/apps/p2"),
        ),
        ("Kubernetes//Pod/apps/p3".to_string(), "stale".to_string()),
        ("Kubernetes//Pod/apps/gone".to_string(), "v0".to_string()),
    ]);
    let (tx, rx) = mpsc::channel(4);
    tx.send(DeltaDiscoveryRequest {
        initial_resource_versions: held,
        ..subscription(ADDRESS_TYPE)
    })
    .await
    .unwrap();
    let mut client = ads_client(&mesh).await;
    let mut responses = client
        .delta_aggregated_resources(bearer(&mesh, ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let first = responses.message().await.unwrap().unwrap();
    let mut names: Vec<&str> = first.resources.iter().map(|r| r.name.as_str()).collect();
    names.sort();
    assert_eq!(
        names,
        ["Kubernetes//Pod/apps/p3", "Kubernetes//Pod/apps/p4"]
    );
    assert_eq!(first.removed_resources, ["Kubernetes//Pod/apps/gone"]);

    // A NACK is counted (and logged with the node).
    tx.send(DeltaDiscoveryRequest {
        type_url: ADDRESS_TYPE.into(),
        response_nonce: first.nonce.clone(),
        error_detail: Some(mesh_proto::google::rpc::Status {
            code: 3,
            message: "Kubernetes//Pod/apps/p3: rejected for the test".into(),
            details: vec![],
        }),
        ..Default::default()
    })
    .await
    .unwrap();
    wait_until("the NACK is counted", || {
        mesh.istiod().xds_stats.nacks.load(Ordering::Relaxed) == 1
    })
    .await;

    // A change is pushed alone: one pod removed.
    mesh.write_manifest("pods.yaml", &pods.replace("name: p4", "name: p5"));
    let next = tokio::time::timeout(Duration::from_secs(10), responses.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let names: Vec<&str> = next.resources.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["Kubernetes//Pod/apps/p5"]);
    assert_eq!(next.removed_resources, ["Kubernetes//Pod/apps/p4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xds_without_a_valid_token_is_refused() {
    let mesh = Mesh::start().await;
    let (_tx, rx) = mpsc::channel::<DeltaDiscoveryRequest>(1);
    let mut client = ads_client(&mesh).await;
    let mut r = Request::new(ReceiverStream::new(rx));
    r.metadata_mut()
        .insert("authorization", "Bearer forged".parse().unwrap());
    let status = client.delta_aggregated_resources(r).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
}

/// A new policy reaches a ztunnel before the workload that names it, and a
/// deleted one after the workload stops naming it: ztunnel denies a
/// workload whose listed policy it lacks, so either other order would
/// refuse connections for a moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_are_made_before_and_broken_after_the_workloads_that_name_them() {
    let mesh = Mesh::start().await;
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: web, namespace: apps, labels: {{app: web}}}}\nspec: {{nodeName: n}}\nstatus: {{podIP: {}}}\n",
        mesh.subnet.ip(2)
    );
    mesh.write_manifest("pod.yaml", &pod);
    wait_until("istiod reads the pod", || {
        mesh.istiod().resources.borrow().by_type[ADDRESS_TYPE].len() == 1
    })
    .await;
    let (tx, rx) = mpsc::channel(8);
    for type_url in [ADDRESS_TYPE, AUTHORIZATION_TYPE] {
        tx.send(subscription(type_url)).await.unwrap();
    }
    let mut client = ads_client(&mesh).await;
    let mut responses = client
        .delta_aggregated_resources(bearer(&mesh, ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(10), responses.message())
            .await
            .expect("a response within 10 s")
            .unwrap()
            .unwrap()
    };
    // The answers to the two subscriptions.
    next().await;
    next().await;

    let policy = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: web-only, namespace: apps}\nspec:\n  selector: {matchLabels: {app: web}}\n  action: ALLOW\n  rules: [{from: [{source: {namespaces: [apps]}}]}]\n";
    mesh.write_manifest("policy.yaml", policy);
    let first = next().await;
    let second = next().await;
    assert_eq!(first.type_url, AUTHORIZATION_TYPE, "the policy comes first");
    assert_eq!(first.resources[0].name, "apps/web-only");
    assert_eq!(second.type_url, ADDRESS_TYPE);

    std::fs::remove_file(mesh.manifests().join("policy.yaml")).unwrap();
    let first = next().await;
    let second = next().await;
    assert_eq!(
        first.type_url, ADDRESS_TYPE,
        "the workload stops naming it first"
    );
    assert_eq!(second.type_url, AUTHORIZATION_TYPE);
    assert_eq!(second.removed_resources, ["apps/web-only"]);
}

/// reliability.md, waits on a peer: a proxy that subscribes and then stops
/// reading fills its stream's window and istiod-lite's queue for it, so a
/// push to it waits; istiod-lite's shutdown does not (it waited on that
/// push for ever: the push was outside the drain's `select!`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_that_stops_reading_does_not_hold_up_istiods_shutdown() {
    let mut mesh = Mesh::start().await;
    let (tx, rx) = mpsc::channel(4);
    tx.send(subscription(ADDRESS_TYPE)).await.unwrap();
    let mut client = ads_client(&mesh).await;
    // Never read.
    let _responses = client
        .delta_aggregated_resources(bearer(&mesh, ReceiverStream::new(rx)))
        .await
        .unwrap()
        .into_inner();
    // Rounds of 300 pods with long names, every round a push of 300 new
    // addresses and 300 removals (about 300 KB): in all, several times what
    // the client's window (2 MiB) and istiod-lite's queue (16 pushes) hold.
    let long = "x".repeat(220);
    for round in 0..30u32 {
        let pods: String = (0..300u32)
            .map(|i| {
                format!(
                    "apiVersion: v1\nkind: Pod\nmetadata: {{name: p{round}-{i}-{long}, namespace: apps}}\nspec: {{nodeName: n}}\nstatus: {{podIP: 10.{}.{}.{}}}\n---\n",
                    100 + round,
                    i / 250,
                    1 + i % 250
                )
            })
            .collect();
        let before = mesh.istiod().resources.borrow().generation;
        mesh.write_manifest("pods.yaml", &pods);
        wait_until("istiod takes the round", || {
            mesh.istiod().resources.borrow().generation > before
        })
        .await;
    }
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(30), mesh.stop_istiod())
        .await
        .expect("istiod-lite's shutdown ends");
    // The streams' grace is 2 s (istiod_lite::grpc::STREAMS_GRACE); the
    // overall deadline, 10 s, is a backstop this must not reach.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the shutdown waited {:?} on a proxy that does not read",
        started.elapsed()
    );
}
