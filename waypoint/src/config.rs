//! The waypoint's configuration, from environment variables named as
//! ztunnel's (and Istio's proxies') are. Parsed before any port is bound;
//! an invalid value names the variable, the value and the reason.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use mesh_core::{Identity, Network, TrustDomain};
use mesh_hbone::H2Config;
pub use mesh_runtime::config::{ConfigError, EXIT_CONFIG};
use mesh_runtime::config::{invalid, optional_addr, pem_or_file, worker_threads};
use mesh_tls::AuthSource;
use mesh_tls::caclient::CaClientConfig;
use mesh_tls::control::ControlPlaneAddress;
use mesh_xds::{NodeInfo, XdsConfig};

pub const CA_ADDRESS: &str = "CA_ADDRESS";
pub const CA_ROOT_CA: &str = "CA_ROOT_CA";
pub const ALT_CA_HOSTNAME: &str = "ALT_CA_HOSTNAME";
pub const XDS_ADDRESS: &str = "XDS_ADDRESS";
pub const AUTH_TOKEN: &str = "AUTH_TOKEN";
pub const ISTIO_META_CLUSTER_ID: &str = "ISTIO_META_CLUSTER_ID";
pub const TRUST_DOMAIN: &str = "TRUST_DOMAIN";
pub const POD_NAME: &str = "POD_NAME";
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const SERVICE_ACCOUNT: &str = "SERVICE_ACCOUNT";
pub const GATEWAY_NAME: &str = "GATEWAY_NAME";
pub const INSTANCE_IP: &str = "INSTANCE_IP";
pub const NODE_NAME: &str = "NODE_NAME";
pub const NETWORK: &str = "NETWORK";
pub const INBOUND_ADDR: &str = "INBOUND_ADDR";
pub const SECRET_TTL: &str = "SECRET_TTL";
pub const CONNECTION_TERMINATION_DEADLINE: &str = "CONNECTION_TERMINATION_DEADLINE";
pub const PROTOCOL_DETECTION_TIMEOUT: &str = "PROTOCOL_DETECTION_TIMEOUT";
pub const STATS_ADDR: &str = "STATS_ADDR";
pub const ADMIN_ADDR: &str = "ADMIN_ADDR";
pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
pub const TRACING_SAMPLING: &str = "TRACING_SAMPLING";
pub const TRACING_BATCH_DELAY: &str = "TRACING_BATCH_DELAY";
pub const READINESS_ADDR: &str = "READINESS_ADDR";
/// Runtime worker threads (Envoy's `--concurrency`); one per core when unset.
pub const WAYPOINT_WORKER_THREADS: &str = "WAYPOINT_WORKER_THREADS";
pub const CRL_PATH: &str = "CRL_PATH";

const DEFAULT_CA_ADDRESS: &str = "istiod.istio-system.svc:15012";
const DEFAULT_ROOT_CA: &str = "./var/run/secrets/istio/root-cert.pem";
const DEFAULT_TOKEN: &str = "./var/run/secrets/tokens/istio-token";

