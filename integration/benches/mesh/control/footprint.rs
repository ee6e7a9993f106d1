//! P10 with the release binaries, as they run in a cluster: istiod-lite
//! serving the synthetic cluster's manifests, and a ztunnel (on a node
//! with none of its pods, so it holds the mesh and fetches no
//! certificates) connected to it. Memory is VmRSS from `/proc`, read once
//! the ztunnel is ready (its first response of each type applied) and has
//! settled for a second; per workload it is the growth over the same
//! ztunnel serving an empty mesh, divided by the workloads.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use istiod_lite::ca::{CertificateAuthority, TokenIssuer};
use mesh_core::TrustDomain;

use super::client;
use super::mesh::{self, Size};
use crate::method::{self, LOAD_CPU, PROXY_CPU, Plan, Series};
use crate::report::{Goal, Report};

/// The empty mesh first: it is the baseline of the others.
const SIZES: [Size; 3] = [Size::new(0), Size::new(10_000), Size::new(100_000)];
/// Reading 100k pods of YAML takes a while on a busy machine.
const START_LIMIT: Duration = Duration::from_secs(300);
/// After readiness, before memory is read.
const SETTLE: Duration = Duration::from_secs(1);

pub fn run(plan: &Plan, report: &mut Report) {
    let bin = release_dir();
    let dir = tempfile::tempdir().expect("temp dir");
    let mut ztunnel_kib: Vec<Series> = Vec::new();
    for size in SIZES {
        let label = size.label();
        let base = dir.path().join(&label);
        let manifests = base.join("manifests");
        mesh::write(&manifests, size);
        let istiod = IstiodProcess::start(&bin, &base, &manifests);
        report.extra(
            format!("P10.istiodLite.startSeconds.{label}"),
            istiod.started_in,
        );
        report.extra(
            format!("P10.istiodLite.rssMiB.{label}"),
            method::rss_kib(istiod.child.id()) as f64 / 1024.0,
        );
        let mut rss = Series::default();
        let mut ready = Series::default();
        for round in 0..plan.rounds {
            let z = ZtunnelProcess::start(&bin, &base, &istiod, round);
            ready.push(z.ready_in);
            std::thread::sleep(SETTLE);
            let (kib, hwm) = method::memory_kib(z.child.id());
            rss.push(kib as f64);
            if round == 0 {
                report.extra(format!("P10.ztunnel.hwmMiB.{label}"), hwm as f64 / 1024.0);
            }
        }
        report.extra(format!("P10.ztunnel.readySeconds.{label}"), ready.median());
        report.extra(format!("P10.ztunnel.rssMiB.{label}"), rss.median() / 1024.0);
        // After serving the ztunnels: what it keeps per connected proxy too.
        let (kib, hwm) = method::memory_kib(istiod.child.id());
        report.extra(
            format!("P10.istiodLite.rssAfterPushMiB.{label}"),
            kib as f64 / 1024.0,
        );
        report.extra(
            format!("P10.istiodLite.hwmMiB.{label}"),
            hwm as f64 / 1024.0,
        );
        ztunnel_kib.push(rss);
    }

    // Growth over the empty mesh (the first size), round by round.
    let per_workload = |i: usize| {
        let mut s = Series::default();
        for (with, without) in ztunnel_kib[i].samples.iter().zip(&ztunnel_kib[0].samples) {
            s.push((with - without) * 1024.0 / SIZES[i].workloads as f64);
        }
        s
    };
    let largest = SIZES.len() - 1;
    for (i, size) in SIZES.iter().enumerate().take(largest).skip(1) {
        report.extra(
            format!("P10.ztunnel.bytesPerWorkload.{}", size.label()),
            per_workload(i).median(),
        );
    }
    let size = SIZES[largest];
    report.absolute(
        "P10",
        format!(
            "ztunnel resident memory per workload, {} workloads + {} services",
            size.label(),
            Size::new(size.services()).label()
        ),
        "B",
        per_workload(largest),
        Goal::AtMost(300.0),
        "≤ 300 B per workload",
    );
    report.note(format!(
        "P10 memory: the release ztunnel (one worker, CPU {PROXY_CPU}) connected to the release istiod-lite (CPU {LOAD_CPU}) \
         serving the manifests; bytes per workload = (VmRSS with the mesh − VmRSS with an empty mesh) / workloads, each sample \
         a fresh ztunnel, read {}s after it became ready. The growth includes the Services (one per 10 workloads), the xDS \
         client's record of every resource's version, and whatever the allocator kept of the decoded response (up to tens of MB \
         at 100k), so it bounds the state from above; `P10.ztunnelStateHeapBytesPerWorkload.*` is the heap ztunnel's `ProxyState` alone \
         holds after the in-process apply (glibc's mallinfo2, in use after − before). istiod-lite's figures are its VmRSS after reading the manifests and \
         after serving the ztunnels (`P10.istiodLite.*`).",
        SETTLE.as_secs()
    ));
}

