//! The ztunnel pair (P1–P9) in the network-namespace cluster, beside the
//! same pods outside the mesh.
//!
//! Topology: a client pod on node-a and a server pod on node-b, enrolled
//! (`mesh`), so every byte goes client → redirection → ztunnel (node-a) →
//! HBONE → ztunnel (node-b) → server; the same pair unenrolled (`plain`)
//! is the direct baseline; an enrolled client to the unenrolled server is
//! plain passthrough. Both ztunnels run one worker and are pinned to the
//! proxy CPU; the bench's clients and servers run on the load CPU.

use std::net::Ipv4Addr;
use std::time::Duration;

use integration::cluster::{Cluster, HTTP_PORT, PodSpec, Redirect};

use crate::Only;
use crate::floor::{self, Tls};
use crate::method::{self, LOAD_CPU, PROXY_CPU, Plan, Series, cpu_of, rss_kib};
use crate::report::{Goal, Report};
use crate::traffic::{self, Stop};

struct Pair {
    client_ns: String,
    server_ip: Ipv4Addr,
}

struct Setup {
    c: Cluster,
    mesh: Pair,
    direct: Pair,
    passthrough: Pair,
    ztunnels: Vec<u32>,
}

impl Setup {
    fn start(workers: usize, extra_env: &[(&'static str, &str)]) -> Self {
        let mut c = Cluster::start_with(&["node-a", "node-b"], Redirect::Nftables);
        c.ztunnel_env = vec![("ZTUNNEL_WORKER_THREADS", workers.to_string())];
        c.ztunnel_env
            .extend(extra_env.iter().map(|(k, v)| (*k, v.to_string())));
        c.ztunnel_env.extend(tuning_env());
        for node in ["node-a", "node-b"] {
            c.stop_ztunnel(node);
            c.start_ztunnel(node);
        }
        // Pods are captured only once the agents talk to the new ztunnels.
        std::thread::sleep(Duration::from_millis(500));
        c.wait_for("the node agents reach the new ztunnels", |c| {
            ["node-a", "node-b"]
                .iter()
                .all(|n| c.agent_status(n)["ztunnelsConnected"].as_u64() == Some(1))
        });
        c.namespace("mesh", &[("istio.io/dataplane-mode", "ambient")]);
        c.namespace("plain", &[]);
        for ns in ["mesh", "plain"] {
            c.pod(PodSpec::new(ns, "client", "node-a"));
            c.pod(PodSpec::new(ns, "server", "node-b"));
        }
        for name in ["client", "server"] {
            let pod = c.get("mesh", name);
            c.wait_for("captured", |c| c.captured(pod));
        }
        let (client, server) = (c.get("mesh", "client"), c.get("mesh", "server"));
        c.curl_over_mtls(
            client,
            &format!("http://{}:{HTTP_PORT}/", server.ip),
            server,
        );
        for ns in ["mesh", "plain"] {
            traffic::serve(&c.get(ns, "server").netns);
            tune(&c.get(ns, "client").netns);
        }
        let pair = |cns: &str, sns: &str| Pair {
            client_ns: c.get(cns, "client").netns.clone(),
            server_ip: c.get(sns, "server").ip,
        };
        let (mesh, direct, passthrough) = (
            pair("mesh", "mesh"),
            pair("plain", "plain"),
            pair("mesh", "plain"),
        );
        let ztunnels = vec![c.ztunnel_pid("node-a"), c.ztunnel_pid("node-b")];
        let s = Setup {
            c,
            mesh,
            direct,
            passthrough,
            ztunnels,
        };
        s.pin(&PROXY_CPU.to_string());
        s
    }

    fn pin(&self, cpus: &str) {
        for pid in &self.ztunnels {
            method::pin(*pid, cpus);
        }
    }

    fn rss(&self) -> Vec<u64> {
        self.ztunnels.iter().map(|p| rss_kib(*p)).collect()
    }

    fn cpu(&self) -> f64 {
        cpu_of(&self.ztunnels)
    }
}

/// With `MESH_BENCH_PERF=DIR`, records a CPU profile of both ztunnels
/// (`perf record -g`) while `f` runs, into `DIR/<name>.perf`.
fn profiled<T>(s: &Setup, name: &str, f: impl FnOnce() -> T) -> T {
    let Ok(dir) = std::env::var("MESH_BENCH_PERF") else {
        return f();
    };
    let pids: Vec<String> = s.ztunnels.iter().map(u32::to_string).collect();
    let out = std::path::Path::new(&dir).join(format!("{name}.perf"));
    let mut perf = std::process::Command::new("perf")
        .args(["record", "-F", "999", "-g", "-o"])
        .arg(&out)
        .args(["-p", &pids.join(",")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("perf (linux-perf) runs");
    std::thread::sleep(Duration::from_millis(300));
    let r = f();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(perf.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    );
    let _ = perf.wait();
    eprintln!("profile: perf report -i {}", out.display());
    r
}

/// Extra ztunnel settings for experiments while profiling:
/// `MESH_BENCH_ZTUNNEL_ENV="HTTP2_FRAME_SIZE=65536,..."`.
fn tuning_env() -> Vec<(&'static str, String)> {
    let Ok(v) = std::env::var("MESH_BENCH_ZTUNNEL_ENV") else {
        return Vec::new();
    };
    v.split(',')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').expect("MESH_BENCH_ZTUNNEL_ENV: K=V,K=V");
            (&*Box::leak(k.to_string().into_boxed_str()), v.to_string())
        })
        .collect()
}

/// Short-lived connections by the thousand: a wide port range and reuse of
/// TIME_WAIT ports in the client's namespace.
fn tune(ns: &str) {
    for setting in [
        "net.ipv4.ip_local_port_range=1024 65000",
        "net.ipv4.tcp_tw_reuse=1",
    ] {
        integration::cluster::host::ns_sh(ns, "sysctl", &["-qw", setting]);
    }
}

pub fn run(plan: &Plan, only: &Only, report: &mut Report) {
    method::pin_this_thread(LOAD_CPU);
    let tls = Tls::new();
    let bulk_for = plan.sample;
    let round_trips = plan.pick(34_000, 100_000);

    let mut s = Setup::start(1, &[]);
    std::thread::sleep(Duration::from_secs(1));
    let idle_kib = s.rss();

    // P1, P3, P4: bulk and echo, alternating direct, mesh, passthrough.
    let mut bulk = [Series::default(), Series::default(), Series::default()];
    let mut cpu_per_gb = Series::default();
    let mut floor_cpu_per_gb = Series::default();
    let mut floor_mbps = Series::default();
    let mut loopback = Series::default();
    let mut p50 = [Series::default(), Series::default()];
    let mut p99 = [Series::default(), Series::default()];
    let mut p999 = [Series::default(), Series::default()];
    let mut bulk8 = Series::default();
    let wanted = only.any(&["P1", "P3", "P4", "P9"]);
    if wanted {
        let configs = [&s.direct, &s.mesh, &s.passthrough];
        method::alternate(plan.rounds, &configs, |i, p| {
            let cpu = s.cpu();
            let mbps = if i == 1 {
                profiled(&s, "P1", || {
                    traffic::bulk(&p.client_ns, p.server_ip, 1, bulk_for)
                })
            } else {
                traffic::bulk(&p.client_ns, p.server_ip, 1, bulk_for)
            };
            let used = s.cpu() - cpu;
            bulk[i].push(mbps);
            if i == 1 {
                let gb = mbps * bulk_for.as_secs_f64() / 1000.0;
                cpu_per_gb.push(used / gb);
            }
            if i < 2 {
                let l = traffic::echo_latency(
                    &p.client_ns,
                    p.server_ip,
                    round_trips,
                    Duration::from_secs(60),
                );
                p50[i].push(l.p50);
                p99[i].push(l.p99);
                p999[i].push(l.p999);
            }
        });
        for _ in 0..plan.rounds {
            let (mbps, cpu) = floor::tls_stream(&tls, plan.pick(512 << 20, 2 << 30));
            floor_mbps.push(mbps);
            floor_cpu_per_gb.push(cpu);
            loopback.push(floor::loopback_tcp(plan.pick(1 << 30, 4 << 30)));
        }
    }
    if only.any(&["P1"]) {
        report.ratio(
            "P1",
            "HBONE bulk, 1 connection, 2 hops",
            "MB/s",
            bulk[1].clone(),
            "direct, same pods",
            bulk[0].clone(),
            Goal::AtLeast(0.5),
            "≥ 50 % of direct",
        );
        let two_passes = Series {
            samples: floor_cpu_per_gb.samples.iter().map(|v| 2.0 * v).collect(),
        };
        report.ratio(
            "P1",
            "ztunnel pair CPU per GB, 1 connection",
            "CPU-s/GB",
            cpu_per_gb,
            "two rustls TLS passes",
            two_passes,
            Goal::AtMost(1.5),
            "≤ 1.5× two TLS passes",
        );
        report.extra("floor.rustlsStreamMBps", floor_mbps.median());
        report.extra("floor.loopbackTcpMBps", loopback.median());
    }
    if only.any(&["P3"]) {
        report.ratio(
            "P3",
            "plain TCP passthrough (non-mesh destination)",
            "MB/s",
            bulk[2].clone(),
            "direct, same pods",
            bulk[0].clone(),
            Goal::AtLeast(0.8),
            "≥ 80 % of direct",
        );
    }
    if only.any(&["P4"]) {
        let added = |s: &[Series; 2]| Series {
            samples: s[1]
                .samples
                .iter()
                .zip(&s[0].samples)
                .map(|(m, d)| m - d)
                .collect(),
        };
        report.absolute(
            "P4",
            format!("added p50 latency, 1 KiB echo, {round_trips} round trips per sample"),
            "µs",
            added(&p50),
            Goal::AtMost(80.0),
            "≤ 80 µs",
        );
        report.absolute(
            "P4",
            "added p99 latency, 1 KiB echo",
            "µs",
            added(&p99),
            Goal::AtMost(200.0),
            "≤ 200 µs",
        );
        report.extra("P4.direct.p50us", p50[0].median());
        report.extra("P4.direct.p99us", p99[0].median());
        report.extra("P4.direct.p999us", p999[0].median());
        report.extra("P4.mesh.p50us", p50[1].median());
        report.extra("P4.mesh.p99us", p99[1].median());
        report.extra("P4.mesh.p999us", p999[1].median());
    }

    // P9: a 1 KiB echo while 8 bulk streams share its HBONE connection.
    if only.any(&["P9"]) {
        let mut loaded = Series::default();
        let mut hol_trips = Series::default();
        for _ in 0..plan.rounds {
            let stop = Stop::default();
            let writers =
                traffic::background_bulk(&s.mesh.client_ns, s.mesh.server_ip, 8, stop.clone());
            std::thread::sleep(Duration::from_millis(300));
            let l = traffic::echo_latency(
                &s.mesh.client_ns,
                s.mesh.server_ip,
                round_trips / 10,
                plan.sample * 2,
            );
            hol_trips.push(l.samples as f64);
            stop.set();
            for w in writers {
                w.join().unwrap();
            }
            loaded.push(l.p99);
        }
        report.extra("P9.roundTripsPerSample", hol_trips.median());
        report.ratio(
            "P9",
            "1 KiB echo p99 beside 8 bulk streams on its HBONE connection",
            "µs",
            loaded,
            "idle p99, same run",
            p99[1].clone(),
            Goal::AtMost(2.0),
            "≤ 2× idle p99",
        );
    }

    // P2's 1-worker figure: 8 connections through the pinned pair.
    if only.any(&["P2"]) {
        for _ in 0..plan.rounds {
            bulk8.push(traffic::bulk(
                &s.mesh.client_ns,
                s.mesh.server_ip,
                8,
                bulk_for,
            ));
        }
    }

    // P5: new connections through the warm pool.
    if only.any(&["P5"]) {
        let mut mesh = Series::default();
        let mut direct = Series::default();
        method::alternate(plan.rounds, &[&s.direct, &s.mesh], |i, p| {
            if i == 0 {
                direct.push(traffic::connection_rate(
                    &p.client_ns,
                    p.server_ip,
                    4,
                    plan.sample,
                ));
            } else {
                mesh.push(profiled(&s, "P5", || {
                    traffic::connection_rate(&p.client_ns, p.server_ip, 4, plan.sample)
                }));
            }
        });
        report.extra("P5.directConnectionsPerSecond", direct.median());
        report.absolute(
            "P5",
            "new connections through a warm HBONE pool (both ztunnels on one core)",
            "conn/s",
            mesh,
            Goal::AtLeast(30_000.0),
            "≥ 30k/s",
        );
    }

    // P8: CPU at 1000 round trips/s of 1 KiB.
    if only.any(&["P8"]) {
        let mut vcpu = Series::default();
        let run_for = plan.pick(Duration::from_secs(5), Duration::from_secs(10));
        for _ in 0..plan.rounds {
            let cpu = s.cpu();
            let t = std::time::Instant::now();
            let done = profiled(&s, "P8", || {
                traffic::paced_echo(&s.mesh.client_ns, s.mesh.server_ip, 4, 1000.0, run_for)
            });
            let secs = t.elapsed().as_secs_f64();
            let used = s.cpu() - cpu;
            assert!(
                done as f64 >= 950.0 * run_for.as_secs_f64(),
                "the paced load fell behind: {done}"
            );
            // Two hops: the pair's CPU over two.
            vcpu.push(used / secs / 2.0);
        }
        report.absolute(
            "P8",
            "CPU per hop at 1000 req/s × 1 KiB (echo), 2 hops",
            "vCPU",
            vcpu,
            Goal::AtMost(0.03),
            "≤ 0.03 vCPU per hop",
        );
    }

    // P7: memory per idle connection, idle footprint, return after bulk.
    if only.any(&["P7"]) {
        let n = 5000;
        let before = s.rss();
        let held = traffic::hold(&s.mesh.client_ns, s.mesh.server_ip, n);
        std::thread::sleep(Duration::from_secs(2));
        let during = s.rss();
        drop(held);
        let per_conn: Vec<f64> = before
            .iter()
            .zip(&during)
            .map(|(b, d)| (*d as f64 - *b as f64) * 1024.0 / n as f64)
            .collect();
        report.extra("P7.clientZtunnelBytesPerConnection", per_conn[0]);
        report.extra("P7.serverZtunnelBytesPerConnection", per_conn[1]);
        report.absolute(
            "P7",
            format!("ΔRSS per idle proxied connection, worse ztunnel, {n} connections"),
            "B",
            Series {
                samples: vec![per_conn.iter().copied().fold(0.0, f64::max)],
            },
            Goal::AtMost(2048.0),
            "≤ 2 KiB",
        );
        report.absolute(
            "P7",
            "idle resident memory, larger ztunnel",
            "MB",
            Series {
                samples: vec![idle_kib.iter().copied().max().unwrap_or(0) as f64 / 1024.0],
            },
            Goal::AtMost(12.0),
            "≤ 12 MB",
        );
        // Bulk, then 10 s of rest: back within 10 % of idle?
        traffic::bulk(&s.mesh.client_ns, s.mesh.server_ip, 8, bulk_for);
        let peak = s.rss();
        std::thread::sleep(Duration::from_secs(10));
        let after = s.rss();
        let ratio = after
            .iter()
            .zip(&idle_kib)
            .map(|(a, i)| *a as f64 / *i as f64)
            .fold(0.0, f64::max);
        report.extra(
            "P7.rssAfterBulkPeakKiB",
            peak.iter().copied().max().unwrap_or(0) as f64,
        );
        report.absolute(
            "P7",
            "resident memory 10 s after bulk transfers, over idle",
            "×",
            Series {
                samples: vec![ratio],
            },
            Goal::AtMost(1.10),
            "within 10 % of idle",
        );
    }

    // P6: cold connections, a new mTLS handshake each.
    if only.any(&["P6"]) {
        s = restart(s, 1, &[("POOL_MAX_STREAMS_PER_CONNECTION", "1")]);
        let mut cold = Series::default();
        let mut ceiling = Series::default();
        for _ in 0..plan.rounds {
            cold.push(traffic::connection_rate(
                &s.mesh.client_ns,
                s.mesh.server_ip,
                4,
                plan.sample,
            ));
            ceiling.push(floor::mutual_handshakes_per_sec(&tls, plan.sample));
        }
        report.ratio(
            "P6",
            "cold HBONE connections (new mTLS handshake each), both ztunnels on one core",
            "conn/s",
            cold,
            "rustls mutual handshakes on one core",
            ceiling,
            Goal::AtLeast(0.6),
            "≥ 60 % of the rustls ceiling",
        );
    }

    // P2: 8 connections with 2 workers, unpinned.
    if only.any(&["P2"]) {
        s = restart(s, 2, &[]);
        s.pin("0-1");
        let mut two = Series::default();
        for _ in 0..plan.rounds {
            two.push(traffic::bulk_on(
                &s.mesh.client_ns,
                s.mesh.server_ip,
                8,
                bulk_for,
                None,
            ));
        }
        report.ratio(
            "P2",
            "HBONE bulk, 8 connections, 2 workers per ztunnel (both CPUs)",
            "MB/s",
            two,
            "1 worker, pinned, same 8 connections",
            bulk8,
            Goal::AtLeast(1.7),
            "≥ 1.7× the 1-worker figure",
        );
        report.note(
            "P2: on this 2-core machine the load generator and the sink share the two CPUs \
             with both ztunnels, so the 2-worker figure cannot double; the ratio shows whether \
             the second worker is used at all.",
        );
    }
    drop(s);
}

/// Restarts both ztunnels with new settings; the node agents hand them the
/// pods again.
fn restart(mut s: Setup, workers: usize, env: &[(&'static str, &str)]) -> Setup {
    s.c.ztunnel_env = vec![("ZTUNNEL_WORKER_THREADS", workers.to_string())];
    s.c.ztunnel_env
        .extend(env.iter().map(|(k, v)| (*k, v.to_string())));
    s.c.ztunnel_env.extend(tuning_env());
    for node in ["node-a", "node-b"] {
        s.c.stop_ztunnel(node);
        s.c.start_ztunnel(node);
    }
    let (client, server) = (s.c.get("mesh", "client"), s.c.get("mesh", "server"));
    s.c.curl_over_mtls(
        client,
        &format!("http://{}:{HTTP_PORT}/", server.ip),
        server,
    );
    s.ztunnels = vec![s.c.ztunnel_pid("node-a"), s.c.ztunnel_pid("node-b")];
    s.pin(&PROXY_CPU.to_string());
    s
}
