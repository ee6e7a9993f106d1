//! The waypoint's admin endpoint (localhost:15000 by default), as Istio's
//! waypoints have one: `/config_dump` (the configuration istiod-lite sent,
//! as applied: services, routes, policies, JWT rules with their public
//! keys), `/logging` and `/quitquitquit`. Nothing here carries key
//! material.

use std::sync::Arc;

use mesh_runtime::drain::DrainWatcher;
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
        mesh_runtime::admin::serve(
            "waypoint",
            "the configuration in force (services, routes, policies)",
            listener,
            watcher,
            move || serde_json::to_vec_pretty(&self.config_dump()).unwrap_or_default(),
        )
        .await
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
