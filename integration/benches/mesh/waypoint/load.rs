//! Closed-loop load from wrk (HTTP/1.1) and h2load (h2c), run inside a
//! client pod pinned to the load CPU, and the proxy CPU time a run cost.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::method;

/// What one load run completed.
#[derive(Clone, Copy, Debug)]
pub struct Completed {
    /// Requests answered 2xx.
    pub ok: u64,
    /// Requests that failed or were answered otherwise.
    pub failed: u64,
    /// How long the generator ran, by its own clock.
    pub seconds: f64,
}

impl Completed {
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.seconds
    }

    /// Panics when more than 1 % of the requests failed: a figure made of
    /// errors would say nothing about the proxy.
    pub fn check(&self, what: &str) {
        let total = self.ok + self.failed;
        assert!(
            total > 0 && self.failed * 100 <= total,
            "{what}: {} of {total} requests failed",
            self.failed
        );
    }
}

/// A run and the CPU seconds the proxy spent in it.
#[derive(Clone, Copy, Debug)]
pub struct Costed {
    pub done: Completed,
    pub proxy_cpu: f64,
}

impl Costed {
    /// Requests per CPU-second of the proxy: the rate it would serve with
    /// its core to itself.
    pub fn per_cpu(&self) -> f64 {
        self.done.ok as f64 / self.proxy_cpu
    }

    /// The share of a CPU the proxy used.
    pub fn utilisation(&self) -> f64 {
        self.proxy_cpu / self.done.seconds
    }
}

/// Runs `load` and charges it the CPU time process `proxy` used meanwhile.
pub fn costed(proxy: u32, load: impl FnOnce() -> Completed) -> Costed {
    let before = method::cpu_seconds(proxy);
    let done = load();
    let proxy_cpu = method::cpu_seconds(proxy) - before;
    assert!(
        proxy_cpu > 0.0,
        "the proxy (pid {proxy}) used no CPU: did the load cross it?"
    );
    Costed { done, proxy_cpu }
}

/// `wrk -t<threads> -c<connections> -d<duration> url` in `netns`, on the
/// load CPU, started; [`wrk_result`] waits for it.
pub fn wrk_start(
    netns: &str,
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Child {
    in_client(
        netns,
        "wrk",
        &[
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{}s", whole_seconds(duration)),
            url,
        ],
    )
    .spawn()
    .expect("run wrk (apt-get install -y wrk)")
}

/// Waits for a wrk started by [`wrk_start`] and reads its summary.
pub fn wrk_result(child: Child) -> Completed {
    let out = child.wait_with_output().expect("wait for wrk");
    let text = checked("wrk", &out);
    parse_wrk(&text).unwrap_or_else(|| panic!("cannot read wrk's summary:\n{text}"))
}

/// [`wrk_start`] and [`wrk_result`].
pub fn wrk(
    netns: &str,
    url: &str,
    threads: usize,
    connections: usize,
    duration: Duration,
) -> Completed {
    wrk_result(wrk_start(netns, url, threads, connections, duration))
}

/// `h2load -c<clients> -m<streams> -D<duration> url` (cleartext HTTP/2
/// with prior knowledge) in `netns`, on the load CPU.
pub fn h2load(
    netns: &str,
    url: &str,
    clients: usize,
    streams: usize,
    duration: Duration,
) -> Completed {
    let out = in_client(
        netns,
        "h2load",
        &[
            "-c",
            &clients.to_string(),
            "-m",
            &streams.to_string(),
            "-D",
            &whole_seconds(duration).to_string(),
            url,
        ],
    )
    .output()
    .expect("run h2load (apt-get install -y nghttp2-client)");
    let text = checked("h2load", &out);
    parse_h2load(&text).unwrap_or_else(|| panic!("cannot read h2load's summary:\n{text}"))
}

fn whole_seconds(d: Duration) -> u64 {
    d.as_secs().max(1)
}

/// `program args` inside `netns`, pinned to the load CPU.
fn in_client(netns: &str, program: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net=/var/run/netns/{netns}"))
        .args([
            "--",
            "taskset",
            "-c",
            &method::LOAD_CPU.to_string(),
            program,
        ])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

fn checked(what: &str, out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        text,
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// wrk's summary: `N requests in 2.00s, …`, `Non-2xx or 3xx responses: K`,
/// `Socket errors: connect a, read b, write c, timeout d`.
fn parse_wrk(text: &str) -> Option<Completed> {
    let line = text.lines().find(|l| l.contains(" requests in "))?;
    let mut words = line.split_whitespace();
    let total: u64 = words.next()?.parse().ok()?;
    let seconds = duration_seconds(words.nth(2)?.trim_end_matches(','))?;
    let non_2xx: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    // Errors other than non-2xx answers are not in `total`.
    let socket_errors: u64 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|v| {
            v.split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Some(Completed {
        ok: total - non_2xx,
        failed: non_2xx + socket_errors,
        seconds,
    })
}

/// `2.00s`, `850.12ms`, `1.00m` as seconds.
fn duration_seconds(s: &str) -> Option<f64> {
    if let Some(v) = s.strip_suffix("ms") {
        return Some(v.parse::<f64>().ok()? / 1e3);
    }
    if let Some(v) = s.strip_suffix("us") {
        return Some(v.parse::<f64>().ok()? / 1e6);
    }
    if let Some(v) = s.strip_suffix('s') {
        return v.parse().ok();
    }
    if let Some(v) = s.strip_suffix('m') {
        return Some(v.parse::<f64>().ok()? * 60.0);
    }
    None
}

/// h2load's summary: `finished in 2.00s, …`, `requests: T total, …, S
/// succeeded, F failed, E errored, O timeout`, `status codes: A 2xx, …`.
fn parse_h2load(text: &str) -> Option<Completed> {
    let finished = text.lines().find_map(|l| l.strip_prefix("finished in "))?;
    let seconds = duration_seconds(finished.split(',').next()?.trim())?;
    let count = |line_prefix: &str, name: &str| -> Option<u64> {
        let line = text.lines().find_map(|l| l.strip_prefix(line_prefix))?;
        line.split(',').find_map(|kv| {
            let mut w = kv.split_whitespace();
            let n = w.next()?;
            (w.next()? == name).then(|| n.parse().ok()).flatten()
        })
    };
    // `done` counts every request that ended, answered or not; those
    // still in flight when the time ran out are neither.
    let done = count("requests: ", "done")?;
    let ok = count("status codes: ", "2xx")?;
    Some(Completed {
        ok,
        failed: done.saturating_sub(ok),
        seconds,
    })
}
