//! The waypoint as an L7 proxy (P12–P15): against nginx and haproxy on the
//! same core, in mesh mode with a policy and a route, and carrying many
//! client connections over one pooled HBONE connection.
//!
//! - P12: HTTP/1.1 keep-alive, 1 KiB answers, one worker. The capacity
//!   figure is requests per proxy CPU-second under wrk (on 2 cores the load
//!   side may saturate before the proxy does; this is the rate the proxy
//!   would serve with its core to itself); the latency figure is p99 of an
//!   open-loop client at half of nginx's achieved rate.
//! - P13: h2c from h2load, requests per proxy CPU-second against haproxy
//!   and nginx.
//! - P14: the waypoint's CPU at 1000 rps with an AuthorizationPolicy and an
//!   HTTPRoute in force.
//! - P15: 100 connections over one pooled HBONE connection against 100
//!   HBONE connections, into a 2-worker waypoint ([`pooling`]).
//!
//! [`topology`] draws the cluster P12–P14 share.

mod load;
mod paced;
mod pooling;
mod servers;
mod topology;

use std::time::{Duration, Instant};

use crate::Only;
use crate::method::{self, Latency, Plan, Series, alternate};
use crate::report::{Goal, Report};
use load::Costed;
use topology::{Bench, Proxy, until};

/// The open-loop client's connections at half load (P12).
const PACED_CONNECTIONS: usize = 8;
/// The rate P14 is judged at.
const MESH_RATE: f64 = 1000.0;

pub fn run(plan: &Plan, only: &Only, report: &mut Report) {
    method::require_tools(&["wrk", "h2load", "nginx", "haproxy", "taskset", "ss"]);
    let started = Instant::now();
    if only.any(&["P12", "P13", "P14"]) {
        let bench = Bench::start();
        report.extra("waypoint.setupSeconds", started.elapsed().as_secs_f64());
        report.note(format!(
            "P12–P14: the waypoint opens a new upstream connection (an HBONE stream and an HTTP handshake) for every request, so the backend's ztunnel makes one TCP connection to the backend per request, bound to the waypoint's address and closed by ztunnel first; about 30k requests within a minute hold every port `bind(addr, 0)` may draw in TIME_WAIT and throughput collapses. The harness caps TIME_WAIT sockets in the backends' namespaces (`net.ipv4.tcp_max_tw_buckets={}`) so the figures measure CPU, not port exhaustion.",
            topology::TIME_WAIT_CAP
        ));
        if only.any(&["P12"]) {
            p12(plan, &bench, report);
        }
        if only.any(&["P13"]) {
            p13(plan, &bench, report);
        }
        if only.any(&["P14"]) {
            p14(plan, &bench, report);
        }
        let (rss, hwm) = method::memory_kib(bench.waypoint_pid);
        report.extra("waypoint.rssKiB", rss as f64);
        report.extra("waypoint.hwmKiB", hwm as f64);
    }
    if only.any(&["P15"]) {
        pooling::run(plan, report);
    }
    report.extra("waypoint.elapsedSeconds", started.elapsed().as_secs_f64());
}

/// One closed-loop sample per proxy, alternated; a warm-up run first.
fn closed_loop(
    plan: &Plan,
    proxies: &[Proxy],
    mut sample: impl FnMut(Proxy, Duration) -> Costed,
) -> Vec<Vec<Costed>> {
    for p in proxies {
        sample(*p, Duration::from_secs(1));
    }
    let mut runs = vec![Vec::new(); proxies.len()];
    alternate(plan.rounds, proxies, |i, p| {
        let run = sample(*p, plan.sample);
        eprintln!(
            "  {p:?}: {:.0} req/s, proxy {:.0} % of a CPU, {:.0} req per proxy CPU-second",
            run.done.rps(),
            run.utilisation() * 100.0,
            run.per_cpu()
        );
        runs[i].push(run);
    });
    runs
}

fn series(runs: &[Costed], f: impl Fn(&Costed) -> f64) -> Series {
    let mut s = Series::default();
    for r in runs {
        s.push(f(r));
    }
    s
}

