//! The CA as node proxies see it: over TLS on the gRPC port, authenticated
//! with bootstrap tokens, with impersonation limited to pods on the caller's node.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use integration::Mesh;
use istiod_lite::ca::Caller;
use mesh_core::Identity;
use mesh_tls::caclient::CaClientConfig;
use mesh_tls::control::ControlPlaneAddress;
use mesh_tls::{AuthSource, CaClient, CertificateSource, Error};

fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

fn client(mesh: &Mesh, caller: Option<Caller>, impersonate: bool) -> CaClient {
    let token = caller
        .map(|c| mesh.istiod().tokens.issue(&c, Duration::from_secs(600)))
        .unwrap_or_else(|| "v1.forged.token".into());
    CaClient::new(CaClientConfig {
        target: ControlPlaneAddress {
            address: mesh.istiod().grpc_addr.to_string(),
            server_name: None,
            root_pem: mesh.istiod().ca.root_pem().to_string(),
        },
        auth: AuthSource::Static(token),
        cluster_id: "Kubernetes".into(),
        ttl: Duration::from_secs(3600),
        impersonate,
    })
    .unwrap()
}

fn node_proxy(node: &str) -> Option<Caller> {
    Some(Caller {
        namespace: "istio-system".into(),
        service_account: "ztunnel".into(),
        node: Some(node.into()),
    })
}

fn refusal(err: Error) -> (tonic::Code, String) {
    match err {
        Error::CaRefused { code, message, .. } => (code, message),
        other => panic!("expected a refusal from the CA, got {other}"),
    }
}

#[tokio::test]
async fn impersonation_needs_a_pod_with_that_identity_on_the_callers_node() {
    let mesh = Mesh::start().await;
    let zt_a = client(&mesh, node_proxy("node-a"), true);

    let (code, msg) = refusal(zt_a.fetch(&id("ghost")).await.unwrap_err());
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("no pod") && msg.contains("node-a"), "{msg}");

    // A pod with that identity on another node does not help.
    mesh.istiod().pods.add_pod("node-b", "default", "ghost");
    let (_, msg) = refusal(zt_a.fetch(&id("ghost")).await.unwrap_err());
    assert!(msg.contains("node-a"), "{msg}");

    // On the caller's own node it does.
    mesh.istiod().pods.add_pod("node-a", "default", "ghost");
    let cert = zt_a.fetch(&id("ghost")).await.unwrap();
    assert_eq!(cert.identity(), &id("ghost"));
    let chain = cert.chain_pems();
    assert!(!chain.is_empty());
    assert_eq!(cert.root_pems().concat(), mesh.istiod().ca.root_pem());
}

#[tokio::test]
async fn only_trusted_node_proxies_may_impersonate() {
    let mesh = Mesh::start().await;
    mesh.istiod().pods.add_pod("node-a", "default", "ghost");
    let workload = Some(Caller {
        namespace: "default".into(),
        service_account: "sleep".into(),
        node: Some("node-a".into()),
    });
    let (code, msg) = refusal(
        client(&mesh, workload.clone(), true)
            .fetch(&id("ghost"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, tonic::Code::PermissionDenied);
    assert!(msg.contains("not a trusted node proxy"), "{msg}");

    // Without impersonation a workload gets its own identity.
    let own = client(&mesh, workload, false)
        .fetch(&id("sleep"))
        .await
        .unwrap();
    assert_eq!(own.identity(), &id("sleep"));
}

#[tokio::test]
async fn forged_tokens_are_refused() {
    let mesh = Mesh::start().await;
    let (code, msg) = refusal(
        client(&mesh, None, false)
            .fetch(&id("sleep"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, tonic::Code::Unauthenticated);
    assert!(msg.contains("token rejected"), "{msg}");
}

#[tokio::test]
async fn plugged_in_key_readable_by_others_stops_startup() {
    let dir = tempfile::tempdir().unwrap();
    // Lay out a plug-in directory, then loosen the key's permissions.
    istiod_lite::ca::CertificateAuthority::load_or_generate(dir.path(), Default::default())
        .unwrap();
    let plugged = dir.path().join("ca");
    std::fs::set_permissions(
        plugged.join("ca-key.pem"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let mut config = istiod_lite::config::Config::local(dir.path().join("state"));
    config.ca_certs_dir = Some(plugged);
    let err = match istiod_lite::app::Istiod::start(config).await {
        Ok(_) => panic!("istiod-lite started with a world-readable CA key"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        err.contains("ca-key.pem") && err.contains("chmod 600"),
        "{err}"
    );
}

/// reliability.md C4: callers without a credential are refused by the CA
/// and by xDS, whatever they claim in other metadata, and from loopback
/// too (the gRPC port trusts no address).
#[tokio::test]
async fn callers_without_a_token_are_refused_whatever_they_claim() {
    use mesh_proto::envoy::service::discovery::v3::DeltaDiscoveryRequest;
    use mesh_proto::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
    use mesh_proto::istio::v1::auth::IstioCertificateRequest;
    use mesh_proto::istio::v1::auth::istio_certificate_service_client::IstioCertificateServiceClient;

    let mesh = Mesh::start().await;
    assert!(mesh.istiod().grpc_addr.ip().is_loopback());
    let channel = mesh_tls::control::channel(&ControlPlaneAddress {
        address: mesh.istiod().grpc_addr.to_string(),
        server_name: None,
        root_pem: mesh.istiod().ca.root_pem().to_string(),
    })
    .unwrap();
    let csr = mesh_tls::csr::generate(&id("sleep")).unwrap();
    const CLAIMS: &[(&str, &str)] = &[
        (
            "impersonatedidentity",
            "spiffe://cluster.local/ns/default/sa/sleep",
        ),
        (
            "x-forwarded-client-cert",
            "By=spiffe://cluster.local/ns/istio-system/sa/ztunnel",
        ),
        ("x-forwarded-for", "127.0.0.1"),
        ("clusterid", "Kubernetes"),
    ];
    fn with_claims<T>(mut request: tonic::Request<T>) -> tonic::Request<T> {
        for (k, v) in CLAIMS {
            request.metadata_mut().insert(*k, v.parse().unwrap());
        }
        request
    }
    let mut ca = IstioCertificateServiceClient::new(channel.clone());
    let refused = ca
        .create_certificate(with_claims(tonic::Request::new(IstioCertificateRequest {
            csr: csr.csr_pem.clone(),
            validity_duration: 3600,
            metadata: None,
        })))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(!format!("{refused:?}").contains("PRIVATE KEY"));

    let mut ads = AggregatedDiscoveryServiceClient::new(channel);
    let (tx, rx) = tokio::sync::mpsc::channel::<DeltaDiscoveryRequest>(1);
    tx.send(DeltaDiscoveryRequest::default()).await.unwrap();
    let refused = ads
        .delta_aggregated_resources(with_claims(tonic::Request::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
}
