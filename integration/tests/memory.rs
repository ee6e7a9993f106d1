//! ztunnel under a memory limit (reliability.md §5 E2): thousands of idle
//! connections and concurrent bulk transfers through both ztunnels, each in
//! a memory cgroup of 128 MiB, must end without an OOM kill, every byte
//! delivered. Needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, TCP_PORT, host};

const LIMIT: u64 = 128 << 20;

/// A memory cgroup of this test's own, v2 or v1 (whichever the machine
/// mounts the memory controller with). Removed on drop.
struct MemoryCgroup {
    dir: PathBuf,
    v2: bool,
}

impl MemoryCgroup {
    fn create(name: &str, limit: u64) -> Self {
        let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers")
            .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
        let root = if v2 {
            PathBuf::from("/sys/fs/cgroup")
        } else {
            PathBuf::from("/sys/fs/cgroup/memory")
        };
        assert!(
            root.join("cgroup.procs").exists(),
            "no memory cgroup controller at {} (v2 without memory, or v1 not mounted)",
            root.display()
        );
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        let cg = Self { dir, v2 };
        let file = if v2 {
            "memory.max"
        } else {
            "memory.limit_in_bytes"
        };
        cg.write(file, &limit.to_string());
        cg
    }

    fn write(&self, file: &str, value: &str) {
        let path = self.dir.join(file);
        std::fs::write(&path, value).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    fn read(&self, file: &str) -> String {
        let path = self.dir.join(file);
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn add(&self, pid: u32) {
        self.write("cgroup.procs", &pid.to_string());
    }

    /// Processes the kernel killed for want of memory in this cgroup.
    fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        self.read(file)
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or_else(|| panic!("no oom_kill count in {file}"))
    }

    /// The most memory charged at once, in bytes.
    fn peak(&self) -> u64 {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        self.read(file).trim().parse().unwrap_or(0)
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Its processes have ended with the cluster; rmdir may need a moment.
        for _ in 0..50 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Opens `n` connections from `netns` to `to` in 4 threads, each read up to
/// the server's first line.
fn open_idle(netns: &str, to: SocketAddr, n: usize) -> Vec<TcpStream> {
    let threads: Vec<_> = (0..4)
        .map(|t| {
            host::spawn_in_netns(netns, move || {
                (t..n)
                    .step_by(4)
                    .map(|i| {
                        let s = TcpStream::connect_timeout(&to, Duration::from_secs(10))
                            .unwrap_or_else(|e| panic!("idle connection {i}: {e}"));
                        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                        let mut line = String::new();
                        BufReader::new(&s).read_line(&mut line).unwrap();
                        assert!(line.starts_with("server"), "connection {i}: {line:?}");
                        s
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect()
}

/// Sends `bytes` over a connection to the echo port and reads them back;
/// returns how many came back intact.
fn bulk(netns: &str, to: SocketAddr, bytes: usize) -> std::thread::JoinHandle<usize> {
    let s = host::spawn_in_netns(netns, move || {
        TcpStream::connect_timeout(&to, Duration::from_secs(10))
    })
    .join()
    .unwrap()
    .expect("bulk connection");
    std::thread::spawn(move || {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut reader = BufReader::new(s.try_clone().unwrap());
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let mut writer = s;
        let sender = std::thread::spawn(move || {
            let chunk: Vec<u8> = (0..64 * 1024).map(|i| (i % 251) as u8).collect();
            let mut sent = 0;
            while sent < bytes {
                let n = chunk.len().min(bytes - sent);
                writer.write_all(&chunk[..n]).unwrap();
                sent += n;
            }
        });
        let mut got = 0;
        let mut buf = vec![0u8; 64 * 1024];
        while got < bytes {
            let n = reader.read(&mut buf).expect("echo read");
            if n == 0 {
                break;
            }
            for (j, b) in buf[..n].iter().enumerate() {
                assert_eq!(
                    *b,
                    ((got + j) % (64 * 1024) % 251) as u8,
                    "byte {}",
                    got + j
                );
            }
            got += n;
        }
        sender.join().unwrap();
        got
    })
}

/// The spec's numbers: 5,000 idle streams, then 50 concurrent transfers of
/// 100 MiB, each echoed back (10 GB through each ztunnel, about 40 s with
/// the debug binaries).
#[test]
fn thousands_of_idle_streams_and_bulk_transfers_fit_in_128_mib() {
    const IDLE: usize = 5000;
    const TRANSFERS: usize = 50;
    const BYTES: usize = 100 << 20;
    let tag = format!("mesh-e2-{:08x}", rand::random::<u32>());
    let cgroups = [
        MemoryCgroup::create(&format!("{tag}-a"), LIMIT),
        MemoryCgroup::create(&format!("{tag}-b"), LIMIT),
    ];
    let c = Cluster::client_and_server("client", "server");
    let (client, server) = (c.get("apps", "client"), c.get("apps", "server"));
    let pids = [c.ztunnel_pid("node-a"), c.ztunnel_pid("node-b")];
    for (cg, pid) in cgroups.iter().zip(pids) {
        cg.add(pid);
    }
    let to = SocketAddr::from((server.ip, TCP_PORT));
    let netns = client.netns.clone();

    let started = Instant::now();
    let mut idle = open_idle(&netns, to, IDLE);
    let opened = started.elapsed();
    let transfers: Vec<_> = (0..TRANSFERS).map(|_| bulk(&netns, to, BYTES)).collect();
    let echoed: Vec<usize> = transfers.into_iter().map(|t| t.join().unwrap()).collect();
    let moved = started.elapsed() - opened;
    // The idle connections are all still served.
    for (i, s) in idle.iter_mut().enumerate().step_by(50) {
        s.write_all(b"still there\n").unwrap();
        let mut line = String::new();
        BufReader::new(&*s)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("idle connection {i} after the transfers: {e}"));
        assert_eq!(line, "still there\n", "idle connection {i}");
    }
    let (peaks, kills) = (
        cgroups.each_ref().map(MemoryCgroup::peak),
        cgroups.each_ref().map(MemoryCgroup::oom_kills),
    );
    eprintln!(
        "{IDLE} idle connections in {opened:?}; {TRANSFERS} × {} MiB echoed in {moved:?}; \
         peak charged memory node-a {} MiB, node-b {} MiB (limit {} MiB); OOM kills {kills:?}",
        BYTES >> 20,
        peaks[0] >> 20,
        peaks[1] >> 20,
        LIMIT >> 20
    );
    assert_eq!(kills, [0, 0], "ztunnel was OOM-killed");
    assert!(
        echoed.iter().all(|n| *n == BYTES),
        "transfers cut short: {echoed:?}"
    );
    for (node, pid) in ["node-a", "node-b"].iter().zip(pids) {
        assert_eq!(c.ztunnel_pid(node), pid, "{node}'s ztunnel was replaced");
    }
    drop(idle);
    drop(c);
}
