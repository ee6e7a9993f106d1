use mesh_proto::istio::security as sec;
use mesh_proto::istio::security::string_match::MatchType;
use mesh_proto::istio::workload as wl;

use crate::address::IpNet;
use crate::authorization::{self as authz, ServiceAccountMatch, StringMatch};
use crate::xds::ConversionError;

fn string_match(m: MatchType) -> sec::StringMatch {
    sec::StringMatch {
        match_type: Some(m),
    }
}

fn cidr(octets: &[u8], length: u32) -> sec::Address {
    sec::Address {
        address: octets.to_vec(),
        length,
    }
}

fn proto_policy(matches: Vec<sec::Match>) -> sec::Authorization {
    sec::Authorization {
        name: "allow-sleep".into(),
        namespace: "default".into(),
        scope: sec::Scope::WorkloadSelector.into(),
        action: sec::Action::Deny.into(),
        rules: vec![sec::Rule {
            clauses: vec![
                sec::Clause {
                    matches: vec![sec::Match {
                        destination_ports: vec![8080],
                        ..Default::default()
                    }],
                },
                sec::Clause { matches },
            ],
        }],
        dry_run: true,
        extensions: vec![],
    }
}

fn authorization_error(m: sec::Match) -> String {
    authz::Authorization::try_from(&proto_policy(vec![m]))
        .unwrap_err()
        .to_string()
}

#[test]
fn authorization_converts() {
    let full = sec::Match {
        namespaces: vec![string_match(MatchType::Exact("default".into()))],
        not_namespaces: vec![string_match(MatchType::Prefix("kube-".into()))],
        principals: vec![string_match(MatchType::Suffix("/sa/sleep".into()))],
        not_principals: vec![string_match(MatchType::Presence(()))],
        source_ips: vec![cidr(&[10, 1, 2, 3], 8)],
        not_source_ips: vec![cidr(&[10, 0, 0, 1], 32)],
        destination_ips: vec![cidr(
            &[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
            128,
        )],
        not_destination_ips: vec![cidr(&[0; 4], 0)],
        destination_ports: vec![80],
        not_destination_ports: vec![65535],
        service_accounts: vec![sec::ServiceAccountMatch {
            namespace: "default".into(),
            service_account: "sleep".into(),
        }],
        not_service_accounts: vec![],
        extensions: vec![wl::Extension::default()],
    };
    let got =
        authz::Authorization::try_from(&proto_policy(vec![sec::Match::default(), full])).unwrap();

    let net = |s: &str| s.parse::<IpNet>().unwrap();
    let want = authz::Authorization {
        name: "allow-sleep".into(),
        namespace: "default".into(),
        scope: authz::Scope::WorkloadSelector,
        action: authz::Action::Deny,
        rules: vec![authz::Rule {
            clauses: vec![
                authz::Clause {
                    matches: vec![authz::Match {
                        destination_ports: vec![8080],
                        ..Default::default()
                    }],
                },
                authz::Clause {
                    matches: vec![
                        // An empty Match survives conversion: it must keep
                        // matching nothing, not vanish.
                        authz::Match::default(),
                        authz::Match {
                            namespaces: vec![StringMatch::Exact("default".into())],
                            not_namespaces: vec![StringMatch::Prefix("kube-".into())],
                            principals: vec![StringMatch::Suffix("/sa/sleep".into())],
                            not_principals: vec![StringMatch::Presence],
                            source_ips: vec![net("10.0.0.0/8")],
                            not_source_ips: vec![net("10.0.0.1")],
                            destination_ips: vec![net("2001:db8::1")],
                            not_destination_ips: vec![net("0.0.0.0/0")],
                            destination_ports: vec![80],
                            not_destination_ports: vec![65535],
                            service_accounts: vec![ServiceAccountMatch {
                                namespace: "default".into(),
                                service_account: "sleep".into(),
                            }],
                            not_service_accounts: vec![],
                        },
                    ],
                },
            ],
        }],
        dry_run: true,
    };
    assert_eq!(got, want);
}

#[test]
fn authorization_errors_name_the_field() {
    let bad_ip = sec::Match {
        source_ips: vec![
            cidr(&[10, 0, 0, 1], 32),
            cidr(&[10, 0, 0, 2], 32),
            cidr(&[1, 2, 3, 4, 5], 32),
        ],
        ..Default::default()
    };
    assert_eq!(
        authorization_error(bad_ip),
        "rules[0].clauses[1].matches[0].source_ips[2]: address must be 4 or 16 bytes, got 5"
    );

    let long_prefix = sec::Match {
        not_destination_ips: vec![cidr(&[10, 0, 0, 0], 33)],
        ..Default::default()
    };
    assert_eq!(
        authorization_error(long_prefix),
        "rules[0].clauses[1].matches[0].not_destination_ips[0]: \
         prefix length 33 is longer than the 32 bits of 10.0.0.0"
    );
    let huge_prefix = sec::Match {
        destination_ips: vec![cidr(&[0; 16], 256)],
        ..Default::default()
    };
    assert!(
        authorization_error(huge_prefix)
            .starts_with("rules[0].clauses[1].matches[0].destination_ips[0]: prefix length 256")
    );

    let big_port = sec::Match {
        not_destination_ports: vec![80, 65536],
        ..Default::default()
    };
    assert_eq!(
        authorization_error(big_port),
        "rules[0].clauses[1].matches[0].not_destination_ports[1]: port 65536 is above 65535"
    );

    let no_match_type = sec::Match {
        not_principals: vec![sec::StringMatch { match_type: None }],
        ..Default::default()
    };
    assert_eq!(
        authorization_error(no_match_type),
        "rules[0].clauses[1].matches[0].not_principals[0]: no match type is set"
    );

    let mut p = proto_policy(vec![]);
    p.scope = 3;
    assert_eq!(
        authz::Authorization::try_from(&p).unwrap_err(),
        ConversionError::new("scope", "unknown value 3")
    );
    let mut p = proto_policy(vec![]);
    p.action = 2;
    assert_eq!(
        authz::Authorization::try_from(&p).unwrap_err().to_string(),
        "action: unknown value 2"
    );
}
