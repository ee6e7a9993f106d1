//! What ZDS requests mean (`../shared/spec/dataplane.md` §4.3): the
//! snapshot and its reconciliation, adds (idempotent for the same
//! namespace, a replacement for a new one), keeps, deletes, adds that failed
//! and are retried, and the readiness task "workload proxy manager".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use mesh_netns::Netns;
use mesh_runtime::drain::DrainMode;
use mesh_runtime::readiness::{BlockReady, Ready};
use mesh_zds::{WorkloadInfo, WorkloadRequest, workload_request::Payload};
use tracing::{info, warn};

use super::pod::PodProxy;
use super::{PodState, PodStates, ProxyState};
use crate::config::InpodConfig;
use crate::metrics::WorkloadManagerMetrics;
use crate::proxy::ProxyInputs;

pub const READINESS_TASK: &str = "workload proxy manager";

/// The answer to one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Ack,
    /// The request was understood and failed (an add to be retried).
    Nack(String),
    /// The agent broke the protocol: NACK, then drop the connection.
    ProtocolError(String),
}

struct Pending {
    info: WorkloadInfo,
    netns: Netns,
}

pub struct WorkloadManager {
    base: Arc<ProxyInputs>,
    config: InpodConfig,
    proxies: HashMap<String, PodProxy>,
    pending: BTreeMap<String, Pending>,
    /// The uids named so far while a snapshot is being received.
    snapshot: Option<HashSet<String>>,
    states: PodStates,
    ready: Ready,
    not_ready: Option<BlockReady>,
    metrics: Arc<WorkloadManagerMetrics>,
}

impl WorkloadManager {
    pub fn new(
        base: Arc<ProxyInputs>,
        config: InpodConfig,
        ready: &Ready,
        metrics: Arc<WorkloadManagerMetrics>,
    ) -> Self {
        Self {
            base,
            config,
            proxies: HashMap::new(),
            pending: BTreeMap::new(),
            snapshot: None,
            states: PodStates::default(),
            ready: ready.clone(),
            not_ready: Some(ready.register_task(READINESS_TASK)),
            metrics,
        }
    }

    pub fn states(&self) -> PodStates {
        self.states.clone()
    }

    /// Returns once the first xDS answers are in (at once without xDS). A
    /// pod served before that would find no workloads and no policies.
    pub async fn mesh_known(&self) {
        self.ready
            .tasks_done(mesh_xds::client::READINESS_PREFIX)
            .await;
    }

    /// A new connection: a snapshot follows. Running proxies keep running.
    pub fn connected(&mut self) {
        self.snapshot = Some(HashSet::new());
        self.update_readiness();
    }

    pub fn disconnected(&mut self) {
        self.snapshot = None;
        if self.not_ready.is_none() {
            self.not_ready = Some(self.ready.register_task(READINESS_TASK));
        }
    }

    pub fn handle(&mut self, request: WorkloadRequest, fds: Vec<OwnedFd>) -> Outcome {
        let outcome = match request.payload {
            Some(Payload::Add(add)) => {
                let Some(info) = add.workload_info else {
                    return Outcome::ProtocolError(format!(
                        "AddWorkload {} has no workload_info",
                        add.uid
                    ));
                };
                let fd = match <[OwnedFd; 1]>::try_from(fds) {
                    Ok([fd]) => fd,
                    Err(fds) => {
                        return Outcome::ProtocolError(format!(
                            "AddWorkload {} must carry exactly one namespace descriptor, got {}",
                            add.uid,
                            fds.len()
                        ));
                    }
                };
                self.add(add.uid, info, fd)
            }
            _ if !fds.is_empty() => {
                return Outcome::ProtocolError(
                    "only AddWorkload may carry a descriptor".to_string(),
                );
            }
            Some(Payload::Keep(keep)) => match &mut self.snapshot {
                Some(seen) => {
                    seen.insert(keep.uid);
                    Outcome::Ack
                }
                None => {
                    return Outcome::ProtocolError(format!(
                        "KeepWorkload {} outside a snapshot",
                        keep.uid
                    ));
                }
            },
            Some(Payload::Del(del)) => {
                if let Some(seen) = &mut self.snapshot {
                    seen.remove(&del.uid);
                }
                self.remove(&del.uid, DrainMode::Immediate);
                Outcome::Ack
            }
            Some(Payload::SnapshotSent(_)) => match self.snapshot.take() {
                Some(seen) => {
                    let stale: Vec<String> = self
                        .proxies
                        .keys()
                        .chain(self.pending.keys())
                        .filter(|uid| !seen.contains(*uid))
                        .cloned()
                        .collect();
                    for uid in stale {
                        info!(uid, "pod not in the agent's snapshot; releasing it");
                        self.remove(&uid, DrainMode::Immediate);
                    }
                    Outcome::Ack
                }
                None => return Outcome::ProtocolError("a second SnapshotSent".to_string()),
            },
            None => return Outcome::ProtocolError("a request without a payload".to_string()),
        };
        self.update_readiness();
        outcome
    }

