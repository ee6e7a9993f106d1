//! The node's kubelet endpoint on 10250, for `kubectl logs`, `exec` and
//! port forwarding. The API server proxies `pods/log`, `pods/exec` and
//! `pods/portforward` here over TLS. It presents its kubelet client
//! certificate, which must chain to the cluster CA and name the API
//! server's user (no other holder of a cluster certificate is served:
//! the API server is where exec is authorized). It checks ours
//! (`kubelet-<node>.crt`, signed by the cluster CA for the node's address).
//!
//! - `GET /containerLogs/{namespace}/{pod}/{container}`, with `tailLines=N`
//!   and `follow=true` (more is sent as the container writes, until the
//!   client goes or the pod does);
//! - `/exec/{namespace}/{pod}/{container}` (`exec.rs`) and
//!   `/portForward/{namespace}/{pod}` (`portforward.rs`), over WebSockets;
//! - `GET /healthz`.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use super::running::{ContainerRef, Running};
use super::{exec, portforward, websocket};
use crate::config::{Layout, Node};

pub const PORT: u16 = 10250;
/// The user of the API server's kubelet client certificate (pki).
const API_SERVER_CLIENT: &str = "kube-apiserver-kubelet-client";
const HANDSHAKE_BOUND: Duration = Duration::from_secs(10);
const FOLLOW_POLL: Duration = Duration::from_millis(250);

pub type Body = BoxBody<Bytes, Infallible>;

/// What the endpoint serves from.
struct Endpoint {
    logs: PathBuf,
    running: Arc<Running>,
    /// The `cluster` binary: `cluster enter` runs exec'd commands.
    program: PathBuf,
}

