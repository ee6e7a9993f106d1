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

use std::sync::Arc;
use std::time::Duration;

use mesh_hbone::Pool;
use mesh_runtime::drain::{DrainWatcher, run_with_drain};
use mesh_tls::SecretManager;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use crate::config::Config;
use crate::state::ProxyState;

/// Ports that belong to the proxy itself; traffic aimed at them is a loop.
pub const PROXY_PORTS: [u16; 3] = [15001, 15006, 15008];

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

/// What every connection handler needs.
pub struct ProxyInputs {
    pub config: Arc<Config>,
    pub state: Arc<ProxyState>,
    pub certs: SecretManager,
    pub pool: Pool,
    pub connections: connections::ConnectionManager,
}

/// Accepts on `listener` until a drain starts, running `handle` for each
/// connection in its own task under the drain (graceful phase of
/// `deadline`, then closed).
pub(crate) async fn accept_loop<F, Fut>(
    name: &'static str,
    listener: TcpListener,
    drain: DrainWatcher,
    deadline: Duration,
    handle: F,
) where
    F: Fn(tokio::net::TcpStream, std::net::SocketAddr, DrainWatcher) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = drain.signaled() => {
                debug!(listener = name, "stopped accepting");
                return;
            }
        };
        match accepted {
            Ok((tcp, peer)) => {
                let conn = handle(tcp, peer, drain.clone());
                tokio::spawn(run_with_drain(drain.clone(), deadline, conn));
            }
            Err(e) => {
                // Typically EMFILE: back off instead of spinning.
                warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}
