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
    /// Where `notBefore` lies from now (negative: in the past).
    start: time::Duration,
    /// Never answer.
    hang: AtomicBool,
    /// The clock certificates are dated by.
    clock: WallClock,
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
            start: time::Duration::ZERO,
            hang: AtomicBool::new(false),
            clock: WallClock::default(),
        }
    }

    /// Dates certificates by `clock`.
    fn on_clock(mut self, clock: WallClock) -> Self {
        self.clock = clock;
        self
    }

    /// Certificates starting `start` from now (negative: in the past).
    fn starting(mut self, start: time::Duration) -> Self {
        self.start = start;
        self
    }

    fn sign(&self, identity: &Identity) -> Result<WorkloadCertificate, Error> {
        self.sign_with_roots(identity, &self.root_pem)
    }

    /// Signs, answering with `roots` as the chain's last element.
    fn sign_with_roots(
        &self,
        identity: &Identity,
        roots: &str,
    ) -> Result<WorkloadCertificate, Error> {
        let generated = csr::generate(identity)?;
        let mut req = CertificateSigningRequestParams::from_pem(&generated.csr_pem)?;
        let start = time::OffsetDateTime::from(self.clock.now()) + self.start;
        req.params.not_before = start;
        req.params.not_after = start + self.ttl;
        req.params.subject_alt_names = vec![SanType::URI(identity.to_string().try_into()?)];
        req.params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let leaf = req.signed_by(&self.issuer)?;
        WorkloadCertificate::from_pem_chain(
            identity,
            &generated.key_pem,
            &[leaf.pem(), roots.to_string()],
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
            if self.hang.load(Ordering::SeqCst) {
                std::future::pending::<()>().await;
            }
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

/// reliability.md K5: wall time jumps 60 % of the lifetime ahead while
/// monotonic time stands still (a suspend). The renewal, due by the wall
/// clock, starts at once instead of 60 % of a lifetime of running time
/// later.
#[tokio::test]
async fn a_suspend_past_the_refresh_point_renews_at_once() {
    let clock = WallClock::default();
    let ttl = Duration::from_secs(3600);
    let ca = Arc::new(FakeCa::new(ttl, Duration::ZERO).on_clock(clock.clone()));
    let config = SecretManagerConfig {
        clock: clock.clone(),
        ..fast_retry()
    };
    let mgr = SecretManager::new(ca.clone(), config);
    let first = mgr.fetch_certificate(&id("a")).await.unwrap();
    let mut rx = mgr.subscribe(&id("a"));
    rx.borrow_and_update();
    let jumped = std::time::Instant::now();
    clock.jump_forward(ttl.mul_f64(0.6));
    tokio::time::timeout(crate::clock::TICK, rx.changed())
        .await
        .expect("no renewal within a tick of the jump")
        .unwrap();
    let second = rx.borrow().current.clone().unwrap();
    eprintln!("renewed {:?} after the jump", jumped.elapsed());
    assert_ne!(first.validity().serial, second.validity().serial);
    assert_eq!(ca.calls.load(Ordering::SeqCst), 2);
    // The new certificate is dated by the same clock: nothing more is due.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ca.calls.load(Ordering::SeqCst), 2);
}

/// The watcher notices a jump of the system's wall clock that monotonic
/// time did not see, and wakes the waits.
#[tokio::test]
async fn a_clock_that_jumps_without_running_time_wakes_the_waits() {
    let clock = WallClock::default();
    let watcher = clock.watch();
    let far = clock.now() + Duration::from_secs(3600);
    let waiting = tokio::spawn({
        let clock = clock.clone();
        async move { clock.sleep_until(far).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The jump is seen by the watcher only (as a suspend would be): its
    // own notification is not what wakes the wait, the deadline passing is.
    clock.inner_jump_unannounced(Duration::from_secs(3600));
    tokio::time::timeout(crate::clock::TICK * 3, waiting)
        .await
        .expect("the wait did not end within the watcher's ticks")
        .unwrap();
    watcher.abort();
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

/// A CA that keeps issuing certificates that cannot be used: each is
/// refused with its reason, the caller is told within the bound, and the
/// requests are spaced by the back-off (never a loop).
#[tokio::test]
async fn expired_or_future_certificates_are_refused_and_retried_with_back_off() {
    for (what, start, ttl) in [
        (
            "expired",
            time::Duration::hours(-2),
            Duration::from_secs(3600),
        ),
        (
            "not yet valid",
            time::Duration::hours(2),
            Duration::from_secs(3600),
        ),
    ] {
        let ca = Arc::new(FakeCa::new(ttl, Duration::ZERO).starting(start));
        let mgr = SecretManager::new(ca.clone(), fast_retry());
        let began = std::time::Instant::now();
        let err = mgr
            .fetch_certificate(&id("a"))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("cannot be used")
                && err.contains(if start.is_negative() {
                    "expired"
                } else {
                    "ahead"
                }),
            "{what}: {err}"
        );
        assert!(
            began.elapsed() < Duration::from_secs(4),
            "{what}: told after {:?}",
            began.elapsed()
        );
        // Back-off from 50 ms, doubling: a few requests in 3 s, not thousands.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let calls = ca.calls.load(Ordering::SeqCst);
        assert!(
            (2..=10).contains(&calls),
            "{what}: {calls} requests in about 6 s"
        );
        assert!(
            mgr.snapshot()[0].1.current.is_none(),
            "{what}: nothing installed"
        );
    }
}

/// A certificate issued already past half its life is used, but renewal
/// is asked for with back-off, not at once again and again.
#[tokio::test]
async fn a_certificate_due_on_arrival_is_renewed_with_back_off() {
    let ca = Arc::new(
        FakeCa::new(Duration::from_secs(3600), Duration::ZERO)
            .starting(time::Duration::minutes(-50)),
    );
    let mgr = SecretManager::new(ca.clone(), fast_retry());
    mgr.fetch_certificate(&id("a")).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let calls = ca.calls.load(Ordering::SeqCst);
    assert!((2..=10).contains(&calls), "{calls} requests in 3 s");
}

/// A caller waiting on an expired certificate whose renewal does not come
/// back is told within the bound.
#[tokio::test]
async fn waiting_on_a_renewal_that_hangs_is_bounded() {
    let ca = Arc::new(FakeCa::new(Duration::from_secs(2), Duration::ZERO));
    let config = SecretManagerConfig {
        first_issue_wait: Duration::from_secs(1),
        ..fast_retry()
    };
    let mgr = SecretManager::new(ca.clone(), config);
    mgr.fetch_certificate(&id("a")).await.unwrap();
    // From now on the CA never answers: the renewal at half-life hangs.
    ca.hang.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let began = std::time::Instant::now();
    let err = mgr
        .fetch_certificate(&id("a"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("renewal has not come back within 1s"), "{err}");
    assert!(began.elapsed() < Duration::from_secs(2));
}

/// The roots a certificate trusts are the configured ones: a chain to
/// another root is refused, and a root the CA appends is not trusted.
#[test]
fn issued_chains_must_verify_to_the_configured_roots_which_alone_are_trusted() {
    use crate::certificate::TrustedRoots;
    let mesh = FakeCa::new(Duration::from_secs(3600), Duration::ZERO);
    let other = FakeCa::new(Duration::from_secs(3600), Duration::ZERO);
    let trusted = TrustedRoots::from_pem(&mesh.root_pem, "the mesh root").unwrap();

    let foreign = other.sign(&id("a")).unwrap();
    let err = foreign.trusting(&trusted).unwrap_err();
    assert!(matches!(err, Error::UntrustedChain { .. }), "{err}");
    assert!(err.to_string().contains("CA_ROOT_CA"), "{err}");

    let both = format!("{}{}", mesh.root_pem, other.root_pem);
    let appended = mesh.sign_with_roots(&id("a"), &both).unwrap();
    assert_eq!(
        appended.roots().len(),
        2,
        "the CA's answer carried two roots"
    );
    let cert = appended.trusting(&trusted).unwrap();
    assert_eq!(cert.roots().len(), 1);
    assert_eq!(cert.root_pems().len(), 1);
    assert_eq!(cert.root_pems()[0].trim(), mesh.root_pem.trim());
}

/// A lifetime far longer than requested is planned by the requested one.
#[test]
fn a_longer_lifetime_than_asked_for_is_renewed_by_the_requested_one() {
    let ca = FakeCa::new(Duration::from_secs(10 * 365 * 86_400), Duration::ZERO);
    let cert = ca.sign(&id("a")).unwrap();
    let v = cert.validity().clone();
    assert!(v.refresh_at(SystemTime::now()) > SystemTime::now() + Duration::from_secs(86_400));
    let cert = cert.asked_for(Duration::from_secs(20));
    let due = cert.validity().refresh_at(SystemTime::now());
    assert!(
        due <= v.not_before + Duration::from_secs(10),
        "renewal planned at {due:?}"
    );
    // Within the tolerance nothing changes.
    let ca = FakeCa::new(Duration::from_secs(3600), Duration::ZERO);
    let cert = ca
        .sign(&id("a"))
        .unwrap()
        .asked_for(Duration::from_secs(3500));
    assert_eq!(cert.validity().planned_life, None);
}