/// Serves until the task is dropped.
pub async fn serve(
    layout: Layout,
    node: Node,
    running: Arc<Running>,
    program: PathBuf,
) -> anyhow::Result<()> {
    let acceptor = TlsAcceptor::from(Arc::new(tls(&layout, &node)?));
    let netns = mesh_netns::Netns::open(format!("/var/run/netns/{}", node.netns))?;
    let listener = netns
        .run(|| std::net::TcpListener::bind((node.ip, PORT)))?
        .with_context(|| format!("binding {}:{PORT} in {}", node.ip, node.netns))?;
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let endpoint = Arc::new(Endpoint {
        logs: layout.node_root(&node).join("var/log/pods"),
        running,
        program,
    });
    loop {
        let (tcp, _) = listener.accept().await?;
        let (acceptor, endpoint) = (acceptor.clone(), endpoint.clone());
        tokio::spawn(async move {
            let Ok(Ok(tls)) = tokio::time::timeout(HANDSHAKE_BOUND, acceptor.accept(tcp)).await
            else {
                return;
            };
            // Logs and exec are the API server's to ask for; it decides who
            // may. Another holder of a cluster certificate (a node, a
            // component) is turned away.
            let peer = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
            if peer.and_then(common_name).as_deref() != Some(API_SERVER_CLIENT) {
                tracing::warn!(peer = ?peer.and_then(common_name), "kubelet endpoint: a client other than the API server refused");
                return;
            }
            let service = hyper::service::service_fn(move |req| {
                let endpoint = endpoint.clone();
                async move { Ok::<_, Infallible>(handle(endpoint, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HANDSHAKE_BOUND)
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}

fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let cn = parsed.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_string)
}

fn tls(layout: &Layout, node: &Node) -> anyhow::Result<rustls::ServerConfig> {
    let pki = layout.pki();
    let file = |name: String| pki.join(name);
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(file(format!("kubelet-{}.crt", node.name)))?
            .collect::<Result<_, _>>()?;
    let key = PrivateKeyDer::from_pem_file(file(format!("kubelet-{}.key", node.name)))?;
    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_file_iter(file("ca.crt".into()))? {
        roots.add(ca?)?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let clients = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()?;
    Ok(rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(clients)
        .with_single_cert(certs, key)?)
}

async fn handle(endpoint: Arc<Endpoint>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or_default().to_string();
    if path == "/healthz" {
        return text(StatusCode::OK, "ok".into());
    }
    if let Some(rest) = path.strip_prefix("/containerLogs/") {
        return logs(&endpoint.logs, rest, &query);
    }
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match parts[..] {
        ["exec", namespace, pod, container] => {
            let container = ContainerRef {
                namespace: namespace.into(),
                pod: pod.into(),
                container: container.into(),
            };
            let Some(launch) = endpoint.running.container(&container) else {
                return not_running(
                    &container.namespace,
                    &container.pod,
                    Some(&container.container),
                );
            };
            let (request, program) = (exec::Request::parse(&query), endpoint.program.clone());
            websocket::upgrade(req, move |socket, protocol| async move {
                exec::run(socket, protocol, &program, launch, request).await;
            })
        }
        // The API server asks for `/portForward/`.
        ["portForward" | "portforward", namespace, pod] => {
            let Some(launch) = endpoint.running.pod(namespace, pod) else {
                return not_running(namespace, pod, None);
            };
            let ports = match portforward::ports(&query) {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => return text(StatusCode::BAD_REQUEST, "no port to forward".into()),
                Err(e) => return text(StatusCode::BAD_REQUEST, e),
            };
            websocket::upgrade(req, move |socket, _| async move {
                portforward::run(socket, launch.netns, ports).await;
            })
        }
        _ => text(
            StatusCode::NOT_FOUND,
            format!("{path}: not served by the node simulator"),
        ),
    }
}

fn logs(logs: &Path, rest: &str, query: &str) -> Response<Body> {
    let parts: Vec<&str> = rest.split('/').collect();
    let [ns, pod, container] = parts[..] else {
        return text(
            StatusCode::BAD_REQUEST,
            "expected /containerLogs/{namespace}/{pod}/{container}".into(),
        );
    };
    let query = Query::parse(query);
    if query.previous {
        return text(
            StatusCode::BAD_REQUEST,
            "previous: the node simulator keeps one log per container, across restarts".into(),
        );
    }
    let Some(file) = log_file(logs, ns, pod, container) else {
        return text(
            StatusCode::NOT_FOUND,
            format!("no log of container {container:?} in pod {ns}/{pod} on this node"),
        );
    };
    let content = std::fs::read(&file).unwrap_or_default();
    let start = tail_start(&content, query.tail_lines);
    let first = Bytes::copy_from_slice(&content[start..]);
    if !query.follow {
        return Response::new(Full::new(first).boxed());
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(16);
    tokio::spawn(follow(file, content.len() as u64, first, tx));
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, Infallible>(Frame::data(b)), rx))
    });
    Response::new(BodyExt::boxed(StreamBody::new(stream)))
}

/// Sends `first`, then what is appended to `file`, until the receiver is
/// gone or the file is (the pod removed).
async fn follow(
    file: PathBuf,
    mut offset: u64,
    first: Bytes,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    use std::io::{Read, Seek, SeekFrom};
    if tx.send(first).await.is_err() {
        return;
    }
    loop {
        tokio::time::sleep(FOLLOW_POLL).await;
        let Ok(mut f) = std::fs::File::open(&file) else {
            return;
        };
        let len = f.metadata().map(|m| m.len()).unwrap_or(0);
        if len > offset {
            let mut more = Vec::new();
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut more).is_ok() {
                offset += more.len() as u64;
                if tx.send(Bytes::from(more)).await.is_err() {
                    return;
                }
            }
        }
        if tx.is_closed() {
            return;
        }
    }
}

struct Query {
    tail_lines: Option<usize>,
    follow: bool,
    previous: bool,
}

impl Query {
    fn parse(q: &str) -> Self {
        let mut out = Query {
            tail_lines: None,
            follow: false,
            previous: false,
        };
        for pair in q.split('&') {
            match pair.split_once('=').unwrap_or((pair, "")) {
                ("tailLines", n) => out.tail_lines = n.parse().ok(),
                ("follow", v) => out.follow = v == "true" || v == "1",
                ("previous", v) => out.previous = v == "true" || v == "1",
                _ => {}
            }
        }
        out
    }
}

/// Where the last `lines` lines of `content` start.
fn tail_start(content: &[u8], lines: Option<usize>) -> usize {
    let Some(lines) = lines else { return 0 };
    let body = content.strip_suffix(b"\n").unwrap_or(content);
    let mut seen = 0;
    for (i, b) in body.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == lines {
                return i + 1;
            }
        }
    }
    if lines == 0 { content.len() } else { 0 }
}

/// The container's log: `<ns>_<pod>_<uid>/<container>.log`, the newest if
/// a pod of that name was made again.
fn log_file(logs: &Path, ns: &str, pod: &str, container: &str) -> Option<PathBuf> {
    let prefix = format!("{ns}_{pod}_");
    std::fs::read_dir(logs)
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path().join(format!("{container}.log")))
        .filter(|p| p.exists())
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn not_running(namespace: &str, pod: &str, container: Option<&str>) -> Response<Body> {
    let what = match container {
        Some(c) => format!("container {c:?} of pod {namespace}/{pod}"),
        None => format!("pod {namespace}/{pod}"),
    };
    text(
        StatusCode::NOT_FOUND,
        format!("{what} is not running on this node"),
    )
}

pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
    *r.status_mut() = status;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_lines_counts_from_the_end() {
        let log = b"one\ntwo\nthree\n";
        assert_eq!(&log[tail_start(log, Some(2))..], b"two\nthree\n");
        assert_eq!(&log[tail_start(log, Some(9))..], log);
        assert_eq!(&log[tail_start(log, None)..], log);
        assert_eq!(&log[tail_start(log, Some(0))..], b"");
        let unfinished = b"one\ntwo";
        assert_eq!(&unfinished[tail_start(unfinished, Some(1))..], b"two");
    }

    #[test]
    fn queries_read_as_the_api_server_sends_them() {
        let q = Query::parse("follow=true&tailLines=10&timestamps=false");
        assert!(q.follow && !q.previous);
        assert_eq!(q.tail_lines, Some(10));
    }
}
