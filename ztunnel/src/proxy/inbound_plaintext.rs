//! Plaintext inbound (15006): a client outside the mesh connects to a local
//! workload. Allowed only as PERMISSIVE allows it: the connection has no
//! peer identity, so STRICT mTLS (a DENY without identity) refuses it, and
//! every other policy is evaluated with the identity absent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mesh_core::{ConnectionInfo, Decision};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::{PROXY_PORTS, ProxyInputs, local_workload};
use crate::socket::{original_dst, upstream_from};

const APP_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) async fn handle(inputs: Arc<ProxyInputs>, tcp: TcpStream, peer: SocketAddr) {
    let started = std::time::Instant::now();
    let dst = match original_dst(&tcp).or(inputs.config.inbound_plaintext_target) {
        Some(d) => d,
        None => match tcp.local_addr() {
            Ok(d) => d,
            Err(_) => return,
        },
    };
    if PROXY_PORTS.contains(&dst.port()) {
        debug!(%peer, %dst, "plaintext connection to a proxy port; closing");
        return;
    }
    let Some(workload) = local_workload(&inputs, dst.ip()) else {
        warn!(target: "access", src_addr = %peer, dst_addr = %dst, direction = "inbound",
            "plaintext connection to an address that is not a workload of this node; closing");
        return;
    };
    let info = ConnectionInfo {
        src: peer,
        dst,
        src_identity: None,
    };
    // Registered before deciding, so a racing policy change is not missed.
    let mut guard = inputs
        .connections
        .register(info.clone(), workload.uid.clone());
    let denied = match inputs.state.authorize(&workload.uid, &info) {
        Some(Decision::Allow) => None,
        Some(Decision::Deny(reason)) => Some(reason.to_string()),
        None => Some("the destination workload is gone".to_string()),
    };
    if let Some(reason) = denied {
        // A reset, as Istio gives: curl sees exit code 56.
        let _ = tcp.set_zero_linger();
        info!(target: "access", src_addr = %peer, dst_addr = %dst, direction = "inbound",
            %reason, "plaintext connection denied by policy");
        return;
    }
    let app = match upstream_from(peer.ip(), dst) {
        Ok(socket) => tokio::time::timeout(APP_CONNECT_TIMEOUT, socket.connect(dst)).await,
        Err(e) => Ok(Err(e)),
    };
    let mut app = match app {
        Ok(Ok(app)) => app,
        Ok(Err(e)) => {
            warn!(target: "access", src_addr = %peer, dst_addr = %dst, error = %e, "connecting to the application failed");
            return;
        }
        Err(_) => {
            warn!(target: "access", src_addr = %peer, dst_addr = %dst, "connecting to the application timed out");
            return;
        }
    };
    let mut tcp = tcp;
    let copied = tokio::select! {
        r = tokio::io::copy_bidirectional(&mut tcp, &mut app) => r,
        _ = guard.revoked() => {
            let _ = tcp.set_zero_linger();
            return;
        }
    };
    match copied {
        Ok((sent, recv)) => {
            info!(target: "access", src_addr = %peer, dst_addr = %dst, direction = "inbound", mtls = false,
                bytes_sent = recv, bytes_recv = sent, duration = ?started.elapsed(), "connection complete")
        }
        Err(e) => {
            debug!(src_addr = %peer, dst_addr = %dst, error = %e, "plaintext inbound ended with an error")
        }
    }
}
