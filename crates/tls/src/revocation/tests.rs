//! CRLs in both verifiers and against open connections (reliability.md M7).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use mesh_core::{Identity, TrustDomain};
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::ServerName;

use super::*;
use crate::provider::provider;
use crate::testing::{GOOD, ROOT_NAME, Root, crl, leaf, root, root_named, uri};
use crate::verifier::{SpiffeClientVerifier, SpiffeServerVerifier};

fn set(pem: &str) -> CrlSet {
    CrlSet::from_pem(pem.as_bytes(), "test").unwrap()
}

/// Counts rejections per side.
fn counted(revocation: &Revocation) -> Arc<[AtomicUsize; 2]> {
    let counts: Arc<[AtomicUsize; 2]> = Arc::default();
    let c = counts.clone();
    revocation.on_rejection(Box::new(move |side| {
        c[side as usize].fetch_add(1, Ordering::Relaxed);
    }));
    counts
}

fn verifiers(root: &Root, revocation: &Revocation) -> (SpiffeClientVerifier, SpiffeServerVerifier) {
    let id: Identity = GOOD.parse().unwrap();
    (
        SpiffeClientVerifier::new(
            root.roots.clone(),
            TrustDomain::new("cluster.local").unwrap(),
            provider(),
            revocation.clone(),
        ),
        SpiffeServerVerifier::new(root.roots.clone(), vec![id], provider(), revocation.clone()),
    )
}

#[test]
fn a_crl_file_is_pem_crl_blocks_or_nothing() {
    let root = root();
    assert!(CrlSet::from_pem(b"", "empty").unwrap().is_empty());
    assert!(CrlSet::from_pem(b" \n", "blank").unwrap().is_empty());
    let one = crl(&root, &[]);
    assert_eq!(set(&one).len(), 1);
    let other = crl(&root_named("another CA"), &[]);
    assert_eq!(set(&format!("{one}{other}")).len(), 2);

    let err = CrlSet::from_pem(b"not a crl", "/crl/ca-crl.pem").unwrap_err();
    assert!(err.to_string().contains("/crl/ca-crl.pem"), "{err}");
    let broken = "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n";
    let err = CrlSet::from_pem(broken.as_bytes(), "broken").unwrap_err();
    assert!(err.to_string().contains("CRL #1"), "{err}");

    // webpki would read only the first of two lists from one CA.
    let err = CrlSet::from_pem(format!("{one}{other}{one}").as_bytes(), "twice").unwrap_err();
    assert!(err.to_string().contains("#1 and #3"), "{err}");
}

#[test]
fn each_end_requires_its_peer_usage() {
    use rcgen::ExtendedKeyUsagePurpose as Eku;
    let root = root();
    let (client, server) = verifiers(&root, &Revocation::none());
    let name = ServerName::try_from("ignored").unwrap();
    let now = UnixTime::now();
    let server_only = crate::testing::leaf_for(&root, vec![uri(GOOD)], vec![Eku::ServerAuth]);
    let client_only = crate::testing::leaf_for(&root, vec![uri(GOOD)], vec![Eku::ClientAuth]);
    assert!(client.verify_client_cert(&server_only, &[], now).is_err());
    client.verify_client_cert(&client_only, &[], now).unwrap();
    assert!(
        server
            .verify_server_cert(&client_only, &[], &name, &[], now)
            .is_err()
    );
    server
        .verify_server_cert(&server_only, &[], &name, &[], now)
        .unwrap();
}

#[test]
fn both_verifiers_refuse_a_revoked_leaf_and_count_it() {
    let root = root();
    let revoked = leaf(&root, vec![uri(GOOD)]);
    let other = leaf(&root, vec![uri(GOOD)]);
    let revocation = Revocation::new(set(&crl(&root, &[&revoked])));
    let counts = counted(&revocation);
    let (client, server) = verifiers(&root, &revocation);
    let name = ServerName::try_from("ignored").unwrap();
    let now = UnixTime::now();

    let err = client.verify_client_cert(&revoked, &[], now).unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    let err = server
        .verify_server_cert(&revoked, &[], &name, &[], now)
        .unwrap_err();
    assert_eq!(
        err,
        rustls::Error::InvalidCertificate(rustls::CertificateError::Revoked)
    );
    assert_eq!(counts[Side::Server as usize].load(Ordering::Relaxed), 1);
    assert_eq!(counts[Side::Client as usize].load(Ordering::Relaxed), 1);

    client.verify_client_cert(&other, &[], now).unwrap();
    server
        .verify_server_cert(&other, &[], &name, &[], now)
        .unwrap();

    // A CRL from another CA says nothing about ours: allowed, as upstream.
    revocation.replace(set(&crl(&root_named("another CA"), &[&revoked])));
    client.verify_client_cert(&revoked, &[], now).unwrap();
    // One that claims to be from ours but is signed by another key is
    // refused, and with it the handshake: a forged list fails closed.
    revocation.replace(set(&crl(&root_named(ROOT_NAME), &[&other])));
    client.verify_client_cert(&other, &[], now).unwrap_err();
}

