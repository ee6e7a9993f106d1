//! HTTP/1.1 and HTTP/2 (and so gRPC) inside one tunnel: per request,
//! L7 authorization, then the route, its filters, and forwarding with the
//! route's timeouts and retries. Answers are Envoy's: 403 `RBAC: access
//! denied`, 404 when routes exist and none match, 503 when no upstream can
//! be reached, 504 when the request timeout passes.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use mesh_telemetry::ResponseFlags;
use opentelemetry::KeyValue;
use tracing::debug;

use crate::forward::{ForwardError, Io};
use crate::metrics::{Recorded, RequestRecord};
use crate::policy::{Decision, HttpAttributes, RequestAttributes, normalize_path};
use crate::route::{Backend, Filter, RouteRequest, Rule};
use crate::server::{Downstream, Inputs};
use crate::sniff::Protocol;
use crate::target::Target;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// Bodies buffered for retries and mirroring are at most this large; a
/// larger one is refused with 413 rather than sent without its retries.
const MAX_BUFFERED_BODY: usize = 1 << 20;

/// Serves HTTP on one tunnelled connection until the client closes it.
pub async fn serve(io: impl Io, protocol: Protocol, ctx: Arc<Downstream>, inputs: Arc<Inputs>) {
    let service = service_fn(move |req| {
        let (ctx, inputs) = (ctx.clone(), inputs.clone());
        async move { Ok::<_, Infallible>(handle(req, &ctx, &inputs).await) }
    });
    let io = TokioIo::new(io);
    let result = match protocol {
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, service)
                .await
        }
        _ => {
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(crate::sniff::DOWNSTREAM_IDLE_TIMEOUT)
                .serve_connection(io, service)
                .await
        }
    };
    match result {
        // No request (or not all of its headers) within the idle timeout.
        Err(e) if e.is_timeout() => {
            mesh_core::wait::Wait::RequestHeaders.timed_out();
            debug!(after = ?crate::sniff::DOWNSTREAM_IDLE_TIMEOUT, "downstream HTTP/1.1 connection idle; closed");
        }
        Err(e) => debug!(error = %e, "downstream HTTP connection ended with an error"),
        Ok(()) => {}
    }
}

pub fn local(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(full(body.into()));
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    r
}

