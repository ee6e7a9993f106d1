//! Servers and load generators that run inside pods' network namespaces
//! as threads of the bench process (a socket made inside a namespace stays
//! there), pinned to the load CPU.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesh_netns::Netns;

use crate::method::{LOAD_CPU, Latency, pin_this_thread};

/// The ports the bench servers listen on in a server pod.
pub const SINK: u16 = 7000;
pub const ECHO: u16 = 7001;
/// Writes one byte and closes: connection setup and teardown only.
pub const GREET: u16 = 7002;
/// Accepts and keeps the connection open, doing nothing.
pub const HOLD: u16 = 7003;

pub const MESSAGE: usize = 1024;
const CHUNK: usize = 64 << 10;

fn netns(name: &str) -> Netns {
    Netns::open(format!("/var/run/netns/{name}"))
        .unwrap_or_else(|e| panic!("network namespace {name}: {e}"))
}

/// Runs `f` on a new thread inside `ns`, pinned to `cpu` (`None`: any).
pub fn spawn_in<T: Send + 'static>(
    ns: &str,
    cpu: Option<usize>,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let ns = netns(ns);
    std::thread::spawn(move || {
        match cpu {
            Some(cpu) => pin_this_thread(cpu),
            None => crate::method::unpin_this_thread(),
        }
        ns.run(f).expect("enter the namespace")
    })
}

/// Runs `f` inside `ns` on a thread pinned to the load CPU, and waits.
pub fn run_in<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in(ns, Some(LOAD_CPU), f).join().expect("load thread")
}

