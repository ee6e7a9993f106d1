//! The node agent's metrics (15014, `/metrics`), read from its latest
//! status at each scrape: `istio_cni_ztunnels_connected`,
//! `istio_cni_pods{captured="true|false"}` (enrolled pods on this node, and
//! whether their redirection is in place), `istio_cni_redirection_ready`
//! (0 when the redirection mode cannot capture pods here) and, in eBPF mode,
//! `istio_cni_ebpf_events_total{event}` from the programs' counters.

use std::sync::{Arc, Mutex};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::Status;

/// The status last written, shared with the collector.
pub type Latest = Arc<Mutex<Option<Status>>>;

#[derive(Debug)]
pub struct StatusCollector(pub Latest);

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let latest = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let Some(s) = latest.as_ref() else {
            return Ok(());
        };
        let g = ConstGauge::new(s.ztunnels_connected as i64);
        g.encode(encoder.encode_descriptor(
            "istio_cni_ztunnels_connected",
            "ztunnels connected over ZDS",
            None,
            MetricType::Gauge,
        )?)?;
        let ready = ConstGauge::new(i64::from(s.redirection.error.is_none()));
        ready.encode(encoder.encode_descriptor(
            "istio_cni_redirection_ready",
            "1 when the redirection mode can capture pods on this node",
            None,
            MetricType::Gauge,
        )?)?;
        let captured = s.pods.values().filter(|p| p.captured).count() as i64;
        let mut pods = encoder.encode_descriptor(
            "istio_cni_pods",
            "Enrolled pods on this node, by whether their traffic is captured",
            None,
            MetricType::Gauge,
        )?;
        for (label, n) in [
            ("true", captured),
            ("false", s.pods.len() as i64 - captured),
        ] {
            ConstGauge::new(n).encode(pods.encode_family(&[("captured", label)])?)?;
        }
        if let Some(ebpf) = &s.redirection.ebpf {
            let mut events = encoder.encode_descriptor(
                "istio_cni_ebpf_events",
                "What the eBPF programs counted, by event",
                None,
                MetricType::Counter,
            )?;
            for (event, n) in &ebpf.counters {
                ConstCounter::new(*n).encode(events.encode_family(&[("event", *event)])?)?;
            }
        }
        Ok(())
    }
}
