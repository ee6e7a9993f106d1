//! Project automation. `cargo xtask <task>`; run without a task for the list.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, bail};

mod background;
mod cluster;
mod demo;
mod faults;
mod flaky;
mod fuzz;

const TASKS: &[(&str, &str)] = &[
    (
        "ci",
        "fmt --check, clippy -D warnings, every test (e2e and the faults suite included), \
         10 s of each fuzz target, and the demo's unattended tour",
    ),
    (
        "e2e",
        "the network-namespace cluster suite (root); --redirect nftables|ebpf; \
         --suite faults: reliability.md's fault and attack rows (docs/reliability.md)",
    ),
    (
        "demo",
        "the local two-node mesh and its guided tour (root); --check runs the tour unattended",
    ),
    (
        "crds",
        "regenerate deploy/base/crds/security.istio.io.yaml from the mesh-model types",
    ),
    (
        "bench",
        "performance.md §3 side by side (root, release build): [--quick] [--json FILE] [--only P1,P4,..]; \
         `bench redirection [--quick]`: nftables vs eBPF; `bench micro`: the criterion benches",
    ),
    (
        "cluster",
        "the local Kubernetes cluster (root): `build` the real components (kube-apiserver, \
         controller-manager, scheduler, kube-proxy, kubectl, etcd, CoreDNS) and CRDs from pinned \
         Go modules into target/cluster; `up [--nodes N]`, `down`, `status`; `test` its tests",
    ),
    (
        "flaky",
        "run cluster tests again and again and count passes (root): [--runs N] \
         [--redirect nftables|ebpf] [--busy] TARGET[::TEST]...",
    ),
    (
        "fuzz",
        "build and run every cargo-fuzz target (docs/fuzzing.md): [--seconds N] [--list] [TARGET...]",
    ),
];

/// The criterion benches (package, bench target).
const MICRO_BENCHES: &[(&str, &str)] = &[
    ("mesh-hbone", "copy"),
    ("mesh-hbone", "connect"),
    ("mesh-xds", "authorize"),
    ("mesh-xds", "apply"),
    ("waypoint", "route"),
];

/// Test targets of the cluster suite, and those only the eBPF mode adds.
const E2E_TESTS: &[&str] = &[
    "harness",
    "capture",
    "zds",
    "waypoint",
    "telemetry",
    "control_plane",
    "limits",
    "churn",
    "upgrade",
    "bypass",
];
const E2E_EBPF_TESTS: &[&str] = &["ebpf"];
/// Targets that hold with nftables redirection only, for now, each with its
/// eBPF failure recorded in docs/reliability.md. None at present.
const E2E_NFTABLES_TESTS: &[&str] = &[];
/// Our programs' names, to find any left in the kernel after a run.
const OUR_PROGRAMS: &[&str] = &["mesh_egress", "mesh_ingress"];

/// The binaries the network-namespace cluster runs as processes.
const CLUSTER_BINARIES: &[&str] = &[
    "istiod-lite",
    "ztunnel",
    "waypoint",
    "cni-plugin",
    "integration",
    "ambientctl",
    "mesh-cluster",
];

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("e2e") => {
            let args: Vec<String> = std::env::args().skip(2).collect();
            let (mut redirect, mut faults) = ("nftables", false);
            let mut args = args.iter().map(String::as_str);
            while let Some(arg) = args.next() {
                match (arg, args.next()) {
                    ("--redirect", Some(mode @ ("nftables" | "ebpf"))) => redirect = mode,
                    ("--suite", Some("faults")) => faults = true,
                    // What CI checks of the rows, without running them.
                    ("--list-faults", None) => return faults::check_listed(),
                    _ => bail!(
                        "usage: cargo xtask e2e [--redirect nftables|ebpf] [--suite faults] | \
                         e2e --list-faults"
                    ),
                }
            }
            build_cluster_binaries()?;
            if faults {
                faults::run(redirect)
            } else {
                e2e(redirect)
            }
        }
        Some("bench") => bench(std::env::args().skip(2).collect()),
        Some("cluster") => cluster::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("flaky") => flaky::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("fuzz") => fuzz::run(&std::env::args().skip(2).collect::<Vec<_>>()),
        Some("demo") => demo::run(std::env::args().skip(2).collect()),
        Some("crds") => cargo_with_env(
            &["test", "-p", "mesh-kube", "--lib", "crds::"],
            &[("UPDATE_CRDS", "1")],
        ),
        other => {
            if let Some(t) = other {
                eprintln!("unknown task {t:?}");
            }
            eprintln!("usage: cargo xtask <task>\n\ntasks:");
            for (name, what) in TASKS {
                eprintln!("  {name:<8} {what}");
            }
            std::process::exit(2);
        }
    }
}

