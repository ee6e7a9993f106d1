//! Open connections. Inbound ones that passed authorization are tracked so
//! that a policy change can close the ones it no longer allows
//! (`dataplane.md` §7.7); outbound ones only so that the admin endpoint can
//! list them (`ztunnel-config connections`).

use std::collections::HashMap;
use std::net::SocketAddr;
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
    protocol: Protocol,
    close: watch::Sender<bool>,
}

/// How a connection travels between ztunnel and its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    Hbone,
    Tcp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Hbone => "HBONE",
            Protocol::Tcp => "TCP",
        }
    }
}

/// One open connection as the admin endpoint shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenConnection {
    /// The workload on this node the connection belongs to.
    pub workload: WorkloadUid,
    pub inbound: bool,
    /// The client's address.
    pub src: SocketAddr,
    /// Where the client aimed (a Service VIP, a pod).
    pub original_dst: SocketAddr,
    /// Where ztunnel delivered or tunnelled it (a pod, a waypoint's HBONE
    /// port).
    pub actual_dst: SocketAddr,
    pub protocol: Protocol,
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
    outbound: Mutex<HashMap<u64, OpenConnection>>,
}

/// Held by an outbound connection's task; deregisters on drop.
pub struct OutboundGuard {
    id: u64,
    manager: ConnectionManager,
}

impl Drop for OutboundGuard {
    fn drop(&mut self) {
        self.manager.lock_outbound().remove(&self.id);
    }
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

    fn lock_outbound(&self) -> std::sync::MutexGuard<'_, HashMap<u64, OpenConnection>> {
        self.inner
            .outbound
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    pub fn register(
        &self,
        info: ConnectionInfo,
        destination: WorkloadUid,
        protocol: Protocol,
    ) -> ConnectionGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let (close, closed) = watch::channel(false);
        self.lock().insert(
            id,
            Tracked {
                info,
                destination,
                protocol,
                close,
            },
        );
        ConnectionGuard {
            id,
            manager: self.clone(),
            closed,
        }
    }

    /// Records an outbound connection (`connection.inbound` is ignored).
    pub fn track_outbound(&self, connection: OpenConnection) -> OutboundGuard {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        self.lock_outbound().insert(
            id,
            OpenConnection {
                inbound: false,
                ..connection
            },
        );
        OutboundGuard {
            id,
            manager: self.clone(),
        }
    }

    /// Every open connection, inbound (authorized and not revoked) and
    /// outbound, in no particular order.
    pub fn snapshot(&self) -> Vec<OpenConnection> {
        let mut all: Vec<OpenConnection> = self
            .lock()
            .values()
            .filter(|t| !*t.close.borrow())
            .map(|t| OpenConnection {
                workload: t.destination.clone(),
                inbound: true,
                src: t.info.src,
                original_dst: t.info.dst,
                actual_dst: t.info.dst,
                protocol: t.protocol,
            })
            .collect();
        all.extend(self.lock_outbound().values().cloned());
        all
    }

    /// Open inbound connections (the ones policy changes re-check).
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
