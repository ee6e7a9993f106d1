//! Plaintext inbound (15006): a client outside the mesh connects to a local
//! workload. Allowed only as PERMISSIVE allows it: the connection has no
//! peer identity, so STRICT mTLS (a DENY without identity) refuses it, and
//! every other policy is evaluated with the identity absent.

use std::net::SocketAddr;
use std::sync::Arc;

use mesh_core::ConnectionInfo;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::connections::Protocol;
use super::{PROXY_PORTS, ProxyInputs, local_workload};
use crate::metrics::{Bytes, ConnectionResult, Endpoints, ResponseFlags};
use crate::socket::original_dst;

pub(crate) async fn handle(inputs: Arc<ProxyInputs>, tcp: TcpStream, peer: SocketAddr) {
    let dst = match original_dst(&tcp).or(inputs.config.inbound_plaintext_target) {
        Some(d) => d,
        None => match mesh_runtime::socket::local(&tcp) {
            Ok(d) => d,
            Err(_) => return,
        },
    };
    if PROXY_PORTS.contains(&dst.port()) {
        debug!(%peer, %dst, "plaintext connection to a proxy port; closing");
        return;
    }
    let Some(workload) = local_workload(&inputs, dst.ip()) else {
        warn!(target: "access", direction = "inbound", src.addr = %peer, dst.addr = %dst,
            "plaintext connection to an address that is not a workload of this node; closing");
        return;
    };
    let info = ConnectionInfo {
        src: peer,
        dst,
        src_identity: None,
    };
    let result = ConnectionResult::new(
        inputs.metrics.clone(),
        super::inbound_labels(&inputs, &workload, dst.port(), peer.ip(), None),
        Endpoints {
            src: Some(peer),
            dst: Some(dst),
            hbone_addr: None,
        },
    );
    let mut guard = match super::admit(&inputs, &workload.uid, info, Protocol::Tcp) {
        Ok(guard) => guard,
        Err(refusal) => {
            // A reset, as Istio gives: curl sees exit code 56.
            let _ = tcp.set_zero_linger();
            result.failed(ResponseFlags::Deny, &refusal);
            return;
        }
    };
    let app = match super::connect_app(&inputs, peer.ip(), dst).await {
        Ok(app) => app,
        Err(e) => {
            result.failed(
                ResponseFlags::Connect,
                &format_args!("connecting to the application: {e}"),
            );
            return;
        }
    };
    let copied = tokio::select! {
        r = super::splice::splice_bidirectional(&tcp, &app) => r,
        _ = guard.revoked() => {
            let _ = tcp.set_zero_linger();
            result.closed::<&str>(Err("closed: a policy change revoked it"));
            return;
        }
    };
    result.closed(copied.map(|(sent, recv)| Bytes {
        request: sent,
        response: recv,
    }));
}
