//! The command line: istioctl's subcommands and flags where they exist.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::ztunnel_config::{Direction, Output, Section};

/// Where `ambientctl demo` keeps the local mesh's manifests.
pub const DEMO_MANIFESTS: &str = "/run/ambient-demo/manifests";
pub const ENV_MANIFESTS: &str = "AMBIENT_MANIFESTS";

#[derive(Debug, Parser)]
#[command(name = "ambientctl", version, about = "Drive the ambient mesh")]
pub struct Cli {
    /// The local mesh's manifest directory (what istiod-lite --config-dir
    /// reads). Default: the demo's.
    #[arg(long, global = true, env = ENV_MANIFESTS)]
    pub manifests: Option<PathBuf>,
    /// A Kubernetes cluster's kubeconfig.
    #[arg(long, global = true)]
    pub kubeconfig: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Enroll a namespace in the ambient mesh, or release it.
    Namespace {
        #[command(subcommand)]
        command: NamespaceCommand,
    },
    /// Manage waypoints (Gateways of class istio-waypoint).
    Waypoint(WaypointArgs),
    /// Show what a ztunnel knows: workloads, services, policies,
    /// certificates, connections.
    #[command(name = "ztunnel-config", visible_alias = "zc")]
    ZtunnelConfig(ZtunnelConfigArgs),
    /// Create or update objects from YAML (kubectl apply, for the local mesh).
    Apply {
        /// A file of YAML documents, or - for standard input.
        #[arg(short = 'f', long = "filename")]
        file: String,
    },
    /// The local mesh in network namespaces.
    Demo {
        #[command(subcommand)]
        command: DemoCommand,
    },
    /// Check that this machine can run the mesh.
    Precheck,
    /// Install the mesh on a Kubernetes cluster (the manifests of deploy/).
    Install {
        /// `profile=ambient|ambient-ebpf`, `hub=REGISTRY`, `tag=VERSION`;
        /// repeatable, or comma-separated.
        #[arg(long = "set", value_name = "KEY=VALUE", value_delimiter = ',')]
        set: Vec<String>,
        /// Print the manifests instead of applying them.
        #[arg(long)]
        dry_run: bool,
        /// Accepted for istioctl's sake: install never asks.
        #[arg(short = 'y', long)]
        skip_confirmation: bool,
        /// How long to wait for each component's workloads to be ready,
        /// as istioctl's (`300s`, `5m`, `1m30s`).
        #[arg(long, default_value = "5m0s", value_parser = crate::install::parse_duration)]
        readiness_timeout: std::time::Duration,
    },
}

#[derive(Debug, Subcommand)]
pub enum DemoCommand {
    /// Start the local mesh in the background.
    Up,
    /// Stop it.
    Down,
    /// Run the guided tour unattended; exit non-zero at the first step
    /// that misbehaves. On a cluster (`--kubeconfig` or `KUBECONFIG`), the
    /// mesh installed and the demo's apps deployed; otherwise the local
    /// mesh (started for it if none runs).
    Check,
    /// Run a command in a pod's network namespace.
    Exec {
        /// NAME[.NAMESPACE] (namespace demo by default).
        pod: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum NamespaceCommand {
    /// Label NS istio.io/dataplane-mode=ambient.
    Enroll { namespace: String },
    /// Remove the label.
    Release { namespace: String },
}

#[derive(Debug, Args)]
pub struct WaypointArgs {
    /// The waypoint's name.
    #[arg(long, global = true, default_value = "waypoint")]
    pub name: String,
    #[arg(short = 'n', long, global = true, default_value = "default")]
    pub namespace: String,
    #[command(subcommand)]
    pub command: WaypointCommand,
}

#[derive(Debug, Subcommand)]
pub enum WaypointCommand {
    /// Print the waypoint's Gateway.
    Generate {
        #[arg(long = "for", value_parser = ["service", "workload", "all", "none"])]
        traffic: Option<String>,
        #[arg(short = 'r', long)]
        revision: Option<String>,
    },
    /// Write the waypoint's Gateway.
    Apply {
        #[arg(long = "for", value_parser = ["service", "workload", "all", "none"])]
        traffic: Option<String>,
        #[arg(short = 'r', long)]
        revision: Option<String>,
        /// Label the namespace istio.io/use-waypoint=<name>.
        #[arg(long)]
        enroll_namespace: bool,
        /// Replace the waypoint the namespace already uses.
        #[arg(long)]
        overwrite: bool,
        /// Wait until the waypoint is programmed.
        #[arg(short = 'w', long)]
        wait: bool,
        #[arg(long, default_value = "90s")]
        waypoint_timeout: String,
    },
    /// List waypoints.
    List {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
    /// Delete waypoints by name, or all in the namespace.
    Delete {
        names: Vec<String>,
        #[arg(long)]
        all: bool,
    },
    /// Show the conditions of waypoints.
    Status {
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        #[arg(short = 'w', long, default_value_t = true, action = clap::ArgAction::Set)]
        wait: bool,
        #[arg(long, default_value = "90s")]
        waypoint_timeout: String,
    },
}

#[derive(Debug, Args)]
pub struct ZtunnelConfigArgs {
    pub section: Section,
    /// Which ztunnel: `[pod/]NAME[.NAMESPACE]`, a ztunnel or an application
    /// pod (meaning its node's ztunnel). Default: the first.
    pub target: Option<String>,
    /// The ztunnel on this node.
    #[arg(long)]
    pub node: Option<String>,
    #[arg(short = 'o', long, value_enum, default_value_t = Output::Short)]
    pub output: Output,
    /// Read a saved config dump instead of asking a ztunnel.
    #[arg(short = 'f', long)]
    pub file: Option<String>,
    /// A ztunnel's admin endpoint to ask directly. Default: the local
    /// mesh's ztunnel (see TARGET and --node), or 127.0.0.1:15000 when no
    /// local mesh runs.
    #[arg(long)]
    pub admin: Option<String>,
    #[arg(long, alias = "service-namespace", alias = "policy-namespace")]
    pub workload_namespace: Option<String>,
    #[arg(long)]
    pub workload_node: Option<String>,
    #[arg(long)]
    pub address: Option<String>,
    /// connections: only inbound or only outbound.
    #[arg(long, value_enum)]
    pub direction: Option<Direction>,
    /// connections: one row per connection, client ports included.
    #[arg(long)]
    pub raw: bool,
    /// log: the new filter, a level (`debug`) or `target:level,...`
    /// (`access:debug,info`).
    #[arg(long)]
    pub level: Option<String>,
    /// log: back to the filter ztunnel started with.
    #[arg(long)]
    pub reset: bool,
}
