//! Layer-4 authorization: the policy model ztunnel enforces and its evaluation.
//!
//! A policy ([`Authorization`]) matches a connection when any of its rules
//! does; a [`Rule`] matches when all of its clauses do; a [`Clause`] matches
//! when any of its [`Match`]es does; a [`Match`] matches when every kind of
//! condition it sets passes. [`evaluate`] combines the policies that apply to
//! the destination workload with Istio's DENY-then-ALLOW order.
//!
//! Policies are checked only by the destination's node proxy, once per
//! connection, against what is known at L4 ([`ConnectionInfo`]).

use std::fmt;
use std::net::SocketAddr;

use crate::identity::Identity;

/// Re-exported: policies match source and destination IPs against prefixes.
pub use crate::address::IpNet;

/// Which workloads a policy applies to.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Scope {
    /// Every workload in the mesh (a policy in the root namespace).
    #[default]
    Global,
    /// Every workload in the policy's namespace.
    Namespace,
    /// Only workloads that list the policy's key in their `authorization_policies`.
    WorkloadSelector,
}

/// What a matching policy does to the connection.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// One L4 authorization policy.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Authorization {
    pub name: String,
    pub namespace: String,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub action: Action,
    /// Alternatives: the policy matches when any rule does. No rules at all
    /// means the policy never matches (an ALLOW "allow-nothing" policy).
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Evaluated for logging only; never changes a [`Decision`].
    #[serde(default)]
    pub dry_run: bool,
}

impl Authorization {
    /// The policy's key, `namespace/name`, as workloads reference it.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Whether the policy matches the connection, regardless of its action.
    pub fn matches(&self, conn: &ConnectionInfo) -> bool {
        self.rules.iter().any(|rule| rule.matches(conn))
    }
}

/// A conjunction of clauses. No clauses matches every connection (Istio's
/// `rules: [{}]`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    #[serde(default)]
    pub clauses: Vec<Clause>,
}

impl Rule {
    pub fn matches(&self, conn: &ConnectionInfo) -> bool {
        self.clauses.iter().all(|clause| clause.matches(conn))
    }
}

/// A disjunction of matches. No matches never matches.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clause {
    #[serde(default)]
    pub matches: Vec<Match>,
}

impl Clause {
    pub fn matches(&self, conn: &ConnectionInfo) -> bool {
        self.matches.iter().any(|m| m.matches(conn))
    }
}

/// Conditions on one connection.
///
/// Each kind of condition passes when its positive list is empty or any
/// element matches, and no element of its negated list matches; all kinds
/// must pass. A `Match` with nothing set never matches: istiod sends one when
/// it strips the L7 parts of a DENY rule, and relies on it matching nothing.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Match {
    /// The namespace of the peer's identity.
    pub namespaces: Vec<StringMatch>,
    pub not_namespaces: Vec<StringMatch>,
    /// The peer's SPIFFE ID without `spiffe://` (`td/ns/x/sa/y`).
    pub principals: Vec<StringMatch>,
    pub not_principals: Vec<StringMatch>,
    /// The TCP peer's IP.
    pub source_ips: Vec<IpNet>,
    pub not_source_ips: Vec<IpNet>,
    /// The destination pod's IP.
    pub destination_ips: Vec<IpNet>,
    pub not_destination_ips: Vec<IpNet>,
    /// The destination (target) port.
    pub destination_ports: Vec<u16>,
    pub not_destination_ports: Vec<u16>,
    /// The namespace and service account of the peer's identity.
    pub service_accounts: Vec<ServiceAccountMatch>,
    pub not_service_accounts: Vec<ServiceAccountMatch>,
}

impl Match {
    /// Whether no condition is set (such a `Match` never matches).
    pub fn is_empty(&self) -> bool {
        let Self {
            namespaces,
            not_namespaces,
            principals,
            not_principals,
            source_ips,
            not_source_ips,
            destination_ips,
            not_destination_ips,
            destination_ports,
            not_destination_ports,
            service_accounts,
            not_service_accounts,
        } = self;
        namespaces.is_empty()
            && not_namespaces.is_empty()
            && principals.is_empty()
            && not_principals.is_empty()
            && source_ips.is_empty()
            && not_source_ips.is_empty()
            && destination_ips.is_empty()
            && not_destination_ips.is_empty()
            && destination_ports.is_empty()
            && not_destination_ports.is_empty()
            && service_accounts.is_empty()
            && not_service_accounts.is_empty()
    }

    /// Whether every kind of condition passes.
    ///
    /// Without a peer identity, no identity condition matches: a positive
    /// list fails and a negated list passes. That is how a DENY policy with
    /// `not_principals: [Presence]` rejects plaintext (mTLS STRICT).
    pub fn matches(&self, conn: &ConnectionInfo) -> bool {
        if self.is_empty() {
            return false;
        }
        let id = conn.src_identity.as_ref();
        // Formatted only when a policy looks at it: this runs per connection.
        let principal = (!self.principals.is_empty() || !self.not_principals.is_empty())
            .then(|| id.map(Identity::principal))
            .flatten();
        let src_ip = conn.src.ip();
        let dst_ip = conn.dst.ip();
        let dst_port = conn.dst.port();

        passes(&self.namespaces, &self.not_namespaces, |m| {
            id.is_some_and(|id| m.matches(id.namespace()))
        }) && passes(&self.principals, &self.not_principals, |m| {
            principal.as_deref().is_some_and(|p| m.matches(p))
        }) && passes(&self.source_ips, &self.not_source_ips, |net| {
            net.contains(src_ip)
        }) && passes(&self.destination_ips, &self.not_destination_ips, |net| {
            net.contains(dst_ip)
        }) && passes(&self.destination_ports, &self.not_destination_ports, |p| {
            *p == dst_port
        }) && passes(&self.service_accounts, &self.not_service_accounts, |sa| {
            id.is_some_and(|id| sa.matches(id))
        })
    }
}