/// Starts the four bench servers in `ns`. They run until the process ends.
/// The sockets held open by [`HOLD`] are counted in the returned value.
pub fn serve(ns: &str) -> Arc<Mutex<Vec<TcpStream>>> {
    let held = Arc::new(Mutex::new(Vec::new()));
    let bind = |port| {
        run_in(ns, move || {
            TcpListener::bind(("0.0.0.0", port)).expect("bind a bench server")
        })
    };
    let (sink, echo, greet, hold) = (bind(SINK), bind(ECHO), bind(GREET), bind(HOLD));
    accept_each(sink, |mut s| {
        let mut buf = vec![0u8; CHUNK * 4];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    accept_each(echo, |mut s| {
        let _ = s.set_nodelay(true);
        let mut buf = vec![0u8; CHUNK];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 || s.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    std::thread::spawn(move || {
        pin_this_thread(LOAD_CPU);
        for s in greet.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.write_all(b"g");
        }
    });
    let keep = held.clone();
    std::thread::spawn(move || {
        pin_this_thread(LOAD_CPU);
        for s in hold.incoming().flatten() {
            keep.lock().unwrap().push(s);
        }
    });
    held
}

fn accept_each(l: TcpListener, handle: fn(TcpStream)) {
    std::thread::spawn(move || {
        pin_this_thread(LOAD_CPU);
        for s in l.incoming().flatten() {
            std::thread::spawn(move || {
                pin_this_thread(LOAD_CPU);
                handle(s)
            });
        }
    });
}

/// Bulk: `conns` connections from `ns` to the sink at `ip`, each written
/// as fast as it goes for `run_for`. Returns MB/s summed over connections,
/// as the sink saw it (what the writers had handed over minus what the
/// kernel still buffered is small against seconds of transfer).
pub fn bulk(ns: &str, ip: std::net::Ipv4Addr, conns: usize, run_for: Duration) -> f64 {
    bulk_on(ns, ip, conns, run_for, Some(LOAD_CPU))
}

pub fn bulk_on(
    ns: &str,
    ip: std::net::Ipv4Addr,
    conns: usize,
    run_for: Duration,
    cpu: Option<usize>,
) -> f64 {
    let addr = SocketAddr::from((ip, SINK));
    let sent = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let threads: Vec<_> = (0..conns)
        .map(|_| {
            let sent = sent.clone();
            spawn_in(ns, cpu, move || {
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("connect to the sink {addr}: {e}"));
                let chunk = vec![0x5au8; CHUNK];
                while start.elapsed() < run_for {
                    s.write_all(&chunk).expect("the sink accepts bytes");
                    sent.fetch_add(CHUNK as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("bulk writer");
    }
    sent.load(Ordering::Relaxed) as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// 1 KiB echoes over one open connection, one at a time: round-trip times
/// of `round_trips` echoes, or of those done within `limit`.
pub fn echo_latency(
    ns: &str,
    ip: std::net::Ipv4Addr,
    round_trips: usize,
    limit: Duration,
) -> Latency {
    let addr = SocketAddr::from((ip, ECHO));
    run_in(ns, move || {
        let mut s = TcpStream::connect(addr).expect("connect to the echo server");
        s.set_nodelay(true).unwrap();
        let msg = [0x42u8; MESSAGE];
        let mut back = [0u8; MESSAGE];
        // Warm up: the first round trips pay for pool and cache misses.
        for _ in 0..200 {
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
        }
        let mut rtt = Vec::with_capacity(round_trips);
        let start = Instant::now();
        while rtt.len() < round_trips && start.elapsed() < limit {
            let t = Instant::now();
            s.write_all(&msg).unwrap();
            s.read_exact(&mut back).unwrap();
            rtt.push(t.elapsed().as_nanos() as u64);
        }
        Latency::from_nanos(rtt)
    })
}

/// 1 KiB echoes paced at `rate` per second over `conns` connections for
/// `run_for`; returns the number completed. Latency is not the point here:
/// the proxies' CPU at a known load is.
pub fn paced_echo(
    ns: &str,
    ip: std::net::Ipv4Addr,
    conns: usize,
    rate: f64,
    run_for: Duration,
) -> u64 {
    let addr = SocketAddr::from((ip, ECHO));
    let per_conn = rate / conns as f64;
    let threads: Vec<_> = (0..conns)
        .map(|i| {
            spawn_in(ns, Some(LOAD_CPU), move || {
                let mut s = TcpStream::connect(addr).expect("connect to the echo server");
                s.set_nodelay(true).unwrap();
                let msg = [0x42u8; MESSAGE];
                let mut back = [0u8; MESSAGE];
                let interval = Duration::from_secs_f64(1.0 / per_conn);
                // Stagger the connections across one interval.
                let start = Instant::now() + interval.mul_f64(i as f64 / conns as f64);
                let mut done = 0u64;
                loop {
                    let due = start + interval.mul_f64(done as f64);
                    if due.duration_since(start) >= run_for {
                        break;
                    }
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    s.write_all(&msg).unwrap();
                    s.read_exact(&mut back).unwrap();
                    done += 1;
                }
                done
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).sum()
}

/// New connections per second from `threads` client threads in `ns`, each
/// connecting to the greeter at `ip`, reading its byte and closing.
pub fn connection_rate(ns: &str, ip: std::net::Ipv4Addr, threads: usize, run_for: Duration) -> f64 {
    let addr = SocketAddr::from((ip, GREET));
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            spawn_in(ns, Some(LOAD_CPU), move || {
                let mut n = 0u64;
                let mut b = [0u8; 1];
                while start.elapsed() < run_for {
                    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
                    s.read_exact(&mut b).expect("the greeter's byte");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let n: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
    n as f64 / start.elapsed().as_secs_f64()
}

/// Opens `n` connections from `ns` to the holder at `ip` and keeps them
/// until the returned guard is dropped.
pub fn hold(ns: &str, ip: std::net::Ipv4Addr, n: usize) -> Vec<TcpStream> {
    let addr = SocketAddr::from((ip, HOLD));
    run_in(ns, move || {
        (0..n)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("idle connection {i} to {addr}: {e}"))
            })
            .collect()
    })
}

/// A flag that background load checks, so it can be stopped.
#[derive(Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    pub fn set(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Bulk writers that run until `stop` is set (for the head-of-line test).
pub fn background_bulk(
    ns: &str,
    ip: std::net::Ipv4Addr,
    conns: usize,
    stop: Stop,
) -> Vec<std::thread::JoinHandle<()>> {
    let addr = SocketAddr::from((ip, SINK));
    (0..conns)
        .map(|_| {
            let stop = stop.clone();
            spawn_in(ns, Some(LOAD_CPU), move || {
                let mut s = TcpStream::connect(addr).expect("connect to the sink");
                let chunk = vec![0x5au8; CHUNK];
                while !stop.is_set() {
                    s.write_all(&chunk).expect("the sink accepts bytes");
                }
            })
        })
        .collect()
}
