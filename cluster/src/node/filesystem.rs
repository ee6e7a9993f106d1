//! The node's own view of the filesystem: each hostPath a pod of the node
//! asks for lives under the node's root, and whatever the node runs
//! outside a pod (the CNI plugins above all) runs with those paths bound
//! where the pods named them, in a mount namespace of its own (`cluster
//! enter`). So a plugin finds the node agent's socket where the agent's
//! hostPath put it, as on a real node, and the machine sees none of it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::mounts::{Bind, make_mount_points};

/// hostPath → its directory under the node's root.
static EXPOSED: Mutex<BTreeMap<PathBuf, PathBuf>> = Mutex::new(BTreeMap::new());

/// Adds `source` (under the node's root) at `at` to the node's view; the
/// mount point, if the machine lacks it, is made and recorded in `record`.
pub fn expose(source: &Path, at: &Path, record: &Path) -> Result<(), String> {
    let mut exposed = EXPOSED.lock().unwrap_or_else(|e| e.into_inner());
    if exposed.contains_key(at) {
        return Ok(());
    }
    let bind = Bind {
        source: source.to_path_buf(),
        target: at.to_path_buf(),
        read_only: false,
    };
    make_mount_points(std::slice::from_ref(&bind), record)?;
    exposed.insert(at.to_path_buf(), source.to_path_buf());
    Ok(())
}

/// The node's view, as binds for `cluster enter`.
pub fn binds() -> Vec<Bind> {
    EXPOSED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(at, source)| Bind {
            source: source.clone(),
            target: at.clone(),
            read_only: false,
        })
        .collect()
}
