//! A waypoint in process for namespace `shop`, fed by istiod-lite, in
//! front of Service `web` (10.96.0.3:80, a pod at `.10`:8080 that the test
//! serves itself), and a client pool as a ztunnel holds one: the tier
//! between the engine's unit tests and the cluster, for tests that speak
//! to the waypoint byte by byte. Each test target uses part of it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use integration::{Mesh, wait_until};
use istiod_lite::ca::Caller;
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::pool::DefaultSocketFactory;
use mesh_hbone::{H2Config, H2Stream, Pool, WorkloadKey};
use mesh_tls::caclient::{AuthSource, CaClientConfig};
use mesh_tls::control::ControlPlaneAddress;
use mesh_tls::{CaClient, SecretManager, SecretManagerConfig};

pub struct Shop {
    pub waypoint: waypoint::app::Waypoint,
    /// The pool of a client in `shop` (SA `client`), and its key to the
    /// waypoint.
    pub pool: Pool,
    pub key: WorkloadKey,
}

/// Where `web`'s only pod listens; the test serves it.
pub fn web_addr(mesh: &Mesh) -> SocketAddr {
    SocketAddr::new(mesh.subnet.ip(10), 8080)
}

/// The waypoint's address.
fn waypoint_ip(mesh: &Mesh) -> IpAddr {
    mesh.subnet.ip(5)
}

impl Shop {
    pub async fn start(mesh: &Mesh) -> Self {
        let waypoint_ip = waypoint_ip(mesh);
        let web_ip = web_addr(mesh).ip();
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
        let waypoint = waypoint::app::Waypoint::start(config).await.unwrap();
        wait_until("the waypoint has its configuration", || {
            waypoint.bindings.borrow().service_count() == 1
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

        Shop {
            waypoint,
            pool,
            key,
        }
    }

    /// The waypoint's HBONE listener.
    pub fn waypoint_addr(&self) -> SocketAddr {
        self.key.dst
    }

    /// A CONNECT stream to `web`'s VIP through the waypoint.
    pub async fn stream_to_web(&self) -> H2Stream {
        stream_to_web(&self.pool, &self.key).await
    }
}

/// A CONNECT stream to `web`'s VIP through the waypoint, on `pool`.
pub async fn stream_to_web(pool: &Pool, key: &WorkloadKey) -> H2Stream {
    let request = ConnectRequest {
        authority: "10.96.0.3:80".into(),
        headers: Default::default(),
    };
    pool.connect(key, &request)
        .await
        .expect("CONNECT to web through the waypoint")
}
