//! Which identities run on which node: the fact that lets a node proxy ask
//! for another workload's certificate.

use std::collections::HashMap;
use std::sync::RwLock;

/// Answers "does at least one pod with identity ns/sa run on this node?".
pub trait NodePods: Send + Sync + 'static {
    fn identity_on_node(&self, node: &str, namespace: &str, service_account: &str) -> bool;
}

/// A count of running pods per (node, namespace, service account), kept up
/// to date by whichever source watches pods.
#[derive(Debug, Default)]
pub struct PodIndex {
    counts: RwLock<HashMap<(String, String, String), usize>>,
}

impl PodIndex {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add_pod(&self, node: &str, namespace: &str, service_account: &str) {
        let mut counts = self.counts.write().unwrap_or_else(|e| e.into_inner());
        *counts
            .entry((node.into(), namespace.into(), service_account.into()))
            .or_default() += 1;
    }

    pub fn remove_pod(&self, node: &str, namespace: &str, service_account: &str) {
        let mut counts = self.counts.write().unwrap_or_else(|e| e.into_inner());
        let key = (
            node.to_string(),
            namespace.to_string(),
            service_account.to_string(),
        );
        if let Some(n) = counts.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&key);
            }
        }
    }
}

impl NodePods for PodIndex {
    fn identity_on_node(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        let counts = self.counts.read().unwrap_or_else(|e| e.into_inner());
        counts.contains_key(&(node.into(), namespace.into(), service_account.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_pods_per_node() {
        let idx = PodIndex::new();
        idx.add_pod("a", "default", "sleep");
        idx.add_pod("a", "default", "sleep");
        assert!(idx.identity_on_node("a", "default", "sleep"));
        assert!(!idx.identity_on_node("b", "default", "sleep"));
        idx.remove_pod("a", "default", "sleep");
        assert!(idx.identity_on_node("a", "default", "sleep"));
        idx.remove_pod("a", "default", "sleep");
        assert!(!idx.identity_on_node("a", "default", "sleep"));
    }
}
