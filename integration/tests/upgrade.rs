//! Replacing a node's ztunnel under load (reliability.md §5.8 D2): a new
//! ztunnel starts beside the old one, takes the node agent's snapshot and
//! binds its listeners in every pod next to the old ones (`SO_REUSEPORT`);
//! the old one is then told to drain. Not one new connection may fail, in
//! either direction. Needs root; `cargo xtask e2e` runs it with nftables
//! and with eBPF redirection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, HTTP_PORT, TCP_PORT};
use integration::metrics::counter;
use mesh_netns::Netns;

const AMBIENT: (&str, &str) = ("istio.io/dataplane-mode", "ambient");
/// New connections per second, per flow (three flows).
const RATE: u32 = 70;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One flow of new connections: every period a fresh TCP connection from
/// a pod to a server's echo port, one line echoed, then closed.
struct Flow {
    name: String,
    netns: Arc<Netns>,
    to: SocketAddr,
    /// The echo server's first line: its name and the client's address,
    /// which proves the connection went through the mesh intact.
    greeting: String,
}

/// How one connection of a flow went.
struct Outcome {
    flow: String,
    started: Instant,
    took: Duration,
    error: Option<String>,
}

impl Flow {
    fn new(c: &Cluster, from: &str, to: &str) -> Self {
        let (client, server) = (c.get("apps", from), c.get("apps", to));
        let path = format!("/var/run/netns/{}", client.netns);
        Self {
            name: format!("{from} -> {to}"),
            netns: Arc::new(Netns::open(&path).expect("opening the client's namespace")),
            to: SocketAddr::from((server.ip, TCP_PORT)),
            greeting: format!("{to} {}\n", client.ip),
        }
    }

    /// Opens connections at [`RATE`] until `stop`, each on its own thread
    /// so a slow one does not hold back the schedule.
    fn run(self, stop: Arc<AtomicBool>) -> JoinHandle<Vec<Outcome>> {
        std::thread::spawn(move || {
            let flow = Arc::new(self);
            let period = Duration::from_secs(1) / RATE;
            let start = Instant::now();
            let mut running = Vec::new();
            let mut n: u32 = 0;
            while !stop.load(Ordering::Relaxed) {
                let due = start + period * n;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let flow = flow.clone();
                running.push(std::thread::spawn(move || flow.once(n)));
                n += 1;
            }
            running.into_iter().map(|t| t.join().unwrap()).collect()
        })
    }

    /// A connection left open (the echo answered once).
    fn hold(&self) -> TcpStream {
        let mut s = self
            .netns
            .run(|| TcpStream::connect_timeout(&self.to, CONNECT_TIMEOUT))
            .unwrap()
            .unwrap_or_else(|e| panic!("{}: a long connection: {e}", self.name));
        s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
        s.write_all(b"held\n").unwrap();
        let want = format!("{}held\n", self.greeting);
        let mut got = vec![0; want.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(String::from_utf8_lossy(&got), want, "{}", self.name);
        s
    }

    fn once(&self, n: u32) -> Outcome {
        let started = Instant::now();
        let error = self.exchange(n).err();
        Outcome {
            flow: self.name.clone(),
            started,
            took: started.elapsed(),
            error,
        }
    }

    fn exchange(&self, n: u32) -> Result<(), String> {
        // The socket is made inside the pod; it stays there afterwards.
        let mut s = self
            .netns
            .run(|| TcpStream::connect_timeout(&self.to, CONNECT_TIMEOUT))
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("connect: {e}"))?;
        s.set_read_timeout(Some(CONNECT_TIMEOUT)).unwrap();
        let line = format!("connection {n}\n");
        s.write_all(line.as_bytes())
            .map_err(|e| format!("write: {e}"))?;
        s.shutdown(std::net::Shutdown::Write)
            .map_err(|e| format!("shutdown: {e}"))?;
        let mut got = String::new();
        s.read_to_string(&mut got)
            .map_err(|e| format!("read: {e} after {got:?}"))?;
        let want = format!("{}{line}", self.greeting);
        if got != want {
            return Err(format!("answered {got:?}, expected {want:?}"));
        }
        Ok(())
    }
}

