//! What this machine does without a mesh, measured in the same run as the
//! mesh so ratios are fair: raw loopback TCP, a rustls TLS stream (the
//! encryption floor of P1) and rustls mutual handshakes (the ceiling of
//! P6). Same crypto as the mesh: ring, TLS 1.3, AES-256-GCM first, ECDSA
//! P-256 certificates.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{CertificateParams, IsCa, Issuer, KeyPair, PKCS_ECDSA_P256_SHA256};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::method::{LOAD_CPU, PROXY_CPU, pin_this_thread};

const CHUNK: usize = 64 << 10;

/// Client and server configs with mutual authentication.
pub struct Tls {
    pub client: Arc<ClientConfig>,
    pub server: Arc<ServerConfig>,
}

impl Tls {
    pub fn new() -> Self {
        let ca_key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca_params, ca_key);
        let leaf = |name: &str| {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
            let cert = CertificateParams::new(vec![name.to_string()])
                .unwrap()
                .signed_by(&key, &issuer)
                .unwrap();
            (
                vec![cert.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca_cert.der().clone()).unwrap();
        let roots = Arc::new(roots);
        let provider = mesh_tls::provider::provider();
        let (server_chain, server_key): (Vec<CertificateDer<'static>>, _) = leaf("server.bench");
        let (client_chain, client_key) = leaf("client.bench");
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .unwrap();
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(mesh_tls::provider::TLS_VERSIONS)
            .unwrap()
            .with_client_cert_verifier(verifier)
            .with_single_cert(server_chain, server_key)
            .unwrap();
        server.send_tls13_tickets = 0;
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(mesh_tls::provider::TLS_VERSIONS)
            .unwrap()
            .with_root_certificates(roots)
            .with_client_auth_cert(client_chain, client_key)
            .unwrap();
        // Every handshake full, as between two ztunnels that have not met.
        client.resumption = rustls::client::Resumption::disabled();
        Self {
            client: Arc::new(client),
            server: Arc::new(server),
        }
    }
}

/// Bytes through one loopback TCP connection, sender pinned to the load
/// CPU, receiver to the proxy CPU: MB/s.
pub fn loopback_tcp(bytes: usize) -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let receiver = std::thread::spawn(move || {
        pin_this_thread(PROXY_CPU);
        let (mut s, _) = listener.accept().unwrap();
        drain(&mut s, bytes)
    });
    pin_this_thread(LOAD_CPU);
    let mut s = TcpStream::connect(addr).unwrap();
    let start = Instant::now();
    send(&mut s, bytes);
    let _ = receiver.join().unwrap();
    bytes as f64 / 1e6 / start.elapsed().as_secs_f64()
}

/// One rustls TLS stream over loopback TCP: sender (encrypts) on the load
/// CPU, receiver (decrypts) on the proxy CPU. Returns (MB/s, CPU seconds
/// per GB summed over both ends).
pub fn tls_stream(tls: &Tls, bytes: usize) -> (f64, f64) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server_config = tls.server.clone();
    let receiver = std::thread::spawn(move || {
        pin_this_thread(PROXY_CPU);
        let (tcp, _) = listener.accept().unwrap();
        let mut tls = rustls::StreamOwned::new(ServerConnection::new(server_config).unwrap(), tcp);
        let cpu = thread_cpu();
        drain(&mut tls, bytes);
        thread_cpu() - cpu
    });
    pin_this_thread(LOAD_CPU);
    let tcp = TcpStream::connect(addr).unwrap();
    let name = ServerName::try_from("server.bench").unwrap();
    let mut s = rustls::StreamOwned::new(
        ClientConnection::new(tls.client.clone(), name).unwrap(),
        tcp,
    );
    // Finish the handshake before timing the bulk.
    s.write_all(b"x").unwrap();
    s.flush().unwrap();
    let start = Instant::now();
    let cpu = thread_cpu();
    send(&mut s, bytes - 1);
    s.flush().unwrap();
    let sender_cpu = thread_cpu() - cpu;
    let receiver_cpu = receiver.join().unwrap();
    let secs = start.elapsed().as_secs_f64();
    (
        bytes as f64 / 1e6 / secs,
        (sender_cpu + receiver_cpu) / (bytes as f64 / 1e9),
    )
}

/// Full mutual TLS 1.3 handshakes per second, client and server driven in
/// memory by one thread on the proxy CPU: the most a core can do.
pub fn mutual_handshakes_per_sec(tls: &Tls, run_for: Duration) -> f64 {
    pin_this_thread(PROXY_CPU);
    let name = ServerName::try_from("server.bench").unwrap();
    let start = Instant::now();
    let mut n = 0u64;
    let mut buf = Vec::with_capacity(16 << 10);
    while start.elapsed() < run_for {
        let mut c = ClientConnection::new(tls.client.clone(), name.clone()).unwrap();
        let mut s = ServerConnection::new(tls.server.clone()).unwrap();
        while c.is_handshaking() || s.is_handshaking() {
            move_records(&mut c, &mut s, &mut buf);
            move_records(&mut s, &mut c, &mut buf);
        }
        assert!(
            s.peer_certificates().is_some(),
            "the client did not authenticate"
        );
        n += 1;
    }
    pin_this_thread(LOAD_CPU);
    n as f64 / start.elapsed().as_secs_f64()
}

fn move_records<A, B, DA, DB>(from: &mut A, to: &mut B, buf: &mut Vec<u8>)
where
    A: std::ops::DerefMut<Target = rustls::ConnectionCommon<DA>>,
    B: std::ops::DerefMut<Target = rustls::ConnectionCommon<DB>>,
{
    buf.clear();
    while from.wants_write() {
        from.write_tls(buf).unwrap();
    }
    let mut slice = &buf[..];
    while !slice.is_empty() {
        to.read_tls(&mut slice).unwrap();
        to.process_new_packets().expect("handshake succeeds");
    }
}

fn send(s: &mut impl Write, bytes: usize) {
    let chunk = vec![0x5au8; CHUNK];
    let mut sent = 0;
    while sent < bytes {
        let n = CHUNK.min(bytes - sent);
        s.write_all(&chunk[..n]).unwrap();
        sent += n;
    }
}

fn drain(s: &mut impl Read, bytes: usize) -> usize {
    let mut buf = vec![0u8; CHUNK * 4];
    let mut got = 0;
    while got < bytes {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended after {got} of {bytes} bytes");
        got += n;
    }
    got
}

/// CPU seconds the calling thread has used.
fn thread_cpu() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_THREAD)
        .expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    tv(u.user_time()) + tv(u.system_time())
}
