//! What ztunnel counts and logs about each connection, in Istio's names
//! (`user-surface.md` §5.1, `dataplane.md` §6.4): the `istio_tcp_*`
//! counters labelled with [`TrafficLabels`], and one `access` log line per
//! connection ("connection complete", or "connection failed" with the
//! error). Both come from one [`ConnectionResult`], so a connection counted
//! is a connection logged.
//!
//! Byte counters are added when the connection ends.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

pub use mesh_telemetry::{Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, UNKNOWN};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tracing::{debug, error, info, warn};

/// The `istio_tcp_*` counters.
#[derive(Default)]
pub struct TrafficMetrics {
    opened: Family<TrafficLabels, Counter>,
    closed: Family<TrafficLabels, Counter>,
    failed: Family<TrafficLabels, Counter>,
    received_bytes: Family<TrafficLabels, Counter>,
    sent_bytes: Family<TrafficLabels, Counter>,
}

impl TrafficMetrics {
    /// Registers the counters in `registry` (the `istio`-prefixed one).
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        registry.register(
            "tcp_connections_opened",
            "The total number of TCP connections opened",
            m.opened.clone(),
        );
        registry.register(
            "tcp_connections_closed",
            "The total number of TCP connections closed",
            m.closed.clone(),
        );
        registry.register(
            "tcp_connections_failed",
            "The total number of TCP connections that failed (response_flags says why)",
            m.failed.clone(),
        );
        registry.register(
            "tcp_received_bytes",
            "The size of the requests of TCP connections, in bytes",
            m.received_bytes.clone(),
        );
        registry.register(
            "tcp_sent_bytes",
            "The size of the responses of TCP connections, in bytes",
            m.sent_bytes.clone(),
        );
        Arc::new(m)
    }
}

/// `istio_crl_policy_rejections_total{reporter}`: peers refused in a
/// handshake, or disconnected, because a CRL in force revokes their
/// certificate (`destination`: a client, at our inbound; `source`: a
/// server, at our outbound). Give it the `istio`-prefixed registry.
pub fn register_crl_rejections(registry: &mut Registry, revocation: &mesh_tls::Revocation) {
    use mesh_tls::revocation::Side;
    use prometheus_client::encoding::EncodeLabelSet;
    #[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct ByReporter {
        reporter: Reporter,
    }
    let rejections = Family::<ByReporter, Counter>::default();
    registry.register(
        "crl_policy_rejections",
        "Peers refused or disconnected because a CRL revokes their certificate",
        rejections.clone(),
    );
    revocation.on_rejection(Box::new(move |side| {
        let reporter = match side {
            Side::Server => Reporter::Destination,
            Side::Client => Reporter::Source,
        };
        rejections.get_or_create(&ByReporter { reporter }).inc();
    }));
}

/// The in-pod proxies (`workload_manager_*`, on the root registry as
/// Istio's ztunnel has them).
#[derive(Default)]
pub struct WorkloadManagerMetrics {
    pub active: Gauge,
    pub pending: Gauge,
    pub started: Counter,
    pub stopped: Counter,
}

impl WorkloadManagerMetrics {
    pub fn new(root: &mut Registry) -> Arc<Self> {
        let m = Self::default();
        let r = root.sub_registry_with_prefix("workload_manager");
        r.register(
            "active_proxy_count",
            "Pods whose proxy is running",
            m.active.clone(),
        );
        r.register(
            "pending_proxy_count",
            "Pods whose proxy could not start yet (retried)",
            m.pending.clone(),
        );
        r.register("proxies_started", "Pod proxies started", m.started.clone());
        r.register("proxies_stopped", "Pod proxies stopped", m.stopped.clone());
        Arc::new(m)
    }
}

/// The workload certificates this ztunnel holds, read at each scrape:
/// `istio_workload_cert_expiry_seconds{identity}` (seconds left; negative
/// once expired) and `istio_workload_certs{state}` (`Available`,
/// `Unavailable`, `Initializing`). Our names: Istio's ztunnel has none.
pub struct CertificateCollector(pub mesh_tls::SecretManager);

impl fmt::Debug for CertificateCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CertificateCollector")
    }
}

