//! ztunnel's configuration, from environment variables named as Istio's
//! ztunnel names them. Parsed and validated before any port is bound; an
//! invalid value is reported with the variable, the value and the reason.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mesh_core::Network;
use mesh_hbone::H2Config;
use mesh_tls::AuthSource;
use mesh_tls::caclient::CaClientConfig;
use mesh_tls::control::ControlPlaneAddress;

use crate::xds::{NodeInfo, XdsConfig};

pub const NODE_NAME: &str = "NODE_NAME";
pub const PROXY_MODE: &str = "PROXY_MODE";
pub const NETWORK: &str = "NETWORK";
pub const CA_ADDRESS: &str = "CA_ADDRESS";
pub const CA_ROOT_CA: &str = "CA_ROOT_CA";
pub const ALT_CA_HOSTNAME: &str = "ALT_CA_HOSTNAME";
pub const AUTH_TOKEN: &str = "AUTH_TOKEN";
pub const CLUSTER_ID: &str = "CLUSTER_ID";
pub const ISTIO_META_CLUSTER_ID: &str = "ISTIO_META_CLUSTER_ID";
pub const SECRET_TTL: &str = "SECRET_TTL";
pub const LOCAL_XDS_PATH: &str = "LOCAL_XDS_PATH";
pub const OUTBOUND_ADDR: &str = "OUTBOUND_ADDR";
pub const INBOUND_ADDR: &str = "INBOUND_ADDR";
pub const OUTBOUND_TARGET: &str = "OUTBOUND_TARGET";
pub const CONNECTION_TERMINATION_DEADLINE: &str = "CONNECTION_TERMINATION_DEADLINE";
pub const POOL_MAX_STREAMS_PER_CONNECTION: &str = "POOL_MAX_STREAMS_PER_CONNECTION";
pub const POOL_UNUSED_RELEASE_TIMEOUT: &str = "POOL_UNUSED_RELEASE_TIMEOUT";
pub const HTTP2_STREAM_WINDOW_SIZE: &str = "HTTP2_STREAM_WINDOW_SIZE";
pub const HTTP2_CONNECTION_WINDOW_SIZE: &str = "HTTP2_CONNECTION_WINDOW_SIZE";
pub const HTTP2_FRAME_SIZE: &str = "HTTP2_FRAME_SIZE";
pub const XDS_ADDRESS: &str = "XDS_ADDRESS";
pub const XDS_ROOT_CA: &str = "XDS_ROOT_CA";
pub const ALT_XDS_HOSTNAME: &str = "ALT_XDS_HOSTNAME";
pub const INSTANCE_IP: &str = "INSTANCE_IP";
pub const POD_NAME: &str = "POD_NAME";
pub const POD_NAMESPACE: &str = "POD_NAMESPACE";
pub const INBOUND_PLAINTEXT_ADDR: &str = "INBOUND_PLAINTEXT_ADDR";
pub const INBOUND_PLAINTEXT_TARGET: &str = "INBOUND_PLAINTEXT_TARGET";
pub const INPOD_ENABLED: &str = "INPOD_ENABLED";
pub const INPOD_UDS: &str = "INPOD_UDS";
pub const INPOD_MARK: &str = "INPOD_MARK";
pub const INPOD_PORT_REUSE: &str = "INPOD_PORT_REUSE";
pub const INPOD_REDIRECTION: &str = "INPOD_REDIRECTION";
pub const ADMIN_ADDR: &str = "ADMIN_ADDR";
pub const STATS_ADDR: &str = "STATS_ADDR";
pub const READINESS_ADDR: &str = "READINESS_ADDR";
pub const ZTUNNEL_WORKER_THREADS: &str = "ZTUNNEL_WORKER_THREADS";
pub const CRL_PATH: &str = "CRL_PATH";

const DEFAULT_CA_ADDRESS: &str = "istiod.istio-system.svc:15012";
const DEFAULT_ROOT_CA: &str = "./var/run/secrets/istio/root-cert.pem";
const DEFAULT_TOKEN: &str = "./var/run/secrets/tokens/istio-token";

