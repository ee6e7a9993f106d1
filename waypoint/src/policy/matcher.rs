//! The value matchers a compiled policy is built from: Istio's string
//! patterns, service accounts, IP blocks and ports, and [`Field`], the
//! `x` / `notX` pair every policy attribute comes as.
//!
//! **Invariant:** a value that fails to compile (validation upstream should
//! have caught it) becomes a matcher that matches nothing; it is never
//! dropped, because dropping the only entry of a positive list would turn
//! "one of these" into "anything".

use std::net::IpAddr;

use mesh_core::IpNet;

/// A positive list (any must match, if set) and a negative list (none may
/// match) of one attribute, such as `principals` / `notPrincipals`.
#[derive(Clone, Debug)]
pub(super) struct Field<T> {
    any: Vec<T>,
    none: Vec<T>,
}

impl<T> Default for Field<T> {
    fn default() -> Self {
        Self {
            any: Vec::new(),
            none: Vec::new(),
        }
    }
}

impl<T> Field<T> {
    pub(super) fn new(any: &[String], none: &[String], compile: impl Fn(&str) -> T) -> Self {
        Self {
            any: any.iter().map(|v| compile(v)).collect(),
            none: none.iter().map(|v| compile(v)).collect(),
        }
    }

    /// The policy constrains this attribute at all.
    pub(super) fn is_set(&self) -> bool {
        !self.any.is_empty() || !self.none.is_empty()
    }

    /// `matches` tells whether one compiled value matches the request.
    pub(super) fn check(&self, matches: impl Fn(&T) -> bool) -> bool {
        (self.any.is_empty() || self.any.iter().any(&matches)) && !self.none.iter().any(&matches)
    }
}

/// Istio's string pattern: `*` presence, `*x` suffix, `x*` prefix, else
/// exact (a `*` anywhere else is a literal character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// Any non-empty value.
    Presence,
}

impl StrMatch {
    pub(super) fn new(pattern: &str) -> Self {
        if pattern == "*" {
            Self::Presence
        } else if let Some(s) = pattern.strip_prefix('*') {
            Self::Suffix(s.to_string())
        } else if let Some(p) = pattern.strip_suffix('*') {
            Self::Prefix(p.to_string())
        } else {
            Self::Exact(pattern.to_string())
        }
    }

    pub(super) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == s,
            Self::Prefix(p) => value.starts_with(p.as_str()),
            Self::Suffix(s) => value.ends_with(s.as_str()),
            Self::Presence => !value.is_empty(),
        }
    }

    /// ASCII case-insensitive, for host names.
    pub(super) fn matches_ignore_case(&self, value: &str) -> bool {
        let v = value.as_bytes();
        match self {
            Self::Exact(s) => v.eq_ignore_ascii_case(s.as_bytes()),
            Self::Prefix(p) => v
                .get(..p.len())
                .is_some_and(|head| head.eq_ignore_ascii_case(p.as_bytes())),
            Self::Suffix(s) => v
                .len()
                .checked_sub(s.len())
                .is_some_and(|at| v[at..].eq_ignore_ascii_case(s.as_bytes())),
            Self::Presence => !v.is_empty(),
        }
    }
}

/// `hosts` compare against the Host/:authority both as sent and without a
/// `:port`, so `echo.default.svc.cluster.local` matches
/// `echo.default.svc.cluster.local:8080` too.
pub(super) fn host_matches(pattern: &StrMatch, host: &str) -> bool {
    pattern.matches_ignore_case(host)
        || strip_port(host).is_some_and(|h| pattern.matches_ignore_case(h))
}

/// `name:digits` → `name`; `[v6]:digits` → `[v6]`; a bare IPv6 literal has
/// colons but no port and is left alone.
fn strip_port(host: &str) -> Option<&str> {
    let (name, port) = host.rsplit_once(':')?;
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if name.contains(':') && !(name.starts_with('[') && name.ends_with(']')) {
        return None;
    }
    Some(name)
}

/// A `serviceAccounts` entry: `ns/sa`, or `sa` in the policy's namespace.
/// Compared exactly (Istio allows no wildcards here).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct ServiceAccount {
    namespace: String,
    name: String,
}

impl ServiceAccount {
    pub(super) fn new(value: &str, policy_namespace: &str) -> Self {
        let (namespace, name) = value.split_once('/').unwrap_or((policy_namespace, value));
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
        }
    }

    pub(super) fn matches(&self, namespace: Option<&str>, service_account: Option<&str>) -> bool {
        namespace == Some(self.namespace.as_str()) && service_account == Some(self.name.as_str())
    }
}

/// An IP or CIDR; `None` (unparsable) matches nothing.
pub(super) type IpMatch = Option<IpNet>;

pub(super) fn ip_block(value: &str) -> IpMatch {
    value
        .parse()
        .inspect_err(|e| tracing::warn!(%e, "authorization policy IP block matches nothing"))
        .ok()
}

pub(super) fn ip_matches(block: &IpMatch, ip: IpAddr) -> bool {
    block.is_some_and(|net| net.contains(ip))
}

/// A port; `None` (unparsable) matches nothing.
pub(super) type PortMatch = Option<u16>;

pub(super) fn port(value: &str) -> PortMatch {
    let port = value.parse().ok();
    if port.is_none() {
        tracing::warn!(
            value,
            "authorization policy port is not a port; it matches nothing"
        );
    }
    port
}
