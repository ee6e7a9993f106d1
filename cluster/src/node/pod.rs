//! One pod on the node: its sandbox (a network namespace wired by the
//! node's CNI config, or the node's own for `hostNetwork`), its containers
//! as processes, its status, and its graceful deletion.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::sync::watch;

use super::registration::now_rfc3339;
use crate::cni::{self, NetworkConfigList, Sandbox};
use crate::config::{API_SERVICE_IP, Layout, Node};
use crate::host;

/// What every pod worker of the node shares.
pub struct Runtime {
    pub node: Node,
    pub layout: Layout,
}

impl Runtime {
    fn cni_dir(&self) -> PathBuf {
        self.layout.node_root(&self.node).join("etc/cni/net.d")
    }
    fn plugin_path(&self) -> String {
        let own = self.layout.node_root(&self.node).join("opt/cni/bin");
        format!("{}:{}", own.display(), cni::SYSTEM_PLUGINS)
    }
}

/// The pod's sandbox: where its containers run.
struct Sandboxed {
    netns: String,
    ip: String,
    /// The CNI chain's ADD result, given back on DEL; `None` for hostNetwork.
    cni: Option<(NetworkConfigList, Value)>,
}

struct Running {
    name: String,
    child: Child,
}

const TICK: Duration = Duration::from_millis(500);
/// A grace period longer than this is cut short (a local cluster).
const MAX_GRACE: Duration = Duration::from_secs(30);

/// Runs the pod until it is deleted.
pub async fn run(client: Client, runtime: Arc<Runtime>, mut updates: watch::Receiver<Option<Pod>>) {
    let Some(pod) = updates.borrow().clone() else {
        return;
    };
    let (ns, name) = (
        pod.metadata.namespace.clone().unwrap_or_default(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let sandbox = match sandbox_up(&runtime, &pod) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "pod sandbox not made");
            report(
                &pods,
                &name,
                json!({ "status": {
                    "phase": "Pending",
                    "conditions": [{ "type": "PodReadyToStartContainers", "status": "False",
                                     "reason": "SandboxFailed", "message": e }],
                }}),
            )
            .await;
            return;
        }
    };
    let mut running = start_containers(&runtime, &pod, &sandbox);
    let started = now_rfc3339();
    report(
        &pods,
        &name,
        running_status(&runtime, &sandbox, &running, &started),
    )
    .await;
    tracing::info!(pod = %format!("{ns}/{name}"), ip = %sandbox.ip, "pod running");

    let graceful = loop {
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() { break false; }
                match updates.borrow().clone() {
                    None => break false,
                    Some(p) if p.metadata.deletion_timestamp.is_some() => break true,
                    Some(_) => {}
                }
            }
            _ = tokio::time::sleep(TICK) => {
                // A container that exited is reported; restarts come later.
                let exited = running.iter_mut().any(|r| matches!(r.child.try_wait(), Ok(Some(_))));
                if exited {
                    report(&pods, &name, running_status(&runtime, &sandbox, &running, &started)).await;
                }
            }
        }
    };
    let grace = Duration::from_secs(
        updates
            .borrow()
            .as_ref()
            .and_then(|p| p.metadata.deletion_grace_period_seconds)
            .unwrap_or(30)
            .max(0) as u64,
    )
    .min(MAX_GRACE);
    stop_containers(&mut running, grace).await;
    sandbox_down(&pod, sandbox);
    if graceful {
        let uid = pod.metadata.uid.clone();
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid,
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = pods.delete(&name, &params).await {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "deleting the stopped pod");
        }
    }
    tracing::info!(pod = %format!("{ns}/{name}"), "pod stopped and removed");
}

fn uid8(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .unwrap_or_default()
        .chars()
        .take(8)
        .collect()
}

fn sandbox_up(runtime: &Runtime, pod: &Pod) -> Result<Sandboxed, String> {
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    if host_network {
        return Ok(Sandboxed {
            netns: runtime.node.netns.clone(),
            ip: runtime.node.ip.to_string(),
            cni: None,
        });
    }
    let netns = format!("{}-{}", runtime.node.netns, uid8(pod));
    host::ip(&["netns", "add", &netns]).map_err(|e| e.to_string())?;
    let list = NetworkConfigList::load(
        &runtime.cni_dir(),
        &runtime.node.netns,
        &runtime.plugin_path(),
    )
    .map_err(|e| e.to_string());
    let added = list.and_then(|list| {
        let result = list
            .add(&sandbox_of(pod, &netns))
            .map_err(|e| e.to_string())?;
        Ok((list, result))
    });
    match added {
        Ok((list, result)) => {
            let ip = cni::first_ip(&result).ok_or("the CNI result has no IPv4 address")?;
            Ok(Sandboxed {
                netns,
                ip: ip.to_string(),
                cni: Some((list, result)),
            })
        }
        Err(e) => {
            let _ = host::ip(&["netns", "del", &netns]);
            Err(e)
        }
    }
}