pub use mesh_runtime::config::{ConfigError, EXIT_CONFIG};
use mesh_runtime::config::{invalid, optional_addr, pem_or_file, worker_threads};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// A node proxy: serves every workload on its node and asks the CA for
    /// their identities (impersonation).
    Shared,
    /// Serves one workload and asks only for its own identity.
    Dedicated,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub proxy_mode: ProxyMode,
    pub network: Network,
    pub ca: CaClientConfig,
    pub local_xds_path: Option<PathBuf>,
    /// The control plane's xDS; `None` runs on the local file alone.
    pub xds: Option<XdsConfig>,
    /// Where captured plaintext inbound arrives (15006); `None` disables it.
    pub inbound_plaintext_addr: Option<SocketAddr>,
    /// The destination for plaintext inbound without an original
    /// destination (no redirection), for running without capture.
    pub inbound_plaintext_target: Option<SocketAddr>,
    /// Where captured outbound connections arrive (15001).
    pub outbound_addr: SocketAddr,
    /// Where HBONE arrives (15008); one listener per address.
    pub inbound_addrs: Vec<SocketAddr>,
    /// The destination to use when a connection carries no original
    /// destination (no redirection), for running without capture.
    pub outbound_target: Option<SocketAddr>,
    /// The port HBONE peers listen on.
    pub hbone_port: u16,
    /// How long open connections may run on after a drain starts.
    pub termination_deadline: Duration,
    pub h2: H2Config,
    /// In-pod mode: pods arrive over ZDS and get listeners inside their own
    /// network namespace; the node-level listeners above are not bound.
    pub inpod: Option<InpodConfig>,
    /// The admin endpoint (`/config_dump`); `None` when turned off
    /// (`ADMIN_ADDR=none`).
    pub admin_addr: Option<SocketAddr>,
    /// Prometheus metrics (`/metrics`, `/stats/prometheus`), `[::]:15020`.
    pub stats_addr: Option<SocketAddr>,
    /// The readiness probe (`/healthz/ready`), `[::]:15021`.
    pub readiness_addr: Option<SocketAddr>,
    /// Runtime worker threads (`ZTUNNEL_WORKER_THREADS`); one per core when
    /// unset.
    pub worker_threads: Option<usize>,
    /// The PEM file of CRLs peers are checked against (`CRL_PATH`; the
    /// chart mounts `/var/run/secrets/istio/crl/ca-crl.pem`), re-read when
    /// it changes. `None`: no revocation checks.
    pub crl_path: Option<PathBuf>,
}

/// How ztunnel serves pods from inside their network namespaces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InpodConfig {
    /// The node agent's ZDS socket.
    pub uds: PathBuf,
    /// `SO_MARK` on every socket in a pod, so the pod's redirection lets
    /// ztunnel's own traffic pass (1337, 0x539).
    pub mark: u32,
    /// `SO_REUSEPORT` on the in-pod listeners, so a new ztunnel can bind
    /// beside a draining one.
    pub port_reuse: bool,
    /// How the node agent captures pods (set from the same value as the
    /// agent's `--redirection`); shown in the config dump.
    pub redirection: Redirection,
}

/// The node agent's capture mechanism, as the deployment declares it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Redirection {
    Nftables,
    Ebpf,
}

