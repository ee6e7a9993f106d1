//! The method of performance.md §2, shared by every benchmark: pinning,
//! alternation, repeated samples with their spread, and a process's CPU
//! and memory read from `/proc`.

use std::time::Duration;

use integration::process;

/// The CPU that load generators and servers run on.
pub const LOAD_CPU: usize = 0;
/// The CPU that the proxy under test runs on.
pub const PROXY_CPU: usize = 1;

/// How long and how often: `--quick` or the full run.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    pub quick: bool,
    /// Samples per configuration (alternated A, B, A, B...).
    pub rounds: usize,
    /// How long one throughput or rate sample runs.
    pub sample: Duration,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                quick,
                rounds: 3,
                sample: Duration::from_secs(2),
            }
        } else {
            Self {
                quick,
                rounds: 5,
                sample: Duration::from_secs(5),
            }
        }
    }

    /// `full` in a full run, `quick` with `--quick`.
    pub fn pick<T>(&self, quick: T, full: T) -> T {
        if self.quick { quick } else { full }
    }
}

/// Pins every thread of process `pid` to `cpus` (a taskset list, "1" or
/// "0-1"). Threads started later inherit it.
pub fn pin(pid: u32, cpus: &str) {
    let out = std::process::Command::new("taskset")
        .args(["-a", "-c", "-p", cpus, &pid.to_string()])
        .output()
        .expect("taskset (util-linux) runs");
    assert!(
        out.status.success(),
        "taskset -a -c -p {cpus} {pid}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Pins the calling thread (and the threads it starts later) to `cpu`.
pub fn pin_this_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).expect("cpu index in range");
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .expect("sched_setaffinity on this thread");
}

/// Lets the calling thread run on every CPU again.
pub fn unpin_this_thread() {
    let mut set = nix::sched::CpuSet::new();
    for cpu in 0..cpus() {
        set.set(cpu).expect("cpu index in range");
    }
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
        .expect("sched_setaffinity on this thread");
}

/// The machine's CPUs (not the calling thread's affinity, which pinning
/// narrows).
pub fn cpus() -> usize {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|c| c.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(1)
        .max(1)
}

/// CPU seconds (user + system, all threads) a process has used so far.
pub fn cpu_seconds(pid: u32) -> f64 {
    process::cpu_ticks(pid) as f64 / process::TICKS_PER_SECOND as f64
}

/// CPU seconds used by several processes.
pub fn cpu_of(pids: &[u32]) -> f64 {
    pids.iter().map(|p| cpu_seconds(*p)).sum()
}

/// Resident memory of a process in KiB: (VmRSS, VmHWM).
pub fn memory_kib(pid: u32) -> (u64, u64) {
    (process::status(pid, "VmRSS"), process::status(pid, "VmHWM"))
}

pub fn rss_kib(pid: u32) -> u64 {
    memory_kib(pid).0
}

/// The samples of one figure in one configuration.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Series {
    pub samples: Vec<f64>,
}

impl Series {
    pub fn push(&mut self, v: f64) {
        self.samples.push(v);
    }

    pub fn median(&self) -> f64 {
        median(&self.samples)
    }

    /// (max − min) / median, as a fraction.
    pub fn spread(&self) -> f64 {
        let min = self.samples.iter().copied().fold(f64::INFINITY, f64::min);
        let max = self
            .samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max);
        let m = self.median();
        if m == 0.0 || self.samples.is_empty() {
            0.0
        } else {
            (max - min) / m.abs()
        }
    }
}

pub fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p99: f64,
    pub p999: f64,
    pub samples: usize,
}

impl Latency {
    /// From round-trip times in nanoseconds.
    pub fn from_nanos(mut rtt: Vec<u64>) -> Self {
        assert!(!rtt.is_empty(), "no round trips measured");
        rtt.sort_unstable();
        let at = |q: f64| {
            let i = ((rtt.len() as f64 * q).ceil() as usize).clamp(1, rtt.len()) - 1;
            rtt[i] as f64 / 1000.0
        };
        Self {
            p50: at(0.50),
            p99: at(0.99),
            p999: at(0.999),
            samples: rtt.len(),
        }
    }
}

/// Runs `configs` `rounds` times each, alternating the order every round
/// (A B C, C B A, A B C...), so drift on a shared machine hits all alike.
pub fn alternate<C>(rounds: usize, configs: &[C], mut run: impl FnMut(usize, &C)) {
    for round in 0..rounds {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            run(i, &configs[i]);
        }
    }
}

/// Raises this process's open-file limit to the hard limit (children
/// started afterwards inherit it): memory per connection opens thousands.
pub fn raise_file_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let want = hard.min(1 << 20);
    setrlimit(Resource::RLIMIT_NOFILE, want, hard).expect("setrlimit NOFILE");
    want
}

/// Fails loudly when a tool the benchmarks drive is missing.
pub fn require_tools(tools: &[&str]) {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !std::process::Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    assert!(
        missing.is_empty(),
        "missing {}: apt-get install -y iperf3 wrk nginx-light haproxy nghttp2-client",
        missing.join(", ")
    );
}