/// `target/release`, where `cargo xtask bench` builds the binaries.
fn release_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("bench binary path");
    let mut dir = exe.parent().expect("target directory").to_path_buf();
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.pop();
    }
    for bin in ["istiod-lite", "ztunnel"] {
        assert!(
            dir.join(bin).exists(),
            "{} is not built: cargo build --release --bins -p istiod-lite -p ztunnel (cargo xtask bench does)",
            dir.join(bin).display()
        );
    }
    dir
}

/// A child process killed (by its id) when dropped, so a failed run
/// leaves nothing behind.
struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    fn spawn(mut cmd: Command, log: PathBuf, cpu: usize) -> Self {
        let file = std::fs::File::create(&log).expect("log file");
        let child = cmd
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
        method::pin(child.id(), &cpu.to_string());
        Self { child, log }
    }

    fn id(&self) -> u32 {
        self.child.id()
    }

    /// Waits until `done`, failing with the log if the process exits first.
    fn wait_for(&mut self, what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + START_LIMIT;
        while !done() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{what}: exited with {status}:\n{}", self.log_tail());
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within {START_LIMIT:?}:\n{}",
                self.log_tail()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct IstiodProcess {
    child: Process,
    addr: SocketAddr,
    root_pem: String,
    tokens: TokenIssuer,
    /// From spawning until the gRPC port accepts (it binds only after
    /// reading the manifests and translating them).
    started_in: f64,
}

impl IstiodProcess {
    fn start(bin: &Path, base: &Path, manifests: &Path) -> Self {
        let state = base.join("state");
        // Created here, loaded by the process: both ends share the root
        // and the token key.
        let ca =
            CertificateAuthority::load_or_generate(&state, TrustDomain::default()).expect("CA");
        let tokens = TokenIssuer::load_or_generate(&state).expect("token key");
        let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port());
        let mut cmd = Command::new(bin.join("istiod-lite"));
        cmd.env_clear()
            .env("RUST_LOG", "warn")
            .arg("serve")
            .arg("--state-dir")
            .arg(&state)
            .arg("--config-dir")
            .arg(manifests)
            .args([
                "--grpc-addr",
                &addr.to_string(),
                "--monitoring-addr",
                "none",
            ]);
        let started = Instant::now();
        let mut child = Process::spawn(cmd, base.join("istiod-lite.log"), LOAD_CPU);
        child.wait_for("istiod-lite serving", || TcpStream::connect(addr).is_ok());
        Self {
            started_in: started.elapsed().as_secs_f64(),
            child,
            addr,
            root_pem: ca.root_pem().to_string(),
            tokens,
        }
    }
}

struct ZtunnelProcess {
    child: Process,
    /// From spawning until `/healthz/ready` answers 200.
    ready_in: f64,
}

impl ZtunnelProcess {
    fn start(bin: &Path, base: &Path, istiod: &IstiodProcess, round: usize) -> Self {
        const NODE: &str = "bench-node";
        let readiness = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), free_port());
        let any = "127.0.0.1:0";
        let istiod_addr = istiod.addr.to_string();
        let mut cmd = Command::new(bin.join("ztunnel"));
        cmd.env_clear()
            .env("RUST_LOG", "warn")
            .env(ztunnel::config::NODE_NAME, NODE)
            .env(ztunnel::config::CA_ADDRESS, &istiod_addr)
            .env(ztunnel::config::XDS_ADDRESS, &istiod_addr)
            .env(ztunnel::config::CA_ROOT_CA, &istiod.root_pem)
            .env(
                ztunnel::config::AUTH_TOKEN,
                client::ztunnel_token(&istiod.tokens, NODE),
            )
            .env(ztunnel::config::OUTBOUND_ADDR, any)
            .env(ztunnel::config::INBOUND_ADDR, any)
            .env(ztunnel::config::INBOUND_PLAINTEXT_ADDR, any)
            .env(ztunnel::config::ADMIN_ADDR, "none")
            .env(ztunnel::config::STATS_ADDR, "none")
            .env(ztunnel::config::READINESS_ADDR, readiness.to_string())
            .env(ztunnel::config::ZTUNNEL_WORKER_THREADS, "1");
        let started = Instant::now();
        let mut child = Process::spawn(cmd, base.join(format!("ztunnel-{round}.log")), PROXY_CPU);
        child.wait_for("ztunnel ready", || is_ready(readiness));
        Self {
            ready_in: started.elapsed().as_secs_f64(),
            child,
        }
    }
}

/// Whether `/healthz/ready` at `addr` answers 200.
fn is_ready(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(100)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    s.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}

/// A port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("an ephemeral port")
        .port()
}
