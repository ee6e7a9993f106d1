//! Outbound: a workload's connection arrives (redirected, or on the outbound
//! port directly), is matched to its source workload, and is tunnelled over
//! HBONE to the destination's proxy, or passed through when the destination
//! is not in the mesh.

use std::net::SocketAddr;
use std::sync::Arc;

use http::HeaderMap;
use mesh_core::{GatewayAddress, Identity, Service, TunnelProtocol, Workload};
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::headers::{self, Baggage};
use mesh_hbone::{WorkloadKey, copy};
use tokio::net::TcpStream;
use tracing::{debug, warn};

use super::connections::{OpenConnection, OutboundGuard, Protocol};
use super::{PROXY_PORTS, ProxyInputs};
use crate::metrics::{
    Bytes, ConnectionResult, Endpoints, Reporter, ResponseFlags, SecurityPolicy, TrafficLabels,
};
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
    // Finding the destination and dialling it (lookups, headers, the HBONE
    // handshake) is boxed, so its state is freed once the relay starts: an
    // open connection's task holds only what relaying needs
    // (reliability.md E2).
    match Box::pin(prepare(&inputs, tcp, peer)).await {
        Ok(Some(relay)) => relay.run().await,
        // Counted and logged by its ConnectionResult.
        Ok(None) => {}
        // What fails before both ends are known is logged here.
        Err(e) => {
            warn!(target: "access", direction = "outbound", src.addr = %peer, error = %e, "connection failed")
        }
    }
}

/// A connection whose upstream is open, with its accounting: what lives
/// as long as the connection does. Boxed once, so the futures it passes
/// through hold a pointer rather than each a copy.
struct Relay {
    tcp: TcpStream,
    upstream: Upstream,
    result: ConnectionResult,
    _open: OutboundGuard,
}

enum Upstream {
    Hbone(mesh_hbone::H2Stream),
    Passthrough(TcpStream),
}

impl Relay {
    async fn run(self: Box<Self>) {
        let copied = match self.upstream {
            Upstream::Hbone(stream) => copy::copy_bidirectional(&self.tcp, stream)
                .await
                .map(transferred),
            Upstream::Passthrough(upstream) => {
                super::splice::splice_bidirectional(&self.tcp, &upstream)
                    .await
                    .map(|(sent, recv)| Bytes {
                        request: sent,
                        response: recv,
                    })
            }
        };
        self.result.closed(copied);
    }
}

/// The outbound labels: this workload (and the identity it presents) to
/// `destination` (its identity as xDS gives it), through `service`.
fn labels(
    source: &Workload,
    source_id: Option<&Identity>,
    destination: Option<&Workload>,
    service: Option<&Service>,
    security: SecurityPolicy,
) -> TrafficLabels {
    let mut l = TrafficLabels::new(Reporter::Source, security).with_source(source);
    if let Some(id) = source_id {
        l = l.with_source_principal(id);
    }
    if let Some(d) = destination {
        l = l.with_destination(d);
    }
    if let Some(s) = service {
        l = l.with_service(s);
    }
    l
}

fn transferred(t: copy::Transferred) -> Bytes {
    Bytes {
        request: t.to_tunnel,
        response: t.from_tunnel,
    }
}

/// Finds the destination and opens the upstream; `None` when that failed
/// after the connection was counted (its result says why).
async fn prepare(
    inputs: &ProxyInputs,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Box<Relay>>, OutboundError> {
    let dst = original_dst(&tcp)
        .or(inputs.config.outbound_target)
        .unwrap_or(mesh_runtime::socket::local(&tcp)?);
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
        return via_waypoint(
            inputs,
            tcp,
            peer,
            &source,
            dst,
            waypoint,
            service.as_deref(),
            None,
        )
        .await;
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
        return via_waypoint(
            inputs,
            tcp,
            peer,
            &source,
            dst,
            waypoint,
            None,
            destination.as_deref(),
        )
        .await;
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
            let labels = labels(
                &source,
                Some(&key.src_id),
                Some(&target),
                service.as_deref(),
                SecurityPolicy::MutualTls,
            );
            Ok(tunnel(
                inputs, tcp, &source, peer, original, dst, &key, &request, labels,
            )
            .await)
        }
        destination => {
            debug!(%peer, %dst, "destination not in the mesh; passing through");
            let result = ConnectionResult::new(
                inputs.metrics.clone(),
                labels(
                    &source,
                    source.identity().ok().as_ref(),
                    destination.as_deref(),
                    service.as_deref(),
                    SecurityPolicy::Unknown,
                ),
                Endpoints {
                    src: Some(peer),
                    dst: Some(dst),
                    hbone_addr: None,
                },
            );
            // Bounded as the inbound side's connect to an application is,
            // not by the kernel's SYN retries (about two minutes).
            let connect = async {
                let socket = inputs.sockets.connector(&dst)?;
                tokio::time::timeout(super::APP_CONNECT_TIMEOUT, socket.connect(dst))
                    .await
                    .map_err(|_| {
                        mesh_core::wait::Wait::AppConnect.timed_out();
                        std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
                    })?
            };
            let upstream = match connect.await {
                Ok(u) => u,
                Err(source) => {
                    result.failed(
                        ResponseFlags::Connect,
                        &OutboundError::Passthrough { dst, source },
                    );
                    return Ok(None);
                }
            };
            Ok(Some(Box::new(Relay {
                tcp,
                upstream: Upstream::Passthrough(upstream),
                result,
                _open: track(inputs, &source, peer, original, dst, Protocol::Tcp),
            })))
        }
    }
}

/// Tunnels to a waypoint pod with the original destination as the
/// authority; the waypoint's identity is verified. The destination in
/// metrics is the Service, or the workload addressed by its IP; its
/// principal is the waypoint's, the identity this connection proved.
#[allow(clippy::too_many_arguments)]
async fn via_waypoint(
    inputs: &ProxyInputs,
    tcp: TcpStream,
    peer: SocketAddr,
    source: &Workload,
    original: SocketAddr,
    waypoint: &GatewayAddress,
    service: Option<&Service>,
    destination: Option<&Workload>,
) -> Result<Option<Box<Relay>>, OutboundError> {
    let host = service.map(|s| s.hostname.as_str());
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
    let mut l = labels(
        source,
        Some(&key.src_id),
        destination,
        service,
        SecurityPolicy::MutualTls,
    );
    l.destination_principal = key.dst_id[0].to_string();
    Ok(tunnel(
        inputs, tcp, source, peer, original, original, &key, &request, l,
    )
    .await)
}

/// The HBONE leg of both paths: counted and logged from here (`authority`
/// is the CONNECT target), tunnelled over the pool, listed while open.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    inputs: &ProxyInputs,
    tcp: TcpStream,
    source: &Workload,
    peer: SocketAddr,
    original: SocketAddr,
    authority: SocketAddr,
    key: &WorkloadKey,
    request: &ConnectRequest,
    labels: TrafficLabels,
) -> Option<Box<Relay>> {
    let result = ConnectionResult::new(
        inputs.metrics.clone(),
        labels,
        Endpoints {
            src: Some(peer),
            dst: Some(key.dst),
            hbone_addr: Some(authority),
        },
    );
    let stream = match inputs.pool.connect(key, request).await {
        Ok(s) => s,
        Err(e) => {
            result.failed(ResponseFlags::Connect, &e);
            return None;
        }
    };
    Some(Box::new(Relay {
        tcp,
        upstream: Upstream::Hbone(stream),
        result,
        _open: track(inputs, source, peer, original, key.dst, Protocol::Hbone),
    }))
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
