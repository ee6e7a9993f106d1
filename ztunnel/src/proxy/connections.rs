//! Inbound connections that passed authorization, tracked so that a policy
//! change can close the ones it no longer allows (`dataplane.md` §7.7).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use mesh_core::{ConnectionInfo, Decision, WorkloadUid};
use mesh_runtime::drain::DrainWatcher;
use tokio::sync::watch;
use tracing::info;

use crate::state::ProxyState;

struct Tracked {
    info: ConnectionInfo,
    destination: WorkloadUid,
    close: watch::Sender<bool>,
}

/// Every open, authorized inbound connection.
#[derive(Clone, Default)]
pub struct ConnectionManager {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Tracked>>,
}

/// Held by the connection's task; deregisters on drop.
pub struct ConnectionGuard {
    id: u64,
    manager: ConnectionManager,
    closed: watch::Receiver<bool>,
}

impl ConnectionGuard {
    pub fn is_revoked(&self) -> bool {
        *self.closed.borrow()
    }

    /// Resolves when a policy change has revoked this connection.
    pub async fn revoked(&mut self) {
        // An error means the manager is gone: nothing will revoke us.
        if self.closed.wait_for(|c| *c).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.manager.lock().remove(&self.id);
    }
}

impl ConnectionManager {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.inner.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(&self, info: ConnectionInfo, destination: WorkloadUid) -> ConnectionGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        self.lock().insert(
            id,
            Tracked {
                info,
                destination,
                close,
            },
        );
        ConnectionGuard {
            id,
            manager: self.clone(),
            closed,
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Re-decides every tracked connection and revokes the ones now denied
    /// (or whose destination workload is gone). Returns how many.
    pub fn recheck(&self, state: &ProxyState) -> usize {
        // Decide outside the lock: registrations and closes go on meanwhile.
        let open: Vec<(ConnectionInfo, WorkloadUid, watch::Sender<bool>)> = self
            .lock()
            .values()
            .filter(|t| !*t.close.borrow())
            .map(|t| (t.info.clone(), t.destination.clone(), t.close.clone()))
            .collect();
        let mut closed = 0;
        for (info, destination, close) in open {
            let reason = match state.authorize(&destination, &info) {
                Some(Decision::Allow) => continue,
                Some(Decision::Deny(reason)) => reason.to_string(),
                None => "the destination workload is gone".to_string(),
            };
            info!(target: "access", src_addr = %info.src, dst_addr = %info.dst,
                src_identity = ?info.src_identity.as_ref().map(ToString::to_string),
                %reason, "closing connection: policy changed (AuthorizationPolicyLateRejection)");
            let _ = close.send(true);
            closed += 1;
        }
        closed
    }

    /// Re-checks on every policy change until a drain starts.
    pub async fn watch_policies(self, state: Arc<ProxyState>, drain: DrainWatcher) {
        let mut changes = state.policy_changes();
        loop {
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                _ = drain.signaled() => return,
            }
            self.recheck(&state);
        }
    }
}
