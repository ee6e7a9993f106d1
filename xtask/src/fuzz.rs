//! `cargo xtask fuzz [--seconds N] [--list] [TARGET...]`: builds the
//! cargo-fuzz targets under `fuzz/` and runs each for N seconds (default
//! 60), one after the other, from its saved corpus and its committed seeds
//! (docs/fuzzing.md).
//!
//! Works on the stable toolchain: cargo-fuzz needs `-Z` flags (the address
//! sanitizer, coverage instrumentation), which `RUSTC_BOOTSTRAP=1` allows.
//! `+stable` keeps a locally installed nightly from being picked instead,
//! so what runs here is what CI runs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::SystemTime;

use anyhow::{Context, bail};

const USAGE: &str = "usage: cargo xtask fuzz [--seconds N] [--list] [TARGET...]";
const DEFAULT_SECONDS: u64 = 60;
/// Any single input running longer than this is reported as a hang.
const INPUT_TIMEOUT_SECS: u64 = 30;

/// What was asked on the command line.
struct Request {
    seconds: u64,
    list: bool,
    targets: Vec<String>,
}

fn parse(args: &[String]) -> anyhow::Result<Request> {
    let mut request = Request {
        seconds: DEFAULT_SECONDS,
        list: false,
        targets: Vec::new(),
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--list" => request.list = true,
            "--seconds" => {
                let n = args.next().context(USAGE)?;
                request.seconds = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--seconds {n:?}: a whole number above 0"))?;
            }
            flag if flag.starts_with('-') => bail!("unknown option {flag:?}\n{USAGE}"),
            target => request.targets.push(target.to_string()),
        }
    }
    Ok(request)
}

/// How one target's run ended.
struct Outcome {
    target: String,
    /// libFuzzer's closing lines: `#N DONE cov: ..` and `Done N runs in S second(s)`.
    summary: Vec<String>,
    /// The input that failed, when the run failed.
    failure: Option<String>,
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let request = parse(args)?;
    let fuzz_dir = crate::workspace_root()?.join("fuzz");
    let available = targets(&fuzz_dir)?;
    if request.list {
        for t in &available {
            println!("{t}");
        }
        return Ok(());
    }
    let chosen = if request.targets.is_empty() {
        available.clone()
    } else {
        for t in &request.targets {
            if !available.contains(t) {
                bail!("no fuzz target {t:?}; `cargo xtask fuzz --list` shows them");
            }
        }
        request.targets.clone()
    };

    cargo_fuzz(&fuzz_dir, &["build"])?;
    let mut outcomes = Vec::new();
    for target in &chosen {
        outcomes.push(run_target(&fuzz_dir, target, request.seconds)?);
    }

    eprintln!("\nxtask fuzz: {} s per target", request.seconds);
    for o in &outcomes {
        let status = if o.failure.is_some() { "FAILED" } else { "ok" };
        eprintln!("  {:<14} {status:<6} {}", o.target, o.summary.join(" | "));
    }
    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| o.failure.as_ref().map(|f| format!("{}: {f}", o.target)))
        .collect();
    if !failed.is_empty() {
        bail!("fuzz targets failed:\n  {}", failed.join("\n  "));
    }
    Ok(())
}

/// The targets: one file each under `fuzz/fuzz_targets/`, sorted.
fn targets(fuzz_dir: &Path) -> anyhow::Result<Vec<String>> {
    let dir = fuzz_dir.join("fuzz_targets");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rs")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            names.push(stem.to_string());
        }
    }
    names.sort();
    Ok(names)
}

/// `cargo +stable fuzz <args>` in the repository root, on stable, at the
/// lowest CPU priority (CI runs the soak beside it; nothing here is timed).
fn cargo_fuzz_command(fuzz_dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new("nice");
    cmd.args(["-n", "19", "cargo", "+stable"])
        .arg("fuzz")
        .args(args)
        .env("RUSTC_BOOTSTRAP", "1")
        .current_dir(fuzz_dir.parent().unwrap_or(fuzz_dir));
    cmd
}

