//! `cargo xtask flaky`: runs tests of the integration package again and
//! again and reports how often each passed, so anyone can measure a flake.
//!
//! ```text
//! cargo xtask flaky [--runs N] [--redirect nftables|ebpf] [--busy] TEST...
//! ```
//!
//! A TEST is a test target (`waypoint`: every test in it) or one test in it
//! (`waypoint::an_l7_policy_at_the_waypoint_allows_get_and_denies_post_and_means_nothing_without_one`).
//! `--busy` keeps one core spinning meanwhile, the way a loaded CI machine
//! slows the cluster. The output of every failed run is kept under
//! `target/flaky/`, and a failed cluster test names its kept component logs
//! there. Exits non-zero if any run failed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};

const USAGE: &str =
    "usage: cargo xtask flaky [--runs N] [--redirect nftables|ebpf] [--busy] TARGET[::TEST]...";

/// One thing to run repeatedly.
struct Subject {
    target: String,
    test: Option<String>,
}

impl Subject {
    fn label(&self) -> String {
        match &self.test {
            Some(t) => format!("{}::{t}", self.target),
            None => self.target.clone(),
        }
    }
}

struct Options {
    runs: u32,
    redirect: String,
    busy: bool,
    subjects: Vec<Subject>,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    parse_args(args).context(USAGE)
}

fn parse_args(args: &[String]) -> anyhow::Result<Options> {
    let mut o = Options {
        runs: 20,
        redirect: "nftables".into(),
        busy: false,
        subjects: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => {
                let n = it.next().context("--runs takes a number")?;
                o.runs = n
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .with_context(|| format!("--runs {n}: expected a positive number"))?;
            }
            "--redirect" => match it.next().map(String::as_str) {
                Some(m @ ("nftables" | "ebpf")) => o.redirect = m.into(),
                _ => bail!("--redirect takes nftables or ebpf"),
            },
            "--busy" => o.busy = true,
            s if s.starts_with('-') => bail!("unknown flag {s}"),
            s => {
                let (target, test) = match s.split_once("::") {
                    Some((t, n)) => (t, Some(n.to_string())),
                    None => (s, None),
                };
                o.subjects.push(Subject {
                    target: target.into(),
                    test,
                });
            }
        }
    }
    if o.subjects.is_empty() {
        bail!("name at least one test target");
    }
    Ok(o)
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let o = parse(args)?;
    super::build_cluster_binaries()?;
    let mut targets: Vec<&str> = o.subjects.iter().map(|s| s.target.as_str()).collect();
    targets.dedup();
    let executables = build_tests(&targets)?;
    let out_dir = Path::new("target/flaky");
    std::fs::create_dir_all(out_dir).context("creating target/flaky")?;

    let spinning = Arc::new(AtomicBool::new(o.busy));
    let spinner = o.busy.then(|| {
        let spinning = spinning.clone();
        std::thread::spawn(move || {
            let mut x = 0u64;
            while spinning.load(Ordering::Relaxed) {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
        })
    });

    let started = Instant::now();
    let mut report = Vec::new();
    for s in &o.subjects {
        let exe = executables
            .iter()
            .find(|(t, _)| *t == s.target)
            .map(|(_, e)| e)
            .with_context(|| format!("no test target {} in the integration package", s.target))?;
        let (mut passed, mut kept) = (0, Vec::new());
        for i in 1..=o.runs {
            let mut cmd = Command::new(exe);
            if let Some(t) = &s.test {
                cmd.args(["--exact", t]);
            }
            cmd.env("MESH_E2E_REDIRECT", &o.redirect)
                .stdin(Stdio::null())
                .current_dir("integration");
            let run_started = Instant::now();
            let out = cmd
                .output()
                .with_context(|| format!("running {}", exe.display()))?;
            let ok = out.status.success();
            if ok {
                passed += 1;
            } else {
                let file = out_dir.join(format!(
                    "{}-{}-run{i}.log",
                    s.label().replace("::", "-"),
                    o.redirect
                ));
                let mut f = std::fs::File::create(&file)
                    .with_context(|| format!("creating {}", file.display()))?;
                f.write_all(&out.stdout)?;
                f.write_all(&out.stderr)?;
                kept.push(file);
            }
            eprintln!(
                "flaky: {} ({}) run {i}/{}: {} in {:.0?}; {passed} passed so far",
                s.label(),
                o.redirect,
                o.runs,
                if ok { "passed" } else { "FAILED" },
                run_started.elapsed()
            );
        }
        report.push((s.label(), passed, kept));
    }
    spinning.store(false, Ordering::Relaxed);
    if let Some(t) = spinner {
        let _ = t.join();
    }

    println!(
        "\nflaky: {} runs each, redirection {}{}, {:.0?} in all",
        o.runs,
        o.redirect,
        if o.busy { ", one core kept busy" } else { "" },
        started.elapsed()
    );
    let mut failed = 0;
    for (label, passed, kept) in &report {
        println!("  {passed:>3} of {} passed  {label}", o.runs);
        for k in kept {
            println!("        failed run's output: {}", k.display());
        }
        failed += kept.len();
    }
    if failed > 0 {
        bail!("{failed} run(s) failed");
    }
    Ok(())
}

/// Builds the named test targets of the integration package and returns
/// each one's executable.
fn build_tests(targets: &[&str]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut args = vec![
        "test",
        "-p",
        "integration",
        "--no-run",
        "--message-format=json",
    ];
    for t in targets {
        args.extend(["--test", t]);
    }
    eprintln!("==> cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(&args)
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the test targets failed");
    }
    let mut found = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] != "compiler-artifact" || msg["target"]["kind"][0] != "test" {
            continue;
        }
        if let (Some(name), Some(exe)) =
            (msg["target"]["name"].as_str(), msg["executable"].as_str())
        {
            found.push((name.to_string(), PathBuf::from(exe)));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn targets_tests_and_flags_are_read() {
        let o = parse(&args(
            "--runs 5 --redirect ebpf --busy waypoint::a_test capture",
        ))
        .unwrap();
        assert_eq!((o.runs, o.redirect.as_str(), o.busy), (5, "ebpf", true));
        let labels: Vec<String> = o.subjects.iter().map(Subject::label).collect();
        assert_eq!(labels, ["waypoint::a_test", "capture"]);
        assert_eq!(o.subjects[0].test.as_deref(), Some("a_test"));
        assert!(o.subjects[1].test.is_none());
    }

    #[test]
    fn bad_arguments_are_refused_with_the_usage() {
        for bad in [
            "",
            "--runs 0 waypoint",
            "--redirect iptables waypoint",
            "--fast waypoint",
        ] {
            let Err(e) = parse(&args(bad)) else {
                panic!("{bad:?} was accepted");
            };
            assert!(format!("{e:#}").contains("usage"), "{bad}: {e:#}");
        }
    }
}
