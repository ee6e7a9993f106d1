//! `cargo xtask cluster build`: the real Kubernetes components the local
//! cluster runs, built from published Go modules at the versions pinned in
//! `cluster/components/*/go.mod` (and their `go.sum`), into
//! `target/cluster/`:
//!
//! - `bin/`: kube-apiserver, kube-controller-manager, kube-scheduler,
//!   kube-proxy and kubectl (k8s.io/kubernetes v1.37.2), etcd (v3.7.0, the
//!   release Kubernetes itself requires), CoreDNS;
//! - `crds/`: Gateway API's standard and experimental CRDs and Istio's own,
//!   copied from the module cache;
//! - `samples/`: Istio's curl and httpbin samples (from istio.io/istio),
//!   text unchanged, with go-httpbin (the httpbin image's program) in `bin/`.
//!
//! A module is rebuilt only when its pins change: `target/cluster/stamps/`
//! keeps a copy of each module's go.mod and go.sum as last built.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::background::Background;

/// The Kubernetes release the components come from.
pub const KUBERNETES_VERSION: &str = "v1.37.2";

/// One Go module of `cluster/components/` and what it builds.
struct Component {
    /// Its folder under `cluster/components/`.
    dir: &'static str,
    /// (package, binary name) pairs to build; empty for a module that only
    /// brings files.
    binaries: &'static [(&'static str, &'static str)],
    /// Linker flags.
    ldflags: fn() -> String,
}

const COMPONENTS: &[Component] = &[
    Component {
        dir: "kubernetes",
        binaries: &[
            ("k8s.io/kubernetes/cmd/kube-apiserver", "kube-apiserver"),
            (
                "k8s.io/kubernetes/cmd/kube-controller-manager",
                "kube-controller-manager",
            ),
            ("k8s.io/kubernetes/cmd/kube-scheduler", "kube-scheduler"),
            ("k8s.io/kubernetes/cmd/kube-proxy", "kube-proxy"),
            ("k8s.io/kubernetes/cmd/kubectl", "kubectl"),
        ],
        ldflags: kubernetes_ldflags,
    },
    Component {
        dir: "etcd",
        binaries: &[("go.etcd.io/etcd/server/v3", "etcd")],
        ldflags: stripped,
    },
    Component {
        dir: "coredns",
        // main.go there: upstream's main with only the Corefile's plugins.
        binaries: &[("ambient-mesh.dev/cluster/coredns", "coredns")],
        ldflags: stripped,
    },
    Component {
        dir: "crds",
        binaries: &[],
        ldflags: stripped,
    },
    Component {
        // A test tool: HTTP/2 conformance against the HBONE server (H1).
        dir: "h2spec",
        binaries: &[("github.com/summerwind/h2spec/cmd/h2spec", "h2spec")],
        ldflags: stripped,
    },
    Component {
        dir: "samples",
        binaries: &[(
            "github.com/mccutchen/go-httpbin/v2/cmd/go-httpbin",
            "go-httpbin",
        )],
        ldflags: stripped,
    },
];

fn stripped() -> String {
    "-s -w".into()
}

/// Kubernetes binaries report their version from these variables, set as
/// its own release build sets them (unset, they say v0.0.0-master).
fn kubernetes_ldflags() -> String {
    let minor = KUBERNETES_VERSION.split('.').nth(1).unwrap_or("0");
    let mut flags = vec!["-s".to_string(), "-w".to_string()];
    for pkg in [
        "k8s.io/component-base/version",
        "k8s.io/client-go/pkg/version",
    ] {
        flags.push(format!("-X {pkg}.gitVersion={KUBERNETES_VERSION}"));
        flags.push(format!("-X {pkg}.gitMajor=1"));
        flags.push(format!("-X {pkg}.gitMinor={minor}"));
        flags.push(format!("-X {pkg}.gitTreeState=clean"));
    }
    flags.join(" ")
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        Some("build") => build(),
        Some("up") => {
            build()?;
            local_cluster(args)
        }
        Some("down" | "status") => local_cluster(args),
        Some("test") => {
            build()?;
            // The mesh's images run the binaries built beside `cluster`.
            crate::cargo(&["build", "--bins"])?;
            test()
        }
        _ => bail!("usage: cargo xtask cluster build | up [--nodes N] | down | status | test"),
    }
}

