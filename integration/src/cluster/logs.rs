//! A failed cluster test keeps its components' logs (istiod-lite, every
//! ztunnel and node agent, waypoints, pods) and the cluster's manifests in
//! a folder under `target/e2e-logs/`, and the failure names that folder:
//! a panic hook adds the line to the panic message of any test thread that
//! owns a live cluster. A test that passes keeps nothing.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::Once;

thread_local! {
    /// The kept-logs folders of the clusters this thread owns.
    static LIVE: RefCell<Vec<PathBuf>> = const { RefCell::new(Vec::new()) };
}

/// Where a cluster's logs go if its test fails: `<target>/e2e-logs/<test
/// name>-<prefix>` (a test thread is named after its test).
pub fn kept_dir(target: &Path, prefix: &str) -> PathBuf {
    let thread = std::thread::current();
    let test: String = thread
        .name()
        .unwrap_or("cluster")
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    target.join("e2e-logs").join(format!("{test}-{prefix}"))
}

/// Registers a live cluster's folder with this thread's panic message.
pub fn register(dir: &Path) {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            for dir in live() {
                eprintln!(
                    "cluster logs (istiod-lite, ztunnels, node agents, waypoints, pods) and manifests kept in {}",
                    dir.display()
                );
            }
        }));
    });
    LIVE.with(|l| l.borrow_mut().push(dir.to_path_buf()));
}

/// The cluster is gone: its folder no longer belongs in panic messages.
pub fn unregister(dir: &Path) {
    LIVE.with(|l| l.borrow_mut().retain(|d| d != dir));
}

/// The folders of the clusters this thread owns.
fn live() -> Vec<PathBuf> {
    LIVE.try_with(|l| l.borrow().clone()).unwrap_or_default()
}

/// Whether this thread owns a cluster, whose logs are kept on failure (so
/// its processes need not print theirs).
pub fn kept_by_a_cluster() -> bool {
    !live().is_empty()
}

/// Copies every regular file under `from` (logs, manifests, certificates,
/// status) to `to`, keeping relative paths; sockets and links are left.
pub fn keep(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            keep(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

/// The last `n` lines of a log, for a failure's short summary.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("[... {start} earlier lines in the kept log]\n"));
    }
    for l in &lines[start..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}
