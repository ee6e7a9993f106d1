//! `local-mesh`: the local two-node mesh that `ambientctl demo up` (and so
//! `cargo xtask demo`) starts in the background.
//!
//! Two nodes (network namespaces, each with a ztunnel and a node agent),
//! istiod-lite on a manifest directory, and the sample apps of namespace
//! `demo`: a `client` pod and `web-v1`, `web-v2`, `db` pods (`pod-echo`:
//! HTTP on 80, a TCP echo on 9000, gRPC on 50051) behind Services `web`
//! (selecting web-v1), `web-v1`, `web-v2` and `db`. The namespace starts
//! outside the mesh; the tour (`ambientctl demo check`) enrolls it.
//!
//! It publishes itself in `/run/ambient-demo`: `mesh.json` (its pid, the
//! manifest directory, each ztunnel's and pod's network namespace; see
//! `ambientctl::local`) and `manifests`, a link to the manifest directory
//! (where `ambientctl` looks by default). Each pod gets
//! `/etc/netns/<netns>/hosts` naming the Services (`web.demo`), which
//! `ip netns exec` mounts as the pod's `/etc/hosts`.
//!
//! While it runs it is also the waypoint controller: every waypoint
//! Gateway gets a Service and a pod running `waypoint` and its status says
//! `Programmed`; a deleted Gateway's pod and Service are removed. It stops
//! on SIGTERM (`ambientctl demo down`) or Ctrl-C, removing everything.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ambientctl::local::{DEMO_DIR, LocalMesh, LocalPod, LocalZtunnel};
use ambientctl::store::{ManifestStore, Objects, str_at};
use integration::cluster::{Cluster, PodSpec};
use mesh_model::routes::WAYPOINT_CLASS;

const NS: &str = "demo";
/// Where waypoints run.
const WAYPOINT_NODE: &str = "node-b";
/// ztunnel's admin endpoint inside its node's namespace.
const ZTUNNEL_ADMIN: &str = "127.0.0.1:15000";

fn main() -> ExitCode {
    if let Some(other) = ambientctl::demo::running() {
        eprintln!(
            "a local mesh is already running (pid {}); stop it with `ambientctl demo down`",
            other.pid
        );
        return ExitCode::FAILURE;
    }
    let mut demo = Demo::start();
    demo.publish();
    println!("The local mesh is up; stop it with `ambientctl demo down` or SIGTERM.");
    demo.serve_until_signalled();
    ExitCode::SUCCESS
}

