//! The network-namespace cluster: nodes and pods as network namespaces on
//! this machine, wired as a small Kubernetes cluster would be.
//!
//! - an underlay namespace (`lan`) with a bridge joins the nodes; istiod-lite
//!   runs there, as a control plane reachable from every node;
//! - each node namespace has an uplink to the bridge, routes to the other
//!   nodes' pod ranges, a ztunnel in in-pod mode, a node agent, and a
//!   kube-proxy stand-in (nftables DNAT for service VIPs);
//! - each pod namespace gets its network from the real CNI plugins
//!   (`bridge` with `host-local`), then our chained `mesh-cni`, invoked as
//!   a runtime would; its application is `pod-echo`.
//!
//! istiod-lite and the node agents read the cluster's manifest directory,
//! which the harness keeps in step with the pods and services it creates.
//! Everything is torn down on drop, also when a test panics.

pub mod capture;
pub mod cni;
pub mod curl;
pub mod host;
pub mod logs;
mod manifests;
mod upgrade;
pub mod waypoint;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

pub use curl::{Reply, curl_status, curl_status_in, until_reply};
use host::{Proc, ns_output, ns_sh, sh};
pub use upgrade::ZtunnelPorts;

/// Where Debian's containernetworking-plugins puts the reference plugins.
pub const CNI_PLUGIN_DIR: &str = "/usr/lib/cni";
/// The host's address on the cluster's underlay, where istiod-lite (and
/// anything a test serves to the pods) listens.
pub const LAN_IP: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const ISTIOD_NAME: &str = "istiod.istio-system.svc";

/// A node.
pub struct Node {
    pub name: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub pod_subnet: String,
    pub uplink: String,
    dir: PathBuf,
    ztunnel: Option<Proc>,
    /// Where the running ztunnel's admin, stats and readiness listen.
    ztunnel_ports: ZtunnelPorts,
    /// A second ztunnel started beside the first, as an upgrade does.
    successor: Option<(Proc, ZtunnelPorts)>,
    agent: Option<Proc>,
    network: cni::NetworkConfig,
}

/// A pod: its namespace, address and application process.
pub struct Pod {
    pub name: String,
    pub namespace: String,
    pub node: String,
    pub netns: String,
    pub ip: Ipv4Addr,
    pub uid: String,
    pub app: Proc,
    labels: BTreeMap<String, String>,
    container_id: String,
    /// The CNI chain's ADD result, given back on DEL.
    cni_result: serde_json::Value,
}

/// What a test asks for when it creates a pod.
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub node: String,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    /// Extra `pod-echo` flags (e.g. `--http-status 503`).
    pub args: Vec<String>,
    /// Run this instead of `pod-echo` (a waypoint); nothing is awaited.
    pub program: Option<PodProgram>,
}

/// A process other than `pod-echo` that a pod runs.
pub struct PodProgram {
    pub binary: String,
    pub env: Vec<(&'static str, String)>,
}

impl PodSpec {
    /// A pod labelled `app: <name>`, with service account `<name>`.
    pub fn new(namespace: &str, name: &str, node: &str) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
            node: node.into(),
            service_account: name.into(),
            labels: [("app".to_string(), name.to_string())].into(),
            args: Vec::new(),
            program: None,
        }
    }

    /// An extra `pod-echo` flag.
    pub fn arg(mut self, flag: &str, value: &str) -> Self {
        self.args.extend([flag.to_string(), value.to_string()]);
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.insert(k.into(), v.into());
        self
    }
}

/// How the node agents capture pods: `MESH_E2E_REDIRECT=nftables|ebpf`
/// (`cargo xtask e2e --redirect ...`), nftables when unset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redirect {
    Nftables,
    Ebpf,
}

impl Redirect {
    pub fn from_env() -> Self {
        match std::env::var("MESH_E2E_REDIRECT").as_deref() {
            Err(_) | Ok("") | Ok("nftables") => Self::Nftables,
            Ok("ebpf") => Self::Ebpf,
            Ok(other) => panic!("MESH_E2E_REDIRECT={other}: expected nftables or ebpf"),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Nftables => "nftables",
            Self::Ebpf => "ebpf",
        }
    }
}

/// The ports `pod-echo` serves in every pod.
pub const HTTP_PORT: u16 = 80;
pub const TCP_PORT: u16 = 9000;
pub const GRPC_PORT: u16 = 50051;

