//! 1,000 clients that connect, complete what handshake the listener has,
//! and then say nothing (reliability.md H6): where the protocol has a
//! next step the server waits for (the HTTP/2 preface after TLS on 15008
//! and 15012, a request's headers on the HTTP endpoints), each is closed
//! within the documented bound; everywhere, a legitimate client keeps
//! being served meanwhile.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use integration::tls_client::{attempt, client_cert, id, mesh_client_config, mesh_roots};
use integration::{Mesh, connect_from};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztunnel::config as zc;

const CLIENTS: usize = 1000;

/// Held by a test while it stalls clients and counts the timeouts.
static COUNTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The bound each listener documents (H2Config::handshake_timeout,
/// istiod's HANDSHAKE_WAIT, the endpoints' REQUEST_HEADERS_WAIT: 10 s),
/// plus what a loaded 2-core machine may add.
const CLOSED_WITHIN: Duration = Duration::from_secs(13);

fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    assert!(
        hard >= 4 * CLIENTS as u64,
        "this test needs {} descriptors",
        4 * CLIENTS
    );
}

struct Setup {
    mesh: Mesh,
    a: ztunnel::app::Ztunnel,
    b: ztunnel::app::Ztunnel,
    client_ip: std::net::IpAddr,
    app_addr: SocketAddr,
}

/// `sleep` on node-a, an echo server `echo` on node-b, a ztunnel each.
async fn setup() -> Setup {
    raise_fd_limit();
    let mesh = Mesh::start().await;
    let client = mesh.workload("sleep", "sleep", 2, "node-a");
    let server = mesh.workload("echo", "echo", 3, "node-b");
    let app_addr = SocketAddr::new(server.addresses[0], 8080);
    let app = TcpListener::bind(app_addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = app.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 64];
                while let Ok(n @ 1..) = s.read(&mut buf).await {
                    if s.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    let both = [client.clone(), server.clone()];
    let mut env = mesh.ztunnel_env("node-a", &client.addresses);
    env.insert(zc::OUTBOUND_TARGET.into(), app_addr.to_string());
    let a = mesh.ztunnel("node-a", &both, env).await;
    let mut env = mesh.ztunnel_env("node-b", &server.addresses);
    env.insert(zc::INBOUND_PLAINTEXT_TARGET.into(), app_addr.to_string());
    let b = mesh.ztunnel("node-b", &both, env).await;
    Setup {
        mesh,
        a,
        b,
        client_ip: client.addresses[0],
        app_addr,
    }
}

impl Setup {
    /// A round trip from the client pod through both ztunnels.
    async fn round_trip(&self) -> anyhow::Result<()> {
        let via = self.a.outbound_addr.expect("node-level listeners");
        let mut c = connect_from(self.client_ip, via).await?;
        echo(&mut c).await
    }

    /// A new mesh TLS handshake and CONNECT to node-b's 15008.
    async fn new_tunnel(&self) -> anyhow::Result<()> {
        let ca = &self.mesh.istiod().ca;
        let config = mesh_client_config(
            mesh_roots(ca),
            Some(client_cert(ca, "sleep", None)),
            id("echo"),
        );
        let hbone = SocketAddr::new(self.app_addr.ip(), mesh_hbone::HBONE_PORT);
        attempt(config, hbone, self.app_addr).await
    }
}

async fn echo(c: &mut TcpStream) -> anyhow::Result<()> {
    c.write_all(b"ping").await?;
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf)).await??;
    anyhow::ensure!(&buf == b"ping", "echoed {buf:?}");
    Ok(())
}

