//! ztunnel against a CA that answers wrongly (reliability.md K3), over the
//! real path: gRPC and TLS to a scriptable fake CA (`integration::fake_ca`).
//!
//! For each bad answer: a certificate that cannot be trusted or used is
//! refused and the current one stays in force; mesh clients keep being
//! served over new handshakes; clients of another root are refused; the CA
//! sees a bounded number of requests; and a counter and the logged error
//! name the reason.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use integration::fake_ca::{Answer, FakeCa};
use integration::tls_client::{
    alert_after_handshake, attempt, client_cert, id, mesh_client_config, mesh_roots,
};
use integration::{Mesh, connect_from, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use ztunnel::config as zc;

/// The lifetime node-b's ztunnel asks for: renewal is due after half.
const TTL: Duration = Duration::from_secs(8);

/// With ztunnel's back-off (100 ms, doubling, times a random 1 to 2,
/// capped at 150 s) the n-th retry comes at least 0.1·(2ⁿ − 1) s after the
/// first failure: in the 4 s left of a certificate's life after its
/// refresh point, the first request and at most 5 retries, plus one at
/// expiry. Over a minute of failures: at most 10.
const MOST_REQUESTS_IN_FOUR_SECONDS: usize = 7;

struct Setup {
    mesh: Mesh,
    fake: FakeCa,
    a: ztunnel::app::Ztunnel,
    b: ztunnel::app::Ztunnel,
    client_ip: std::net::IpAddr,
    app_addr: SocketAddr,
}

/// A client `sleep` on node-a (whose ztunnel uses the mesh's CA) and a
/// server `echo` on node-b, whose ztunnel asks the fake CA, which answers
/// well until told otherwise. Returns once node-b holds a certificate.
async fn setup() -> Setup {
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
    let fake = FakeCa::start(mesh.subnet.ip(9), mesh.istiod().ca.clone()).await;
    let mut env = mesh.ztunnel_env("node-a", &client.addresses);
    env.insert(zc::OUTBOUND_TARGET.into(), app_addr.to_string());
    let both = [client.clone(), server.clone()];
    let a = mesh.ztunnel("node-a", &both, env).await;
    let mut env = mesh.ztunnel_env("node-b", &server.addresses);
    env.insert(zc::CA_ADDRESS.into(), fake.addr.to_string());
    env.insert(zc::CA_ROOT_CA.into(), fake.root_pem.clone());
    env.insert(zc::SECRET_TTL.into(), format!("{}s", TTL.as_secs()));
    let b = mesh.ztunnel("node-b", &both, env).await;
    b.certs
        .fetch_certificate(&id("echo"))
        .await
        .expect("node-b's first certificate, from the fake CA's good answer");
    Setup {
        mesh,
        fake,
        a,
        b,
        client_ip: client.addresses[0],
        app_addr,
    }
}

impl Setup {
    fn serial(&self) -> String {
        let state = self.b.certs.subscribe(&id("echo"));
        let state = state.borrow();
        let cert = state.current.as_ref().expect("a certificate");
        cert.validity().serial.clone()
    }

    /// A round trip from the client pod through both ztunnels.
    async fn round_trip(&self) -> anyhow::Result<()> {
        let via = self.a.outbound_addr.expect("node-level listeners");
        let mut c = connect_from(self.client_ip, via).await?;
        c.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf)).await??;
        anyhow::ensure!(&buf == b"ping", "echoed {buf:?}");
        Ok(())
    }

    /// A new TLS handshake with node-b's HBONE port by a client holding
    /// `root`'s certificate for `sleep`, which checks that node-b presents
    /// a mesh certificate for `echo`.
    async fn new_handshake(&self, root: &istiod_lite::ca::CertificateAuthority) -> String {
        let config = mesh_client_config(
            mesh_roots(&self.mesh.istiod().ca),
            Some(client_cert(root, "sleep", None)),
            id("echo"),
        );
        let hbone = SocketAddr::new(self.app_addr.ip(), mesh_hbone::HBONE_PORT);
        if std::ptr::eq(root, self.mesh.istiod().ca.as_ref()) {
            match attempt(config, hbone, self.app_addr).await {
                Ok(()) => "served".into(),
                Err(e) => format!("{e:#}"),
            }
        } else {
            alert_after_handshake(config, hbone).await
        }
    }
}

/// What ztunnel does with one kind of answer.
struct Expect {
    /// The `outcome` label counted for it.
    outcome: &'static str,
    /// Whether the answer's certificate is put in use.
    used: bool,
    /// For a refusal, what the recorded (and logged) error says.
    error: Option<&'static str>,
}