fn ci() -> anyhow::Result<()> {
    // The Kubernetes components take longest to build (20 minutes and
    // more, cold): built beside everything else, at the lowest priority.
    let components = cluster::build_in_background()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    build_cluster_binaries()?;
    // Every test, the cluster suite with nftables redirection among them;
    // then the capture suite again with eBPF redirection.
    cargo(&["test", "--workspace"])?;
    e2e("ebpf")?;
    // The fault and attack rows' tests have now run in both modes: each
    // row's tests must exist and be on docs/reliability.md (`cargo xtask
    // e2e --suite faults` runs them as their own suite).
    faults::check_listed()?;
    // Row D4: the soak, 10 minutes of traffic through rotation, policy
    // churn and control-plane restarts (ignored by `cargo test` for its
    // length), beside the steps that need no network (the fuzz pass, at
    // the lowest priority, in its own workspace), so that it adds little
    // to CI's time. Started after the check above: its cargo holds the
    // build directory's lock while the soak runs.
    let mut soak = Command::new("cargo");
    soak.args(["test", "-p", "integration", "--test", "soak", "--"])
        .args(["--ignored", "--nocapture"]);
    let soak = background::Background::start(
        "the soak (docs/reliability.md D4)",
        Path::new("target/soak.log"),
        soak,
    )?;
    // Every fuzz target builds and runs briefly from its seeds; the 60 s
    // runs and longer ones are `cargo xtask fuzz` (docs/fuzzing.md).
    fuzz::run(&["--seconds".to_string(), "10".to_string()])?;
    soak.wait()?;
    // The real control plane: the node simulator's and the mesh's tests on
    // it, then the README's first command, unattended, so it cannot rot.
    components.wait()?;
    cluster::test()?;
    demo::cluster(true)?;
    // The same tour on the local mesh (no Kubernetes).
    demo::local(true)?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// The cluster suite with one redirection mode (the binaries built
/// first: `cargo test` alone does not build other packages' binaries).
fn e2e(redirect: &str) -> anyhow::Result<()> {
    let mut args = vec!["test", "-p", "integration"];
    let ebpf = redirect == "ebpf";
    let only = if ebpf {
        E2E_EBPF_TESTS
    } else {
        E2E_NFTABLES_TESTS
    };
    for t in E2E_TESTS.iter().chain(only) {
        args.extend(["--test", t]);
    }
    cargo_with_env(&args, &[("MESH_E2E_REDIRECT", redirect)])?;
    if ebpf {
        no_programs_left()?;
    }
    eprintln!("xtask e2e ({redirect}): passed");
    Ok(())
}

/// After a run, every cluster is gone: so must our programs be.
fn no_programs_left() -> anyhow::Result<()> {
    let out = Command::new("bpftool")
        .args(["-j", "prog", "show"])
        .output()
        .context("running bpftool (apt-get install bpftool)")?;
    if !out.status.success() {
        bail!(
            "bpftool prog show: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let listing = String::from_utf8_lossy(&out.stdout);
    let left: Vec<&&str> = OUR_PROGRAMS
        .iter()
        .filter(|p| listing.contains(&format!("\"name\":\"{p}\"")))
        .collect();
    if !left.is_empty() {
        bail!("programs left in the kernel after the suite: {left:?} (bpftool prog show)");
    }
    Ok(())
}

/// The benchmarks run the cluster's release binaries. The harness writes
/// its table into docs/benchmarks.md.
fn bench(pass: Vec<String>) -> anyhow::Result<()> {
    let (target, pass) = match pass.first().map(String::as_str) {
        Some("redirection") => ("redirection", pass[1..].to_vec()),
        Some("micro") => return micro_benches(&pass[1..]),
        _ => ("mesh", pass),
    };
    let mut i = 0;
    while i < pass.len() {
        match pass[i].as_str() {
            "--quick" => i += 1,
            "--json" | "--only" if i + 1 < pass.len() && target == "mesh" => i += 2,
            "--json" if i + 1 < pass.len() => i += 2,
            _ => bail!(
                "usage: cargo xtask bench [--quick] [--json FILE] [--only P1,P2,..] | \
                 bench redirection [--quick] [--json FILE] | bench micro"
            ),
        }
    }
    let root = workspace_root()?;
    let status = Command::new(root.join(".ci/install-packages"))
        .arg("--bench")
        .status()
        .context("running .ci/install-packages --bench")?;
    if !status.success() {
        bail!("installing system packages failed ({status}); the benchmarks need root on Debian");
    }
    let mut build = vec!["build", "--release", "--bins"];
    for p in CLUSTER_BINARIES {
        build.extend(["-p", p]);
    }
    cargo(&build)?;
    // cargo bench runs in the package's directory: make paths absolute.
    let cwd = std::env::current_dir()?;
    let mut args: Vec<String> = ["bench", "-p", "integration", "--bench", target, "--"]
        .map(String::from)
        .to_vec();
    for (i, a) in pass.iter().enumerate() {
        if i > 0 && pass[i - 1] == "--json" {
            args.push(cwd.join(a).display().to_string());
        } else {
            args.push(a.clone());
        }
    }
    // A partial run (`--only`) leaves the table of the last full one.
    if target == "mesh" && !pass.iter().any(|a| a == "--only") {
        args.push("--markdown".into());
        args.push(root.join("docs/benchmarks.md").display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    cargo(&args)
}

/// The criterion benches of the hot paths, in criterion's quick mode.
fn micro_benches(pass: &[String]) -> anyhow::Result<()> {
    if !pass.is_empty() {
        bail!("usage: cargo xtask bench micro");
    }
    for (package, bench) in MICRO_BENCHES {
        cargo(&["bench", "-p", package, "--bench", bench, "--", "--quick"])?;
    }
    Ok(())
}

pub(crate) fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let manifest = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(|p| p.to_path_buf())
        .context("xtask lives inside the workspace")
}

pub(crate) fn build_cluster_binaries() -> anyhow::Result<()> {
    let mut args = vec!["build", "--bins"];
    for p in CLUSTER_BINARIES {
        args.extend(["-p", p]);
    }
    cargo(&args)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_with_env(args, &[])
}

fn cargo_with_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let shown: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v} ")).collect();
    eprintln!("==> {}cargo {}", shown.concat(), args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .envs(env.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
