//! The data path: [`outbound`] takes a workload's connection and tunnels it;
//! [`inbound`] terminates HBONE and delivers to the application.
//!
//! **Architecture Invariant:** a connection leaves this proxy in plaintext only
//! toward a destination that is not in the mesh (passthrough) or, inbound, to
//! the local application; everything between proxies is HBONE.

pub mod connections;
pub mod inbound;
pub mod inbound_plaintext;
pub mod outbound;
pub mod splice;

use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::Pool;
use mesh_runtime::drain::DrainWatcher;
use mesh_tls::SecretManager;
use tokio::net::TcpListener;

use crate::config::Config;
use crate::metrics::{Reporter, SecurityPolicy, TrafficLabels, TrafficMetrics};
use crate::state::ProxyState;

/// Where captured outbound connections arrive.
pub const OUTBOUND_PORT: u16 = 15001;
/// Where captured plaintext inbound connections arrive.
pub const INBOUND_PLAINTEXT_PORT: u16 = 15006;
/// Ports that belong to the proxy itself; traffic aimed at them is a loop.
pub const PROXY_PORTS: [u16; 3] = [
    OUTBOUND_PORT,
    INBOUND_PLAINTEXT_PORT,
    mesh_hbone::HBONE_PORT,
];

/// Why an inbound connection is refused.
pub(crate) enum Refusal {
    Denied(mesh_core::DenyReason),
    /// The destination workload is gone, or policies have not arrived yet.
    Unknown,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::Denied(r) => r.fmt(f),
            Refusal::Unknown => {
                f.write_str("the destination workload is unknown or its policies have not arrived")
            }
        }
    }
}

/// Registers an inbound connection and then decides it: registered first,
/// so a policy change racing with the decision is seen by one or the other.
pub(crate) fn admit(
    inputs: &ProxyInputs,
    destination: &mesh_core::WorkloadUid,
    info: mesh_core::ConnectionInfo,
    protocol: connections::Protocol,
) -> Result<connections::ConnectionGuard, Refusal> {
    let guard = inputs
        .connections
        .register(info.clone(), destination.clone(), protocol);
    match inputs.state.authorize(destination, &info) {
        Some(mesh_core::Decision::Allow) => Ok(guard),
        Some(mesh_core::Decision::Deny(reason)) => Err(Refusal::Denied(reason)),
        None => Err(Refusal::Unknown),
    }
}

/// How long a connect to an application (inbound) or to a destination
/// outside the mesh (outbound passthrough) may take.
pub(crate) const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the local application at `dst` from the client's address.
pub(crate) async fn connect_app(
    inputs: &ProxyInputs,
    src: std::net::IpAddr,
    dst: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let socket = crate::socket::upstream_from(&inputs.sockets, src, dst)?;
    let app = tokio::time::timeout(APP_CONNECT_TIMEOUT, socket.connect(dst))
        .await
        .map_err(|_| {
            mesh_core::wait::Wait::AppConnect.timed_out();
            std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
        })??;
    let _ = app.set_nodelay(true);
    Ok(app)
}

/// The local workload (on this node) at `ip`, if any.
pub(crate) fn local_workload(
    inputs: &ProxyInputs,
    ip: std::net::IpAddr,
) -> Option<Arc<mesh_core::Workload>> {
    inputs
        .state
        .workload_by_addr(&inputs.config.network, ip)
        .filter(|w| w.node == inputs.config.node_name)
}

/// The labels of an inbound connection to `destination`'s `port` from
/// `src`: the source workload is looked up by address, and believed only
/// if its identity is the one the peer proved (plaintext proves none).
pub(crate) fn inbound_labels(
    inputs: &ProxyInputs,
    destination: &mesh_core::Workload,
    port: u16,
    src: std::net::IpAddr,
    peer_id: Option<&mesh_core::Identity>,
) -> TrafficLabels {
    let security = match peer_id {
        Some(_) => SecurityPolicy::MutualTls,
        None => SecurityPolicy::Unknown,
    };
    let mut labels =
        TrafficLabels::new(Reporter::Destination, security).with_destination(destination);
    if let Some(source) = inputs.state.workload_by_addr(&inputs.config.network, src)
        && peer_id.is_none_or(|id| source.identity().ok().as_ref() == Some(id))
    {
        labels = labels.with_source(&source);
    }
    if let Some(id) = peer_id {
        labels = labels.with_source_principal(id);
    }
    // The Service the client most likely used: one that maps to this port.
    let service = destination
        .services
        .iter()
        .find(|(_, ports)| ports.iter().any(|p| p.target_port == port))
        .and_then(|(key, _)| inputs.state.service(key));
    if let Some(service) = service {
        labels = labels.with_service(&service);
    }
    labels
}

/// What every connection handler needs.
pub struct ProxyInputs {
    pub config: Arc<Config>,
    pub state: Arc<ProxyState>,
    pub certs: SecretManager,
    pub pool: Pool,
    pub connections: connections::ConnectionManager,
    /// Where this proxy's upstream sockets are created: ztunnel's own
    /// namespace, or (in-pod mode) the pod's.
    pub sockets: crate::socket::Sockets,
    pub metrics: Arc<TrafficMetrics>,
}

impl ProxyInputs {
    /// The inputs of one pod's proxy in in-pod mode: the same state,
    /// certificates and connection registry, with sockets (and so an HBONE
    /// pool) of the pod's own.
    pub fn for_pod(&self, sockets: crate::socket::Sockets) -> ProxyInputs {
        ProxyInputs {
            config: self.config.clone(),
            state: self.state.clone(),
            certs: self.certs.clone(),
            pool: Pool::new(
                self.certs.clone(),
                self.config.h2.clone(),
                Arc::new(sockets.clone()),
            ),
            connections: self.connections.clone(),
            sockets,
            metrics: self.metrics.clone(),
        }
    }
}

/// One proxy's listeners: node-level ones in ztunnel's namespace, or one
/// pod's inside its namespace. Both are served the same way.
pub(crate) struct Listeners {
    pub outbound: TcpListener,
    pub inbound: Vec<TcpListener>,
    pub plaintext: Option<TcpListener>,
}

impl Listeners {
    /// Starts an accept loop per listener, each under `watcher`.
    pub fn serve(
        self,
        inputs: &Arc<ProxyInputs>,
        watcher: &DrainWatcher,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let deadline = inputs.config.termination_deadline;
        let mut tasks = Vec::new();
        if let Some(listener) = self.plaintext {
            let inputs = inputs.clone();
            tasks.push(tokio::spawn(accept_loop(
                "inbound-plaintext",
                listener,
                watcher.clone(),
                deadline,
                move |tcp, peer, _drain| inbound_plaintext::handle(inputs.clone(), tcp, peer),
            )));
        }
        {
            let inputs = inputs.clone();
            tasks.push(tokio::spawn(accept_loop(
                "outbound",
                self.outbound,
                watcher.clone(),
                deadline,
                move |tcp, peer, _drain| outbound::handle(inputs.clone(), tcp, peer),
            )));
        }
        for listener in self.inbound {
            let inputs = inputs.clone();
            tasks.push(tokio::spawn(accept_loop(
                "inbound",
                listener,
                watcher.clone(),
                deadline,
                move |tcp, peer, drain| inbound::handle(inputs.clone(), tcp, peer, drain),
            )));
        }
        tasks
    }
}

pub(crate) use mesh_runtime::drain::accept_loop;
