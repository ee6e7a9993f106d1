//! What `/proc` says about a process: CPU time, memory, threads,
//! descriptors and limits. Shared by the tests and the benchmarks.

/// User plus system CPU time (all threads), in USER_HZ ticks: 100 a
/// second on Linux, whatever the kernel's own HZ.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The fields after the command (which may hold spaces) start at ") ";
    // utime and stime are fields 14 and 15 of the whole line.
    let rest = &stat[stat.rfind(')').expect("stat has a command") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

pub const TICKS_PER_SECOND: u64 = 100;

/// A numeric field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in KiB,
/// `Threads`), 0 when absent.
pub fn status(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// How many descriptors the process has open.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
        .count()
}

/// The process's `soft:hard` limit on open files, as `prlimit` takes it.
pub fn nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/limits: {e}"));
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let v: Vec<&str> = line.split_whitespace().collect();
    format!("{}:{}", v[3], v[4])
}
