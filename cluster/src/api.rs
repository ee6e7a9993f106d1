//! Talking to the cluster's API server: a client for a kubeconfig, and
//! the waits `up` makes (the server ready, the nodes Ready), each bounded.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::ListParams;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("reading the kubeconfig {path}: {detail}")]
    Kubeconfig { path: String, detail: String },
    #[error("{what} within {waited:?}; last seen: {last}")]
    Timeout {
        what: String,
        waited: Duration,
        last: String,
    },
    #[error("the API server refused {what}")]
    Request {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// A client authenticated as the kubeconfig's user.
pub async fn client(kubeconfig: &Path) -> Result<Client, ApiError> {
    let bad = |detail: String| ApiError::Kubeconfig {
        path: kubeconfig.display().to_string(),
        detail,
    };
    let file = Kubeconfig::read_from(kubeconfig).map_err(|e| bad(e.to_string()))?;
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .map_err(|e| bad(e.to_string()))?;
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// Waits until the API server's `/readyz` says ok.
pub async fn wait_ready(client: &Client, bound: Duration) -> Result<(), ApiError> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < bound {
        let request = http::Request::get("/readyz")
            .body(Vec::new())
            .expect("a static request is well formed");
        match client.request_text(request).await {
            Ok(text) if text.trim() == "ok" => return Ok(()),
            Ok(text) => last = text,
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(ApiError::Timeout {
        what: "the API server was not ready".into(),
        waited: bound,
        last,
    })
}

/// Whether a node's Ready condition is True.
pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The nodes' names with whether each is Ready.
pub async fn nodes(client: &Client) -> Result<Vec<(String, bool)>, ApiError> {
    let list = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| ApiError::Request {
            what: "listing nodes".into(),
            source,
        })?;
    Ok(list
        .items
        .iter()
        .map(|n| (n.metadata.name.clone().unwrap_or_default(), is_ready(n)))
        .collect())
}

/// Waits until `names` are all registered and Ready.
pub async fn wait_nodes_ready(
    client: &Client,
    names: &[String],
    bound: Duration,
) -> Result<(), ApiError> {
    let start = Instant::now();
    let mut last = String::from("no nodes yet");
    while start.elapsed() < bound {
        match nodes(client).await {
            Ok(seen) => {
                let ready = names
                    .iter()
                    .all(|name| seen.iter().any(|(n, ready)| n == name && *ready));
                if ready {
                    return Ok(());
                }
                last = format!("{seen:?}");
            }
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(ApiError::Timeout {
        what: format!("the nodes {names:?} were not all Ready"),
        waited: bound,
        last,
    })
}