/// A request whose head is ambiguous or malformed: 400, and on HTTP/1.x
/// the connection closes after it, so the bytes behind it are never read
/// as another request (reliability.md H8).
fn malformed(version: Version, reason: impl Into<Bytes>) -> Response<Body> {
    let mut r = local(StatusCode::BAD_REQUEST, reason);
    if version < Version::HTTP_2 {
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed()
}

/// Headers that describe one hop's connection, never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
    "te",
    "trailer",
    "proxy-authorization",
];

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let te_trailers = h
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    for name in HOP_BY_HOP {
        h.remove(name);
    }
    if te_trailers {
        h.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

async fn handle(
    req: Request<Incoming>,
    ctx: &Arc<Downstream>,
    inputs: &Arc<Inputs>,
) -> Response<Body> {
    let record = Arc::new(record(&req, ctx, inputs));
    let response = decide_and_forward(req, ctx, inputs, &record).await;
    Recorded::wrap(response, record)
}

/// The request's metrics and access-log record: who asked, for what.
fn record(req: &Request<Incoming>, ctx: &Downstream, inputs: &Inputs) -> RequestRecord {
    let source = inputs
        .state
        .workload_by_addr(&inputs.config.network, ctx.client.ip());
    let mut r = RequestRecord::new(
        inputs.metrics.clone(),
        &ctx.peer,
        source.as_deref(),
        ctx.client,
    );
    r.method = req.method().to_string();
    r.path = req.uri().path().to_string();
    r.authority = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    let grpc = is_grpc(req.headers());
    let service = match &ctx.target {
        Target::Service(b) => inputs
            .state
            .service(&mesh_core::service::service_key(&b.namespace, &b.hostname)),
        Target::Workload { .. } => None,
    };
    if let Some(t) = &inputs.tracing {
        let cfg = &inputs.config;
        r.trace(t.request_span(
            req.headers(),
            format!("{} {}", r.method, r.path),
            vec![
                KeyValue::new("http.request.method", r.method.clone()),
                KeyValue::new("url.path", r.path.clone()),
                KeyValue::new("server.address", r.authority.clone()),
                KeyValue::new("client.address", ctx.client.ip().to_string()),
                KeyValue::new("istio.source_principal", ctx.peer.to_string()),
                KeyValue::new("istio.canonical_service", cfg.gateway_name.clone()),
                KeyValue::new("istio.namespace", cfg.gateway_namespace.clone()),
            ],
        ));
    }
    r.labels(|l| {
        let l = l.with_protocol(if grpc { "grpc" } else { "http" });
        let l = match &service {
            Some(s) => l.with_service(s),
            None => l,
        };
        match &ctx.target {
            Target::Workload { workload, .. } => l.with_destination(workload),
            Target::Service(_) => l,
        }
    });
    r
}

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

async fn decide_and_forward(
    req: Request<Incoming>,
    ctx: &Arc<Downstream>,
    inputs: &Arc<Inputs>,
    record: &RequestRecord,
) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let body = record.count_request(body_box(body));
    // The policy must judge the host the application will read: two Host
    // headers (RFC 9112 §3.2), one that is not visible ASCII, or one that
    // differs from the request's authority (RFC 9113 §8.3.1) is a 400.
    if let Err(reason) = one_host(&parts) {
        return malformed(parts.version, reason);
    }
    // Host names are case-insensitive: policies and routes see lower case.
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| ctx.original.to_string())
        .to_ascii_lowercase();
    let path = match normalize_path(parts.uri.path()) {
        Ok(p) => p,
        Err(e) => return malformed(parts.version, format!("bad request path: {e}")),
    };
    let query = parts.uri.query().map(str::to_string);
    // RequestAuthentication first, as Envoy's jwt_authn before RBAC: a bad
    // token is refused; no token passes unauthenticated (a policy may
    // still require one). Its header edits are what policies then see.
    let jwt = match ctx.target.jwt() {
        None => None,
        Some(validator) => match validator.authenticate(&mut parts.headers, query.as_deref()) {
            Ok(claims) => claims,
            Err(e) => {
                debug!(error = %e, %path, "JWT rejected");
                return local(StatusCode::UNAUTHORIZED, "Jwt verification fails");
            }
        },
    };
    let principal = ctx.peer.principal();
    let attrs = RequestAttributes {
        source_ip: ctx.client.ip(),
        source_principal: Some(&principal),
        source_namespace: Some(ctx.peer.namespace()),
        source_service_account: Some(ctx.peer.service_account()),
        destination_ip: ctx.original.ip(),
        destination_port: ctx.original.port(),
        http: Some(HttpAttributes {
            host: &host,
            method: parts.method.as_str(),
            path: &path,
            headers: &parts.headers,
            jwt: jwt.as_ref(),
        }),
    };
    if let Decision::Deny { policy } = ctx.target.policies().evaluate(&attrs) {
        debug!(?policy, %path, "request denied");
        record.flag(ResponseFlags::Rbac);
        return local(StatusCode::FORBIDDEN, "RBAC: access denied");
    }
    strip_hop_by_hop(&mut parts.headers);
    record.propagate(&mut parts.headers);

    // Pod-addressed traffic is policy-checked, never routed.
    let binding = match &ctx.target {
        Target::Workload { workload, .. } => {
            let upstream = Upstream::Workload(workload.clone(), ctx.original.port());
            let rule = Plan::default();
            return forward(
                parts,
                body,
                &path,
                query.as_deref(),
                &upstream,
                &rule,
                ctx,
                inputs,
                record,
            )
            .await;
        }
        Target::Service(b) => b,
    };
    if !binding.routes.serves_port(ctx.original.port()) {
        let upstream = Upstream::Service {
            namespace: binding.namespace.clone(),
            hostname: binding.hostname.clone(),
            port: ctx.original.port(),
        };
        return forward(
            parts,
            body,
            &path,
            query.as_deref(),
            &upstream,
            &Plan::default(),
            ctx,
            inputs,
            record,
        )
        .await;
    }
    let grpc = is_grpc(&parts.headers);
    let route_req = RouteRequest {
        method: &parts.method,
        host: &host,
        path: &path,
        query: query.as_deref(),
        headers: &parts.headers,
        grpc,
        port: ctx.original.port(),
    };
    let Some(selected) = binding.routes.select(&route_req) else {
        record.flag(ResponseFlags::NoRoute);
        return local(StatusCode::NOT_FOUND, "route not found");
    };
    let rule = selected.rule;
    let prefix = selected.matched_prefix.map(str::to_string);
    let mut path = path;
    let mut query = query;
    let mut plan = Plan::from_rule(rule);
    for filter in &rule.filters {
        match filter {
            Filter::Redirect(r) => {
                let (host_only, port) = split_host(&host);
                let pq = match &query {
                    Some(q) => format!("{path}?{q}"),
                    None => path.clone(),
                };
                let (status, location) =
                    r.location("http", host_only, port, &pq, prefix.as_deref());
                let mut resp = local(status, Bytes::new());
                if let Ok(v) = HeaderValue::from_str(&location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                return resp;
            }
            Filter::RequestHeaders(edit) => edit.apply(&mut parts.headers),
            Filter::ResponseHeaders(edit) => plan.response_edits.push(edit.clone()),
            Filter::Rewrite(rw) => {
                let (new_host, pq) = rw.apply(&path, query.as_deref(), prefix.as_deref());
                if let Some(h) = new_host
                    && let Ok(v) = HeaderValue::from_str(&h)
                {
                    parts.headers.insert(header::HOST, v);
                }
                (path, query) = match pq.split_once('?') {
                    Some((p, q)) => (p.to_string(), Some(q.to_string())),
                    None => (pq, None),
                };
            }
            Filter::Mirror { backend, .. } => {
                if filter.mirrors(rand::random()) {
                    plan.mirrors.push(backend.clone());
                }
            }
        }
    }
    let Some(backend) = rule.pick_backend(rand::random()) else {
        return local(
            StatusCode::INTERNAL_SERVER_ERROR,
            "no backend for this route",
        );
    };
    for filter in &backend.filters {
        match filter {
            Filter::RequestHeaders(edit) => edit.apply(&mut parts.headers),
            Filter::ResponseHeaders(edit) => plan.response_edits.push(edit.clone()),
            _ => {}
        }
    }
    let upstream = Upstream::of(backend);
    forward(
        parts,
        body,
        &path,
        query.as_deref(),
        &upstream,
        &plan,
        ctx,
        inputs,
        record,
    )
    .await
}

