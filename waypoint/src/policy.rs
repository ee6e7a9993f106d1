//! L7 authorization at the waypoint: Istio `AuthorizationPolicy`
//! (`security.istio.io/v1`) attached by `targetRefs` to a Service or to the
//! waypoint Gateway, evaluated for one HTTP request or one TCP connection.
//!
//! Policies are compiled once per configuration push ([`Policies::new`]):
//! CIDRs, ports, patterns and path templates are parsed there, so
//! [`Policies::evaluate`] on the request path only compares.
//!
//! Decision order, as Istio's: CUSTOM → DENY → (no ALLOW policy → allow) →
//! any ALLOW rule matches → allow → deny. AUDIT never decides.
//!
//! **Architecture Invariant:** this module fails closed. Whatever it cannot
//! evaluate — a CUSTOM policy, an unsupported `when` key, an HTTP attribute
//! on TCP traffic — makes ALLOW rules match less and DENY rules match more,
//! never the reverse. It knows nothing of sockets, HBONE or JWT validation:
//! the caller hands it already-verified attributes.

mod condition;
mod matcher;
mod path;

use std::net::IpAddr;

use mesh_model::waypoint::Named;
use mesh_model::{
    AuthorizationAction, AuthorizationPolicySpec, AuthorizationRule, Operation, Source,
};

use condition::Condition;
use matcher::{Field, IpMatch, PortMatch, ServiceAccount, StrMatch};
use path::PathMatch;
pub use path::{PathError, normalize_path};

/// What a policy may look at, for one request or connection.
#[derive(Clone, Copy, Debug)]
pub struct RequestAttributes<'a> {
    /// The connection's source IP. Also stands in for the original client
    /// IP (`remoteIpBlocks`, `remote.ip`): the waypoint trusts no
    /// X-Forwarded-For hops, so the HBONE peer's inner source is the client.
    pub source_ip: IpAddr,
    /// Peer identity, e.g. "cluster.local/ns/default/sa/curl" (no
    /// `spiffe://`). `None` for no identity.
    pub source_principal: Option<&'a str>,
    pub source_namespace: Option<&'a str>,
    pub source_service_account: Option<&'a str>,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// `None` for TCP traffic: HTTP-only attributes are then unknown.
    pub http: Option<HttpAttributes<'a>>,
}

#[derive(Clone, Copy, Debug)]
pub struct HttpAttributes<'a> {
    /// Host header or `:authority`, as sent (a `:port` may be present).
    pub host: &'a str,
    pub method: &'a str,
    /// Already normalized ([`normalize_path`]), without the query.
    pub path: &'a str,
    pub headers: &'a http::HeaderMap,
    /// A JWT validated by RequestAuthentication; `None` if there was none.
    pub jwt: Option<&'a JwtClaims>,
}

/// The claims of a validated JWT, as policies see them.
#[derive(Clone, Debug, PartialEq)]
pub struct JwtClaims {
    pub issuer: String,
    pub subject: String,
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: Option<String>,
    /// The whole payload, for `request.auth.claims[...]`.
    pub claims: serde_json::Value,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny {
        /// `ns/name` of the CUSTOM or DENY policy that decided; `None` when
        /// ALLOW policies exist and none matched.
        policy: Option<String>,
    },
}

impl Decision {
    pub fn is_allowed(&self) -> bool {
        matches!(self, Self::Allow)
    }
}

/// The policies guarding one scope (a Service, or the whole waypoint),
/// compiled once per configuration push.
#[derive(Clone, Debug, Default)]
pub struct Policies {
    /// Names of CUSTOM policies: not supported, so any one denies all.
    custom: Vec<String>,
    deny: Vec<Policy>,
    allow: Vec<Policy>,
}

