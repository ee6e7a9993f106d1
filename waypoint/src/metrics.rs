//! What the waypoint counts and logs about each request, in Istio's names
//! (`user-surface.md` §5.2): `istio_requests_total`,
//! `istio_request_duration_milliseconds`, `istio_request_bytes` and
//! `istio_response_bytes` with `reporter="waypoint"`, and one `access` line
//! per request. Both are written when the response body ends (or the client
//! goes away), so the duration, the response size and a gRPC status sent
//! in trailers are the real ones.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use hyper::body::{Body as HttpBody, Frame, SizeHint};
use mesh_core::{Identity, Workload};
use mesh_telemetry::{Reporter, ResponseFlags, SecurityPolicy, TrafficLabels, UNKNOWN};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::info;

use crate::http::{Body, BoxError};
use crate::trace::RequestSpan;

/// Istio's request labels: the traffic labels and the outcome.
#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct RequestLabels {
    #[prometheus(flatten)]
    pub traffic: TrafficLabels,
    pub response_code: String,
    /// The `grpc-status` of a gRPC response, else empty.
    pub grpc_response_status: String,
}

type Histograms = Family<RequestLabels, Histogram, fn() -> Histogram>;

/// The `istio_request*` metrics.
pub struct RequestMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Histograms,
    request_bytes: Histograms,
    response_bytes: Histograms,
}

/// Istio's buckets for request durations, in milliseconds.
const DURATION_BUCKETS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

fn bytes_histogram() -> Histogram {
    // 1 B to 100 MB, by powers of ten.
    Histogram::new(exponential_buckets(1.0, 10.0, 9))
}

impl RequestMetrics {
    /// Registers the metrics in `registry` (the `istio`-prefixed one).
    pub fn new(registry: &mut Registry) -> Arc<Self> {
        let m = RequestMetrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram),
        };
        registry.register("requests", "Requests proxied", m.requests.clone());
        registry.register(
            "request_duration_milliseconds",
            "From the request's arrival to the response's last byte, in milliseconds",
            m.duration.clone(),
        );
        registry.register(
            "request_bytes",
            "Request sizes (body), in bytes",
            m.request_bytes.clone(),
        );
        registry.register(
            "response_bytes",
            "Response sizes (body), in bytes",
            m.response_bytes.clone(),
        );
        Arc::new(m)
    }
}

/// One request, from arrival to the end of its response.
pub struct RequestRecord {
    metrics: Arc<RequestMetrics>,
    labels: Mutex<TrafficLabels>,
    started: Instant,
    pub method: String,
    pub path: String,
    pub authority: String,
    pub client: std::net::SocketAddr,
    request_bytes: Arc<AtomicU64>,
    /// Set where the waypoint answered by itself (RBAC, no route, no
    /// upstream, timeout).
    flags: Mutex<ResponseFlags>,
    /// The request's span, when traced.
    span: Mutex<Option<RequestSpan>>,
}

impl RequestRecord {
    /// The source is the peer's proved identity (and the workload at the
    /// client address, if it has that identity).
    pub fn new(
        metrics: Arc<RequestMetrics>,
        peer: &Identity,
        source: Option<&Workload>,
        client: std::net::SocketAddr,
    ) -> Self {
        let mut labels = TrafficLabels::new(Reporter::Waypoint, SecurityPolicy::MutualTls);
        if let Some(w) = source.filter(|w| w.identity().ok().as_ref() == Some(peer)) {
            labels = labels.with_source(w);
        }
        RequestRecord {
            metrics,
            labels: Mutex::new(labels.with_source_principal(peer)),
            started: Instant::now(),
            method: String::new(),
            path: String::new(),
            authority: String::new(),
            client,
            request_bytes: Arc::new(AtomicU64::new(0)),
            flags: Mutex::new(ResponseFlags::None),
            span: Mutex::new(None),
        }
    }

    /// Edits the labels (protocol, destination service and workload).
    pub fn labels(&self, edit: impl FnOnce(TrafficLabels) -> TrafficLabels) {
        let mut l = self.labels.lock().unwrap_or_else(|e| e.into_inner());
        *l = edit(l.clone());
    }

    /// The upstream endpoint the request went to.
    pub fn destination(&self, w: &Workload) {
        self.labels(|l| l.with_destination(w));
    }

    pub fn trace(&self, span: RequestSpan) {
        *self.span.lock().unwrap_or_else(|e| e.into_inner()) = Some(span);
    }

    /// Puts this request's span in the upstream request's `traceparent`.
    pub fn propagate(&self, headers: &mut HeaderMap) {
        if let Some(s) = &*self.span.lock().unwrap_or_else(|e| e.into_inner()) {
            s.inject(headers);
        }
    }

