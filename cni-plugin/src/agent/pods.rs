//! The agent's decisions: which pods of this node are enrolled (from the
//! model, with the labels' precedence), where their namespaces are, and
//! whether their capture is in place. Everything runs in one task, one
//! event at a time: plugin events, model changes and the reconcile tick.
//!
//! Capture order, as Istio's agent: ztunnel takes the pod first (its
//! listeners exist), then the rules go in, so no connection is redirected to
//! a port nobody listens on. Release is the reverse.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mesh_model::enrollment::{Enrollment, enrollment};
use mesh_model::{Model, ObjectMeta, Pod};
use mesh_netns::Netns;
use mesh_zds::WorkloadInfo;
use serde::Serialize;
use tracing::{info, warn};

use super::config::Config;
use super::discover;
use super::redirect::{RedirectionStatus, Redirector};
use super::zds::{Handoff, ZdsServer};
use crate::protocol::{AgentReply, Command, PluginEvent};

type PodKey = (String, String);

struct Captured {
    uid: String,
    netns: Arc<Netns>,
    /// The table as installed, to notice when someone changes it.
    rules: String,
}

/// What the status file shows for each pod.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub uid: String,
    pub captured: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Pods {
    config: Config,
    redirector: Redirector,
    model: Arc<Model>,
    zds: ZdsServer,
    /// Namespaces of pod sandboxes we were told about, enrolled or not.
    sandboxes: HashMap<PodKey, PathBuf>,
    captured: HashMap<PodKey, Captured>,
    /// Enrolled pods whose capture failed, with why (retried each tick).
    failed: BTreeMap<PodKey, String>,
}

impl Pods {
    pub fn new(config: Config, redirector: Redirector, zds: ZdsServer) -> Self {
        Self {
            config,
            redirector,
            model: Arc::default(),
            zds,
            sandboxes: HashMap::new(),
            captured: HashMap::new(),
            failed: BTreeMap::new(),
        }
    }

    pub fn node(&self) -> &str {
        &self.config.node_name
    }

    pub fn redirection(&self) -> RedirectionStatus {
        self.redirector.status()
    }

    pub fn status(&self) -> BTreeMap<String, PodStatus> {
        let mut out = BTreeMap::new();
        for ((ns, name), c) in &self.captured {
            out.insert(
                format!("{ns}/{name}"),
                PodStatus {
                    uid: c.uid.clone(),
                    captured: true,
                    error: None,
                },
            );
        }
        for ((ns, name), e) in &self.failed {
            let uid = self.pod(ns, name).map(uid_of).unwrap_or_default();
            out.insert(
                format!("{ns}/{name}"),
                PodStatus {
                    uid,
                    captured: false,
                    error: Some(e.clone()),
                },
            );
        }
        out
    }

    /// A CNI plugin event.
    /// Handles the plugin's request, answering an ADD by `answer_by` (the
    /// plugin gives up after its own timeout, failing the pod closed).
    pub async fn plugin_event(
        &mut self,
        event: PluginEvent,
        answer_by: tokio::time::Instant,
    ) -> AgentReply {
        let key = (event.pod_namespace.clone(), event.pod_name.clone());
        match event.command {
            Command::Add => {
                self.sandboxes.insert(key.clone(), event.netns.clone());
                let enrolled = self.enrollment(&key);
                if !enrolled.is_ambient() {
                    return AgentReply::NotEnrolled;
                }
                let uid = event
                    .pod_uid
                    .clone()
                    .or_else(|| self.pod(&key.0, &key.1).map(uid_of))
                    .unwrap_or_else(|| name(&key));
                match self
                    .capture(&key, &uid, &event.netns, Origin::NewSandbox { answer_by })
                    .await
                {
                    Ok(()) => AgentReply::Captured,
                    Err(message) => {
                        self.failed.insert(key, message.clone());
                        AgentReply::Error { message }
                    }
                }
            }
            Command::Del => {
                self.release(&key).await;
                self.sandboxes.remove(&key);
                self.failed.remove(&key);
                AgentReply::NotEnrolled
            }
            Command::Check => match self.captured.get(&key) {
                Some(c) => match self.redirector.listing(&c.netns) {
                    Ok(Some(now)) if now == c.rules => AgentReply::Captured,
                    Ok(_) => AgentReply::Error {
                        message: "the pod's redirection rules are missing or changed".into(),
                    },
                    Err(e) => AgentReply::Error {
                        message: e.to_string(),
                    },
                },
                None if self.enrollment(&key).is_ambient() => AgentReply::Error {
                    message: self
                        .failed
                        .get(&key)
                        .cloned()
                        .unwrap_or_else(|| "the pod is enrolled but not captured".into()),
                },
                None => AgentReply::NotEnrolled,
            },
        }
    }