/// At most one Host header, visible ASCII, equal (ignoring case) to the
/// URI's authority when the request has both.
fn one_host(parts: &http::request::Parts) -> Result<(), &'static str> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let (Some(host), None) = (hosts.next(), hosts.next()) else {
        return match parts.headers.contains_key(header::HOST) {
            true => Err("more than one Host header"),
            false => Ok(()),
        };
    };
    let host = host
        .to_str()
        .map_err(|_| "the Host header is not visible ASCII")?;
    match parts.uri.authority() {
        Some(a) if !a.as_str().eq_ignore_ascii_case(host) => {
            Err("the Host header and the request's authority differ")
        }
        _ => Ok(()),
    }
}

fn split_host(host: &str) -> (&str, Option<u16>) {
    match host.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => (host, None),
        Some((h, p)) => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (host, None),
        },
        None => (host, None),
    }
}

/// Where a request goes.
enum Upstream {
    Service {
        namespace: String,
        hostname: String,
        port: u16,
    },
    Workload(Arc<mesh_core::Workload>, u16),
}

impl Upstream {
    fn of(b: &Backend) -> Self {
        Upstream::Service {
            namespace: b.namespace.clone(),
            hostname: b.hostname.clone(),
            port: b.port,
        }
    }

    /// Connects to an endpoint not in `tried`, if there is one, and adds
    /// it to `tried`.
    async fn connect(
        &self,
        ctx: &Downstream,
        inputs: &Inputs,
        tried: &mut Vec<String>,
        record: Option<&RequestRecord>,
    ) -> Result<Box<dyn Io>, ForwardError> {
        let (w, port) = match self {
            Upstream::Service {
                namespace,
                hostname,
                port,
            } => inputs
                .upstreams
                .endpoint(namespace, hostname, *port, tried)?,
            Upstream::Workload(w, port) => (w.clone(), *port),
        };
        tried.push(w.uid.to_string());
        if let Some(r) = record {
            r.destination(&w);
        }
        inputs.upstreams.connect(&w, port, ctx.client).await
    }
}

/// How a request is sent: the rule's timeouts, retries and extra work.
#[derive(Default)]
struct Plan {
    request_timeout: Option<Duration>,
    try_timeout: Option<Duration>,
    retry_codes: Vec<u16>,
    /// Retries after the first attempt.
    retries: u32,
    backoff: Duration,
    response_edits: Vec<crate::route::HeaderEdit>,
    mirrors: Vec<Backend>,
}

