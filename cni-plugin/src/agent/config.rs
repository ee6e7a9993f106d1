//! The node agent's settings, from flags or the environment, checked
//! before anything binds.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

/// How enrolled pods' traffic is captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Redirection {
    /// Native nftables rules inside each pod's network namespace.
    Nftables,
    /// tc programs (`bpf_sk_assign`) on each pod's interfaces.
    Ebpf,
}

#[derive(Clone, Debug, Parser)]
#[command(
    name = "cni-agent",
    about = "Node agent: captures enrolled pods' traffic and hands the pods to ztunnel"
)]
pub struct Config {
    /// The node this agent serves (pods are matched by spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
    pub node_name: String,
    /// The local mesh's manifest directory, where Namespaces and Pods are
    /// read (or give --kubernetes).
    #[arg(long, env = "MANIFEST_DIR")]
    pub manifest_dir: Option<PathBuf>,
    /// Watch the Kubernetes API server for Namespaces and Pods: the
    /// cluster of --kubeconfig, or the in-cluster service account.
    #[arg(long)]
    pub kubernetes: bool,
    /// The kubeconfig of the cluster to watch (implies --kubernetes).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// Install mesh-cni on this node at start: the binary into
    /// --cni-bin-dir and an entry into the primary config of
    /// --cni-conf-dir (both or neither).
    #[arg(long, env = "CNI_BIN_DIR", requires = "cni_conf_dir")]
    pub cni_bin_dir: Option<PathBuf>,
    #[arg(long, env = "CNI_CONF_DIR", requires = "cni_bin_dir")]
    pub cni_conf_dir: Option<PathBuf>,
    /// The mesh-cni binary to install (default: next to cni-agent).
    #[arg(long, env = "CNI_BINARY")]
    pub cni_binary: Option<PathBuf>,
    /// How often the manifest directory is re-read.
    #[arg(long, default_value = "500ms", value_parser = parse_duration)]
    pub manifest_poll_interval: Duration,
    /// Where the CNI plugin reaches the agent.
    #[arg(long, env = "PLUGIN_SOCKET", default_value = crate::protocol::DEFAULT_AGENT_SOCKET)]
    pub plugin_socket: PathBuf,
    /// Where ztunnel connects (ztunnel's INPOD_UDS).
    #[arg(long, env = "ZDS_SOCKET", default_value = mesh_zds::DEFAULT_SOCKET)]
    pub zds_socket: PathBuf,
    /// Where the container runtime keeps pods' network namespaces.
    #[arg(long, env = "NETNS_DIR", default_value = "/var/run/netns")]
    pub netns_dir: PathBuf,
    /// Namespaces never captured.
    #[arg(long, value_delimiter = ',', default_value = "kube-system")]
    pub excluded_namespaces: Vec<String>,
    /// How the traffic of enrolled pods is captured.
    #[arg(long, env = "REDIRECTION", value_enum, default_value = "nftables")]
    pub redirection: Redirection,
    /// The eBPF object to load instead of the built-in one (same programs
    /// and maps; for testing a rebuilt or deliberately broken object).
    #[arg(long, env = "EBPF_OBJECT")]
    pub ebpf_object: Option<PathBuf>,
    /// How often captured pods' rules are checked and repaired, and
    /// failed captures retried.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub reconcile_interval: Duration,
    /// Where the agent's status (captured pods, mode) is written as JSON.
    #[arg(long, env = "STATUS_FILE")]
    pub status_file: Option<PathBuf>,
    /// Prometheus metrics (`/metrics`); `none` turns them off.
    #[arg(long, env = "MONITORING_ADDR", default_value = "0.0.0.0:15014")]
    pub monitoring_addr: String,
}

/// Where the model comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Manifests(PathBuf),
    /// The kubeconfig, or in-cluster.
    Kubernetes(Option<PathBuf>),
}

/// What `--cni-bin-dir` and `--cni-conf-dir` ask for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Install {
    pub binary: PathBuf,
    pub bin_dir: PathBuf,
    pub conf_dir: PathBuf,
}

impl Config {
    /// Where metrics are served, if anywhere.
    pub fn monitoring(&self) -> anyhow::Result<Option<std::net::SocketAddr>> {
        Ok(mesh_runtime::config::optional_addr(
            "MONITORING_ADDR",
            Some(&self.monitoring_addr),
            "",
        )?)
    }

    /// The one source given.
    pub fn source(&self) -> anyhow::Result<Source> {
        let kubernetes = self.kubernetes || self.kubeconfig.is_some();
        match (&self.manifest_dir, kubernetes) {
            (Some(dir), false) => Ok(Source::Manifests(dir.clone())),
            (None, true) => Ok(Source::Kubernetes(self.kubeconfig.clone())),
            (Some(_), true) => {
                anyhow::bail!("give either --manifest-dir or --kubernetes/--kubeconfig, not both")
            }
            (None, false) => anyhow::bail!(
                "no source of pods: give --manifest-dir DIR (the local mesh) or --kubernetes"
            ),
        }
    }

    /// The install asked for, if any.
    pub fn install(&self) -> Option<Install> {
        let (bin_dir, conf_dir) = (self.cni_bin_dir.clone()?, self.cni_conf_dir.clone()?);
        let binary = self.cni_binary.clone().unwrap_or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|e| {
                    e.parent()
                        .map(|d| d.join(crate::agent::install::PLUGIN_TYPE))
                })
                .unwrap_or_else(|| crate::agent::install::PLUGIN_TYPE.into())
        });
        Some(Install {
            binary,
            bin_dir,
            conf_dir,
        })
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_core::duration::parse(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod source_tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["cni-agent", "--node-name", "n"];
        argv.extend_from_slice(args);
        Config::try_parse_from(argv).unwrap()
    }

    #[test]
    fn exactly_one_source_and_both_install_dirs_or_neither() {
        assert_eq!(
            config(&["--manifest-dir", "/m"]).source().unwrap(),
            Source::Manifests("/m".into())
        );
        assert_eq!(
            config(&["--kubeconfig", "/k"]).source().unwrap(),
            Source::Kubernetes(Some("/k".into()))
        );
        assert_eq!(
            config(&["--kubernetes"]).source().unwrap(),
            Source::Kubernetes(None)
        );
        let e = config(&[]).source().unwrap_err().to_string();
        assert!(e.contains("no source of pods"), "{e}");
        let e = config(&["--kubernetes", "--manifest-dir", "/m"])
            .source()
            .unwrap_err();
        assert!(e.to_string().contains("not both"));

        let c = config(&[
            "--kubernetes",
            "--cni-bin-dir",
            "/b",
            "--cni-conf-dir",
            "/c",
            "--cni-binary",
            "/x",
        ]);
        assert_eq!(
            c.install(),
            Some(Install {
                binary: "/x".into(),
                bin_dir: "/b".into(),
                conf_dir: "/c".into()
            })
        );
        assert_eq!(config(&["--kubernetes"]).install(), None);
        assert!(
            Config::try_parse_from(["cni-agent", "--node-name", "n", "--cni-bin-dir", "/b"])
                .is_err()
        );
    }
}
