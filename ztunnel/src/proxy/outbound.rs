//! Outbound: a workload's connection arrives (redirected, or on the outbound
//! port directly), is matched to its source workload, and is tunnelled over
//! HBONE to the destination's proxy, or passed through when the destination
//! is not in the mesh.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use mesh_core::{GatewayAddress, TunnelProtocol, Workload};
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::headers::{self, Baggage};
use mesh_hbone::{WorkloadKey, copy};
use tokio::net::TcpStream;
use tracing::{debug, info, warn};

use super::connections::{OpenConnection, OutboundGuard, Protocol};
use super::{PROXY_PORTS, ProxyInputs};
use crate::socket::original_dst;

#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("connection from {0} is not from a workload on this node")]
    UnknownSource(SocketAddr),
    #[error("refusing to proxy to the proxy's own port {0} (a loop)")]
    SelfCall(SocketAddr),
    #[error("source workload has an invalid identity: {0}")]
    BadIdentity(#[from] mesh_core::IdentityError),
    #[error(transparent)]
    Hbone(#[from] mesh_hbone::Error),
    #[error("passthrough to {dst}: {source}")]
    Passthrough {
        dst: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("service {service} has no endpoint for port {port}")]
    NoEndpoints { service: String, port: u16 },
    #[error("waypoint {waypoint} has no pod to send to (is the waypoint deployment running?)")]
    NoWaypoint { waypoint: String },
    #[error("copying: {0}")]
    Copy(#[from] std::io::Error),
}

pub(crate) async fn handle(inputs: Arc<ProxyInputs>, tcp: TcpStream, peer: SocketAddr) {
    let started = std::time::Instant::now();
    match proxy(&inputs, tcp, peer).await {
        Ok((dst, t)) => {
            info!(target: "access", src_addr = %peer, dst_addr = %dst, direction = "outbound",
            bytes_sent = t.to_tunnel, bytes_recv = t.from_tunnel, duration = ?started.elapsed(), "connection complete")
        }
        Err(e) => {
            warn!(target: "access", src_addr = %peer, direction = "outbound", error = %e, "connection failed")
        }
    }
}

async fn proxy(
    inputs: &ProxyInputs,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<(SocketAddr, copy::Transferred), OutboundError> {
    let dst = original_dst(&tcp)
        .or(inputs.config.outbound_target)
        .unwrap_or(tcp.local_addr()?);
    if dst.ip().is_loopback() && PROXY_PORTS.contains(&dst.port()) {
        return Err(OutboundError::SelfCall(dst));
    }
    let original = dst;
    let network = &inputs.config.network;
    let source = inputs
        .state
        .workload_by_addr(network, peer.ip())
        .filter(|w| w.node == inputs.config.node_name)
        .ok_or(OutboundError::UnknownSource(peer))?;

    // A Service VIP with a waypoint goes to the waypoint, untranslated
    // (`dataplane.md` §8.1); otherwise one of its endpoints (round robin is
    // Istio's behaviour; a uniform random pick gives the same spread).
    let service = inputs.state.service_by_vip(network, dst.ip());
    if let Some(waypoint) = service.as_ref().and_then(|s| s.waypoint.as_ref()) {
        let host = service.as_ref().map(|s| s.hostname.as_str());
        return via_waypoint(inputs, &tcp, peer, &source, dst, waypoint, host).await;
    }
    let (dst, destination) = match &service {
        Some(service) => {
            let endpoints = inputs.state.endpoints(service, dst.port());
            if endpoints.is_empty() {
                return Err(OutboundError::NoEndpoints {
                    service: service.key(),
                    port: dst.port(),
                });
            }
            let (w, port) = &endpoints[rand::random_range(0..endpoints.len())];
            (SocketAddr::new(w.addresses[0], *port), Some(w.clone()))
        }
        None => (dst, inputs.state.workload_by_addr(network, dst.ip())),
    };
    // A pod addressed by its IP whose workload has a waypoint, unless the
    // source is that waypoint (which would loop).
    if service.is_none()
        && let Some(waypoint) = destination.as_ref().and_then(|w| w.waypoint.as_ref())
        && !inputs
            .state
            .waypoint_workloads(waypoint)
            .iter()
            .any(|w| w.uid == source.uid)
    {
        return via_waypoint(inputs, &tcp, peer, &source, dst, waypoint, None).await;
    }
    match destination {
        Some(target) if target.tunnel_protocol == TunnelProtocol::Hbone => {
            let key = WorkloadKey {
                src_id: source.identity()?,
                dst_id: vec![target.identity()?],
                dst: SocketAddr::new(dst.ip(), inputs.config.hbone_port),
                src: peer.ip(),
            };
            let request = ConnectRequest {
                authority: dst.to_string(),
                headers: connect_headers(&source, peer),
            };
            debug!(%peer, %dst, dst_id = %key.dst_id[0], "tunnelling over HBONE");
            let stream = inputs.pool.connect(&key, &request).await?;
            let _open = track(inputs, &source, peer, original, key.dst, Protocol::Hbone);
            Ok((dst, copy::copy_bidirectional(&tcp, stream).await?))
        }
        _ => {
            debug!(%peer, %dst, "destination not in the mesh; passing through");
            let connect = async { inputs.sockets.connector(&dst)?.connect(dst).await };
            let mut upstream = connect
                .await
                .map_err(|source| OutboundError::Passthrough { dst, source })?;
            let _open = track(inputs, &source, peer, original, dst, Protocol::Tcp);
            let mut tcp = tcp;
            let (sent, recv) = tokio::io::copy_bidirectional(&mut tcp, &mut upstream).await?;
            Ok((
                dst,
                copy::Transferred {
                    to_tunnel: sent,
                    from_tunnel: recv,
                },
            ))
        }
    }
}

/// Tunnels to a waypoint pod with the original destination as the
/// authority; the waypoint's identity is verified.
async fn via_waypoint(
    inputs: &ProxyInputs,
    tcp: &TcpStream,
    peer: SocketAddr,
    source: &Workload,
    original: SocketAddr,
    waypoint: &GatewayAddress,
    host: Option<&str>,
) -> Result<(SocketAddr, copy::Transferred), OutboundError> {
    let pods: Vec<_> = inputs
        .state
        .waypoint_workloads(waypoint)
        .into_iter()
        .filter(|w| !w.addresses.is_empty())
        .collect();
    if pods.is_empty() {
        return Err(OutboundError::NoWaypoint {
            waypoint: waypoint.to_string(),
        });
    }
    let pick = &pods[rand::random_range(0..pods.len())];
    let key = WorkloadKey {
        src_id: source.identity()?,
        dst_id: vec![pick.identity()?],
        dst: SocketAddr::new(pick.addresses[0], waypoint.hbone_port),
        src: peer.ip(),
    };
    let mut headers = connect_headers(source, peer);
    if let Some(host) = host
        && let Ok(v) = http::HeaderValue::from_str(&headers::forwarded(peer, Some(host)))
    {
        headers.insert(headers::FORWARDED, v);
    }
    let request = ConnectRequest {
        authority: original.to_string(),
        headers,
    };
    debug!(%peer, dst = %original, %waypoint, waypoint_pod = %key.dst, "tunnelling through the waypoint");
    let stream = inputs.pool.connect(&key, &request).await?;
    let _open = track(inputs, source, peer, original, key.dst, Protocol::Hbone);
    Ok((original, copy::copy_bidirectional(tcp, stream).await?))
}

/// Lists the connection on the admin endpoint while the guard lives.
fn track(
    inputs: &ProxyInputs,
    source: &Workload,
    src: SocketAddr,
    original_dst: SocketAddr,
    actual_dst: SocketAddr,
    protocol: Protocol,
) -> OutboundGuard {
    inputs.connections.track_outbound(OpenConnection {
        workload: source.uid.clone(),
        inbound: false,
        src,
        original_dst,
        actual_dst,
        protocol,
    })
}

fn connect_headers(source: &Workload, peer: SocketAddr) -> HeaderMap {
    let mut h = HeaderMap::new();
    let baggage = Baggage {
        namespace: Some(source.namespace.clone()),
        workload_type: Some("pod".into()),
        workload_name: Some(source.name.clone()),
        ..Default::default()
    };
    let mut insert = |name: &'static str, value: String| {
        if let Ok(v) = http::HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    };
    insert(headers::BAGGAGE, baggage.encode());
    insert(headers::FORWARDED, headers::forwarded(peer, None));
    insert(headers::TRACEPARENT, headers::new_traceparent());
    h
}
