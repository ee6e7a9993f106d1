//! ztunnel with its documented default listeners (`[::]:15001`,
//! `[::]:15008`, `[::]:15006`), node-level, serving IPv4 workloads: the
//! kernel reports their addresses as `::ffff:a.b.c.d` and ztunnel must know
//! them as the workloads they are (issue 24, scope 5).
//!
//! The listeners are the real ports on the wildcard address, so this file
//! holds one test: no other in its process can bind them.

use std::net::SocketAddr;

use integration::{Mesh, connect_from};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ztunnel::config as zc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv4_workloads_are_served_on_the_default_dual_stack_listeners() {
    let mesh = Mesh::start().await;
    let client = mesh.workload("sleep", "sleep", 2, "node-a");
    let server = mesh.workload("echo", "echo", 3, "node-a");
    let app_addr = SocketAddr::new(server.addresses[0], 8080);
    let mut env = mesh.ztunnel_env("node-a", &[]);
    for default in [
        zc::OUTBOUND_ADDR,
        zc::INBOUND_ADDR,
        zc::INBOUND_PLAINTEXT_ADDR,
    ] {
        env.remove(default);
    }
    env.insert(zc::OUTBOUND_TARGET.into(), app_addr.to_string());
    let z = mesh
        .ztunnel("node-a", &[client.clone(), server.clone()], env)
        .await;
    let outbound = z.outbound_addr.expect("node-level listeners");
    assert_eq!(
        outbound,
        "[::]:15001".parse().unwrap(),
        "ztunnel listens where its defaults say"
    );

    let app = TcpListener::bind(app_addr).await.unwrap();
    let served = tokio::spawn(async move {
        let (mut s, peer) = app.accept().await.unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).await.unwrap();
        s.write_all(&buf).await.unwrap();
        peer
    });
    // An IPv4 client reaches the dual-stack outbound listener; its tunnel
    // goes to the server's ztunnel (this one) on [::]:15008, over IPv4.
    let via = SocketAddr::new(mesh.subnet.ip(1), outbound.port());
    let mut c = connect_from(client.addresses[0], via)
        .await
        .expect("connect to ztunnel's outbound listener");
    c.write_all(b"hello").await.unwrap();
    let mut echoed = [0u8; 5];
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        c.read_exact(&mut echoed),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the tunnel carries the bytes: the source and destination are workloads");
    assert_eq!(&echoed, b"hello");
    let peer = served.await.unwrap();
    assert_eq!(
        peer.ip(),
        client.addresses[0],
        "the application sees the client's IPv4 address"
    );

    // While the tunnel is open, ztunnel's view of it names both ends by
    // their IPv4 addresses.
    let admin = z.admin_addr.expect("admin endpoint on");
    let uid = server.uid.to_string();
    let mut dump = serde_json::Value::Null;
    for _ in 0..100 {
        dump = serde_json::from_str(&get(admin, "/config_dump").await).unwrap();
        if !dump["workloadState"][&uid]["connections"].is_null() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let connections = dump["workloadState"][&uid]["connections"].to_string();
    assert!(
        connections.contains(&client.addresses[0].to_string()),
        "the inbound connection is from the client's IPv4 address: {connections}"
    );
    assert!(
        !dump.to_string().contains("::ffff:"),
        "no IPv4-mapped address reaches ztunnel's state: {dump}"
    );
    drop(c);
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nhost: admin\r\nconnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).await.unwrap();
    raw.split_once("\r\n\r\n").unwrap().1.to_string()
}
