//! The waypoint's admin endpoint (localhost:15000 by default), as Istio's
//! waypoints have one: `/config_dump` (the configuration istiod-lite sent,
//! as applied: services, routes, policies, JWT rules with their public
//! keys), `/logging` and `/quitquitquit`. Nothing here carries key
//! material.

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use mesh_runtime::drain::DrainWatcher;
use mesh_runtime::endpoint::{self, Body};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::bindings::Bindings;

/// What the admin endpoint reads.
pub struct Admin {
    pub gateway: String,
    pub identity: String,
    pub bindings: watch::Receiver<Arc<Bindings>>,
}

impl Admin {
    pub async fn serve(self, listener: TcpListener, watcher: DrainWatcher) {
        endpoint::serve("admin", listener, watcher, move |req| self.respond(req)).await
    }

    fn respond(&self, req: &Request<Incoming>) -> Response<Body> {
        if let Some(shared) = mesh_runtime::admin::respond(req) {
            return shared;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/") => endpoint::text(
                StatusCode::OK,
                format!(
                    "waypoint admin\n\
                     GET  /config_dump     the configuration in force (services, routes, policies)\n{}",
                    mesh_runtime::admin::INDEX
                ),
            ),
            (&Method::GET, "/config_dump") => {
                endpoint::json(serde_json::to_vec_pretty(&self.config_dump()).unwrap_or_default())
            }
            (_, "/" | "/config_dump") => endpoint::status(StatusCode::METHOD_NOT_ALLOWED),
            _ => endpoint::status(StatusCode::NOT_FOUND),
        }
    }

    pub fn config_dump(&self) -> serde_json::Value {
        let bindings = self.bindings.borrow().clone();
        json!({
            "gateway": self.gateway,
            "identity": self.identity,
            "servicesBound": bindings.service_count(),
            "config": bindings.source.as_deref(),
        })
    }
}
