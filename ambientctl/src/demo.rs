//! `ambientctl demo up|down|check|exec`: the local mesh in network
//! namespaces (`local-mesh`, built next to `ambientctl`).
//!
//! `up` starts `local-mesh` in the background (its own process group, so
//! the shell's Ctrl-C does not reach it) with its output in
//! `/run/ambient-demo.log`, and returns once it has published itself in
//! `/run/ambient-demo/mesh.json`. `down` sends it SIGTERM and waits until it
//! is gone (it removes its namespaces and processes on the way out).
//! `check` runs the [`tour`] and exits non-zero at the first step that
//! misbehaves, bringing the mesh up (and down again) if none was running.
//! `exec POD -- CMD` runs a command in a pod's network namespace, with the
//! demo's Service names resolvable (`web.demo`).

pub mod tour;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::local::{DEMO_DIR, LocalError, LocalMesh};

/// Where `local-mesh`'s own output goes (outside [`DEMO_DIR`], which it
/// recreates on start).
pub const LOG: &str = "/run/ambient-demo.log";
const START_TIMEOUT: Duration = Duration::from_secs(300);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error(
        "{0} not found: the local mesh is the `local-mesh` binary built next to ambientctl \
         (run `cargo build` in the repository, then use target/debug/ambientctl)"
    )]
    NoBinary(PathBuf),
    #[error("starting {bin}: {source}")]
    Spawn {
        bin: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the local mesh exited while starting ({status}); its log ({LOG}) ends with:\n{tail}")]
    Exited { status: String, tail: String },
    #[error("the local mesh did not come up within {0:?}; see {LOG}")]
    StartTimeout(Duration),
    #[error("the local mesh (pid {0}) is still running {STOP_TIMEOUT:?} after SIGTERM")]
    StopTimeout(u32),
    #[error(transparent)]
    Local(#[from] LocalError),
    #[error("running {what}: {source}")]
    Exec {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the tour failed at step {step} ({title}): {problem}")]
    Tour {
        step: usize,
        title: String,
        problem: String,
    },
}

/// Whether `pid` runs. A zombie does not: `check` starts the mesh as its
/// own child and nobody reaps it before `check` exits.
fn alive(pid: u32) -> bool {
    let exists = i32::try_from(pid).is_ok_and(|p| kill(Pid::from_raw(p), None).is_ok());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z'))
    });
    exists && !zombie
}

/// The running local mesh, if there is one (a description left by one that
/// died is not).
pub fn running() -> Option<LocalMesh> {
    LocalMesh::load(Path::new(DEMO_DIR))
        .ok()
        .filter(|m| alive(m.pid))
}

/// `local-mesh`, next to this executable.
fn local_mesh_bin() -> Result<PathBuf, DemoError> {
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("local-mesh")))
        .unwrap_or_else(|| PathBuf::from("local-mesh"));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(DemoError::NoBinary(bin))
    }
}

/// Starts the local mesh unless one runs; returns once it is up.
pub fn up(out: &mut String) -> Result<LocalMesh, DemoError> {
    if let Some(mesh) = running() {
        let _ = writeln!(
            out,
            "✅ the local mesh is already up (pid {}); `ambientctl demo down` stops it",
            mesh.pid
        );
        return Ok(mesh);
    }
    let bin = local_mesh_bin()?;
    let log = std::fs::File::create(LOG).map_err(|source| DemoError::Spawn {
        bin: LOG.into(),
        source,
    })?;
    let log_err = log.try_clone().map_err(|source| DemoError::Spawn {
        bin: LOG.into(),
        source,
    })?;
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(&bin)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .process_group(0)
        .spawn()
        .map_err(|source| DemoError::Spawn {
            bin: bin.clone(),
            source,
        })?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(mesh) = LocalMesh::load(Path::new(DEMO_DIR))
            && mesh.pid == child.id()
        {
            let _ = writeln!(
                out,
                "✅ the local mesh is up: {} nodes, pods {} (pid {}, log {LOG})\n   \
                 Stop it with `ambientctl demo down`.",
                mesh.ztunnels.len(),
                mesh.pods
                    .iter()
                    .map(|p| format!("{}.{}", p.name, p.namespace))
                    .collect::<Vec<_>>()
                    .join(", "),
                mesh.pid,
            );
            return Ok(mesh);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(DemoError::Exited {
                status: status.to_string(),
                tail: log_tail(),
            });
        }
        if Instant::now() > deadline {
            return Err(DemoError::StartTimeout(START_TIMEOUT));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn log_tail() -> String {
    let text = std::fs::read_to_string(LOG).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Stops the local mesh, if one runs, and waits until it is gone.
pub fn down(out: &mut String) -> Result<(), DemoError> {
    let Some(mesh) = running() else {
        let _ = writeln!(out, "✅ no local mesh is running");
        return Ok(());
    };
    if let Ok(pid) = i32::try_from(mesh.pid) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while alive(mesh.pid) {
        if Instant::now() > deadline {
            return Err(DemoError::StopTimeout(mesh.pid));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = writeln!(out, "✅ the local mesh is down");
    Ok(())
}

/// Runs the tour; brings a mesh up for it (and down after) if none runs.
/// Progress is printed as it goes.
pub fn check() -> Result<(), DemoError> {
    let started = running().is_none();
    let mut out = String::new();
    let result = up(&mut out).and_then(|_| {
        print!("{out}");
        tour::run(
            tour::local::STEPS,
            &|| Ok(Box::new(LocalMesh::load(Path::new(DEMO_DIR))?)),
            tour::Target::Local,
        )
    });
    if started {
        let mut out = String::new();
        let stopped = down(&mut out);
        print!("{out}");
        stopped?;
    }
    result?;
    println!("\n✔ every step of the tour behaved");
    Ok(())
}

/// Runs the tour on the Kubernetes cluster of `kubeconfig` (or
/// `KUBECONFIG`), where the mesh is installed and the demo's apps deployed
/// (`cargo xtask demo` does both). Progress is printed as it goes.
pub fn check_cluster(kubeconfig: Option<&Path>) -> Result<(), DemoError> {
    tour::run(
        tour::cluster::STEPS,
        &|| Ok(Box::new(tour::cluster::ClusterPods::read(kubeconfig)?)),
        tour::Target::Cluster(kubeconfig),
    )?;
    println!("\n✔ every step of the tour behaved");
    Ok(())
}

/// Replaces this process with `CMD` run in the pod's network namespace.
pub fn exec(pod: &str, command: &[String]) -> Result<(), DemoError> {
    let mesh =
        running().ok_or_else(|| LocalError::NotRunning(Path::new(DEMO_DIR).join("mesh.json")))?;
    let pod = mesh.pod(pod, tour::NAMESPACE)?;
    use std::os::unix::process::CommandExt;
    // `ip netns exec` also mounts /etc/netns/<netns>/hosts, where the demo
    // writes its Service names.
    let source = Command::new("ip")
        .args(["netns", "exec", &pod.netns])
        .args(command)
        .exec();
    Err(DemoError::Exec {
        what: format!("ip netns exec {} {}", pod.netns, command.join(" ")),
        source,
    })
}
