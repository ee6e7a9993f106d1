//! The cluster P12–P14 share: the waypoint's path and the peers' path side
//! by side, so configurations can alternate without a restart.
//!
//! ```text
//! node-a                          node-b
//! mesh/client ─ ztunnel ═HBONE═▶ mesh/waypoint ═HBONE═▶ ztunnel ─ mesh/backend (nginx)
//! plain/client ───────────────▶ plain/proxy (nginx, haproxy) ───▶ plain/backend (nginx)
//! ```
//!
//! `mesh` is enrolled (`istio.io/dataplane-mode=ambient`) and uses the
//! waypoint; `plain` is outside the mesh. The backends and load generators
//! run on the load CPU; the proxies on the proxy CPU, as method §2 pins
//! them: nginx and haproxy, and the waypoint with the two ztunnels of its
//! path. A proxy's figure counts its own process's CPU time only.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use integration::cluster::host::Proc;
use integration::cluster::{Cluster, PodSpec, Redirect, curl_status_in};

use super::servers::{self, H2C_PORT, HAPROXY_H2C_PORT, HTTP1_PORT};
use crate::method;

pub const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
pub const USE_WAYPOINT: (&str, &str) = ("istio.io/use-waypoint", "waypoint");

/// The proxy a request crosses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proxy {
    Nginx,
    Haproxy,
    Waypoint,
}

/// Where a load generator sends its requests and whose CPU they cost.
pub struct Path {
    pub netns: String,
    pub addr: SocketAddr,
    /// The proxy under test.
    pub pid: u32,
}

impl Path {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

pub struct Bench {
    // The servers go before the cluster that holds their namespaces.
    _servers: Vec<Proc>,
    pub cluster: Cluster,
    /// The Service the waypoint serves.
    pub vip: Ipv4Addr,
    pub waypoint_ip: Ipv4Addr,
    pub waypoint_pid: u32,
    proxy_ip: Ipv4Addr,
    nginx_pid: u32,
    haproxy_pid: u32,
}

impl Bench {
    pub fn start() -> Self {
        let mut c = Cluster::start_with(&["node-a", "node-b"], Redirect::Nftables);
        c.namespace("mesh", &[AMBIENT, USE_WAYPOINT]);
        c.namespace("plain", &[]);
        c.waypoint_env
            .push(("WAYPOINT_WORKER_THREADS", "1".to_string()));
        let waypoint_ip = c.waypoint("mesh", "waypoint", "node-b", None);
        for (ns, name, node) in [
            ("mesh", "client", "node-a"),
            ("mesh", "intruder", "node-a"),
            ("mesh", "backend", "node-b"),
            ("plain", "client", "node-a"),
            ("plain", "proxy", "node-b"),
            ("plain", "backend", "node-b"),
        ] {
            c.pod(PodSpec::new(ns, name, node));
        }
        let vip = c.service_with_ports(
            "mesh",
            "backend",
            "backend",
            &[
                ("http", HTTP1_PORT, None),
                ("http2", H2C_PORT, Some("http2")),
            ],
        );
        let dir = c.dir.path().to_path_buf();
        for ns in ["mesh", "plain"] {
            backend_sysctls(&c.get(ns, "backend").netns);
        }
        let plain_backend = c.get("plain", "backend").ip;
        let proxy_netns = c.get("plain", "proxy").netns.clone();
        let servers = vec![
            servers::backend(&dir, "mesh-backend", &c.get("mesh", "backend").netns),
            servers::backend(&dir, "plain-backend", &c.get("plain", "backend").netns),
            servers::nginx_proxy(&dir, &proxy_netns, plain_backend),
            servers::haproxy(&dir, &proxy_netns, plain_backend),
        ];
        let (nginx_pid, haproxy_pid) = (servers[2].pid(), servers[3].pid());
        let waypoint_pid = c.get("mesh", "waypoint").app.pid();
        let bench = Bench {
            _servers: servers,
            vip,
            waypoint_ip,
            waypoint_pid,
            proxy_ip: c.get("plain", "proxy").ip,
            nginx_pid,
            haproxy_pid,
            cluster: c,
        };
        bench.converge();
        quiet_access_logs(&bench.cluster, &["mesh/waypoint"]);
        method::pin(waypoint_pid, &method::PROXY_CPU.to_string());
        for node in ["node-a", "node-b"] {
            let pid = bench.cluster.ztunnel_pid(node);
            method::pin(pid, &method::PROXY_CPU.to_string());
        }
        bench
    }

