//! nftables vs eBPF redirection, side by side, in the network-namespace
//! cluster: a client pod on node-a, an echo server pod on node-b, both
//! enrolled, traffic through both ztunnels over HBONE. For each mode:
//!
//! - connection setup: new connections per second from one client thread
//!   (connect, read the server's greeting, close), over a warm HBONE pool;
//! - throughput: MB/s echoed through one connection (each direction carries
//!   that much).
//!
//! Rounds alternate the modes (nftables, ebpf, ebpf, nftables, ...) so
//! drift on a shared machine hits both alike; the table gives the median
//! and the spread (min–max) of the rounds. A direct run (pods outside the
//! mesh) is the baseline. `cargo xtask bench [--quick] [--json FILE]`;
//! needs root and release binaries (the xtask builds them).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use integration::cluster::{Cluster, HTTP_PORT, PodSpec, Redirect, TCP_PORT};
use mesh_netns::Netns;

struct Plan {
    rounds: usize,
    connect_for: Duration,
    echo_bytes: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Direct,
    Mesh(Redirect),
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct (no mesh)",
            Mode::Mesh(Redirect::Nftables) => "mesh, nftables",
            Mode::Mesh(Redirect::Ebpf) => "mesh, eBPF",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Mesh(r) => r.as_str(),
        }
    }
}

#[derive(Default)]
struct Samples {
    conns_per_sec: Vec<f64>,
    mb_per_sec: Vec<f64>,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args
        .iter()
        .position(|a| a == "--json")
        .and_then(|i| args.get(i + 1).cloned());
    let plan = if quick {
        Plan {
            rounds: 2,
            connect_for: Duration::from_secs(2),
            echo_bytes: 64 << 20,
        }
    } else {
        Plan {
            rounds: 5,
            connect_for: Duration::from_secs(5),
            echo_bytes: 256 << 20,
        }
    };
    let modes = [
        Mode::Direct,
        Mode::Mesh(Redirect::Nftables),
        Mode::Mesh(Redirect::Ebpf),
    ];
    let mut samples: Vec<Samples> = modes.iter().map(|_| Samples::default()).collect();
    for round in 0..plan.rounds {
        // Alternate the order each round.
        let mut order: Vec<usize> = (0..modes.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (conns, mbps) = measure(modes[i], &plan);
            eprintln!(
                "round {}: {:<18} {conns:>8.0} conn/s {mbps:>8.1} MB/s",
                round + 1,
                modes[i].name()
            );
            samples[i].conns_per_sec.push(conns);
            samples[i].mb_per_sec.push(mbps);
        }
    }
    print_table(&modes, &samples, &plan);
    if let Some(path) = json {
        let report = serde_json::json!({
            "benchmark": "redirection",
            "rounds": plan.rounds,
            "connectSeconds": plan.connect_for.as_secs(),
            "echoBytes": plan.echo_bytes,
            "modes": modes.iter().zip(&samples).map(|(m, s)| serde_json::json!({
                "mode": m.key(),
                "connectionsPerSecond": s.conns_per_sec,
                "echoMegabytesPerSecond": s.mb_per_sec,
            })).collect::<Vec<_>>(),
        });
        std::fs::write(&path, serde_json::to_vec_pretty(&report).unwrap()).expect("write JSON");
        eprintln!("wrote {path}");
    }
}

/// One cluster, one mode: (connections per second, MB/s echoed).
fn measure(mode: Mode, plan: &Plan) -> (f64, f64) {
    let redirect = match mode {
        Mode::Direct => Redirect::Nftables,
        Mode::Mesh(r) => r,
    };
    let mut c = Cluster::start_with(&["node-a", "node-b"], redirect);
    let labels: &[(&str, &str)] = match mode {
        Mode::Direct => &[],
        Mode::Mesh(_) => &[("istio.io/dataplane-mode", "ambient")],
    };
    c.namespace("bench", labels);
    c.pod(PodSpec::new("bench", "client", "node-a"));
    c.pod(PodSpec::new("bench", "server", "node-b"));
    if let Mode::Mesh(_) = mode {
        for name in ["client", "server"] {
            let pod = c.get("bench", name);
            c.wait_for("captured", |c| c.captured(pod));
        }
    }
    let server: SocketAddr = (c.get("bench", "server").ip, TCP_PORT).into();
    let client = c.get("bench", "client");
    c.curl_eventually(client, &format!("http://{}:{HTTP_PORT}/", server.ip()));
    let netns = Netns::open(format!("/var/run/netns/{}", client.netns)).expect("client netns");
    // Sockets made inside the client's namespace stay there.
    let conns = netns
        .run(|| connection_rate(server, plan.connect_for))
        .expect("enter the client namespace");
    let mbps = netns
        .run(|| echo_throughput(server, plan.echo_bytes))
        .expect("enter the client namespace");
    (conns, mbps)
}

fn connection_rate(server: SocketAddr, run_for: Duration) -> f64 {
    let start = Instant::now();
    let mut n = 0u64;
    let mut greeting = [0u8; 128];
    while start.elapsed() < run_for {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5)).expect("connect");
        let read = s.read(&mut greeting).expect("greeting");
        assert!(read > 0, "the server closed without its greeting");
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn echo_throughput(server: SocketAddr, bytes: usize) -> f64 {
    let mut s = TcpStream::connect(server).expect("connect");
    s.set_nodelay(true).unwrap();
    let mut greeting = [0u8; 128];
    let g = s.read(&mut greeting).expect("greeting");
    assert!(g > 0);
    let mut writer = s.try_clone().unwrap();
    let start = Instant::now();
    let sender = std::thread::spawn(move || {
        let chunk = vec![0x5au8; 64 << 10];
        let mut sent = 0;
        while sent < bytes {
            let n = chunk.len().min(bytes - sent);
            writer.write_all(&chunk[..n]).expect("send");
            sent += n;
        }
    });
    let mut buf = vec![0u8; 256 << 10];
    let mut received = 0;
    while received < bytes {
        let n = s.read(&mut buf).expect("receive");
        assert!(n > 0, "the echo stopped after {received} bytes");
        received += n;
    }
    sender.join().unwrap();
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn spread(v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(0.0, f64::max);
    format!("{min:.0}–{max:.0}")
}

fn print_table(modes: &[Mode], samples: &[Samples], plan: &Plan) {
    let base = (
        median(&samples[0].conns_per_sec),
        median(&samples[0].mb_per_sec),
    );
    println!(
        "\nRedirection, cross-node, {} rounds ({} s of connections, {} MiB echoed each)\n",
        plan.rounds,
        plan.connect_for.as_secs(),
        plan.echo_bytes >> 20
    );
    println!(
        "| path | new connections/s (median, range) | vs direct | echo MB/s each way (median, range) | vs direct |"
    );
    println!("|---|---|---|---|---|");
    for (m, s) in modes.iter().zip(samples) {
        let (c, t) = (median(&s.conns_per_sec), median(&s.mb_per_sec));
        println!(
            "| {} | {c:.0} ({}) | {:.2} | {t:.0} ({}) | {:.2} |",
            m.name(),
            spread(&s.conns_per_sec),
            c / base.0,
            spread(&s.mb_per_sec),
            t / base.1
        );
    }
    let nft = (
        median(&samples[1].conns_per_sec),
        median(&samples[1].mb_per_sec),
    );
    let bpf = (
        median(&samples[2].conns_per_sec),
        median(&samples[2].mb_per_sec),
    );
    println!(
        "\neBPF / nftables: connections {:.2}x, throughput {:.2}x",
        bpf.0 / nft.0,
        bpf.1 / nft.1
    );
}
