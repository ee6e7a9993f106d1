//! Delta xDS: the translated model, pushed to proxies.
//!
//! - [`resources`]: encoded resources with content-derived versions;
//! - [`server`]: the delta ADS stream;
//! - [`generate`]: turns each model snapshot into a resource set, debounced.

pub mod resources;
pub mod server;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use mesh_runtime::drain::DrainWatcher;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::model::Model;
use crate::translate::{TranslateConfig, Warning, translate};
pub use resources::{ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceSet};
pub use server::{AdsService, XdsStats};

/// Changes closer together than this are pushed as one.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// Translates `model` and wraps it as generation `generation`.
pub fn resource_set(
    model: &Model,
    cfg: &TranslateConfig,
    generation: u64,
) -> (ResourceSet, Vec<Warning>) {
    let t = translate(model, cfg);
    (ResourceSet::new(&t, generation), t.warnings)
}

/// Re-translates on every model change, waiting [`DEBOUNCE`] for more
/// changes first, and publishes the result when it differs. Each warning is
/// logged when it first appears. `on_model` sees every snapshot translated.
pub async fn generate(
    mut models: watch::Receiver<Arc<Model>>,
    cfg: TranslateConfig,
    out: watch::Sender<Arc<ResourceSet>>,
    mut on_model: impl FnMut(&Model) + Send,
    drain: DrainWatcher,
) {
    let mut generation = out.borrow().generation;
    let mut warned: HashSet<(String, String)> = HashSet::new();
    loop {
        tokio::select! {
            r = models.changed() => if r.is_err() { return },
            _ = drain.signaled() => return,
        }
        tokio::time::sleep(DEBOUNCE).await;
        let model = models.borrow_and_update().clone();
        on_model(&model);
        generation += 1;
        let (set, warnings) = resource_set(&model, &cfg, generation);
        let mut now = HashSet::new();
        for w in warnings {
            let key = (w.object.to_string(), w.message.clone());
            if !warned.contains(&key) {
                warn!(object = %w.object, "{}", w.message);
            }
            now.insert(key);
        }
        warned = now;
        let changed = out.borrow().by_type != set.by_type;
        if changed {
            info!(generation, "configuration changed; pushing");
            out.send_replace(Arc::new(set));
        }
    }
}
