//! istiod-lite's configuration: flags, each with an environment variable of
//! the same meaning, parsed and validated before anything binds.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mesh_core::TrustDomain;

use crate::translate::TranslateConfig;

pub const ENV_STATE_DIR: &str = "ISTIOD_LITE_STATE_DIR";
pub const ENV_CA_CERTS_DIR: &str = "CA_CERTS_DIR";
pub const ENV_GRPC_ADDR: &str = "GRPC_ADDR";
pub const ENV_MONITORING_ADDR: &str = "MONITORING_ADDR";
pub const ENV_TRUST_DOMAIN: &str = "TRUST_DOMAIN";
pub const ENV_DEFAULT_TTL: &str = "DEFAULT_WORKLOAD_CERT_TTL";
pub const ENV_MAX_TTL: &str = "MAX_WORKLOAD_CERT_TTL";
pub const ENV_TRUSTED_NODE_ACCOUNTS: &str = "CA_TRUSTED_NODE_ACCOUNTS";
pub const ENV_SERVING_NAMES: &str = "SERVING_NAMES";
pub const ENV_CONFIG_DIR: &str = "CONFIG_DIR";
pub const ENV_CONFIG_POLL: &str = "CONFIG_POLL_INTERVAL";
pub const ENV_ROOT_NAMESPACE: &str = "ROOT_NAMESPACE";
pub const ENV_CLUSTER_ID: &str = "CLUSTER_ID";
pub const ENV_JWKS_REFRESH: &str = "PILOT_JWT_PUB_KEY_REFRESH_INTERVAL";
pub const ENV_WAYPOINT_IMAGE: &str = "WAYPOINT_IMAGE";
pub const ENV_ISTIOD_ADDRESS: &str = "ISTIOD_ADDRESS";
pub const DEFAULT_WAYPOINT_IMAGE: &str =
    concat!("ambient-mesh/waypoint:", env!("CARGO_PKG_VERSION"));

use mesh_runtime::config::invalid;
pub use mesh_runtime::config::{ConfigError, EXIT_CONFIG};

#[derive(Debug, Parser)]
#[command(
    name = "istiod-lite",
    version,
    about = "Slim Istio-compatible control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the control plane (CA on the gRPC port).
    Serve(Box<ServeArgs>),
    /// Print a bootstrap token that authenticates a proxy to the CA.
    Token(TokenArgs),
    /// Print the mesh root certificate (PEM), creating the CA if needed.
    RootCert(CommonArgs),
    /// Print a CRL (PEM) signed by the CA, revoking the given serial
    /// numbers; put it where ztunnel's `CRL_PATH` points (the
    /// `istio-ca-crl` ConfigMap). Each run lists every revocation anew.
    Crl(CrlArgs),
}

#[derive(Debug, Clone, Args)]
pub struct CrlArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// A serial number to revoke, in hex, with or without colons (as
    /// `ztunnel-config certificates` and `openssl x509 -serial` print it).
    /// Repeatable; none gives an empty CRL.
    #[arg(long = "serial")]
    pub serials: Vec<String>,
    /// When the next CRL is due (the CRL's nextUpdate). Peers still
    /// enforce a CRL past it.
    #[arg(long, default_value = "7d")]
    pub next_update: String,
}

#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    /// Where the generated root, token key and other state live.
    #[arg(long, env = ENV_STATE_DIR, default_value = "/var/lib/istiod-lite")]
    pub state_dir: PathBuf,
    /// A directory in Istio's plug-in layout (ca-cert.pem, ca-key.pem,
    /// root-cert.pem, cert-chain.pem) to use instead of a generated root.
    #[arg(long, env = ENV_CA_CERTS_DIR)]
    pub ca_certs_dir: Option<PathBuf>,
    #[arg(long, env = ENV_TRUST_DOMAIN, default_value = "cluster.local")]
    pub trust_domain: String,
}