/// Opens [`CLIENTS`] connections with `open`, each of which then says
/// nothing, while `legit` runs every 100 ms and must succeed every time.
/// Returns, for each stalled client, how long after it was opened the
/// server closed it (`None`: still open when `watch` ended).
async fn stall<S, Open, OpenFut, Legit, LegitFut>(
    open: Open,
    legit: Legit,
    watch: Duration,
) -> Vec<Option<Duration>>
where
    S: AsyncRead + Unpin + Send + 'static,
    Open: Fn() -> OpenFut,
    OpenFut: Future<Output = anyhow::Result<S>>,
    Legit: Fn() -> LegitFut,
    LegitFut: Future<Output = anyhow::Result<()>>,
{
    let mut waiting = tokio::task::JoinSet::new();
    for i in 0..CLIENTS {
        let mut s = open()
            .await
            .unwrap_or_else(|e| panic!("stalled client {i} could not connect: {e:#}"));
        let opened = Instant::now();
        waiting.spawn(async move {
            let mut buf = [0u8; 256];
            // The server may write (a TLS ticket, a SETTINGS frame) before
            // it closes: read until the end, or until the watch ends.
            let closed = async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return opened.elapsed(),
                        Ok(_) => {}
                    }
                }
            };
            tokio::time::timeout(watch, closed).await.ok()
        });
        if i % 100 == 99 {
            legit()
                .await
                .unwrap_or_else(|e| panic!("served with {} stalled: {e:#}", i + 1));
        }
    }
    let deadline = Instant::now() + watch;
    let mut rounds = 0;
    while Instant::now() < deadline && !waiting.is_empty() {
        legit()
            .await
            .unwrap_or_else(|e| panic!("a legitimate client is served meanwhile: {e:#}"));
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rounds > 0);
    waiting.join_all().await
}

fn assert_all_closed_within(what: &str, closed: &[Option<Duration>], bound: Duration) {
    let open = closed.iter().filter(|c| c.is_none()).count();
    let late = closed.iter().flatten().filter(|d| **d > bound).count();
    let slowest = closed.iter().flatten().max();
    let fastest = closed.iter().flatten().min();
    eprintln!("{what}: stalled clients closed after {fastest:?} to {slowest:?}");
    assert_eq!(
        (open, late),
        (0, 0),
        "{what}: every stalled client is closed within {bound:?} (slowest {slowest:?})"
    );
}

/// `mesh_wait_timeouts_total{wait}` as the stats endpoint at `stats` shows
/// it. The counts are per process, and every component of these tests runs
/// in this one: the tests that count hold [`COUNTING`] so that what one
/// counts is its own.
async fn timeouts_shown(stats: SocketAddr, wait: &str) -> u64 {
    let mut s = TcpStream::connect(stats).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body))
        .await
        .expect("the metrics within 5 s")
        .unwrap();
    integration::metrics::counter(
        &body,
        "mesh_wait_timeouts_total",
        &[&format!("wait=\"{wait}\"")],
    )
}

fn assert_all_held(what: &str, closed: &[Option<Duration>]) {
    let gone = closed.iter().flatten().count();
    assert_eq!(
        gone, 0,
        "{what}: an idle TCP client is the application's to close"
    );
}

