use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::*;
use crate::csr;

/// A CA in memory that signs whatever identity is asked for, with a chosen
/// lifetime, and can be told to fail.
struct FakeCa {
    issuer: Issuer<'static, KeyPair>,
    root_pem: String,
    ttl: Duration,
    fail: AtomicBool,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    delay: Duration,
    calls: AtomicUsize,
}

impl FakeCa {
    fn new(ttl: Duration, delay: Duration) -> Self {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::OrganizationName, "test root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let root = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            root_pem: root.pem(),
            ttl,
            fail: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(0),
            delay,
            calls: AtomicUsize::new(0),
        }
    }

    fn sign(&self, identity: &Identity) -> Result<WorkloadCertificate, Error> {
        let generated = csr::generate(identity)?;
        let mut req = CertificateSigningRequestParams::from_pem(&generated.csr_pem)?;
        let now = time::OffsetDateTime::now_utc();
        req.params.not_before = now;
        req.params.not_after = now + self.ttl;
        req.params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        req.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = req.signed_by(&self.issuer)?;
        WorkloadCertificate::from_pem_chain(
            identity,
            &generated.key_pem,
            &[leaf.pem(), self.root_pem.clone()],
        )
    }
}

impl CertificateSource for FakeCa {
    fn fetch(&self, identity: &Identity) -> BoxFuture<'_, Result<WorkloadCertificate, Error>> {
        let identity = identity.clone();
        Box::pin(async move {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if self.fail.load(Ordering::SeqCst) {
                return Err(Error::CaUnreachable {
                    address: "fake".into(),
                    reason: "told to fail".into(),
                });
            }
            self.sign(&identity)
        })
    }
}

fn id(sa: &str) -> Identity {
    format!("spiffe://cluster.local/ns/default/sa/{sa}")
        .parse()
        .unwrap()
}

fn fast_retry() -> SecretManagerConfig {
    SecretManagerConfig {
        initial_backoff: Duration::from_millis(50),
        ..Default::default()
    }
}

#[tokio::test]
async fn renews_at_half_life_with_new_serial() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(4), Duration::ZERO));
    let mgr = SecretManager::new(ca.clone(), fast_retry());
    let first = mgr.fetch_certificate(&id("a")).await.unwrap();
    // Half-life is 2 s after issue (second-granular timestamps); by 3.5 s a
    // renewal must have happened.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let second = mgr.fetch_certificate(&id("a")).await.unwrap();
    assert_ne!(first.validity().serial, second.validity().serial);
    assert!(ca.calls.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn keeps_serving_valid_certificate_while_renewal_fails() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(6), Duration::ZERO));
    let mgr = SecretManager::new(ca.clone(), fast_retry());
    let first = mgr.fetch_certificate(&id("a")).await.unwrap();
    ca.fail.store(true, Ordering::SeqCst);
    // Past half-life renewal starts failing; the old certificate is still valid.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    assert!(
        ca.calls.load(Ordering::SeqCst) >= 2,
        "renewal was attempted"
    );
    let state = mgr.subscribe(&id("a")).borrow().clone();
    assert!(state.last_error.is_some());
    let still = state.current.unwrap();
    assert_eq!(still.validity().serial, first.validity().serial);
    // fetch_certificate reports the failure only once nothing valid is left.
    let served = mgr.fetch_certificate(&id("a")).await;
    assert!(
        matches!(&served, Err(Error::Unavailable { .. })) || served.is_ok(),
        "{served:?}"
    );
    ca.fail.store(false, Ordering::SeqCst);
}

/// reliability.md K2: the CA stays away past the certificate's end. From
/// then on nothing is served for the identity (no expired certificate, so
/// new handshakes fail here, with the CA's reason, and nothing falls back
/// to plaintext); once the CA is back a new certificate arrives without a
/// restart.
#[tokio::test]
async fn past_expiry_without_the_ca_nothing_is_served_until_it_returns() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(3), Duration::ZERO));
    let mgr = SecretManager::new(ca.clone(), fast_retry());
    let first = mgr.fetch_certificate(&id("a")).await.unwrap();
    ca.fail.store(true, Ordering::SeqCst);
    // Second-granular validity: by 4.5 s the certificate has ended.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert!(first.validity().is_expired(std::time::SystemTime::now()));
    match mgr.fetch_certificate(&id("a")).await {
        Err(Error::Unavailable { reason, .. }) => {
            assert!(reason.contains("told to fail"), "the CA's reason: {reason}")
        }
        other => panic!("an expired certificate must not be served: {other:?}"),
    }
    ca.fail.store(false, Ordering::SeqCst);
    let renewed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let Ok(c) = mgr.fetch_certificate(&id("a")).await {
                return c;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("no certificate 10 s after the CA came back");
    assert_ne!(renewed.validity().serial, first.validity().serial);
}

