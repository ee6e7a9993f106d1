//! `local-mesh`: the local two-node mesh that `cargo xtask demo` starts.
//!
//! Two nodes (network namespaces, each with a ztunnel and a node agent),
//! istiod-lite on a manifest directory published at
//! `/run/ambient-demo/manifests` (where `ambientctl` looks by default), and
//! the sample apps of namespace `demo`: a `client` pod (curl) and `web-v1`,
//! `web-v2`, `db` pods (`pod-echo`: HTTP and a TCP echo). While it runs it
//! is also the waypoint controller: every waypoint Gateway gets a Service
//! and a pod running `waypoint`, and its status says `Programmed`.
//!
//! The tour enrolls `demo`, shows ztunnel's view, denies a connection with
//! an L4 policy, applies a waypoint with `ambientctl`, denies POST with an
//! L7 policy and splits traffic 90/10 with an HTTPRoute. `--check` runs it
//! unattended and exits non-zero at the first step that misbehaves;
//! without it the mesh stays up until Ctrl-C.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use ambientctl::store::{ManifestStore, str_at};
use integration::cluster::host::ns_output;
use integration::cluster::{Cluster, HTTP_PORT, Pod, PodSpec, TCP_PORT, curl_status};

const STATE: &str = "/run/ambient-demo";
const NS: &str = "demo";

fn main() -> ExitCode {
    let check = std::env::args().any(|a| a == "--check");
    let mut demo = Demo::start();
    let result = demo.tour();
    match result {
        Err(e) => {
            eprintln!("\n✗ {e}");
            ExitCode::FAILURE
        }
        Ok(()) if check => {
            println!("\n✔ every step of the tour behaved");
            ExitCode::SUCCESS
        }
        Ok(()) => {
            demo.serve_until_signalled();
            ExitCode::SUCCESS
        }
    }
}

struct Demo {
    c: Cluster,
    store: ManifestStore,
    /// Gateways already given a Service and a pod.
    deployed: Vec<(String, String)>,
    /// The demo's Services: name → VIP.
    vips: Vec<(&'static str, Ipv4Addr)>,
}

type Step = Result<(), String>;

/// `ambientctl`, built next to this binary.
fn ambientctl_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("ambientctl")))
        .unwrap_or_else(|| PathBuf::from("ambientctl"))
}

impl Drop for Demo {
    fn drop(&mut self) {
        // The cluster tears itself down after this; nothing may point at it.
        let _ = std::fs::remove_dir_all(STATE);
    }
}

impl Demo {
    fn start() -> Self {
        println!("Starting a two-node mesh in network namespaces ...");
        let mut c = Cluster::start(&["node-a", "node-b"]);
        let _ = std::fs::remove_dir_all(STATE);
        std::fs::create_dir_all(STATE).expect("create /run/ambient-demo");
        std::os::unix::fs::symlink(c.manifests(), Path::new(STATE).join("manifests"))
            .expect("publish the manifest directory");
        std::fs::write(Path::new(STATE).join("pid"), std::process::id().to_string())
            .expect("write the pid file");
        c.namespace(NS, &[]);
        c.pod(PodSpec::new(NS, "client", "node-a"));
        c.pod(PodSpec::new(NS, "web-v1", "node-b").label("app", "web"));
        c.pod(PodSpec::new(NS, "web-v2", "node-a"));
        c.pod(PodSpec::new(NS, "db", "node-b"));
        let vips = vec![
            ("web", c.service(NS, "web", "web")),
            ("web-v1", c.service(NS, "web-v1", "web")),
            ("web-v2", c.service(NS, "web-v2", "web-v2")),
            ("db", c.service(NS, "db", "db")),
        ];
        let store = ManifestStore::open(&c.manifests()).expect("manifest directory");
        Demo {
            c,
            store,
            deployed: Vec::new(),
            vips,
        }
    }

    fn client(&self) -> &Pod {
        self.c.get(NS, "client")
    }