#[test]
fn a_new_ztunnel_takes_over_beside_the_old_and_no_new_connection_fails() {
    let mut c = Cluster::start(&["node-a", "node-b"]);
    c.namespace("apps", &[AMBIENT]);
    c.captured_pods(
        "apps",
        &[
            ("client", "node-a"),
            ("local", "node-a"),
            ("peer", "node-b"),
            ("remote", "node-b"),
        ],
    );
    // The node agent lets the kernel move connections queued on a closing
    // listener to its sibling in the pod (what makes the hand-over clean).
    let migrate = std::process::Command::new("ip")
        .args(["netns", "exec", &c.get("apps", "client").netns])
        .args(["cat", "/proc/sys/net/ipv4/tcp_migrate_req"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&migrate.stdout).trim(), "1");
    // Every flow works over mTLS before the load starts.
    for (from, to) in [("client", "remote"), ("peer", "local"), ("client", "local")] {
        let (from, to) = (c.get("apps", from), c.get("apps", to));
        c.curl_over_mtls(from, &format!("http://{}:{HTTP_PORT}/", to.ip), to);
    }
    // node-a's ztunnel is the one replaced: outbound for client -> remote,
    // inbound (HBONE from node-b's pool) for peer -> local, both for
    // client -> local.
    let flows = [
        Flow::new(&c, "client", "remote"),
        Flow::new(&c, "peer", "local"),
        Flow::new(&c, "client", "local"),
    ];
    // Long connections keep the old ztunnel draining for its whole
    // deadline, its HBONE connections open after their GOAWAY, while new
    // connections go on.
    let held: Vec<TcpStream> = flows.iter().map(Flow::hold).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = flows.into_iter().map(|f| f.run(stop.clone())).collect();
    let began = Instant::now();
    std::thread::sleep(Duration::from_secs(2));

    c.ztunnel_env = vec![("CONNECTION_TERMINATION_DEADLINE", "3s".into())];
    c.start_successor_ztunnel("node-a");
    let both_at = began.elapsed();
    std::thread::sleep(Duration::from_secs(2));

    let drain_at = began.elapsed();
    c.signal_ztunnel("node-a", "TERM");
    let signalled = Instant::now();
    while !c.ztunnel_exited("node-a") {
        assert!(
            signalled.elapsed() < Duration::from_secs(10),
            "the old ztunnel did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let exited_at = began.elapsed();
    drop(held);
    c.promote_successor_ztunnel("node-a");
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    let outcomes: Vec<Outcome> = load.into_iter().flat_map(|t| t.join().unwrap()).collect();

    let failed: Vec<String> = outcomes
        .iter()
        .filter_map(|o| {
            let e = o.error.as_ref()?;
            let at = o.started.duration_since(
                outcomes
                    .iter()
                    .map(|o| o.started)
                    .min()
                    .expect("at least one"),
            );
            Some(format!("{} at {at:?}: {e}", o.flow))
        })
        .collect();
    let slowest = outcomes.iter().map(|o| o.took).max().unwrap_or_default();
    eprintln!(
        "{} connections; second ztunnel ready at {both_at:?}, drain at {drain_at:?}, \
         old exited at {exited_at:?}; slowest connection {slowest:?}",
        outcomes.len()
    );
    assert!(
        failed.is_empty(),
        "{} of {} new connections failed during the replacement:\n{}",
        failed.len(),
        outcomes.len(),
        failed.join("\n")
    );
    // The schedule held: a stalled run would prove little.
    let expected = (RATE as f64 * 3.0 * began.elapsed().as_secs_f64() * 0.8) as usize;
    assert!(
        outcomes.len() >= expected,
        "only {} connections were made, expected at least {expected}",
        outcomes.len()
    );

    // The new ztunnel carried traffic both ways, and only it is left.
    let (_, metrics) = c.ztunnel_http("node-a", "GET", 15020, "/metrics");
    let opened = "istio_tcp_connections_opened_total";
    let outbound = counter(
        &metrics,
        opened,
        &["reporter=\"source\"", "destination_workload=\"remote\""],
    );
    let inbound = counter(
        &metrics,
        opened,
        &[
            "reporter=\"destination\"",
            "source_workload=\"peer\"",
            "connection_security_policy=\"mutual_tls\"",
        ],
    );
    assert!(
        outbound > 0 && inbound > 0,
        "the new ztunnel served {outbound} outbound and {inbound} inbound connections"
    );
    assert_eq!(
        c.agent_status("node-a")["ztunnelsConnected"].as_u64(),
        Some(1),
        "the node agent still counts the old ztunnel"
    );
}
