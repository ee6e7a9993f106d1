//! Churn: pods added and deleted over and over (reliability.md §5 R7), and
//! connections opened and closed at a steady rate (E3), leave no
//! descriptor, thread, memory or network namespace behind. Needs root;
//! runs with either redirection.
//!
//! With eBPF it found an agent bug: a capture that failed once (a
//! reconcile reaching a sandbox being torn down, which has no interface)
//! left the pod marked not captured after the next CNI ADD captured it.

use std::time::Duration;

use integration::cluster::{Cluster, host};
use integration::metrics::counter;
use integration::process::{open_fds, status};

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");

/// Network namespaces this cluster has pinned by name (`ip netns`), and
/// those `pids` hold open.
fn netns_held(prefix: &str, pids: &[u32]) -> (usize, usize) {
    let out = std::process::Command::new("ip")
        .args(["netns", "list"])
        .output()
        .unwrap();
    let named = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count();
    let open = pids
        .iter()
        .flat_map(|pid| std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap())
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("net:["))
        .count();
    (named, open)
}

#[test]
fn pod_churn_leaves_no_descriptors_threads_memory_or_namespaces_behind() {
    /// reliability.md asks for 500 add/delete cycles; 100 keep CI short
    /// and show any per-pod leak just as well.
    const CYCLES: usize = 100;
    let mut c = Cluster::start(&["node-a"]);
    c.namespace("apps", &[AMBIENT]);
    let cycle = |c: &mut Cluster| {
        c.captured_pods("apps", &[("churn", "node-a")]);
        c.wait_for("ztunnel serves apps/churn", |c| {
            let pods = c.ztunnel_config_dump("node-a");
            pods.to_string().contains("churn")
        });
        assert!(c.delete_pod("apps", "churn"));
    };
    // Warm up: allocator arenas, pooled buffers, first-use caches.
    for _ in 0..10 {
        cycle(&mut c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let pid = c.ztunnel_pid("node-a");
    let pids = [pid, c.agent_pid("node-a")];
    let prefix = c
        .node("node-a")
        .netns
        .trim_end_matches("node-a")
        .to_string();
    let (fds, (threads, rss), namespaces) = (
        open_fds(pid),
        (status(pid, "Threads"), status(pid, "VmRSS")),
        netns_held(&prefix, &pids),
    );
    for _ in 0..CYCLES {
        cycle(&mut c);
    }
    // Released pods finish draining (immediately on delete) and leave.
    std::thread::sleep(Duration::from_secs(2));
    let (fds_after, (threads_after, rss_after), namespaces_after) = (
        open_fds(pid),
        (status(pid, "Threads"), status(pid, "VmRSS")),
        netns_held(&prefix, &pids),
    );
    eprintln!(
        "after {CYCLES} cycles: fds {fds} -> {fds_after}, threads {threads} -> {threads_after}, \
         RSS {rss} -> {rss_after} KiB, network namespaces (named, held open) \
         {namespaces:?} -> {namespaces_after:?}"
    );
    assert!(fds_after <= fds + 2, "descriptors {fds} -> {fds_after}");
    assert_eq!(threads_after, threads, "threads");
    assert!(
        rss_after <= rss + rss / 20,
        "RSS {rss} -> {rss_after} KiB (over 5 %)"
    );
    assert_eq!(
        namespaces_after, namespaces,
        "network namespaces left behind"
    );
}

/// Opens and closes connections from `client`'s namespace to `to` at
/// about `rate` a second for `for_`: each reads the server's first line
/// and closes. Returns (completed, failures with why).
fn open_and_close(
    netns: &str,
    to: std::net::SocketAddr,
    rate: u32,
    for_: Duration,
) -> (u64, Vec<String>) {
    use std::io::{BufRead, BufReader};
    const THREADS: u32 = 4;
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            host::spawn_in_netns(netns, move || {
                let gap = Duration::from_secs(1) / (rate / THREADS);
                let start = std::time::Instant::now();
                let (mut done, mut failed) = (0u64, Vec::new());
                while start.elapsed() < for_ {
                    let due = start + gap * (done as u32 + failed.len() as u32);
                    if let Some(wait) = due.checked_duration_since(std::time::Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let once = || -> std::io::Result<String> {
                        let s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(5))?;
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        let mut line = String::new();
                        BufReader::new(&s).read_line(&mut line)?;
                        Ok(line)
                    };
                    match once() {
                        Ok(line) if !line.is_empty() => done += 1,
                        Ok(_) => failed.push("closed before the first line".to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (done, failed)
            })
        })
        .collect();
    threads
        .into_iter()
        .map(|t| t.join().unwrap())
        .fold((0, Vec::new()), |(d, mut f), (d2, f2)| {
            f.extend(f2);
            (d + d2, f)
        })
}

/// reliability.md E3: connections opened and closed at a steady rate
/// through both ztunnels leave their descriptors, threads and memory where
/// they were, and every connection the metrics saw open they saw close.
#[test]
fn connection_churn_leaves_ztunnel_where_it_was_and_closes_what_it_opens() {
    /// The spec's 2,000 a second for 60 s, scaled for CI's debug binaries
    /// on 2 cores (which top out near 550 a second here): 400 a second
    /// for 30 s, 12,000 connections.
    const RATE: u32 = 400;
    const FOR: Duration = Duration::from_secs(30);
    let c = Cluster::client_and_server("client", "server");
    let (client, server) = (c.get("apps", "client"), c.get("apps", "server"));
    let to = std::net::SocketAddr::from((server.ip, integration::cluster::TCP_PORT));
    let netns = client.netns.clone();
    // Warm up: the HBONE pool, allocator arenas, first-use caches.
    let (_, failed) = open_and_close(&netns, to, RATE, Duration::from_secs(5));
    assert!(failed.is_empty(), "warm-up failures: {failed:?}");
    std::thread::sleep(Duration::from_secs(2));
    let pids = [c.ztunnel_pid("node-a"), c.ztunnel_pid("node-b")];
    let measure = |pid: u32| (open_fds(pid), status(pid, "Threads"), status(pid, "VmRSS"));
    let before = pids.map(measure);

    let (done, failed) = open_and_close(&netns, to, RATE, FOR);
    std::thread::sleep(Duration::from_secs(2));
    let after = pids.map(measure);
    eprintln!(
        "{done} connections in {FOR:?} ({:.0}/s), {} failed; (fds, threads, RSS KiB) \
         node-a {:?} -> {:?}, node-b {:?} -> {:?}",
        done as f64 / FOR.as_secs_f64(),
        failed.len(),
        before[0],
        after[0],
        before[1],
        after[1]
    );
    assert!(
        failed.is_empty(),
        "{} failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    assert!(
        // Not a speed target: a check that the churn happened at all.
        done as f64 >= f64::from(RATE) * FOR.as_secs_f64() * 0.5,
        "only {done} connections: the load fell far short of its rate"
    );
    for (node, (b, a)) in ["node-a", "node-b"].iter().zip(before.iter().zip(&after)) {
        let ((fds, threads, rss), (fds2, threads2, rss2)) = (b, a);
        assert!(
            *fds2 <= fds + fds / 10 + 1,
            "{node}: descriptors {fds} -> {fds2}"
        );
        assert_eq!(threads2, threads, "{node}: threads");
        assert!(
            *rss2 <= rss + rss / 10,
            "{node}: RSS {rss} -> {rss2} KiB (over 10 %)"
        );
    }
    // Every connection seen opened was seen closed, on both sides, and
    // each side saw at least the ones this test made.
    for (node, reporter) in [("node-a", "source"), ("node-b", "destination")] {
        let (_, metrics) = c.ztunnel_http(node, "GET", 15020, "/metrics");
        let selector = format!("reporter=\"{reporter}\"");
        let opened = counter(&metrics, "istio_tcp_connections_opened_total", &[&selector]);
        let closed = counter(&metrics, "istio_tcp_connections_closed_total", &[&selector]);
        eprintln!("{node} ({reporter}): opened {opened}, closed {closed}");
        assert_eq!(opened, closed, "{node}: opened {opened}, closed {closed}");
        assert!(
            opened >= done,
            "{node}: {opened} opened, fewer than the {done} made"
        );
    }
}
