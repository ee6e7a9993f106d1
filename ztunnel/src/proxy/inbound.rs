//! Inbound HBONE: terminate mTLS with the identity of the local workload the
//! connection is addressed to, then handle each CONNECT by connecting to that
//! workload's application port.

pub mod connect;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use http::{HeaderMap, StatusCode};
use mesh_core::{ConnectionInfo, Identity, Workload};
use mesh_hbone::copy;
use mesh_hbone::server::{self, InboundConnect};
use mesh_runtime::drain::{DrainWatcher, run_with_drain};
use mesh_tls::revocation::Side;
use tokio::net::TcpStream;
use tracing::{debug, warn};

use self::connect::connect_target;
use super::connections::Protocol;
use super::{ProxyInputs, Refusal};
use crate::metrics::{Bytes, ConnectionResult, Endpoints, ResponseFlags};

pub(crate) async fn handle(
    inputs: Arc<ProxyInputs>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: DrainWatcher,
) {
    if let Err(e) = serve(inputs, tcp, peer, drain).await {
        match e.downcast_ref::<mesh_hbone::Error>() {
            // Established, then ended by us.
            Some(mesh_hbone::Error::Revoked | mesh_hbone::Error::ResetFlood { .. }) => {
                warn!(%peer, error = %e, "inbound HBONE connection closed");
            }
            // A handshake failure is an early deny: nothing reached the application.
            _ => warn!(%peer, error = %e, "inbound HBONE connection refused"),
        }
    }
}

async fn serve(
    inputs: Arc<ProxyInputs>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: DrainWatcher,
) -> anyhow::Result<()> {
    let local = mesh_runtime::socket::local(&tcp)?;
    let workload = inputs
        .state
        .workload_by_addr(&inputs.config.network, local.ip())
        .filter(|w| w.node == inputs.config.node_name)
        .ok_or_else(|| anyhow::anyhow!("no workload of this node has address {}", local.ip()))?;
    let cert = inputs
        .certs
        .fetch_certificate(&workload.identity()?)
        .await?;
    let check = cert.peer_check(Side::Server);
    let (tls, peer_id) = server::accept_tls(tcp, cert.server_config(), &inputs.config.h2).await?;
    debug!(%peer, peer_id = %peer_id, "HBONE connection established");
    let peers = tls.get_ref().1.peer_certificates();
    let revoked = check.revoked(peers);
    // A handshake vouches for new streams only while both certificates
    // last: at the first end, a graceful GOAWAY takes no new stream, and
    // the tunnels already open carry on (reliability.md K2).
    let until = cert.valid_with(peers);
    let deadline = inputs.config.termination_deadline;
    let shutdown = {
        let drain = drain.clone();
        async move {
            let left = until.duration_since(SystemTime::now()).unwrap_or_default();
            tokio::select! {
                _ = drain.signaled() => {}
                () = tokio::time::sleep(left) => {
                    debug!(%peer, "a certificate of this HBONE connection ended; no new streams on it");
                }
            }
        }
    };
    server::serve_until(tls, &inputs.config.h2, shutdown, revoked, |connect| {
        // As on the outbound side, the setup is boxed so that an open
        // stream's task holds only the relay's state (reliability.md E2).
        let opened = Box::pin(open(
            inputs.clone(),
            workload.clone(),
            connect,
            peer,
            local,
            peer_id.clone(),
        ));
        let stream = async move {
            if let Some(relay) = opened.await {
                relay.run().await;
            }
        };
        tokio::spawn(run_with_drain(drain.clone(), deadline, stream));
    })
    .await?;
    Ok(())
}

/// An accepted stream, its application connection and its accounting;
/// boxed once, as the outbound side's relay is.
struct Relay {
    app: TcpStream,
    stream: mesh_hbone::H2Stream,
    result: ConnectionResult,
    guard: super::connections::ConnectionGuard,
}

impl Relay {
    async fn run(mut self: Box<Self>) {
        let copied = tokio::select! {
            r = copy::copy_bidirectional(&self.app, self.stream) => r,
            _ = self.guard.revoked() => {
                self.result.closed::<&str>(Err("closed: a policy change revoked it"));
                return;
            }
        };
        // From the client's side: the request came through the tunnel.
        self.result.closed(copied.map(|t| Bytes {
            request: t.from_tunnel,
            response: t.to_tunnel,
        }));
    }
}

/// Checks the CONNECT against the target, policy and application, and
/// answers it; `None` when it was refused (answered, counted and logged).
async fn open(
    inputs: Arc<ProxyInputs>,
    workload: Arc<Workload>,
    connect: InboundConnect,
    peer: SocketAddr,
    local: SocketAddr,
    peer_id: Identity,
) -> Option<Box<Relay>> {
    let target = match connect_target(connect.method(), connect.authority(), local.ip()) {
        Ok(target) => target,
        Err(refusal) => {
            debug!(%peer, %local, reason = %refusal, "CONNECT refused");
            if connect.method() != http::Method::CONNECT {
                connect
                    .reject_request(refusal.status(), &refusal.to_string())
                    .await;
            } else {
                connect.reject(refusal.status());
            }
            return None;
        }
    };
    let info = ConnectionInfo {
        src: peer,
        dst: target,
        src_identity: Some(peer_id.clone()),
    };
    let result = ConnectionResult::new(
        inputs.metrics.clone(),
        super::inbound_labels(&inputs, &workload, target.port(), peer.ip(), Some(&peer_id)),
        Endpoints {
            src: Some(peer),
            dst: Some(target),
            hbone_addr: Some(target),
        },
    );
    // Decided against the workload as it is now (by uid, not the copy this
    // pooled connection started with), whose policies may have changed.
    let guard = match super::admit(&inputs, &workload.uid, info, Protocol::Hbone) {
        Ok(guard) => guard,
        Err(refusal) => {
            let status = match refusal {
                Refusal::Denied(_) => StatusCode::UNAUTHORIZED,
                Refusal::Unknown => StatusCode::SERVICE_UNAVAILABLE,
            };
            result.failed(ResponseFlags::Deny, &refusal);
            connect.reject(status);
            return None;
        }
    };
    let app = match super::connect_app(&inputs, peer.ip(), target).await {
        Ok(app) => app,
        Err(e) => {
            result.failed(
                ResponseFlags::Connect,
                &format_args!("connecting to the application: {e}"),
            );
            connect.reject(StatusCode::SERVICE_UNAVAILABLE);
            return None;
        }
    };
    if guard.is_revoked() {
        result.failed(ResponseFlags::Deny, &"revoked by a policy change");
        connect.reject(StatusCode::UNAUTHORIZED);
        return None;
    }
    let stream = match connect.accept(HeaderMap::new()) {
        Ok(s) => s,
        Err(e) => {
            result.closed::<String>(Err(format!("peer went away before the 200: {e}")));
            return None;
        }
    };
    Some(Box::new(Relay {
        app,
        stream,
        result,
        guard,
    }))
}