#[tokio::test]
async fn an_open_connection_is_revoked_when_a_new_crl_names_its_peer() {
    let root = root();
    let peer = leaf(&root, vec![uri(GOOD)]);
    let revocation = Revocation::new(CrlSet::default());
    let counts = counted(&revocation);
    let check = revocation.peer(Side::Server, root.roots.clone(), provider());
    let mut revoked = tokio::spawn(check.revoked(Some(std::slice::from_ref(&peer))));

    // A CRL naming someone else changes nothing.
    let bystander = leaf(&root, vec![uri(GOOD)]);
    revocation.replace(set(&crl(&root, &[&bystander])));
    assert!(
        tokio::time::timeout(Duration::from_millis(200), &mut revoked)
            .await
            .is_err()
    );
    assert_eq!(counts[Side::Server as usize].load(Ordering::Relaxed), 0);

    revocation.replace(set(&crl(&root, &[&bystander, &peer])));
    tokio::time::timeout(Duration::from_secs(5), revoked)
        .await
        .expect("revoked within 5 s")
        .unwrap();
    assert_eq!(counts[Side::Server as usize].load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_crl_put_in_force_during_the_handshake_is_seen_at_once() {
    let root = root();
    let peer = leaf(&root, vec![uri(GOOD)]);
    let revocation = Revocation::new(CrlSet::default());
    // Made before the handshake; the CRL arrives while it runs.
    let check = revocation.peer(Side::Client, root.roots.clone(), provider());
    revocation.replace(set(&crl(&root, &[&peer])));
    tokio::time::timeout(
        Duration::from_secs(5),
        check.revoked(Some(std::slice::from_ref(&peer))),
    )
    .await
    .expect("revoked at once");
}

#[tokio::test]
async fn without_crls_an_open_connection_is_never_revoked() {
    let root = root();
    let peer = leaf(&root, vec![uri(GOOD)]);
    let check = Revocation::none().peer(Side::Server, root.roots.clone(), provider());
    assert!(
        tokio::time::timeout(
            Duration::from_millis(100),
            check.revoked(Some(std::slice::from_ref(&peer)))
        )
        .await
        .is_err()
    );
}

#[tokio::test]
async fn the_watched_file_is_reloaded_and_a_bad_one_keeps_the_crls_in_force() {
    let root = root();
    let peer = leaf(&root, vec![uri(GOOD)]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca-crl.pem");
    let revocation = Revocation::from_file(&path).expect("a missing file is no CRL yet");
    assert!(revocation.current().is_empty());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(revocation.clone().watch_file(
        path.clone(),
        Duration::from_millis(20),
        async {
            let _ = stopped.await;
        },
    ));
    let (client, _) = verifiers(&root, &revocation);
    let wait_for = |want: bool| {
        let client = &client;
        let peer = &peer;
        async move {
            for _ in 0..250 {
                let refused = client
                    .verify_client_cert(peer, &[], UnixTime::now())
                    .is_err();
                if refused == want {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            panic!(
                "the peer is still {}",
                if want { "accepted" } else { "refused" }
            );
        }
    };

    std::fs::write(&path, crl(&root, &[&peer])).unwrap();
    wait_for(true).await;
    // Garbage, an empty file (a writer that truncates first), then a
    // vanished file: the revocation stands.
    std::fs::write(&path, "garbage").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_for(true).await;
    std::fs::write(&path, "").unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_for(true).await;
    std::fs::remove_file(&path).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    wait_for(true).await;
    // A CRL without it lifts it.
    std::fs::write(&path, crl(&root, &[])).unwrap();
    wait_for(false).await;

    stop.send(()).unwrap();
    task.await.unwrap();
}

#[test]
fn a_malformed_file_at_start_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca-crl.pem");
    std::fs::write(
        &path,
        "-----BEGIN X509 CRL-----\n!!\n-----END X509 CRL-----\n",
    )
    .unwrap();
    let err = Revocation::from_file(&path).unwrap_err();
    assert!(err.to_string().contains("ca-crl.pem"), "{err}");
}