/// Answers `answer` from the next request on and checks what `expect`
/// says, and in every case: mesh clients are served (through the pooled
/// tunnel and over new handshakes), clients of another root are refused,
/// and the CA sees a bounded number of requests.
async fn check(answer: Answer, expect: Expect) -> (Setup, Instant) {
    let t = setup().await;
    let before = t.serial();
    t.round_trip().await.expect("served before the bad answer");
    let outcome = expect.outcome;
    let count = || t.b.certs.outcomes().get(outcome).copied().unwrap_or(0);
    let counted = count();
    let since = Instant::now();
    t.fake.answer(answer);

    // The renewal at half-life gets the bad answer.
    while count() == counted {
        assert!(
            since.elapsed() < TTL,
            "{answer:?}: node-b counts no request with outcome {outcome}: {:?}",
            t.b.certs.outcomes()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let after = t.serial();
    if expect.used {
        assert_ne!(
            after, before,
            "{answer:?}: the issued certificate is in use"
        );
    } else {
        assert_eq!(
            after, before,
            "{answer:?}: the current certificate stays in force"
        );
    }
    if let Some(reason) = expect.error {
        let state = t.b.certs.subscribe(&id("echo"));
        let error = state.borrow().last_error.clone();
        let error = error.expect("the refusal is recorded as it is logged");
        assert!(
            error.contains(reason),
            "{answer:?}: the error names the reason ({reason}): {error}"
        );
    }

    // Until the end of the current certificate's life (minus a margin),
    // mesh clients are served and clients of another root are not.
    let until = since + TTL / 2 + Duration::from_secs(3);
    let mut rounds = 0;
    while Instant::now() < until {
        t.round_trip()
            .await
            .unwrap_or_else(|e| panic!("{answer:?}: a mesh client is served: {e:#}"));
        let fresh = t.new_handshake(&t.mesh.istiod().ca).await;
        assert_eq!(
            fresh, "served",
            "{answer:?}: a new mesh handshake is served"
        );
        let other = t.new_handshake(&t.fake.other).await;
        assert!(
            other.contains("received fatal alert"),
            "{answer:?}: a client of another root is refused at TLS: {other}"
        );
        rounds += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rounds >= 5, "{answer:?}: only {rounds} rounds were checked");

    let requests = t.fake.requests_since(since);
    assert!(
        (1..=MOST_REQUESTS_IN_FOUR_SECONDS).contains(&requests),
        "{answer:?}: {requests} requests reached the CA in {:?} (bound {MOST_REQUESTS_IN_FOUR_SECONDS})",
        since.elapsed()
    );
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &t.b.registry).unwrap();
    let counted = format!("istio_workload_cert_requests_total{{outcome=\"{outcome}\"}}");
    assert!(
        metrics.contains(&counted),
        "{answer:?}: /metrics counts the outcome:\n{metrics}"
    );
    (t, since)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chain_to_another_root_is_refused_and_the_current_certificate_stays() {
    let expect = Expect {
        outcome: "untrusted_chain",
        used: false,
        error: Some("does not verify to the configured roots"),
    };
    check(Answer::OtherRoot, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_appended_root_is_not_trusted() {
    let expect = Expect {
        outcome: "issued",
        used: true,
        error: None,
    };
    check(Answer::AppendedRoot, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_and_the_current_one_stays() {
    let expect = Expect {
        outcome: "expired",
        used: false,
        error: Some("cannot be used"),
    };
    check(Answer::Expired, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_the_future_is_refused_and_the_current_one_stays() {
    let expect = Expect {
        outcome: "not_yet_valid",
        used: false,
        error: Some("ahead of this machine's clock"),
    };
    check(Answer::NotYetValid, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_due_on_arrival_leaves_the_longer_lived_one_in_use() {
    let expect = Expect {
        outcome: "due_on_arrival",
        used: false,
        error: None,
    };
    check(Answer::DueOnArrival, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lifetime_far_longer_than_asked_is_renewed_by_the_asked_one() {
    let ten_years = Duration::from_secs(10 * 365 * 24 * 3600);
    let expect = Expect {
        outcome: "issued_lifetime_clamped",
        used: true,
        error: None,
    };
    let (t, since) = check(Answer::Lifetime(ten_years), expect).await;
    // Issued at the first refresh point (about TTL/2 after `since`), it is
    // renewed half its asked-for life later, not in five years.
    wait_until("the ten-year certificate is renewed", || {
        t.fake.requests_since(since) >= 2
    })
    .await;
    assert!(
        since.elapsed() < TTL + Duration::from_secs(3),
        "renewed {:?} after the long certificate was asked for",
        since.elapsed()
    );
}
