//! Istio's metric vocabulary, shared by ztunnel and the waypoint: who
//! reports ([`Reporter`]), the standard traffic labels ([`TrafficLabels`],
//! Istio's `CommonTrafficLabels`), and why a connection or request failed
//! ([`ResponseFlags`]). Dashboards and Kiali group by these names, so they
//! are Istio's exactly (`user-surface.md` §5.1–5.2).
#![forbid(unsafe_code)]

use std::fmt::{self, Write};

use mesh_core::{Identity, Service, Workload};
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

/// Rendered where a value is not known, as Istio does.
pub const UNKNOWN: &str = "unknown";

/// Which end of the connection this ztunnel is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reporter {
    /// The client's ztunnel (outbound).
    Source,
    /// The server's ztunnel (inbound).
    Destination,
    /// A waypoint, for the requests it proxies.
    Waypoint,
}

impl Reporter {
    pub fn as_str(self) -> &'static str {
        match self {
            Reporter::Source => "source",
            Reporter::Destination => "destination",
            Reporter::Waypoint => "waypoint",
        }
    }

    /// `outbound` or `inbound`, as access logs say it.
    pub fn direction(self) -> &'static str {
        match self {
            Reporter::Source => "outbound",
            Reporter::Destination | Reporter::Waypoint => "inbound",
        }
    }
}

/// Why a connection failed (Istio's `response_flags`); `-` when it did not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseFlags {
    None,
    /// Refused by an authorization policy.
    Deny,
    /// The upstream connection (to the peer ztunnel, the waypoint or the
    /// application) could not be made.
    Connect,
    /// Envoy's flags, at the waypoint: refused by an authorization policy
    /// (`RBAC`), no route matched (`NR`), no upstream could be reached
    /// (`UF`), the route's timeout passed (`UT`), the client went away
    /// before the response ended (`DC`).
    Rbac,
    NoRoute,
    UpstreamConnectFailure,
    UpstreamTimeout,
    DownstreamDisconnect,
}

impl ResponseFlags {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFlags::None => "-",
            ResponseFlags::Deny => "DENY",
            ResponseFlags::Connect => "CONNECT",
            ResponseFlags::Rbac => "RBAC",
            ResponseFlags::NoRoute => "NR",
            ResponseFlags::UpstreamConnectFailure => "UF",
            ResponseFlags::UpstreamTimeout => "UT",
            ResponseFlags::DownstreamDisconnect => "DC",
        }
    }
}

/// `mutual_tls` for HBONE, `unknown` for plain TCP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SecurityPolicy {
    MutualTls,
    Unknown,
}

macro_rules! label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
                encoder.write_str(self.as_str())
            }
        }
    )*};
}
label_value!(Reporter, ResponseFlags, SecurityPolicy);

impl SecurityPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            SecurityPolicy::MutualTls => "mutual_tls",
            SecurityPolicy::Unknown => UNKNOWN,
        }
    }
}

/// Istio's `CommonTrafficLabels`, in its order. Unknown values are
/// `unknown`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TrafficLabels {
    pub reporter: Reporter,
    pub source_workload: String,
    pub source_canonical_service: String,
    pub source_canonical_revision: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub source_cluster: String,
    pub destination_service: String,
    pub destination_service_namespace: String,
    pub destination_service_name: String,
    pub destination_workload: String,
    pub destination_canonical_service: String,
    pub destination_canonical_revision: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_cluster: String,
    pub request_protocol: String,
    pub response_flags: ResponseFlags,
    pub connection_security_policy: SecurityPolicy,
}

/// The names one side of a connection is known by.
struct Names {
    workload: String,
    canonical_service: String,
    canonical_revision: String,
    namespace: String,
    cluster: String,
}

impl Names {
    fn of(w: &Workload) -> Self {
        let t = &w.telemetry;
        let or = |v: &str, fallback: &str| {
            if v.is_empty() {
                fallback.to_string()
            } else {
                v.to_string()
            }
        };
        let workload = or(&t.workload_name, &w.name);
        Names {
            canonical_service: or(&t.canonical_name, &workload),
            canonical_revision: or(&t.canonical_revision, "latest"),
            namespace: w.namespace.clone(),
            cluster: or(&t.cluster_id, UNKNOWN),
            workload,
        }
    }
}

impl TrafficLabels {
    pub fn new(reporter: Reporter, security: SecurityPolicy) -> Self {
        let u = || UNKNOWN.to_string();
        TrafficLabels {
            reporter,
            source_workload: u(),
            source_canonical_service: u(),
            source_canonical_revision: u(),
            source_workload_namespace: u(),
            source_principal: u(),
            source_app: u(),
            source_version: u(),
            source_cluster: u(),
            destination_service: u(),
            destination_service_namespace: u(),
            destination_service_name: u(),
            destination_workload: u(),
            destination_canonical_service: u(),
            destination_canonical_revision: u(),
            destination_workload_namespace: u(),
            destination_principal: u(),
            destination_app: u(),
            destination_version: u(),
            destination_cluster: u(),
            request_protocol: "tcp".into(),
            response_flags: ResponseFlags::None,
            connection_security_policy: security,
        }
    }

    pub fn with_source(mut self, w: &Workload) -> Self {
        let n = Names::of(w);
        self.source_app = n.canonical_service.clone();
        self.source_version = n.canonical_revision.clone();
        self.source_workload = n.workload;
        self.source_canonical_service = n.canonical_service;
        self.source_canonical_revision = n.canonical_revision;
        self.source_workload_namespace = n.namespace;
        self.source_cluster = n.cluster;
        self
    }

    /// The peer's identity as its certificate proved it (inbound), or as
    /// this ztunnel presents it (outbound). Never taken from xDS alone.
    pub fn with_source_principal(mut self, id: &Identity) -> Self {
        self.source_principal = id.to_string();
        if self.source_workload_namespace == UNKNOWN {
            self.source_workload_namespace = id.namespace().to_string();
        }
        self
    }

    pub fn with_destination(mut self, w: &Workload) -> Self {
        let n = Names::of(w);
        self.destination_app = n.canonical_service.clone();
        self.destination_version = n.canonical_revision.clone();
        self.destination_workload = n.workload;
        self.destination_canonical_service = n.canonical_service;
        self.destination_canonical_revision = n.canonical_revision;
        self.destination_workload_namespace = n.namespace;
        self.destination_cluster = n.cluster;
        if let Ok(id) = w.identity() {
            self.destination_principal = id.to_string();
        }
        self
    }

    /// `tcp` (the default), `http` or `grpc`.
    pub fn with_protocol(mut self, protocol: &str) -> Self {
        self.request_protocol = protocol.to_string();
        self
    }

    pub fn with_service(mut self, s: &Service) -> Self {
        self.destination_service = s.hostname.clone();
        self.destination_service_namespace = s.namespace.clone();
        self.destination_service_name = s.name.clone();
        self
    }
}

/// `istio_build{component=<component>,tag=<version>} 1` (give it the
/// `istio`-prefixed registry).
pub fn register_build(registry: &mut prometheus_client::registry::Registry, component: &str) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    #[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
    struct Build {
        component: String,
        tag: String,
    }
    let build = Family::<Build, Gauge>::default();
    build
        .get_or_create(&Build {
            component: component.into(),
            tag: env!("CARGO_PKG_VERSION").into(),
        })
        .set(1);
    registry.register("build", "The build of this component", build);
}
