//! ztunnel's side of ZDS (`../shared/spec/dataplane.md` §4.3), driven by a
//! scripted node agent: hello first, one Ack per request, the snapshot and
//! its reconciliation, protocol errors, and listeners really bound inside
//! the pod's network namespace. Needs root (network namespaces).

use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use integration::Mesh;
use integration::cluster::host;
use mesh_netns::Netns;
use mesh_zds::{
    AddWorkload, DelWorkload, KeepWorkload, SnapshotSent, WorkloadInfo, WorkloadRequest,
    WorkloadResponse, ZdsHello, ZdsListener, ZdsSocket, workload_request::Payload,
    workload_response,
};

/// A network namespace for a fake pod, deleted on drop.
struct PodNetns {
    name: String,
    netns: Netns,
}

impl PodNetns {
    fn new(tag: &str) -> Self {
        host::require_root();
        let name = format!("zt{}-{tag}", std::process::id());
        let _ = host::output("ip", &["netns", "del", &name], None);
        host::sh("ip", &["netns", "add", &name]);
        host::sh("ip", &["-n", &name, "link", "set", "lo", "up"]);
        let netns = Netns::open(format!("/var/run/netns/{name}")).unwrap();
        Self { name, netns }
    }

    /// Whether something accepts TCP on 127.0.0.1:`port` inside.
    fn listening(&self, port: u16) -> bool {
        self.netns
            .run(|| {
                std::net::TcpStream::connect_timeout(
                    &SocketAddr::from(([127, 0, 0, 1], port)),
                    Duration::from_millis(200),
                )
                .is_ok()
            })
            .unwrap()
    }

    /// None of the pod's proxy ports accepts. The three listeners close one
    /// by one as their accept loops see the drain, so waiting for one of
    /// them is not enough before binding another.
    fn released(&self) -> bool {
        [15001, 15006, 15008]
            .iter()
            .all(|&port| !self.listening(port))
    }
}

impl Drop for PodNetns {
    fn drop(&mut self) {
        let _ = host::output("ip", &["netns", "del", &self.name], None);
    }
}

fn add(uid: &str) -> WorkloadRequest {
    WorkloadRequest {
        payload: Some(Payload::Add(AddWorkload {
            uid: uid.into(),
            workload_info: Some(WorkloadInfo {
                name: uid.into(),
                namespace: "apps".into(),
                service_account: "default".into(),
            }),
        })),
    }
}

fn request(p: Payload) -> WorkloadRequest {
    WorkloadRequest { payload: Some(p) }
}

/// Sends one request and returns the Ack's error text ("" = ACK).
async fn send(socket: &ZdsSocket, req: &WorkloadRequest, fd: Option<&Netns>) -> String {
    socket.send(req, fd.map(|n| n.as_fd())).await.unwrap();
    let (resp, fds): (WorkloadResponse, _) =
        tokio::time::timeout(Duration::from_secs(5), socket.recv_message())
            .await
            .expect("an Ack within 5s")
            .unwrap();
    assert!(fds.is_empty());
    match resp.payload {
        Some(workload_response::Payload::Ack(a)) => a.error,
        None => panic!("response without an Ack"),
    }
}

async fn accept_with_hello(listener: &ZdsListener) -> ZdsSocket {
    let socket = tokio::time::timeout(Duration::from_secs(10), listener.accept())
        .await
        .expect("ztunnel connects")
        .unwrap();
    let (hello, fds): (ZdsHello, _) = socket.recv_message().await.unwrap();
    assert_eq!(
        hello.version,
        mesh_zds::Version::V1 as i32,
        "hello comes first"
    );
    assert!(fds.is_empty());
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_follows_the_zds_conversation() {
    let mesh = Mesh::start().await;
    let uds = mesh.dir.path().join("zds.sock");
    let listener = ZdsListener::bind(&uds).unwrap();
    let mut env = mesh.ztunnel_env("node-a", &[mesh.subnet.ip(2)]);
    env.insert("INPOD_ENABLED".into(), "true".into());
    env.insert("INPOD_UDS".into(), uds.display().to_string());
    let zt = mesh.ztunnel_unready("node-a", &[], env).await;
    let (p1, p2) = (PodNetns::new("p1"), PodNetns::new("p2"));

    // Snapshot: one Add, then SnapshotSent; ready only after it.
    let agent = accept_with_hello(&listener).await;
    assert!(
        zt.ready
            .pending()
            .contains(&"workload proxy manager".to_string())
    );
    assert_eq!(send(&agent, &add("p1"), Some(&p1.netns)).await, "");
    for port in [15001, 15006, 15008] {
        assert!(p1.listening(port), "port {port} bound inside the pod");
    }
    assert_eq!(
        send(
            &agent,
            &request(Payload::SnapshotSent(SnapshotSent {})),
            None
        )
        .await,
        ""
    );
    integration::wait_until("ztunnel is ready", || zt.ready.is_ready()).await;

    // Add again with the same namespace: idempotent.
    assert_eq!(send(&agent, &add("p1"), Some(&p1.netns)).await, "");
    // Same uid, new namespace (sandbox recreated): the old proxy goes.
    assert_eq!(send(&agent, &add("p1"), Some(&p2.netns)).await, "");
    assert!(p2.listening(15008));
    integration::wait_until("the old sandbox's listeners close", || p1.released()).await;

    // Del closes the listeners.
    assert_eq!(
        send(
            &agent,
            &request(Payload::Del(DelWorkload { uid: "p1".into() })),
            None
        )
        .await,
        ""
    );
    integration::wait_until("a deleted pod's listeners close", || p2.released()).await;

    // Protocol errors: NACK, then ztunnel drops the connection and comes back.
    let err = send(&agent, &add("p3"), None).await;
    assert!(err.contains("exactly one namespace descriptor"), "{err}");
    let agent = accept_with_hello(&listener).await;
    assert_eq!(send(&agent, &add("p1"), Some(&p1.netns)).await, "");
    assert_eq!(
        send(
            &agent,
            &request(Payload::SnapshotSent(SnapshotSent {})),
            None
        )
        .await,
        ""
    );
    let err = send(
        &agent,
        &request(Payload::Keep(KeepWorkload { uid: "p1".into() })),
        None,
    )
    .await;
    assert!(err.contains("outside a snapshot"), "{err}");

    // A new snapshot without the pod releases it.
    let agent = accept_with_hello(&listener).await;
    assert!(p1.listening(15008), "proxies survive a reconnect");
    assert_eq!(
        send(
            &agent,
            &request(Payload::SnapshotSent(SnapshotSent {})),
            None
        )
        .await,
        ""
    );
    integration::wait_until("a pod missing from the snapshot is released", || {
        p1.released()
    })
    .await;

    // An Add that cannot bind (port held) is NACKed, keeps ztunnel unready,
    // and is retried until it succeeds.
    let blocker = p1
        .netns
        .run(|| std::net::TcpListener::bind("0.0.0.0:15006"))
        .unwrap()
        .unwrap();
    let err = send(&agent, &add("p1"), Some(&p1.netns)).await;
    assert!(err.contains("15006"), "{err}");
    assert!(!zt.ready.is_ready());
    drop(blocker);
    tokio::time::sleep(Duration::from_secs(6)).await;
    integration::wait_until("the pending add is retried", || zt.ready.is_ready()).await;
    assert!(p1.listening(15006));
    zt.shutdown().await;
}
