//! The containers running on this node, as the kubelet endpoint needs
//! them: how each one's process was started, so that `kubectl exec` runs
//! a command the same way (the pod's network namespace, the container's
//! mounts, working directory and environment) and `kubectl port-forward`
//! finds the pod's network namespace.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

/// A container by namespace, pod and container name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ContainerRef {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

/// How a container's process was started.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The pod's network namespace.
    pub netns: PathBuf,
    /// The arguments of `cluster enter`, up to and including `--`: the
    /// program and its arguments follow.
    pub enter: Vec<String>,
    /// The container's environment.
    pub env: Vec<(String, String)>,
}

#[derive(Default)]
pub struct Running {
    containers: Mutex<HashMap<ContainerRef, Launch>>,
}

impl Running {
    pub fn started(&self, container: ContainerRef, launch: Launch) {
        self.lock().insert(container, launch);
    }

    pub fn stopped(&self, container: &ContainerRef) {
        self.lock().remove(container);
    }

    pub fn container(&self, container: &ContainerRef) -> Option<Launch> {
        self.lock().get(container).cloned()
    }

    /// Any running container of the pod (they share its network namespace).
    pub fn pod(&self, namespace: &str, pod: &str) -> Option<Launch> {
        self.lock()
            .iter()
            .find(|(c, _)| c.namespace == namespace && c.pod == pod)
            .map(|(_, l)| l.clone())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerRef, Launch>> {
        // A panic elsewhere leaves the map itself whole.
        self.containers.lock().unwrap_or_else(|e| e.into_inner())
    }
}
