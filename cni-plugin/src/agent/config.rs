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
    /// The local mesh's manifest directory (the Kubernetes source comes later).
    #[arg(long, env = "MANIFEST_DIR")]
    pub manifest_dir: PathBuf,
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
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    mesh_core::duration::parse(s).map_err(|e| e.to_string())
}
