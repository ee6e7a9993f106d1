//! ztunnel's admin endpoint in process: `/config_dump` lists what the
//! ztunnel knows in the shape Istio's ztunnel uses, and never a private key.

use std::net::SocketAddr;

use integration::{Mesh, wait_until};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_lists_workloads_and_certificates_without_key_material() {
    let mesh = Mesh::start().await;
    let client = mesh.workload("sleep", "sleep", 2, "node-a");
    let server = mesh.workload("echo", "echo", 3, "node-b");
    let z = mesh.ztunnel_for("node-a", &[client, server]).await;
    let admin = z.admin_addr.expect("admin endpoint on");
    wait_until("the node's certificate is issued", || {
        z.certs.snapshot().iter().all(|(_, s)| s.current.is_some())
    })
    .await;

    let (status, body) = get(admin, "/config_dump").await;
    assert!(status.contains("200"), "{status}");
    assert!(!body.contains("PRIVATE KEY"), "key material in the dump");
    let dump: Value = serde_json::from_str(&body).unwrap();

    let workloads = dump["workloads"].as_array().unwrap();
    let names: Vec<&str> = workloads
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["echo", "sleep"]);
    let sleep = &workloads[1];
    assert_eq!(sleep["protocol"], "HBONE");
    assert_eq!(sleep["node"], "node-a");
    assert_eq!(sleep["serviceAccount"], "sleep");
    assert_eq!(sleep["workloadIps"][0], mesh.subnet.ip(2).to_string());

    let certs = dump["certificates"].as_array().unwrap();
    assert_eq!(certs.len(), 1, "only node-a's workload: {certs:?}");
    assert_eq!(
        certs[0]["identity"],
        "spiffe://cluster.local/ns/default/sa/sleep"
    );
    assert_eq!(certs[0]["state"], "Available");
    let chain = certs[0]["certChain"].as_array().unwrap();
    assert!(chain.len() >= 2, "leaf and root: {chain:?}");
    assert!(
        chain[0]["pem"]
            .as_str()
            .unwrap()
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    assert!(!chain[0]["serialNumber"].as_str().unwrap().is_empty());
    assert!(chain[0]["expirationTime"].as_str().unwrap().ends_with('Z'));

    assert_eq!(
        get(admin, "/nothing").await.0.split(' ').nth(1),
        Some("404")
    );
}

/// The dump's `workloadState` of `uid` (keyed by workload uid outside
/// in-pod mode) once it has a connection listed.
async fn connections_of(admin: SocketAddr, uid: &str) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dump: Value = serde_json::from_str(&get(admin, "/config_dump").await.1).unwrap();
        let connections = dump["workloadState"][uid]["connections"].clone();
        if !connections.is_null() || std::time::Instant::now() > deadline {
            return connections;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_dump_lists_open_connections_on_both_sides() {
    let mesh = Mesh::start().await;
    let client = mesh.workload("sleep", "sleep", 2, "node-a");
    let server = mesh.workload("echo", "echo", 3, "node-b");
    let app_addr = SocketAddr::new(server.addresses[0], 8080);
    let app = tokio::net::TcpListener::bind(app_addr).await.unwrap();
    let mut env = mesh.ztunnel_env("node-a", &client.addresses);
    env.insert(
        ztunnel::config::OUTBOUND_TARGET.into(),
        app_addr.to_string(),
    );
    let both = [client.clone(), server.clone()];
    let a = mesh.ztunnel("node-a", &both, env).await;
    let b = mesh.ztunnel_for("node-b", &both).await;

    let mut c = integration::connect_from(client.addresses[0], a.outbound_addr.unwrap())
        .await
        .unwrap();
    let local = mesh_runtime::socket::local(&c).unwrap();
    c.write_all(b"ping").await.unwrap();
    let (mut accepted, _) = app.accept().await.unwrap();
    let mut buf = [0u8; 4];
    accepted.read_exact(&mut buf).await.unwrap();

    let out = connections_of(a.admin_addr.unwrap(), &client.uid.to_string()).await;
    let hbone = SocketAddr::new(server.addresses[0], mesh_hbone::HBONE_PORT);
    assert_eq!(
        out["outbound"],
        serde_json::json!([{"src": local.to_string(), "originalDst": app_addr.to_string(),
            "actualDst": hbone.to_string(), "protocol": "HBONE"}]),
        "{out}"
    );
    assert_eq!(out["inbound"], serde_json::json!([]));
    let inb = connections_of(b.admin_addr.unwrap(), &server.uid.to_string()).await;
    let inbound = inb["inbound"].as_array().unwrap();
    assert_eq!(inbound.len(), 1, "{inb}");
    assert_eq!(
        inbound[0]["src"].as_str().unwrap().split(':').next(),
        Some(client.addresses[0].to_string().as_str())
    );
    assert_eq!(inbound[0]["actualDst"], app_addr.to_string());
    assert_eq!(inbound[0]["protocol"], "HBONE");

    // Closed connections leave the dump.
    drop(c);
    drop(accepted);
    wait_until_gone(a.admin_addr.unwrap(), &client.uid.to_string()).await;
    wait_until_gone(b.admin_addr.unwrap(), &server.uid.to_string()).await;
}

async fn wait_until_gone(admin: SocketAddr, uid: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let dump: Value = serde_json::from_str(&get(admin, "/config_dump").await.1).unwrap();
        if dump["workloadState"][uid].is_null() {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "still listed: {dump}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