/// The cluster's tests (root, the components built): one cluster at a
/// time, since the bridge and namespace names are the machine's.
pub fn test() -> anyhow::Result<()> {
    crate::cargo(&[
        "test",
        "-p",
        "mesh-cluster",
        "--test",
        "cluster",
        "--test",
        "mesh",
        "--",
        "--ignored",
        "--test-threads=1",
    ])?;
    // Row H1: h2spec, built above with the cluster's components.
    crate::cargo(&[
        "test",
        "-p",
        "integration",
        "--test",
        "h2spec",
        "--",
        "--ignored",
    ])
}

/// `cargo xtask cluster build` in a child process at the lowest CPU
/// priority, its output in `target/cluster/build.log`. CI starts it first:
/// it takes what the Rust suites leave idle (most of a test run waits on
/// processes and the network), and the cluster's steps wait for it.
pub fn build_in_background() -> anyhow::Result<Background> {
    std::fs::create_dir_all("target/cluster")?;
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19"])
        .arg(std::env::current_exe().context("finding the xtask binary")?)
        .args(["cluster", "build"]);
    Background::start(
        "cargo xtask cluster build, at nice 19",
        Path::new("target/cluster/build.log"),
        cmd,
    )
}

/// Runs the `cluster` binary (built first) with the same arguments.
fn local_cluster(args: &[String]) -> anyhow::Result<()> {
    // The mesh's images run the binaries built beside `cluster`.
    crate::cargo(&["build", "-q", "--bins"])?;
    let status = std::process::Command::new("target/debug/cluster")
        .args(args)
        .status()
        .context("running target/debug/cluster")?;
    if !status.success() {
        bail!("cluster {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds every component whose pins changed since the last build.
pub fn build() -> anyhow::Result<()> {
    let root = Path::new("target/cluster");
    let (bin, crds, stamps) = (root.join("bin"), root.join("crds"), root.join("stamps"));
    let samples = root.join("samples");
    for d in [&bin, &crds, &stamps, &samples] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let go = which_go()?;
    let started = Instant::now();
    for c in COMPONENTS {
        let dir = Path::new("cluster/components").join(c.dir);
        let digest = pins_digest(&dir)?;
        let stamp = stamps.join(c.dir);
        let outputs_present = c.binaries.iter().all(|(_, b)| bin.join(b).exists());
        if outputs_present && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&digest) {
            eprintln!("cluster build: {} is up to date", c.dir);
            continue;
        }
        let t = Instant::now();
        eprintln!(
            "cluster build: {} (downloading modules, then compiling; the first build takes a while)",
            c.dir
        );
        download(&go, &dir)?;
        if !c.binaries.is_empty() {
            // One `go build` for all of a module's binaries: what they share
            // is compiled once, and they link side by side.
            let t = Instant::now();
            let names: Vec<&str> = c.binaries.iter().map(|(_, n)| *n).collect();
            eprintln!(
                "cluster build:   go build -> target/cluster/bin/{{{}}}",
                names.join(",")
            );
            let out = std::fs::canonicalize(&bin)?;
            // Several binaries are named after their packages; one is named
            // here (etcd's package path ends in `server/v3`).
            let target = match c.binaries {
                [(_, name)] => out.join(name).display().to_string(),
                _ => format!("{}/", out.display()),
            };
            let status = Command::new(&go)
                .current_dir(&dir)
                .args(["build", "-trimpath", "-ldflags", &(c.ldflags)(), "-o"])
                .arg(target)
                .args(c.binaries.iter().map(|(pkg, _)| *pkg))
                .env("CGO_ENABLED", "0")
                .status()
                .context("running go build")?;
            if !status.success() {
                bail!(
                    "go build in {} failed ({status}); its errors are above",
                    dir.display()
                );
            }
            for name in &names {
                if !bin.join(name).exists() {
                    bail!("go build made no target/cluster/bin/{name}");
                }
            }
            eprintln!(
                "cluster build:   {} built in {:.0?}",
                names.join(", "),
                t.elapsed()
            );
        }
        if c.dir == "crds" {
            copy_crds(&go, &dir, &crds)?;
        }
        if c.dir == "samples" {
            copy_samples(&go, &dir, &samples)?;
        }
        std::fs::write(&stamp, &digest)?;
        eprintln!("cluster build: {} done in {:.0?}", c.dir, t.elapsed());
    }
    eprintln!(
        "cluster build: every component ready in target/cluster ({:.0?})",
        started.elapsed()
    );
    Ok(())
}

fn which_go() -> anyhow::Result<PathBuf> {
    for candidate in ["go", "/usr/local/go/bin/go"] {
        if Command::new(candidate)
            .arg("version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(candidate.into());
        }
    }
    bail!(
        "no Go toolchain found (go, /usr/local/go/bin/go): the local cluster's components are built with Go 1.26"
    )
}

/// The module's pins as built: its go.mod and go.sum, one after the other.
fn pins_digest(dir: &Path) -> anyhow::Result<String> {
    let mut pins = String::new();
    for f in ["go.mod", "go.sum"] {
        let p = dir.join(f);
        pins.push_str(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        );
    }
    // A module's own Go files (CoreDNS's main.go, the CRDs' list) are
    // part of what it builds.
    let mut sources: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "go"))
        .collect();
    sources.sort();
    for p in sources {
        pins.push_str(
            &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
        );
    }
    Ok(pins)
}

