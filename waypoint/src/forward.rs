//! Upstream connections: to a chosen endpoint over HBONE with the
//! waypoint's own identity (the destination's identity verified), or plain
//! TCP when the endpoint is not in the mesh.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use mesh_core::{Identity, Network, TunnelProtocol, Workload};
use mesh_hbone::client::ConnectRequest;
use mesh_hbone::{HBONE_PORT, Pool, WorkloadKey, headers};
use mesh_xds::ProxyState;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// The bound on a TCP connect to an endpoint outside the mesh, as
/// ztunnel's to an application (not the kernel's SYN retries, about two
/// minutes).
pub const PLAIN_CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("backend service {0} is not known to this waypoint")]
    UnknownService(String),
    #[error("no healthy upstream: service {service} has no endpoint for port {port}")]
    NoEndpoints { service: String, port: u16 },
    #[error("endpoint {0} has no valid identity: {1}")]
    Identity(String, mesh_core::IdentityError),
    #[error("upstream connect error: {0}")]
    Hbone(#[from] mesh_hbone::Error),
    #[error("upstream connect error to {addr}: {source}")]
    Plain {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// What forwarding needs; shared by every request.
pub struct Upstreams {
    pub pool: Pool,
    pub state: Arc<ProxyState>,
    pub identity: Identity,
    pub own_ip: IpAddr,
    pub network: Network,
}

impl Upstreams {
    /// One endpoint of the service `namespace/hostname` for `port`, picked
    /// uniformly (Istio's default is round robin; the spread is the same),
    /// avoiding the endpoints in `tried` while others remain (Istio's
    /// retries skip the hosts already tried).
    pub fn endpoint(
        &self,
        namespace: &str,
        hostname: &str,
        port: u16,
        tried: &[String],
    ) -> Result<(Arc<Workload>, u16), ForwardError> {
        let key = mesh_core::service::service_key(namespace, hostname);
        let service = self
            .state
            .service(&key)
            .ok_or_else(|| ForwardError::UnknownService(key.clone()))?;
        let endpoints = self.state.endpoints(&service, port);
        if endpoints.is_empty() {
            return Err(ForwardError::NoEndpoints { service: key, port });
        }
        let fresh: Vec<_> = endpoints
            .iter()
            .filter(|(w, _)| !tried.iter().any(|t| t == w.uid.as_str()))
            .collect();
        Ok(match fresh.len() {
            0 => endpoints[rand::random_range(0..endpoints.len())].clone(),
            n => fresh[rand::random_range(0..n)].clone(),
        })
    }

    /// Opens a stream to `workload:port`, telling the destination who the
    /// original client was.
    pub async fn connect(
        &self,
        workload: &Workload,
        port: u16,
        client: SocketAddr,
    ) -> Result<Box<dyn Io>, ForwardError> {
        let ip = workload.addresses[0];
        let target = SocketAddr::new(ip, port);
        if workload.tunnel_protocol != TunnelProtocol::Hbone {
            let tcp = tokio::time::timeout(PLAIN_CONNECT_TIMEOUT, TcpStream::connect(target))
                .await
                .unwrap_or_else(|_| {
                    mesh_core::wait::Wait::AppConnect.timed_out();
                    Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer within {PLAIN_CONNECT_TIMEOUT:?}"),
                    ))
                })
                .map_err(|source| ForwardError::Plain {
                    addr: target,
                    source,
                })?;
            let _ = tcp.set_nodelay(true);
            return Ok(Box::new(tcp));
        }
        let dst_id = workload
            .identity()
            .map_err(|e| ForwardError::Identity(workload.uid.to_string(), e))?;
        let key = WorkloadKey {
            src_id: self.identity.clone(),
            dst_id: vec![dst_id],
            dst: SocketAddr::new(ip, HBONE_PORT),
            src: self.own_ip,
        };
        let mut h = http::HeaderMap::new();
        if let Ok(v) = http::HeaderValue::from_str(&headers::forwarded(client, None)) {
            h.insert(headers::FORWARDED, v);
        }
        let request = ConnectRequest {
            authority: target.to_string(),
            headers: h,
        };
        // Closed as a TCP client would close, so the destination's ztunnel
        // sees a finished exchange rather than a cancelled one.
        let stream = self.pool.connect(&key, &request).await?;
        Ok(Box::new(mesh_hbone::stream::Lingering::from(stream)))
    }
}
