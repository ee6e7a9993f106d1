//! In-pod mode: the node agent hands each enrolled pod to ztunnel over ZDS
//! with a handle to the pod's network namespace, and ztunnel serves the pod
//! from inside it (`../shared/spec/dataplane.md` §4).
//!
//! - [`client`]: the ZDS connection to the node agent (connect, hello,
//!   one Ack per request, reconnect with backoff).
//! - [`manager`]: what the requests mean: the snapshot, adds, keeps and
//!   deletes, retries of adds that failed, and readiness.
//! - [`pod`]: one pod's proxy: the 15001, 15006 and 15008 listeners bound
//!   inside the pod, and upstream sockets created there too.
//!
//! **Architecture Invariant:** every socket ztunnel creates for a pod lives
//! in that pod's namespace and carries the mesh mark, so the pod's
//! redirection captures the application's traffic and never ztunnel's own.

pub mod client;
pub mod manager;
pub mod pod;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::Serialize;

/// What ztunnel knows of a pod it was handed, by Kubernetes pod uid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PodState {
    pub name: String,
    pub namespace: String,
    pub service_account: String,
    pub state: ProxyState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProxyState {
    /// Listeners bound in the pod; traffic is served.
    Up,
    /// Starting failed; retried every few seconds. The text says why.
    Pending(String),
}

/// The pods of this ztunnel, for tests and the admin endpoint.
#[derive(Clone, Debug, Default)]
pub struct PodStates(Arc<Mutex<BTreeMap<String, PodState>>>);

impl PodStates {
    pub fn snapshot(&self) -> BTreeMap<String, PodState> {
        self.lock().clone()
    }

    /// Uids of the pods whose proxy is up.
    pub fn up(&self) -> Vec<String> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.state == ProxyState::Up)
            .map(|(uid, _)| uid.clone())
            .collect()
    }

    fn set(&self, uid: &str, state: PodState) {
        self.lock().insert(uid.to_string(), state);
    }

    fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PodState>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