impl prometheus_client::collector::Collector for CertificateCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::gauge::ConstGauge;
        let now = std::time::SystemTime::now();
        let mut states = std::collections::BTreeMap::from([
            ("Available", 0i64),
            ("Unavailable", 0),
            ("Initializing", 0),
        ]);
        let mut expiry = Vec::new();
        for (id, st) in self.0.snapshot() {
            let state = match (&st.current, &st.last_error) {
                (Some(c), _) => {
                    let left = match c.validity().not_after.duration_since(now) {
                        Ok(d) => d.as_secs_f64(),
                        Err(e) => -e.duration().as_secs_f64(),
                    };
                    expiry.push((id.to_string(), left));
                    if left > 0.0 {
                        "Available"
                    } else {
                        "Unavailable"
                    }
                }
                (None, Some(_)) => "Unavailable",
                (None, None) => "Initializing",
            };
            *states.entry(state).or_default() += 1;
        }
        let mut m = encoder.encode_descriptor(
            "istio_workload_cert_expiry_seconds",
            "Seconds until each workload certificate expires",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (identity, left) in expiry {
            let g = ConstGauge::new(left);
            g.encode(m.encode_family(&[("identity", identity)])?)?;
        }
        let mut m = encoder.encode_descriptor(
            "istio_workload_certs",
            "Workload certificates, by state",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?;
        for (state, n) in states {
            let g = ConstGauge::new(n);
            g.encode(m.encode_family(&[("state", state)])?)?;
        }
        // Every CA answer refused, and why, is counted as well as logged
        // (reliability.md K3).
        let mut m = encoder.encode_descriptor(
            "istio_workload_cert_requests",
            "Workload certificate requests, by outcome: issued (possibly adjusted) or why the answer was not used",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, n) in self.0.outcomes() {
            let c = prometheus_client::metrics::counter::ConstCounter::new(n);
            c.encode(m.encode_family(&[("outcome", outcome)])?)?;
        }
        Ok(())
    }
}

/// What the access log says about each end.
#[derive(Clone, Debug, Default)]
pub struct Endpoints {
    pub src: Option<SocketAddr>,
    /// Where this ztunnel connected or accepted (a pod's or waypoint's
    /// HBONE port, or the application).
    pub dst: Option<SocketAddr>,
    /// The CONNECT authority, for HBONE.
    pub hbone_addr: Option<SocketAddr>,
}

/// Bytes in each direction: `request` from the client, `response` to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bytes {
    pub request: u64,
    pub response: u64,
}

/// One connection from the moment its ends are known: counted as opened
/// now, and as closed (and failed, with a flag) when finished or dropped.
pub struct ConnectionResult {
    metrics: Arc<TrafficMetrics>,
    labels: TrafficLabels,
    endpoints: Endpoints,
    started: Instant,
    finished: bool,
}

impl ConnectionResult {
    pub fn new(metrics: Arc<TrafficMetrics>, labels: TrafficLabels, endpoints: Endpoints) -> Self {
        metrics.opened.get_or_create(&labels).inc();
        let r = ConnectionResult {
            metrics,
            labels,
            endpoints,
            started: Instant::now(),
            finished: false,
        };
        debug!(target: "access", direction = r.labels.reporter.direction(),
            src.addr = r.endpoints.src.map(tracing::field::display),
            dst.addr = r.endpoints.dst.map(tracing::field::display), "connection opened");
        r
    }

    pub fn labels(&self) -> &TrafficLabels {
        &self.labels
    }

    /// The connection ended normally.
    pub fn succeeded(mut self, bytes: Bytes) {
        self.finish(bytes, ResponseFlags::None, None);
    }

    /// The connection was refused or could not be made (`flags` says how):
    /// counted as failed.
    pub fn failed(mut self, flags: ResponseFlags, error: &dyn fmt::Display) {
        self.finish(Bytes::default(), flags, Some(error.to_string()));
    }

    /// The data phase ended: normally, or with an I/O error (a reset), which
    /// is logged but is not a failure of the mesh.
    pub fn closed<E: fmt::Display>(mut self, copied: Result<Bytes, E>) {
        match copied {
            Ok(bytes) => self.finish(bytes, ResponseFlags::None, None),
            Err(e) => self.finish(Bytes::default(), ResponseFlags::None, Some(e.to_string())),
        }
    }

