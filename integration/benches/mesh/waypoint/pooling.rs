//! P15: 100 client connections into a 2-worker waypoint, carried by one
//! pooled HBONE connection (ztunnel's default pool, 100 streams per
//! connection) against 100 HBONE connections (a cluster whose ztunnels run
//! with `POOL_MAX_STREAMS_PER_CONNECTION=1`). Two clusters side by side,
//! alternated.

use std::net::Ipv4Addr;
use std::time::Duration;

use integration::cluster::host::{Proc, ns_output};
use integration::cluster::{Cluster, PodSpec, Redirect};

use super::load::{self, Costed};
use super::servers::{self, HTTP1_PORT};
use super::topology::{self, AMBIENT, USE_WAYPOINT, until};
use crate::method::{self, Plan, Series, alternate};
use crate::report::{Goal, Report};

const CONNECTIONS: usize = 100;

/// One cluster: client (node-a) → ztunnel → waypoint (node-b) → ztunnel →
/// backend nginx (node-b).
struct Pair {
    _backend: Proc,
    _cluster: Cluster,
    vip: Ipv4Addr,
    waypoint_ip: Ipv4Addr,
    waypoint_pid: u32,
    client_netns: String,
}

impl Pair {
    fn start(streams_per_connection: Option<usize>) -> Self {
        let mut c = Cluster::start_with(&["node-a", "node-b"], Redirect::Nftables);
        if let Some(n) = streams_per_connection {
            c.ztunnel_env
                .push(("POOL_MAX_STREAMS_PER_CONNECTION", n.to_string()));
            // Before any pod exists, so nothing is lost in the restart.
            for node in ["node-a", "node-b"] {
                c.stop_ztunnel(node);
                c.start_ztunnel(node);
            }
        }
        c.namespace("mesh", &[AMBIENT, USE_WAYPOINT]);
        c.waypoint_env
            .push(("WAYPOINT_WORKER_THREADS", "2".to_string()));
        let waypoint_ip = c.waypoint("mesh", "waypoint", "node-b", None);
        c.pod(PodSpec::new("mesh", "client", "node-a"));
        c.pod(PodSpec::new("mesh", "backend", "node-b"));
        let vip = c.service_with_ports("mesh", "backend", "backend", &[("http", HTTP1_PORT, None)]);
        let backend_netns = c.get("mesh", "backend").netns.clone();
        topology::backend_sysctls(&backend_netns);
        let backend = servers::backend(c.dir.path(), "backend", &backend_netns);
        for name in ["client", "backend"] {
            let pod = c.get("mesh", name);
            c.wait_for(&format!("mesh/{name} is captured"), |c| c.captured(pod));
        }
        let client_netns = c.get("mesh", "client").netns.clone();
        let url = format!("http://{vip}:{HTTP1_PORT}/");
        let expected = waypoint_ip.to_string();
        until("the client's requests cross the waypoint", || {
            topology::peer(&client_netns, &url, false).is_some_and(|p| p == expected)
        });
        topology::quiet_access_logs(&c, &["mesh/waypoint"]);
        Pair {
            _backend: backend,
            vip,
            waypoint_ip,
            waypoint_pid: c.get("mesh", "waypoint").app.pid(),
            client_netns,
            _cluster: c,
        }
    }

    /// Bytes received so far on each ESTABLISHED connection from the client
    /// pod (where in-pod ztunnel dials from) to the waypoint's HBONE port.
    fn hbone_received(&self) -> Vec<(String, u64)> {
        let out = ns_output(
            &self.client_netns,
            "ss",
            &[
                "-Htin",
                "state",
                "established",
                "dst",
                &format!("{}:15008", self.waypoint_ip),
            ],
        );
        // One line with the addresses, one with the TCP info, per socket.
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines
            .chunks(2)
            .map(|pair| {
                let local = pair[0].split_whitespace().nth(2).unwrap_or("").to_string();
                let received = pair
                    .get(1)
                    .and_then(|info| {
                        info.split_whitespace()
                            .find_map(|kv| kv.strip_prefix("bytes_received:"))
                    })
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                (local, received)
            })
            .collect()
    }

    /// The HBONE connections to the waypoint that carried traffic over
    /// `window`.
    fn carriers(&self, window: Duration) -> Carriers {
        let before = self.hbone_received();
        std::thread::sleep(window);
        let after = self.hbone_received();
        let deltas: Vec<u64> = after
            .iter()
            .map(|(local, bytes)| {
                let was = before.iter().find(|(l, _)| l == local).map_or(0, |b| b.1);
                bytes.saturating_sub(was)
            })
            .filter(|d| *d > 0)
            .collect();
        let total: u64 = deltas.iter().sum();
        Carriers {
            busy: deltas.len(),
            busiest_share: deltas
                .iter()
                .max()
                .map_or(0.0, |m| *m as f64 / total as f64),
        }
    }

