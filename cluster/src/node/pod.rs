//! One pod on the node: its sandbox (a network namespace wired by the
//! node's CNI config, or the node's own for `hostNetwork`), its containers
//! as processes, its status, and its graceful deletion.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, Client};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::container::{ContainerState, Place};
use super::registration::now_rfc3339;
use super::running::Running;
use super::volumes::{Paths, Volumes};
use crate::cni::{self, NetworkConfigList, Sandbox};
use crate::config::{Layout, Node};
use crate::host;

/// What every pod worker of the node shares.
pub struct Runtime {
    pub node: Node,
    pub layout: Layout,
    /// `--token-refresh`: rotate projected tokens at least this often.
    pub token_refresh: Option<Duration>,
    /// The `cluster` binary, which starts containers (`cluster enter`).
    pub program: PathBuf,
    /// The containers running, shared with the kubelet endpoint.
    pub running: Arc<Running>,
}

impl Runtime {
    fn cni_dir(&self) -> PathBuf {
        self.layout.node_root(&self.node).join("etc/cni/net.d")
    }
    /// Plugins run in the node's namespace with the node's view of the
    /// filesystem (`filesystem.rs`).
    fn launcher(&self) -> cni::Launcher {
        let netns = std::path::Path::new("/var/run/netns").join(&self.node.netns);
        cni::Launcher {
            program: self.program.clone(),
            args: super::enter::args(&netns, &super::filesystem::binds(), "/", &[]),
        }
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
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let sandbox = match sandbox_up(&runtime, &pod) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "pod sandbox not made");
            let status = json!({ "status": {
                "phase": "Pending",
                "conditions": [{ "type": "PodReadyToStartContainers", "status": "False",
                                 "reason": "SandboxFailed", "message": e }],
            }});
            report(&pods, &name, &status).await;
            return;
        }
    };
    let logs = log_dir(&runtime, &pod);
    let _ = std::fs::create_dir_all(&logs);
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec
        .restart_policy
        .clone()
        .unwrap_or_else(|| "Always".into());
    let mut containers: Vec<ContainerState> = spec
        .containers
        .iter()
        .cloned()
        .map(ContainerState::new)
        .collect();
    let started = now_rfc3339();
    let mut reported = Value::Null;
    tracing::info!(pod = %format!("{ns}/{name}"), ip = %sandbox.ip, "pod sandbox ready");
    let node_root = runtime.layout.node_root(&runtime.node);
    let mount_points = runtime.layout.mount_points();
    let paths = Paths {
        node_root: &node_root,
        mount_points: &mount_points,
    };
    let mut volumes: Option<Volumes> = None;
    let host_ip = runtime.node.ip.to_string();
    let mut volume_error = String::new();

    let graceful = loop {
        match &mut volumes {
            Some(v) => v.refresh_tokens(&client).await,
            None => match Volumes::make(&client, &paths, &pod, runtime.token_refresh).await {
                Ok(v) => volumes = Some(v),
                Err(e) => {
                    if e != volume_error {
                        tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "volumes not made; retrying");
                    }
                    for c in &mut containers {
                        c.waiting_for("ContainerCreating", &e);
                    }
                    volume_error = e;
                }
            },
        }
        if let Some(volumes) = &volumes {
            let place = Place {
                pod: &pod,
                netns: &sandbox.netns,
                ip: &sandbox.ip,
                logs: &logs,
                node_netns: &runtime.node.netns,
                host_ip: &host_ip,
                client: &client,
                volumes,
                program: &runtime.program,
                cluster_bin: &runtime.layout.bin,
                mount_points: &mount_points,
                running: &runtime.running,
            };
            for c in &mut containers {
                c.tick(&place, &policy).await;
            }
        }
        let status = pod_status(&runtime, &sandbox, &containers, &started);
        if status != reported {
            report(&pods, &name, &status).await;
            reported = status;
        }
        tokio::select! {
            changed = updates.changed() => {
                if changed.is_err() { break false; }
                match updates.borrow().clone() {
                    None => break false,
                    Some(p) if p.metadata.deletion_timestamp.is_some() => break true,
                    Some(_) => {}
                }
            }
            _ = tokio::time::sleep(TICK) => {}
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
    for c in &mut containers {
        c.stop(grace, &runtime.running, &pod).await;
    }
    sandbox_down(&pod, sandbox);
    let _ = std::fs::remove_dir_all(paths.pod_dir(&pod));
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
        runtime.launcher(),
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

fn pod_status(
    runtime: &Runtime,
    sandbox: &Sandboxed,
    containers: &[ContainerState],
    started: &str,
) -> Value {
    let finished: Vec<i32> = containers.iter().filter_map(|c| c.finished()).collect();
    let phase = if !containers.is_empty() && finished.len() == containers.len() {
        if finished.iter().all(|code| *code == 0) {
            "Succeeded"
        } else {
            "Failed"
        }
    } else {
        "Running"
    };
    let ready = !containers.is_empty() && containers.iter().all(|c| c.ready());
    let ready = if ready { "True" } else { "False" };
    // A condition's transition time is the pod's start: good enough for
    // `kubectl wait`, which reads the status only.
    let condition =
        |t: &str, s: &str| json!({ "type": t, "status": s, "lastTransitionTime": started });
    json!({ "status": {
        "phase": phase,
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
        "containerStatuses": containers.iter().map(ContainerState::status).collect::<Vec<_>>(),
    }})
}

async fn report(pods: &Api<Pod>, name: &str, status: &Value) {
    if let Err(e) = pods
        .patch_status(name, &PatchParams::default(), &Patch::Merge(status))
        .await
    {
        tracing::warn!(pod = name, error = %e, "pod status not reported");
    }
}
