//! The HBONE data path end to end, in process: istiod-lite's CA and two
//! ztunnels on loopback, real TLS, real HTTP/2, real sockets.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration::tls_client::{
    alert_after_handshake, attempt, client_cert, client_cert_for, id, mesh_roots,
};
use integration::{Mesh, connect_from};
use mesh_hbone::H2Config;
use mesh_hbone::client::ConnectRequest;
use rustls::ClientConfig;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use ztunnel::config as zc;

const MIB: u64 = 1024 * 1024;

/// Writes `len` bytes of a deterministic pattern and returns their digest.
async fn write_pattern(s: &mut TcpStream, len: u64, seed: u64) -> String {
    let mut hasher = Sha256::new();
    let mut state = seed | 1;
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        s.write_all(&buf[..n]).await.expect("write");
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    hex::encode(hasher.finalize())
}

/// Reads to end of stream; returns the count and digest.
async fn read_hashed(s: &mut TcpStream) -> (u64, String) {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf).await.expect("read");
        if n == 0 {
            return (total, hex::encode(hasher.finalize()));
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
}

struct TwoNodes {
    mesh: Mesh,
    client_ip: IpAddr,
    app_addr: SocketAddr,
    a: ztunnel::app::Ztunnel,
    b: ztunnel::app::Ztunnel,
}

/// A client pod `sleep` on node-a and a server pod `echo` on node-b, each
/// node with its ztunnel; node-a's outbound goes to the server's port 8080.
async fn two_nodes(extra_env: &[(&str, &str)], server_sa_as_seen_by_b: &str) -> TwoNodes {
    let mesh = Mesh::start().await;
    let client = mesh.workload("sleep", "sleep", 2, "node-a");
    let server = mesh.workload("echo", "echo", 3, "node-b");
    let app_addr = SocketAddr::new(server.addresses[0], 8080);
    let mut env = mesh.ztunnel_env("node-a", &client.addresses);
    env.insert(zc::OUTBOUND_TARGET.into(), app_addr.to_string());
    for (k, v) in extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    let a = mesh
        .ztunnel("node-a", &[client.clone(), server.clone()], env)
        .await;
    let mut server_b = server.clone();
    server_b.service_account = server_sa_as_seen_by_b.into();
    let mut env_b = mesh.ztunnel_env("node-b", &server.addresses);
    for (k, v) in extra_env {
        env_b.insert(k.to_string(), v.to_string());
    }
    let b = mesh
        .ztunnel("node-b", &[client.clone(), server_b], env_b)
        .await;
    TwoNodes {
        client_ip: client.addresses[0],
        app_addr,
        mesh,
        a,
        b,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_256_mib_intact_both_ways_and_half_closes_from_the_client() {
    let t = two_nodes(&[], "echo").await;
    let size = 256 * MIB;
    let listener = TcpListener::bind(t.app_addr).await.unwrap();
    let app = tokio::spawn(async move {
        let (mut s, peer) = listener.accept().await.unwrap();
        // The client half-closes after sending; only then does the app reply.
        let received = read_hashed(&mut s).await;
        let sent = write_pattern(&mut s, size, 2).await;
        s.shutdown().await.unwrap();
        (peer, received, sent)
    });

    let mut c = connect_from(
        t.client_ip,
        t.a.outbound_addr.expect("node-level listeners"),
    )
    .await
    .unwrap();
    let sent = write_pattern(&mut c, size, 1).await;
    c.shutdown().await.unwrap();
    let received = read_hashed(&mut c).await;

    let (peer, app_received, app_sent) = app.await.unwrap();
    assert_eq!(app_received, (size, sent), "client → server bytes intact");
    assert_eq!(received, (size, app_sent), "server → client bytes intact");
    assert_eq!(
        peer.ip(),
        t.client_ip,
        "the application sees the client's address"
    );
    drop(t.b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_server_side() {
    let t = two_nodes(&[], "echo").await;
    let listener = TcpListener::bind(t.app_addr).await.unwrap();
    let app = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.write_all(b"greeting").await.unwrap();
        s.shutdown().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        got
    });
    let mut c = connect_from(
        t.client_ip,
        t.a.outbound_addr.expect("node-level listeners"),
    )
    .await
    .unwrap();
    let mut greeting = Vec::new();
    c.read_to_end(&mut greeting).await.unwrap();
    assert_eq!(greeting, b"greeting");
    // Our write side is still open after the server's FIN.
    c.write_all(b"reply after half-close").await.unwrap();
    c.shutdown().await.unwrap();
    assert_eq!(app.await.unwrap(), b"reply after half-close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_with_the_wrong_identity_is_refused_before_any_byte_reaches_the_app() {
    // node-b believes the server runs as `impostor` and gets that certificate;
    // node-a expects `echo`.
    let t = two_nodes(&[], "impostor").await;
    t.mesh
        .istiod()
        .pods
        .add_pod("node-b", "default", "impostor");
    let listener = TcpListener::bind(t.app_addr).await.unwrap();
    let mut c = connect_from(
        t.client_ip,
        t.a.outbound_addr.expect("node-level listeners"),
    )
    .await
    .unwrap();
    let _ = c.write_all(b"secret").await;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the client connection is closed");
    assert!(buf.is_empty());
    let accepted = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(accepted.is_err(), "the application never saw a connection");
}

/// An application at `addr` that only counts the connections it accepts.
async fn counting_app(addr: SocketAddr) -> Arc<AtomicUsize> {
    counting_server(addr, false).await
}

/// As [`counting_app`], echoing what each connection sends.
async fn counting_echo_app(addr: SocketAddr) -> Arc<AtomicUsize> {
    counting_server(addr, true).await
}

async fn counting_server(addr: SocketAddr, echo: bool) -> Arc<AtomicUsize> {
    let listener = TcpListener::bind(addr).await.unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            if echo {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        }
    });
    accepted
}

/// An HBONE connection driven by hand (not through a ztunnel's pool) to
/// `t`'s server node, presenting `cert`.
async fn hand_driven_connection(
    t: &TwoNodes,
    cert: (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>),
) -> mesh_hbone::client::Connection {
    let hbone = SocketAddr::new(t.app_addr.ip(), mesh_hbone::HBONE_PORT);
    let config = client_config(
        mesh_tls::provider::provider().as_ref().clone(),
        &[&rustls::version::TLS13],
        mesh_roots(&t.mesh.istiod().ca),
        Some(cert),
        true,
    );
    let tcp = TcpStream::connect(hbone).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::IpAddress(Ipv4Addr::UNSPECIFIED.into()), tcp)
        .await
        .unwrap();
    mesh_hbone::client::h2_handshake(tls, hbone, &H2Config::default())
        .await
        .unwrap()
}