    /// Waits until the mesh client's requests cross the waypoint, over
    /// HTTP/1.1 and h2c, and the plain client reaches both peers.
    fn converge(&self) {
        let c = &self.cluster;
        for name in ["client", "intruder", "backend"] {
            let pod = c.get("mesh", name);
            c.wait_for(&format!("mesh/{name} is captured"), |c| c.captured(pod));
        }
        let waypoint = self.waypoint_ip.to_string();
        for proxy in [Proxy::Waypoint, Proxy::Nginx] {
            let path = self.h1(proxy);
            until(&format!("{} answers through {proxy:?}", path.url()), || {
                peer(&path.netns, &path.url(), false)
                    .is_some_and(|p| proxy != Proxy::Waypoint || p == waypoint)
            });
        }
        for proxy in [Proxy::Waypoint, Proxy::Nginx, Proxy::Haproxy] {
            let path = self.h2(proxy);
            until(
                &format!("{} answers h2c through {proxy:?}", path.url()),
                || {
                    peer(&path.netns, &path.url(), true)
                        .is_some_and(|p| proxy != Proxy::Waypoint || p == waypoint)
                },
            );
        }
    }

    /// HTTP/1.1 to `proxy`'s front.
    pub fn h1(&self, proxy: Proxy) -> Path {
        match proxy {
            Proxy::Waypoint => self.mesh_path(HTTP1_PORT),
            Proxy::Nginx => self.plain_path(HTTP1_PORT, self.nginx_pid),
            Proxy::Haproxy => panic!("haproxy is measured over h2c only"),
        }
    }

    /// Cleartext HTTP/2 (prior knowledge) to `proxy`'s front.
    pub fn h2(&self, proxy: Proxy) -> Path {
        match proxy {
            Proxy::Waypoint => self.mesh_path(H2C_PORT),
            Proxy::Nginx => self.plain_path(H2C_PORT, self.nginx_pid),
            Proxy::Haproxy => self.plain_path(HAPROXY_H2C_PORT, self.haproxy_pid),
        }
    }

    /// From an enrolled client to the Service: client → ztunnel → HBONE →
    /// waypoint → HBONE → ztunnel → backend.
    fn mesh_path(&self, port: u16) -> Path {
        Path {
            netns: self.cluster.get("mesh", "client").netns.clone(),
            addr: (self.vip, port).into(),
            pid: self.waypoint_pid,
        }
    }

    fn plain_path(&self, port: u16, pid: u32) -> Path {
        Path {
            netns: self.cluster.get("plain", "client").netns.clone(),
            addr: (self.proxy_ip, port).into(),
            pid,
        }
    }
}

/// The backend's view of who asked (its `x-peer` header), when it answered
/// 200.
pub fn peer(netns: &str, url: &str, h2c: bool) -> Option<String> {
    let mut args = vec!["-D", "-", "-o", "/dev/null"];
    if h2c {
        args.push("--http2-prior-knowledge");
    }
    args.push(url);
    let reply = curl_status_in(netns, &args);
    (reply.status == 200).then_some(())?;
    reply.body.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-peer")
            .then(|| v.trim().to_string())
    })
}

/// Waits until `f` holds, up to 30 s; panics naming `what`.
pub fn until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The waypoint opens a new upstream connection for every request, so the
/// backend's ztunnel connects to the backend once per request, bound to
/// the waypoint's address (`bind(addr, 0)` draws from half the port range)
/// and closing first: about 30k requests within a minute leave every such
/// port in TIME_WAIT and throughput collapses. Capping TIME_WAIT sockets
/// in the backend's namespace keeps the figures about CPU, not ports
/// (reported in a note).
pub const TIME_WAIT_CAP: u32 = 4096;

pub fn backend_sysctls(netns: &str) {
    for setting in [
        "net.ipv4.tcp_tw_reuse=1".to_string(),
        "net.ipv4.ip_local_port_range=1024 65535".to_string(),
        format!("net.ipv4.tcp_max_tw_buckets={TIME_WAIT_CAP}"),
    ] {
        integration::cluster::host::ns_sh(netns, "sysctl", &["-qw", &setting]);
    }
}

/// Turns off the per-request and per-connection access log lines of the
/// waypoints (`namespace/name`) and of every ztunnel, through their admin
/// endpoints: nginx and haproxy log nothing here, and an Istio waypoint
/// has no access log unless the mesh configuration asks for one.
pub fn quiet_access_logs(c: &Cluster, waypoints: &[&str]) {
    let url = "http://127.0.0.1:15000/logging?level=access:off,info";
    for w in waypoints {
        let (ns, name) = w.split_once('/').expect("namespace/name");
        let reply = curl_status_in(&c.get(ns, name).netns, &["-X", "POST", url]);
        assert_eq!(reply.status, 200, "quieting {w}'s access log: {reply}");
    }
    for n in &c.nodes {
        let reply = curl_status_in(&n.netns, &["-X", "POST", url]);
        assert_eq!(
            reply.status, 200,
            "quieting ztunnel on {}'s access log: {reply}",
            n.name
        );
    }
}
