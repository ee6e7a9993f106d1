//! The control plane end to end, in process: istiod-lite reads a manifest
//! directory and pushes it over delta xDS to two ztunnels, which enforce L4
//! policy on real HBONE and plaintext connections.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use integration::{Mesh, connect_from, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztunnel::app::Ztunnel;
use ztunnel::config as zc;

/// Namespace `apps` (ambient) with `sleep` on node-a and `echo` on node-b.
fn base(sleep: IpAddr, echo: IpAddr) -> String {
    format!(
        "apiVersion: v1
kind: Namespace
metadata: {{name: apps, labels: {{istio.io/dataplane-mode: ambient}}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: sleep, namespace: apps, labels: {{app: sleep}}}}
spec: {{nodeName: node-a, serviceAccountName: sleep}}
status: {{podIP: {sleep}}}
---
apiVersion: v1
kind: Pod
metadata: {{name: echo, namespace: apps, labels: {{app: echo}}}}
spec: {{nodeName: node-b, serviceAccountName: echo}}
status: {{podIP: {echo}}}
"
    )
}

fn policy(name: &str, spec: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: {name}, namespace: apps}}\nspec: {spec}\n"
    )
}

struct Cluster {
    mesh: Mesh,
    sleep: IpAddr,
    app: SocketAddr,
    a: Ztunnel,
    b: Ztunnel,
}

/// Starts the mesh from manifests, an echo app on `echo:8080`, and both
/// ztunnels with empty state: all they know comes over xDS.
async fn cluster() -> Cluster {
    cluster_sending_to(None).await
}

/// As [`cluster`], with node-a's outbound aimed at `target` (host part of
/// the test subnet) instead of the echo pod.
async fn cluster_sending_to(target: Option<(u8, u16)>) -> Cluster {
    cluster_with(target, &[]).await
}

/// As [`cluster_sending_to`], with extra environment for both ztunnels.
async fn cluster_with(target: Option<(u8, u16)>, extra: &[(&str, &str)]) -> Cluster {
    let mesh = Mesh::start().await;
    let (sleep, echo) = (mesh.subnet.ip(2), mesh.subnet.ip(3));
    mesh.write_manifest("base.yaml", &base(sleep, echo));
    // The first scan happened at start; wait for this one to be read.
    wait_until("istiod reads the pods", || {
        mesh.istiod().resources.borrow().by_type[istiod_lite::xds::ADDRESS_TYPE].len() == 2
    })
    .await;
    let app = SocketAddr::new(echo, 8080);
    let listener = TcpListener::bind(app).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let mut env_a = mesh.ztunnel_env("node-a", &[sleep]);
    let outbound = target.map_or(app, |(host, port)| {
        SocketAddr::new(mesh.subnet.ip(host), port)
    });
    env_a.insert(zc::OUTBOUND_TARGET.into(), outbound.to_string());
    let mut env_b = mesh.ztunnel_env("node-b", &[echo]);
    env_b.insert(zc::INBOUND_PLAINTEXT_TARGET.into(), app.to_string());
    for (k, v) in extra {
        env_a.insert(k.to_string(), v.to_string());
        env_b.insert(k.to_string(), v.to_string());
    }
    let a = mesh.ztunnel("node-a", &[], env_a).await;
    let b = mesh.ztunnel("node-b", &[], env_b).await;
    for z in [&a, &b] {
        wait_until("ztunnel is ready", || z.ready.is_ready()).await;
    }
    Cluster {
        mesh,
        sleep,
        app,
        a,
        b,
    }
}

/// Sends a line and expects it back.
async fn round_trip(c: &mut TcpStream) -> std::io::Result<()> {
    c.write_all(b"ping\n").await?;
    let mut buf = [0u8; 5];
    tokio::time::timeout(Duration::from_secs(10), c.read_exact(&mut buf))
        .await
        .map_err(|_| std::io::Error::other("no echo within 10 s"))??;
    assert_eq!(&buf, b"ping\n");
    Ok(())
}

