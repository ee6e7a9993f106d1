//! The stats endpoint (`/metrics` and `/stats/prometheus`, port 15020) and
//! the readiness probe (`/healthz/ready`, port 15021), as Istio's proxies
//! answer them.
//!
//! Metrics are kept in a `prometheus-client` registry, which writes
//! OpenMetrics text. A scraper that asks for OpenMetrics gets it as is;
//! anyone else gets the Prometheus text format (counters named with their
//! `_total` suffix in `# HELP`/`# TYPE`, no `# EOF`).

use std::sync::Arc;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use crate::drain::DrainWatcher;

use crate::endpoint::{self, Body};
use crate::readiness::Ready;

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
const PROMETHEUS: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry as OpenMetrics text.
pub fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// OpenMetrics text → Prometheus text format 0.0.4.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let mut counters = std::collections::HashSet::new();
    for line in openmetrics.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Serves `/metrics` and `/stats/prometheus` from `registry` until the
/// drain.
pub async fn serve(listener: TcpListener, watcher: DrainWatcher, registry: Arc<Registry>) {
    endpoint::serve("stats", listener, watcher, move |req| {
        respond(&registry, req)
    })
    .await
}

/// Serves `/healthz/ready` until the drain.
pub async fn serve_readiness(listener: TcpListener, watcher: DrainWatcher, ready: Ready) {
    endpoint::serve("readiness", listener, watcher, move |req| {
        readiness(&ready, req)
    })
    .await
}

/// Answers `/metrics` and `/stats/prometheus`.
fn respond(registry: &Registry, req: &Request<Incoming>) -> Response<Body> {
    match req.uri().path() {
        "/metrics" | "/stats/prometheus" if req.method() == Method::GET => {}
        "/metrics" | "/stats/prometheus" => {
            return endpoint::status(StatusCode::METHOD_NOT_ALLOWED);
        }
        _ => return endpoint::status(StatusCode::NOT_FOUND),
    }
    let openmetrics = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let text = encode(registry);
    let (body, content_type) = if openmetrics {
        (text, OPENMETRICS)
    } else {
        (to_prometheus_text(&text), PROMETHEUS)
    };
    let mut r = endpoint::text(StatusCode::OK, body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    r
}

/// Answers `/healthz/ready`: `200 ready` once every startup task is done,
/// else `500 not ready, pending: <tasks>`.
fn readiness(ready: &Ready, req: &Request<Incoming>) -> Response<Body> {
    if req.uri().path() != "/healthz/ready" {
        return endpoint::status(StatusCode::NOT_FOUND);
    }
    if req.method() != Method::GET {
        return endpoint::status(StatusCode::METHOD_NOT_ALLOWED);
    }
    let pending = ready.pending();
    if pending.is_empty() {
        endpoint::text(StatusCode::OK, "ready\n")
    } else {
        endpoint::text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("not ready, pending: {}\n", pending.join(", ")),
        )
    }
}

/// `mesh_wait_timeouts_total{wait}`: the waits on a peer in this process
/// that reached their bound, by kind ([`mesh_core::wait::Wait`]), every
/// kind present from the start.
#[derive(Debug, Default)]
pub struct WaitCollector;

impl prometheus_client::collector::Collector for WaitCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::MetricType;
        use prometheus_client::metrics::counter::ConstCounter;
        let mut family = encoder.encode_descriptor(
            "mesh_wait_timeouts",
            "Waits on a peer that reached their bound (docs/reliability.md, Waits on a peer)",
            None,
            MetricType::Counter,
        )?;
        for wait in mesh_core::wait::Wait::ALL {
            let counter = ConstCounter::new(wait.timeouts());
            counter.encode(family.encode_family(&[("wait", wait.name())])?)?;
        }
        Ok(())
    }
}