    /// The waypoint controller: deploys every new waypoint Gateway and
    /// marks it Programmed.
    fn reconcile(&mut self) {
        let Ok(gateways) = self.store.list("Gateway") else {
            return;
        };
        for gw in gateways {
            if str_at(&gw.object, &["spec", "gatewayClassName"]) != Some("istio-waypoint") {
                continue;
            }
            let key = (gw.namespace().to_string(), gw.name().to_string());
            if self.deployed.contains(&key) {
                continue;
            }
            let (vip, _) = self.c.deploy_waypoint(&key.0, &key.1, "node-b");
            let mut object = gw.object.clone();
            object["status"] = serde_yaml::from_str(&format!(
                "addresses: [{{type: IPAddress, value: {vip}}}]\nconditions:\n- {{type: Programmed, status: \"True\", reason: Programmed, message: Resource programmed, assigned to service(s) {}.{}.svc.cluster.local:15008}}\n",
                key.1, key.0
            ))
            .expect("status YAML");
            let _ = self.store.apply(object);
            self.deployed.push(key);
        }
    }

    /// Runs `ambientctl ARGS` as a user would, reconciling meanwhile.
    fn ambientctl(&mut self, args: &[&str]) -> Result<String, String> {
        println!("\n$ ambientctl {}", args.join(" "));
        let mut child = Command::new(ambientctl_bin())
            .args(args)
            .env("AMBIENT_MANIFESTS", self.c.manifests())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("running ambientctl: {e}"))?;
        while child.try_wait().map_err(|e| e.to_string())?.is_none() {
            self.reconcile();
            std::thread::sleep(Duration::from_millis(100));
        }
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{stdout}");
        if !out.status.success() {
            return Err(format!(
                "ambientctl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(stdout)
    }

    /// `ambientctl ztunnel-config` run inside a node (its admin endpoint
    /// listens on the node's loopback), shown as a user would type it.
    fn ztunnel_config(&self, node: &str, section: &str) -> Result<String, String> {
        let netns = &self.c.node(node).netns;
        println!("\n$ ip netns exec {netns} ambientctl ztunnel-config {section}");
        let text = self.ztunnel_config_quiet(node, section)?;
        print!("{text}");
        Ok(text)
    }

    fn ztunnel_config_quiet(&self, node: &str, section: &str) -> Result<String, String> {
        let bin = ambientctl_bin().display().to_string();
        let out = ns_output(&self.c.node(node).netns, &bin, &["ztunnel-config", section]);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn curl(&self, args: &[&str]) -> (u16, String) {
        curl_status(self.client(), args)
    }

    /// Polls `f` (reconciling meanwhile) until it holds or 30 s pass.
    fn until(&mut self, what: &str, mut f: impl FnMut(&Self) -> bool) -> Step {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            if Instant::now() > deadline {
                return Err(format!("timed out waiting until {what}"));
            }
            self.reconcile();
            std::thread::sleep(Duration::from_millis(200));
        }
        println!("  ✔ {what}");
        Ok(())
    }

    fn tour(&mut self) -> Step {
        self.ambientctl(&["namespace", "enroll", NS])?;
        let web_url = self.service_url("web", HTTP_PORT);
        self.until("the client reaches web", |d| d.curl(&[&web_url]).0 == 200)?;

        let hbone = |d: &Self| {
            let workloads = d
                .ztunnel_config_quiet("node-a", "workloads")
                .unwrap_or_default();
            workloads
                .lines()
                .filter(|l| l.starts_with(NS) && l.trim_end().ends_with("HBONE"))
                .count()
                == 4
        };
        self.until("ztunnel lists the demo's 4 pods with protocol HBONE", hbone)?;
        self.ztunnel_config("node-a", "workloads")?;
        let certs = self.ztunnel_config("node-a", "certificates")?;
        if !certs.lines().any(|l| {
            l.starts_with(&format!("spiffe://cluster.local/ns/{NS}/sa/client"))
                && l.contains("Available")
        }) {
            return Err(format!(
                "the client's mTLS identity is not issued:\n{certs}"
            ));
        }
        println!("  ✔ the client holds its SPIFFE identity (mutual TLS)");

        // L4: only web may talk to db.
        let db = self.service_addr("db", TCP_PORT);
        self.apply_yaml(
            "demo-db-policy.yaml",
            &format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: db-from-web, namespace: {NS}}}\nspec:\n  selector: {{matchLabels: {{app: db}}}}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/{NS}/sa/web-v1, cluster.local/ns/{NS}/sa/web-v2]\n"),
        );
        self.until(
            "ztunnel denies the client's connection to db (L4 policy)",
            |d| {
                // pod-echo's TCP greeting is `db <client ip>`: none means denied.
                d.c.socat(d.client(), &db, "hello\n")
                    .map_or(true, |out| !out.starts_with("db "))
            },
        )?;

