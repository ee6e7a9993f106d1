//! The side-by-side benchmark harness of performance.md: every target of
//! §3 that applies to what exists, measured with the method of §2 in one
//! run, each figure next to the baseline it is judged by.
//!
//! `cargo xtask bench [--quick] [--json FILE] [--only P1,P4,...]` (root;
//! the xtask builds the release binaries). Writes the JSON (when asked)
//! and the generated table in `docs/benchmarks.md`.
//!
//! - [`floor`]: what the machine can do without a mesh (loopback TCP, a
//!   rustls TLS echo, rustls mutual handshakes);
//! - [`l4`]: the ztunnel pair in the network-namespace cluster (P1–P9);
//! - [`waypoint`]: the waypoint against nginx and haproxy, and in the mesh
//!   (P12–P15);
//! - [`control`]: istiod-lite's translate and push, and policy
//!   propagation (P10, P11).

mod control;
mod floor;
mod l4;
mod method;
mod report;
mod traffic;
mod waypoint;

use std::path::PathBuf;

use method::Plan;
use report::{Machine, Report};

/// Which groups of targets to run.
pub struct Only(Option<Vec<String>>);

impl Only {
    /// Whether any of `targets` was asked for.
    pub fn any(&self, targets: &[&str]) -> bool {
        match &self.0 {
            None => true,
            Some(list) => targets.iter().any(|t| list.iter().any(|l| l == t)),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let plan = Plan::new(args.iter().any(|a| a == "--quick"));
    let only = Only(value("--only").map(|v| v.split(',').map(str::to_string).collect()));
    let json = value("--json").map(PathBuf::from);
    let markdown = value("--markdown").map(PathBuf::from);

    assert!(
        nix::unistd::geteuid().is_root(),
        "the benchmarks build network namespaces: run as root (cargo xtask bench)"
    );
    method::raise_file_limit();
    let started = std::time::Instant::now();
    let mut report = Report::default();
    if only.any(&["P1", "P2", "P3", "P4", "P5", "P6", "P7", "P8", "P9"]) {
        l4::run(&plan, &only, &mut report);
    }
    if only.any(&["P12", "P13", "P14", "P15"]) {
        waypoint::run(&plan, &only, &mut report);
    }
    if only.any(&["P10", "P11"]) {
        control::run(&plan, &only, &mut report);
    }
    report.extra("elapsedSeconds", started.elapsed().as_secs_f64());
    let machine = Machine::read(&plan);
    println!("{}", report::markdown(&machine, &report));
    if let Some(path) = json {
        report::write_json(&path, &machine, &report);
    }
    if let Some(path) = markdown {
        report::write_markdown(&path, &machine, &report);
    }
    eprintln!("benchmarks took {:.0} s", started.elapsed().as_secs_f64());
}