/// What every component's registry carries about its process: the
/// `process_*` metrics and the wait timeouts.
pub fn register_process(registry: &mut Registry) {
    registry.register_collector(Box::new(ProcessCollector));
    registry.register_collector(Box::new(WaitCollector));
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::gauge::Gauge;

    use super::*;

    #[test]
    fn prometheus_text_names_counters_with_their_suffix_and_has_no_eof() {
        let mut registry = Registry::with_prefix("istio");
        let c: Counter = Counter::default();
        c.inc();
        registry.register("tcp_connections_opened", "Connections opened", c);
        let g: Gauge = Gauge::default();
        g.set(3);
        registry.register("tcp_sockets_open", "Open sockets", g);
        let om = encode(&registry);
        assert!(om.contains("# TYPE istio_tcp_connections_opened counter\n"));
        assert!(om.ends_with("# EOF\n"));
        let text = to_prometheus_text(&om);
        assert_eq!(
            text,
            "# HELP istio_tcp_connections_opened_total Connections opened.\n\
             # TYPE istio_tcp_connections_opened_total counter\n\
             istio_tcp_connections_opened_total 1\n\
             # HELP istio_tcp_sockets_open Open sockets.\n\
             # TYPE istio_tcp_sockets_open gauge\n\
             istio_tcp_sockets_open 3\n"
        );
    }
}

/// Prometheus' standard `process_*` metrics, read from `/proc/self` at each
/// scrape: `process_cpu_seconds_total`, `process_resident_memory_bytes`,
/// `process_open_fds`, `process_max_fds`, `process_threads`.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// Linux reports CPU time in clock ticks of 1/100 s (`CLK_TCK`, fixed at
/// 100 on the architectures we build for).
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;

/// What `/proc/self` says now; `None` for what could not be read.
#[derive(Debug, Default, PartialEq)]
struct ProcessReading {
    cpu_seconds: Option<f64>,
    resident_bytes: Option<i64>,
    threads: Option<i64>,
    open_fds: Option<i64>,
    max_fds: Option<i64>,
}

fn read_process(stat: &str, status: &str, limits: &str, open_fds: Option<i64>) -> ProcessReading {
    // Fields after the command name (which may hold spaces), from the third:
    // utime is the 14th field, stime the 15th.
    let cpu_seconds = stat.rsplit_once(')').and_then(|(_, rest)| {
        let f: Vec<&str> = rest.split_whitespace().collect();
        let utime: f64 = f.get(11)?.parse().ok()?;
        let stime: f64 = f.get(12)?.parse().ok()?;
        Some((utime + stime) / CLOCK_TICKS_PER_SECOND)
    });
    let status_field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
    };
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok());
    ProcessReading {
        cpu_seconds,
        resident_bytes: status_field("VmRSS:").map(|kb| kb * 1024),
        threads: status_field("Threads:"),
        open_fds,
        max_fds,
    }
}

impl prometheus_client::collector::Collector for ProcessCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|d| d.count() as i64);
        let r = read_process(
            &read("/proc/self/stat"),
            &read("/proc/self/status"),
            &read("/proc/self/limits"),
            fds,
        );
        if let Some(v) = r.cpu_seconds {
            let c = ConstCounter::new(v);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent, in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory, in bytes",
                r.resident_bytes,
            ),
            ("process_threads", "Threads", r.threads),
            ("process_open_fds", "Open file descriptors", r.open_fds),
            (
                "process_max_fds",
                "The limit on open file descriptors",
                r.max_fds,
            ),
        ] {
            if let Some(v) = value {
                let g = ConstGauge::new(v);
                g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod process_tests {
    use super::*;

    #[test]
    fn proc_files_are_read_as_prometheus_names_them() {
        let stat = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 9 0 100 0 0";
        let status = "Name:\tx\nVmRSS:\t  2048 kB\nThreads:\t9\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1048576              1048576              files\n";
        assert_eq!(
            read_process(stat, status, limits, Some(12)),
            ProcessReading {
                cpu_seconds: Some(3.0),
                resident_bytes: Some(2 * 1024 * 1024),
                threads: Some(9),
                open_fds: Some(12),
                max_fds: Some(1048576),
            }
        );
        assert_eq!(read_process("", "", "", None), ProcessReading::default());
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector));
        let text = encode(&registry);
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_threads ",
        ] {
            assert!(text.contains(name), "{name} in\n{text}");
        }
    }
}
