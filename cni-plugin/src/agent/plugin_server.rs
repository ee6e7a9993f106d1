//! The unix socket the CNI plugin calls: one JSON event per connection, one
//! JSON reply back.

use std::path::Path;
use std::time::Duration;

use mesh_runtime::drain::DrainWatcher;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

use super::PluginRequest;
use crate::protocol::{AgentReply, PluginEvent};

/// A plugin event larger than this is not one.
const MAX_EVENT: usize = 64 * 1024;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Listens at `path`, replacing a stale socket from an earlier run.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_file(path);
    UnixListener::bind(path)
        .map_err(|e| anyhow::anyhow!("binding the plugin socket {}: {e}", path.display()))
}

pub(super) async fn serve(
    listener: UnixListener,
    events: mpsc::Sender<PluginRequest>,
    drain: DrainWatcher,
) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = drain.signaled() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                let events = events.clone();
                tokio::spawn(async move {
                    if let Err(e) = one(stream, events).await {
                        warn!(error = %e, "plugin request failed");
                    }
                });
            }
            Err(e) => {
                warn!(error = %e, "accepting a plugin connection failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn one(stream: UnixStream, events: mpsc::Sender<PluginRequest>) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read).take(MAX_EVENT as u64);
    tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| {
            mesh_core::wait::Wait::CniRequest.timed_out();
            anyhow::anyhow!("the plugin sent nothing within 5s")
        })??;
    let reply = match serde_json::from_str::<PluginEvent>(&line) {
        Ok(event) => {
            debug!(?event, "plugin event");
            let (tx, rx) = oneshot::channel();
            events.send((event, tx)).await?;
            rx.await.unwrap_or(AgentReply::Error {
                message: "the node agent is shutting down".into(),
            })
        }
        Err(e) => AgentReply::Error {
            message: format!("the node agent cannot read the plugin's request: {e}"),
        },
    };
    let mut out = serde_json::to_vec(&reply)?;
    out.push(b'\n');
    write.write_all(&out).await?;
    write.shutdown().await?;
    Ok(())
}
