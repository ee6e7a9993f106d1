//! Project automation. `cargo xtask <task>`; run without a task for the list.

use std::process::Command;

use anyhow::{Context, bail};

const TASKS: &[(&str, &str)] = &[
    (
        "ci",
        "fmt --check, clippy -D warnings, and every test (e2e included)",
    ),
    (
        "e2e",
        "the network-namespace cluster suite (root; nftables, CNI plugins)",
    ),
];

/// The binaries the network-namespace cluster runs as processes.
const CLUSTER_BINARIES: &[&str] = &["istiod-lite", "ztunnel", "cni-plugin", "integration"];

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
        Some("e2e") => e2e(),
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
    cargo(&["test", "--workspace"])?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

/// Builds the binaries the cluster runs, then the suite. `cargo test` alone
/// does not build other packages' binaries.
fn e2e() -> anyhow::Result<()> {
    build_cluster_binaries()?;
    cargo(&[
        "test",
        "-p",
        "integration",
        "--test",
        "capture",
        "--test",
        "zds",
    ])?;
    eprintln!("xtask e2e: passed");
    Ok(())
}

fn build_cluster_binaries() -> anyhow::Result<()> {
    let mut args = vec!["build", "--bins"];
    for p in CLUSTER_BINARIES {
        args.extend(["-p", p]);
    }
    cargo(&args)
}

fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(&cargo)
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
