//! Plaintext inbound (15006): a client outside the mesh connects to a local
//! workload. Allowed only as PERMISSIVE allows it: the connection has no
//! peer identity, so STRICT mTLS (a DENY without identity) refuses it, and
//! every other policy is evaluated with the identity absent.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::ConnectionInfo;
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::connections::Protocol;
use super::{PROXY_PORTS, ProxyInputs, local_workload};
use crate::socket::original_dst;

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
    let mut guard = match super::admit(&inputs, &workload.uid, info, Protocol::Tcp) {
        Ok(guard) => guard,
        Err(refusal) => {
            // A reset, as Istio gives: curl sees exit code 56.
            let _ = tcp.set_zero_linger();
            info!(target: "access", src_addr = %peer, dst_addr = %dst, direction = "inbound",
                reason = %refusal, "plaintext connection refused");
            return;
        }
    };
    let mut app = match super::connect_app(&inputs, peer.ip(), dst).await {
        Ok(app) => app,
        Err(e) => {
            warn!(target: "access", src_addr = %peer, dst_addr = %dst, error = %e, "connecting to the application failed");
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
