//! Delta xDS: the translated model, pushed to proxies.
//!
//! - [`resources`]: encoded resources with content-derived versions;
//! - [`server`]: the delta ADS stream;
//! - [`generate`]: turns each model snapshot into a resource set, debounced.

pub mod resources;
pub mod server;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use mesh_runtime::drain::DrainWatcher;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::jwks::{self, JwksResolver};
use crate::model::Model;
use crate::translate::{TranslateConfig, Warning, translate};
pub use resources::{ADDRESS_TYPE, AUTHORIZATION_TYPE, ResourceSet};
pub use server::{AdsService, XdsStats};

/// Changes closer together than this are pushed as one.
pub const DEBOUNCE: Duration = Duration::from_millis(50);

/// One translation, ready to push.
pub struct Generated {
    pub set: ResourceSet,
    pub warnings: Vec<Warning>,
    /// Every `jwksUri` the waypoints' rules name, for the resolver.
    pub jwks_uris: BTreeSet<String>,
    /// The conditions the objects should carry, when asked for (in a
    /// cluster, where they are written).
    pub statuses: Option<mesh_kube::status::Statuses>,
}

/// Translates `model`, inlines the key sets fetched so far, and wraps the
/// result as generation `generation`.
pub fn resource_set(
    model: &Model,
    cfg: &TranslateConfig,
    keys: &jwks::Snapshot,
    generation: u64,
    with_statuses: bool,
) -> Generated {
    let mut t = translate(model, cfg);
    let jwks_uris = jwks::inline(&mut t, keys);
    Generated {
        set: ResourceSet::new(&t, generation),
        statuses: with_statuses.then(|| crate::status::desired(model, &t)),
        warnings: t.warnings,
        jwks_uris,
    }
}

/// Where each translation goes.
pub struct Outputs {
    /// The resources, published when they differ.
    pub resources: watch::Sender<Arc<ResourceSet>>,
    /// The status conditions, when a cluster gets them.
    pub statuses: Option<watch::Sender<Arc<mesh_kube::status::Statuses>>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Re-translates on every model change and every new key set, waiting
/// [`DEBOUNCE`] for more changes first, and publishes the result when it
/// differs. Each warning is logged when it first appears. `on_model` sees
/// every snapshot translated.
pub async fn generate(
    mut models: watch::Receiver<Arc<Model>>,
    cfg: TranslateConfig,
    outputs: Outputs,
    mut on_model: impl FnMut(&Model) + Send,
    jwks: JwksResolver,
    drain: DrainWatcher,
) {
    let Outputs {
        resources: out,
        statuses,
        metrics,
    } = outputs;
    let mut keys_changed = jwks.changes();
    let mut generation = out.borrow().generation;
    let mut warned: HashSet<(String, String)> = HashSet::new();
    loop {
        tokio::select! {
            r = models.changed() => if r.is_err() { return },
            r = keys_changed.changed() => if r.is_err() { return },
            _ = drain.signaled() => return,
        }
        let seen = std::time::Instant::now();
        tokio::time::sleep(DEBOUNCE).await;
        let model = models.borrow_and_update().clone();
        on_model(&model);
        generation += 1;
        keys_changed.mark_unchanged();
        let Generated {
            mut set,
            warnings,
            jwks_uris,
            statuses: wanted,
        } = resource_set(
            &model,
            &cfg,
            &jwks.snapshot(),
            generation,
            statuses.is_some(),
        );
        jwks.want(jwks_uris);
        if let (Some(tx), Some(wanted)) = (&statuses, wanted) {
            tx.send_if_modified(|now| {
                let differs = **now != wanted;
                if differs {
                    *now = Arc::new(wanted);
                }
                differs
            });
        }
        metrics.warnings.set(warnings.len() as i64);
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
            set.changed_at = Some(seen);
            info!(generation, "configuration changed; pushing");
            out.send_replace(Arc::new(set));
        }
    }
}