#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    /// The gRPC (CA, xDS) listen address.
    #[arg(long, env = ENV_GRPC_ADDR, default_value = "0.0.0.0:15012")]
    pub grpc_addr: SocketAddr,
    /// Prometheus metrics (`/metrics`); `none` turns them off.
    #[arg(long, env = ENV_MONITORING_ADDR, default_value = "0.0.0.0:15014")]
    pub monitoring_addr: String,
    /// Certificate lifetime when a request asks for none.
    #[arg(long, env = ENV_DEFAULT_TTL, default_value = "24h")]
    pub default_cert_ttl: String,
    /// Longer requested lifetimes are cut to this.
    #[arg(long, env = ENV_MAX_TTL, default_value = "90d")]
    pub max_cert_ttl: String,
    /// Comma-separated namespace/serviceaccount of node proxies that may
    /// request certificates for pods on their node.
    #[arg(long, env = ENV_TRUSTED_NODE_ACCOUNTS, default_value = "istio-system/ztunnel")]
    pub trusted_node_accounts: String,
    /// Comma-separated DNS names and IPs in istiod's serving certificate.
    #[arg(
        long,
        env = ENV_SERVING_NAMES,
        default_value = "istiod.istio-system.svc,istiod-lite.istio-system.svc,localhost,127.0.0.1"
    )]
    pub serving_names: String,
    /// A directory of Kubernetes-style manifests (Namespaces, Pods,
    /// Services, AuthorizationPolicies, ...) to serve, re-read on change.
    #[arg(long, env = ENV_CONFIG_DIR)]
    pub config_dir: Option<PathBuf>,
    /// How often the manifest directory is checked for changes.
    #[arg(long, env = ENV_CONFIG_POLL, default_value = "500ms")]
    pub config_poll_interval: String,
    /// Watch a Kubernetes API server for the model: the cluster of
    /// --kubeconfig, or the in-cluster service account without it.
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubeconfig of the cluster to watch (implies --kubernetes).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The image of the waypoint Deployments the controller creates.
    #[arg(long, env = ENV_WAYPOINT_IMAGE, default_value = DEFAULT_WAYPOINT_IMAGE)]
    pub waypoint_image: String,
    /// The address waypoints reach istiod-lite's CA and xDS at.
    #[arg(long, env = ENV_ISTIOD_ADDRESS, default_value = "istiod.istio-system.svc:15012")]
    pub istiod_address: String,
    /// Policies in this namespace apply to the whole mesh.
    #[arg(long, env = ENV_ROOT_NAMESPACE, default_value = "istio-system")]
    pub root_namespace: String,
    /// The cluster name used in workload uids.
    #[arg(long, env = ENV_CLUSTER_ID, default_value = "Kubernetes")]
    pub cluster_id: String,
    /// How often the key sets named by RequestAuthentication `jwksUri` are
    /// fetched again (istiod's setting of the same name).
    #[arg(long, env = ENV_JWKS_REFRESH, default_value = "20m")]
    pub jwks_refresh_interval: String,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    #[command(flatten)]
    pub common: CommonArgs,
    #[arg(long)]
    pub namespace: String,
    #[arg(long)]
    pub service_account: String,
    /// The node the proxy runs on (needed to request other pods' certificates).
    #[arg(long)]
    pub node: Option<String>,
    #[arg(long, default_value = "24h")]
    pub ttl: String,
}

/// Where the Kubernetes source finds its cluster, and what the waypoint
/// controller deploys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kubernetes {
    /// None: in-cluster (or `KUBECONFIG`).
    pub kubeconfig: Option<PathBuf>,
    pub waypoint_image: String,
    pub istiod_address: String,
}

/// The validated configuration of `istiod-lite serve`.
#[derive(Clone, Debug)]
pub struct Config {
    pub state_dir: PathBuf,
    pub ca_certs_dir: Option<PathBuf>,
    pub trust_domain: TrustDomain,
    pub grpc_addr: SocketAddr,
    pub monitoring_addr: Option<SocketAddr>,
    pub default_cert_ttl: Duration,
    pub max_cert_ttl: Duration,
    pub trusted_node_accounts: HashSet<(String, String)>,
    pub serving_names: Vec<String>,
    pub config_dir: Option<PathBuf>,
    pub config_poll_interval: Duration,
    /// Watch a Kubernetes API server (rather than a manifest directory).
    pub kubernetes: Option<Kubernetes>,
    pub jwks_refresh_interval: Duration,
    pub translate: TranslateConfig,
}

