//! `cargo xtask demo [--check] [--local]`, the README's first command.
//!
//! By default the demo runs on the local Kubernetes cluster
//! (docs/getting-started.md): it builds the mesh and the cluster's
//! components, brings the cluster up, installs the mesh the way users do
//! (`ambientctl install`), deploys the demo's apps and walks the tour
//! (`ambientctl demo check`, with kubectl). It prints how long the cluster
//! and the mesh took to be ready. Without `--check` the cluster stays up
//! for you to try; `cargo xtask cluster down` removes it. With `--check` it
//! is removed after the tour, which must pass.
//!
//! `--local` runs the same tour on the local mesh of network namespaces
//! instead (docs/local-mesh.md), without Kubernetes.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::{build_cluster_binaries, workspace_root};

pub fn run(args: Vec<String>) -> anyhow::Result<()> {
    let mut check = false;
    let mut local_only = false;
    for a in &args {
        match a.as_str() {
            "--check" => check = true,
            "--local" => local_only = true,
            _ => bail!("usage: cargo xtask demo [--check] [--local]"),
        }
    }
    let root = workspace_root()?;
    let status = Command::new(root.join(".ci/install-packages"))
        .status()
        .context("running .ci/install-packages")?;
    if !status.success() {
        bail!("installing system packages failed ({status}); the demo needs root on Debian");
    }
    if local_only {
        build_cluster_binaries()?;
        return local(check);
    }
    cluster(check)
}

/// Where the demo's cluster keeps its state (the `cluster` binary's
/// default), and what it runs.
struct Paths {
    root: PathBuf,
    state: PathBuf,
    kubeconfig: PathBuf,
    path: String,
}

impl Paths {
    fn new(root: &Path) -> Self {
        let state = root.join("target/cluster/run");
        let path = format!(
            "{}:{}:{}",
            root.join("target/debug").display(),
            root.join("target/cluster/bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Self {
            root: root.to_path_buf(),
            kubeconfig: state.join("admin.kubeconfig"),
            state,
            path,
        }
    }

    /// `program args...` with the cluster's KUBECONFIG and our binaries
    /// first on PATH, shown as it runs.
    fn run(&self, program: &str, args: &[&str]) -> anyhow::Result<()> {
        eprintln!("==> {program} {}", args.join(" "));
        let status = Command::new(program)
            .args(args)
            .current_dir(&self.root)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("PATH", &self.path)
            .status()
            .with_context(|| format!("running {program}"))?;
        if !status.success() {
            bail!("{program} {} failed ({status})", args.join(" "));
        }
        Ok(())
    }

    fn cluster(&self, args: &[&str]) -> anyhow::Result<()> {
        let mut all = vec!["--state", self.state.to_str().unwrap_or_default()];
        all.extend(args);
        self.run("cluster", &all)
    }
}

/// The demo on the local Kubernetes cluster.
pub fn cluster(check: bool) -> anyhow::Result<()> {
    let paths = Paths::new(&workspace_root()?);
    if paths.kubeconfig.exists() {
        bail!(
            "a cluster is already up in {} (`cargo xtask cluster status`); \
             remove it with `cargo xtask cluster down` first",
            paths.state.display()
        );
    }
    // The mesh's binaries, which its images run, then Kubernetes.
    crate::cargo(&["build", "--bins"])?;
    crate::cluster::build()?;
    let result = cluster_and_tour(&paths);
    if check || result.is_err() {
        let down = paths.cluster(&["down"]);
        result?;
        return down;
    }
    println!(
        "\nThe cluster stays up. Try, as root:\n  \
         export KUBECONFIG={}\n  \
         export PATH=$PWD/target/debug:$PWD/target/cluster/bin:$PATH\n  \
         kubectl get pods -A\n  \
         ambientctl ztunnel-config connections\n  \
         kubectl exec -n demo deploy/client -- curl -s http://web.demo/\n\
         Remove it with `cargo xtask cluster down`.",
        paths.kubeconfig.display()
    );
    Ok(())
}

/// The commands of docs/getting-started.md's first section, timed.
fn cluster_and_tour(paths: &Paths) -> anyhow::Result<()> {
    let started = Instant::now();
    paths.cluster(&["up"])?;
    let cluster_up = started.elapsed();

    let installing = Instant::now();
    paths.run(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "-f",
            "target/cluster/crds/gateway-api/standard/",
        ],
    )?;
    paths.run("ambientctl", &["install", "-y"])?;
    paths.run(
        "kubectl",
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            "target/cluster/crds/istio.yaml",
        ],
    )?;
    let mesh_ready = installing.elapsed();

    paths.run("kubectl", &["apply", "-f", "samples/demo.yaml"])?;
    paths.run(
        "kubectl",
        &[
            "wait",
            "-n",
            "demo",
            "--for=condition=Available",
            "deployment",
            "--all",
            "--timeout=120s",
        ],
    )?;
    let apps_ready = installing.elapsed();
    paths.run("ambientctl", &["demo", "check"])?;
    println!(
        "\nxtask demo: the cluster was up (nodes Ready, DNS) in {:.1} s; the mesh installed and \
         Ready {:.1} s later; the demo's apps Available {:.1} s after the install began",
        cluster_up.as_secs_f64(),
        mesh_ready.as_secs_f64(),
        apps_ready.as_secs_f64()
    );
    Ok(())
}

fn ambientctl(args: &[&str]) -> anyhow::Result<()> {
    let bin = workspace_root()?.join("target/debug/ambientctl");
    eprintln!("==> ambientctl {}", args.join(" "));
    // The local mesh, whatever cluster the shell points at.
    let status = Command::new(&bin)
        .args(args)
        .env_remove("KUBECONFIG")
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("ambientctl {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// The commands of docs/local-mesh.md that bring the local mesh up, tour
/// it and take it down; unless `check`, the mesh stays up until Ctrl-C or
/// `ambientctl demo down` from another shell.
pub fn local(check: bool) -> anyhow::Result<()> {
    ambientctl(&["demo", "up"])?;
    let toured = ambientctl(&["demo", "check"]);
    if check || toured.is_err() {
        let down = ambientctl(&["demo", "down"]);
        toured?;
        return down;
    }
    println!(
        "\nThe mesh stays up. Try, from another shell (as root, with target/debug on PATH):\n  \
         ambientctl waypoint list -A\n  ambientctl ztunnel-config connections\n  \
         ambientctl demo exec client -- curl -s http://web.demo/\n\
         Stop it with Ctrl-C here, or `ambientctl demo down`."
    );
    wait_for_ctrl_c_or_mesh_gone();
    ambientctl(&["demo", "down"])
}

/// Blocks until SIGINT or SIGTERM, or until the local mesh has stopped
/// (its description in /run/ambient-demo is gone).
fn wait_for_ctrl_c_or_mesh_gone() {
    use nix::sys::signal::{SigSet, Signal, kill};
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    // Blocked before the watcher thread exists, so it inherits the mask
    // and only `wait` below takes the signal.
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(|| {
        while Path::new("/run/ambient-demo/mesh.json").exists() {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        let _ = kill(nix::unistd::getpid(), Signal::SIGTERM);
    });
    let _ = set.wait();
}
