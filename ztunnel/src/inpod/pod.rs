//! One pod's proxy: listeners bound inside the pod's network namespace,
//! served by the same handlers as the node-level listeners, under a drain
//! of their own.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;

use mesh_netns::{Netns, NetnsId};
use mesh_runtime::drain::{self, DrainMode, DrainTrigger};
use tokio::net::TcpListener;

use crate::config::InpodConfig;
use crate::proxy::{INBOUND_PLAINTEXT_PORT, Listeners, OUTBOUND_PORT, ProxyInputs};
use crate::socket::Sockets;

#[derive(Debug, thiserror::Error)]
#[error("starting the proxy inside pod {pod}: binding {addr}: {source}{hint}")]
pub struct StartError {
    pub pod: String,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
    hint: &'static str,
}

pub struct PodProxy {
    pub netns: NetnsId,
    drain: DrainTrigger,
}

impl PodProxy {
    /// Binds 15001, 15006 and 15008 inside `netns` and starts serving.
    /// `pod` (namespace/name) names it in errors and logs.
    pub fn start(
        base: &ProxyInputs,
        config: &InpodConfig,
        pod: &str,
        netns: Netns,
    ) -> Result<Self, StartError> {
        let id = netns.id();
        let sockets = Sockets::Pod {
            netns: Arc::new(netns),
            mark: config.mark,
        };
        let bind = |port: u16| -> Result<TcpListener, StartError> {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, port));
            sockets
                .listener(addr, config.port_reuse)
                .map_err(|source| StartError {
                    pod: pod.to_string(),
                    addr,
                    hint: if source.kind() == std::io::ErrorKind::AddrInUse {
                        " (another proxy holds the port; it is retried)"
                    } else {
                        ""
                    },
                    source,
                })
        };
        let listeners = Listeners {
            outbound: bind(OUTBOUND_PORT)?,
            inbound: vec![bind(base.config.hbone_port)?],
            plaintext: Some(bind(INBOUND_PLAINTEXT_PORT)?),
        };
        let inputs = Arc::new(base.for_pod(sockets));
        let (trigger, watcher) = drain::new();
        // The accept loops end with the drain; their handles are not needed.
        drop(listeners.serve(&inputs, &watcher));
        tracing::info!(pod, netns = %id, "serving pod from inside its network namespace");
        Ok(Self {
            netns: id,
            drain: trigger,
        })
    }

    /// Closes the listeners and ends open connections: at once for
    /// [`DrainMode::Immediate`], after the termination deadline otherwise.
    pub async fn stop(self, mode: DrainMode) {
        self.drain.drain(mode).await;
    }
}