async fn sleep_to_echo(t: &Cluster) -> std::io::Result<TcpStream> {
    let mut c = connect_from(t.sleep, t.a.outbound_addr.expect("node-level listeners")).await?;
    round_trip(&mut c).await?;
    Ok(c)
}

/// How long until the peer closes `c` (EOF or reset), at most 10 s.
async fn closed_within(c: &mut TcpStream) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_closes_open_connections_it_no_longer_allows() {
    let t = cluster().await;

    // Selector policy: only `other` may reach echo.
    let mut open = sleep_to_echo(&t).await.expect("allowed before any policy");
    t.mesh.write_manifest(
        "policy.yaml",
        &policy(
            "only-other",
            "{selector: {matchLabels: {app: echo}}, rules: [{from: [{source: {principals: [cluster.local/ns/apps/sa/other]}}]}]}",
        ),
    );
    let took = closed_within(&mut open)
        .await
        .expect("the open connection is closed");
    eprintln!("open connection closed {took:?} after the policy manifest was written");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert!(
        sleep_to_echo(&t).await.is_err(),
        "new connections are refused too"
    );

    // Back to no policy: allowed again.
    std::fs::remove_file(t.mesh.manifests().join("policy.yaml")).unwrap();
    wait_until("the policy is gone", || t.b.state.policies().len() == 1).await;
    let mut open = sleep_to_echo(&t)
        .await
        .expect("allowed once the policy is gone");

    // Namespace-wide DENY of the client's namespace.
    t.mesh.write_manifest(
        "policy.yaml",
        &policy(
            "deny-apps",
            "{action: DENY, rules: [{from: [{source: {namespaces: [apps]}}]}]}",
        ),
    );
    let took = closed_within(&mut open)
        .await
        .expect("the open connection is closed");
    eprintln!("open connection closed {took:?} after the policy manifest was written");
    assert!(took < Duration::from_secs(2), "closed after {took:?}");
    assert!(t.b.connections.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mtls_refuses_plaintext_that_permissive_accepts() {
    let t = cluster().await;
    let plaintext = t.b.inbound_plaintext_addr.expect("plaintext listener");
    let outsider = t.mesh.subnet.ip(9);

    // PERMISSIVE (the default): a client outside the mesh gets through.
    let mut c = connect_from(outsider, plaintext).await.unwrap();
    round_trip(&mut c)
        .await
        .expect("plaintext accepted under PERMISSIVE");

    t.mesh.write_manifest(
        "mtls.yaml",
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: apps}\nspec: {mtls: {mode: STRICT}}\n",
    );
    // The open plaintext connection is closed, new ones are refused...
    assert!(closed_within(&mut c).await.expect("closed") < Duration::from_secs(2));
    // (The reset may even beat connect() back.)
    if let Ok(mut c) = connect_from(outsider, plaintext).await {
        assert!(
            round_trip(&mut c).await.is_err(),
            "plaintext refused under STRICT"
        );
    }
    // ...while mTLS from the mesh still works.
    sleep_to_echo(&t).await.expect("HBONE still allowed");
    let _ = t.app;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_control_plane_known_destinations_keep_working_and_reconnection_sends_only_changes()
 {
    let mut t = cluster().await;
    sleep_to_echo(&t).await.expect("works with istiod up");

    t.mesh.stop_istiod().await;
    let received_before =
        [&t.a, &t.b].map(|z| z.xds_stats.resources_received.load(Ordering::Relaxed));
    let connects_before = [&t.a, &t.b].map(|z| z.xds_stats.connects.load(Ordering::Relaxed));
    // Still working on the state and certificates held.
    sleep_to_echo(&t).await.expect("works with istiod down");

    // One change while the control plane is away.
    t.mesh
        .write_manifest("extra.yaml", &policy("audit-nothing", "{action: DENY}"));
    t.mesh.start_istiod().await;
    for (i, z) in [&t.a, &t.b].into_iter().enumerate() {
        wait_until("the change arrives", || {
            z.state.policy_by_key("apps/audit-nothing").is_some()
        })
        .await;
        assert!(z.xds_stats.connects.load(Ordering::Relaxed) > connects_before[i]);
        let received = z.xds_stats.resources_received.load(Ordering::Relaxed) - received_before[i];
        assert_eq!(received, 1, "only the changed resource is sent again");
    }
    sleep_to_echo(&t)
        .await
        .expect("works after the control plane returns");
}

/// reliability.md K2: the CA away for longer than the certificates live.
/// New connections then fail, and none falls back to plaintext (node-a's
/// outbound target is the echo itself, so a fallback would get an echo);
/// a tunnel opened before expiry is not cut (as upstream); once the CA is
/// back, new certificates and connections come without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_ca_away_past_certificate_expiry_new_connections_fail_closed_and_recover() {
    let mut t = cluster_with(None, &[(zc::SECRET_TTL, "4s")]).await;
    let mut held = sleep_to_echo(&t).await.expect("works with the CA up");

    t.mesh.stop_istiod().await;
    // Second-granular validity: after 6 s every certificate has ended.
    tokio::time::sleep(Duration::from_secs(6)).await;
    for _ in 0..3 {
        assert!(
            sleep_to_echo(&t).await.is_err(),
            "a new connection was served with every certificate expired"
        );
    }
    round_trip(&mut held)
        .await
        .expect("a tunnel established before expiry carries on");

    t.mesh.start_istiod().await;
    let back = Instant::now();
    loop {
        if sleep_to_echo(&t).await.is_ok() {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(30),
            "no connection 30 s after the CA came back"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("served again {:?} after the CA came back", back.elapsed());
}

/// The value of `istio_crl_policy_rejections_total{reporter}` in `z`'s
/// metrics (0 when the series does not exist yet).
fn crl_rejections(z: &Ztunnel, reporter: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &z.registry).unwrap();
    let series = format!("istio_crl_policy_rejections_total{{reporter=\"{reporter}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .map_or(0, |v| v.trim().parse().unwrap())
}

/// Both ztunnels read CRLs from `crl` (absent at start), and a tunnel from
/// sleep to echo is open.
struct CrlMesh {
    t: Cluster,
    held: TcpStream,
    crl: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn crl_mesh() -> CrlMesh {
    let dir = tempfile::tempdir().unwrap();
    let crl = dir.path().join("ca-crl.pem");
    let t = cluster_with(None, &[(zc::CRL_PATH, crl.to_str().unwrap())]).await;
    let held = sleep_to_echo(&t).await.expect("works before any CRL");
    CrlMesh {
        t,
        held,
        crl,
        _dir: dir,
    }
}

impl CrlMesh {
    /// Writes a CRL from the mesh CA revoking the certificate `z` holds for
    /// service account `sa` (none: revoking nothing).
    async fn publish(&self, revoked: Option<(&Ztunnel, &str)>) {
        let mut serials = Vec::new();
        if let Some((z, sa)) = revoked {
            let id = format!("spiffe://cluster.local/ns/apps/sa/{sa}")
                .parse()
                .unwrap();
            let cert = z.certs.fetch_certificate(&id).await.unwrap();
            serials.push(cert.validity().serial.clone());
        }
        let ca = &self.t.mesh.istiod().ca;
        let pem = ca
            .revocation_list(&serials, Duration::from_secs(3600))
            .unwrap();
        std::fs::write(&self.crl, pem).unwrap();
    }

    /// Waits until the held tunnel stops carrying data, failing after 10 s.
    async fn until_the_tunnel_closes(&mut self, whose: &str) {
        let written = Instant::now();
        while round_trip(&mut self.held).await.is_ok() {
            assert!(
                written.elapsed() < Duration::from_secs(10),
                "the tunnel of a revoked {whose} still carries data 10 s after the CRL was written"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "tunnel closed {:?} after the CRL was written",
            written.elapsed()
        );
    }
}

/// reliability.md M7: a CRL naming the client's certificate, written while
/// a tunnel is open. node-b closes the tunnel (the round-trip loop fails)
/// within 10 s, refuses new connections, and counts both; a CRL without
/// the serial lets new connections in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_revoking_the_client_certificate_closes_its_tunnel_and_refuses_new_ones() {
    let mut m = crl_mesh().await;
    m.publish(Some((&m.t.a, "sleep"))).await;
    m.until_the_tunnel_closes("client").await;
    let t = &m.t;
    for _ in 0..3 {
        assert!(
            sleep_to_echo(t).await.is_err(),
            "a new connection was served with the client's certificate revoked"
        );
    }
    // The tunnel closed, then each new handshake was refused.
    assert!(crl_rejections(&t.b, "destination") >= 4);
    assert_eq!(
        crl_rejections(&t.a, "source"),
        0,
        "node-a has nothing to refuse"
    );

    m.publish(None).await;
    let lifted = Instant::now();
    while sleep_to_echo(&m.t).await.is_err() {
        assert!(
            lifted.elapsed() < Duration::from_secs(10),
            "still refused 10 s after the CRL was lifted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// M7 on the other side: a CRL naming the server's certificate. node-a
/// closes its pooled connection with the tunnels on it, and refuses to
/// dial the server again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crl_revoking_the_server_certificate_closes_the_pooled_connection() {
    let mut m = crl_mesh().await;
    m.publish(Some((&m.t.b, "echo"))).await;
    m.until_the_tunnel_closes("server").await;
    assert!(sleep_to_echo(&m.t).await.is_err());
    assert!(crl_rejections(&m.t.a, "source") >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_resource_from_istiod_is_nacked_while_the_others_apply() {
    use istiod_lite::xds::resources::Versioned;
    use istiod_lite::xds::{ADDRESS_TYPE, AUTHORIZATION_TYPE};
    use std::sync::Arc;

    let t = cluster().await;
    let mut set = (**t.mesh.istiod().resources.borrow()).clone();
    set.generation += 1;
    // A workload whose address has 5 bytes, next to a valid new policy.
    let garbage = Versioned {
        version: "bad".into(),
        body: prost_types::Any {
            type_url: ADDRESS_TYPE.into(),
            value: mesh_proto_bytes_of_bad_workload(),
        },
    };
    set.by_type
        .get_mut(ADDRESS_TYPE)
        .unwrap()
        .insert("Kubernetes//Pod/apps/broken".into(), Arc::new(garbage));
    // A valid new policy (a DENY without rules: no effect on traffic).
    let extra = mesh_proto::istio::security::Authorization {
        name: "extra".into(),
        namespace: "apps".into(),
        scope: mesh_proto::istio::security::Scope::Namespace as i32,
        action: mesh_proto::istio::security::Action::Deny as i32,
        ..Default::default()
    };
    set.by_type.get_mut(AUTHORIZATION_TYPE).unwrap().insert(
        "apps/extra".into(),
        Arc::new(Versioned {
            version: "extra-1".into(),
            body: prost_types::Any {
                type_url: AUTHORIZATION_TYPE.into(),
                value: prost::Message::encode_to_vec(&extra),
            },
        }),
    );
    t.mesh.istiod().publish(set);

    wait_until("both ztunnels NACK", || {
        t.mesh.istiod().xds_stats.nacks.load(Ordering::Relaxed) >= 2
    })
    .await;
    for z in [&t.a, &t.b] {
        wait_until("the valid policy applies", || {
            z.state.policy_by_key("apps/extra").is_some()
        })
        .await;
        assert!(
            z.state
                .workload_by_uid("Kubernetes//Pod/apps/broken")
                .is_none()
        );
        assert_eq!(z.xds_stats.resources_rejected.load(Ordering::Relaxed), 1);
    }
    sleep_to_echo(&t).await.expect("the mesh keeps working");
}

fn mesh_proto_bytes_of_bad_workload() -> Vec<u8> {
    use prost::Message;
    let w = mesh_proto::istio::workload::Address {
        r#type: Some(mesh_proto::istio::workload::address::Type::Workload(
            mesh_proto::istio::workload::Workload {
                uid: "Kubernetes//Pod/apps/broken".into(),
                name: "broken".into(),
                namespace: "apps".into(),
                addresses: vec![vec![10, 0, 0, 1, 7]],
                ..Default::default()
            },
        )),
    };
    w.encode_to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_file_with_a_yaml_error_leaves_the_previous_policy_in_force() {
    let t = cluster().await;
    let deny = policy(
        "deny-apps",
        "{action: DENY, rules: [{from: [{source: {namespaces: [apps]}}]}]}",
    );
    t.mesh.write_manifest("deny.yaml", &deny);
    wait_until("the DENY applies", || {
        t.b.state.policy_by_key("apps/deny-apps").is_some()
    })
    .await;
    assert!(sleep_to_echo(&t).await.is_err(), "denied");

    t.mesh
        .write_manifest("deny.yaml", &deny.replace("rules: [{", "rules: [{{"));
    wait_until("the error is reported", || {
        !t.mesh.istiod().manifest_errors.lock().unwrap().is_empty()
    })
    .await;
    let error = t.mesh.istiod().manifest_errors.lock().unwrap()[0].to_string();
    assert!(error.contains("deny.yaml"), "{error}");
    assert!(error.contains("not valid YAML at line"), "{error}");
    assert!(
        error.contains("AuthorizationPolicy apps/deny-apps"),
        "{error}"
    );
    // Past any debounce and push: still denied.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(t.b.state.policy_by_key("apps/deny-apps").is_some());
    assert!(
        sleep_to_echo(&t).await.is_err(),
        "the last good DENY is still in force"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_vip_reaches_an_endpoint_on_its_target_port() {
    // Service `echo` at .100:80 → the echo pod's named port `http` (8080).
    let t = cluster_sending_to(Some((100, 80))).await;
    let vip = t.mesh.subnet.ip(100);
    let echo = t.mesh.subnet.ip(3);
    let manifests = format!(
        "{}---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: apps}}
spec: {{clusterIP: {vip}, selector: {{app: echo}}, ports: [{{port: 80, targetPort: http}}]}}
",
        base(t.sleep, echo).replace(
            "spec: {nodeName: node-b, serviceAccountName: echo}",
            "spec: {nodeName: node-b, serviceAccountName: echo, containers: [{name: e, ports: [{name: http, containerPort: 8080}]}]}",
        )
    );
    t.mesh.write_manifest("base.yaml", &manifests);
    wait_until("the service arrives", || {
        t.a.state
            .service("apps/echo.apps.svc.cluster.local")
            .is_some()
            && t.a
                .state
                .workload_by_uid("Kubernetes//Pod/apps/echo")
                .is_some_and(|w| !w.services.is_empty())
    })
    .await;
    sleep_to_echo(&t)
        .await
        .expect("VIP:80 reaches echo:8080 over HBONE");

    // Policy is enforced on the endpoint as for direct traffic.
    t.mesh.write_manifest(
        "deny.yaml",
        &policy(
            "deny-apps",
            "{action: DENY, rules: [{from: [{source: {namespaces: [apps]}}]}]}",
        ),
    );
    wait_until("the DENY applies", || {
        t.b.state.policy_by_key("apps/deny-apps").is_some()
    })
    .await;
    assert!(sleep_to_echo(&t).await.is_err());
}