impl Plan {
    fn from_rule(rule: &Rule) -> Self {
        let mut plan = Plan {
            request_timeout: rule.request_timeout,
            try_timeout: rule.backend_request_timeout,
            ..Default::default()
        };
        if let Some(r) = &rule.retry {
            plan.retries = r.attempts;
            plan.retry_codes = r.codes.clone();
            plan.backoff = r.backoff.unwrap_or(Duration::from_millis(25));
        }
        plan
    }

    fn buffers(&self) -> bool {
        self.retries > 0 || !self.mirrors.is_empty()
    }
}

/// Why one attempt produced no usable response.
enum Failure {
    Connect(ForwardError),
    Upstream(hyper::Error),
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    mut parts: http::request::Parts,
    body: Body,
    path: &str,
    query: Option<&str>,
    upstream: &Upstream,
    plan: &Plan,
    ctx: &Arc<Downstream>,
    inputs: &Arc<Inputs>,
    record: &RequestRecord,
) -> Response<Body> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| ctx.original.to_string());
    parts.uri = match build_uri(ctx.protocol, &host, &pq) {
        Ok(u) => u,
        Err(e) => {
            return local(
                StatusCode::BAD_REQUEST,
                format!("cannot build the upstream URI: {e}"),
            );
        }
    };
    parts.version = match ctx.protocol {
        Protocol::Http2 => Version::HTTP_2,
        _ => Version::HTTP_11,
    };
    // Streaming bodies get one attempt (connection failures are still
    // retried: nothing has been sent yet); buffered ones get the plan.
    let (buffered, mut streaming) = if plan.buffers() {
        match collect_limited(body, MAX_BUFFERED_BODY).await {
            Some(b) => (Some(b), None),
            None => {
                return local(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request body too large to retry",
                );
            }
        }
    } else {
        (None, Some(body))
    };
    for mirror in &plan.mirrors {
        spawn_mirror(
            mirror,
            &parts,
            buffered.clone().unwrap_or_default(),
            ctx,
            inputs,
        );
    }
    let attempts = async {
        let mut attempt = 0;
        let mut tried = Vec::new();
        loop {
            let last = attempt >= plan.retries;
            let req_body = match &buffered {
                Some(b) => full(b.clone()),
                None => match streaming.take() {
                    Some(b) => b,
                    None => {
                        return local(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "upstream reset before headers",
                        );
                    }
                },
            };
            let req = Request::from_parts(parts.clone(), req_body);
            let once = send_once(req, upstream, ctx, inputs, &mut tried, Some(record));
            let result = match plan.try_timeout {
                Some(t) => match tokio::time::timeout(t, once).await {
                    Ok(r) => r,
                    Err(_) if last => {
                        record.flag(ResponseFlags::UpstreamTimeout);
                        return local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout");
                    }
                    Err(_) => {
                        attempt += 1;
                        continue;
                    }
                },
                None => once.await,
            };
            match result {
                Ok(resp) if !last && plan.retry_codes.contains(&resp.status().as_u16()) => {
                    debug!(status = resp.status().as_u16(), attempt, "retrying");
                }
                Ok(mut resp) => {
                    strip_hop_by_hop(resp.headers_mut());
                    for edit in &plan.response_edits {
                        edit.apply(resp.headers_mut());
                    }
                    return resp.map(|b| b.map_err(BoxError::from).boxed());
                }
                Err((Failure::Connect(e), Some(body))) if !last => {
                    debug!(error = %e, attempt, "upstream connect failed; retrying");
                    streaming = Some(body);
                }
                Err((Failure::Connect(e), _)) => {
                    record.flag(ResponseFlags::UpstreamConnectFailure);
                    return local(StatusCode::SERVICE_UNAVAILABLE, e.to_string());
                }
                Err((Failure::Upstream(e), _)) if last || buffered.is_none() => {
                    record.flag(ResponseFlags::UpstreamConnectFailure);
                    return local(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("upstream connect error or disconnect/reset before headers: {e}"),
                    );
                }
                Err((Failure::Upstream(e), _)) => {
                    debug!(error = %e, attempt, "upstream failed; retrying")
                }
            }
            attempt += 1;
            tokio::time::sleep(plan.backoff).await;
        }
    };
    match plan.request_timeout {
        Some(t) => tokio::time::timeout(t, attempts).await.unwrap_or_else(|_| {
            record.flag(ResponseFlags::UpstreamTimeout);
            local(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout")
        }),
        None => attempts.await,
    }
}