impl Config {
    /// Parses the configuration from `get` (the process environment in
    /// `main`, a map in tests: nothing here mutates global state).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let node_name = get(NODE_NAME).filter(|s| !s.is_empty()).ok_or_else(|| {
            invalid(
                NODE_NAME,
                "",
                "required: the name of the node this proxy serves",
            )
        })?;
        let proxy_mode = match get(PROXY_MODE).as_deref().unwrap_or("shared") {
            "shared" => ProxyMode::Shared,
            "dedicated" => ProxyMode::Dedicated,
            other => return Err(invalid(PROXY_MODE, other, "must be shared or dedicated")),
        };
        let duration = |key: &'static str, default: &str| {
            let v = get(key).unwrap_or_else(|| default.to_string());
            mesh_core::duration::parse(&v).map_err(|e| invalid(key, &v, e))
        };
        let number = |key: &'static str, default: u64| -> Result<u64, ConfigError> {
            match get(key) {
                None => Ok(default),
                Some(v) => v
                    .parse()
                    .map_err(|_| invalid(key, &v, "must be a whole number")),
            }
        };
        let addr = |key: &'static str, default: &str| {
            let v = get(key).unwrap_or_else(|| default.to_string());
            v.parse::<SocketAddr>().map_err(|e| invalid(key, &v, e))
        };

        let ca_address = get(CA_ADDRESS).unwrap_or_else(|| DEFAULT_CA_ADDRESS.to_string());
        let root_pem = pem_or_file(
            CA_ROOT_CA,
            get(CA_ROOT_CA).unwrap_or_else(|| DEFAULT_ROOT_CA.to_string()),
        )?;
        let auth = AuthSource::from_setting(get(AUTH_TOKEN), DEFAULT_TOKEN)
            .map_err(|e| invalid(AUTH_TOKEN, &get(AUTH_TOKEN).unwrap_or_default(), e))?;
        let cluster_id = get(ISTIO_META_CLUSTER_ID)
            .or_else(|| get(CLUSTER_ID))
            .unwrap_or_else(|| "Kubernetes".to_string());
        let ttl = duration(SECRET_TTL, "24h")?;
        if ttl < Duration::from_secs(2) {
            return Err(invalid(
                SECRET_TTL,
                &format!("{ttl:?}"),
                "must be at least 2s",
            ));
        }

        let inbound_setting = get(INBOUND_ADDR).unwrap_or_else(|| "[::]:15008".to_string());
        let inbound_addrs = inbound_setting
            .split(',')
            .map(|s| {
                s.trim()
                    .parse::<SocketAddr>()
                    .map_err(|e| invalid(INBOUND_ADDR, &inbound_setting, e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let outbound_target = match get(OUTBOUND_TARGET) {
            Some(v) => Some(v.parse().map_err(|e| invalid(OUTBOUND_TARGET, &v, e))?),
            None => None,
        };

        let mut h2 = H2Config::default();
        let window = |key: &'static str, default: u32| -> Result<u32, ConfigError> {
            let n = number(key, default as u64)?;
            u32::try_from(n)
                .ok()
                .filter(|n| *n >= 65_535)
                .ok_or_else(|| invalid(key, &n.to_string(), "must be between 65535 and 2^32-1"))
        };
        h2.stream_window = window(HTTP2_STREAM_WINDOW_SIZE, h2.stream_window)?;
        h2.connection_window = window(HTTP2_CONNECTION_WINDOW_SIZE, h2.connection_window)?;
        // HTTP/2 allows frames of 16384 up to 2^24-1 bytes (RFC 9113 §4.2);
        // not a window, so not held to a window's 65535 minimum.
        let frame = number(HTTP2_FRAME_SIZE, h2.max_frame_size as u64)?;
        if !(16_384..=16_777_215).contains(&frame) {
            return Err(invalid(
                HTTP2_FRAME_SIZE,
                &frame.to_string(),
                "must be between 16384 and 16777215",
            ));
        }
        h2.max_frame_size = frame as u32;
        h2.max_streams_per_connection = number(POOL_MAX_STREAMS_PER_CONNECTION, 100)? as usize;
        if h2.max_streams_per_connection == 0 {
            return Err(invalid(
                POOL_MAX_STREAMS_PER_CONNECTION,
                "0",
                "must be at least 1",
            ));
        }
        h2.pool_idle_timeout = duration(POOL_UNUSED_RELEASE_TIMEOUT, "5m")?;

        let local_xds_path = get(LOCAL_XDS_PATH).map(PathBuf::from);
        let xds_address = match get(XDS_ADDRESS) {
            Some(a) if a.is_empty() => None,
            Some(a) => Some(a),
            None if local_xds_path.is_some() => None,
            None => Some(DEFAULT_CA_ADDRESS.to_string()),
        };
        let xds = match xds_address {
            None => None,
            Some(address) => {
                let root_pem = match get(XDS_ROOT_CA) {
                    Some(v) => pem_or_file(XDS_ROOT_CA, v)?,
                    None => root_pem.clone(),
                };
                Some(XdsConfig {
                    target: ControlPlaneAddress {
                        address,
                        server_name: get(ALT_XDS_HOSTNAME),
                        root_pem,
                    },
                    auth: auth.clone(),
                    cluster_id: cluster_id.clone(),
                    node: NodeInfo {
                        proxy_type: "ztunnel".into(),
                        instance_ip: get(INSTANCE_IP).unwrap_or_else(|| "1.1.1.1".into()),
                        pod_name: get(POD_NAME).unwrap_or_else(|| format!("ztunnel-{node_name}")),
                        pod_namespace: get(POD_NAMESPACE).unwrap_or_else(|| "istio-system".into()),
                        node_name: node_name.clone(),
                    },
                })
            }
        };
        let inbound_plaintext_addr = match get(INBOUND_PLAINTEXT_ADDR).as_deref() {
            Some("") => None,
            _ => Some(addr(INBOUND_PLAINTEXT_ADDR, "[::]:15006")?),
        };
        let inbound_plaintext_target = match get(INBOUND_PLAINTEXT_TARGET) {
            Some(v) => Some(
                v.parse()
                    .map_err(|e| invalid(INBOUND_PLAINTEXT_TARGET, &v, e))?,
            ),
            None => None,
        };

        let boolean = |key: &'static str, default: bool| match get(key).as_deref() {
            None => Ok(default),
            Some("true" | "1") => Ok(true),
            Some("false" | "0") => Ok(false),
            Some(other) => Err(invalid(key, other, "must be true or false")),
        };
        let inpod = if boolean(INPOD_ENABLED, false)? {
            let mark = number(INPOD_MARK, 1337)?;
            Some(InpodConfig {
                uds: get(INPOD_UDS)
                    .unwrap_or_else(|| mesh_zds::DEFAULT_SOCKET.into())
                    .into(),
                mark: u32::try_from(mark)
                    .ok()
                    .filter(|m| *m != 0)
                    .ok_or_else(|| invalid(INPOD_MARK, &mark.to_string(), "must be 1..2^32-1"))?,
                port_reuse: boolean(INPOD_PORT_REUSE, true)?,
                redirection: match get(INPOD_REDIRECTION).as_deref() {
                    None | Some("nftables") => Redirection::Nftables,
                    Some("ebpf") => Redirection::Ebpf,
                    Some(other) => {
                        return Err(invalid(
                            INPOD_REDIRECTION,
                            other,
                            "must be nftables or ebpf",
                        ));
                    }
                },
            })
        } else {
            None
        };

        let optional = |key, default| optional_addr(key, get(key).as_deref(), default);
        let admin_addr = optional(ADMIN_ADDR, "127.0.0.1:15000")?;
        let stats_addr = optional(STATS_ADDR, "[::]:15020")?;
        let readiness_addr = optional(READINESS_ADDR, "[::]:15021")?;

        let worker_threads = worker_threads(
            ZTUNNEL_WORKER_THREADS,
            get(ZTUNNEL_WORKER_THREADS).as_deref(),
        )?;

        Ok(Self {
            worker_threads,
            crl_path: get(CRL_PATH).filter(|p| !p.is_empty()).map(PathBuf::from),
            admin_addr,
            stats_addr,
            readiness_addr,
            node_name,
            proxy_mode,
            network: Network::new(get(NETWORK).unwrap_or_default()),
            ca: CaClientConfig {
                target: ControlPlaneAddress {
                    address: ca_address,
                    server_name: get(ALT_CA_HOSTNAME),
                    root_pem,
                },
                auth,
                cluster_id,
                ttl,
                impersonate: proxy_mode == ProxyMode::Shared,
            },
            local_xds_path,
            xds,
            inbound_plaintext_addr,
            inbound_plaintext_target,
            outbound_addr: addr(OUTBOUND_ADDR, "[::]:15001")?,
            inbound_addrs,
            outbound_target,
            hbone_port: mesh_hbone::HBONE_PORT,
            termination_deadline: duration(CONNECTION_TERMINATION_DEADLINE, "5s")?,
            h2,
            inpod,
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
    fn defaults_follow_istio() {
        let c = parse(&[(NODE_NAME, "n1"), (CA_ROOT_CA, ROOT), (AUTH_TOKEN, "tok")]).unwrap();
        assert_eq!(c.outbound_addr.port(), 15001);
        assert_eq!(c.inbound_addrs[0].port(), 15008);
        assert_eq!(c.ca.ttl, Duration::from_secs(86400));
        assert_eq!(c.h2.stream_window, 4 * 1024 * 1024);
        assert_eq!(c.h2.max_streams_per_connection, 100);
        assert!(c.ca.impersonate);
        assert_eq!(c.ca.cluster_id, "Kubernetes");
    }

    #[test]
    fn errors_name_the_variable_and_value() {
        let e = parse(&[(CA_ROOT_CA, ROOT)]).unwrap_err();
        assert_eq!(e.key, NODE_NAME);
        let e = parse(&[(NODE_NAME, "n"), (CA_ROOT_CA, ROOT), (SECRET_TTL, "soon")]).unwrap_err();
        assert_eq!((e.key, e.value.as_str()), (SECRET_TTL, "soon"));
        let e = parse(&[(NODE_NAME, "n"), (CA_ROOT_CA, "/nonexistent/root.pem")]).unwrap_err();
        assert!(
            e.to_string().contains("CA_ROOT_CA") && e.to_string().contains("/nonexistent/root.pem")
        );
        let e = parse(&[
            (NODE_NAME, "n"),
            (CA_ROOT_CA, ROOT),
            (HTTP2_FRAME_SIZE, "10"),
        ])
        .unwrap_err();
        assert_eq!(e.key, HTTP2_FRAME_SIZE);
        // The protocol's smallest frame size is a valid setting.
        let c = parse(&[
            (NODE_NAME, "n"),
            (CA_ROOT_CA, ROOT),
            (HTTP2_FRAME_SIZE, "16384"),
        ])
        .unwrap();
        assert_eq!(c.h2.max_frame_size, 16_384);
        let e = parse(&[
            (NODE_NAME, "n"),
            (CA_ROOT_CA, ROOT),
            (PROXY_MODE, "sidecar"),
        ])
        .unwrap_err();
        assert_eq!(e.key, PROXY_MODE);
    }

    #[test]
    fn xds_follows_the_local_file_unless_named() {
        let base = [(NODE_NAME, "n"), (CA_ROOT_CA, ROOT), (AUTH_TOKEN, "t")];
        let c = parse(&base).unwrap();
        let xds = c.xds.expect("xDS on by default");
        assert_eq!(xds.target.address, "istiod.istio-system.svc:15012");
        assert!(
            xds.node
                .to_proto()
                .id
                .starts_with("ztunnel~1.1.1.1~ztunnel-n.istio-system~")
        );
        let mut with_file = base.to_vec();
        with_file.push((LOCAL_XDS_PATH, "/x.yaml"));
        assert!(parse(&with_file).unwrap().xds.is_none(), "local file alone");
        with_file.push((XDS_ADDRESS, "127.0.0.1:15012"));
        assert!(parse(&with_file).unwrap().xds.is_some(), "both when named");
        let mut off = base.to_vec();
        off.push((XDS_ADDRESS, ""));
        off.push((INBOUND_PLAINTEXT_ADDR, ""));
        let c = parse(&off).unwrap();
        assert!(c.xds.is_none() && c.inbound_plaintext_addr.is_none());
        let mut bad = base.to_vec();
        bad.push((XDS_ROOT_CA, "/nonexistent/xds-root.pem"));
        assert_eq!(parse(&bad).unwrap_err().key, XDS_ROOT_CA);
    }

    #[test]
    fn admin_is_on_localhost_unless_turned_off() {
        let base = [
            (NODE_NAME, "n1"),
            (CA_ROOT_CA, ROOT),
            (LOCAL_XDS_PATH, "/x"),
        ];
        assert_eq!(
            parse(&base).unwrap().admin_addr,
            Some("127.0.0.1:15000".parse().unwrap())
        );
        let c = parse(&base).unwrap();
        assert_eq!(c.stats_addr, Some("[::]:15020".parse().unwrap()));
        assert_eq!(c.readiness_addr, Some("[::]:15021".parse().unwrap()));
        let mut off = base.to_vec();
        off.push((ADMIN_ADDR, "none"));
        off.push((STATS_ADDR, "none"));
        let c = parse(&off).unwrap();
        assert_eq!((c.admin_addr, c.stats_addr), (None, None));
        let mut bad = base.to_vec();
        bad.push((ADMIN_ADDR, "localhost"));
        assert_eq!(parse(&bad).unwrap_err().key, ADMIN_ADDR);
    }

    #[test]
    fn inpod_is_opt_in_and_checked() {
        let base = [
            (NODE_NAME, "n1"),
            (CA_ROOT_CA, ROOT),
            (LOCAL_XDS_PATH, "/x"),
        ];
        assert!(parse(&base).unwrap().inpod.is_none());
        let mut on = base.to_vec();
        on.push((INPOD_ENABLED, "true"));
        let c = parse(&on).unwrap().inpod.unwrap();
        assert_eq!(
            c,
            InpodConfig {
                uds: "/var/run/ztunnel/ztunnel.sock".into(),
                mark: 1337,
                port_reuse: true,
                redirection: Redirection::Nftables,
            }
        );
        let mut ebpf = on.clone();
        ebpf.push((INPOD_REDIRECTION, "ebpf"));
        assert_eq!(
            parse(&ebpf).unwrap().inpod.unwrap().redirection,
            Redirection::Ebpf
        );
        let mut unknown = on.clone();
        unknown.push((INPOD_REDIRECTION, "iptables"));
        assert_eq!(parse(&unknown).unwrap_err().key, INPOD_REDIRECTION);
        let mut bad = on.clone();
        bad.push((INPOD_MARK, "0"));
        assert_eq!(parse(&bad).unwrap_err().key, INPOD_MARK);
        let mut bad = base.to_vec();
        bad.push((INPOD_ENABLED, "yes"));
        assert_eq!(parse(&bad).unwrap_err().key, INPOD_ENABLED);
    }
}