    fn add(&mut self, uid: String, info: WorkloadInfo, fd: OwnedFd) -> Outcome {
        if let Some(seen) = &mut self.snapshot {
            seen.insert(uid.clone());
        }
        let pod = format!("{}/{}", info.namespace, info.name);
        let netns = match Netns::from_fd(fd, format!("network namespace of pod {pod}")) {
            Ok(n) => n,
            Err(e) => return Outcome::Nack(e.to_string()),
        };
        if let Some(running) = self.proxies.get(&uid) {
            if running.netns == netns.id() {
                return Outcome::Ack;
            }
            info!(uid, pod, "pod sandbox was recreated; replacing its proxy");
            self.remove(&uid, DrainMode::Immediate);
        }
        self.pending.remove(&uid);
        match self.start(&uid, &info, netns.try_clone()) {
            Ok(()) => Outcome::Ack,
            Err(e) => {
                warn!(uid, pod, error = %e, "cannot start the pod's proxy; retrying");
                self.states
                    .set(&uid, state(&info, ProxyState::Pending(e.clone())));
                self.pending.insert(uid, Pending { info, netns });
                Outcome::Nack(e)
            }
        }
    }

    fn start(
        &mut self,
        uid: &str,
        info: &WorkloadInfo,
        netns: std::io::Result<Netns>,
    ) -> Result<(), String> {
        let netns = netns.map_err(|e| format!("duplicating the namespace handle: {e}"))?;
        let pod = format!("{}/{}", info.namespace, info.name);
        let proxy =
            PodProxy::start(&self.base, &self.config, &pod, netns).map_err(|e| e.to_string())?;
        // Warm the pod's certificate before its first connection (the
        // default trust domain; xDS corrects it at first use if it differs).
        if let Ok(id) = mesh_core::Identity::new(
            mesh_core::TrustDomain::default(),
            &info.namespace,
            &info.service_account,
        ) {
            self.base.certs.prefetch(&id);
        }
        self.proxies.insert(uid.to_string(), proxy);
        self.states.set(uid, state(info, ProxyState::Up));
        self.metrics.started.inc();
        Ok(())
    }

    /// Starts the proxies whose start failed earlier.
    pub fn retry_pending(&mut self) {
        let uids: Vec<String> = self.pending.keys().cloned().collect();
        for uid in uids {
            let Some(p) = self.pending.get(&uid) else {
                continue;
            };
            let (info, netns) = (p.info.clone(), p.netns.try_clone());
            match self.start(&uid, &info, netns) {
                Ok(()) => {
                    info!(uid, "pod proxy started on retry");
                    self.pending.remove(&uid);
                }
                Err(e) => self.states.set(&uid, state(&info, ProxyState::Pending(e))),
            }
        }
        self.update_readiness();
    }

    fn remove(&mut self, uid: &str, mode: DrainMode) {
        self.pending.remove(uid);
        self.states.remove(uid);
        if let Some(proxy) = self.proxies.remove(uid) {
            info!(uid, ?mode, "releasing pod");
            self.metrics.stopped.inc();
            tokio::spawn(proxy.stop(mode));
        }
    }

    fn update_readiness(&mut self) {
        self.metrics.active.set(self.proxies.len() as i64);
        self.metrics.pending.set(self.pending.len() as i64);
        let settled = self.snapshot.is_none() && self.pending.is_empty();
        if settled {
            self.not_ready = None;
        } else if self.not_ready.is_none() {
            self.not_ready = Some(self.ready.register_task(READINESS_TASK));
        }
    }

    /// Drains every pod's proxy (process shutdown).
    pub async fn shutdown(mut self) {
        self.metrics.stopped.inc_by(self.proxies.len() as u64);
        self.metrics.active.set(0);
        let stops: Vec<_> = self
            .proxies
            .drain()
            .map(|(_, p)| p.stop(DrainMode::Graceful))
            .collect();
        futures::future::join_all(stops).await;
    }
}

fn state(info: &WorkloadInfo, state: ProxyState) -> PodState {
    PodState {
        name: info.name.clone(),
        namespace: info.namespace.clone(),
        service_account: info.service_account.clone(),
        state,
    }
}