/// One kind of condition: any of `positive` (if set) and none of `negative`.
fn passes<T>(positive: &[T], negative: &[T], matches: impl Fn(&T) -> bool) -> bool {
    (positive.is_empty() || positive.iter().any(&matches)) && !negative.iter().any(&matches)
}

/// A string comparison, as istiod derives it from a policy value: `*` is
/// [`Presence`](StringMatch::Presence), `*x` a suffix, `x*` a prefix.
///
/// In serde formats it is a one-key map, as in protobuf JSON:
/// `{exact: x}`, `{prefix: x}`, `{suffix: x}` or `{presence: {}}`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "StringMatchRepr", into = "StringMatchRepr")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

impl StringMatch {
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(s) => value.starts_with(s.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Presence => !value.is_empty(),
        }
    }
}

/// The serde shape of [`StringMatch`]: externally tagged enums are spelled
/// differently by each format (YAML uses `!tags`), a struct is not.
#[derive(Default, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct StringMatchRepr {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    suffix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    presence: Option<Empty>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Empty {}

impl TryFrom<StringMatchRepr> for StringMatch {
    type Error = &'static str;

    fn try_from(r: StringMatchRepr) -> Result<Self, Self::Error> {
        match (r.exact, r.prefix, r.suffix, r.presence) {
            (Some(s), None, None, None) => Ok(Self::Exact(s)),
            (None, Some(s), None, None) => Ok(Self::Prefix(s)),
            (None, None, Some(s), None) => Ok(Self::Suffix(s)),
            (None, None, None, Some(Empty {})) => Ok(Self::Presence),
            _ => Err("a string match sets exactly one of exact, prefix, suffix, presence"),
        }
    }
}

impl From<StringMatch> for StringMatchRepr {
    fn from(m: StringMatch) -> Self {
        match m {
            StringMatch::Exact(s) => Self {
                exact: Some(s),
                ..Self::default()
            },
            StringMatch::Prefix(s) => Self {
                prefix: Some(s),
                ..Self::default()
            },
            StringMatch::Suffix(s) => Self {
                suffix: Some(s),
                ..Self::default()
            },
            StringMatch::Presence => Self {
                presence: Some(Empty {}),
                ..Self::default()
            },
        }
    }
}

/// A peer's namespace and service account, compared exactly; the trust
/// domain is not part of the comparison.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ServiceAccountMatch {
    pub namespace: String,
    pub service_account: String,
}

impl ServiceAccountMatch {
    pub fn matches(&self, id: &Identity) -> bool {
        id.namespace() == self.namespace && id.service_account() == self.service_account
    }
}

/// What the destination's node proxy knows about an inbound connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The TCP peer's address, as the accepting socket reports it.
    pub src: SocketAddr,
    /// The destination pod IP and the target port (after any service port
    /// to target port translation).
    pub dst: SocketAddr,
    /// The peer's identity from its certificate; `None` for plaintext.
    pub src_identity: Option<Identity>,
}

/// The outcome of [`evaluate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny(DenyReason),
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// Why a connection was denied.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// An enforced DENY policy (by key, `namespace/name`) matched.
    #[error("explicitly denied by {policy}")]
    Explicit { policy: String },
    /// Enforced ALLOW policies apply and none matched.
    #[error("allow policies exist, but none allowed")]
    NotAllowed,
    /// A policy that applies is not known here: the control plane sent one
    /// this proxy refused, or one the workload lists has not arrived.
    /// Deciding without it could allow what it denies, so nothing is.
    #[error("policy {policy} applies but {why}; failing closed")]
    UnknownPolicy { policy: String, why: &'static str },
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Allow => f.write_str("allowed"),
            Self::Deny(reason) => write!(f, "denied: {reason}"),
        }
    }
}

/// Decides a connection against the policies that apply to its destination.
///
/// Dry-run policies are skipped. Any matching DENY policy denies; otherwise,
/// with no ALLOW policy the connection is allowed, and with some it is allowed
/// only if one of them matches.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    conn: &ConnectionInfo,
) -> Decision {
    let mut allow_policies = false;
    let mut allowed = false;
    for policy in policies.into_iter().filter(|p| !p.dry_run) {
        match policy.action {
            Action::Deny => {
                if policy.matches(conn) {
                    return Decision::Deny(DenyReason::Explicit {
                        policy: policy.key(),
                    });
                }
            }
            Action::Allow => {
                allow_policies = true;
                // Keep going after a match: a later DENY still wins.
                allowed = allowed || policy.matches(conn);
            }
        }
    }
    if !allow_policies || allowed {
        Decision::Allow
    } else {
        Decision::Deny(DenyReason::NotAllowed)
    }
}

/// The dry-run policies that match the connection, for logging what they
/// would have done.
pub fn dry_run_matches<'a>(
    policies: impl IntoIterator<Item = &'a Authorization>,
    conn: &ConnectionInfo,
) -> impl Iterator<Item = &'a Authorization> {
    policies
        .into_iter()
        .filter(move |p| p.dry_run && p.matches(conn))
}

#[cfg(test)]
mod tests;
