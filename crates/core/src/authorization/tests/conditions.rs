use super::*;

/// A Match with the conditions `set` sets.
fn with(set: impl FnOnce(&mut Match)) -> Match {
    let mut m = Match::default();
    set(&mut m);
    m
}

#[test]
fn string_match_forms() {
    for (m, value, want) in [
        (exact("abc"), "abc", true),
        (exact("abc"), "abcd", false),
        (StringMatch::Prefix("abc".into()), "abcd", true),
        (StringMatch::Prefix("abc".into()), "xabc", false),
        (StringMatch::Suffix("abc".into()), "xabc", true),
        (StringMatch::Suffix("abc".into()), "abcx", false),
        (StringMatch::Presence, "x", true),
        (StringMatch::Presence, "", false),
    ] {
        assert_eq!(m.matches(value), want, "{m:?} on {value:?}");
    }
}

/// Each row: a single-Match policy, the connection, and whether it matches.
#[test]
fn match_conditions() {
    let cases: Vec<(&str, Match, ConnectionInfo, bool)> = vec![
        // Principals are the SPIFFE ID without its scheme.
        (
            "principal exact",
            with(|m| m.principals = vec![exact("cluster.local/ns/default/sa/sleep")]),
            mtls(),
            true,
        ),
        (
            "principal with scheme never matches",
            with(|m| m.principals = vec![exact(SLEEP)]),
            mtls(),
            false,
        ),
        (
            "principal prefix",
            with(|m| m.principals = vec![StringMatch::Prefix("cluster.local/ns/default/".into())]),
            mtls(),
            true,
        ),
        (
            "principal suffix",
            with(|m| m.principals = vec![StringMatch::Suffix("/sa/sleep".into())]),
            mtls(),
            true,
        ),
        (
            "principal presence",
            with(|m| m.principals = vec![StringMatch::Presence]),
            mtls(),
            true,
        ),
        (
            "not_principals",
            with(|m| m.not_principals = vec![StringMatch::Suffix("/sa/sleep".into())]),
            mtls(),
            false,
        ),
        (
            "namespace",
            with(|m| m.namespaces = vec![exact("default")]),
            mtls(),
            true,
        ),
        (
            "namespace is the identity's, not the trust domain",
            with(|m| m.namespaces = vec![exact("cluster.local")]),
            mtls(),
            false,
        ),
        (
            "not_namespaces",
            with(|m| m.not_namespaces = vec![exact("other"), exact("default")]),
            mtls(),
            false,
        ),
        (
            "service account",
            with(|m| m.service_accounts = vec![sa("default", "sleep")]),
            mtls(),
            true,
        ),
        (
            "service account ignores the trust domain",
            with(|m| m.service_accounts = vec![sa("default", "sleep")]),
            conn("10.0.0.1:1", "10.0.0.2:8080", Some(FOREIGN)),
            true,
        ),
        (
            "service account needs both parts",
            with(|m| m.service_accounts = vec![sa("other", "sleep"), sa("default", "echo")]),
            mtls(),
            false,
        ),
        (
            "not_service_accounts",
            with(|m| m.not_service_accounts = vec![sa("default", "sleep")]),
            mtls(),
            false,
        ),
        // Without an identity, positive identity conditions fail and
        // negated ones pass.
        (
            "no identity: principals presence",
            with(|m| m.principals = vec![StringMatch::Presence]),
            plaintext(),
            false,
        ),
        (
            "no identity: namespaces",
            with(|m| m.namespaces = vec![StringMatch::Presence]),
            plaintext(),
            false,
        ),
        (
            "no identity: service accounts",
            with(|m| m.service_accounts = vec![sa("default", "sleep")]),
            plaintext(),
            false,
        ),
        (
            "no identity: not_principals",
            with(|m| m.not_principals = vec![exact("cluster.local/ns/default/sa/sleep")]),
            plaintext(),
            true,
        ),
        (
            "no identity: not_namespaces and not_service_accounts",
            with(|m| {
                m.not_namespaces = vec![StringMatch::Presence];
                m.not_service_accounts = vec![sa("default", "sleep")];
            }),
            plaintext(),
            true,
        ),
        (
            "source CIDR",
            with(|m| m.source_ips = vec![net("10.0.0.0/8")]),
            plaintext(),
            true,
        ),
        (
            "source host",
            with(|m| m.source_ips = vec![net("10.0.0.9"), net("10.0.0.1")]),
            plaintext(),
            true,
        ),
        (
            "source outside",
            with(|m| m.source_ips = vec![net("192.168.0.0/16")]),
            plaintext(),
            false,
        ),
        (
            "IPv4-mapped IPv6 peer",
            with(|m| m.source_ips = vec![net("10.0.0.0/24")]),
            conn("[::ffff:10.0.0.1]:40000", "10.0.0.2:8080", None),
            true,
        ),
        (
            "not_source_ips",
            with(|m| m.not_source_ips = vec![net("10.0.0.1")]),
            plaintext(),
            false,
        ),
        (
            "destination ip",
            with(|m| m.destination_ips = vec![net("10.0.0.2")]),
            plaintext(),
            true,
        ),
        (
            "destination ip is not the source",
            with(|m| m.destination_ips = vec![net("10.0.0.1")]),
            plaintext(),
            false,
        ),
        (
            "not_destination_ips",
            with(|m| m.not_destination_ips = vec![net("10.0.0.0/30")]),
            plaintext(),
            false,
        ),
        (
            "destination port",
            with(|m| m.destination_ports = vec![80, 8080]),
            plaintext(),
            true,
        ),
        (
            "destination port is not the source port",
            with(|m| m.destination_ports = vec![40000]),
            plaintext(),
            false,
        ),
        (
            "not_destination_ports",
            with(|m| m.not_destination_ports = vec![8080]),
            plaintext(),
            false,
        ),
        (
            "not_destination_ports elsewhere",
            with(|m| m.not_destination_ports = vec![9090]),
            plaintext(),
            true,
        ),
        (
            "kinds are AND-ed",
            with(|m| {
                m.principals = vec![StringMatch::Presence];
                m.destination_ports = vec![9090];
            }),
            mtls(),
            false,
        ),
        ("empty match never matches", Match::default(), mtls(), false),
    ];
    for (name, m, conn, want) in cases {
        assert_eq!(m.matches(&conn), want, "{name}");
        // The same Match as the only condition of an ALLOW policy decides.
        let p = when("p", Action::Allow, vec![vec![m]]);
        assert_eq!(evaluate([&p], &conn).is_allowed(), want, "{name} (policy)");
    }
}