    pub fn flag(&self, flags: ResponseFlags) {
        *self.flags.lock().unwrap_or_else(|e| e.into_inner()) = flags;
    }

    /// Counts the request body as it is read.
    pub fn count_request(&self, body: Body) -> Body {
        use http_body_util::BodyExt;
        Counted {
            inner: body,
            bytes: self.request_bytes.clone(),
        }
        .boxed()
    }

    fn finish(&self, status: u16, grpc_status: Option<&str>, response_bytes: u64, ended: &str) {
        let traffic = {
            let mut l = self
                .labels
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            l.response_flags = *self.flags.lock().unwrap_or_else(|e| e.into_inner());
            l
        };
        let labels = RequestLabels {
            traffic,
            response_code: status.to_string(),
            grpc_response_status: grpc_status.unwrap_or_default().to_string(),
        };
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let request_bytes = self.request_bytes.load(Ordering::Relaxed);
        let m = &self.metrics;
        m.requests.get_or_create(&labels).inc();
        m.duration.get_or_create(&labels).observe(ms);
        m.request_bytes
            .get_or_create(&labels)
            .observe(request_bytes as f64);
        m.response_bytes
            .get_or_create(&labels)
            .observe(response_bytes as f64);
        let t = &labels.traffic;
        let opt = |v: &str| (v != UNKNOWN).then(|| v.to_string());
        let (src_workload, src_identity) = (opt(&t.source_workload), opt(&t.source_principal));
        let (dst_service, dst_workload) =
            (opt(&t.destination_service), opt(&t.destination_workload));
        let span = self.span.lock().unwrap_or_else(|e| e.into_inner()).take();
        let trace_id = span.as_ref().and_then(RequestSpan::trace_id);
        if let Some(span) = span {
            span.end(status, grpc_status);
        }
        info!(target: "access", method = %self.method,
            src.addr = %self.client, src.workload = src_workload.as_deref(),
            src.identity = src_identity.as_deref(), dst.service = dst_service.as_deref(),
            dst.workload = dst_workload.as_deref(), authority = %self.authority, path = %self.path,
            protocol = %t.request_protocol, response_code = status,
            grpc_status = grpc_status, response_flags = t.response_flags.as_str(),
            bytes_received = request_bytes, bytes_sent = response_bytes,
            duration = %format!("{}ms", ms.round()), trace_id = trace_id.as_deref(),
            "request {ended}");
    }
}

/// A request body that adds what passes to a counter.
struct Counted {
    inner: Body,
    bytes: Arc<AtomicU64>,
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The response body, recording the request when it ends.
pub struct Recorded {
    inner: Body,
    record: Option<Arc<RequestRecord>>,
    status: u16,
    grpc_status: Option<String>,
    bytes: u64,
}

impl Recorded {
    pub fn wrap(
        response: http::Response<Body>,
        record: Arc<RequestRecord>,
    ) -> http::Response<Body> {
        use http_body_util::BodyExt;
        let status = response.status().as_u16();
        // A trailers-only gRPC answer carries its status in the headers.
        let grpc_status = grpc_status(response.headers());
        let (parts, inner) = response.into_parts();
        if inner.is_end_stream() {
            // Nothing more will be polled for a body known to be empty.
            record.finish(status, grpc_status.as_deref(), 0, "complete");
            return http::Response::from_parts(parts, inner);
        }
        let body = Recorded {
            inner,
            record: Some(record),
            status,
            grpc_status,
            bytes: 0,
        };
        http::Response::from_parts(parts, body.boxed())
    }

    fn done(&mut self, how: &str) {
        if let Some(r) = self.record.take() {
            r.finish(self.status, self.grpc_status.as_deref(), self.bytes, how);
        }
    }
}

fn grpc_status(h: &HeaderMap) -> Option<String> {
    h.get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

impl HttpBody for Recorded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes += data.len() as u64;
                }
                if let Some(trailers) = frame.trailers_ref()
                    && let Some(s) = grpc_status(trailers)
                {
                    self.grpc_status = Some(s);
                }
                if self.inner.is_end_stream() {
                    self.done("complete");
                }
            }
            Poll::Ready(None) => self.done("complete"),
            Poll::Ready(Some(Err(_))) => self.done("failed: the upstream reset"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Recorded {
    /// The client went away before the end of the response.
    fn drop(&mut self) {
        if let Some(r) = &self.record {
            r.flag(ResponseFlags::DownstreamDisconnect);
            self.done("ended: the client went away");
        }
    }
}
