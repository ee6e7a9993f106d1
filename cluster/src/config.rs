//! The cluster's configuration: the command line, where a cluster keeps
//! its files, and the address plan its nodes and pods are wired by.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};

pub const ENV_STATE_DIR: &str = "CLUSTER_STATE_DIR";
pub const ENV_BIN_DIR: &str = "CLUSTER_BIN_DIR";
/// The Kubernetes release the components are built from (`components/kubernetes/go.mod`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";

#[derive(Debug, Parser)]
#[command(
    name = "cluster",
    about = "A local Kubernetes cluster: real control-plane components, nodes in network namespaces"
)]
pub struct Cli {
    /// Where the running cluster keeps its certificates, kubeconfigs,
    /// etcd data, logs and process ids; `down` removes it.
    #[arg(long, env = ENV_STATE_DIR, default_value = "target/cluster/run")]
    pub state: PathBuf,
    /// Where `cargo xtask cluster build` put the upstream binaries.
    #[arg(long, env = ENV_BIN_DIR, default_value = "target/cluster/bin")]
    pub bin: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start etcd, the API server, the controller-manager, the scheduler
    /// and the nodes; print the KUBECONFIG to use once the nodes are Ready.
    Up(UpArgs),
    /// Stop everything `up` started and remove what it made, also what a
    /// crashed run left behind.
    Down,
    /// Print the components' processes and the nodes' readiness.
    Status,
    /// Run one node (started by `up`; not meant to be run by hand).
    Node(NodeArgs),
    /// Start a container's program in its pod (run by a node).
    #[command(hide = true)]
    Enter(EnterArgs),
}

#[derive(Debug, Args)]
pub struct UpArgs {
    /// How many nodes.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub nodes: u8,
    /// Rotate pods' projected service-account tokens at least this often
    /// (seconds), for tests; by default at 80% of their lifetime, as the
    /// kubelet does.
    #[arg(long)]
    pub token_refresh: Option<u64>,
}

impl UpArgs {
    /// `count` nodes, everything else as by default.
    pub fn nodes(count: u8) -> Self {
        Self {
            nodes: count,
            token_refresh: None,
        }
    }
}

#[derive(Debug, Args)]
pub struct NodeArgs {
    /// The node's number, from 1: it gives the node its name and address.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=9))]
    pub index: u8,
    /// See `up --token-refresh`.
    #[arg(long)]
    pub token_refresh: Option<u64>,
}

#[derive(Debug, Args)]
pub struct EnterArgs {
    /// The pod's network namespace (a path).
    #[arg(long)]
    pub net: PathBuf,
    #[arg(long, default_value = "/")]
    pub workdir: PathBuf,
    /// `MOUNT_PATH=SOURCE`, bound read-write.
    #[arg(long, value_parser = crate::node::parse_bind)]
    pub bind: Vec<(PathBuf, PathBuf)>,
    /// `MOUNT_PATH=SOURCE`, bound read-only.
    #[arg(long, value_parser = crate::node::parse_bind)]
    pub ro_bind: Vec<(PathBuf, PathBuf)>,
    /// The program and its arguments.
    #[arg(last = true, required = true)]
    pub argv: Vec<String>,
}

/// The files of a running cluster, all under its state directory.
#[derive(Debug, Clone)]
pub struct Layout {
    pub state: PathBuf,
    pub bin: PathBuf,
}

impl Layout {
    pub fn new(state: &Path, bin: &Path) -> Self {
        Self {
            state: absolute(state),
            bin: absolute(bin),
        }
    }
    pub fn pki(&self) -> PathBuf {
        self.state.join("pki")
    }
    pub fn logs(&self) -> PathBuf {
        self.state.join("logs")
    }
    pub fn pids(&self) -> PathBuf {
        self.state.join("pids")
    }
    pub fn etcd_data(&self) -> PathBuf {
        self.state.join("etcd")
    }
    /// The kubeconfig of a client certificate's holder (`admin` is the user's).
    pub fn kubeconfig(&self, who: &str) -> PathBuf {
        self.state.join(format!("{who}.kubeconfig"))
    }
    /// A node's own directory tree (its `/etc/cni/net.d`, `/opt/cni/bin`, ...).
    pub fn node_root(&self, node: &Node) -> PathBuf {
        self.state.join("nodes").join(&node.name)
    }
    /// The mount points the nodes made on this machine for pods' volumes.
    pub fn mount_points(&self) -> PathBuf {
        self.state.join("mount-points")
    }
    pub fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Names on the host start with this, so that `down` finds what a dead
/// run left: network namespaces `kc-node-1`, the bridge `kc0`, veths `kcv1`.
pub const PREFIX: &str = "kc";
/// The bridge on the host that joins the nodes.
pub const BRIDGE: &str = "kc0";
/// The host's address on the bridge, where the API server listens.
pub const HOST_IP: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 1);
pub const BRIDGE_PREFIX_LEN: u8 = 24;
pub const API_PORT: u16 = 6443;
/// etcd on loopback only, on ports away from a system etcd's defaults.
pub const ETCD_CLIENT_PORT: u16 = 23790;
pub const ETCD_PEER_PORT: u16 = 23800;
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// The `kubernetes` Service's VIP: the first address of the service range.
pub const API_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 1);
/// The cluster DNS Service (`kube-dns`, CoreDNS): `addons/coredns.yaml`.
pub const DNS_SERVICE_IP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
/// Pod addresses; the controller-manager gives each node a /24 of it.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
pub const NODE_CIDR_MASK: u8 = 24;
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// One node of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub index: u8,
    pub name: String,
    /// Its network namespace.
    pub netns: String,
    /// The host end of its uplink, on the bridge.
    pub veth: String,
    pub ip: Ipv4Addr,
}

impl Node {
    pub fn new(index: u8) -> Self {
        Self {
            index,
            name: format!("node-{index}"),
            netns: format!("{PREFIX}-node-{index}"),
            veth: format!("{PREFIX}v{index}"),
            ip: Ipv4Addr::new(10, 210, 0, 10 + index),
        }
    }
}
