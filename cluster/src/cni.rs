//! Pod networking as a container runtime does it: the lexically first
//! network config list of the node's CNI directory, run plugin by plugin
//! (each with the `CNI_*` environment and the previous result as
//! `prevResult`), inside the node's network namespace; DEL in reverse.
//! Every plugin run is bounded.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// How long one plugin may run.
const PLUGIN_BOUND: Duration = Duration::from_secs(30);
/// The reference plugins from Debian's containernetworking-plugins.
pub const SYSTEM_PLUGINS: &str = "/usr/lib/cni";

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("no network config list (*.conflist) in {0}: the node's network is not ready")]
    NoConfig(PathBuf),
    #[error("reading {path}: {detail}")]
    BadConfig { path: PathBuf, detail: String },
    #[error("CNI plugin {0} not found in the node's plugin path {1}")]
    NoPlugin(String, String),
    #[error("CNI {command} by {plugin} failed: {detail}")]
    Plugin {
        command: String,
        plugin: String,
        detail: String,
    },
}

/// What the plugins are told about one pod sandbox.
pub struct Sandbox<'a> {
    pub container_id: &'a str,
    pub netns: &'a str,
    pub pod_name: &'a str,
    pub pod_namespace: &'a str,
    pub pod_uid: &'a str,
}

/// A node's network config list, read when a sandbox is made (a list
/// that changes after the node started is what the next pod gets).
pub struct NetworkConfigList {
    list: Value,
    launcher: Launcher,
    plugin_path: String,
}

/// How a plugin is started: `program args... <plugin>`. The node's is
/// `cluster enter` into its network namespace with its view of the
/// filesystem (its hostPaths bound where pods named them).
#[derive(Debug, Clone)]
pub struct Launcher {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl NetworkConfigList {
    /// The lexically first `*.conflist` in `dir`.
    pub fn load(dir: &Path, launcher: Launcher, plugin_path: &str) -> Result<Self, CniError> {
        let mut lists: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|_| CniError::NoConfig(dir.to_path_buf()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conflist"))
            .collect();
        lists.sort();
        let path = lists
            .first()
            .ok_or_else(|| CniError::NoConfig(dir.to_path_buf()))?;
        let bad = |detail: String| CniError::BadConfig {
            path: path.clone(),
            detail,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let list: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        if list["plugins"].as_array().is_none_or(|p| p.is_empty()) {
            return Err(bad("no plugins".into()));
        }
        Ok(Self {
            list,
            launcher,
            plugin_path: plugin_path.to_string(),
        })
    }

    /// ADD through the list (after the loopback network); the final
    /// result. A failed ADD is cleaned up with a DEL, as runtimes do.
    pub fn add(&self, sandbox: &Sandbox<'_>) -> Result<Value, CniError> {
        let lo = json!({"cniVersion": "1.0.0", "name": "lo", "type": "loopback"});
        self.invoke("ADD", sandbox, &lo, "lo")?;
        let mut prev: Option<Value> = None;
        for conf in self.plugin_configs(None) {
            let mut conf = conf;
            if let Some(p) = &prev {
                conf["prevResult"] = p.clone();
            }
            match self.invoke("ADD", sandbox, &conf, "eth0") {
                Ok(result) => prev = Some(result),
                Err(e) => {
                    self.del(sandbox, prev.as_ref());
                    return Err(e);
                }
            }
        }
        Ok(prev.unwrap_or(Value::Null))
    }

    /// DEL through the list in reverse; errors are logged, not returned,
    /// since the sandbox goes anyway.
    pub fn del(&self, sandbox: &Sandbox<'_>, cached: Option<&Value>) {
        for conf in self.plugin_configs(cached).into_iter().rev() {
            if let Err(e) = self.invoke("DEL", sandbox, &conf, "eth0") {
                tracing::warn!(error = %e, pod = sandbox.pod_name, "CNI DEL");
            }
        }
    }

    fn plugin_configs(&self, prev: Option<&Value>) -> Vec<Value> {
        let plugins = self.list["plugins"].as_array().cloned().unwrap_or_default();
        plugins
            .into_iter()
            .map(|mut conf| {
                conf["cniVersion"] = self.list["cniVersion"].clone();
                conf["name"] = self.list["name"].clone();
                if let Some(p) = prev {
                    conf["prevResult"] = p.clone();
                }
                conf
            })
            .collect()
    }

    fn invoke(
        &self,
        command: &str,
        sandbox: &Sandbox<'_>,
        conf: &Value,
        ifname: &str,
    ) -> Result<Value, CniError> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_string();
        let binary = self
            .plugin_path
            .split(':')
            .map(|d| Path::new(d).join(&plugin))
            .find(|p| p.exists())
            .ok_or_else(|| CniError::NoPlugin(plugin.clone(), self.plugin_path.clone()))?;
        let fail = |detail: String| CniError::Plugin {
            command: command.to_string(),
            plugin: plugin.clone(),
            detail,
        };
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            sandbox.pod_namespace, sandbox.pod_name, sandbox.container_id, sandbox.pod_uid
        );
        let mut child = Command::new(&self.launcher.program)
            .args(&self.launcher.args)
            .arg(&binary)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", sandbox.container_id)
            .env("CNI_NETNS", format!("/var/run/netns/{}", sandbox.netns))
            .env("CNI_IFNAME", ifname)
            .env("CNI_ARGS", args)
            .env("CNI_PATH", &self.plugin_path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(e.to_string()))?;
        let input = serde_json::to_vec(conf).expect("a JSON value serializes");
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&input).map_err(|e| fail(e.to_string()))?;
        }
        let start = Instant::now();
        while child.try_wait().map_err(|e| fail(e.to_string()))?.is_none() {
            if start.elapsed() > PLUGIN_BOUND {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no answer within {PLUGIN_BOUND:?}")));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            return Err(fail(format!(
                "{}: {} {}",
                out.status,
                stdout.trim(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        if stdout.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&stdout).map_err(|e| fail(format!("no JSON result ({e}): {stdout}")))
    }
}

/// The first IPv4 address of a CNI result.
pub fn first_ip(result: &Value) -> Option<std::net::Ipv4Addr> {
    result["ips"]
        .as_array()?
        .iter()
        .filter_map(|ip| ip["address"].as_str())
        .filter_map(|cidr| cidr.split('/').next()?.parse().ok())
        .next()
}
