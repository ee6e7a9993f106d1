//! Waypoints in the cluster, deployed as the waypoint controller and a
//! kubelet would: the Gateway, its Service (a VIP with port 15008 selecting
//! the waypoint's pod) and a pod running the `waypoint` binary under its
//! own service account, never enrolled itself.

use std::net::Ipv4Addr;

use super::host::Proc;
use super::{Cluster, ISTIOD_NAME, LAN_IP, PodProgram, PodSpec, log_level};

pub use istiod_lite::translate::waypoint::GATEWAY_NAME_LABEL;

impl Cluster {
    /// Deploys waypoint `namespace/name` on `node`; `traffic` is the
    /// `istio.io/waypoint-for` label (absent: service). Returns the pod IP.
    pub fn waypoint(
        &mut self,
        namespace: &str,
        name: &str,
        node: &str,
        traffic: Option<&str>,
    ) -> Ipv4Addr {
        let labels = match traffic {
            Some(t) => format!("\n  labels: {{istio.io/waypoint-for: {t}}}"),
            None => String::new(),
        };
        self.write_manifest(
            &format!("gtw-{namespace}-{name}.yaml"),
            &format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {name}\n  namespace: {namespace}{labels}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n"
            ),
        );
        self.deploy_waypoint(namespace, name, node).1
    }

    /// What the waypoint controller does for an existing Gateway: a Service
    /// (returns its VIP) and a pod running the `waypoint` binary (returns
    /// its IP).
    pub fn deploy_waypoint(
        &mut self,
        namespace: &str,
        name: &str,
        node: &str,
    ) -> (Ipv4Addr, Ipv4Addr) {
        let vip = Ipv4Addr::new(10, 96, 0, self.next_vip);
        self.next_vip += 1;
        self.write_manifest(
            &format!("svc-{namespace}-{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  labels: {{{GATEWAY_NAME_LABEL}: {name}}}\nspec:\n  clusterIP: {vip}\n  selector: {{{GATEWAY_NAME_LABEL}: {name}}}\n  ports:\n  - {{name: status-port, port: 15021, targetPort: 15021}}\n  - {{name: mesh, port: 15008, targetPort: 15008, appProtocol: all}}\n"
            ),
        );
        let istiod = format!("{LAN_IP}:15012");
        let env = vec![
            ("POD_NAMESPACE", namespace.to_string()),
            ("POD_NAME", format!("{name}-0")),
            ("GATEWAY_NAME", name.to_string()),
            ("SERVICE_ACCOUNT", name.to_string()),
            ("NODE_NAME", node.to_string()),
            ("CA_ADDRESS", istiod.clone()),
            ("XDS_ADDRESS", istiod),
            ("ALT_CA_HOSTNAME", ISTIOD_NAME.into()),
            ("CA_ROOT_CA", self.root_cert.display().to_string()),
            ("AUTH_TOKEN", self.workload_token(namespace, name)),
            ("RUST_LOG", log_level()),
        ];
        let mut env = env;
        env.extend(self.waypoint_env.iter().map(|(k, v)| (*k, v.clone())));
        let spec = PodSpec::new(namespace, name, node)
            .label(GATEWAY_NAME_LABEL, name)
            .label("istio.io/dataplane-mode", "none");
        let spec = PodSpec {
            program: Some(PodProgram {
                binary: "waypoint".into(),
                env,
            }),
            ..spec
        };
        (vip, self.pod(spec).ip)
    }

    /// What the waypoint controller does when a Gateway is gone: its pod
    /// and Service are deleted (Kubernetes garbage-collects them, as the
    /// Gateway owns them).
    pub fn remove_waypoint(&mut self, namespace: &str, name: &str) {
        self.delete_pod(namespace, name);
        let _ = std::fs::remove_file(
            self.manifests()
                .join(format!("svc-{namespace}-{name}.yaml")),
        );
    }

    /// Deletes the waypoint's Gateway (what `ambientctl waypoint delete`
    /// does); its Service and pod stay until garbage-collected.
    pub fn delete_gateway(&self, namespace: &str, name: &str) {
        let file = self
            .manifests()
            .join(format!("gtw-{namespace}-{name}.yaml"));
        std::fs::remove_file(&file).unwrap_or_else(|e| panic!("removing {}: {e}", file.display()));
    }

    /// A listener of the test's own on the underlay (`LAN_IP`, a free
    /// port), where the pods can reach it: a collector, say.
    pub fn underlay_listener(&self) -> std::net::TcpListener {
        let path = format!("/var/run/netns/{}", self.lan);
        let bound = mesh_netns::Netns::open(&path)
            .and_then(|ns| ns.run(|| std::net::TcpListener::bind((LAN_IP, 0))))
            .unwrap_or_else(|e| panic!("entering the underlay ({path}): {e}"));
        bound.unwrap_or_else(|e| panic!("binding on the underlay ({path}): {e}"))
    }

    /// Serves `jwks` over HTTP on the underlay, as an identity provider
    /// would, and returns the `jwksUri` istiod-lite fetches it from.
    /// Calling it again replaces the key set (a key rotation).
    pub fn identity_provider(&mut self, jwks: &str) -> String {
        const PORT: u16 = 8089;
        let file = self.dir.path().join("jwks.json");
        std::fs::write(&file, jwks).expect("write jwks");
        if self.underlay_servers.is_empty() {
            let proc = Proc::spawn(
                "identity-provider",
                &self.lan,
                &self.bin.join("pod-echo"),
                &[
                    "--name",
                    "idp",
                    "--http",
                    &PORT.to_string(),
                    "--http-body-file",
                    &file.display().to_string(),
                ],
                &[],
                self.dir.path().join("idp.log"),
            );
            self.underlay_servers.push(proc);
        }
        format!("http://{LAN_IP}:{PORT}/.well-known/jwks.json")
    }

    /// A Service selecting `app: <selector>` with the given ports, each
    /// `(name, port, appProtocol)` and targeting the same port on the
    /// pods; returns its VIP. For clients in the mesh: the kube-proxy
    /// stand-in (which knows only the ports of [`Cluster::service`]) does
    /// not learn of it.
    pub fn service_with_ports(
        &mut self,
        namespace: &str,
        name: &str,
        selector: &str,
        ports: &[(&str, u16, Option<&str>)],
    ) -> Ipv4Addr {
        let vip = Ipv4Addr::new(10, 96, 0, self.next_vip);
        self.next_vip += 1;
        let ports: String = ports
            .iter()
            .map(|(port_name, port, app)| {
                let app = app.map_or(String::new(), |a| format!(", appProtocol: {a}"));
                format!("  - {{name: {port_name}, port: {port}, targetPort: {port}{app}}}\n")
            })
            .collect();
        self.write_manifest(
            &format!("svc-{namespace}-{name}.yaml"),
            &format!(
                "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {namespace}\nspec:\n  clusterIP: {vip}\n  selector: {{app: {selector}}}\n  ports:\n{ports}"
            ),
        );
        vip
    }

    /// Writes (or replaces) a manifest a test supplies, e.g. a route.
    pub fn apply(&self, file: &str, yaml: &str) {
        self.write_manifest(file, yaml);
    }

    /// Removes a manifest written with [`Cluster::apply`].
    pub fn delete(&self, file: &str) {
        let path = self.manifests().join(file);
        std::fs::remove_file(&path).unwrap_or_else(|e| panic!("removing {}: {e}", path.display()));
    }

    /// A bootstrap token for `namespace/service_account`.
    fn workload_token(&self, namespace: &str, service_account: &str) -> String {
        let state = self.dir.path().join("istiod").display().to_string();
        super::sh(
            &self.bin.join("istiod-lite").display().to_string(),
            &[
                "token",
                "--state-dir",
                &state,
                "--namespace",
                namespace,
                "--service-account",
                service_account,
                "--ttl",
                "2h",
            ],
        )
        .trim()
        .to_string()
    }
}
