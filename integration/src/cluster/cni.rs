//! Pod networking set up exactly as a container runtime does it: a network
//! config list (`bridge` with `host-local` IPAM, then our chained
//! `mesh-cni`) run plugin by plugin, each with the `CNI_*` environment and
//! the previous plugin's result as `prevResult`; DEL runs in reverse. The
//! plugins run in the node's network namespace, as under a real kubelet.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

/// How one pod sandbox is described to the plugins.
/// The interface every pod gets (CNI_IFNAME).
pub const POD_INTERFACE: &str = "eth0";

pub struct Sandbox<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
}

/// One node's network config list.
pub struct NetworkConfig {
    pub node_netns: String,
    pub plugin_path: String,
    pub list: Value,
}

impl NetworkConfig {
    /// The list a node of the cluster gets: a bridge `cni0` that is the pods'
    /// gateway on `subnet`, then the mesh plugin.
    pub fn for_node(
        node_netns: &str,
        subnet: &str,
        ipam_dir: &Path,
        agent_socket: &Path,
        manifest_dir: &Path,
        bin_dir: &Path,
    ) -> Self {
        let list = json!({
            "cniVersion": "1.0.0",
            "name": "meshnet",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": "cni0",
                    "isGateway": true,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": subnet}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                        "dataDir": ipam_dir,
                    }
                },
                {
                    "type": "mesh-cni",
                    "agentSocket": agent_socket,
                    "manifestDir": manifest_dir,
                }
            ]
        });
        Self {
            node_netns: node_netns.to_string(),
            plugin_path: format!("{}:{}", super::CNI_PLUGIN_DIR, bin_dir.display()),
            list,
        }
    }

    /// ADD through the list; the final result, or the failing plugin's error
    /// (after a DEL, as runtimes clean up a failed ADD).
    pub fn add(&self, sandbox: &Sandbox<'_>) -> Result<Value, String> {
        // The loopback network, which runtimes set up for every pod.
        self.invoke(
            "loopback",
            "ADD",
            sandbox,
            &json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"}),
            "lo",
        )?;
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let mut conf = plugin.clone();
            conf["cniVersion"] = self.list["cniVersion"].clone();
            conf["name"] = self.list["name"].clone();
            if let Some(p) = &prev {
                conf["prevResult"] = p.clone();
            }
            let kind = conf["type"].as_str().unwrap_or_default().to_string();
            match self.invoke(&kind, "ADD", sandbox, &conf, POD_INTERFACE) {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    self.del(sandbox, prev.as_ref());
                    return Err(e);
                }
            }
        }
        prev.ok_or_else(|| "the network config list has no plugins".into())
    }

    /// DEL through the list in reverse, with the cached result. Errors are
    /// ignored, as runtimes retry DEL until it succeeds.
    pub fn del(&self, sandbox: &Sandbox<'_>, cached: Option<&Value>) {
        for plugin in self.plugins().iter().rev() {
            let mut conf = plugin.clone();
            conf["cniVersion"] = self.list["cniVersion"].clone();
            conf["name"] = self.list["name"].clone();
            if let Some(p) = cached {
                conf["prevResult"] = p.clone();
            }
            let kind = conf["type"].as_str().unwrap_or_default().to_string();
            let _ = self.invoke(&kind, "DEL", sandbox, &conf, POD_INTERFACE);
        }
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().cloned().unwrap_or_default()
    }

    fn find(&self, kind: &str) -> Result<PathBuf, String> {
        self.plugin_path
            .split(':')
            .map(|d| Path::new(d).join(kind))
            .find(|p| p.exists())
            .ok_or_else(|| format!("CNI plugin {kind} not found in {}", self.plugin_path))
    }

    fn invoke(
        &self,
        kind: &str,
        command: &str,
        sandbox: &Sandbox<'_>,
        conf: &Value,
        ifname: &str,
    ) -> Result<Value, String> {
        let binary = self.find(kind)?;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            sandbox.pod_namespace, sandbox.pod_name, sandbox.container_id, sandbox.pod_uid
        );
        let netns_path = format!("/var/run/netns/{}", sandbox.netns);
        let env = [
            ("CNI_COMMAND", command),
            ("CNI_CONTAINERID", sandbox.container_id),
            ("CNI_NETNS", netns_path.as_str()),
            ("CNI_IFNAME", ifname),
            ("CNI_ARGS", args.as_str()),
            ("CNI_PATH", self.plugin_path.as_str()),
        ];
        let stdin = serde_json::to_vec(conf).expect("config serializes");
        let mut cmd = std::process::Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.node_netns))
            .arg("--")
            .arg(&binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().map_err(|e| format!("running {kind}: {e}"))?;
        {
            use std::io::Write;
            let mut pipe = child.stdin.take().expect("stdin");
            pipe.write_all(&stdin)
                .map_err(|e| format!("feeding {kind}: {e}"))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("waiting for {kind}: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(format!(
                "CNI {command} by {kind} failed ({}): {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout)
            .map_err(|e| format!("{kind} printed no JSON result ({e}): {stdout}"))
    }
}

/// The first IPv4 address in a CNI result.
pub fn first_ip(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .next()
}
