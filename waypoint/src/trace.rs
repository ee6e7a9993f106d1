//! Tracing at the waypoint (`user-surface.md` §5.4): one span per request,
//! exported over OTLP/gRPC to the collector of `OTEL_EXPORTER_OTLP_ENDPOINT`.
//! A request that carries a W3C `traceparent` continues that trace (and its
//! sampling decision); the request sent upstream carries this span as its
//! parent, so the application's spans hang below the waypoint's. Without a
//! collector nothing is traced and `traceparent` passes through unchanged.

use std::time::Duration;

use http::HeaderMap;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};

/// Where spans go and how many are kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TracingConfig {
    /// The OTLP/gRPC collector, e.g. `http://otel-collector.observability:4317`.
    pub endpoint: String,
    /// Of the requests that arrive without a sampling decision, the share
    /// traced, in percent (Istio's `randomSamplingPercentage`).
    pub sampling_percent: f64,
    /// How long finished spans wait to be sent in a batch.
    pub batch_delay: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("starting the OTLP exporter to {endpoint} (OTEL_EXPORTER_OTLP_ENDPOINT): {reason}")]
pub struct TracingError {
    endpoint: String,
    reason: String,
}

/// The waypoint's tracer.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    propagator: TraceContextPropagator,
}

impl Tracing {
    /// Starts the exporter; must run inside the tokio runtime, whose tasks
    /// carry the gRPC connection. `service` names this waypoint in spans
    /// (`<gateway>.<namespace>`, as Istio's waypoints do).
    pub fn start(cfg: &TracingConfig, service: &str) -> Result<Self, TracingError> {
        let error = |reason: String| TracingError {
            endpoint: cfg.endpoint.clone(),
            reason,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(cfg.endpoint.clone())
            .with_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| error(e.to_string()))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(cfg.batch_delay)
                    .build(),
            )
            .build();
        let ratio = (cfg.sampling_percent / 100.0).clamp(0.0, 1.0);
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(service.to_string())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("waypoint");
        Ok(Tracing {
            provider,
            tracer,
            propagator: TraceContextPropagator::new(),
        })
    }

    /// A server span for one request, the child of the request's
    /// `traceparent` when it has one.
    pub fn request_span(
        &self,
        headers: &HeaderMap,
        name: String,
        attributes: Vec<KeyValue>,
    ) -> RequestSpan {
        let parent = self.propagator.extract(&Headers(headers));
        let span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_attributes(attributes)
            .start_with_context(&self.tracer, &parent);
        RequestSpan {
            cx: parent.with_span(span),
        }
    }

    /// Sends what is buffered; called on shutdown.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "flushing spans");
        }
    }
}

/// One request's span, until the response ends.
pub struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// The trace id (32 hex digits) when the span is sampled.
    pub fn trace_id(&self) -> Option<String> {
        let sc = self.cx.span().span_context().clone();
        sc.is_sampled().then(|| sc.trace_id().to_string())
    }

    /// Replaces the request's `traceparent` (and `tracestate`) with this
    /// span's, for the upstream.
    pub fn inject(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeadersMut(headers));
    }

    pub fn end(&self, status: u16, grpc_status: Option<&str>) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if let Some(g) = grpc_status {
            span.set_attribute(KeyValue::new("rpc.grpc.status_code", g.to_string()));
        }
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

struct HeadersMut<'a>(&'a mut HeaderMap);

impl Injector for HeadersMut<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(name), Ok(value)) = (
            http::header::HeaderName::from_bytes(key.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            self.0.insert(name, value);
        }
    }
}
