//! The ZDS server ztunnel connects to (`../shared/spec/dataplane.md` §4):
//! on each connection it reads the hello, sends the snapshot of captured
//! pods (an Add with the namespace descriptor for each), then SnapshotSent.
//! Later adds go to the most recently connected ztunnel, deletes to all.
//! Every request waits for its Ack (5 s) before the next is sent. A ztunnel
//! that disconnects leaves the list at once.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mesh_netns::Netns;
use mesh_runtime::drain::DrainWatcher;
use mesh_zds::{
    AddWorkload, DelWorkload, SnapshotSent, WorkloadInfo, WorkloadRequest, WorkloadResponse,
    ZdsError, ZdsHello, ZdsListener, ZdsSocket, workload_request::Payload, workload_response,
};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// A pod as ztunnel is told about it.
#[derive(Clone)]
pub struct Handoff {
    pub info: WorkloadInfo,
    pub netns: Arc<Netns>,
}

struct Job {
    request: WorkloadRequest,
    netns: Option<Arc<Netns>>,
    reply: Option<oneshot::Sender<Result<(), String>>>,
}

struct Connection {
    id: u64,
    jobs: mpsc::UnboundedSender<Job>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    connections: Vec<Connection>,
    /// Every captured pod, by uid: the snapshot a new ztunnel receives.
    captured: BTreeMap<String, Handoff>,
}

/// The agent's side of ZDS.
#[derive(Clone)]
pub struct ZdsServer {
    inner: Arc<Mutex<Inner>>,
    /// Snapshots wait until the agent knows its pods (after a restart, the
    /// first reconcile adopts the pods already captured); an early, empty
    /// snapshot would make ztunnel drop every pod.
    open: Arc<tokio::sync::watch::Sender<bool>>,
}

impl Default for ZdsServer {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            open: Arc::new(tokio::sync::watch::channel(false).0),
        }
    }
}

impl ZdsServer {
    /// Lets snapshots go out: the agent has reconciled once.
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// How many ztunnels are connected.
    pub fn connected(&self) -> usize {
        self.lock().connections.len()
    }

