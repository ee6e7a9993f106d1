//! The HBONE listener (15008): mutual TLS with the waypoint's identity,
//! HTTP/2, and per CONNECT stream the original destination, the protocol,
//! and HTTP or TCP handling.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, StatusCode};
use mesh_core::Identity;
use mesh_hbone::headers;
use mesh_hbone::server::{self, InboundConnect};
use mesh_runtime::drain::{DrainWatcher, run_with_drain};
use mesh_tls::SecretManager;
use mesh_xds::ProxyState;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::bindings::Bindings;
use crate::config::Config;
use crate::forward::Upstreams;
use crate::sniff::{self, Prefixed, Protocol};
use crate::target::Target;

/// Everything a connection needs; one per process.
pub struct Inputs {
    pub config: Config,
    pub certs: SecretManager,
    pub state: Arc<ProxyState>,
    pub bindings: watch::Receiver<Arc<Bindings>>,
    pub upstreams: Upstreams,
    pub metrics: Arc<crate::metrics::RequestMetrics>,
    /// Spans, when a collector is configured.
    pub tracing: Option<Arc<crate::trace::Tracing>>,
}

/// One tunnelled connection, as the HTTP and TCP handlers see it.
pub struct Downstream {
    /// The client's identity (its certificate, presented by its ztunnel).
    pub peer: Identity,
    /// The original client address (`forwarded: for=`), else the peer's.
    pub client: SocketAddr,
    /// The original destination: the CONNECT authority.
    pub original: SocketAddr,
    pub target: Target,
    pub protocol: Protocol,
}

pub async fn handle(inputs: Arc<Inputs>, tcp: TcpStream, peer: SocketAddr, drain: DrainWatcher) {
    if let Err(e) = serve(inputs, tcp, peer, drain).await {
        warn!(%peer, error = %e, "inbound HBONE connection refused");
    }
}

async fn serve(
    inputs: Arc<Inputs>,
    tcp: TcpStream,
    peer: SocketAddr,
    drain: DrainWatcher,
) -> anyhow::Result<()> {
    let cert = inputs
        .certs
        .fetch_certificate(&inputs.config.identity)
        .await?;
    let check = cert.peer_check(mesh_tls::revocation::Side::Server);
    let (tls, peer_id) = server::accept_tls(tcp, cert.server_config(), &inputs.config.h2).await?;
    debug!(%peer, %peer_id, "HBONE connection established");
    let revoked = check.revoked(tls.get_ref().1.peer_certificates());
    let deadline = inputs.config.termination_deadline;
    let shutdown = {
        let drain = drain.clone();
        async move {
            drain.signaled().await;
        }
    };
    server::serve_until(tls, &inputs.config.h2, shutdown, revoked, |connect| {
        let stream = handle_stream(inputs.clone(), connect, peer, peer_id.clone());
        tokio::spawn(run_with_drain(drain.clone(), deadline, stream));
    })
    .await?;
    Ok(())
}

/// The `for=` address of a `forwarded` header.
fn forwarded_for(h: &HeaderMap) -> Option<SocketAddr> {
    let value = h.get(headers::FORWARDED)?.to_str().ok()?;
    value
        .split([';', ','])
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("for"))
        .and_then(|(_, v)| v.trim_matches('"').parse().ok())
}

async fn handle_stream(
    inputs: Arc<Inputs>,
    connect: InboundConnect,
    peer: SocketAddr,
    peer_id: Identity,
) {
    if connect.method() != Method::CONNECT {
        return connect.reject(StatusCode::BAD_REQUEST);
    }
    let Some(original) = connect
        .authority()
        .and_then(|a| a.parse::<SocketAddr>().ok())
    else {
        return connect.reject(StatusCode::BAD_REQUEST);
    };
    let client = forwarded_for(connect.headers()).unwrap_or(peer);
    let bindings = inputs.bindings.borrow().clone();
    let target = match Target::resolve(&inputs.state, &bindings, &inputs.config.network, original) {
        Ok(t) => t,
        Err(e) => {
            warn!(target: "access", src_identity = %peer_id, dst = %original, reason = %e, "connection refused");
            return connect.reject(StatusCode::BAD_REQUEST);
        }
    };
    // Lingering: once the HTTP or TCP handler has ended its side, the
    // client's END_STREAM is read rather than the stream reset under it.
    let mut stream = match connect.accept(HeaderMap::new()) {
        Ok(s) => mesh_hbone::stream::Lingering::from(s),
        Err(e) => {
            debug!(error = %e, "peer went away before the 200");
            return;
        }
    };
    let declared = target.protocol(original.port());
    let (protocol, prefix) = match sniff::detect(
        &mut stream,
        declared,
        inputs.config.protocol_detection_timeout,
    )
    .await
    {
        Ok(x) => x,
        Err(e) => {
            debug!(error = %e, "connection ended during protocol detection");
            return;
        }
    };
    let io = Prefixed::new(prefix, stream);
    let ctx = Arc::new(Downstream {
        peer: peer_id,
        client,
        original,
        target,
        protocol,
    });
    match protocol {
        Protocol::Http1 | Protocol::Http2 => crate::http::serve(io, protocol, ctx, inputs).await,
        Protocol::Tcp => crate::tcp::forward(io, ctx, inputs).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_address_comes_from_forwarded() {
        let mut h = HeaderMap::new();
        h.insert(
            headers::FORWARDED,
            "for=\"10.0.0.5:4321\";host=echo".parse().unwrap(),
        );
        assert_eq!(forwarded_for(&h), Some("10.0.0.5:4321".parse().unwrap()));
        h.insert(headers::FORWARDED, "host=echo".parse().unwrap());
        assert_eq!(forwarded_for(&h), None);
    }
}
