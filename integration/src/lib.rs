//! Test harness for whole-mesh tests.
//!
//! Network-namespace tier ([`cluster`]): nodes and pods as network
//! namespaces, real CNI plugins, every component as its own process.
//!
//! In-process tier: istiod-lite and several ztunnels in one process, each
//! test on its own `127.a.b.0/24` loopback range so tests run in parallel and
//! every workload has a distinct IP (as pods do) with the real HBONE port.

pub mod cluster;
pub mod fake_ca;
pub mod metrics;
pub mod process;
pub mod tls_client;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use istiod_lite::app::Istiod;
use istiod_lite::ca::Caller;
use istiod_lite::config::Config as IstiodConfig;
use mesh_core::{Network, TrustDomain, TunnelProtocol, Workload, WorkloadUid};
use mesh_tls::CaClient;
use ztunnel::app::Ztunnel;
use ztunnel::config::{self as zc, Config as ZtunnelConfig};
use ztunnel::state::ProxyState;

/// A private loopback /24 for one test.
#[derive(Clone, Copy, Debug)]
pub struct Subnet(u8, u8);

impl Subnet {
    pub fn next() -> Self {
        static NEXT: AtomicU8 = AtomicU8::new(1);
        let pid = (std::process::id() % 200) as u8 + 20;
        Subnet(pid, NEXT.fetch_add(1, Ordering::Relaxed))
    }

    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.0, self.1, host))
    }
}

pub fn init_logging() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()))
        .with_test_writer()
        .try_init();
}

/// A control plane plus helpers to add proxies to it.
///
/// istiod-lite serves the manifest directory [`Mesh::manifests`]; tests
/// write Kubernetes YAML there and it is pushed to the ztunnels.
pub struct Mesh {
    istiod: Option<Istiod>,
    config: IstiodConfig,
    pub subnet: Subnet,
    pub dir: tempfile::TempDir,
}

impl Mesh {
    pub async fn start() -> Self {
        init_logging();
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = IstiodConfig::local(dir.path().join("state"));
        let manifests = dir.path().join("manifests");
        std::fs::create_dir_all(&manifests).expect("manifest dir");
        config.config_dir = Some(manifests);
        let istiod = Istiod::start(config.clone())
            .await
            .expect("istiod-lite starts");
        config.grpc_addr = istiod.grpc_addr;
        Self {
            istiod: Some(istiod),
            config,
            subnet: Subnet::next(),
            dir,
        }
    }

    /// The running control plane.
    pub fn istiod(&self) -> &Istiod {
        self.istiod.as_ref().expect("istiod-lite is running")
    }

    /// The directory istiod-lite reads manifests from.
    pub fn manifests(&self) -> std::path::PathBuf {
        self.dir.path().join("manifests")
    }

    /// Writes (replaces) one manifest file, atomically.
    pub fn write_manifest(&self, name: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests().join(name)).expect("rename manifest");
    }

    /// Stops istiod-lite (its state directory stays).
    pub async fn stop_istiod(&mut self) {
        if let Some(i) = self.istiod.take() {
            i.shutdown().await;
        }
    }

    /// Starts istiod-lite again on the same address with the same CA.
    pub async fn start_istiod(&mut self) {
        let istiod = Istiod::start(self.config.clone())
            .await
            .expect("istiod-lite restarts");
        self.istiod = Some(istiod);
    }

    /// A workload (pod) in `default` with service account `sa` at `.host`.
    pub fn workload(&self, name: &str, sa: &str, host: u8, node: &str) -> Workload {
        Workload {
            uid: WorkloadUid::for_pod("Kubernetes", "default", name),
            name: name.into(),
            namespace: "default".into(),
            addresses: vec![self.subnet.ip(host)],
            network: Network::default(),
            tunnel_protocol: TunnelProtocol::Hbone,
            trust_domain: TrustDomain::default(),
            service_account: sa.into(),
            node: node.into(),
            authorization_policies: Vec::new(),
            services: Default::default(),
            waypoint: None,
            telemetry: Default::default(),
        }
    }

    /// The environment a ztunnel on `node` would get from its DaemonSet.
    pub fn ztunnel_env(&self, node: &str, inbound: &[IpAddr]) -> HashMap<String, String> {
        let token = self.istiod().tokens.issue(
            &Caller {
                namespace: "istio-system".into(),
                service_account: "ztunnel".into(),
                node: Some(node.into()),
            },
            Duration::from_secs(3600),
        );
        let inbound = inbound
            .iter()
            .map(|ip| SocketAddr::new(*ip, mesh_hbone::HBONE_PORT).to_string())
            .collect::<Vec<_>>()
            .join(",");
        [
            (zc::NODE_NAME, node.to_string()),
            // Many ztunnels share this process's namespace.
            (zc::ADMIN_ADDR, "127.0.0.1:0".to_string()),
            (zc::STATS_ADDR, "127.0.0.1:0".to_string()),
            (zc::READINESS_ADDR, "127.0.0.1:0".to_string()),
            (zc::CA_ADDRESS, self.istiod().grpc_addr.to_string()),
            (zc::CA_ROOT_CA, self.istiod().ca.root_pem().to_string()),
            (zc::AUTH_TOKEN, token),
            (
                zc::OUTBOUND_ADDR,
                SocketAddr::new(self.subnet.ip(1), 0).to_string(),
            ),
            (zc::INBOUND_ADDR, inbound),
            (zc::XDS_ADDRESS, self.istiod().grpc_addr.to_string()),
            (
                zc::INBOUND_PLAINTEXT_ADDR,
                SocketAddr::new(self.subnet.ip(1), 0).to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Starts a ztunnel for `node` that knows `workloads` (besides what
    /// xDS brings); the ones on `node` are registered with the CA as running
    /// there. Returns once it is ready (its first xDS responses applied).
    pub async fn ztunnel(
        &self,
        node: &str,
        workloads: &[Workload],
        env: HashMap<String, String>,
    ) -> Ztunnel {
        let z = self.ztunnel_unready(node, workloads, env).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !z.ready.is_ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "ztunnel for {node} not ready: waiting for {:?}",
                z.ready.pending()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        z
    }

    /// As [`Mesh::ztunnel`], without waiting for readiness.
    pub async fn ztunnel_unready(
        &self,
        node: &str,
        workloads: &[Workload],
        env: HashMap<String, String>,
    ) -> Ztunnel {
        let config =
            ZtunnelConfig::from_env(|k| env.get(k).cloned()).expect("valid ztunnel config");
        let state = Arc::new(ProxyState::new());
        for w in workloads {
            if w.node == node {
                self.istiod()
                    .pods
                    .add_pod(node, &w.namespace, &w.service_account);
            }
            state.insert(w.clone());
        }
        let ca = Arc::new(CaClient::new(config.ca.clone()).expect("CA client"));
        Ztunnel::start_with(config, state, ca)
            .await
            .expect("ztunnel starts")
    }

    /// A ztunnel with the default environment, listening for HBONE on the
    /// addresses of its node's workloads.
    pub async fn ztunnel_for(&self, node: &str, workloads: &[Workload]) -> Ztunnel {
        let local: Vec<IpAddr> = workloads
            .iter()
            .filter(|w| w.node == node)
            .flat_map(|w| w.addresses.clone())
            .collect();
        let env = self.ztunnel_env(node, &local);
        self.ztunnel(node, workloads, env).await
    }
}

/// Connects to `via` (a ztunnel's outbound listener) from `from`, as a
/// workload at that address would.
pub async fn connect_from(from: IpAddr, via: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(via).await
}

/// Polls `f` every 20 ms until it holds; panics after 20 s naming `what`.
pub async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