fn p12(plan: &Plan, b: &Bench, report: &mut Report) {
    eprintln!("P12: HTTP/1.1 keep-alive, wrk -t1 -c32");
    let proxies = [Proxy::Nginx, Proxy::Waypoint];
    let ztunnels = [
        b.cluster.ztunnel_pid("node-a"),
        b.cluster.ztunnel_pid("node-b"),
    ];
    let mut ztunnel_cpu_per_request = Series::default();
    let runs = closed_loop(plan, &proxies, |p, d| {
        let path = b.h1(p);
        let before = method::cpu_of(&ztunnels);
        let run = load::costed(path.pid, || load::wrk(&path.netns, &path.url(), 1, 32, d));
        let ztunnel = method::cpu_of(&ztunnels) - before;
        run.done.check(&format!("wrk through {p:?}"));
        if p == Proxy::Waypoint {
            let per_request = ztunnel / run.done.ok as f64;
            eprintln!(
                "    both ztunnels: {:.1} µs of CPU per request",
                per_request * 1e6
            );
            ztunnel_cpu_per_request.push(per_request * 1e6);
        }
        run
    });
    report.extra(
        "P12.waypoint.ztunnelsCpuMicrosPerRequest",
        ztunnel_cpu_per_request.median(),
    );
    let [nginx, waypoint] = [&runs[0], &runs[1]];
    report.ratio(
        "P12",
        "waypoint HTTP/1.1 requests per proxy CPU-second",
        "req/s/CPU",
        series(waypoint, Costed::per_cpu),
        "nginx reverse proxy",
        series(nginx, Costed::per_cpu),
        Goal::AtLeast(1.0),
        "≥ nginx's",
    );
    for (name, r) in [("nginx", nginx), ("waypoint", waypoint)] {
        report.extra(
            format!("P12.{name}.rps"),
            series(r, |c| c.done.rps()).median(),
        );
        report.extra(
            format!("P12.{name}.proxyCpuShare"),
            series(r, Costed::utilisation).median(),
        );
    }

    // p99 at half of nginx's achieved rate, the same rate for both.
    let rate = series(nginx, |c| c.done.rps()).median() / 2.0;
    for p in proxies {
        let path = b.h1(p);
        paced::run(
            &path.netns,
            path.addr,
            rate,
            PACED_CONNECTIONS,
            Duration::from_secs(1),
        );
    }
    let ([nginx_p99, waypoint_p99], late) = p99_at(plan, b, &proxies, rate);
    report.extra("P12.pacedRate", rate);
    report.ratio(
        "P12",
        "waypoint p99 at 50% of nginx's load",
        "µs",
        waypoint_p99,
        "nginx reverse proxy",
        nginx_p99,
        Goal::AtMost(1.0),
        "≤ nginx's",
    );
    if late[1] > 0 {
        report.note(format!(
            "P12: the waypoint's path could not carry {rate:.0} req/s (half of nginx's); {} requests were still unsent after twice the sample time and count with the time they had waited, so its p99 is a lower bound, set by the path's capacity (see P12.waypoint.rps) rather than by the waypoint's own latency.",
            late[1]
        ));
    }
    // The same comparison at a rate the waypoint's path can carry: half of
    // its own achieved rate (extras, not judged).
    let own = series(waypoint, |c| c.done.rps()).median() / 2.0;
    let ([nginx_own, waypoint_own], _) = p99_at(plan, b, &proxies, own);
    report.extra("P12.halfWaypointRate", own);
    report.extra("P12.nginx.p99AtHalfWaypointRateMicros", nginx_own.median());
    report.extra(
        "P12.waypoint.p99AtHalfWaypointRateMicros",
        waypoint_own.median(),
    );
    report.note(format!(
        "P12–P14: the waypoint's path (client → ztunnel → HBONE → waypoint → HBONE → ztunnel → backend) includes the two ztunnel hops, HBONE in and out, that the peers' path (client → proxy → backend, plaintext) does not; wrk, the open-loop client and the nginx backends run on CPU {}, the proxies on CPU {} (nginx and haproxy alone; the waypoint with the two ztunnels of its path). Capacity is requests per CPU-second of the proxy process: on 2 cores the load side, or the ztunnels sharing the waypoint's core, may saturate before the proxy does. p99 at 50% load is from an open-loop client ({PACED_CONNECTIONS} kept-alive connections, timed from each request's scheduled send) at half of nginx's achieved rate, the same rate for both. Access logs are off everywhere (nginx `access_log off`; waypoint and ztunnels `access:off` through their admin endpoints).",
        method::LOAD_CPU,
        method::PROXY_CPU
    ));
}

/// p99 (µs) of the open-loop client at `rate` through each of `proxies`,
/// alternated, and how many requests were late in each.
fn p99_at(plan: &Plan, b: &Bench, proxies: &[Proxy; 2], rate: f64) -> ([Series; 2], [u64; 2]) {
    eprintln!("P12: open loop at {rate:.0} req/s over {PACED_CONNECTIONS} connections");
    let mut p99 = [Series::default(), Series::default()];
    let mut late = [0, 0];
    alternate(plan.rounds, proxies, |i, p| {
        let path = b.h1(*p);
        let seen = paced::run(&path.netns, path.addr, rate, PACED_CONNECTIONS, plan.sample);
        seen.check(&format!("paced load through {p:?}"));
        let (achieved, n_late) = (seen.rps(), seen.late);
        let l = Latency::from_nanos(seen.rtt_nanos);
        eprintln!(
            "  {p:?}: {achieved:.0} req/s ({n_late} late), p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs",
            l.p50, l.p99, l.p999
        );
        p99[i].push(l.p99);
        late[i] += n_late;
    });
    (p99, late)
}

