//! The stats endpoint (`/metrics` and `/stats/prometheus`, port 15020) and
//! the readiness probe (`/healthz/ready`, port 15021), as Istio's proxies
//! answer them.
//!
//! Metrics are kept in a `prometheus-client` registry, which writes
//! OpenMetrics text. A scraper that asks for OpenMetrics gets it as is;
//! anyone else gets the Prometheus text format (counters named with their
//! `_total` suffix in `# HELP`/`# TYPE`, no `# EOF`).

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use prometheus_client::registry::Registry;

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

/// Answers `/metrics` and `/stats/prometheus`.
pub fn respond(registry: &Registry, req: &Request<Incoming>) -> Response<Body> {
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
pub fn readiness(ready: &Ready, req: &Request<Incoming>) -> Response<Body> {
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
