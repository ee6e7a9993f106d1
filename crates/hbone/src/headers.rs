//! The informational headers of a CONNECT request: `traceparent`,
//! `forwarded` and `baggage`. None of them affects routing.

use std::fmt::Write;
use std::net::SocketAddr;

pub const BAGGAGE: &str = "baggage";
pub const FORWARDED: &str = "forwarded";
pub const TRACEPARENT: &str = "traceparent";

/// A fresh W3C trace context: `00-<32 hex trace id>-<16 hex parent id>-00`.
pub fn new_traceparent() -> String {
    let trace: u128 = rand::random::<u128>().max(1);
    let parent: u64 = rand::random::<u64>().max(1);
    format!("00-{trace:032x}-{parent:016x}-00")
}

/// Whether a `traceparent` value has the right shape (55 characters,
/// `xx-32hex-16hex-xx`).
pub fn is_valid_traceparent(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    v.len() == 55
        && matches!(parts.as_slice(), [a, b, c, d]
            if a.len() == 2 && b.len() == 32 && c.len() == 16 && d.len() == 2
            && v.chars().all(|ch| ch == '-' || ch.is_ascii_hexdigit()))
}

/// `for="<client ip:port>"`, with `;host=<service>` when the service is known.
pub fn forwarded(client: SocketAddr, host: Option<&str>) -> String {
    let mut v = format!("for=\"{client}\"");
    if let Some(h) = host {
        let _ = write!(v, ";host={h}");
    }
    v
}

/// The `host=` parameter of a `forwarded` header, the only part Istio reads.
pub fn forwarded_host(value: &str) -> Option<&str> {
    value
        .split([';', ','])
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map(|(_, v)| v.trim_matches('"'))
        .filter(|v| !v.is_empty())
}

/// Telemetry facts about a workload, carried in `baggage`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Baggage {
    pub cluster_id: Option<String>,
    pub namespace: Option<String>,
    pub workload_type: Option<String>,
    pub workload_name: Option<String>,
    pub service_name: Option<String>,
    pub service_version: Option<String>,
    pub region: Option<String>,
    pub zone: Option<String>,
}

impl Baggage {
    /// The comma-joined `key=value` list, leaving out empty fields.
    pub fn encode(&self) -> String {
        let mut parts = Vec::new();
        let mut push = |k: String, v: &Option<String>| {
            if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
                parts.push(format!("{k}={v}"));
            }
        };
        push("k8s.cluster.name".into(), &self.cluster_id);
        push("k8s.namespace.name".into(), &self.namespace);
        if let Some(t) = &self.workload_type {
            push(
                format!("k8s.{}.name", t.to_ascii_lowercase()),
                &self.workload_name,
            );
        }
        push("service.name".into(), &self.service_name);
        push("service.version".into(), &self.service_version);
        push("cloud.region".into(), &self.region);
        push("cloud.availability_zone".into(), &self.zone);
        parts.join(",")
    }

    /// Reads a baggage header; unknown keys and malformed members are ignored.
    pub fn parse(value: &str) -> Self {
        let mut b = Baggage::default();
        for member in value.split(',') {
            let Some((k, v)) = member.split_once('=') else {
                continue;
            };
            let (k, v) = (
                k.trim(),
                v.split(';').next().unwrap_or("").trim().to_string(),
            );
            match k {
                "k8s.cluster.name" => b.cluster_id = Some(v),
                "k8s.namespace.name" => b.namespace = Some(v),
                "service.name" => b.service_name = Some(v),
                "service.version" => b.service_version = Some(v),
                "cloud.region" => b.region = Some(v),
                "cloud.availability_zone" => b.zone = Some(v),
                k => {
                    if let Some(kind) = k.strip_prefix("k8s.").and_then(|r| r.strip_suffix(".name"))
                        && matches!(kind, "deployment" | "cronjob" | "pod" | "job")
                    {
                        b.workload_type = Some(kind.to_string());
                        b.workload_name = Some(v);
                    }
                }
            }
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_shape() {
        let t = new_traceparent();
        assert!(is_valid_traceparent(&t), "{t}");
        assert!(!is_valid_traceparent("00-abc-def-00"));
    }

    #[test]
    fn forwarded_round_trip() {
        let v = forwarded(
            "10.0.0.1:3456".parse().unwrap(),
            Some("echo.ns.svc.cluster.local"),
        );
        assert_eq!(v, "for=\"10.0.0.1:3456\";host=echo.ns.svc.cluster.local");
        assert_eq!(forwarded_host(&v), Some("echo.ns.svc.cluster.local"));
        assert_eq!(forwarded_host("for=\"[::1]:80\""), None);
    }

    #[test]
    fn baggage_round_trip() {
        let b = Baggage {
            cluster_id: Some("Kubernetes".into()),
            namespace: Some("default".into()),
            workload_type: Some("Deployment".into()),
            workload_name: Some("sleep".into()),
            service_name: Some("sleep".into()),
            service_version: Some("v1".into()),
            region: None,
            zone: Some(String::new()),
        };
        let s = b.encode();
        assert_eq!(
            s,
            "k8s.cluster.name=Kubernetes,k8s.namespace.name=default,k8s.deployment.name=sleep,service.name=sleep,service.version=v1"
        );
        let back = Baggage::parse(&s);
        assert_eq!(back.workload_type.as_deref(), Some("deployment"));
        assert_eq!(back.workload_name.as_deref(), Some("sleep"));
        assert_eq!(back.service_version.as_deref(), Some("v1"));
        assert_eq!(
            Baggage::parse("garbage,,=,k8s.x.name=1"),
            Baggage::default()
        );
    }
}