fn client_config(
    provider: rustls::crypto::CryptoProvider,
    versions: &[&'static rustls::SupportedProtocolVersion],
    roots: Arc<rustls::RootCertStore>,
    cert: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    alpn: bool,
) -> ClientConfig {
    let provider = Arc::new(provider);
    let verifier = mesh_tls::verifier::SpiffeServerVerifier::new(
        roots,
        vec![id("echo")],
        provider.clone(),
        mesh_tls::Revocation::none(),
    );
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier));
    let mut config = match cert {
        Some((chain, key)) => builder.with_client_auth_cert(chain, key).unwrap(),
        None => builder.with_no_client_auth(),
    };
    if alpn {
        config.alpn_protocols = vec![b"h2".to_vec()];
    }
    config.enable_sni = false;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbound_refuses_clients_outside_the_tls_policy() {
    let t = two_nodes(&[], "echo").await;
    let accepted = counting_app(t.app_addr).await;
    let hbone = SocketAddr::new(t.app_addr.ip(), mesh_hbone::HBONE_PORT);
    let ca = &t.mesh.istiod().ca;
    let roots = mesh_roots(ca);
    let ring = rustls::crypto::ring::default_provider;
    let tls13_aes = || mesh_tls::provider::provider().as_ref().clone();
    let tls13: &[&'static rustls::SupportedProtocolVersion] = &[&rustls::version::TLS13];

    // Control: a well-formed mesh client gets through, so the refusals below
    // are about what they change and nothing else.
    let ok = client_config(
        tls13_aes(),
        tls13,
        roots.clone(),
        Some(client_cert(ca, "sleep", None)),
        true,
    );
    attempt(ok, hbone, t.app_addr)
        .await
        .expect("a valid mesh client connects");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(accepted.load(Ordering::SeqCst), 1);

    let mut chacha = ring();
    chacha.cipher_suites = vec![rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256];
    let now = std::time::SystemTime::now();
    let expired = client_cert(
        ca,
        "sleep",
        Some((
            now - Duration::from_secs(7200),
            now - Duration::from_secs(3600),
        )),
    );
    let other_dir = tempfile::tempdir().unwrap();
    let other_ca = istiod_lite::ca::CertificateAuthority::load_or_generate(
        other_dir.path(),
        Default::default(),
    )
    .unwrap();

    let refused: Vec<(&str, ClientConfig)> = vec![
        (
            "TLS 1.2",
            client_config(
                ring(),
                &[&rustls::version::TLS12],
                roots.clone(),
                Some(client_cert(ca, "sleep", None)),
                true,
            ),
        ),
        (
            "ChaCha20 only",
            client_config(
                chacha,
                tls13,
                roots.clone(),
                Some(client_cert(ca, "sleep", None)),
                true,
            ),
        ),
        (
            "no ALPN",
            client_config(
                tls13_aes(),
                tls13,
                roots.clone(),
                Some(client_cert(ca, "sleep", None)),
                false,
            ),
        ),
        ("ALPN http/1.1 only", {
            let mut c = client_config(
                tls13_aes(),
                tls13,
                roots.clone(),
                Some(client_cert(ca, "sleep", None)),
                false,
            );
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        }),
        (
            "no client certificate",
            client_config(tls13_aes(), tls13, roots.clone(), None, true),
        ),
        // M6: a valid chain to our root, for another trust domain.
        (
            "another trust domain",
            client_config(
                tls13_aes(),
                tls13,
                roots.clone(),
                Some(client_cert_for(
                    ca,
                    &"spiffe://other.td/ns/default/sa/sleep".parse().unwrap(),
                    None,
                )),
                true,
            ),
        ),
        (
            "expired certificate",
            client_config(tls13_aes(), tls13, roots.clone(), Some(expired), true),
        ),
        (
            "certificate from another root",
            client_config(
                tls13_aes(),
                tls13,
                roots.clone(),
                Some(client_cert(&other_ca, "sleep", None)),
                true,
            ),
        ),
    ];
    for (what, config) in refused {
        let result = attempt(config.clone(), hbone, t.app_addr).await;
        let Err(e) = result else {
            panic!("{what}: expected refusal, got a tunnel");
        };
        // reliability.md M3: the client is told why, by the TLS alert.
        let alert = match what {
            "no client certificate" => Some("CertificateRequired"),
            "expired certificate" => Some("CertificateExpired"),
            // The rogue root has our root's name but not its key: the
            // chain is found and its signature fails.
            "certificate from another root" => Some("DecryptError"),
            _ => None,
        };
        if let Some(alert) = alert {
            // In TLS 1.3 the server judges the client's certificate after
            // the client has finished: a client that writes first may see
            // a broken pipe before the alert, so this one only reads.
            let seen = alert_after_handshake(config, hbone).await;
            assert!(
                seen.contains(&format!("received fatal alert: {alert}")),
                "{what}: expected the {alert} alert, got: {seen} (the attempt: {e:#})"
            );
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "no refused client reached the application"
    );
    drop(t.a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_under_continuous_traffic_without_failures() {
    // 10 s certificates; one stream per HBONE connection so that every new
    // connection is a fresh mutual handshake with whatever certificates are
    // current on both sides.
    let t = two_nodes(
        &[
            (zc::SECRET_TTL, "10s"),
            (zc::POOL_MAX_STREAMS_PER_CONNECTION, "1"),
        ],
        "echo",
    )
    .await;
    let listener = TcpListener::bind(t.app_addr).await.unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });

    // One connection that stays open across every rotation.
    let mut long = connect_from(
        t.client_ip,
        t.a.outbound_addr.expect("node-level listeners"),
    )
    .await
    .unwrap();
    let mut serials = HashSet::new();
    let (mut ok, mut failed) = (0u32, 0u32);
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    while started.elapsed() < Duration::from_secs(23) {
        let result: std::io::Result<()> = async {
            let mut c = connect_from(
                t.client_ip,
                t.a.outbound_addr.expect("node-level listeners"),
            )
            .await?;
            c.write_all(&[7u8; 1024]).await?;
            c.read_exact(&mut buf).await?;
            long.write_all(b"ping").await?;
            let mut pong = [0u8; 4];
            long.read_exact(&mut pong).await?;
            Ok(())
        }
        .await;
        match result {
            Ok(()) if buf == [7u8; 1024] => ok += 1,
            _ => failed += 1,
        }
        for (_, state) in t.a.certs.snapshot().into_iter().chain(t.b.certs.snapshot()) {
            if let Some(c) = state.current {
                serials.insert(c.validity().serial.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        failed, 0,
        "{failed} connections failed during rotation ({ok} succeeded)"
    );
    assert!(ok > 100, "traffic was continuous: {ok} connections");
    // Two identities (sleep on node-a, echo on node-b), each issued at least
    // three times in 23 s of 10 s certificates renewed at half-life.
    assert!(
        serials.len() >= 6,
        "expected rotations, saw {} serials",
        serials.len()
    );
}

/// reliability.md A6: on one HBONE connection, CONNECTs for another
/// address (400), for the proxy's own ports (503) or for loopback (400) are
/// refused stream by stream; the connection and a sibling stream are
/// unaffected, and the application sees only the good one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hbone_abuse_is_refused_stream_by_stream_and_siblings_still_work() {
    let t = two_nodes(&[], "echo").await;
    let accepted = counting_app(t.app_addr).await;
    let cert = client_cert(&t.mesh.istiod().ca, "sleep", None);
    let conn = hand_driven_connection(&t, cert).await;
    let ip = t.app_addr.ip();
    let other = SocketAddr::new(t.client_ip, t.app_addr.port());
    let cases: Vec<(String, u16)> = vec![
        (other.to_string(), 400),
        (format!("127.0.0.1:{}", t.app_addr.port()), 400),
        (format!("{ip}:15001"), 503),
        (format!("{ip}:15006"), 503),
        (format!("{ip}:15008"), 503),
    ];
    for (authority, want) in cases {
        let refused = conn
            .connect(&ConnectRequest {
                authority: authority.clone(),
                headers: Default::default(),
            })
            .await;
        match refused {
            Err(mesh_hbone::Error::Status { status, .. }) => {
                assert_eq!(status.as_u16(), want, "CONNECT {authority}")
            }
            other => panic!("CONNECT {authority}: {:?}", other.map(|_| ())),
        }
    }
    // The same connection still carries a good stream.
    let _sibling = conn
        .connect(&ConnectRequest {
            authority: t.app_addr.to_string(),
            headers: Default::default(),
        })
        .await
        .expect("a sibling stream on the same connection");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "only the good stream reached the app"
    );
}

/// reliability.md K2, the server side: when the client's certificate ends
/// while its HBONE connection is open, ztunnel sends a GOAWAY at that
/// moment. A stream opened after it is not served, and the tunnel already
/// open carries on (as upstream: expiry does not cut tunnels).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_that_ends_takes_no_new_stream_and_open_tunnels_carry_on() {
    let t = two_nodes(&[], "echo").await;
    let accepted = counting_echo_app(t.app_addr).await;
    let now = std::time::SystemTime::now();
    let ends = now + Duration::from_secs(8);
    let window = Some((now - Duration::from_secs(60), ends));
    let cert = client_cert(&t.mesh.istiod().ca, "sleep", window);
    let conn = hand_driven_connection(&t, cert).await;
    let request = ConnectRequest {
        authority: t.app_addr.to_string(),
        headers: Default::default(),
    };
    let (mut send, mut recv) = conn.connect(&request).await.expect("served before the end");
    let mut echo = async |line: &'static [u8]| {
        send.send_data(bytes::Bytes::from_static(line), false)?;
        let got = recv.data().await.transpose()?.unwrap_or_default();
        let _ = recv.flow_control().release_capacity(got.len());
        Ok::<_, h2::Error>(got)
    };
    assert_eq!(&echo(b"before\n").await.unwrap()[..], b"before\n");

    // Certificates are second-granular: a second past the end is past it.
    tokio::time::sleep(
        ends.duration_since(std::time::SystemTime::now())
            .unwrap_or_default()
            + Duration::from_secs(1),
    )
    .await;
    match conn.connect(&request).await {
        Err(mesh_hbone::Error::H2(e)) => assert!(
            e.is_go_away() || e.reason() == Some(h2::Reason::REFUSED_STREAM),
            "expected a GOAWAY, got {e}"
        ),
        Err(e) => panic!("expected a GOAWAY, got {e}"),
        Ok(_) => panic!("a stream was served on the connection of an ended certificate"),
    }
    let after = echo(b"after\n").await.expect("the open tunnel carries on");
    assert_eq!(&after[..], b"after\n");
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "only the first stream reached the app"
    );
}