    fn finish(&mut self, bytes: Bytes, flags: ResponseFlags, error: Option<String>) {
        self.finished = true;
        let mut labels = self.labels.clone();
        labels.response_flags = flags;
        let m = &self.metrics;
        m.closed.get_or_create(&labels).inc();
        if flags != ResponseFlags::None {
            m.failed.get_or_create(&labels).inc();
        }
        m.received_bytes
            .get_or_create(&labels)
            .inc_by(bytes.request);
        m.sent_bytes.get_or_create(&labels).inc_by(bytes.response);
        self.log(&labels, bytes, error.as_deref());
    }

    fn log(&self, l: &TrafficLabels, bytes: Bytes, error: Option<&str>) {
        // Unknown values are left out of the line rather than printed.
        let opt = |v: &'_ str| -> Option<String> { (v != UNKNOWN).then(|| v.to_string()) };
        let (src_workload, src_namespace, src_identity) = (
            opt(&l.source_workload),
            opt(&l.source_workload_namespace),
            opt(&l.source_principal),
        );
        let (dst_service, dst_workload, dst_namespace, dst_identity) = (
            opt(&l.destination_service),
            opt(&l.destination_workload),
            opt(&l.destination_workload_namespace),
            opt(&l.destination_principal),
        );
        let e = &self.endpoints;
        let duration = format!("{}ms", self.started.elapsed().as_millis());
        let direction = l.reporter.direction();
        macro_rules! access {
            ($level:ident, $message:literal) => {
                $level!(target: "access", direction,
                    src.addr = e.src.map(display), src.workload = src_workload.as_deref(),
                    src.namespace = src_namespace.as_deref(), src.identity = src_identity.as_deref(),
                    dst.addr = e.dst.map(display), dst.hbone_addr = e.hbone_addr.map(display),
                    dst.service = dst_service.as_deref(), dst.workload = dst_workload.as_deref(),
                    dst.namespace = dst_namespace.as_deref(), dst.identity = dst_identity.as_deref(),
                    bytes_sent = bytes.request, bytes_recv = bytes.response, duration = %duration,
                    response_flags = (l.response_flags != ResponseFlags::None).then(|| l.response_flags.as_str()),
                    error, $message)
            };
        }
        // Refused or not made: WARN "connection failed"; ended by an I/O
        // error: ERROR "connection complete" with the error; else INFO.
        match (l.response_flags, error) {
            (ResponseFlags::None, None) => access!(info, "connection complete"),
            (ResponseFlags::None, Some(_)) => access!(error, "connection complete"),
            _ => access!(warn, "connection failed"),
        }
    }
}

impl Drop for ConnectionResult {
    /// Cancelled (a drain's deadline, the peer gone mid-handshake): closed,
    /// with what is known.
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Bytes::default(), ResponseFlags::None, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use mesh_core::{TrustDomain, Workload, WorkloadTelemetry, WorkloadUid};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn workload(name: &str, ns: &str, sa: &str) -> Workload {
        Workload {
            uid: WorkloadUid::for_pod("Kubernetes", ns, name),
            name: format!("{name}-7d4b9-x2k9p"),
            namespace: ns.into(),
            addresses: vec![],
            network: Default::default(),
            tunnel_protocol: Default::default(),
            trust_domain: TrustDomain::default(),
            service_account: sa.into(),
            node: "node-a".into(),
            authorization_policies: vec![],
            services: Default::default(),
            waypoint: None,
            telemetry: WorkloadTelemetry {
                workload_name: name.into(),
                canonical_name: name.into(),
                canonical_revision: "v1".into(),
                cluster_id: "Kubernetes".into(),
            },
        }
    }

