//! The waypoint's xDS subscriptions: addresses (workloads and services, to
//! resolve destinations and backends) and its own configuration.

use std::sync::Arc;

use mesh_model::waypoint::{WAYPOINT_CONFIG_TYPE, WaypointConfig};
use mesh_xds::{ADDRESS_TYPE, Handler, ProxyState, StateHandler};
use tokio::sync::watch;
use tracing::info;

use crate::bindings::Bindings;

pub struct WaypointHandler {
    addresses: StateHandler,
    /// `namespace/name`: the one configuration resource we accept.
    name: String,
    bindings: watch::Sender<Arc<Bindings>>,
}

impl WaypointHandler {
    pub fn new(
        state: Arc<ProxyState>,
        name: String,
        bindings: watch::Sender<Arc<Bindings>>,
    ) -> Self {
        Self {
            addresses: StateHandler::new(state, false),
            name,
            bindings,
        }
    }
}

/// Decodes and compiles one configuration body; errors name the field.
pub fn decode(body: &[u8]) -> Result<Bindings, String> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let config: WaypointConfig = serde_path_to_error::deserialize(&mut de)
        .map_err(|e| format!("{}: {}", e.path(), e.inner()))?;
    Bindings::compile(&config)
}

impl Handler for WaypointHandler {
    fn types(&self) -> Vec<&'static str> {
        vec![ADDRESS_TYPE, WAYPOINT_CONFIG_TYPE]
    }

    fn apply(&mut self, type_url: &str, name: &str, body: &[u8]) -> Result<(), String> {
        if type_url != WAYPOINT_CONFIG_TYPE {
            return self.addresses.apply(type_url, name, body);
        }
        if name != self.name {
            return Err(format!(
                "configuration {name} is not this waypoint's ({})",
                self.name
            ));
        }
        let bindings = decode(body)?;
        info!(waypoint = %self.name, services = bindings.service_count(), "configuration applied");
        self.bindings.send_replace(Arc::new(bindings));
        Ok(())
    }

    fn remove(&mut self, type_url: &str, name: &str) -> bool {
        if type_url != WAYPOINT_CONFIG_TYPE {
            return self.addresses.remove(type_url, name);
        }
        if name != self.name {
            return false;
        }
        info!(waypoint = %self.name, "configuration removed; serving nothing");
        self.bindings.send_replace(Arc::default());
        true
    }
}
