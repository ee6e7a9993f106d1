//! Project automation. `cargo xtask <task>`; run without a task for the list.

use std::process::Command;

use anyhow::{Context, bail};

const TASKS: &[(&str, &str)] = &[("ci", "fmt --check, clippy -D warnings, and every test")];

fn main() -> anyhow::Result<()> {
    let task = std::env::args().nth(1);
    match task.as_deref() {
        Some("ci") => ci(),
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
    cargo(&["test", "--workspace"])?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
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