impl Policies {
    pub fn new<'a>(policies: impl IntoIterator<Item = &'a Named<AuthorizationPolicySpec>>) -> Self {
        let mut out = Self::default();
        for p in policies {
            let name = format!("{}/{}", p.namespace, p.name);
            match p.spec.action.unwrap_or_default() {
                AuthorizationAction::Custom => {
                    tracing::warn!(
                        policy = %name,
                        "CUSTOM authorization (external authorizer) is not supported by the \
                         waypoint; every request this policy guards is denied"
                    );
                    out.custom.push(name);
                }
                // AUDIT needs a logging plugin and never changes a decision.
                AuthorizationAction::Audit => {}
                AuthorizationAction::Deny => out.deny.push(Policy::new(name, p)),
                AuthorizationAction::Allow => out.allow.push(Policy::new(name, p)),
            }
        }
        out
    }

    /// No policy can change a decision (AUDIT-only counts as empty): every
    /// request is allowed, and the caller may skip [`Self::evaluate`].
    pub fn is_empty(&self) -> bool {
        self.custom.is_empty() && self.deny.is_empty() && self.allow.is_empty()
    }

    pub fn evaluate(&self, req: &RequestAttributes<'_>) -> Decision {
        if let Some(name) = self.custom.first() {
            return Decision::Deny {
                policy: Some(name.clone()),
            };
        }
        if let Some(p) = self.deny.iter().find(|p| p.matches(req, Unknown::Match)) {
            return Decision::Deny {
                policy: Some(p.name.clone()),
            };
        }
        if self.allow.is_empty() || self.allow.iter().any(|p| p.matches(req, Unknown::Miss)) {
            return Decision::Allow;
        }
        Decision::Deny { policy: None }
    }
}

/// What an attribute the request cannot supply (HTTP attributes of TCP
/// traffic, unsupported keys) counts as: a miss in ALLOW policies, a match
/// in DENY policies, so not knowing never lets more traffic through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unknown {
    Miss,
    Match,
}

impl Unknown {
    fn value(self) -> bool {
        self == Self::Match
    }
}

#[derive(Clone, Debug)]
struct Policy {
    name: String,
    /// OR'ed. No rules matches nothing: an ALLOW without rules allows
    /// nothing, a DENY without rules denies nothing.
    rules: Vec<Rule>,
}

impl Policy {
    fn new(name: String, p: &Named<AuthorizationPolicySpec>) -> Self {
        let rules = p
            .spec
            .rules
            .iter()
            .map(|r| Rule::new(r, &p.namespace))
            .collect();
        Self { name, rules }
    }

    fn matches(&self, req: &RequestAttributes<'_>, unknown: Unknown) -> bool {
        self.rules.iter().any(|r| r.matches(req, unknown))
    }
}

#[derive(Clone, Debug)]
struct Rule {
    /// Empty = any source; else any entry.
    from: Vec<SourceMatch>,
    /// Empty = any operation; else any entry.
    to: Vec<OperationMatch>,
    /// All must match.
    when: Vec<Condition>,
    /// Some part of the rule needs HTTP attributes.
    http_only: bool,
}

impl Rule {
    fn new(rule: &AuthorizationRule, namespace: &str) -> Self {
        let from: Vec<SourceMatch> = rule
            .from
            .iter()
            .map(|f| {
                f.source
                    .as_ref()
                    .map(|s| SourceMatch::new(s, namespace))
                    .unwrap_or_default()
            })
            .collect();
        let to: Vec<OperationMatch> = rule
            .to
            .iter()
            .map(|t| {
                t.operation
                    .as_ref()
                    .map(OperationMatch::new)
                    .unwrap_or_default()
            })
            .collect();
        let http_only = from.iter().any(|s| s.request_principals.is_set())
            || to.iter().any(OperationMatch::is_http_only)
            || rule.when.iter().any(|c| is_http_key(&c.key));
        let when = rule
            .when
            .iter()
            .map(|c| Condition::new(c, namespace))
            .collect();
        Self {
            from,
            to,
            when,
            http_only,
        }
    }