fn download(go: &Path, dir: &Path) -> anyhow::Result<()> {
    let status = Command::new(go)
        .current_dir(dir)
        .args(["mod", "download"])
        .status()
        .context("running go mod download")?;
    if !status.success() {
        bail!(
            "go mod download in {} failed ({status}): is the Go module proxy reachable?",
            dir.display()
        );
    }
    Ok(())
}

/// Where the module cache holds `module`'s files, at the version the
/// module in `dir` pins.
fn module_dir(go: &Path, dir: &Path, module: &str) -> anyhow::Result<PathBuf> {
    let out = Command::new(go)
        .current_dir(dir)
        .args(["list", "-m", "-f", "{{.Dir}}", module])
        .output()
        .with_context(|| format!("running go list -m {module}"))?;
    if !out.status.success() {
        bail!(
            "go list -m {module}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

fn copy_crds(go: &Path, dir: &Path, to: &Path) -> anyhow::Result<()> {
    let gateway = module_dir(go, dir, "sigs.k8s.io/gateway-api")?;
    for channel in ["standard", "experimental"] {
        let from = gateway.join("config/crd").join(channel);
        let dest = to.join("gateway-api").join(channel);
        std::fs::create_dir_all(&dest)?;
        for entry in
            std::fs::read_dir(&from).with_context(|| format!("reading {}", from.display()))?
        {
            let entry = entry?;
            // The CRDs, not the folder's kustomization.yaml.
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with("gateway.networking") && name.ends_with(".yaml") {
                copy_writable(&entry.path(), &dest.join(entry.file_name()))?;
            }
        }
    }
    let istio = module_dir(go, dir, "istio.io/api")?;
    copy_writable(
        &istio.join("kubernetes/customresourcedefinitions.gen.yaml"),
        &to.join("istio.yaml"),
    )?;
    Ok(())
}

/// Istio's sample manifests the tests deploy, as Istio publishes them.
fn copy_samples(go: &Path, dir: &Path, to: &Path) -> anyhow::Result<()> {
    let istio = module_dir(go, dir, "istio.io/istio")?;
    for sample in ["curl/curl.yaml", "httpbin/httpbin.yaml"] {
        let from = istio.join("samples").join(sample);
        let name = from.file_name().context("a sample's file name")?;
        copy_writable(&from, &to.join(name))?;
    }
    Ok(())
}

/// Copies a file out of the (read-only) module cache as a writable file.
fn copy_writable(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(to);
    let text = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    std::fs::write(to, text).with_context(|| format!("writing {}", to.display()))?;
    Ok(())
}