    #[test]
    fn a_connection_is_counted_and_logged_once_with_istios_labels() {
        let mut root = Registry::default();
        let metrics = TrafficMetrics::new(root.sub_registry_with_prefix("istio"));
        let client = workload("sleep", "apps", "sleep");
        let server = workload("web", "apps", "web");
        let labels = TrafficLabels::new(Reporter::Destination, SecurityPolicy::MutualTls)
            .with_source(&client)
            .with_source_principal(&client.identity().unwrap())
            .with_destination(&server);
        let endpoints = Endpoints {
            src: Some("10.0.0.1:40000".parse().unwrap()),
            dst: Some("10.0.0.2:8080".parse().unwrap()),
            hbone_addr: Some("10.0.0.2:8080".parse().unwrap()),
        };
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let ok = ConnectionResult::new(metrics.clone(), labels.clone(), endpoints.clone());
            ok.succeeded(Bytes {
                request: 80,
                response: 175,
            });
            let denied = ConnectionResult::new(metrics.clone(), labels.clone(), endpoints.clone());
            denied.failed(ResponseFlags::Deny, &"denied by apps/p");
            drop(ConnectionResult::new(
                metrics.clone(),
                labels.clone(),
                endpoints,
            ));
        });

        let text = mesh_runtime::stats::encode(&root);
        let common = "reporter=\"destination\",source_workload=\"sleep\",source_canonical_service=\"sleep\",\
            source_canonical_revision=\"v1\",source_workload_namespace=\"apps\",\
            source_principal=\"spiffe://cluster.local/ns/apps/sa/sleep\",source_app=\"sleep\",\
            source_version=\"v1\",source_cluster=\"Kubernetes\",destination_service=\"unknown\",\
            destination_service_namespace=\"unknown\",destination_service_name=\"unknown\",\
            destination_workload=\"web\",destination_canonical_service=\"web\",\
            destination_canonical_revision=\"v1\",destination_workload_namespace=\"apps\",\
            destination_principal=\"spiffe://cluster.local/ns/apps/sa/web\",destination_app=\"web\",\
            destination_version=\"v1\",destination_cluster=\"Kubernetes\",request_protocol=\"tcp\"";
        let line = |name: &str, flags: &str, value: u64| {
            format!(
                "istio_{name}_total{{{common},response_flags=\"{flags}\",connection_security_policy=\"mutual_tls\"}} {value}\n"
            )
        };
        for want in [
            line("tcp_connections_opened", "-", 3),
            line("tcp_connections_closed", "-", 2),
            line("tcp_connections_closed", "DENY", 1),
            line("tcp_connections_failed", "DENY", 1),
            line("tcp_received_bytes", "-", 80),
            line("tcp_sent_bytes", "-", 175),
        ] {
            assert!(text.contains(&want), "{want} not in\n{text}");
        }
        assert!(!text.contains("tcp_connections_failed_total{reporter=\"destination\",source_workload=\"sleep\",source_canonical_service=\"sleep\",source_canonical_revision=\"v1\",source_workload_namespace=\"apps\",source_principal=\"spiffe://cluster.local/ns/apps/sa/sleep\",source_app=\"sleep\",source_version=\"v1\",source_cluster=\"Kubernetes\",destination_service=\"unknown\",destination_service_namespace=\"unknown\",destination_service_name=\"unknown\",destination_workload=\"web\",destination_canonical_service=\"web\",destination_canonical_revision=\"v1\",destination_workload_namespace=\"apps\",destination_principal=\"spiffe://cluster.local/ns/apps/sa/web\",destination_app=\"web\",destination_version=\"v1\",destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\""));

        let log = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 3, "{log}");
        assert!(
            lines[0].contains(" INFO access: connection complete "),
            "{}",
            lines[0]
        );
        for field in [
            "src.addr=10.0.0.1:40000",
            "src.workload=\"sleep\"",
            "src.namespace=\"apps\"",
            "src.identity=\"spiffe://cluster.local/ns/apps/sa/sleep\"",
            "dst.addr=10.0.0.2:8080",
            "dst.hbone_addr=10.0.0.2:8080",
            "dst.workload=\"web\"",
            "dst.identity=\"spiffe://cluster.local/ns/apps/sa/web\"",
            "direction=\"inbound\"",
            "bytes_sent=80",
            "bytes_recv=175",
        ] {
            assert!(lines[0].contains(field), "{field} not in {}", lines[0]);
        }
        assert!(
            !lines[0].contains("dst.service"),
            "unknown fields are left out"
        );
        assert!(lines[1].contains(" WARN access: connection failed "));
        assert!(
            lines[1].contains("response_flags=\"DENY\" error=\"denied by apps/p\""),
            "{}",
            lines[1]
        );
    }
}