    /// wrk -t2 -c100 for `duration`, looking at the HBONE connections a
    /// third of the way through.
    fn sample(&self, duration: Duration) -> (Costed, Carriers) {
        let url = format!("http://{}:{HTTP1_PORT}/", self.vip);
        let mut carriers = Carriers::default();
        let run = load::costed(self.waypoint_pid, || {
            let wrk = load::wrk_start(&self.client_netns, &url, 2, CONNECTIONS, duration);
            std::thread::sleep(duration / 3);
            carriers = self.carriers(duration / 4);
            load::wrk_result(wrk)
        });
        run.done.check("wrk through the 2-worker waypoint");
        (run, carriers)
    }
}

/// Which HBONE connections carried a run's traffic.
#[derive(Clone, Copy, Debug, Default)]
struct Carriers {
    /// Connections that received data.
    busy: usize,
    /// The busiest one's share of the bytes received.
    busiest_share: f64,
}

pub fn run(plan: &Plan, report: &mut Report) {
    eprintln!("P15: {CONNECTIONS} connections into a 2-worker waypoint, pooled vs separate HBONE");
    let pairs = [Pair::start(None), Pair::start(Some(1))];
    for p in &pairs {
        p.sample(Duration::from_secs(1));
    }
    let mut rps = [Series::default(), Series::default()];
    let mut per_cpu = [Series::default(), Series::default()];
    let mut carriers = [Vec::new(), Vec::new()];
    alternate(plan.rounds, &pairs, |i, p| {
        let (run, c) = p.sample(plan.sample);
        eprintln!(
            "  {}: {:.0} req/s over {} busy HBONE connections (busiest {:.1} % of bytes), waypoint {:.0} % of a CPU",
            ["pooled", "separate"][i],
            run.done.rps(),
            c.busy,
            c.busiest_share * 100.0,
            run.utilisation() * 100.0
        );
        rps[i].push(run.done.rps());
        per_cpu[i].push(run.per_cpu());
        carriers[i].push(c);
    });
    let [pooled_carriers, separate_carriers] = &carriers;
    // One connection carries (almost) everything; see the note on rounds
    // where a few streams spilled onto a second.
    assert!(
        pooled_carriers.iter().all(|c| c.busiest_share >= 0.9),
        "the default pool should carry the {CONNECTIONS} connections over one HBONE connection, saw {pooled_carriers:?}"
    );
    assert!(
        separate_carriers.iter().all(|c| c.busy >= CONNECTIONS),
        "POOL_MAX_STREAMS_PER_CONNECTION=1 should give {CONNECTIONS} HBONE connections, saw {separate_carriers:?}"
    );
    let [pooled, separate] = rps;
    report.ratio(
        "P15",
        "2-worker waypoint rps, 100 connections over one pooled HBONE connection",
        "req/s",
        pooled,
        "100 separate HBONE connections",
        separate,
        Goal::AtLeast(0.9),
        "≥ 90% of 100 separate connections",
    );
    let least_share = pooled_carriers
        .iter()
        .map(|c| c.busiest_share)
        .fold(1.0, f64::min);
    report.extra("P15.pooled.busiestHboneShareMin", least_share);
    report.extra(
        "P15.pooled.requestsPerWaypointCpuSecond",
        per_cpu[0].median(),
    );
    report.extra(
        "P15.separate.requestsPerWaypointCpuSecond",
        per_cpu[1].median(),
    );
    let busy = |v: &[Carriers]| v.iter().map(|c| c.busy).collect::<Vec<_>>();
    report.note(format!(
        "P15: wrk -t2 -c{CONNECTIONS} on CPU {} with the nginx backend; the 2-worker waypoint and the ztunnels are not pinned (both CPUs), so the figure is the whole pair's throughput. HBONE connections from the client's ztunnel to the waypoint that received data mid-run (`ss -i`), per round: {:?} pooled (the busiest carrying at least {:.1} % of the bytes), {:?} with POOL_MAX_STREAMS_PER_CONNECTION=1.",
        method::LOAD_CPU,
        busy(pooled_carriers),
        least_share * 100.0,
        busy(separate_carriers),
    ));
    if pooled_carriers.iter().any(|c| c.busy > 1) {
        report.note(
            "P15: in some rounds a few of the 100 client connections spilled onto a second HBONE connection: the pooled connection left over from the previous round reached its 100-stream limit before it had taken all 100 (apparently it still counted streams whose clients had closed), and ztunnel dialled another for the rest.",
        );
    }
}
