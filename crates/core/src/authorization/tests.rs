use super::*;

/// Match, Clause and Rule semantics, one condition at a time.
mod conditions;

const SLEEP: &str = "spiffe://cluster.local/ns/default/sa/sleep";
const FOREIGN: &str = "spiffe://other.domain/ns/default/sa/sleep";

/// A connection from `src` (ip:port) to `dst` (pod ip:target port).
fn conn(src: &str, dst: &str, identity: Option<&str>) -> ConnectionInfo {
    ConnectionInfo {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        src_identity: identity.map(|id| id.parse().unwrap()),
    }
}

/// sleep (10.0.0.1, mTLS) → echo (10.0.0.2:8080).
fn mtls() -> ConnectionInfo {
    conn("10.0.0.1:40000", "10.0.0.2:8080", Some(SLEEP))
}

/// The same connection over plaintext.
fn plaintext() -> ConnectionInfo {
    conn("10.0.0.1:40000", "10.0.0.2:8080", None)
}

fn policy(name: &str, action: Action, rules: Vec<Rule>) -> Authorization {
    Authorization {
        name: name.into(),
        namespace: "default".into(),
        scope: Scope::Namespace,
        action,
        rules,
        dry_run: false,
    }
}

/// A policy with one rule of one clause per match list.
fn when(name: &str, action: Action, clauses: Vec<Vec<Match>>) -> Authorization {
    let clauses = clauses
        .into_iter()
        .map(|matches| Clause { matches })
        .collect();
    policy(name, action, vec![Rule { clauses }])
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn exact(s: &str) -> StringMatch {
    StringMatch::Exact(s.into())
}

fn sa(namespace: &str, service_account: &str) -> ServiceAccountMatch {
    ServiceAccountMatch {
        namespace: namespace.into(),
        service_account: service_account.into(),
    }
}

fn explicit(policy: &str) -> Decision {
    Decision::Deny(DenyReason::Explicit {
        policy: policy.into(),
    })
}

const NOT_ALLOWED: Decision = Decision::Deny(DenyReason::NotAllowed);

#[test]
fn no_policies_allow() {
    assert_eq!(evaluate([], &mtls()), Decision::Allow);
}

#[test]
fn allow_with_no_rules_allows_nothing() {
    let p = policy("allow-nothing", Action::Allow, vec![]);
    assert_eq!(evaluate([&p], &mtls()), NOT_ALLOWED);
}

#[test]
fn rule_with_no_clauses_matches_everything() {
    let p = policy("allow-all", Action::Allow, vec![Rule::default()]);
    assert_eq!(evaluate([&p], &mtls()), Decision::Allow);
    assert_eq!(evaluate([&p], &plaintext()), Decision::Allow);
}

#[test]
fn deny_with_no_rules_is_a_no_op() {
    let p = policy("deny-nothing", Action::Deny, vec![]);
    assert_eq!(evaluate([&p], &mtls()), Decision::Allow);
}

#[test]
fn deny_beats_allow_in_any_order() {
    let allow = policy("allow-all", Action::Allow, vec![Rule::default()]);
    let deny = policy("deny-all", Action::Deny, vec![Rule::default()]);
    assert_eq!(
        evaluate([&allow, &deny], &mtls()),
        explicit("default/deny-all")
    );
    assert_eq!(
        evaluate([&deny, &allow], &mtls()),
        explicit("default/deny-all")
    );
}

#[test]
fn any_matching_allow_allows() {
    let other = when(
        "allow-other",
        Action::Allow,
        vec![vec![Match {
            principals: vec![exact("cluster.local/ns/default/sa/other")],
            ..Match::default()
        }]],
    );
    let sleep = when(
        "allow-sleep",
        Action::Allow,
        vec![vec![Match {
            principals: vec![exact("cluster.local/ns/default/sa/sleep")],
            ..Match::default()
        }]],
    );
    assert_eq!(evaluate([&other, &sleep], &mtls()), Decision::Allow);
    assert_eq!(evaluate([&other], &mtls()), NOT_ALLOWED);
}

#[test]
fn dry_run_never_decides() {
    let mut deny = policy("deny-all", Action::Deny, vec![Rule::default()]);
    deny.dry_run = true;
    assert_eq!(evaluate([&deny], &mtls()), Decision::Allow);

    // A dry-run ALLOW does not make "some ALLOW policy exists" true.
    let mut allow_nothing = policy("allow-nothing", Action::Allow, vec![]);
    allow_nothing.dry_run = true;
    assert_eq!(evaluate([&allow_nothing], &mtls()), Decision::Allow);

    // Nor does a matching dry-run ALLOW admit what an enforced one rejects.
    let mut allow_all = policy("allow-all", Action::Allow, vec![Rule::default()]);
    allow_all.dry_run = true;
    allow_nothing.dry_run = false;
    assert_eq!(evaluate([&allow_all, &allow_nothing], &mtls()), NOT_ALLOWED);

    let matched: Vec<String> = dry_run_matches([&deny, &allow_all, &allow_nothing], &mtls())
        .map(Authorization::key)
        .collect();
    assert_eq!(matched, ["default/deny-all", "default/allow-all"]);
}

#[test]
fn strict_mtls_denies_plaintext_only() {
    let mut strict = when(
        "istio_converted_static_strict",
        Action::Deny,
        vec![vec![Match {
            not_principals: vec![StringMatch::Presence],
            ..Match::default()
        }]],
    );
    strict.namespace = "istio-system".into();
    strict.scope = Scope::WorkloadSelector;
    assert_eq!(
        evaluate([&strict], &plaintext()),
        explicit("istio-system/istio_converted_static_strict")
    );
    assert_eq!(evaluate([&strict], &mtls()), Decision::Allow);
}

#[test]
fn deny_reasons_read_like_istio() {
    assert_eq!(
        DenyReason::Explicit {
            policy: "ns/name".into()
        }
        .to_string(),
        "explicitly denied by ns/name"
    );
    assert_eq!(
        DenyReason::NotAllowed.to_string(),
        "allow policies exist, but none allowed"
    );
}

#[test]
fn policies_load_from_yaml() {
    let p: Authorization = serde_yaml::from_str(
        "
name: strict
namespace: istio-system
scope: WORKLOAD_SELECTOR
action: DENY
rules:
- clauses:
  - matches:
    - notPrincipals: [{presence: {}}]
      sourceIps: [10.0.0.0/8, 10.1.2.3]
      serviceAccounts: [{namespace: default, serviceAccount: sleep}]
      principals: [{prefix: cluster.local/}]
",
    )
    .unwrap();
    assert_eq!(p.key(), "istio-system/strict");
    assert_eq!(p.scope, Scope::WorkloadSelector);
    assert_eq!(p.action, Action::Deny);
    let m = &p.rules[0].clauses[0].matches[0];
    assert_eq!(m.not_principals, [StringMatch::Presence]);
    assert_eq!(m.source_ips, [net("10.0.0.0/8"), net("10.1.2.3/32")]);
    assert_eq!(m.service_accounts, [sa("default", "sleep")]);
    assert_eq!(m.principals, [StringMatch::Prefix("cluster.local/".into())]);

    let back: Authorization = serde_yaml::from_str(&serde_yaml::to_string(&p).unwrap()).unwrap();
    assert_eq!(back, p);
    let two = "{exact: a, prefix: b}";
    assert!(serde_yaml::from_str::<StringMatch>(two).is_err());
    assert!(serde_yaml::from_str::<StringMatch>("{}").is_err());
}
