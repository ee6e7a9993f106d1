//! `when` conditions: a key naming a request attribute, `values` (any must
//! match) and `notValues` (none may match), compiled once per push.

use std::borrow::Cow;

use http::HeaderName;
use mesh_model::RuleCondition;

use super::matcher::{self, Field, IpMatch, PortMatch, ServiceAccount, StrMatch};
use super::{JwtClaims, RequestAttributes, Unknown};

#[derive(Clone, Debug)]
pub(super) enum Condition {
    Ip {
        attr: IpAttr,
        values: Field<IpMatch>,
    },
    Port(Field<PortMatch>),
    ServiceAccount(Field<ServiceAccount>),
    Text {
        attr: TextAttr,
        values: Field<StrMatch>,
    },
    /// A key this waypoint cannot evaluate (`experimental.envoy.filters.*`):
    /// it counts as [`Unknown`], so it never widens an ALLOW.
    Unsupported,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum IpAttr {
    Source,
    /// `remote.ip` is the connection's source IP: the waypoint trusts no
    /// X-Forwarded-For hops, so the original client is the HBONE peer's
    /// inner source address.
    Remote,
    Destination,
}

#[derive(Clone, Debug)]
pub(super) enum TextAttr {
    SourceNamespace,
    SourcePrincipal,
    /// The waypoint sees no TLS ClientHello of the inner stream, so there is
    /// never an SNI: `values` never match, `notValues` never exclude.
    Sni,
    Header(HeaderKey),
    /// HTTP only; no value without a validated JWT.
    Jwt(JwtAttr),
}

#[derive(Clone, Debug)]
pub(super) enum JwtAttr {
    /// `<iss>/<sub>`.
    Principal,
    Audiences,
    /// `azp`.
    Presenter,
    /// `request.auth.claims[a][b]`: the path into the claims object.
    Claim(Vec<String>),
}

/// Pseudo-headers are not in an `http::HeaderMap`, so the ones Envoy lets a
/// policy name are read from the request attributes instead.
#[derive(Clone, Debug)]
pub(super) enum HeaderKey {
    /// `:authority` or `host`.
    Authority,
    Method,
    /// The normalized path, without the query (Envoy's `:path` has it).
    Path,
    Named(HeaderName),
    /// Not a valid header name: never present.
    Invalid,
}

impl Condition {
    pub(super) fn new(c: &RuleCondition, policy_namespace: &str) -> Self {
        let ips = || Field::new(&c.values, &c.not_values, matcher::ip_block);
        let text = |attr| Self::Text {
            attr,
            values: Field::new(&c.values, &c.not_values, StrMatch::new),
        };
        match c.key.as_str() {
            "source.ip" => Self::Ip {
                attr: IpAttr::Source,
                values: ips(),
            },
            "remote.ip" => Self::Ip {
                attr: IpAttr::Remote,
                values: ips(),
            },
            "destination.ip" => Self::Ip {
                attr: IpAttr::Destination,
                values: ips(),
            },
            "destination.port" => Self::Port(Field::new(&c.values, &c.not_values, matcher::port)),
            "source.serviceAccount" => {
                Self::ServiceAccount(Field::new(&c.values, &c.not_values, |v| {
                    ServiceAccount::new(v, policy_namespace)
                }))
            }
            "source.namespace" => text(TextAttr::SourceNamespace),
            "source.principal" => text(TextAttr::SourcePrincipal),
            "connection.sni" => text(TextAttr::Sni),
            "request.auth.principal" => text(TextAttr::Jwt(JwtAttr::Principal)),
            "request.auth.audiences" => text(TextAttr::Jwt(JwtAttr::Audiences)),
            "request.auth.presenter" => text(TextAttr::Jwt(JwtAttr::Presenter)),
            key => {
                if let Some(name) = bracketed(key, "request.headers") {
                    text(TextAttr::Header(header_key(name)))
                } else if let Some(path) = bracketed(key, "request.auth.claims") {
                    text(TextAttr::Jwt(JwtAttr::Claim(
                        path.split("][").map(String::from).collect(),
                    )))
                } else {
                    tracing::warn!(
                        key,
                        "authorization condition key is not supported by the waypoint; \
                        it never matches in ALLOW policies and always matches in DENY policies"
                    );
                    Self::Unsupported
                }
            }
        }
    }

