//! Malformed SANs (reliability.md §5.1 M5): a certificate chained to the
//! mesh's root that carries no SPIFFE identity, or more than one, or a
//! broken one, is refused by both verifiers and never read as any of them.

use rcgen::SanType;
use rustls::client::danger::ServerCertVerifier;
use rustls::server::danger::ClientCertVerifier;
use rustls_pki_types::{ServerName, UnixTime};

use super::*;
use crate::certificate::leaf_identity;
use crate::testing::{GOOD, leaf, root, uri};

#[test]
fn only_a_single_well_formed_spiffe_uri_san_is_an_identity() {
    let root = root();
    let provider = crate::provider::provider();
    let client = SpiffeClientVerifier::new(
        root.roots.clone(),
        TrustDomain::new("cluster.local").unwrap(),
        provider.clone(),
        Revocation::none(),
    );
    let good: Identity = GOOD.parse().unwrap();
    let server = SpiffeServerVerifier::new(
        root.roots.clone(),
        vec![good.clone()],
        provider,
        Revocation::none(),
    );
    let name = ServerName::try_from("ignored").unwrap();
    let now = UnixTime::now();

    let control = leaf(&root, vec![uri(GOOD)]);
    assert_eq!(leaf_identity(&control).unwrap(), good);
    client.verify_client_cert(&control, &[], now).unwrap();
    server
        .verify_server_cert(&control, &[], &name, &[], now)
        .unwrap();

    let malformed = [
        (
            "ours and a foreign trust domain's",
            vec![uri(GOOD), uri("spiffe://evil.td/ns/default/sa/sleep")],
        ),
        (
            "a foreign one and ours",
            vec![uri("spiffe://evil.td/ns/default/sa/sleep"), uri(GOOD)],
        ),
        (
            "a NUL byte",
            vec![uri("spiffe://cluster.local/ns/default/sa/sle\0ep")],
        ),
        (
            "an empty segment",
            vec![uri("spiffe://cluster.local/ns//sa/sleep")],
        ),
        ("a non-SPIFFE URI", vec![uri("https://cluster.local/sleep")]),
        (
            "a DNS SAN only",
            vec![SanType::DnsName("sleep.default.svc".try_into().unwrap())],
        ),
        ("no SAN", vec![]),
    ];
    for (what, sans) in malformed {
        let cert = leaf(&root, sans);
        let err = leaf_identity(&cert).expect_err(what);
        assert!(
            client.verify_client_cert(&cert, &[], now).is_err(),
            "{what}: accepted as a client"
        );
        assert!(
            server
                .verify_server_cert(&cert, &[], &name, &[], now)
                .is_err(),
            "{what}: accepted as a server"
        );
        assert_eq!(peer_identity(Some(&[cert])), None, "{what}");
        eprintln!("{what}: {err}");
    }
}