    fn matches(&self, req: &RequestAttributes<'_>, unknown: Unknown) -> bool {
        // Istio drops an ALLOW rule with any HTTP attribute from a TCP
        // filter chain as a whole, even if another `from`/`to` entry of it
        // is pure L4: stricter than judging field by field.
        if req.http.is_none() && self.http_only && unknown == Unknown::Miss {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(req, unknown)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(req, unknown)))
            && self.when.iter().all(|c| c.matches(req, unknown))
    }
}

fn is_http_key(key: &str) -> bool {
    key.starts_with("request.")
}

/// One `from[].source`: every set field must match.
#[derive(Clone, Debug, Default)]
struct SourceMatch {
    principals: Field<StrMatch>,
    request_principals: Field<StrMatch>,
    namespaces: Field<StrMatch>,
    service_accounts: Field<ServiceAccount>,
    ip_blocks: Field<IpMatch>,
    remote_ip_blocks: Field<IpMatch>,
}

impl SourceMatch {
    fn new(s: &Source, namespace: &str) -> Self {
        Self {
            principals: Field::new(&s.principals, &s.not_principals, StrMatch::new),
            request_principals: Field::new(
                &s.request_principals,
                &s.not_request_principals,
                StrMatch::new,
            ),
            namespaces: Field::new(&s.namespaces, &s.not_namespaces, StrMatch::new),
            service_accounts: Field::new(&s.service_accounts, &s.not_service_accounts, |v| {
                ServiceAccount::new(v, namespace)
            }),
            ip_blocks: Field::new(&s.ip_blocks, &s.not_ip_blocks, matcher::ip_block),
            remote_ip_blocks: Field::new(
                &s.remote_ip_blocks,
                &s.not_remote_ip_blocks,
                matcher::ip_block,
            ),
        }
    }

    fn matches(&self, req: &RequestAttributes<'_>, unknown: Unknown) -> bool {
        let text = |field: &Field<StrMatch>, value: Option<&str>| {
            field.check(|m| value.is_some_and(|v| m.matches(v)))
        };
        text(&self.principals, req.source_principal)
            && text(&self.namespaces, req.source_namespace)
            && self
                .service_accounts
                .check(|sa| sa.matches(req.source_namespace, req.source_service_account))
            && self
                .ip_blocks
                .check(|b| matcher::ip_matches(b, req.source_ip))
            && self
                .remote_ip_blocks
                .check(|b| matcher::ip_matches(b, req.source_ip))
            && (!self.request_principals.is_set()
                || match &req.http {
                    None => unknown.value(),
                    Some(http) => {
                        let principal = http.jwt.map(|j| format!("{}/{}", j.issuer, j.subject));
                        text(&self.request_principals, principal.as_deref())
                    }
                })
    }
}

/// One `to[].operation`: every set field must match.
#[derive(Clone, Debug, Default)]
struct OperationMatch {
    /// Patterns compared ASCII case-insensitively.
    hosts: Field<StrMatch>,
    ports: Field<PortMatch>,
    methods: Field<StrMatch>,
    paths: Field<PathMatch>,
}

impl OperationMatch {
    fn new(o: &Operation) -> Self {
        Self {
            hosts: Field::new(&o.hosts, &o.not_hosts, StrMatch::new),
            ports: Field::new(&o.ports, &o.not_ports, matcher::port),
            methods: Field::new(&o.methods, &o.not_methods, StrMatch::new),
            paths: Field::new(&o.paths, &o.not_paths, PathMatch::new),
        }
    }

    fn is_http_only(&self) -> bool {
        self.hosts.is_set() || self.methods.is_set() || self.paths.is_set()
    }

    fn matches(&self, req: &RequestAttributes<'_>, unknown: Unknown) -> bool {
        if !self.ports.check(|p| *p == Some(req.destination_port)) {
            return false;
        }
        match &req.http {
            None => !self.is_http_only() || unknown.value(),
            Some(http) => {
                self.hosts.check(|m| matcher::host_matches(m, http.host))
                    && self.methods.check(|m| m.matches(http.method))
                    && self.paths.check(|m| m.matches(http.path))
            }
        }
    }
}

#[cfg(test)]
mod tests;
