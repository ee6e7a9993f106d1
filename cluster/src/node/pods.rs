//! The pods bound to this node: one worker per pod, fed the pod's latest
//! object by a watch on `spec.nodeName`, as the kubelet's pod workers are.

use std::collections::HashMap;
use std::sync::Arc;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Api, Client};
use tokio::sync::watch;

use super::pod::{self, Runtime};

/// Runs the node's pods until aborted.
pub async fn follow(client: Client, runtime: Arc<Runtime>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let config = watcher::Config::default().fields(&format!("spec.nodeName={}", runtime.node.name));
    let stream = watcher::watcher(pods, config).default_backoff();
    futures::pin_mut!(stream);
    let mut workers: HashMap<String, watch::Sender<Option<Pod>>> = HashMap::new();
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "watching the node's pods");
                continue;
            }
        };
        match event {
            Event::Apply(pod) | Event::InitApply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                // A worker that ended (pod deleted) is not started again.
                workers.retain(|_, tx| !tx.is_closed());
                match workers.get(&uid) {
                    Some(tx) => {
                        let _ = tx.send(Some(pod));
                    }
                    None if pod.metadata.deletion_timestamp.is_none() => {
                        let (tx, rx) = watch::channel(Some(pod));
                        tokio::spawn(pod::run(client.clone(), runtime.clone(), rx));
                        workers.insert(uid, tx);
                    }
                    None => {}
                }
            }
            Event::Delete(pod) => {
                if let Some(tx) = pod.metadata.uid.as_ref().and_then(|u| workers.get(u)) {
                    // Gone from the API (a forced deletion): stop at once.
                    let _ = tx.send(None);
                }
            }
            Event::Init | Event::InitDone => {}
        }
    }
}
