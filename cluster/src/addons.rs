//! What `up` applies once the nodes are Ready, as kubeadm applies its
//! add-ons: cluster DNS (CoreDNS behind `kube-dns`), with the cluster's
//! own kubectl, then waits until it answers.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{Api, Client};

use crate::config::Layout;

pub const COREDNS: &str = include_str!("../addons/coredns.yaml");

/// `kubectl apply -f -` of `manifest` as the cluster's admin.
pub fn apply(layout: &Layout, manifest: &str) -> anyhow::Result<()> {
    let kubectl = layout.program("kubectl");
    let mut child = Command::new(&kubectl)
        .arg(format!(
            "--kubeconfig={}",
            layout.kubeconfig("admin").display()
        ))
        // A bound on every request to the API server.
        .args(["apply", "--request-timeout=30s", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", kubectl.display()))?;
    child
        .stdin
        .take()
        .context("kubectl's stdin")?
        .write_all(manifest.as_bytes())?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "kubectl apply: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Waits until the CoreDNS Deployment has an available replica.
pub async fn wait_dns(admin: &Client, bound: Duration) -> anyhow::Result<()> {
    let deployments: Api<Deployment> = Api::namespaced(admin.clone(), "kube-system");
    let start = Instant::now();
    loop {
        let available = deployments
            .get_opt("coredns")
            .await?
            .and_then(|d| d.status?.available_replicas)
            .unwrap_or(0);
        if available > 0 {
            return Ok(());
        }
        if start.elapsed() > bound {
            bail!("CoreDNS had no available replica within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::DNS_SERVICE_IP;

    #[test]
    fn the_dns_service_is_at_the_address_pods_are_given() {
        let service = COREDNS
            .split("\n---\n")
            .map(|doc| serde_yaml::from_str::<serde_json::Value>(doc).unwrap())
            .find(|doc| doc["kind"] == "Service")
            .expect("a Service");
        assert_eq!(service["metadata"]["name"], "kube-dns");
        assert_eq!(service["spec"]["clusterIP"], DNS_SERVICE_IP.to_string());
    }
}