struct Demo {
    c: Cluster,
    store: ManifestStore,
    /// Every Service: (namespace, name, VIP), the waypoints' included.
    services: Vec<(String, String, Ipv4Addr)>,
    /// Gateways given a Service and a pod.
    waypoints: Vec<(String, String)>,
    /// The `/etc/netns/<netns>` directories written.
    hosts_dirs: Vec<PathBuf>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The cluster tears itself down after this; nothing may point at it.
        let _ = std::fs::remove_dir_all(DEMO_DIR);
        for d in &self.hosts_dirs {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

impl Demo {
    fn start() -> Self {
        println!("Starting a two-node mesh in network namespaces ...");
        let mut c = Cluster::start(&["node-a", "node-b"]);
        let _ = std::fs::remove_dir_all(DEMO_DIR);
        std::fs::create_dir_all(DEMO_DIR).expect("create /run/ambient-demo");
        std::os::unix::fs::symlink(c.manifests(), Path::new(DEMO_DIR).join("manifests"))
            .expect("publish the manifest directory");
        c.namespace(NS, &[]);
        c.pod(PodSpec::new(NS, "client", "node-a"));
        c.pod(PodSpec::new(NS, "web-v1", "node-b").label("app", "web"));
        c.pod(PodSpec::new(NS, "web-v2", "node-a"));
        c.pod(PodSpec::new(NS, "db", "node-b"));
        let mut services = Vec::new();
        for (name, selector) in [
            ("web", "web"),
            ("web-v1", "web"),
            ("web-v2", "web-v2"),
            ("db", "db"),
        ] {
            let vip = c.service(NS, name, selector);
            services.push((NS.to_string(), name.to_string(), vip));
        }
        let store = ManifestStore::open(&c.manifests()).expect("manifest directory");
        Demo {
            c,
            store,
            services,
            waypoints: Vec::new(),
            hosts_dirs: Vec::new(),
        }
    }

    /// Writes `mesh.json` and every pod's hosts file.
    fn publish(&mut self) {
        let mesh = LocalMesh {
            pid: std::process::id(),
            manifests: self.c.manifests(),
            logs: self.c.dir.path().to_path_buf(),
            ztunnels: self
                .c
                .nodes
                .iter()
                .map(|n| LocalZtunnel {
                    name: format!("ztunnel-{}", n.name),
                    node: n.name.clone(),
                    netns: n.netns.clone(),
                    admin: ZTUNNEL_ADMIN.into(),
                })
                .collect(),
            pods: self
                .c
                .pods
                .iter()
                .map(|p| LocalPod {
                    namespace: p.namespace.clone(),
                    name: p.name.clone(),
                    node: p.node.clone(),
                    netns: p.netns.clone(),
                    ip: p.ip.to_string(),
                })
                .collect(),
        };
        for pod in &mesh.pods {
            let dir = Path::new("/etc/netns").join(&pod.netns);
            std::fs::create_dir_all(&dir).expect("/etc/netns/<pod>");
            std::fs::write(dir.join("hosts"), self.hosts(&pod.namespace))
                .expect("a pod's hosts file");
            if !self.hosts_dirs.contains(&dir) {
                self.hosts_dirs.push(dir);
            }
        }
        mesh.save(Path::new(DEMO_DIR)).expect("publish mesh.json");
    }

    /// `/etc/hosts` for a pod in `namespace`: every Service by
    /// `name.namespace.svc.cluster.local` and `name.namespace`, and the
    /// namespace's own by `name`, as cluster DNS with its search path does.
    fn hosts(&self, namespace: &str) -> String {
        let mut out = String::from("127.0.0.1 localhost\n");
        for (ns, name, vip) in &self.services {
            out.push_str(&format!("{vip} {name}.{ns}.svc.cluster.local {name}.{ns}"));
            if ns == namespace {
                out.push_str(&format!(" {name}"));
            }
            out.push('\n');
        }
        out
    }

    /// The waypoint controller: deploys every new waypoint Gateway and
    /// marks it Programmed; removes the pods and Services of deleted ones.
    fn reconcile(&mut self) {
        let Ok(gateways) = self.store.list("Gateway") else {
            return;
        };
        let wanted: Vec<(String, String)> = gateways
            .iter()
            .filter(|gw| str_at(&gw.object, &["spec", "gatewayClassName"]) == Some(WAYPOINT_CLASS))
            .map(|gw| (gw.namespace().to_string(), gw.name().to_string()))
            .collect();
        let mut changed = false;
        for key in self.waypoints.clone() {
            if !wanted.contains(&key) {
                println!(
                    "waypoint {}/{}: Gateway deleted; removing its pod and Service",
                    key.0, key.1
                );
                self.c.remove_waypoint(&key.0, &key.1);
                self.services
                    .retain(|(ns, name, _)| (ns, name) != (&key.0, &key.1));
                self.waypoints.retain(|k| *k != key);
                changed = true;
            }
        }
        for gw in gateways {
            let key = (gw.namespace().to_string(), gw.name().to_string());
            if !wanted.contains(&key) || self.waypoints.contains(&key) {
                continue;
            }
            println!("waypoint {}/{}: deploying on {WAYPOINT_NODE}", key.0, key.1);
            let (vip, _) = self.c.deploy_waypoint(&key.0, &key.1, WAYPOINT_NODE);
            let mut object = gw.object.clone();
            object["status"] = serde_yaml::from_str(&format!(
                "addresses: [{{type: IPAddress, value: {vip}}}]\nconditions:\n- {{type: Programmed, status: \"True\", reason: Programmed, message: Resource programmed, assigned to service(s) {}.{}.svc.cluster.local:15008}}\n",
                key.1, key.0
            ))
            .expect("status YAML");
            let _ = self.store.apply(object);
            self.services.push((key.0.clone(), key.1.clone(), vip));
            self.waypoints.push(key);
            changed = true;
        }
        if changed {
            self.publish();
        }
    }

    fn serve_until_signalled(&mut self) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut term = rt
            .block_on(async {
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            })
            .expect("SIGTERM handler");
        loop {
            let stop = rt.block_on(async {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => true,
                    _ = term.recv() => true,
                    _ = tokio::time::sleep(Duration::from_millis(300)) => false,
                }
            });
            if stop {
                println!("Stopping the mesh ...");
                return;
            }
            self.reconcile();
        }
    }
}