/// A TLS client of `server` that completes the handshake (ALPN h2) and
/// stops there.
async fn tls_then_nothing(
    config: Arc<rustls::ClientConfig>,
    server: SocketAddr,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(server).await?;
    let name = rustls_pki_types::ServerName::IpAddress(server.ip().into());
    let tls = tokio_rustls::TlsConnector::from(config).connect(name, tcp);
    Ok(tokio::time::timeout(Duration::from_secs(10), tls).await??)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_hbone_closes_clients_that_never_send_the_preface() {
    let t = setup().await;
    let ca = &t.mesh.istiod().ca;
    let config = Arc::new(mesh_client_config(
        mesh_roots(ca),
        Some(client_cert(ca, "sleep", None)),
        id("echo"),
    ));
    let hbone = SocketAddr::new(t.app_addr.ip(), mesh_hbone::HBONE_PORT);
    let stats = t.b.stats_addr.expect("stats endpoint on");
    let _counting = COUNTING.lock().await;
    let before = timeouts_shown(stats, "http2_preface").await;
    let closed = stall(
        || tls_then_nothing(config.clone(), hbone),
        || async { t.new_tunnel().await.and(t.round_trip().await) },
        CLOSED_WITHIN + Duration::from_secs(2),
    )
    .await;
    assert_all_closed_within("ztunnel 15008", &closed, CLOSED_WITHIN);
    let counted = timeouts_shown(stats, "http2_preface").await - before;
    assert_eq!(counted, CLIENTS as u64, "preface timeouts counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn istiod_closes_clients_that_never_send_the_preface() {
    let t = setup().await;
    let istiod = t.mesh.istiod();
    let mut roots = rustls::RootCertStore::empty();
    for der in mesh_tls::certificate::parse_certs(istiod.ca.root_pem(), "root").unwrap() {
        roots.add(der).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(mesh_tls::provider::provider())
        .with_protocol_versions(mesh_tls::provider::TLS_VERSIONS)
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![mesh_tls::ALPN_H2.to_vec()];
    let config = Arc::new(config);
    let grpc = istiod.grpc_addr;
    let stats = t.b.stats_addr.expect("stats endpoint on");
    let _counting = COUNTING.lock().await;
    let before = timeouts_shown(stats, "http2_preface").await;
    // Legitimate: a new CA client (its own connection) gets a certificate.
    let env = t.mesh.ztunnel_env("node-a", &[t.client_ip]);
    let ca_config = zc::Config::from_env(|k| env.get(k).cloned()).unwrap().ca;
    let legit = || {
        let ca_config = ca_config.clone();
        async move {
            let ca = mesh_tls::CaClient::new(ca_config)?;
            use mesh_tls::CertificateSource;
            ca.fetch(&id("sleep")).await?;
            anyhow::Ok(())
        }
    };
    let closed = stall(
        || tls_then_nothing(config.clone(), grpc),
        legit,
        CLOSED_WITHIN + Duration::from_secs(2),
    )
    .await;
    assert_all_closed_within("istiod 15012", &closed, CLOSED_WITHIN);
    let counted = timeouts_shown(stats, "http2_preface").await - before;
    assert_eq!(counted, CLIENTS as u64, "preface timeouts counted");
    drop(t.b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints_close_clients_that_never_send_a_request() {
    let t = setup().await;
    let stats = t.b.stats_addr.expect("stats endpoint on");
    let _counting = COUNTING.lock().await;
    let before = timeouts_shown(stats, "request_headers").await;
    let legit = || async move {
        let mut s = TcpStream::connect(stats).await?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await?;
        let mut body = String::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut body)).await??;
        anyhow::ensure!(body.starts_with("HTTP/1.1 200"), "{body}");
        Ok(())
    };
    let closed = stall(
        || async move { Ok(TcpStream::connect(stats).await?) },
        legit,
        CLOSED_WITHIN + Duration::from_secs(2),
    )
    .await;
    assert_all_closed_within("the stats endpoint", &closed, CLOSED_WITHIN);
    let counted = timeouts_shown(stats, "request_headers").await - before;
    assert_eq!(counted, CLIENTS as u64, "header timeouts counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tcp_clients_of_15001_and_15006_are_held_and_others_are_served() {
    let t = setup().await;
    let outbound = t.a.outbound_addr.expect("node-level listeners");
    let closed = stall(
        || async { Ok(connect_from(t.client_ip, outbound).await?) },
        || t.round_trip(),
        Duration::from_secs(3),
    )
    .await;
    assert_all_held("ztunnel 15001", &closed);

    let plaintext = t.b.inbound_plaintext_addr.expect("plaintext listener");
    let closed = stall(
        || async move { Ok(TcpStream::connect(plaintext).await?) },
        || async {
            let mut c = TcpStream::connect(plaintext).await?;
            echo(&mut c).await
        },
        Duration::from_secs(3),
    )
    .await;
    assert_all_held("ztunnel 15006", &closed);
}
