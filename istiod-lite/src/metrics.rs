//! What istiod-lite counts, on its monitoring port (15014, `/metrics`), in
//! Istio's names where istiod has them: pushes, connected proxies, NACKs
//! and convergence time for xDS (`pilot_*`), requests and refusals for the
//! CA (`citadel_server_*`). Two are ours: `istiod_lite_config_errors` (the
//! manifests refused and kept at their last good version) and
//! `istiod_lite_translation_warnings`.

use std::sync::Arc;

use mesh_model::manifests::ErrorLog;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::xds::resources::{ADDRESS_TYPE, AUTHORIZATION_TYPE, WAYPOINT_CONFIG_TYPE};

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TypeLabel {
    /// `address`, `authorization` or `waypoint`.
    pub r#type: String,
}

impl TypeLabel {
    pub fn of(type_url: &str) -> Self {
        let short = match type_url {
            ADDRESS_TYPE => "address",
            AUTHORIZATION_TYPE => "authorization",
            WAYPOINT_CONFIG_TYPE => "waypoint",
            _ => "other",
        };
        TypeLabel {
            r#type: short.into(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VersionLabel {
    version: String,
}

/// Every metric istiod-lite exports.
#[derive(Default)]
pub struct Metrics {
    pub pushes: Family<TypeLabel, Counter>,
    pub rejects: Family<TypeLabel, Counter>,
    connected: Family<VersionLabel, Gauge>,
    pub convergence: ConvergenceHistogram,
    pub warnings: Gauge,
    pub csr: Counter,
    pub issued: Counter,
    pub auth_failures: Counter,
    pub refused: Counter,
}

/// Seconds from a configuration change to a proxy being sent it.
pub struct ConvergenceHistogram(pub Histogram);

impl Default for ConvergenceHistogram {
    fn default() -> Self {
        Self(Histogram::new([0.1, 0.5, 1.0, 3.0, 5.0, 10.0, 20.0, 30.0]))
    }
}

impl Metrics {
    /// Registers everything in `registry`; `errors` is read at each scrape.
    pub fn new(registry: &mut Registry, errors: Option<ErrorLog>) -> Arc<Self> {
        let m = Metrics::default();
        registry.register(
            "pilot_xds_pushes",
            "xDS responses sent, by type",
            m.pushes.clone(),
        );
        registry.register(
            "pilot_total_xds_rejects",
            "xDS responses proxies rejected (NACKed), by type",
            m.rejects.clone(),
        );
        registry.register(
            "pilot_xds",
            "Proxies connected over xDS",
            m.connected.clone(),
        );
        registry.register(
            "pilot_proxy_convergence_time",
            "Seconds from a configuration change to a proxy being sent all of it",
            m.convergence.0.clone(),
        );
        registry.register(
            "istiod_lite_translation_warnings",
            "Objects the last translation warned about (see the log)",
            m.warnings.clone(),
        );
        registry.register(
            "citadel_server_csr_count",
            "Certificate signing requests received",
            m.csr.clone(),
        );
        registry.register(
            "citadel_server_success_cert_issuance_count",
            "Certificates issued",
            m.issued.clone(),
        );
        registry.register(
            "citadel_server_authentication_failure_count",
            "CA requests whose caller could not be authenticated",
            m.auth_failures.clone(),
        );
        registry.register(
            "citadel_server_csr_sign_err_count",
            "CA requests refused after authentication (identity not allowed, bad CSR)",
            m.refused.clone(),
        );
        mesh_telemetry::register_build(registry.sub_registry_with_prefix("istio"), "istiod");
        mesh_runtime::stats::register_process(registry);
        if let Some(errors) = errors {
            registry.register_collector(Box::new(ConfigErrors(errors)));
        }
        Arc::new(m)
    }

    /// A proxy's stream opened (`true`) or closed.
    pub fn connected(&self, open: bool) {
        let g = self.connected.get_or_create(&VersionLabel {
            version: env!("CARGO_PKG_VERSION").into(),
        });
        if open {
            g.inc();
        } else {
            g.dec();
        }
    }
}

/// `istiod_lite_config_errors`: the manifest files or objects refused now.
#[derive(Debug)]
struct ConfigErrors(ErrorLog);

impl Collector for ConfigErrors {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let n = self.0.lock().map(|e| e.len()).unwrap_or_default();
        let gauge = ConstGauge::new(n as i64);
        let metric = encoder.encode_descriptor(
            "istiod_lite_config_errors",
            "Manifests refused (each keeps its last good version; see the log)",
            None,
            gauge.metric_type(),
        )?;
        gauge.encode(metric)
    }
}