/// The whole body, or `None` if it is larger than `max` or fails.
async fn collect_limited(mut body: Body, max: usize) -> Option<Bytes> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.ok()?.into_data() {
            if out.len() + data.len() > max {
                return None;
            }
            out.extend_from_slice(&data);
        }
    }
    Some(out.freeze())
}

fn body_box(b: Incoming) -> Body {
    b.map_err(BoxError::from).boxed()
}

fn build_uri(protocol: Protocol, host: &str, pq: &str) -> Result<Uri, http::Error> {
    match protocol {
        // HTTP/2 carries :scheme and :authority.
        Protocol::Http2 => Ok(Uri::builder()
            .scheme("http")
            .authority(host)
            .path_and_query(pq)
            .build()?),
        _ => Ok(Uri::builder().path_and_query(pq).build()?),
    }
}

/// One attempt. On a connection failure the (unsent) body comes back.
/// The endpoint tried is the request's destination in `record`.
async fn send_once(
    req: Request<Body>,
    upstream: &Upstream,
    ctx: &Arc<Downstream>,
    inputs: &Arc<Inputs>,
    tried: &mut Vec<String>,
    record: Option<&RequestRecord>,
) -> Result<Response<Incoming>, (Failure, Option<Body>)> {
    let io = match upstream.connect(ctx, inputs, tried, record).await {
        Ok(io) => TokioIo::new(io),
        Err(e) => return Err((Failure::Connect(e), Some(req.into_body()))),
    };
    let sent = match ctx.protocol {
        Protocol::Http2 => {
            let (mut sender, conn) =
                match hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await {
                    Ok(x) => x,
                    Err(e) => return Err((Failure::Upstream(e), None)),
                };
            tokio::spawn(conn);
            sender.send_request(req).await
        }
        _ => {
            let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
                Ok(x) => x,
                Err(e) => return Err((Failure::Upstream(e), None)),
            };
            tokio::spawn(conn);
            sender.send_request(req).await
        }
    };
    sent.map_err(|e| (Failure::Upstream(e), None))
}

/// How long a mirrored request may wait for its answer's headers: Envoy's
/// default route timeout (Istio sets none on the request itself, but a
/// mirror nobody waits for must not hold a connection for ever).
const MIRROR_ANSWER_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// Sends a copy of the request to `backend` and forgets the answer.
fn spawn_mirror(
    backend: &Backend,
    parts: &http::request::Parts,
    body: Bytes,
    ctx: &Arc<Downstream>,
    inputs: &Arc<Inputs>,
) {
    let mut parts = parts.clone();
    // Envoy marks mirrored requests by suffixing the host with `-shadow`.
    if let Some(h) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        let shadow = match h.rsplit_once(':') {
            Some((name, port)) => format!("{name}-shadow:{port}"),
            None => format!("{h}-shadow"),
        };
        if let Ok(v) = HeaderValue::from_str(&shadow) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let upstream = Upstream::of(backend);
    let (ctx, inputs) = (ctx.clone(), inputs.clone());
    tokio::spawn(async move {
        let req = Request::from_parts(parts, full(body));
        let mut tried = Vec::new();
        let sent = send_once(req, &upstream, &ctx, &inputs, &mut tried, None);
        let reason = match tokio::time::timeout(MIRROR_ANSWER_WAIT, sent).await {
            Ok(Ok(_)) => return,
            Ok(Err((Failure::Connect(e), _))) => e.to_string(),
            Ok(Err((Failure::Upstream(e), _))) => e.to_string(),
            Err(_) => format!("no answer within {MIRROR_ANSWER_WAIT:?}"),
        };
        debug!(%reason, "mirrored request failed");
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, hosts: &[&[u8]]) -> http::request::Parts {
        let mut builder = Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(header::HOST, HeaderValue::from_bytes(h).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_names_one_host_or_is_refused() {
        assert_eq!(one_host(&parts("/", &[b"web"])), Ok(()));
        assert_eq!(one_host(&parts("/", &[])), Ok(()));
        assert_eq!(one_host(&parts("http://web:80/", &[b"WEB:80"])), Ok(()));
        assert_eq!(one_host(&parts("http://web/", &[])), Ok(()));
        assert_eq!(
            one_host(&parts("/", &[b"web", b"admin.example"])),
            Err("more than one Host header")
        );
        assert_eq!(
            one_host(&parts("/", &[b"adm\xe9n.example"])),
            Err("the Host header is not visible ASCII")
        );
        assert_eq!(
            one_host(&parts("http://web/", &[b"admin.example"])),
            Err("the Host header and the request's authority differ")
        );
    }
}