    pub(super) fn matches(&self, req: &RequestAttributes<'_>, unknown: Unknown) -> bool {
        match self {
            Self::Ip { attr, values } => {
                let ip = match attr {
                    IpAttr::Source | IpAttr::Remote => req.source_ip,
                    IpAttr::Destination => req.destination_ip,
                };
                values.check(|b| matcher::ip_matches(b, ip))
            }
            Self::Port(values) => values.check(|p| *p == Some(req.destination_port)),
            Self::ServiceAccount(values) => {
                values.check(|sa| sa.matches(req.source_namespace, req.source_service_account))
            }
            // Host names are case-insensitive (the request's is lower case).
            Self::Text {
                attr: TextAttr::Header(HeaderKey::Authority),
                values,
            } => match text_values(&TextAttr::Header(HeaderKey::Authority), req) {
                Some(found) => values.check(|m| found.iter().any(|v| m.matches_ignore_case(v))),
                None => unknown.value(),
            },
            Self::Text { attr, values } => match text_values(attr, req) {
                Some(found) => values.check(|m| found.iter().any(|v| m.matches(v))),
                None => unknown.value(),
            },
            Self::Unsupported => unknown.value(),
        }
    }
}

/// `request.headers[x-env]` → `x-env`; `[a][b]` inner text for claims.
fn bracketed<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?
        .strip_prefix('[')?
        .strip_suffix(']')
}

fn header_key(name: &str) -> HeaderKey {
    match name.to_ascii_lowercase().as_str() {
        ":authority" | "host" => HeaderKey::Authority,
        ":method" => HeaderKey::Method,
        ":path" => HeaderKey::Path,
        lower => HeaderName::from_bytes(lower.as_bytes())
            .map(HeaderKey::Named)
            .unwrap_or(HeaderKey::Invalid),
    }
}

/// The attribute's values (empty when absent), or `None` when it needs
/// HTTP and this is TCP traffic.
fn text_values<'r>(attr: &TextAttr, req: &'r RequestAttributes<'_>) -> Option<Vec<Cow<'r, str>>> {
    let one = |v: Option<&'r str>| v.map(Cow::Borrowed).into_iter().collect();
    match attr {
        TextAttr::SourceNamespace => Some(one(req.source_namespace)),
        TextAttr::SourcePrincipal => Some(one(req.source_principal)),
        TextAttr::Sni => Some(Vec::new()),
        TextAttr::Header(key) => req.http.as_ref().map(|http| match key {
            HeaderKey::Authority => one(Some(http.host)),
            HeaderKey::Method => one(Some(http.method)),
            HeaderKey::Path => one(Some(http.path)),
            HeaderKey::Named(name) => http
                .headers
                .get_all(name)
                .iter()
                // Lossy, not skipped: an odd byte must not hide a value from notValues.
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect(),
            HeaderKey::Invalid => Vec::new(),
        }),
        TextAttr::Jwt(attr) => req.http.as_ref().map(|http| {
            http.jwt
                .map(|jwt| jwt_values(attr, jwt))
                .unwrap_or_default()
        }),
    }
}

fn jwt_values<'j>(attr: &JwtAttr, jwt: &'j JwtClaims) -> Vec<Cow<'j, str>> {
    match attr {
        JwtAttr::Principal => vec![Cow::Owned(format!("{}/{}", jwt.issuer, jwt.subject))],
        JwtAttr::Audiences => jwt
            .audiences
            .iter()
            .map(|a| Cow::Borrowed(a.as_str()))
            .collect(),
        JwtAttr::Presenter => jwt
            .presenter
            .as_deref()
            .map(Cow::Borrowed)
            .into_iter()
            .collect(),
        JwtAttr::Claim(path) => path
            .iter()
            .try_fold(&jwt.claims, |v, key| v.get(key))
            .map(claim_values)
            .unwrap_or_default(),
    }
}

/// A string claim is its text; a list yields each element; anything else
/// (numbers, booleans, objects) is compared as its JSON text.
fn claim_values(value: &serde_json::Value) -> Vec<Cow<'_, str>> {
    match value {
        serde_json::Value::Array(items) => items.iter().map(claim_text).collect(),
        other => vec![claim_text(other)],
    }
}

fn claim_text(value: &serde_json::Value) -> Cow<'_, str> {
    match value {
        serde_json::Value::String(s) => Cow::Borrowed(s.as_str()),
        other => Cow::Owned(other.to_string()),
    }
}