impl CommonArgs {
    pub fn trust_domain(&self) -> Result<TrustDomain, ConfigError> {
        TrustDomain::new(&self.trust_domain)
            .map_err(|e| invalid(ENV_TRUST_DOMAIN, &self.trust_domain, e))
    }
}

impl Config {
    /// Validates the flags. Defaults give a working control plane for the
    /// local mesh; nothing here touches the network or the disk.
    pub fn from_args(args: &ServeArgs) -> Result<Self, ConfigError> {
        let parse_ttl =
            |key, v: &str| mesh_core::duration::parse(v).map_err(|e| invalid(key, v, e));
        let default_cert_ttl = parse_ttl(ENV_DEFAULT_TTL, &args.default_cert_ttl)?;
        let max_cert_ttl = parse_ttl(ENV_MAX_TTL, &args.max_cert_ttl)?;
        if default_cert_ttl.is_zero() || default_cert_ttl > max_cert_ttl {
            return Err(invalid(
                ENV_DEFAULT_TTL,
                &args.default_cert_ttl,
                format!(
                    "must be positive and at most {ENV_MAX_TTL} ({})",
                    args.max_cert_ttl
                ),
            ));
        }
        let mut trusted = HashSet::new();
        for entry in args
            .trusted_node_accounts
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (ns, sa) = entry
                .split_once('/')
                .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty() && !sa.contains('/'))
                .ok_or_else(|| {
                    invalid(
                        ENV_TRUSTED_NODE_ACCOUNTS,
                        &args.trusted_node_accounts,
                        format!("{entry:?} is not namespace/serviceaccount"),
                    )
                })?;
            trusted.insert((ns.to_string(), sa.to_string()));
        }
        let serving_names: Vec<String> = args
            .serving_names
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        if serving_names.is_empty() {
            return Err(invalid(
                ENV_SERVING_NAMES,
                &args.serving_names,
                "at least one name is needed",
            ));
        }
        let config_poll_interval = mesh_core::duration::parse(&args.config_poll_interval)
            .map_err(|e| invalid(ENV_CONFIG_POLL, &args.config_poll_interval, e))?;
        if config_poll_interval < Duration::from_millis(10) {
            return Err(invalid(
                ENV_CONFIG_POLL,
                &args.config_poll_interval,
                "must be at least 10ms",
            ));
        }
        if let Some(dir) = &args.config_dir
            && !dir.is_dir()
        {
            return Err(invalid(
                ENV_CONFIG_DIR,
                &dir.display().to_string(),
                "is not a directory",
            ));
        }
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        };
        if !name_ok(&args.root_namespace) {
            return Err(invalid(
                ENV_ROOT_NAMESPACE,
                &args.root_namespace,
                "must be a Kubernetes namespace name",
            ));
        }
        if args.cluster_id.is_empty() || args.cluster_id.contains('/') {
            return Err(invalid(
                ENV_CLUSTER_ID,
                &args.cluster_id,
                "must be non-empty and without '/'",
            ));
        }
        let jwks_refresh_interval = mesh_core::duration::parse(&args.jwks_refresh_interval)
            .map_err(|e| invalid(ENV_JWKS_REFRESH, &args.jwks_refresh_interval, e))?;
        if jwks_refresh_interval < Duration::from_secs(1) {
            return Err(invalid(
                ENV_JWKS_REFRESH,
                &args.jwks_refresh_interval,
                "must be at least 1s",
            ));
        }
        let kubernetes = (args.kubernetes || args.kubeconfig.is_some()).then(|| Kubernetes {
            kubeconfig: args.kubeconfig.clone(),
            waypoint_image: args.waypoint_image.clone(),
            istiod_address: args.istiod_address.clone(),
        });
        if kubernetes.is_some() && args.config_dir.is_some() {
            return Err(invalid(
                ENV_CONFIG_DIR,
                &args
                    .config_dir
                    .as_ref()
                    .map(|d| d.display().to_string())
                    .unwrap_or_default(),
                "give either a manifest directory or --kubernetes/--kubeconfig, not both",
            ));
        }
        let trust_domain = args.common.trust_domain()?;
        let monitoring_addr = mesh_runtime::config::optional_addr(
            ENV_MONITORING_ADDR,
            Some(&args.monitoring_addr),
            "",
        )?;
        Ok(Self {
            monitoring_addr,
            state_dir: args.common.state_dir.clone(),
            ca_certs_dir: args.common.ca_certs_dir.clone(),
            trust_domain: trust_domain.clone(),
            grpc_addr: args.grpc_addr,
            default_cert_ttl,
            max_cert_ttl,
            trusted_node_accounts: trusted,
            serving_names,
            config_dir: args.config_dir.clone(),
            config_poll_interval,
            kubernetes,
            jwks_refresh_interval,
            translate: TranslateConfig {
                cluster_id: args.cluster_id.clone(),
                trust_domain,
                root_namespace: args.root_namespace.clone(),
                ..TranslateConfig::default()
            },
        })
    }

    /// A configuration for in-process use: loopback, ephemeral port.
    pub fn local(state_dir: PathBuf) -> Self {
        Self {
            state_dir,
            ca_certs_dir: None,
            trust_domain: TrustDomain::default(),
            grpc_addr: "127.0.0.1:0".parse().expect("valid address"),
            monitoring_addr: None,
            default_cert_ttl: Duration::from_secs(86400),
            max_cert_ttl: Duration::from_secs(90 * 86400),
            trusted_node_accounts: [("istio-system".to_string(), "ztunnel".to_string())].into(),
            serving_names: vec!["localhost".into(), "127.0.0.1".into()],
            config_dir: None,
            config_poll_interval: Duration::from_millis(100),
            kubernetes: None,
            jwks_refresh_interval: Duration::from_secs(20 * 60),
            translate: TranslateConfig::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServeArgs {
        let mut argv = vec!["istiod-lite", "serve"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => *a,
            _ => unreachable!("serve was parsed"),
        }
    }

    #[test]
    fn defaults_are_valid() {
        let c = Config::from_args(&args(&[])).unwrap();
        assert_eq!(c.grpc_addr.port(), 15012);
        assert_eq!(c.default_cert_ttl, Duration::from_secs(86400));
        assert!(
            c.trusted_node_accounts
                .contains(&("istio-system".into(), "ztunnel".into()))
        );
    }

    #[test]
    fn one_source_at_a_time() {
        assert_eq!(Config::from_args(&args(&[])).unwrap().kubernetes, None);
        let k = Config::from_args(&args(&["--kubeconfig", "/k"])).unwrap();
        let k = k.kubernetes.unwrap();
        assert_eq!(k.kubeconfig, Some("/k".into()));
        assert_eq!(k.waypoint_image, "ambient-mesh/waypoint:0.1.0");
        assert_eq!(k.istiod_address, "istiod.istio-system.svc:15012");
        let in_cluster = Config::from_args(&args(&["--kubernetes"])).unwrap();
        assert_eq!(in_cluster.kubernetes.unwrap().kubeconfig, None);
        let dir = std::env::temp_dir();
        let both = args(&["--kubernetes", "--config-dir", dir.to_str().unwrap()]);
        let e = Config::from_args(&both).unwrap_err().to_string();
        assert!(e.contains("not both"), "{e}");
    }

    #[test]
    fn errors_name_the_setting() {
        let e = Config::from_args(&args(&["--max-cert-ttl", "forever"])).unwrap_err();
        assert_eq!(e.key, ENV_MAX_TTL);
        let e = Config::from_args(&args(&["--trusted-node-accounts", "ztunnel"])).unwrap_err();
        assert_eq!(e.key, ENV_TRUSTED_NODE_ACCOUNTS);
        assert!(e.to_string().contains("namespace/serviceaccount"));
        let e = Config::from_args(&args(&["--default-cert-ttl", "100d"])).unwrap_err();
        assert_eq!(e.key, ENV_DEFAULT_TTL);
    }
}