    /// A new model: capture newly enrolled pods, release the others.
    pub async fn model_changed(&mut self, model: Arc<Model>) {
        self.model = model;
        self.reconcile().await;
    }

    /// Brings captures in line with the model and repairs rules that were
    /// changed or flushed.
    pub async fn reconcile(&mut self) {
        let desired = self.desired();
        // Release what is no longer wanted.
        let unwanted: Vec<PodKey> = self
            .captured
            .keys()
            .filter(|k| !desired.contains_key(*k))
            .cloned()
            .collect();
        for key in unwanted {
            info!(pod = %name(&key), "pod is no longer enrolled; releasing it");
            self.release(&key).await;
        }
        self.failed.retain(|k, _| desired.contains_key(k));
        // Repair what drifted.
        for (key, c) in self.captured.iter_mut() {
            match self.redirector.listing(&c.netns) {
                Ok(Some(now)) if now == c.rules => {}
                Ok(_) => {
                    warn!(pod = %name(key), "redirection rules missing or changed; putting them back");
                    match self.redirector.install(&c.netns) {
                        Ok(rules) => c.rules = rules,
                        Err(e) => warn!(error = %e, "repairing the rules failed"),
                    }
                }
                Err(e) => {
                    warn!(pod = %name(key), error = %e, "cannot read the pod's rules")
                }
            }
        }
        // Capture what is wanted and not yet captured.
        let missing: Vec<(PodKey, String, Option<IpAddr>)> = desired
            .into_iter()
            .filter(|(k, _)| !self.captured.contains_key(k))
            .map(|(k, (uid, ip))| (k, uid, ip))
            .collect();
        if missing.is_empty() {
            return;
        }
        let mut found = None;
        for (key, uid, ip) in missing {
            let path = match self.sandboxes.get(&key) {
                Some(p) => Some(p.clone()),
                None => {
                    let by_ip = found
                        .get_or_insert_with(|| discover::namespaces_by_ip(&self.config.netns_dir));
                    ip.and_then(|ip| by_ip.get(&ip).cloned())
                }
            };
            let Some(path) = path else {
                // Not started on this node yet, or its IP is not known yet.
                continue;
            };
            match self.capture(&key, &uid, &path, Origin::RunningPod).await {
                Ok(()) => {}
                Err(e) => {
                    if self.failed.get(&key) != Some(&e) {
                        warn!(pod = %name(&key), error = %e, "capture failed; retrying");
                    }
                    self.failed.insert(key, e);
                }
            }
        }
    }

    /// The enrolled pods of this node: key → (uid, IP).
    fn desired(&self) -> BTreeMap<PodKey, (String, Option<IpAddr>)> {
        let mut out = BTreeMap::new();
        for ((ns, name), pod) in &self.model.pods {
            if pod.spec.node_name.as_deref() != Some(self.config.node_name.as_str()) {
                continue;
            }
            let e = enrollment(
                pod,
                self.model.namespace_labels(ns),
                &self.config.excluded_namespaces,
            );
            if e.is_ambient() {
                let ip = pod.status.pod_ip.as_deref().and_then(|s| s.parse().ok());
                out.insert((ns.clone(), name.clone()), (uid_of(pod), ip));
            }
        }
        out
    }

    fn pod(&self, ns: &str, name: &str) -> Option<&Pod> {
        self.model.pods.get(&(ns.to_string(), name.to_string()))
    }