        // A waypoint, then L7 policy and a weighted route through it.
        self.ambientctl(&[
            "waypoint",
            "apply",
            "-n",
            NS,
            "--enroll-namespace",
            "--wait",
        ])?;
        self.ambientctl(&["waypoint", "list", "-n", NS])?;
        let waypoint_ip = self.c.get(NS, "waypoint").ip.to_string();
        self.until("web is reached through the waypoint", |d| {
            d.curl(&[&web_url])
                .1
                .ends_with(&format!("you are {waypoint_ip}\n"))
        })?;
        self.apply_yaml(
            "demo-web-get-only.yaml",
            &format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {{name: web-get-only, namespace: {NS}}}\nspec:\n  targetRefs:\n  - {{kind: Service, group: \"\", name: web}}\n  action: ALLOW\n  rules:\n  - to:\n    - operation: {{methods: [GET]}}\n"),
        );
        self.until(
            "the waypoint denies POST to web (403 RBAC: access denied)",
            |d| d.curl(&["-X", "POST", "-d", "x", &web_url]) == (403, "RBAC: access denied".into()),
        )?;
        self.apply_yaml(
            "demo-web-split.yaml",
            &format!("apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: {NS}}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: web, port: {HTTP_PORT}}}\n  rules:\n  - backendRefs:\n    - {{name: web-v1, port: {HTTP_PORT}, weight: 90}}\n    - {{name: web-v2, port: {HTTP_PORT}, weight: 10}}\n"),
        );
        self.until("the route sends some requests to web-v2", |d| {
            d.curl(&[&web_url]).1.contains("web-v2")
        })?;
        let urls: Vec<&str> = std::iter::repeat_n(web_url.as_str(), 200).collect();
        let mut argv = vec!["-sS", "--max-time", "60"];
        argv.extend(&urls);
        let out = ns_output(&self.client().netns, "curl", &argv);
        let text = String::from_utf8_lossy(&out.stdout);
        let v1 = text.matches("hello from web-v1").count();
        let v2 = text.matches("hello from web-v2").count();
        println!("  200 requests: web-v1 {v1}, web-v2 {v2}");
        if v1 + v2 != 200 || !(160..=194).contains(&v1) {
            return Err(format!("the 90/10 split did not show: v1={v1} v2={v2}"));
        }
        println!("  ✔ the HTTPRoute splits traffic 90/10");
        Ok(())
    }

    fn service_addr(&self, name: &str, port: u16) -> String {
        let (_, vip) = self
            .vips
            .iter()
            .find(|(n, _)| *n == name)
            .expect("one of the demo's services");
        format!("{vip}:{port}")
    }

    fn service_url(&self, name: &str, port: u16) -> String {
        format!("http://{}/", self.service_addr(name, port))
    }

    fn apply_yaml(&self, file: &str, yaml: &str) {
        println!(
            "\n$ cat <<EOF > {}/{file}\n{yaml}EOF",
            self.c.manifests().display()
        );
        self.c.write_manifest(file, yaml);
    }

    fn serve_until_signalled(&mut self) {
        println!(
            "\nThe mesh is up. Try, from another shell:\n  ambientctl waypoint list -A\n  ambientctl waypoint status -n {NS}\n  ip netns exec {} ambientctl ztunnel-config workloads\n  ip netns exec {} curl -s {}\nStop it with Ctrl-C.",
            self.c.node("node-a").netns,
            self.client().netns,
            self.service_url("web", HTTP_PORT)
        );
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
                println!("\nStopping the mesh ...");
                return;
            }
            self.reconcile();
        }
    }
}
