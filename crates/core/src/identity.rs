//! SPIFFE identities as Istio uses them: `spiffe://<td>/ns/<ns>/sa/<sa>`.

use std::fmt;
use std::str::FromStr;

/// The trust domain assumed when a workload does not name one.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";
/// The service account assumed when a workload does not name one.
pub const DEFAULT_SERVICE_ACCOUNT: &str = "default";

const SCHEME: &str = "spiffe://";

/// A SPIFFE trust domain, such as `cluster.local`.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct TrustDomain(String);

impl TrustDomain {
    pub fn new(td: impl Into<String>) -> Result<Self, IdentityError> {
        let td = td.into();
        if td.is_empty() || !td.chars().all(spiffe_char) {
            return Err(IdentityError::BadTrustDomain(td));
        }
        Ok(Self(td))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for TrustDomain {
    fn default() -> Self {
        Self(DEFAULT_TRUST_DOMAIN.to_string())
    }
}

impl fmt::Display for TrustDomain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A workload identity: `spiffe://<trust domain>/ns/<namespace>/sa/<service account>`.
///
/// Parsing is strict (exactly the five path parts, literal `ns` and `sa`), as
/// Istio's is: a certificate whose SAN does not parse has no identity at all.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Identity {
    trust_domain: TrustDomain,
    namespace: String,
    service_account: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("identity {0:?} does not start with {SCHEME}")]
    NotSpiffe(String),
    #[error(
        "identity {0:?} is not of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>"
    )]
    BadShape(String),
    #[error("trust domain {0:?} is empty or contains '/'")]
    BadTrustDomain(String),
    #[error("{what} {value:?} is empty or contains '/'")]
    BadSegment { what: &'static str, value: String },
}

impl Identity {
    pub fn new(
        trust_domain: TrustDomain,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, IdentityError> {
        let namespace = namespace.into();
        let service_account = service_account.into();
        check_segment("namespace", &namespace)?;
        check_segment("service account", &service_account)?;
        Ok(Self {
            trust_domain,
            namespace,
            service_account,
        })
    }

    pub fn trust_domain(&self) -> &TrustDomain {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The identity as authorization policy `principals` see it: the URI
    /// without its `spiffe://` scheme (`td/ns/x/sa/y`).
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

/// The characters SPIFFE allows in a trust domain and a path segment
/// (letters, digits, `.`, `-`, `_`): a NUL, a space or a `/` smuggled into
/// a certificate's SAN makes it no identity at all.
fn spiffe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

fn check_segment(what: &'static str, value: &str) -> Result<(), IdentityError> {
    if value.is_empty() || !value.chars().all(spiffe_char) {
        return Err(IdentityError::BadSegment {
            what,
            value: value.to_string(),
        });
    }
    Ok(())
}

impl FromStr for Identity {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix(SCHEME)
            .ok_or_else(|| IdentityError::NotSpiffe(s.to_string()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => Identity::new(TrustDomain::new(*td)?, *ns, *sa)
                .map_err(|_| IdentityError::BadShape(s.to_string())),
            _ => Err(IdentityError::BadShape(s.to_string())),
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl serde::Serialize for Identity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Identity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let id: Identity = "spiffe://cluster.local/ns/default/sa/sleep"
            .parse()
            .unwrap();
        assert_eq!(id.trust_domain().as_str(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/default/sa/sleep");
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "cluster.local/ns/default/sa/sleep",
            "spiffe://cluster.local/ns/default/sa",
            "spiffe://cluster.local/ns/default/sa/sleep/extra",
            "spiffe://cluster.local/namespace/default/sa/sleep",
            "spiffe://cluster.local/ns/default/serviceaccount/sleep",
            "spiffe:///ns/default/sa/sleep",
            "spiffe://cluster.local/ns//sa/sleep",
            "spiffe://cluster.local/ns/default/sa/",
            "spiffe://cluster.local/ns/default/sa/sle\0ep",
            "spiffe://cluster.local/ns/default/sa/sle ep",
            "spiffe://cluster.local/ns/de%2Ffault/sa/sleep",
            "spiffe://cluster\0.local/ns/default/sa/sleep",
        ] {
            assert!(bad.parse::<Identity>().is_err(), "{bad} should not parse");
        }
    }
}