    /// Enrollment of a pod; one the model does not know yet is judged by its
    /// namespace's labels alone.
    fn enrollment(&self, key: &PodKey) -> Enrollment {
        let bare;
        let pod = match self.pod(&key.0, &key.1) {
            Some(p) => p,
            None => {
                bare = Pod {
                    metadata: ObjectMeta {
                        name: key.1.clone(),
                        namespace: Some(key.0.clone()),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                &bare
            }
        };
        enrollment(
            pod,
            self.model.namespace_labels(&key.0),
            &self.config.excluded_namespaces,
        )
    }

    async fn capture(
        &mut self,
        key: &PodKey,
        uid: &str,
        path: &Path,
        origin: Origin,
    ) -> Result<(), String> {
        let netns = Arc::new(Netns::open(path).map_err(|e| e.to_string())?);
        if let Some(c) = self.captured.get(key) {
            // The same sandbox: nothing to do. A new sandbox (or uid) for
            // the same pod: the old capture goes, the new one is made.
            if c.uid == uid && c.netns.id() == netns.id() {
                self.failed.remove(key);
                return Ok(());
            }
            self.release(key).await;
        }
        let sa = self
            .pod(&key.0, &key.1)
            .and_then(|p| p.spec.service_account_name.clone())
            .unwrap_or_else(|| "default".into());
        let handoff = Handoff {
            info: WorkloadInfo {
                name: key.1.clone(),
                namespace: key.0.clone(),
                service_account: sa,
            },
            netns: netns.clone(),
        };
        let handed_over = match origin {
            // Past the plugin's patience the pod fails anyway: say so while
            // the plugin still listens, and let ztunnel go of it.
            Origin::NewSandbox { answer_by } => {
                tokio::time::timeout_at(answer_by, self.zds.add(uid, handoff))
                    .await
                    .unwrap_or_else(|_| {
                        Err("ztunnel did not take the pod within the CNI plugin's time".into())
                    })
            }
            Origin::RunningPod => self.zds.add(uid, handoff).await,
        };
        if let Err(e) = handed_over {
            // Rules already in place: the agent restarted and is adopting a
            // pod it captured before. It stays captured even if no ztunnel
            // takes it right now; the next snapshot hands it over.
            let adopting = matches!(self.redirector.listing(&netns), Ok(Some(_)));
            // A running pod newly enrolled while no ztunnel is connected is
            // captured all the same, as Istio's agent does (a "partial
            // add"): its connections are refused until a ztunnel takes it
            // from the snapshot, instead of leaving the mesh's pod in
            // plaintext. A new sandbox fails instead: the kubelet retries
            // it, and no application runs before its capture is served.
            let partial = origin == Origin::RunningPod && self.zds.connected() == 0;
            if partial {
                warn!(pod = %name(key), error = %e,
                    "capturing an enrolled pod while no ztunnel is connected; its connections are refused until ztunnel takes it from the snapshot");
            } else if adopting {
                warn!(pod = %name(key), error = %e, "adopting a captured pod; ztunnel gets it with the next snapshot");
            } else {
                // Not captured: no rules, and every ztunnel lets it go
                // (one that NACKed keeps it pending otherwise).
                self.zds.del(uid).await;
                return Err(e);
            }
        }
        let rules = match self.redirector.install(&netns) {
            Ok(rules) => {
                info!(pod = %name(key), uid, "pod captured");
                rules
            }
            // A capture an earlier agent left in place keeps working:
            // removing it would send the pod's traffic out in plaintext.
            Err(e) => match self.redirector.listing(&netns) {
                Ok(Some(rules)) => {
                    warn!(pod = %name(key), error = %e,
                        "cannot renew the capture; keeping the one in place");
                    rules
                }
                _ => {
                    let _ = self.redirector.remove(&netns);
                    self.zds.del(uid).await;
                    if self.captured.is_empty() {
                        self.redirector.idle();
                    }
                    return Err(format!("installing the redirection: {e}"));
                }
            },
        };
        self.captured.insert(
            key.clone(),
            Captured {
                uid: uid.to_string(),
                netns,
                rules,
            },
        );
        // Whichever path captured it (a CNI ADD or a reconcile), an earlier
        // failure is over: left behind, it would mark the pod not captured.
        self.failed.remove(key);
        Ok(())
    }

    async fn release(&mut self, key: &PodKey) {
        let Some(c) = self.captured.remove(key) else {
            return;
        };
        if let Err(e) = self.redirector.remove(&c.netns) {
            warn!(pod = %name(key), error = %e, "removing the redirection failed");
        }
        self.zds.del(&c.uid).await;
        if self.captured.is_empty() {
            self.redirector.idle();
        }
        info!(pod = %name(key), uid = c.uid, "pod released");
    }
}

/// How a pod came to be captured.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// A CNI ADD: the sandbox is new and its application not started; the
    /// plugin waits for the answer until `answer_by`.
    NewSandbox { answer_by: tokio::time::Instant },
    /// A reconcile: the pod runs already and has just been enrolled (or
    /// the agent restarted).
    RunningPod,
}

/// `namespace/name`, for logs.
fn name(key: &PodKey) -> String {
    format!("{}/{}", key.0, key.1)
}

/// The uid ZDS names a pod by: Kubernetes' when set, else namespace/name.
fn uid_of(pod: &Pod) -> String {
    pod.metadata.uid.clone().unwrap_or_else(|| {
        format!(
            "{}/{}",
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name
        )
    })
}