#[test]
fn clause_is_an_or_that_skips_empty_matches() {
    let port = |p| with(|m| m.destination_ports = vec![p]);
    let empty_only = Clause {
        matches: vec![Match::default()],
    };
    assert!(!empty_only.matches(&mtls()));
    assert!(!Clause::default().matches(&mtls()));
    let empty_and_match = Clause {
        matches: vec![Match::default(), port(8080)],
    };
    assert!(empty_and_match.matches(&mtls()));
    let neither = Clause {
        matches: vec![port(1), port(2)],
    };
    assert!(!neither.matches(&mtls()));

    // istiod neutralises an L7-only DENY rule with an empty Match.
    let deny = when("deny-l7", Action::Deny, vec![vec![Match::default()]]);
    assert_eq!(evaluate([&deny], &mtls()), Decision::Allow);
}

#[test]
fn rule_is_an_and_across_clauses() {
    let from_sleep = with(|m| m.principals = vec![StringMatch::Suffix("/sa/sleep".into())]);
    let to_port = |p| with(|m| m.destination_ports = vec![p]);
    let both = when(
        "p",
        Action::Allow,
        vec![vec![from_sleep.clone()], vec![to_port(8080)]],
    );
    assert!(both.matches(&mtls()));
    assert!(!both.matches(&plaintext()));
    let wrong_port = when(
        "p",
        Action::Allow,
        vec![vec![from_sleep], vec![to_port(9090)]],
    );
    assert!(!wrong_port.matches(&mtls()));
}

#[test]
fn policy_is_an_or_across_rules() {
    let port = |p| Rule {
        clauses: vec![Clause {
            matches: vec![with(|m| m.destination_ports = vec![p])],
        }],
    };
    assert!(policy("p", Action::Allow, vec![port(1), port(8080)]).matches(&mtls()));
    assert!(!policy("p", Action::Allow, vec![port(1), port(2)]).matches(&mtls()));
}