fn cargo_fuzz(fuzz_dir: &Path, args: &[&str]) -> anyhow::Result<()> {
    eprintln!(
        "==> RUSTC_BOOTSTRAP=1 cargo +stable fuzz {}",
        args.join(" ")
    );
    let status = cargo_fuzz_command(fuzz_dir, args)
        .status()
        .context("running cargo fuzz (cargo install cargo-fuzz)")?;
    if !status.success() {
        bail!("cargo fuzz {} failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Runs one target from its corpus (new inputs are saved there) and its
/// seeds, echoing libFuzzer's output and keeping its closing lines.
fn run_target(fuzz_dir: &Path, target: &str, seconds: u64) -> anyhow::Result<Outcome> {
    let corpus = PathBuf::from("fuzz/corpus").join(target);
    let seeds = PathBuf::from("fuzz/seeds").join(target);
    let root = fuzz_dir.parent().unwrap_or(fuzz_dir);
    std::fs::create_dir_all(root.join(&corpus))
        .with_context(|| format!("creating {}", corpus.display()))?;
    let max_time = format!("-max_total_time={seconds}");
    let timeout = format!("-timeout={INPUT_TIMEOUT_SECS}");
    let mut args = vec!["run", target, path_str(&corpus)?];
    if root.join(&seeds).is_dir() {
        args.push(path_str(&seeds)?);
    }
    args.extend(["--", &max_time, &timeout]);
    eprintln!(
        "==> RUSTC_BOOTSTRAP=1 cargo +stable fuzz {}",
        args.join(" ")
    );

    let started = SystemTime::now();
    let mut child = cargo_fuzz_command(fuzz_dir, &args)
        .stderr(Stdio::piped())
        .spawn()
        .context("running cargo fuzz (cargo install cargo-fuzz)")?;
    let mut summary = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line?;
            eprintln!("{line}");
            let done = line.split_whitespace().nth(1) == Some("DONE");
            if done || line.starts_with("Done ") {
                summary.push(line.trim().to_string());
            }
        }
    }
    let status = child.wait()?;
    let failure = (!status.success()).then(|| {
        match newest_artifact(&root.join("fuzz/artifacts").join(target), started) {
            Some(p) => format!(
                "exited with {status}; failing input {p}, reproduce with \
                 `RUSTC_BOOTSTRAP=1 cargo +stable fuzz run {target} {p}`",
                p = p.strip_prefix(root).unwrap_or(&p).display()
            ),
            None => format!("exited with {status}, no artifact written"),
        }
    });
    Ok(Outcome {
        target: target.to_string(),
        summary,
        failure,
    })
}

fn path_str(p: &Path) -> anyhow::Result<&str> {
    p.to_str()
        .with_context(|| format!("{} is not UTF-8", p.display()))
}

/// The most recent file in `dir` written since `since` (libFuzzer's
/// crash-, leak-, timeout- or oom- file).
fn newest_artifact(dir: &Path, since: SystemTime) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .filter(|(modified, _)| *modified >= since)
        .max_by_key(|(modified, _)| *modified)
        .map(|(_, path)| path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_and_targets() {
        let r = parse(&args(&["--seconds", "5", "baggage", "zds"])).unwrap();
        assert_eq!((r.seconds, r.list), (5, false));
        assert_eq!(r.targets, ["baggage", "zds"]);
        let r = parse(&[]).unwrap();
        assert_eq!((r.seconds, r.list), (DEFAULT_SECONDS, false));
        assert!(parse(&args(&["--list"])).unwrap().list);
        for bad in [
            &["--seconds"][..],
            &["--seconds", "0"],
            &["--seconds", "x"],
            &["-v"],
        ] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_target_file_is_declared_in_the_fuzz_manifest() {
        let fuzz = crate::workspace_root().unwrap().join("fuzz");
        let manifest = std::fs::read_to_string(fuzz.join("Cargo.toml")).unwrap();
        let found = targets(&fuzz).unwrap();
        assert!(found.len() >= 9, "{found:?}");
        for t in found {
            assert!(
                manifest.contains(&format!("path = \"fuzz_targets/{t}.rs\"")),
                "fuzz/Cargo.toml has no [[bin]] for {t}"
            );
            assert!(fuzz.join("seeds").join(&t).is_dir(), "no seeds for {t}");
        }
    }
}
