//! AuthorizationPolicy → `istio.security.Authorization`, keeping only what a
//! node proxy can enforce at L4, exactly as istiod does
//! (`../shared/spec/user-surface.md` §3.1, `dataplane.md` §7.5):
//!
//! - an ALLOW rule that names any HTTP attribute is dropped whole (the policy
//!   may end up allowing nothing: fail closed);
//! - a DENY rule loses its HTTP parts and keeps its L4 parts; an entry that
//!   was HTTP-only becomes an empty match, which never matches;
//! - `targetRef(s)` policies belong to waypoints and are not sent;
//! - AUDIT and CUSTOM cannot be enforced by ztunnel and are not sent.
//!
//! Each lossy case carries the operator-facing message Istio puts in the
//! policy's `ZtunnelAccepted` condition.

use mesh_core::IpNet;
use mesh_proto::istio::security as pb;

use crate::model::{
    AuthorizationAction, AuthorizationPolicy, AuthorizationRule, Operation, RuleCondition, Source,
};

/// The annotation that makes a policy log instead of enforce.
pub const DRY_RUN: &str = "istio.io/dry-run";

/// Whether the policy is annotated `istio.io/dry-run: "true"` (any case).
pub fn is_dry_run(ap: &AuthorizationPolicy) -> bool {
    ap.metadata
        .annotations
        .get(DRY_RUN)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// The outcome of converting one policy for ztunnel.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Converted {
    /// `None`: nothing is sent to ztunnel for this policy.
    pub policy: Option<pb::Authorization>,
    /// Set when the result differs from what the YAML asks for.
    pub warning: Option<String>,
}

const WAYPOINT_HINT: &str = "In ambient mode you must use a waypoint proxy to enforce HTTP rules.";

/// Converts `ap` (in namespace `ns`, named `name`) for ztunnel.
pub fn convert(ap: &AuthorizationPolicy, ns: &str, name: &str, root_namespace: &str) -> Converted {
    let spec = &ap.spec;
    if spec.target_ref.is_some() || !spec.target_refs.is_empty() {
        return Converted::default();
    }
    let action = match spec.action.unwrap_or_default() {
        AuthorizationAction::Allow => pb::Action::Allow,
        AuthorizationAction::Deny => pb::Action::Deny,
        other => {
            let a = match other {
                AuthorizationAction::Audit => "AUDIT",
                _ => "CUSTOM",
            };
            return Converted {
                policy: None,
                warning: Some(format!(
                    "ztunnel does not support the {a} action. {WAYPOINT_HINT}"
                )),
            };
        }
    };
    let scope = match (&spec.selector, ns == root_namespace) {
        (Some(_), _) => pb::Scope::WorkloadSelector,
        (None, true) => pb::Scope::Global,
        (None, false) => pb::Scope::Namespace,
    };

    let mut found_l7: Vec<String> = Vec::new();
    let mut rules = Vec::new();
    for rule in &spec.rules {
        let l7 = http_attributes(rule);
        let dropped = action == pb::Action::Allow && !l7.is_empty();
        for a in l7 {
            if !found_l7.contains(&a) {
                found_l7.push(a);
            }
        }
        if !dropped {
            rules.push(convert_rule(rule, ns));
        }
    }
    let warning = (!found_l7.is_empty()).then(|| {
        let found = found_l7.join(", ");
        let head = format!("ztunnel does not support HTTP attributes (found: {found}). {WAYPOINT_HINT}");
        match action {
            pb::Action::Allow => format!(
                "{head} Within an ALLOW policy, rules matching HTTP attributes are omitted. This will be more restrictive than requested."
            ),
            _ if !rules.iter().any(can_match) => format!(
                "{head} After omitting unsupported HTTP attributes, this DENY policy has no enforceable rules at ztunnel and will have no effect. Deploy a waypoint proxy and use a targetRef to enforce this policy."
            ),
            _ => format!(
                "{head} DENY policy with HTTP attributes is enforced without the HTTP rules. This will be more restrictive than requested."
            ),
        }
    });
    let dry_run = is_dry_run(ap);
    Converted {
        policy: Some(pb::Authorization {
            name: name.to_string(),
            namespace: ns.to_string(),
            scope: scope as i32,
            action: action as i32,
            rules,
            dry_run,
            extensions: vec![],
        }),
        warning,
    }
}

/// Whether a converted rule can ever match: every clause needs a non-empty
/// match (an empty one is ztunnel's "never").
fn can_match(rule: &pb::Rule) -> bool {
    rule.clauses
        .iter()
        .all(|c| c.matches.iter().any(|m| *m != pb::Match::default()))
}

/// The `when` keys ztunnel can evaluate.
pub const L4_CONDITION_KEYS: [&str; 5] = [
    "source.ip",
    "source.namespace",
    "source.principal",
    "destination.ip",
    "destination.port",
];

/// The HTTP-only attributes a rule uses, by their YAML names.
pub fn http_attributes(rule: &AuthorizationRule) -> Vec<String> {
    let mut found = Vec::new();
    let mut note = |name: &str, present: bool| {
        if present && !found.iter().any(|f| f == name) {
            found.push(name.to_string());
        }
    };
    for s in rule.from.iter().filter_map(|f| f.source.as_ref()) {
        note("requestPrincipals", !s.request_principals.is_empty());
        note("notRequestPrincipals", !s.not_request_principals.is_empty());
        note("remoteIpBlocks", !s.remote_ip_blocks.is_empty());
        note("notRemoteIpBlocks", !s.not_remote_ip_blocks.is_empty());
    }
    for o in rule.to.iter().filter_map(|t| t.operation.as_ref()) {
        note("hosts", !o.hosts.is_empty());
        note("notHosts", !o.not_hosts.is_empty());
        note("methods", !o.methods.is_empty());
        note("notMethods", !o.not_methods.is_empty());
        note("paths", !o.paths.is_empty());
        note("notPaths", !o.not_paths.is_empty());
    }
    for c in &rule.when {
        note(&c.key, !L4_CONDITION_KEYS.contains(&c.key.as_str()));
    }
    found
}