    /// Hands a pod to the newest ztunnel and waits for its Ack. The pod is
    /// part of every later snapshot even if this fails, so a ztunnel that
    /// connects later takes it.
    pub async fn add(&self, uid: &str, pod: Handoff) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        {
            let mut inner = self.lock();
            inner.captured.insert(uid.to_string(), pod.clone());
            let Some(newest) = inner.connections.last() else {
                return Err("ztunnel is not connected to the node agent".into());
            };
            let job = Job {
                request: add_request(uid, &pod),
                netns: Some(pod.netns),
                reply: Some(tx),
            };
            if newest.jobs.send(job).is_err() {
                return Err("the connection to ztunnel just closed".into());
            }
        }
        rx.await
            .unwrap_or_else(|_| Err("the connection to ztunnel closed before it answered".into()))
    }

    /// Tells every ztunnel to release a pod. Best effort: a ztunnel that
    /// misses it drops the pod at its next snapshot.
    pub async fn del(&self, uid: &str) {
        let mut replies = Vec::new();
        {
            let mut inner = self.lock();
            inner.captured.remove(uid);
            for c in &inner.connections {
                let (tx, rx) = oneshot::channel();
                let job = Job {
                    request: WorkloadRequest {
                        payload: Some(Payload::Del(DelWorkload { uid: uid.into() })),
                    },
                    netns: None,
                    reply: Some(tx),
                };
                if c.jobs.send(job).is_ok() {
                    replies.push(rx);
                }
            }
        }
        for r in replies {
            if let Ok(Err(e)) = r.await {
                warn!(uid, error = %e, "ztunnel refused to release a pod");
            }
        }
    }

    /// Listens at `path` (replacing a stale socket).
    pub fn listen(path: &Path) -> Result<ZdsListener, ZdsError> {
        let listener = ZdsListener::bind(path)?;
        info!(socket = %path.display(), "waiting for ztunnel");
        Ok(listener)
    }

    /// Accepts ztunnels until a drain starts.
    pub async fn serve(self, listener: ZdsListener, drain: DrainWatcher) {
        loop {
            let socket = tokio::select! {
                s = listener.accept() => s,
                _ = drain.signaled() => return,
            };
            match socket {
                Ok(socket) => {
                    let server = self.clone();
                    tokio::spawn(async move { server.connection(socket).await });
                }
                Err(e) => {
                    warn!(error = %e, "accepting a ZDS connection failed");
                    // At most a few accepts a second, as Istio's agent.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    async fn connection(self, socket: ZdsSocket) {
        let hello = tokio::time::timeout(ACK_TIMEOUT, socket.recv_message::<ZdsHello>()).await;
        match hello {
            Ok(Ok((h, fds))) if fds.is_empty() && h.version == mesh_zds::Version::V1 as i32 => {}
            Ok(Ok((h, _))) => {
                warn!(
                    version = h.version,
                    "ztunnel sent an unexpected hello; closing"
                );
                return;
            }
            Ok(Err(e)) => {
                warn!(error = %e, "reading ztunnel's hello");
                return;
            }
            Err(_) => {
                mesh_core::wait::Wait::ZdsAck.timed_out();
                warn!("ztunnel sent no hello within 5s; closing");
                return;
            }
        }
        let mut open = self.open.subscribe();
        if open.wait_for(|o| *o).await.is_err() {
            return;
        }
        let (tx, mut rx) = mpsc::unbounded_channel();
        let id = {
            // Queue the snapshot and register in one step, so no add can
            // slip between them.
            let mut inner = self.lock();
            for (uid, pod) in &inner.captured {
                let _ = tx.send(Job {
                    request: add_request(uid, pod),
                    netns: Some(pod.netns.clone()),
                    reply: None,
                });
            }
            let _ = tx.send(Job {
                request: WorkloadRequest {
                    payload: Some(Payload::SnapshotSent(SnapshotSent {})),
                },
                netns: None,
                reply: None,
            });
            inner.next_id += 1;
            let id = inner.next_id;
            inner.connections.push(Connection { id, jobs: tx });
            info!(
                pods = inner.captured.len(),
                "ztunnel connected; sending the snapshot"
            );
            id
        };
        loop {
            let job = tokio::select! {
                job = rx.recv() => match job {
                    Some(job) => job,
                    None => break,
                },
                // ztunnel speaks only when asked, so anything it sends now
                // is its end (a replaced ztunnel exiting): the connection
                // leaves the list at once, not at the next pod event.
                gone = socket.recv() => {
                    match gone {
                        Err(ZdsError::Closed) => info!("ztunnel disconnected"),
                        Err(e) => warn!(error = %e, "ZDS connection to ztunnel lost"),
                        Ok(_) => warn!("ztunnel sent a message nobody asked for; closing"),
                    }
                    break;
                }
            };
            let described = mesh_zds::describe(&job.request);
            match exchange(&socket, &job).await {
                Ok(result) => {
                    if let Err(e) = &result {
                        warn!(request = %described, error = %e, "ztunnel refused");
                    } else {
                        debug!(request = %described, "ztunnel acknowledged");
                    }
                    if let Some(reply) = job.reply {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    warn!(request = %described, error = %e, "ZDS connection to ztunnel lost");
                    if let Some(reply) = job.reply {
                        let _ = reply.send(Err(format!("ztunnel connection lost: {e}")));
                    }
                    break;
                }
            }
        }
        self.lock().connections.retain(|c| c.id != id);
        // Jobs still queued are failed by dropping their reply senders.
        rx.close();
        while let Ok(job) = rx.try_recv() {
            if let Some(reply) = job.reply {
                let _ = reply.send(Err("ztunnel connection lost".into()));
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn add_request(uid: &str, pod: &Handoff) -> WorkloadRequest {
    WorkloadRequest {
        payload: Some(Payload::Add(AddWorkload {
            uid: uid.into(),
            workload_info: Some(pod.info.clone()),
        })),
    }
}

/// Sends one request and reads its Ack. The outer error is the transport's;
/// the inner is ztunnel's NACK text.
async fn exchange(socket: &ZdsSocket, job: &Job) -> Result<Result<(), String>, ZdsError> {
    let fd = job.netns.as_ref().map(|n| n.as_fd());
    tokio::time::timeout(ACK_TIMEOUT, socket.send(&job.request, fd))
        .await
        .map_err(|_| {
            mesh_core::wait::Wait::ZdsAck.timed_out();
            ZdsError::Protocol("ztunnel did not take the request within 5s".into())
        })??;
    let (response, fds) =
        tokio::time::timeout(ACK_TIMEOUT, socket.recv_message::<WorkloadResponse>())
            .await
            .map_err(|_| {
                mesh_core::wait::Wait::ZdsAck.timed_out();
                ZdsError::Protocol("ztunnel did not answer within 5s".into())
            })??;
    if !fds.is_empty() {
        return Err(ZdsError::Protocol(
            "ztunnel sent a descriptor with its Ack".into(),
        ));
    }
    match response.payload {
        Some(workload_response::Payload::Ack(ack)) if ack.error.is_empty() => Ok(Ok(())),
        Some(workload_response::Payload::Ack(ack)) => Ok(Err(ack.error)),
        None => Err(ZdsError::Protocol(
            "ztunnel sent a response without an Ack".into(),
        )),
    }
}
