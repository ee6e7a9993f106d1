//! The waypoint in process, fed by istiod-lite: the CONNECT streams of one
//! pooled HBONE connection are each their own task, so their requests are
//! served on every worker thread, not on the thread that drives the
//! connection.
//!
//! The proof is the waypoint's own access log: a tracing layer records the
//! thread each `request complete` line was written on. One test per file,
//! because the layer must be the process's global subscriber.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use integration::{Mesh, wait_until};
use istiod_lite::ca::Caller;
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::pool::DefaultSocketFactory;
use mesh_hbone::{H2Config, Pool, WorkloadKey};
use mesh_tls::caclient::{AuthSource, CaClientConfig};
use mesh_tls::control::ControlPlaneAddress;
use mesh_tls::{CaClient, SecretManager, SecretManagerConfig};
use tokio::net::TcpListener;
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};

/// What the layer saw: access-log lines per thread, inbound connections.
#[derive(Default)]
struct Seen {
    requests_by_thread: HashMap<ThreadId, usize>,
    hbone_connections: usize,
}

struct Recorder(Arc<Mutex<Seen>>);

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Recorder {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        let mut m = Message(String::new());
        event.record(&mut m);
        let mut seen = self.0.lock().unwrap();
        match m.0.as_str() {
            "request complete" if event.metadata().target() == "access" => {
                *seen
                    .requests_by_thread
                    .entry(std::thread::current().id())
                    .or_default() += 1;
            }
            "HBONE connection established" => seen.hbone_connections += 1,
            _ => {}
        }
    }
}

const CONCURRENT: usize = 48;
const ROUNDS: usize = 5;

#[test]
fn streams_of_one_hbone_connection_are_served_on_every_worker_thread() {
    let seen = Arc::new(Mutex::new(Seen::default()));
    tracing::subscriber::set_global_default(
        tracing_subscriber::registry().with(Recorder(seen.clone())),
    )
    .expect("the only subscriber in this test binary");
    let workers = 2;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .unwrap()
        .block_on(run(seen, workers));
}

async fn run(seen: Arc<Mutex<Seen>>, workers: usize) {
    let mesh = Mesh::start().await;
    let waypoint_ip = mesh.subnet.ip(5);
    let web_ip = mesh.subnet.ip(10);
    let web = TcpListener::bind((web_ip, 8080)).await.unwrap();
    tokio::spawn(serve_web(web));
    mesh.write_manifest(
        "shop.yaml",
        &format!(
            "apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels: {{istio.io/dataplane-mode: ambient, istio.io/use-waypoint: waypoint}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: waypoint, namespace: shop}}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{{name: mesh, port: 15008, protocol: HBONE}}]
---
apiVersion: v1
kind: Service
metadata: {{name: waypoint, namespace: shop}}
spec:
  clusterIP: 10.96.0.2
  selector: {{gateway.networking.k8s.io/gateway-name: waypoint}}
  ports: [{{name: mesh, port: 15008}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: shop
  labels: {{gateway.networking.k8s.io/gateway-name: waypoint, istio.io/dataplane-mode: none}}
spec: {{nodeName: n, serviceAccountName: waypoint}}
status: {{podIP: {waypoint_ip}}}
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: shop}}
spec:
  clusterIP: 10.96.0.3
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Pod
metadata:
  name: web-0
  namespace: shop
  labels: {{app: web, istio.io/dataplane-mode: none}}
spec: {{nodeName: n}}
status: {{podIP: {web_ip}}}
"
        ),
    );
    let istiod = mesh.istiod();
    let token = |ns: &str, sa: &str| {
        istiod.tokens.issue(
            &Caller {
                namespace: ns.into(),
                service_account: sa.into(),
                node: None,
            },
            Duration::from_secs(3600),
        )
    };
    let env: HashMap<&str, String> = [
        ("POD_NAMESPACE", "shop".to_string()),
        ("GATEWAY_NAME", "waypoint".into()),
        ("INSTANCE_IP", waypoint_ip.to_string()),
        (
            "INBOUND_ADDR",
            SocketAddr::new(waypoint_ip, 15008).to_string(),
        ),
        ("CA_ADDRESS", istiod.grpc_addr.to_string()),
        ("CA_ROOT_CA", istiod.ca.root_pem().to_string()),
        ("AUTH_TOKEN", token("shop", "waypoint")),
        ("STATS_ADDR", "none".into()),
        ("ADMIN_ADDR", "none".into()),
        ("READINESS_ADDR", "none".into()),
    ]
    .into();
    let config = waypoint::config::Config::from_env(|k| env.get(k).cloned()).unwrap();
    let wp = waypoint::app::Waypoint::start(config).await.unwrap();
    wait_until("the waypoint has its configuration", || {
        wp.bindings.borrow().service_count() == 1
    })
    .await;

    // A client of the mesh, as a ztunnel would be: one pool, one identity.
    let ca = CaClient::new(CaClientConfig {
        target: ControlPlaneAddress {
            address: istiod.grpc_addr.to_string(),
            server_name: None,
            root_pem: istiod.ca.root_pem().to_string(),
        },
        auth: AuthSource::Static(token("shop", "client")),
        cluster_id: "Kubernetes".into(),
        ttl: Duration::from_secs(3600),
        impersonate: false,
    })
    .unwrap();
    let certs = SecretManager::new(Arc::new(ca), SecretManagerConfig::default());
    let pool = Pool::new(certs, H2Config::default(), Arc::new(DefaultSocketFactory));
    let key = WorkloadKey {
        src_id: "spiffe://cluster.local/ns/shop/sa/client".parse().unwrap(),
        dst_id: vec![
            "spiffe://cluster.local/ns/shop/sa/waypoint"
                .parse()
                .unwrap(),
        ],
        dst: SocketAddr::new(waypoint_ip, 15008),
        src: mesh.subnet.ip(20),
    };
    for _ in 0..ROUNDS {
        let requests = (0..CONCURRENT).map(|_| {
            let (pool, key) = (pool.clone(), key.clone());
            tokio::spawn(async move { get_through(&pool, &key).await })
        });
        for r in futures::future::join_all(requests).await {
            assert_eq!(r.unwrap(), "web");
        }
    }

    wp.shutdown().await;
    let seen = seen.lock().unwrap();
    let total: usize = seen.requests_by_thread.values().sum();
    assert_eq!(
        total,
        CONCURRENT * ROUNDS,
        "every request is in the access log"
    );
    assert_eq!(
        seen.hbone_connections, 1,
        "all streams shared one pooled HBONE connection"
    );
    assert_eq!(
        seen.requests_by_thread.len(),
        workers,
        "requests were served on {} of {workers} worker threads: {:?}",
        seen.requests_by_thread.len(),
        seen.requests_by_thread
    );
}

/// One HTTP/1.1 request on its own CONNECT stream to `web`'s VIP.
async fn get_through(pool: &Pool, key: &WorkloadKey) -> String {
    let request = ConnectRequest {
        authority: "10.96.0.3:80".into(),
        headers: Default::default(),
    };
    let stream = pool.connect(key, &request).await.expect("CONNECT");
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/")
        .header(http::header::HOST, "web.shop.svc.cluster.local")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn serve_web(listener: TcpListener) {
    loop {
        let (tcp, _) = listener.accept().await.unwrap();
        tokio::spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(b"web"))))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), svc)
                .await;
        });
    }
}
