//! Readiness and liveness probes, run from the node's network namespace as
//! the kubelet runs them: `tcpSocket` (a connection) and `httpGet` (a
//! status from 200 to 399). Each attempt is bounded by the probe's
//! `timeoutSeconds`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// What to try, resolved against the container's named ports.
#[derive(Debug, Clone)]
pub enum Check {
    Tcp(u16),
    Http { port: u16, path: String },
}

/// One of a container's probes, if it has one this node can run.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub check: Check,
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub failure_threshold: u32,
}

impl ProbeSpec {
    pub fn readiness(container: &Container) -> Option<Result<Self, String>> {
        Self::of(container, container.readiness_probe.as_ref()?)
    }

    pub fn liveness(container: &Container) -> Option<Result<Self, String>> {
        Self::of(container, container.liveness_probe.as_ref()?)
    }

    fn of(container: &Container, probe: &Probe) -> Option<Result<Self, String>> {
        let port = |p: &IntOrString| -> Result<u16, String> {
            match p {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("port {n}")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name.as_str()))
                    .and_then(|cp| u16::try_from(cp.container_port).ok())
                    .ok_or_else(|| format!("no container port named {name:?}")),
            }
        };
        let check = if let Some(tcp) = &probe.tcp_socket {
            port(&tcp.port).map(Check::Tcp)
        } else if let Some(http) = &probe.http_get {
            port(&http.port).map(|p| Check::Http {
                port: p,
                path: http.path.clone().unwrap_or_else(|| "/".into()),
            })
        } else {
            Err("only tcpSocket and httpGet probes are run by this node".into())
        };
        let secs =
            |v: Option<i32>, default: i32| Duration::from_secs(v.unwrap_or(default).max(0) as u64);
        Some(check.map(|check| Self {
            check,
            initial_delay: secs(probe.initial_delay_seconds, 0),
            period: secs(probe.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(probe.timeout_seconds, 1).max(Duration::from_secs(1)),
            failure_threshold: probe.failure_threshold.unwrap_or(3).max(1) as u32,
        }))
    }
}

/// One attempt against `ip`, from inside `node_netns`.
pub fn attempt(node_netns: &str, ip: &str, check: &Check, timeout: Duration) -> Result<(), String> {
    let netns = mesh_netns::Netns::open(format!("/var/run/netns/{node_netns}"))
        .map_err(|e| e.to_string())?;
    let ip: std::net::IpAddr = ip.parse().map_err(|e| format!("pod IP {ip}: {e}"))?;
    netns
        .run(|| match check {
            Check::Tcp(port) => TcpStream::connect_timeout(&SocketAddr::new(ip, *port), timeout)
                .map(drop)
                .map_err(|e| e.to_string()),
            Check::Http { port, path } => http_get(SocketAddr::new(ip, *port), path, timeout),
        })
        .map_err(|e| e.to_string())?
}

fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/1.37\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut head = [0u8; 32];
    let n = s.read(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head[..n]);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {line:?}"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}
