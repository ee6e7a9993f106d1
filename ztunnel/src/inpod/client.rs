//! The ZDS connection to the node agent: ztunnel connects (retrying with
//! backoff from 10 ms to 15 s), says hello, then answers every request with
//! exactly one Ack. A protocol error drops the connection and reconnects;
//! the pods' proxies keep running meanwhile. It first waits for the first
//! xDS answers, so a pod is never served by a ztunnel that does not yet
//! know the mesh.

use std::path::PathBuf;
use std::time::Duration;

use mesh_runtime::drain::DrainWatcher;
use mesh_zds::{Version, WorkloadRequest, ZdsError, ZdsHello, ZdsSocket};
use tracing::{debug, info, warn};

use super::manager::{Outcome, WorkloadManager};

const BACKOFF_START: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(15);
/// How often adds that failed are tried again.
const RETRY_PENDING: Duration = Duration::from_secs(5);

/// Runs until a drain starts, then drains every pod's proxy.
pub async fn run(mut manager: WorkloadManager, uds: PathBuf, drain: DrainWatcher) {
    // Pods are taken only once the mesh is known. While this ztunnel waits
    // (a control plane out of reach), its pods stay with the ztunnel that
    // has them, or fail closed if there is none.
    tokio::select! {
        _ = manager.mesh_known() => {}
        _ = drain.signaled() => return manager.shutdown().await,
    }
    let mut backoff = BACKOFF_START;
    let mut warned = false;
    loop {
        let connected = tokio::select! {
            c = ZdsSocket::connect(&uds) => c,
            _ = drain.signaled() => break,
        };
        let socket = match connected {
            Ok(s) => s,
            Err(e) => {
                if !warned {
                    warn!(socket = %uds.display(), error = %e, "cannot reach the node agent; retrying");
                    warned = true;
                } else {
                    debug!(socket = %uds.display(), error = %e, "node agent still unreachable");
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = drain.signaled() => break,
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_START;
        warned = false;
        info!(socket = %uds.display(), "connected to the node agent");
        let result = serve(&socket, &mut manager, &drain).await;
        manager.disconnected();
        match result {
            Ok(()) => break,
            Err(e) => warn!(error = %e, "ZDS connection ended; reconnecting"),
        }
    }
    manager.shutdown().await;
}

/// One connection. `Ok` only when a drain started.
async fn serve(
    socket: &ZdsSocket,
    manager: &mut WorkloadManager,
    drain: &DrainWatcher,
) -> Result<(), ZdsError> {
    socket
        .send(
            &ZdsHello {
                version: Version::V1 as i32,
            },
            None,
        )
        .await?;
    manager.connected();
    let mut retry = tokio::time::interval(RETRY_PENDING);
    retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            received = socket.recv_message::<WorkloadRequest>() => {
                let (request, fds) = received?;
                let described = mesh_zds::describe(&request);
                let outcome = manager.handle(request, fds);
                debug!(request = %described, ?outcome, "ZDS request");
                match outcome {
                    Outcome::Ack => socket.send(&mesh_zds::ack(Ok(())), None).await?,
                    Outcome::Nack(e) => socket.send(&mesh_zds::ack(Err(e)), None).await?,
                    Outcome::ProtocolError(e) => {
                        socket.send(&mesh_zds::ack(Err(e.clone())), None).await?;
                        return Err(ZdsError::Protocol(e));
                    }
                }
            }
            _ = retry.tick() => manager.retry_pending(),
            _ = drain.signaled() => return Ok(()),
        }
    }
}
