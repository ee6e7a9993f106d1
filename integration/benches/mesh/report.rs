//! What a run found: every figure with its baseline, the ratio it is
//! judged by and whether the target of performance.md §3 is met; written
//! as JSON and as the markdown table in `docs/benchmarks.md`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::method::{Plan, Series};

/// How a target compares the ratio: at least or at most.
#[derive(Clone, Copy, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
}

impl Goal {
    fn met(self, v: f64) -> bool {
        match self {
            Goal::AtLeast(t) => v >= t,
            Goal::AtMost(t) => v <= t,
        }
    }
}

/// One row: a measured figure for one target.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Figure {
    /// The target's number in performance.md §3 (`P1`...).
    pub target: &'static str,
    /// What was measured, in a few words.
    pub what: String,
    /// The median, in `unit`.
    pub value: f64,
    pub unit: &'static str,
    /// All samples, so the spread can be checked.
    pub series: Series,
    /// The baseline measured in the same run, when the target is a ratio.
    pub baseline: Option<Baseline>,
    /// The figure the target judges (a ratio, or the value itself).
    pub judged: f64,
    pub goal: Goal,
    /// The target as performance.md states it.
    pub target_text: &'static str,
    pub met: bool,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Baseline {
    pub what: String,
    pub value: f64,
    pub series: Series,
}

#[derive(Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub figures: Vec<Figure>,
    /// Other measurements a figure was derived from (name → value).
    pub extra: BTreeMap<String, f64>,
    /// Sentences for the table's notes (what a figure means, why it is as
    /// it is).
    pub notes: Vec<String>,
}

impl Report {
    /// A figure judged against a baseline: `judged = value / baseline`.
    #[allow(clippy::too_many_arguments)]
    pub fn ratio(
        &mut self,
        target: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        series: Series,
        baseline_what: impl Into<String>,
        baseline: Series,
        goal: Goal,
        target_text: &'static str,
    ) {
        let baseline = Baseline {
            what: baseline_what.into(),
            value: baseline.median(),
            series: baseline,
        };
        self.push(
            target,
            what.into(),
            unit,
            series,
            Some(baseline),
            goal,
            target_text,
        );
    }

    /// A figure judged by its own value.
    pub fn absolute(
        &mut self,
        target: &'static str,
        what: impl Into<String>,
        unit: &'static str,
        series: Series,
        goal: Goal,
        target_text: &'static str,
    ) {
        self.push(target, what.into(), unit, series, None, goal, target_text);
    }

    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        target: &'static str,
        what: String,
        unit: &'static str,
        series: Series,
        baseline: Option<Baseline>,
        goal: Goal,
        target_text: &'static str,
    ) {
        let value = series.median();
        let judged = baseline.as_ref().map_or(value, |b| value / b.value);
        let f = Figure {
            target,
            what,
            value,
            unit,
            series,
            baseline,
            judged,
            goal,
            target_text,
            met: goal.met(judged),
        };
        eprintln!(
            "{} {}: {} {} → {:.3} ({})",
            f.target,
            f.what,
            number(f.value),
            f.unit,
            f.judged,
            if f.met { "met" } else { "not met" }
        );
        self.figures.push(f);
    }

    pub fn extra(&mut self, name: impl Into<String>, v: f64) {
        self.extra.insert(name.into(), v);
    }

    pub fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }
}

/// Where and when the run happened.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Machine {
    pub date: String,
    pub commit: String,
    pub kernel: String,
    pub cpu: String,
    pub cpus: usize,
    pub memory_gib: f64,
    pub quick: bool,
    pub rounds: usize,
}

impl Machine {
    pub fn read(plan: &Plan) -> Self {
        let sh = |cmd: &str| {
            std::process::Command::new("sh")
                .args(["-c", cmd])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
                .unwrap_or_default()
        };
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let mem_kib: f64 = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0.0);
        let dirty = if sh("git status --porcelain --untracked-files=no").is_empty() {
            ""
        } else {
            " (with uncommitted changes)"
        };
        Self {
            date: sh("date -u +%Y-%m-%d"),
            commit: format!("{}{dirty}", sh("git rev-parse --short HEAD")),
            kernel: sh("uname -r"),
            cpu,
            cpus: crate::method::cpus(),
            memory_gib: (mem_kib / (1 << 20) as f64 * 10.0).round() / 10.0,
            quick: plan.quick,
            rounds: plan.rounds,
        }
    }
}

/// Writes the JSON file.
pub fn write_json(path: &Path, machine: &Machine, report: &Report) {
    let doc = serde_json::json!({ "machine": machine, "report": report });
    std::fs::write(path, serde_json::to_vec_pretty(&doc).expect("JSON")).expect("write JSON");
    eprintln!("wrote {}", path.display());
}

const BEGIN: &str = "<!-- bench:begin (written by cargo xtask bench) -->";
const END: &str = "<!-- bench:end -->";

/// Replaces the generated part of `docs/benchmarks.md` with this run's
/// table; the prose around it stays.
pub fn write_markdown(path: &Path, machine: &Machine, report: &Report) {
    let table = markdown(machine, report);
    let doc = std::fs::read_to_string(path).unwrap_or_default();
    let doc = match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => format!("{}{table}{}", &doc[..b], &doc[e + END.len()..]),
        _ => format!("{doc}\n{table}\n"),
    };
    std::fs::write(path, doc).expect("write markdown");
    eprintln!("wrote {}", path.display());
}

pub fn markdown(m: &Machine, r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{BEGIN}");
    let _ = writeln!(
        s,
        "Measured {} at commit `{}` by `cargo xtask bench{}` ({} rounds per figure): {} × {}, {} GiB, Linux {}.\n",
        m.date,
        m.commit,
        if m.quick { " --quick" } else { "" },
        m.rounds,
        m.cpus,
        m.cpu,
        m.memory_gib,
        m.kernel
    );
    let _ = writeln!(
        s,
        "| # | measured | median (spread) | baseline, same run | judged | target | met |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for f in &r.figures {
        let baseline = match &f.baseline {
            Some(b) => format!("{}: {} {}", b.what, number(b.value), f.unit),
            None => "—".into(),
        };
        let _ = writeln!(
            s,
            "| {} | {} | {} {} ({:.0} %{}) | {} | {} | {} | {} |",
            f.target,
            f.what,
            number(f.value),
            f.unit,
            f.series.spread() * 100.0,
            if f.series.spread() > 0.10 { " †" } else { "" },
            baseline,
            if f.baseline.is_some() {
                format!("{:.2}×", f.judged)
            } else {
                format!("{} {}", number(f.judged), f.unit)
            },
            f.target_text,
            if f.met { "yes" } else { "**no**" }
        );
    }
    let _ = writeln!(
        s,
        "\n† spread over 10 %: performance.md §2 rejects such a series; rerun (the full run has 5 rounds and longer samples) before quoting it."
    );
    if !r.notes.is_empty() {
        let _ = writeln!(s);
        for n in &r.notes {
            let _ = writeln!(s, "- {n}");
        }
    }
    let _ = writeln!(s, "{END}");
    s
}

/// A number with sensible precision for a table.
pub fn number(v: f64) -> String {
    let a = v.abs();
    if !v.is_finite() {
        "—".into()
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}
