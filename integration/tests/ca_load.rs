//! Many pods at once against the CA (reliability.md §5 E4): a ztunnel
//! that starts with 200 pods of 200 service accounts on its node asks for
//! their certificates with bounded concurrency, retries each refusal after
//! a jittered back-off (not all at once), and ends with every certificate.
//! Over the real path: gRPC and TLS to the scriptable fake CA.

use std::time::{Duration, Instant};

use integration::Mesh;
use integration::fake_ca::{Answer, FakeCa};
use mesh_tls::manager::SecretManagerConfig;
use ztunnel::config as zc;

const PODS: u8 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_pods_at_once_get_their_certificates_with_bounded_concurrency_and_spread_retries()
 {
    let mesh = Mesh::start().await;
    let fake = FakeCa::start(mesh.subnet.ip(9), mesh.istiod().ca.clone()).await;
    // Every identity's first request is refused (an overloaded CA); the
    // retries are answered, each after 50 ms, so requests overlap.
    fake.answer(Answer::RefuseFirstThenSlow(Duration::from_millis(50)));
    let pods: Vec<_> = (0..PODS)
        .map(|i| mesh.workload(&format!("pod-{i}"), &format!("sa-{i}"), 20 + i, "node-b"))
        .collect();
    let mut env = mesh.ztunnel_env("node-b", &pods[0].addresses);
    env.insert(zc::CA_ADDRESS.into(), fake.addr.to_string());
    env.insert(zc::CA_ROOT_CA.into(), fake.root_pem.clone());
    let started = Instant::now();
    let z = mesh.ztunnel_unready("node-b", &pods, env).await;

    let deadline = started + Duration::from_secs(60);
    let issued = loop {
        let issued = z
            .certs
            .snapshot()
            .iter()
            .filter(|(_, s)| s.current.is_some())
            .count();
        if issued == usize::from(PODS) {
            break issued;
        }
        assert!(
            Instant::now() < deadline,
            "{issued} of {PODS} certificates after 60 s; the CA saw {} requests",
            fake.requests_since(started)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();

    let limit = SecretManagerConfig::default().max_concurrent_requests;
    let by_identity = fake.requests_by_identity();
    // The delay from each identity's refusal to its retry.
    let mut retry_after: Vec<Duration> = by_identity
        .values()
        .filter_map(|times| Some(*times.get(1)? - times[0]))
        .collect();
    retry_after.sort();
    let (first, last) = (retry_after[0], retry_after[retry_after.len() - 1]);
    eprintln!(
        "{issued} certificates in {took:?}; {} requests, at most {} at once (limit {limit}); \
         retries {first:?} to {last:?} after the refusal",
        fake.requests_since(started),
        fake.most_in_flight()
    );
    assert_eq!(by_identity.len(), usize::from(PODS), "one identity per pod");
    assert!(
        by_identity.values().all(|t| t.len() == 2),
        "each identity: one refusal, one good answer, nothing more"
    );
    assert!(
        fake.most_in_flight() <= limit,
        "{} requests at once against a limit of {limit}",
        fake.most_in_flight()
    );
    assert!(
        fake.most_in_flight() > 1,
        "the requests never overlapped: the test shows nothing"
    );
    // Not a thundering herd: the retries do not come back together.
    assert!(
        last - first >= Duration::from_millis(100),
        "retries {first:?} to {last:?} after the refusal: not spread"
    );
    let distinct = retry_after
        .windows(2)
        .filter(|w| w[1] - w[0] >= Duration::from_millis(1))
        .count();
    assert!(
        distinct >= usize::from(PODS) / 4,
        "only {distinct} distinct retry delays among {PODS}"
    );
}