#[derive(Clone, Debug)]
pub struct Config {
    /// The waypoint Gateway this proxy serves: its configuration resource
    /// is `<namespace>/<gateway>`.
    pub gateway_namespace: String,
    pub gateway_name: String,
    /// Whom this proxy is: the identity of its own certificate, used both
    /// to accept HBONE and to originate it towards destinations.
    pub identity: Identity,
    /// The pod's IP (the source of upstream connections).
    pub instance_ip: IpAddr,
    pub network: Network,
    pub ca: CaClientConfig,
    pub xds: XdsConfig,
    /// Where HBONE arrives (15008).
    pub inbound_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`, `/stats/prometheus`), `[::]:15020`;
    /// `None` when turned off.
    pub stats_addr: Option<SocketAddr>,
    /// `/healthz/ready`, `[::]:15021`.
    pub readiness_addr: Option<SocketAddr>,
    /// `/config_dump`, `/logging`, `/quitquitquit`, `127.0.0.1:15000`.
    pub admin_addr: Option<SocketAddr>,
    /// Spans over OTLP, when a collector is named.
    pub tracing: Option<crate::trace::TracingConfig>,
    pub termination_deadline: Duration,
    /// How long to wait for a client's first bytes on a port whose
    /// protocol is not declared before treating it as TCP.
    pub protocol_detection_timeout: Duration,
    pub h2: H2Config,
    /// Runtime worker threads; one per core when unset.
    pub worker_threads: Option<usize>,
    /// The PEM file of CRLs HBONE peers are checked against (`CRL_PATH`),
    /// as in ztunnel; `None`: no revocation checks.
    pub crl_path: Option<std::path::PathBuf>,
}

impl Config {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let required = |key: &'static str, what: &str| {
            get(key)
                .filter(|v| !v.is_empty())
                .ok_or_else(|| invalid(key, "", format!("required: {what}")))
        };
        let namespace = required(POD_NAMESPACE, "the namespace of the waypoint Gateway")?;
        let service_account = match get(SERVICE_ACCOUNT).filter(|v| !v.is_empty()) {
            Some(sa) => sa,
            None => required(GATEWAY_NAME, "the waypoint Gateway's name")?,
        };
        let gateway_name = get(GATEWAY_NAME)
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| service_account.clone());
        let trust_domain = match get(TRUST_DOMAIN) {
            None => TrustDomain::default(),
            Some(v) => TrustDomain::new(v.clone()).map_err(|e| invalid(TRUST_DOMAIN, &v, e))?,
        };
        let identity = Identity::new(trust_domain, namespace.clone(), service_account.clone())
            .map_err(|e| invalid(SERVICE_ACCOUNT, &service_account, e))?;
        let ip_text = required(INSTANCE_IP, "the waypoint pod's IP")?;
        let instance_ip: IpAddr = ip_text
            .parse()
            .map_err(|e| invalid(INSTANCE_IP, &ip_text, e))?;
        let duration = |key: &'static str, default: &str| {
            let v = get(key).unwrap_or_else(|| default.to_string());
            mesh_core::duration::parse(&v).map_err(|e| invalid(key, &v, e))
        };
        let root_pem = pem_or_file(
            CA_ROOT_CA,
            get(CA_ROOT_CA).unwrap_or_else(|| DEFAULT_ROOT_CA.to_string()),
        )?;
        let auth = AuthSource::from_setting(get(AUTH_TOKEN), DEFAULT_TOKEN)
            .map_err(|e| invalid(AUTH_TOKEN, &get(AUTH_TOKEN).unwrap_or_default(), e))?;
        let cluster_id = get(ISTIO_META_CLUSTER_ID).unwrap_or_else(|| "Kubernetes".into());
        let ca_address = get(CA_ADDRESS).unwrap_or_else(|| DEFAULT_CA_ADDRESS.to_string());
        let target = |address: String| ControlPlaneAddress {
            address,
            server_name: get(ALT_CA_HOSTNAME),
            root_pem: root_pem.clone(),
        };
        let pod_name = get(POD_NAME).unwrap_or_else(|| format!("{gateway_name}-0"));
        let addr_text = get(INBOUND_ADDR).unwrap_or_else(|| "[::]:15008".into());
        let inbound_addr = addr_text
            .parse()
            .map_err(|e| invalid(INBOUND_ADDR, &addr_text, e))?;
        let optional = |key, default| optional_addr(key, get(key).as_deref(), default);
        let stats_addr = optional(STATS_ADDR, "[::]:15020")?;
        let tracing = match get(OTEL_EXPORTER_OTLP_ENDPOINT).filter(|e| !e.is_empty()) {
            None => None,
            Some(endpoint) => {
                if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                    return Err(invalid(
                        OTEL_EXPORTER_OTLP_ENDPOINT,
                        &endpoint,
                        "must be a URL such as http://otel-collector:4317",
                    ));
                }
                let text = get(TRACING_SAMPLING).unwrap_or_else(|| "1".into());
                let sampling_percent: f64 = text
                    .parse()
                    .ok()
                    .filter(|p: &f64| (0.0..=100.0).contains(p))
                    .ok_or_else(|| {
                        invalid(TRACING_SAMPLING, &text, "must be a percentage, 0 to 100")
                    })?;
                Some(crate::trace::TracingConfig {
                    endpoint,
                    sampling_percent,
                    batch_delay: duration(TRACING_BATCH_DELAY, "1s")?,
                })
            }
        };
        let readiness_addr = optional(READINESS_ADDR, "[::]:15021")?;
        let admin_addr = optional(ADMIN_ADDR, "127.0.0.1:15000")?;
        let worker_threads = worker_threads(
            WAYPOINT_WORKER_THREADS,
            get(WAYPOINT_WORKER_THREADS).as_deref(),
        )?;
        Ok(Self {
            worker_threads,
            crl_path: get(CRL_PATH)
                .filter(|p| !p.is_empty())
                .map(std::path::PathBuf::from),
            admin_addr,
            tracing,
            stats_addr,
            readiness_addr,
            gateway_namespace: namespace.clone(),
            gateway_name,
            identity,
            instance_ip,
            network: Network::new(get(NETWORK).unwrap_or_default()),
            ca: CaClientConfig {
                target: target(ca_address.clone()),
                auth: auth.clone(),
                cluster_id: cluster_id.clone(),
                ttl: duration(SECRET_TTL, "24h")?,
                impersonate: false,
            },
            xds: XdsConfig {
                target: target(get(XDS_ADDRESS).unwrap_or(ca_address)),
                auth,
                cluster_id,
                node: NodeInfo {
                    proxy_type: "router".into(),
                    instance_ip: instance_ip.to_string(),
                    pod_name,
                    pod_namespace: namespace,
                    node_name: get(NODE_NAME).unwrap_or_default(),
                },
            },
            inbound_addr,
            termination_deadline: duration(CONNECTION_TERMINATION_DEADLINE, "5s")?,
            protocol_detection_timeout: duration(PROTOCOL_DETECTION_TIMEOUT, "500ms")?,
            h2: H2Config::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const ROOT: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    fn parse(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_env(|k| map.get(k).cloned())
    }

    #[test]
    fn identity_is_the_gateways_service_account() {
        let c = parse(&[
            (POD_NAMESPACE, "shop"),
            (GATEWAY_NAME, "waypoint"),
            (INSTANCE_IP, "10.1.0.9"),
            (CA_ROOT_CA, ROOT),
            (AUTH_TOKEN, "t"),
        ])
        .unwrap();
        assert_eq!(
            c.identity.to_string(),
            "spiffe://cluster.local/ns/shop/sa/waypoint"
        );
        assert_eq!(c.xds.node.proxy_type, "router");
        assert_eq!(c.inbound_addr.port(), 15008);
        assert_eq!(c.stats_addr, Some("[::]:15020".parse().unwrap()));
        assert_eq!(c.readiness_addr, Some("[::]:15021".parse().unwrap()));
        assert_eq!(c.tracing, None, "no collector, no tracing");
    }

    #[test]
    fn tracing_needs_a_collector_url_and_a_percentage() {
        let base = [
            (POD_NAMESPACE, "shop"),
            (GATEWAY_NAME, "waypoint"),
            (INSTANCE_IP, "10.1.0.9"),
            (CA_ROOT_CA, ROOT),
            (AUTH_TOKEN, "t"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            parse(&v)
        };
        let t = with(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "http://otel:4317")])
            .unwrap()
            .tracing
            .unwrap();
        assert_eq!(
            (t.endpoint.as_str(), t.sampling_percent),
            ("http://otel:4317", 1.0)
        );
        let err = with(&[(OTEL_EXPORTER_OTLP_ENDPOINT, "otel:4317")]).unwrap_err();
        assert_eq!(err.key, OTEL_EXPORTER_OTLP_ENDPOINT);
        let err = with(&[
            (OTEL_EXPORTER_OTLP_ENDPOINT, "http://otel:4317"),
            (TRACING_SAMPLING, "150"),
        ])
        .unwrap_err();
        assert_eq!(err.key, TRACING_SAMPLING);
    }

    #[test]
    fn errors_name_the_variable() {
        let err = parse(&[(GATEWAY_NAME, "w")]).unwrap_err().to_string();
        assert!(err.contains(POD_NAMESPACE), "{err}");
        let err = parse(&[
            (POD_NAMESPACE, "shop"),
            (GATEWAY_NAME, "w"),
            (INSTANCE_IP, "not-an-ip"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(INSTANCE_IP) && err.contains("not-an-ip"),
            "{err}"
        );
    }
}