pub struct Cluster {
    pub prefix: String,
    pub dir: tempfile::TempDir,
    pub lan: String,
    pub nodes: Vec<Node>,
    pub pods: Vec<Pod>,
    bin: PathBuf,
    istiod: Option<Proc>,
    root_cert: PathBuf,
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    services: BTreeMap<(String, String), manifests::ServiceDef>,
    next_vip: u8,
    pub redirect: Redirect,
    /// Extra flags for node agents started from now on.
    agent_args: Vec<String>,
    /// Extra environment for waypoints deployed from now on.
    pub waypoint_env: Vec<(&'static str, String)>,
    /// Extra environment for ztunnels started from now on.
    pub ztunnel_env: Vec<(&'static str, String)>,
    /// Extra environment for node agents started from now on.
    pub agent_env: Vec<(&'static str, String)>,
    /// A command node agents started from now on run under (the agent's
    /// path and flags follow it), e.g. to change what the agent sees of
    /// the host.
    pub agent_wrapper: Vec<String>,
    /// Servers on the underlay beside istiod-lite (an identity provider).
    underlay_servers: Vec<Proc>,
    /// Where the logs and manifests go if the test fails ([`logs`]).
    pub kept_logs: PathBuf,
}

impl Cluster {
    /// Starts istiod-lite and the given nodes, each with a ztunnel and a
    /// node agent. Needs root; fails loudly otherwise.
    pub fn start(nodes: &[&str]) -> Cluster {
        Self::start_with(nodes, Redirect::from_env())
    }

    /// [`Self::start`] with a given redirection, whatever the environment.
    pub fn start_with(nodes: &[&str], redirect: Redirect) -> Cluster {
        host::require_root();
        remove_stale_clusters();
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let prefix = format!(
            "mt{}x{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = tempfile::Builder::new()
            .prefix(&format!("{prefix}-"))
            .tempdir()
            .expect("temp dir");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("manifest dir");
        let lan = format!("{prefix}-lan");
        let bin = binaries_dir();
        let kept_logs = logs::kept_dir(bin.parent().unwrap_or(&bin), &prefix);
        logs::register(&kept_logs);
        let mut cluster = Cluster {
            prefix,
            lan,
            nodes: Vec::new(),
            pods: Vec::new(),
            bin,
            kept_logs,
            istiod: None,
            root_cert: dir.path().join("root-cert.pem"),
            redirect,
            agent_args: Vec::new(),
            waypoint_env: Vec::new(),
            ztunnel_env: Vec::new(),
            agent_env: Vec::new(),
            agent_wrapper: Vec::new(),
            underlay_servers: Vec::new(),
            namespaces: BTreeMap::new(),
            services: BTreeMap::new(),
            next_vip: 10,
            dir,
        };
        cluster.build_underlay();
        cluster.start_istiod();
        for (i, name) in nodes.iter().enumerate() {
            cluster.add_node(name, i as u8);
        }
        for i in 0..cluster.nodes.len() {
            cluster.start_agent_at(i);
            cluster.start_ztunnel_at(i);
        }
        for n in 0..cluster.nodes.len() {
            let node = cluster.nodes[n].name.clone();
            cluster.wait_for(
                &format!("ztunnel on {node} connects to its node agent"),
                |c| {
                    c.agent_status(&node)["ztunnelsConnected"]
                        .as_u64()
                        .unwrap_or(0)
                        >= 1
                },
            );
        }
        cluster
    }

    fn build_underlay(&mut self) {
        sh("ip", &["netns", "add", &self.lan]);
        sh("ip", &["-n", &self.lan, "link", "set", "lo", "up"]);
        sh(
            "ip",
            &["-n", &self.lan, "link", "add", "br0", "type", "bridge"],
        );
        sh(
            "ip",
            &[
                "-n",
                &self.lan,
                "addr",
                "add",
                &format!("{LAN_IP}/24"),
                "dev",
                "br0",
            ],
        );
        sh("ip", &["-n", &self.lan, "link", "set", "br0", "up"]);
    }

    fn add_node(&mut self, name: &str, index: u8) {
        let netns = format!("{}-{name}", self.prefix);
        let ip = Ipv4Addr::new(10, 200, 0, 10 + index);
        let uplink = format!("up{index}");
        let pod_subnet = format!("10.244.{}.0/24", index + 1);
        sh("ip", &["netns", "add", &netns]);
        sh("ip", &["-n", &netns, "link", "set", "lo", "up"]);
        sh(
            "ip",
            &[
                "-n", &self.lan, "link", "add", &uplink, "type", "veth", "peer", "name", "eth0",
                "netns", &netns,
            ],
        );
        sh(
            "ip",
            &[
                "-n", &self.lan, "link", "set", &uplink, "master", "br0", "up",
            ],
        );
        sh(
            "ip",
            &[
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ],
        );
        sh("ip", &["-n", &netns, "link", "set", "eth0", "up"]);
        ns_sh(&netns, "sysctl", &["-qw", "net.ipv4.ip_forward=1"]);
        // Routes between nodes' pod ranges, both ways, and from the underlay.
        for other in &self.nodes {
            sh(
                "ip",
                &[
                    "-n",
                    &netns,
                    "route",
                    "add",
                    &other.pod_subnet,
                    "via",
                    &other.ip.to_string(),
                ],
            );
            sh(
                "ip",
                &[
                    "-n",
                    &other.netns,
                    "route",
                    "add",
                    &pod_subnet,
                    "via",
                    &ip.to_string(),
                ],
            );
        }
        sh(
            "ip",
            &[
                "-n",
                &self.lan,
                "route",
                "add",
                &pod_subnet,
                "via",
                &ip.to_string(),
            ],
        );
        let dir = self.dir.path().join(name);
        std::fs::create_dir_all(dir.join("ipam")).expect("node dir");
        std::fs::create_dir_all(dir.join("netns")).expect("node netns dir");
        let network = cni::NetworkConfig::for_node(
            &netns,
            &pod_subnet,
            &dir.join("ipam"),
            &dir.join("plugin.sock"),
            &self.manifests(),
            &self.bin,
        );
        self.nodes.push(Node {
            name: name.into(),
            netns,
            ip,
            pod_subnet,
            uplink,
            dir,
            ztunnel: None,
            ztunnel_ports: ZtunnelPorts::STANDARD,
            successor: None,
            agent: None,
            network,
        });
        self.sync_kube_proxy();
    }

    /// Stops istiod-lite (SIGTERM) and starts it again on the same state
    /// (its root and signing key), as a control-plane rollout does.
    pub fn restart_istiod(&mut self) {
        if let Some(mut istiod) = self.istiod.take() {
            istiod.stop();
        }
        self.start_istiod();
    }

    fn start_istiod(&mut self) {
        let state = self.dir.path().join("istiod");
        let state_arg = state.display().to_string();
        let istiod = self.bin.join("istiod-lite");
        let root = sh(
            &istiod.display().to_string(),
            &["root-cert", "--state-dir", &state_arg],
        );
        std::fs::write(&self.root_cert, root).expect("root cert");
        let manifests = self.manifests().display().to_string();
        let grpc = format!("{LAN_IP}:15012");
        // The first run's log is istiod.log; a restart's gets its own.
        let mut log = self.dir.path().join("istiod.log");
        if log.exists() {
            log = self.dir.path().join(format!("istiod-{}.log", unique()));
        }
        self.istiod = Some(Proc::spawn(
            "istiod-lite",
            &self.lan,
            &istiod,
            &[
                "serve",
                "--state-dir",
                &state_arg,
                "--config-dir",
                &manifests,
                "--grpc-addr",
                &grpc,
                "--config-poll-interval",
                "100ms",
            ],
            &[("RUST_LOG", log_level())],
            log,
        ));
    }

    /// The token a node's ztunnel authenticates with, as its DaemonSet pod
    /// would have: the ztunnel service account, bound to the node.
    fn ztunnel_token(&self, node: &str) -> String {
        let state = self.dir.path().join("istiod").display().to_string();
        sh(
            &self.bin.join("istiod-lite").display().to_string(),
            &[
                "token",
                "--state-dir",
                &state,
                "--namespace",
                "istio-system",
                "--service-account",
                "ztunnel",
                "--node",
                node,
                "--ttl",
                "2h",
            ],
        )
        .trim()
        .to_string()
    }

    fn node_index(&self, node: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == node)
            .unwrap_or_else(|| panic!("no node {node}"))
    }

    pub fn node(&self, node: &str) -> &Node {
        &self.nodes[self.node_index(node)]
    }

    fn start_ztunnel_at(&mut self, i: usize) {
        let proc = self.spawn_ztunnel(i, ZtunnelPorts::STANDARD);
        self.nodes[i].ztunnel = Some(proc);
        self.nodes[i].ztunnel_ports = ZtunnelPorts::STANDARD;
    }

    /// A ztunnel process for node `i` whose node-level endpoints are at
    /// `ports` (its pod listeners are where every ztunnel's are).
    fn spawn_ztunnel(&self, i: usize, ports: ZtunnelPorts) -> Proc {
        let n = &self.nodes[i];
        let istiod = format!("{LAN_IP}:15012");
        let env = [
            ("NODE_NAME", n.name.clone()),
            ("INPOD_ENABLED", "true".into()),
            ("INPOD_REDIRECTION", self.redirect.as_str().into()),
            (
                "INPOD_UDS",
                n.dir.join("ztunnel.sock").display().to_string(),
            ),
            ("CA_ADDRESS", istiod.clone()),
            ("XDS_ADDRESS", istiod),
            ("ALT_CA_HOSTNAME", ISTIOD_NAME.into()),
            ("ALT_XDS_HOSTNAME", ISTIOD_NAME.into()),
            ("CA_ROOT_CA", self.root_cert.display().to_string()),
            ("AUTH_TOKEN", self.ztunnel_token(&n.name)),
            ("RUST_LOG", log_level()),
        ];
        let mut env = env.to_vec();
        env.extend(ports.env());
        env.extend(self.ztunnel_env.iter().map(|(k, v)| (*k, v.clone())));
        let log = n.dir.join(format!("ztunnel-{}.log", unique()));
        Proc::spawn(
            &format!("ztunnel on {} (admin :{})", n.name, ports.admin),
            &n.netns,
            &self.bin.join("ztunnel"),
            &[],
            &env,
            log,
        )
    }

    fn start_agent_at(&mut self, i: usize) {
        let n = &self.nodes[i];
        let dir = n.dir.clone();
        let args = [
            "--node-name".to_string(),
            n.name.clone(),
            "--manifest-dir".into(),
            self.manifests().display().to_string(),
            "--manifest-poll-interval".into(),
            "100ms".into(),
            "--plugin-socket".into(),
            dir.join("plugin.sock").display().to_string(),
            "--zds-socket".into(),
            dir.join("ztunnel.sock").display().to_string(),
            "--netns-dir".into(),
            dir.join("netns").display().to_string(),
            "--status-file".into(),
            dir.join("agent-status.json").display().to_string(),
            "--redirection".into(),
            self.redirect.as_str().into(),
        ];
        // Under the wrapper, if any: its command, then the agent's path and flags.
        let mut argv = self.agent_wrapper.clone();
        argv.push(self.bin.join("cni-agent").display().to_string());
        argv.extend(args);
        argv.extend(self.agent_args.iter().cloned());
        let (program, args) = argv.split_first().expect("the agent's path");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = dir.join(format!("agent-{}.log", unique()));
        let mut env = vec![("RUST_LOG", log_level())];
        env.extend(self.agent_env.iter().map(|(k, v)| (*k, v.clone())));
        let proc = Proc::spawn(
            &format!("node agent on {}", n.name),
            &n.netns,
            Path::new(program),
            &args,
            &env,
            log,
        );
        self.nodes[i].agent = Some(proc);
        let plugin_socket = dir.join("plugin.sock");
        self.wait_for("the node agent listens", |_| plugin_socket.exists());
    }

    /// Stops a node's ztunnel (SIGTERM).
    pub fn stop_ztunnel(&mut self, node: &str) {
        let i = self.node_index(node);
        if let Some(mut z) = self.nodes[i].ztunnel.take() {
            z.stop();
        }
    }

    /// Where one of the workspace's binaries is.
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// The process id of the node's ztunnel.
    pub fn ztunnel_pid(&self, node: &str) -> u32 {
        self.node(node)
            .ztunnel
            .as_ref()
            .map(|z| z.pid())
            .unwrap_or_else(|| panic!("no ztunnel runs on {node}"))
    }

    /// The process id of the node's agent.
    pub fn agent_pid(&self, node: &str) -> u32 {
        self.node(node)
            .agent
            .as_ref()
            .map(|a| a.pid())
            .unwrap_or_else(|| panic!("no node agent runs on {node}"))
    }

    /// Sends `signal` (e.g. `TERM`) to the node's ztunnel, without waiting.
    pub fn signal_ztunnel(&self, node: &str, signal: &str) {
        let pid = self.ztunnel_pid(node);
        host::sh("kill", &[&format!("-{signal}"), &pid.to_string()]);
    }

    /// Whether the node's ztunnel has exited with status 0.
    pub fn ztunnel_exited(&mut self, node: &str) -> bool {
        self.ztunnel_exit_status(node).is_some_and(|s| s.success())
    }

    /// How the node's ztunnel ended, once it has.
    pub fn ztunnel_exit_status(&mut self, node: &str) -> Option<std::process::ExitStatus> {
        let i = self.node_index(node);
        self.nodes[i].ztunnel.as_mut().and_then(|z| z.exit_status())
    }

    pub fn start_ztunnel(&mut self, node: &str) {
        let i = self.node_index(node);
        self.start_ztunnel_at(i);
    }

    pub fn stop_agent(&mut self, node: &str) {
        let i = self.node_index(node);
        if let Some(mut a) = self.nodes[i].agent.take() {
            a.stop();
        }
        let _ = std::fs::remove_file(self.nodes[i].dir.join("plugin.sock"));
    }

    /// Starts a node agent with extra flags (they stay for later starts).
    pub fn start_agent_with(&mut self, node: &str, args: &[&str]) {
        self.agent_args = args.iter().map(|a| a.to_string()).collect();
        self.start_agent(node);
    }

    pub fn start_agent(&mut self, node: &str) {
        let i = self.node_index(node);
        let _ = std::fs::remove_file(self.nodes[i].dir.join("agent-status.json"));
        self.start_agent_at(i);
    }

    /// The node agent's status file.
    pub fn agent_status(&self, node: &str) -> serde_json::Value {
        let path = self.node(node).dir.join("agent-status.json");
        std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(serde_json::Value::Null)
    }

    /// The node's ztunnel `/config_dump` (its admin endpoint on the node's
    /// loopback), or `Null` when it does not answer.
    pub fn ztunnel_config_dump(&self, node: &str) -> serde_json::Value {
        let (_, body) = self.ztunnel_http(node, "GET", 15000, "/config_dump");
        serde_json::from_str(&body).unwrap_or(serde_json::Value::Null)
    }

    /// A request to one of the node's ztunnel endpoints on its loopback
    /// (admin 15000, stats 15020, readiness 15021, or wherever the running
    /// ztunnel has them instead): (status, body), status 0 when nothing
    /// answered.
    pub fn ztunnel_http(&self, node: &str, method: &str, port: u16, path: &str) -> (u16, String) {
        let port = self.node(node).ztunnel_ports.instead_of(port);
        let url = format!("http://127.0.0.1:{port}{path}");
        let reply = curl_status_in(&self.node(node).netns, &["-X", method, &url]);
        (reply.status, reply.body)
    }

    /// Curls `url` from `from` until it answers over mutual TLS to `to`:
    /// until xDS and the CA have caught up, a first connection may pass
    /// through in plaintext or be refused, and a test that counts on the
    /// mesh path must not start on such a success. The proof is `to`'s
    /// ztunnel counting a `mutual_tls` connection to it.
    pub fn curl_over_mtls(&self, from: &Pod, url: &str, to: &Pod) -> String {
        let mut body = String::new();
        self.wait_for(&format!("{url} answers over mTLS"), |c| {
            let Ok(b) = c.curl(from, url) else {
                return false;
            };
            body = b;
            let (_, metrics) = c.ztunnel_http(&to.node, "GET", 15020, "/metrics");
            metrics.lines().any(|l| {
                l.starts_with("istio_tcp_connections_closed_total{reporter=\"destination\"")
                    && l.contains(&format!("destination_workload=\"{}\"", to.name))
                    && l.contains(&format!(
                        "destination_workload_namespace=\"{}\"",
                        to.namespace
                    ))
                    && l.contains("connection_security_policy=\"mutual_tls\"")
                    && l.rsplit_once(' ').is_some_and(|(_, v)| v != "0")
            })
        });
        body
    }

    /// Whether the node agent reports `pod` (namespace/name) captured.
    pub fn captured(&self, pod: &Pod) -> bool {
        self.agent_status(&pod.node)["pods"][format!("{}/{}", pod.namespace, pod.name)]["captured"]
            .as_bool()
            .unwrap_or(false)
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    /// Creates or relabels a namespace.
    pub fn namespace(&mut self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.write_manifest(
            &format!("ns-{name}.yaml"),
            &manifests::namespace(name, &labels),
        );
        self.namespaces.insert(name.into(), labels);
    }

    /// Creates a pod as a kubelet would: the API object first, then the
    /// sandbox and its network (the CNI chain), then the application. An
    /// error is the CNI chain's, and nothing of the pod is left.
    pub fn try_pod(&mut self, spec: PodSpec) -> Result<&Pod, String> {
        if !self.namespaces.contains_key(&spec.namespace) {
            self.namespace(&spec.namespace, &[]);
        }
        let node_i = self.node_index(&spec.node);
        let uid = format!(
            "{:08x}-0000-4000-8000-{:012x}",
            rand::random::<u32>(),
            rand::random::<u64>() & 0xffff_ffff_ffff
        );
        let netns = format!("{}-{}-{}", self.prefix, spec.namespace, spec.name);
        let file = format!("pod-{}-{}.yaml", spec.namespace, spec.name);
        self.write_manifest(&file, &manifests::pod(&spec, &uid, None));
        sh("ip", &["netns", "add", &netns]);
        // The node's view of its pods' namespaces (what a runtime keeps per
        // node); the agent searches it by IP after a restart. Clusters on
        // this machine reuse pod addresses, so they must not share one.
        let link = self.nodes[node_i].dir.join("netns").join(&netns);
        std::os::unix::fs::symlink(format!("/var/run/netns/{netns}"), &link).expect("netns link");
        let container_id = format!("{:016x}", rand::random::<u64>());
        let sandbox = cni::Sandbox {
            container_id: &container_id,
            netns: &netns,
            pod_name: &spec.name,
            pod_namespace: &spec.namespace,
            pod_uid: &uid,
        };
        let result = match self.nodes[node_i].network.add(&sandbox) {
            Ok(r) => r,
            Err(e) => {
                let _ = std::fs::remove_file(&link);
                let _ = sh("ip", &["netns", "del", &netns]);
                let _ = std::fs::remove_file(self.manifests().join(&file));
                return Err(e);
            }
        };
        let ip = cni::first_ip(&result).expect("the bridge plugin assigned an address");
        self.write_manifest(&file, &manifests::pod(&spec, &uid, Some(ip)));
        let pod_dir = self.dir.path().join("pods");
        std::fs::create_dir_all(&pod_dir).expect("pods dir");
        let log = pod_dir.join(format!("{}-{}.log", spec.namespace, spec.name));
        let program = spec.program.map(|p| {
            let mut env = p.env;
            env.push(("INSTANCE_IP", ip.to_string()));
            (p.binary, env)
        });
        let app = match &program {
            Some((binary, env)) => Proc::spawn(
                &format!("pod {}/{}", spec.namespace, spec.name),
                &netns,
                &self.bin.join(binary),
                &[],
                env,
                log,
            ),
            None => {
                let mut args: Vec<String> = [
                    "--name",
                    &spec.name,
                    "--http",
                    &HTTP_PORT.to_string(),
                    "--tcp",
                    &TCP_PORT.to_string(),
                    "--grpc",
                    &GRPC_PORT.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(spec.args.iter().cloned());
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                Proc::spawn(
                    &format!("pod {}/{}", spec.namespace, spec.name),
                    &netns,
                    &self.bin.join("pod-echo"),
                    &args,
                    &[],
                    log,
                )
            }
        };
        self.pods.push(Pod {
            name: spec.name,
            namespace: spec.namespace,
            node: spec.node,
            netns,
            ip,
            uid,
            app,
            labels: spec.labels,
            container_id,
            cni_result: result,
        });
        if program.is_some() {
            return Ok(self.pods.last().expect("just pushed"));
        }
        let pod = self.pods.last().expect("just pushed");
        // The application is up when it accepts connections.
        let (ns, url) = (pod.netns.clone(), format!("http://127.0.0.1:{HTTP_PORT}/"));
        self.wait_for("the pod's application listens", |_| {
            ns_output(
                &ns,
                "curl",
                &["-s", "--max-time", "1", "-o", "/dev/null", &url],
            )
            .status
            .success()
        });
        Ok(self.pods.last().expect("just pushed"))
    }

    /// As [`Cluster::try_pod`], panicking if the CNI chain fails.
    pub fn pod(&mut self, spec: PodSpec) -> &Pod {
        let what = format!("{}/{}", spec.namespace, spec.name);
        match self.try_pod(spec) {
            Ok(_) => self.pods.last().expect("just pushed"),
            Err(e) => panic!("creating pod {what}: {e}"),
        }
    }

    /// Creates pods `(name, node)` in `namespace` (labelled for the mesh)
    /// and waits until the node agent reports each captured.
    pub fn captured_pods(&mut self, namespace: &str, pods: &[(&str, &str)]) {
        for (name, node) in pods {
            self.pod(PodSpec::new(namespace, name, node));
        }
        for (name, _) in pods {
            let pod = self.get(namespace, name);
            self.wait_for(&format!("{namespace}/{name} is captured"), |c| {
                c.captured(pod)
            });
        }
    }

    /// Deletes a pod as a kubelet would: the application stops, the CNI
    /// chain's DEL runs (the node agent releases the pod), the sandbox and
    /// the API object go. Returns whether there was such a pod.
    pub fn delete_pod(&mut self, namespace: &str, name: &str) -> bool {
        let Some(i) = self
            .pods
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)
        else {
            return false;
        };
        let pod = self.pods.remove(i);
        let node_i = self.node_index(&pod.node);
        let Pod {
            app,
            netns,
            uid,
            container_id,
            cni_result,
            ..
        } = pod;
        drop(app);
        let sandbox = cni::Sandbox {
            container_id: &container_id,
            netns: &netns,
            pod_name: name,
            pod_namespace: namespace,
            pod_uid: &uid,
        };
        self.nodes[node_i].network.del(&sandbox, Some(&cni_result));
        let _ = std::fs::remove_file(self.nodes[node_i].dir.join("netns").join(&netns));
        let _ = host::output("ip", &["netns", "del", &netns], None);
        let _ = std::fs::remove_file(
            self.manifests()
                .join(format!("pod-{namespace}-{name}.yaml")),
        );
        self.sync_kube_proxy();
        true
    }

    /// Two nodes, namespace `apps` enrolled, `client` captured on node-a
    /// and `server` on node-b, and a request from one to the other served
    /// over mTLS (so each ztunnel knows the other's workload).
    pub fn client_and_server(client: &str, server: &str) -> Cluster {
        let mut c = Cluster::start(&["node-a", "node-b"]);
        c.namespace("apps", &[("istio.io/dataplane-mode", "ambient")]);
        c.captured_pods("apps", &[(client, "node-a"), (server, "node-b")]);
        let (from, to) = (c.get("apps", client), c.get("apps", server));
        c.curl_over_mtls(from, &format!("http://{}:{HTTP_PORT}/", to.ip), to);
        c
    }

    /// The pod named `namespace/name`.
    pub fn get(&self, namespace: &str, name: &str) -> &Pod {
        self.pods
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
    }

    /// A Service selecting `app: <selector>` on HTTP_PORT and TCP_PORT;
    /// returns its VIP.
    pub fn service(&mut self, namespace: &str, name: &str, selector: &str) -> Ipv4Addr {
        let vip = Ipv4Addr::new(10, 96, 0, self.next_vip);
        self.next_vip += 1;
        let def = manifests::ServiceDef {
            namespace: namespace.into(),
            name: name.into(),
            vip,
            selector: selector.into(),
        };
        self.write_manifest(
            &format!("svc-{namespace}-{name}.yaml"),
            &manifests::service(&def),
        );
        self.services.insert((namespace.into(), name.into()), def);
        self.sync_kube_proxy();
        vip
    }

    /// Writes one manifest file atomically.
    pub fn write_manifest(&self, file: &str, yaml: &str) {
        let tmp = self.dir.path().join(format!(".{file}.tmp"));
        std::fs::write(&tmp, yaml).expect("write manifest");
        std::fs::rename(&tmp, self.manifests().join(file)).expect("rename manifest");
    }

    /// The kube-proxy stand-in: DNAT from each VIP to its endpoints, in
    /// every node, for clients outside the mesh (captured clients never get
    /// here: ztunnel resolves the VIP itself).
    fn sync_kube_proxy(&self) {
        let mut rules = String::from(
            "table ip kube-proxy\ndelete table ip kube-proxy\ntable ip kube-proxy {\n\tchain prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n",
        );
        for def in self.services.values() {
            let endpoints: Vec<Ipv4Addr> = self
                .pods
                .iter()
                .filter(|p| {
                    p.namespace == def.namespace && p.labels.get("app") == Some(&def.selector)
                })
                .map(|p| p.ip)
                .collect();
            if endpoints.is_empty() {
                continue;
            }
            let map: Vec<String> = endpoints
                .iter()
                .enumerate()
                .map(|(i, ip)| format!("{i} : {ip}"))
                .collect();
            rules.push_str(&format!(
                "\t\tip daddr {} tcp dport {{ {HTTP_PORT}, {TCP_PORT} }} dnat to numgen random mod {} map {{ {} }}\n",
                def.vip,
                endpoints.len(),
                map.join(", ")
            ));
        }
        rules.push_str("\t}\n}\n");
        for n in &self.nodes {
            let argv = host::in_netns(&n.netns, "nft", &["-f", "-"]);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let out = host::output("nsenter", &argv, Some(rules.as_bytes()));
            assert!(
                out.status.success(),
                "kube-proxy rules: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Polls `f` every 50 ms for up to 30 s; panics naming `what`.
    pub fn wait_for(&self, what: &str, mut f: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            assert!(
                Instant::now() < deadline,
                "timed out waiting until {what} (30 s)"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `curl` from inside `from` to `url`: its stdout, or its exit code and
    /// stderr.
    pub fn curl(&self, from: &Pod, url: &str) -> Result<String, String> {
        let out = ns_output(&from.netns, "curl", &["-sS", "--max-time", "5", url]);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "curl exit {}: {}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Sends `data` with `socat` from inside `from` to `addr` (TCP echo)
    /// and returns everything the server wrote back.
    pub fn socat(&self, from: &Pod, addr: &str, data: &str) -> Result<String, String> {
        let argv = host::in_netns(
            &from.netns,
            "socat",
            &[
                "-t",
                "2",
                "-T",
                "5",
                "-",
                &format!("TCP:{addr},connect-timeout=5"),
            ],
        );
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let out = host::output("nsenter", &argv, Some(data.as_bytes()));
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "socat exit {}: {}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Retries `curl` until it succeeds (the mesh converging); returns the body.
    pub fn curl_eventually(&self, from: &Pod, url: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.curl(from, url) {
                Ok(body) => return body,
                Err(e) if Instant::now() > deadline => {
                    panic!("{}/{} cannot reach {url}: {e}", from.namespace, from.name)
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }

    /// The pod's capture as the kernel shows it, if present: the nftables
    /// table, or our tc programs on the pod's interface.
    pub fn pod_rules(&self, pod: &Pod) -> Option<String> {
        match self.redirect {
            Redirect::Nftables => {
                let out = ns_output(
                    &pod.netns,
                    "nft",
                    &["list", "table", "inet", "mesh-ambient"],
                );
                out.status
                    .success()
                    .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
            }
            Redirect::Ebpf => {
                let mut listing = String::new();
                for direction in ["ingress", "egress"] {
                    let out = ns_output(
                        &pod.netns,
                        "tc",
                        &["filter", "show", "dev", cni::POD_INTERFACE, direction],
                    );
                    listing.push_str(&String::from_utf8_lossy(&out.stdout));
                }
                listing.contains(" mesh_").then_some(listing)
            }
        }
    }

    /// Removes the pod's capture behind the agent's back, as an operator
    /// or another tool might: `nft flush ruleset`, or deleting the tc
    /// qdisc that holds our programs.
    pub fn remove_capture_by_hand(&self, pod: &Pod) {
        match self.redirect {
            Redirect::Nftables => {
                ns_sh(&pod.netns, "nft", &["flush", "ruleset"]);
            }
            Redirect::Ebpf => {
                ns_sh(
                    &pod.netns,
                    "tc",
                    &["qdisc", "del", "dev", cni::POD_INTERFACE, "clsact"],
                );
            }
        }
    }

    /// The identity of the pod's network namespace (inode).
    pub fn pod_netns_inode(&self, pod: &Pod) -> u64 {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/var/run/netns/{}", pod.netns))
            .expect("pod netns")
            .ino()
    }

    /// What a pod's application logged (`accepted <port> <peer>` lines).
    pub fn app_log(&self, pod: &Pod) -> String {
        pod.app.logs()
    }

    /// Logs of the node's ztunnel and agent, for failure messages.
    pub fn node_logs(&self, node: &str) -> String {
        let n = self.node(node);
        let mut out = String::new();
        let successor = n.successor.as_ref().map(|(p, _)| p);
        for p in [n.ztunnel.as_ref(), successor, n.agent.as_ref()]
            .into_iter()
            .flatten()
        {
            out.push_str(&format!("----- {} -----\n{}\n", p.name, p.logs()));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let failed = std::thread::panicking();
        if failed {
            // The last lines here; the whole logs in the kept folder, once
            // every process has ended below.
            for n in &self.nodes {
                for p in [
                    n.ztunnel.as_ref(),
                    n.successor.as_ref().map(|(p, _)| p),
                    n.agent.as_ref(),
                ]
                .into_iter()
                .flatten()
                {
                    eprintln!(
                        "----- {} (last lines) -----\n{}",
                        p.name,
                        logs::tail(&p.logs(), 15)
                    );
                }
            }
            if let Some(i) = &self.istiod {
                eprintln!(
                    "----- istiod-lite (last lines) -----\n{}",
                    logs::tail(&i.logs(), 15)
                );
            }
        }
        // Processes first (they hold the namespaces), then the namespaces.
        self.pods.clear();
        for n in &mut self.nodes {
            n.ztunnel = None;
            n.successor = None;
            n.agent = None;
        }
        self.istiod = None;
        self.underlay_servers.clear();
        if failed {
            match logs::keep(self.dir.path(), &self.kept_logs) {
                Ok(()) => eprintln!("cluster logs kept in {}", self.kept_logs.display()),
                Err(e) => eprintln!(
                    "could not keep the cluster's logs in {}: {e}",
                    self.kept_logs.display()
                ),
            }
        }
        logs::unregister(&self.kept_logs);
        let names: Vec<String> = self
            .nodes
            .iter()
            .map(|n| n.netns.clone())
            .chain(std::iter::once(self.lan.clone()))
            .collect();
        for name in names {
            let _ = host::output("ip", &["netns", "del", &name], None);
        }
        for name in list_netns() {
            if name.starts_with(&format!("{}-", self.prefix)) {
                let _ = host::output("ip", &["netns", "del", &name], None);
            }
        }
    }
}

fn list_netns() -> Vec<String> {
    std::fs::read_dir("/var/run/netns")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Namespaces left by a run that was killed (its pid is gone).
fn remove_stale_clusters() {
    for name in list_netns() {
        let Some(rest) = name.strip_prefix("mt") else {
            continue;
        };
        let Some(pid) = rest.split('x').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = host::output("ip", &["netns", "del", &name], None);
        }
    }
}

/// Where cargo put the workspace's binaries: next to the test binary's
/// `deps` directory.
fn binaries_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // Test binaries live in `target/<profile>/deps`, other binaries (the
    // local mesh of `cargo xtask demo`) in `target/<profile>`.
    let mut dir = exe.parent().expect("target directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    for bin in [
        "istiod-lite",
        "ztunnel",
        "cni-agent",
        "mesh-cni",
        "pod-echo",
        "waypoint",
    ] {
        assert!(
            dir.join(bin).exists(),
            "{} is not built; run `cargo xtask e2e` (it builds every binary first) or `cargo build --bins`",
            dir.join(bin).display()
        );
    }
    dir
}

fn log_level() -> String {
    std::env::var("MESH_E2E_LOG").unwrap_or_else(|_| "info".into())
}

fn unique() -> u32 {
    static N: AtomicU32 = AtomicU32::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
