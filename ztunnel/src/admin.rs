//! The admin endpoint (localhost:15000 by default): `/config_dump` with
//! the workloads, services, policies and certificates this ztunnel knows
//! (shaped as Istio's ztunnel shapes them, see [`dump`]), its settings and,
//! in `workloadState` the pods it serves (in in-pod mode) and the open
//! connections of each local workload. Nothing here carries key material.

pub mod dump;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use mesh_runtime::drain::DrainWatcher;
use serde_json::json;
use tokio::net::TcpListener;
use tracing::{debug, warn};

use mesh_tls::SecretManager;

use crate::config::{Config, ProxyMode};
use crate::inpod::PodStates;
use crate::proxy::connections::ConnectionManager;
use crate::state::ProxyState;

/// What the admin endpoint reads.
#[derive(Clone)]
pub struct Admin {
    pub config: Arc<Config>,
    pub pods: Option<PodStates>,
    pub state: Arc<ProxyState>,
    pub certs: SecretManager,
    pub connections: ConnectionManager,
}

impl Admin {
    pub async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
        use anyhow::Context;
        TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding the admin endpoint {addr} (ADMIN_ADDR)"))
    }

    /// Serves until the drain signal; open requests finish on their own.
    pub async fn serve(self, listener: TcpListener, watcher: DrainWatcher) {
        loop {
            let stream = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        warn!(error = %e, "admin accept failed");
                        continue;
                    }
                },
                _ = watcher.signaled() => return,
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(admin.respond(&req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    debug!(error = %e, "admin connection ended");
                }
            });
        }
    }

    fn respond<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/config_dump") => {
                let body = serde_json::to_vec_pretty(&self.config_dump()).unwrap_or_default();
                let mut r = Response::new(Full::new(Bytes::from(body)));
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                r
            }
            (_, "/config_dump") => status(StatusCode::METHOD_NOT_ALLOWED),
            _ => status(StatusCode::NOT_FOUND),
        }
    }

    /// The dump: `workloads`, `services`, `policies`, `certificates`,
    /// `config` and `workloadState` (pods served in in-pod mode, open
    /// connections).
    pub fn config_dump(&self) -> serde_json::Value {
        let c = &self.config;
        let inpod = c.inpod.as_ref().map(|i| {
            json!({
                "uds": i.uds,
                "mark": i.mark,
                "portReuse": i.port_reuse,
                "redirection": i.redirection,
            })
        });
        let mut dump = json!({
            "workloads": dump::workloads(&self.state),
            "services": dump::services(&self.state),
            "policies": dump::policies(&self.state),
            "certificates": dump::certificates(&self.certs.snapshot()),
            "config": {
                "nodeName": c.node_name,
                "proxyMode": match c.proxy_mode {
                    ProxyMode::Shared => "shared",
                    ProxyMode::Dedicated => "dedicated",
                },
                "network": c.network.to_string(),
                "caAddress": c.ca.target.address,
                "xdsAddress": c.xds.as_ref().map(|x| x.target.address.clone()),
                "hbonePort": c.hbone_port,
                "inpodEnabled": inpod.is_some(),
                "inpod": inpod,
            },
        });
        let mut states = serde_json::Map::new();
        if let Some(pods) = &self.pods {
            for (uid, p) in pods.snapshot() {
                states.insert(
                    uid,
                    json!({
                        "name": p.name,
                        "namespace": p.namespace,
                        "serviceAccount": p.service_account,
                        "state": p.state,
                    }),
                );
            }
        }
        dump::add_connections(&mut states, &self.state, self.connections.snapshot());
        if self.pods.is_some() || !states.is_empty() {
            dump["workloadState"] = states.into();
        }
        dump
    }
}

fn status(code: StatusCode) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(format!("{code}\n"))));
    *r.status_mut() = code;
    r
}
