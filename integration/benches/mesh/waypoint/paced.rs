//! An open-loop HTTP/1.1 client: requests at a fixed rate over a few
//! kept-alive connections, each timed from when it was *scheduled* to be
//! sent, so a slow answer that delays the next request is charged to that
//! request too (no coordinated omission, as wrk2 does it).
//!
//! Each connection is a thread on the load CPU; its socket is made inside
//! the client pod's network namespace and stays there.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use mesh_netns::Netns;

use super::load::Completed;
use crate::method;

/// What a paced run saw.
#[derive(Debug, Default)]
pub struct Paced {
    /// Round trips of the answered requests, from their scheduled send.
    pub rtt_nanos: Vec<u64>,
    /// Requests answered 200.
    pub ok: u64,
    /// Requests answered otherwise, or lost with their connection.
    pub failed: u64,
    /// Requests still unsent when the run had taken twice its time (the
    /// path could not carry the rate): each counts in `rtt_nanos` with
    /// the time it had waited then, a lower bound.
    pub late: u64,
    /// From the first scheduled request to the last answer.
    pub seconds: f64,
}

impl Paced {
    /// The counts as a closed-loop run reports them.
    fn completed(&self) -> Completed {
        Completed {
            ok: self.ok,
            failed: self.failed,
            seconds: self.seconds,
        }
    }

    /// Panics when more than 1 % of the requests failed.
    pub fn check(&self, what: &str) {
        self.completed().check(&format!("{what} (paced)"));
    }

    pub fn rps(&self) -> f64 {
        self.completed().rps()
    }
}

/// Sends `GET /` to `addr` from inside `netns` at `rate` requests per
/// second, spread over `connections`, for `duration`; gives up on what is
/// not sent after twice that (see [`Paced::late`]).
pub fn run(
    netns: &str,
    addr: SocketAddr,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> Paced {
    let ns = Netns::open(format!("/var/run/netns/{netns}"))
        .unwrap_or_else(|e| panic!("opening the client's namespace {netns}: {e}"));
    let per_connection = (duration.as_secs_f64() * rate / connections as f64).ceil() as u64;
    // Connections are opened first, so the schedule starts on warm ones.
    let start = Instant::now() + Duration::from_millis(100);
    let give_up = start + duration * 2;
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let ns = ns.try_clone().expect("duplicate the namespace handle");
            std::thread::spawn(move || {
                method::pin_this_thread(method::LOAD_CPU);
                let connect = || {
                    ns.run(|| Connection::open(addr))
                        .expect("enter the client's namespace")
                };
                let mut conn = connect();
                let mut seen = Paced::default();
                let mut last = start;
                for k in 0..per_connection {
                    let offset = (k * connections as u64 + i as u64) as f64 / rate;
                    let at = start + Duration::from_secs_f64(offset);
                    let now = Instant::now();
                    if now > give_up {
                        // This request and every later one are late.
                        for j in k..per_connection {
                            let offset = (j * connections as u64 + i as u64) as f64 / rate;
                            let at = start + Duration::from_secs_f64(offset);
                            seen.rtt_nanos
                                .push(now.saturating_duration_since(at).as_nanos() as u64);
                            seen.late += 1;
                        }
                        break;
                    }
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    let answer = match &mut conn {
                        Ok(c) => c.get(),
                        Err(e) => Err(io::Error::new(e.kind(), e.to_string())),
                    };
                    last = Instant::now();
                    match answer {
                        Ok(200) => {
                            seen.ok += 1;
                            seen.rtt_nanos.push((last - at).as_nanos() as u64);
                        }
                        Ok(_) => seen.failed += 1,
                        Err(_) => {
                            seen.failed += 1;
                            conn = connect();
                        }
                    }
                }
                seen.seconds = (last - start).as_secs_f64();
                seen
            })
        })
        .collect();
    let mut all = Paced::default();
    for t in threads {
        let seen = t.join().expect("a paced connection's thread panicked");
        all.rtt_nanos.extend(seen.rtt_nanos);
        all.ok += seen.ok;
        all.failed += seen.failed;
        all.late += seen.late;
        all.seconds = all.seconds.max(seen.seconds);
    }
    all
}

/// One kept-alive HTTP/1.1 connection, one request at a time.
struct Connection {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Connection {
    fn open(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(Self {
            stream,
            request: format!("GET / HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends the request and reads the whole answer; its status.
    fn get(&mut self) -> io::Result<u16> {
        self.stream.write_all(&self.request)?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = std::str::from_utf8(&self.buf[..head_end]).map_err(invalid)?;
        let status: u16 = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| invalid("no status line"))?;
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())
                    .flatten()
            })
            .ok_or_else(|| invalid("the answer has no content-length"))?;
        while self.buf.len() < head_end + length {
            self.fill()?;
        }
        self.buf.drain(..head_end + length);
        Ok(status)
    }

    fn fill(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 8192];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn invalid(e: impl ToString) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}
