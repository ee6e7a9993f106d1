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