/// One rule → one `Rule` whose clauses are AND-ed: the sources (OR), the
/// operations (OR), then each condition.
///
/// HTTP fields (present only in DENY rules by now) are stripped from each
/// entry. An entry that mixed L4 and HTTP fields keeps its L4 part and so
/// denies more than asked; an entry that was HTTP-only becomes an empty
/// match, which never matches, so its clause (and the rule) cannot fire:
/// istiod's handling (`dataplane.md` §7.5), which leaves a DENY that
/// depended on HTTP attributes without effect rather than denying all.
fn convert_rule(rule: &AuthorizationRule, ns: &str) -> pb::Rule {
    pb::Rule {
        clauses: l4_clauses(rule, ns),
    }
}

fn l4_clauses(rule: &AuthorizationRule, ns: &str) -> Vec<pb::Clause> {
    let mut clauses = Vec::new();
    let sources: Vec<pb::Match> = rule
        .from
        .iter()
        .map(|f| source_match(f.source.as_ref().unwrap_or(&Source::default()), ns))
        .collect();
    if !sources.is_empty() {
        clauses.push(pb::Clause { matches: sources });
    }
    let operations: Vec<pb::Match> = rule
        .to
        .iter()
        .map(|t| operation_match(t.operation.as_ref().unwrap_or(&Operation::default())))
        .collect();
    if !operations.is_empty() {
        clauses.push(pb::Clause {
            matches: operations,
        });
    }
    for c in &rule.when {
        clauses.extend(condition_clauses(c));
    }
    clauses
}

fn source_match(s: &Source, ns: &str) -> pb::Match {
    pb::Match {
        principals: strings(&s.principals),
        not_principals: strings(&s.not_principals),
        namespaces: strings(&s.namespaces),
        not_namespaces: strings(&s.not_namespaces),
        service_accounts: service_accounts(&s.service_accounts, ns),
        not_service_accounts: service_accounts(&s.not_service_accounts, ns),
        source_ips: addresses(&s.ip_blocks),
        not_source_ips: addresses(&s.not_ip_blocks),
        ..Default::default()
    }
}

fn operation_match(o: &Operation) -> pb::Match {
    pb::Match {
        destination_ports: ports(&o.ports),
        not_destination_ports: ports(&o.not_ports),
        ..Default::default()
    }
}

/// A condition needs its value in `values` and not in `notValues`: two
/// clauses, AND-ed. An HTTP key gives an empty match (never matches).
fn condition_clauses(c: &RuleCondition) -> Vec<pb::Clause> {
    let mut out = Vec::new();
    for (values, negated) in [(&c.values, false), (&c.not_values, true)] {
        if values.is_empty() {
            continue;
        }
        let mut m = pb::Match::default();
        let (pos, neg) = (!negated, negated);
        match c.key.as_str() {
            "source.ip" if pos => m.source_ips = addresses(values),
            "source.ip" if neg => m.not_source_ips = addresses(values),
            "source.namespace" if pos => m.namespaces = strings(values),
            "source.namespace" if neg => m.not_namespaces = strings(values),
            "source.principal" if pos => m.principals = strings(values),
            "source.principal" if neg => m.not_principals = strings(values),
            "destination.ip" if pos => m.destination_ips = addresses(values),
            "destination.ip" if neg => m.not_destination_ips = addresses(values),
            "destination.port" if pos => m.destination_ports = ports(values),
            "destination.port" if neg => m.not_destination_ports = ports(values),
            _ => {}
        }
        out.push(pb::Clause { matches: vec![m] });
    }
    out
}

/// Istio's string forms: `*` presence, `*x` suffix, `x*` prefix, else exact.
pub fn string_match(v: &str) -> pb::StringMatch {
    use pb::string_match::MatchType;
    let t = if v == "*" {
        MatchType::Presence(())
    } else if let Some(rest) = v.strip_prefix('*') {
        MatchType::Suffix(rest.to_string())
    } else if let Some(rest) = v.strip_suffix('*') {
        MatchType::Prefix(rest.to_string())
    } else {
        MatchType::Exact(v.to_string())
    };
    pb::StringMatch {
        match_type: Some(t),
    }
}

fn strings(values: &[String]) -> Vec<pb::StringMatch> {
    values.iter().map(|v| string_match(v)).collect()
}

/// `ns/sa`, or a bare `sa` qualified with the policy's namespace.
fn service_accounts(values: &[String], ns: &str) -> Vec<pb::ServiceAccountMatch> {
    values
        .iter()
        .map(|v| {
            let (namespace, sa) = v.split_once('/').unwrap_or((ns, v));
            pb::ServiceAccountMatch {
                namespace: namespace.to_string(),
                service_account: sa.to_string(),
            }
        })
        .collect()
}

/// Validated at parse time; anything unparsable here is skipped.
fn addresses(values: &[String]) -> Vec<pb::Address> {
    values
        .iter()
        .filter_map(|v| v.parse::<IpNet>().ok())
        .map(|net| pb::Address {
            address: super::workload::ip_bytes(net.addr()),
            length: u32::from(net.prefix_len()),
        })
        .collect()
}

fn ports(values: &[String]) -> Vec<u32> {
    values
        .iter()
        .filter_map(|v| v.parse::<u16>().ok())
        .map(u32::from)
        .collect()
}