#[tokio::test]
async fn a_first_certificate_still_refused_after_the_wait_is_reported_with_the_reason() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(60), Duration::ZERO));
    ca.fail.store(true, Ordering::SeqCst);
    let config = SecretManagerConfig {
        first_issue_wait: Duration::from_millis(300),
        ..fast_retry()
    };
    let mgr = SecretManager::new(ca.clone(), config);
    let started = std::time::Instant::now();
    let err = mgr.fetch_certificate(&id("a")).await.unwrap_err();
    assert!(err.to_string().contains("told to fail"), "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "the caller waited through the retries: {:?}",
        started.elapsed()
    );
    assert!(ca.calls.load(Ordering::SeqCst) >= 2, "retried meanwhile");
    // The background task keeps retrying and recovers.
    ca.fail.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(400)).await;
    mgr.fetch_certificate(&id("a")).await.unwrap();
}

/// The race that made a just-created pod refuse its first HBONE connection:
/// the CA refuses the pod's first request (it has not seen the pod yet) and
/// signs the next. A caller asking meanwhile gets the certificate.
#[tokio::test]
async fn a_first_certificate_refused_once_reaches_a_caller_waiting_meanwhile() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(60), Duration::ZERO));
    ca.fail.store(true, Ordering::SeqCst);
    let mgr = SecretManager::new(ca.clone(), SecretManagerConfig::default());
    mgr.prefetch(&id("a"));
    while ca.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert!(mgr.subscribe(&id("a")).borrow().last_error.is_some());
    let waiting = tokio::spawn({
        let mgr = mgr.clone();
        async move { mgr.fetch_certificate(&id("a")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    ca.fail.store(false, Ordering::SeqCst);
    let cert = waiting.await.unwrap().expect("served once the CA signs");
    assert_eq!(cert.identity(), &id("a"));
}

#[tokio::test]
async fn at_most_eight_requests_in_flight() {
    let ca = Arc::new(FakeCa::new(
        Duration::from_secs(60),
        Duration::from_millis(100),
    ));
    let mgr = SecretManager::new(ca.clone(), SecretManagerConfig::default());
    let fetches = (0..24).map(|i| {
        let mgr = mgr.clone();
        async move { mgr.fetch_certificate(&id(&format!("sa{i}"))).await }
    });
    for r in futures::future::join_all(fetches).await {
        r.unwrap();
    }
    assert_eq!(ca.max_in_flight.load(Ordering::SeqCst), 8);
}

#[test]
fn backoff_is_jittered_exponential_and_capped() {
    let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(150));
    // (The default starts at 100 ms; the shape is the same.)
    let first = b.next();
    assert!(first >= Duration::from_millis(500) && first < Duration::from_secs(1));
    let second = b.next();
    assert!(second >= Duration::from_secs(1) && second < Duration::from_secs(2));
    for _ in 0..20 {
        assert!(b.next() <= Duration::from_secs(150));
    }
    assert_eq!(b.base, Duration::from_secs(150));
    b.reset();
    assert!(b.next() < Duration::from_secs(1));
}

#[test]
fn chain_must_end_with_a_root() {
    let ca = FakeCa::new(Duration::from_secs(60), Duration::ZERO);
    let ident = id("a");
    let generated = csr::generate(&ident).unwrap();
    assert!(matches!(
        WorkloadCertificate::from_pem_chain(&ident, &generated.key_pem, &[]),
        Err(Error::EmptyChain)
    ));
    let cert = ca.sign(&ident).unwrap();
    let leaf = cert.chain_pems()[0].clone();
    assert!(matches!(
        WorkloadCertificate::from_pem_chain(&ident, &generated.key_pem, &[leaf]),
        Err(Error::MissingRoot)
    ));
}

#[test]
fn issued_identity_must_match_the_request() {
    let ca = FakeCa::new(Duration::from_secs(60), Duration::ZERO);
    let cert = ca.sign(&id("a")).unwrap();
    let generated = csr::generate(&id("b")).unwrap();
    let err = WorkloadCertificate::from_pem_chain(
        &id("b"),
        &generated.key_pem,
        &[cert.chain_pems()[0].clone(), ca.root_pem.clone()],
    )
    .unwrap_err();
    assert!(matches!(err, Error::IdentityMismatch { .. }), "{err}");
}
