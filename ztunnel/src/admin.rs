//! The admin endpoint (localhost:15000 by default): `/config_dump` with
//! the workloads, services, policies and certificates this ztunnel knows
//! (shaped as Istio's ztunnel shapes them, see [`dump`]), its settings and,
//! in `workloadState` the pods it serves (in in-pod mode) and the open
//! connections of each local workload. Nothing here carries key material.

pub mod dump;

use std::sync::Arc;

use mesh_runtime::drain::DrainWatcher;
use serde_json::json;
use tokio::net::TcpListener;

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
    /// Serves until the drain signal.
    pub async fn serve(self, listener: TcpListener, watcher: DrainWatcher) {
        mesh_runtime::admin::serve(
            "ztunnel",
            "workloads, services, policies, certificates (no keys), settings",
            listener,
            watcher,
            move || serde_json::to_vec_pretty(&self.config_dump()).unwrap_or_default(),
        )
        .await
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
