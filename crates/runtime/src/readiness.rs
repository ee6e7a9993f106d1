//! Readiness as a set of pending tasks, each a guard that marks itself done
//! when dropped, so no code path can forget to report.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Ready {
    pending: Arc<Mutex<BTreeSet<String>>>,
    /// Woken each time a task completes.
    done: Arc<tokio::sync::Notify>,
}

/// Blocks readiness until dropped.
#[must_use = "readiness is reported when this guard is dropped"]
pub struct BlockReady {
    name: String,
    parent: Ready,
}

impl Ready {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a task that must complete before the process is ready.
    pub fn register_task(&self, name: &str) -> BlockReady {
        self.lock().insert(name.to_string());
        BlockReady {
            name: name.to_string(),
            parent: self.clone(),
        }
    }

    pub fn pending(&self) -> Vec<String> {
        self.lock().iter().cloned().collect()
    }

    pub fn is_ready(&self) -> bool {
        self.lock().is_empty()
    }

    /// Returns once no pending task's name starts with `prefix` (at once if
    /// none does), e.g. to hold back work that needs the first xDS answers.
    pub async fn tasks_done(&self, prefix: &str) {
        loop {
            let done = self.done.notified();
            tokio::pin!(done);
            // Registered before looking, so a completion in between is seen.
            done.as_mut().enable();
            if !self.lock().iter().any(|t| t.starts_with(prefix)) {
                return;
            }
            done.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<String>> {
        // Single insert/remove critical sections; a poisoned set is still consistent.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for BlockReady {
    fn drop(&mut self) {
        self.parent.lock().remove(&self.name);
        self.parent.done.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_when_all_guards_drop() {
        let r = Ready::new();
        let a = r.register_task("proxy");
        let b = r.register_task("state manager");
        assert_eq!(r.pending(), vec!["proxy", "state manager"]);
        drop(a);
        assert!(!r.is_ready());
        drop(b);
        assert!(r.is_ready());
    }

    #[tokio::test]
    async fn tasks_done_waits_only_for_matching_tasks() {
        let r = Ready::new();
        let xds = r.register_task("xds workloads");
        let _other = r.register_task("workload proxy manager");
        let waiting = tokio::spawn({
            let r = r.clone();
            async move { r.tasks_done("xds ").await }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "returned while an xds task was pending"
        );
        drop(xds);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiting)
            .await
            .expect("still waiting after the xds task completed")
            .unwrap();
        // Nothing matching is pending: at once.
        r.tasks_done("xds ").await;
    }
}
