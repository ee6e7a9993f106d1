//! Non-HTTP traffic through the waypoint: L4 authorization (HTTP-only
//! rules cannot match), then the bytes unchanged to an endpoint.

use std::sync::Arc;

use tracing::{debug, info, warn};

use crate::forward::Io;
use crate::policy::{Decision, RequestAttributes};
use crate::server::{Downstream, Inputs};
use crate::target::Target;

pub async fn forward(mut io: impl Io, ctx: Arc<Downstream>, inputs: Arc<Inputs>) {
    let started = std::time::Instant::now();
    let principal = ctx.peer.principal();
    let attrs = RequestAttributes {
        source_ip: ctx.client.ip(),
        source_principal: Some(&principal),
        source_namespace: Some(ctx.peer.namespace()),
        source_service_account: Some(ctx.peer.service_account()),
        destination_ip: ctx.original.ip(),
        destination_port: ctx.original.port(),
        http: None,
    };
    if let Decision::Deny { policy } = ctx.target.policies().evaluate(&attrs) {
        info!(target: "access", src_identity = %ctx.peer, dst = %ctx.original, ?policy, "connection denied");
        return; // dropping the stream resets it
    }
    let endpoint = match &ctx.target {
        Target::Service(b) => {
            inputs
                .upstreams
                .endpoint(&b.namespace, &b.hostname, ctx.original.port(), &[])
        }
        Target::Workload { workload, .. } => Ok((workload.clone(), ctx.original.port())),
    };
    let upstream = match endpoint {
        Ok((w, port)) => inputs.upstreams.connect(&w, port, ctx.client).await,
        Err(e) => Err(e),
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(e) => {
            warn!(target: "access", src_identity = %ctx.peer, dst = %ctx.original, error = %e, "connection failed");
            return;
        }
    };
    match tokio::io::copy_bidirectional(&mut io, &mut upstream).await {
        Ok((sent, received)) => {
            info!(target: "access", src_identity = %ctx.peer, dst = %ctx.original, destination = %ctx.target.describe(),
                bytes_sent = sent, bytes_recv = received, duration = ?started.elapsed(), "connection complete")
        }
        Err(e) => debug!(error = %e, "TCP forwarding ended with an error"),
    }
}