fn p13(plan: &Plan, b: &Bench, report: &mut Report) {
    eprintln!("P13: h2c, h2load -c8 -m10");
    let proxies = [Proxy::Waypoint, Proxy::Haproxy, Proxy::Nginx];
    let runs = closed_loop(plan, &proxies, |p, d| {
        let path = b.h2(p);
        let run = load::costed(path.pid, || {
            load::h2load(&path.netns, &path.url(), 8, 10, d)
        });
        run.done.check(&format!("h2load through {p:?}"));
        run
    });
    let waypoint = series(&runs[0], Costed::per_cpu);
    for (i, name, target_text) in [
        (1, "haproxy", "≥ haproxy's"),
        (2, "nginx reverse proxy", "≥ nginx's"),
    ] {
        report.ratio(
            "P13",
            "waypoint h2c requests per proxy CPU-second",
            "req/s/CPU",
            waypoint.clone(),
            name,
            series(&runs[i], Costed::per_cpu),
            Goal::AtLeast(1.0),
            target_text,
        );
    }
    for (i, name) in [(0, "waypoint"), (1, "haproxy"), (2, "nginx")] {
        report.extra(
            format!("P13.{name}.rps"),
            series(&runs[i], |c| c.done.rps()).median(),
        );
        report.extra(
            format!("P13.{name}.proxyCpuShare"),
            series(&runs[i], Costed::utilisation).median(),
        );
    }
    report.note(
        "P13: h2load speaks h2c with prior knowledge to each proxy (the Service port is declared `appProtocol: http2` for the waypoint); nginx and haproxy forward over kept-alive HTTP/1.1 to their backend, the waypoint over HTTP/2, as it keeps the downstream protocol.",
    );
}

const ALLOW_CLIENT: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-client, namespace: mesh}
spec:
  targetRefs:
  - {kind: Service, group: \"\", name: backend}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: [cluster.local/ns/mesh/sa/client]
";

fn route() -> String {
    format!(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: backend, namespace: mesh}}\nspec:\n  parentRefs:\n  - {{group: \"\", kind: Service, name: backend, port: {port}}}\n  rules:\n  - matches:\n    - path: {{type: PathPrefix, value: /}}\n    backendRefs:\n    - {{name: backend, port: {port}}}\n",
        port = servers::HTTP1_PORT
    )
}

fn p14(plan: &Plan, b: &Bench, report: &mut Report) {
    eprintln!("P14: {MESH_RATE:.0} req/s through the waypoint with a policy and a route");
    let c = &b.cluster;
    c.apply("ap-mesh-allow-client.yaml", ALLOW_CLIENT);
    c.apply("route-mesh-backend.yaml", &route());
    let path = b.h1(Proxy::Waypoint);
    let url = path.url();
    let intruder = c.get("mesh", "intruder").netns.clone();
    // The policy is in force: a pod it does not allow is refused.
    until("the waypoint refuses mesh/intruder", || {
        integration::cluster::curl_status_in(&intruder, &[&url]).is(403, "RBAC: access denied")
    });
    let waypoint = b.waypoint_ip.to_string();
    until("the waypoint still serves mesh/client", || {
        topology::peer(&path.netns, &url, false).is_some_and(|p| p == waypoint)
    });
    let duration = plan.sample.max(Duration::from_secs(5));
    paced::run(&path.netns, path.addr, MESH_RATE, 4, Duration::from_secs(1));
    let mut per_thousand = Series::default();
    for _ in 0..plan.rounds {
        let before = method::cpu_seconds(path.pid);
        let seen = paced::run(&path.netns, path.addr, MESH_RATE, 4, duration);
        let cpu = method::cpu_seconds(path.pid) - before;
        seen.check("paced load through the waypoint with a policy and a route");
        let vcpu = cpu / seen.seconds;
        let v = vcpu / (seen.rps() / 1000.0);
        eprintln!(
            "  {:.0} req/s, {} failed, waypoint {vcpu:.3} vCPU → {v:.3} vCPU per 1000 rps",
            seen.rps(),
            seen.failed
        );
        per_thousand.push(v);
    }
    report.absolute(
        "P14",
        "waypoint CPU at 1000 rps × 1 KiB (HBONE in, authz + one route, HBONE out)",
        "vCPU per 1000 rps",
        per_thousand,
        Goal::AtMost(0.08),
        "≤ 0.08",
    );
    report.note(format!(
        "P14: an open-loop client at {MESH_RATE:.0} req/s for {} s per sample, every answer 200, with an ALLOW AuthorizationPolicy (the client's principal) on the Service and an HTTPRoute to it in force (checked first: another pod is refused with 403); CPU is the waypoint process's, pinned to CPU {}.",
        duration.as_secs(),
        method::PROXY_CPU
    ));
}