fn sandbox_of<'a>(pod: &'a Pod, netns: &'a str) -> Sandbox<'a> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    Sandbox {
        container_id: uid,
        netns,
        pod_name: pod.metadata.name.as_deref().unwrap_or_default(),
        pod_namespace: pod.metadata.namespace.as_deref().unwrap_or_default(),
        pod_uid: uid,
    }
}

fn sandbox_down(pod: &Pod, sandbox: Sandboxed) {
    if let Some((list, result)) = &sandbox.cni {
        list.del(&sandbox_of(pod, &sandbox.netns), Some(result));
        let _ = host::ip(&["netns", "del", &sandbox.netns]);
    }
}

fn log_dir(runtime: &Runtime, pod: &Pod) -> PathBuf {
    let m = &pod.metadata;
    runtime
        .layout
        .node_root(&runtime.node)
        .join("var/log/pods")
        .join(format!(
            "{}_{}_{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        ))
}

fn start_containers(runtime: &Runtime, pod: &Pod, sandbox: &Sandboxed) -> Vec<Running> {
    let containers = pod
        .spec
        .as_ref()
        .map(|s| s.containers.clone())
        .unwrap_or_default();
    let dir = log_dir(runtime, pod);
    let _ = std::fs::create_dir_all(&dir);
    containers
        .iter()
        .filter_map(|c| match start(pod, c, sandbox, &dir) {
            Ok(child) => Some(Running {
                name: c.name.clone(),
                child,
            }),
            Err(e) => {
                tracing::warn!(container = %c.name, error = %e, "container not started");
                None
            }
        })
        .collect()
}

/// The container's program: its `command`, else what its image runs
/// (the image table, [`super::images`]), then its `args`.
fn start(
    pod: &Pod,
    c: &Container,
    sandbox: &Sandboxed,
    logs: &std::path::Path,
) -> Result<Child, String> {
    let mut argv: Vec<String> = match &c.command {
        Some(cmd) if !cmd.is_empty() => cmd.clone(),
        _ => super::images::entrypoint(c.image.as_deref().unwrap_or_default())?,
    };
    argv.extend(c.args.clone().unwrap_or_default());
    let log =
        std::fs::File::create(logs.join(format!("{}.log", c.name))).map_err(|e| e.to_string())?;
    let err = log.try_clone().map_err(|e| e.to_string())?;
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{}", sandbox.netns))
        .arg("--")
        .args(&argv)
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .env("HOSTNAME", pod.metadata.name.as_deref().unwrap_or_default())
        .env("KUBERNETES_SERVICE_HOST", API_SERVICE_IP.to_string())
        .env("KUBERNETES_SERVICE_PORT", "443")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err);
    for var in c.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => pod.metadata.name.clone().unwrap_or_default(),
                Some("metadata.namespace") => pod.metadata.namespace.clone().unwrap_or_default(),
                Some("metadata.uid") => pod.metadata.uid.clone().unwrap_or_default(),
                Some("spec.nodeName") => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                Some("spec.serviceAccountName") => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_default(),
                Some("status.podIP") => sandbox.ip.clone(),
                _ => continue,
            },
            (None, None) => String::new(),
        };
        cmd.env(&var.name, value);
    }
    cmd.spawn().map_err(|e| format!("running {argv:?}: {e}"))
}

async fn stop_containers(running: &mut [Running], grace: Duration) {
    for r in running.iter() {
        let _ = kill(Pid::from_raw(r.child.id() as i32), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && running
            .iter_mut()
            .any(|r| matches!(r.child.try_wait(), Ok(None)))
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for r in running.iter_mut() {
        if matches!(r.child.try_wait(), Ok(None)) {
            let _ = r.child.kill();
        }
        let _ = r.child.wait();
    }
}

fn running_status(
    runtime: &Runtime,
    sandbox: &Sandboxed,
    running: &[Running],
    started: &str,
) -> Value {
    let statuses: Vec<Value> = running
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "ready": true, "started": true, "restartCount": 0,
                "image": "", "imageID": "",
                "state": { "running": { "startedAt": started } },
            })
        })
        .collect();
    let ready = if running.is_empty() { "False" } else { "True" };
    let condition =
        |t: &str, s: &str| json!({ "type": t, "status": s, "lastTransitionTime": started });
    json!({ "status": {
        "phase": "Running",
        "hostIP": runtime.node.ip.to_string(),
        "hostIPs": [{ "ip": runtime.node.ip.to_string() }],
        "podIP": sandbox.ip,
        "podIPs": [{ "ip": sandbox.ip }],
        "startTime": started,
        "conditions": [
            condition("PodReadyToStartContainers", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready),
            condition("Ready", ready),
        ],
        "containerStatuses": statuses,
    }})
}

async fn report(pods: &Api<Pod>, name: &str, status: Value) {
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
    {
        tracing::warn!(pod = name, error = %e, "pod status not reported");
    }
}
